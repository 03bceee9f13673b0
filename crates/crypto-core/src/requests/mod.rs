//! Outgoing requests the machine asks its caller to send, the responses the
//! caller hands back through `mark_request_as_sent`, the queue that keeps
//! every unanswered request listed, and the source of their ids.

mod ids;
mod queue;

pub(crate) use ids::IdSource;
pub(crate) use queue::{Entry, Meta, RequestQueue};

use ruma_client_api::{
    backup::{add_backup_keys, get_backup_keys_for_session, get_latest_backup_info},
    keys::{claim_keys, get_keys, upload_keys, upload_signatures, upload_signing_keys},
    message::send_message_event,
    to_device::send_event_to_device,
};
use std::sync::Arc;

use ruma_common::{OwnedTransactionId, TransactionId};

/// A request for the homeserver, with the id under which its response is
/// handed back to [`OlmMachine::mark_request_as_sent`](crate::OlmMachine::mark_request_as_sent).
/// Cloning is cheap: the request body is shared.
#[derive(Clone, Debug)]
pub struct OutgoingRequest {
    id: OwnedTransactionId,
    request: Arc<AnyOutgoingRequest>,
}

impl OutgoingRequest {
    pub(crate) fn with_id(id: OwnedTransactionId, request: AnyOutgoingRequest) -> Self {
        Self { id, request: Arc::new(request) }
    }

    /// The id to answer this request with. For to-device requests it is also
    /// the transaction id, so the server drops a repeated send.
    pub fn request_id(&self) -> &TransactionId {
        &self.id
    }

    /// The request itself.
    pub fn request(&self) -> &AnyOutgoingRequest {
        &self.request
    }
}

/// The kinds of request crypto-core emits, as ruma-client-api request values.
#[derive(Clone, Debug)]
pub enum AnyOutgoingRequest {
    /// `POST /keys/upload`: device keys, one-time keys, fallback keys.
    KeysUpload(upload_keys::v3::Request),
    /// `POST /keys/query`: device lists of tracked users.
    KeysQuery(get_keys::v3::Request),
    /// `POST /keys/claim`: one-time keys for new Olm sessions.
    KeysClaim(claim_keys::v3::Request),
    /// `PUT /sendToDevice/{type}/{txnId}`: encrypted to-device messages.
    ToDevice(send_event_to_device::v3::Request),
    /// `POST /keys/device_signing/upload`: our cross-signing public keys.
    /// It needs user-interactive auth: a driver does not send it from the
    /// queue but hands it to whoever can authenticate (the client's
    /// `bootstrap_cross_signing`), who sets `auth` and sends it.
    SigningKeysUpload(upload_signing_keys::v3::Request),
    /// `POST /keys/signatures/upload`: signatures of our devices and of
    /// other users' master keys.
    SignatureUpload(upload_signatures::v3::Request),
    /// An event to send into a room (an in-room verification message). The
    /// caller sends it as it sends the room's own events, encrypted if the
    /// room is encrypted, and answers with the `PUT /send` response (whose
    /// event id names the flow of an in-room request).
    RoomMessage(RoomMessageRequest),
    /// `PUT /room_keys/keys?version=`: room keys for the key backup, each
    /// encrypted to the backup's public key. If the server answers that the
    /// version is not the current one, call `disable_backup` (and enable
    /// the new version once it is trusted): the request is then cancelled.
    KeysBackup(add_backup_keys::v3::Request),
    /// `GET /room_keys/version`: the server's current backup version and
    /// its `etag`, read to look up the keys of undecryptable events, after
    /// an upload was refused, or when a backup key arrived. A 404
    /// `M_NOT_FOUND` (no backup) is answered with
    /// [`mark_request_as_refused`](crate::OlmMachine::mark_request_as_refused).
    BackupVersion(get_latest_backup_info::v3::Request),
    /// `GET /room_keys/keys/{roomId}/{sessionId}?version=`: the key of
    /// undecryptable events, looked up in the backup. A 404 `M_NOT_FOUND`
    /// (the backup does not hold it) is answered with
    /// [`mark_request_as_refused`](crate::OlmMachine::mark_request_as_refused).
    BackupKeyLookup(get_backup_keys_for_session::v3::Request),
}

/// A room event the engine asks its caller to send.
#[derive(Clone, Debug)]
pub struct RoomMessageRequest {
    /// The room.
    pub room_id: ruma_common::OwnedRoomId,
    /// The event type (`m.room.message` for a request, else
    /// `m.key.verification.*`).
    pub event_type: String,
    /// The content, in the clear.
    pub content: serde_json::Value,
}

/// A homeserver response, handed back with the id of the request it answers.
#[derive(Clone, Copy, Debug)]
pub enum AnyIncomingResponse<'a> {
    /// Answer to [`AnyOutgoingRequest::KeysUpload`].
    KeysUpload(&'a upload_keys::v3::Response),
    /// Answer to [`AnyOutgoingRequest::KeysQuery`].
    KeysQuery(&'a get_keys::v3::Response),
    /// Answer to [`AnyOutgoingRequest::KeysClaim`].
    KeysClaim(&'a claim_keys::v3::Response),
    /// Answer to [`AnyOutgoingRequest::ToDevice`].
    ToDevice(&'a send_event_to_device::v3::Response),
    /// Answer to [`AnyOutgoingRequest::SigningKeysUpload`] (after any
    /// user-interactive auth succeeded).
    SigningKeysUpload(&'a upload_signing_keys::v3::Response),
    /// Answer to [`AnyOutgoingRequest::SignatureUpload`].
    SignatureUpload(&'a upload_signatures::v3::Response),
    /// Answer to [`AnyOutgoingRequest::RoomMessage`].
    RoomMessage(&'a send_message_event::v3::Response),
    /// Answer to [`AnyOutgoingRequest::KeysBackup`].
    KeysBackup(&'a add_backup_keys::v3::Response),
    /// Answer to [`AnyOutgoingRequest::BackupVersion`].
    BackupVersion(&'a get_latest_backup_info::v3::Response),
    /// Answer to [`AnyOutgoingRequest::BackupKeyLookup`].
    BackupKeyLookup(&'a get_backup_keys_for_session::v3::Response),
}

impl<'a> From<&'a get_latest_backup_info::v3::Response> for AnyIncomingResponse<'a> {
    fn from(response: &'a get_latest_backup_info::v3::Response) -> Self {
        Self::BackupVersion(response)
    }
}

impl<'a> From<&'a get_backup_keys_for_session::v3::Response> for AnyIncomingResponse<'a> {
    fn from(response: &'a get_backup_keys_for_session::v3::Response) -> Self {
        Self::BackupKeyLookup(response)
    }
}

/// A refusal from the homeserver that is an answer the engine acts on
/// (handed back with
/// [`mark_request_as_refused`](crate::OlmMachine::mark_request_as_refused)),
/// as opposed to a failure, after which the request stays queued and is
/// sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestRefusal {
    /// HTTP 404 `M_NOT_FOUND`: no backup version
    /// ([`BackupVersion`](AnyOutgoingRequest::BackupVersion)), no such key
    /// ([`BackupKeyLookup`](AnyOutgoingRequest::BackupKeyLookup)), no such
    /// version ([`KeysBackup`](AnyOutgoingRequest::KeysBackup)).
    NotFound,
    /// HTTP 403 `M_WRONG_ROOM_KEYS_VERSION`
    /// ([`KeysBackup`](AnyOutgoingRequest::KeysBackup)): the version is not
    /// the current one.
    WrongRoomKeysVersion,
}

impl RequestRefusal {
    /// The refusal a Matrix error code stands for, if it is one.
    pub fn from_errcode(errcode: &str) -> Option<Self> {
        match errcode {
            "M_NOT_FOUND" => Some(Self::NotFound),
            "M_WRONG_ROOM_KEYS_VERSION" => Some(Self::WrongRoomKeysVersion),
            _ => None,
        }
    }
}

impl<'a> From<&'a add_backup_keys::v3::Response> for AnyIncomingResponse<'a> {
    fn from(response: &'a add_backup_keys::v3::Response) -> Self {
        Self::KeysBackup(response)
    }
}

impl<'a> From<&'a send_message_event::v3::Response> for AnyIncomingResponse<'a> {
    fn from(response: &'a send_message_event::v3::Response) -> Self {
        Self::RoomMessage(response)
    }
}

impl<'a> From<&'a upload_signing_keys::v3::Response> for AnyIncomingResponse<'a> {
    fn from(response: &'a upload_signing_keys::v3::Response) -> Self {
        Self::SigningKeysUpload(response)
    }
}

impl<'a> From<&'a upload_signatures::v3::Response> for AnyIncomingResponse<'a> {
    fn from(response: &'a upload_signatures::v3::Response) -> Self {
        Self::SignatureUpload(response)
    }
}

impl<'a> From<&'a upload_keys::v3::Response> for AnyIncomingResponse<'a> {
    fn from(response: &'a upload_keys::v3::Response) -> Self {
        Self::KeysUpload(response)
    }
}

impl<'a> From<&'a get_keys::v3::Response> for AnyIncomingResponse<'a> {
    fn from(response: &'a get_keys::v3::Response) -> Self {
        Self::KeysQuery(response)
    }
}

impl<'a> From<&'a claim_keys::v3::Response> for AnyIncomingResponse<'a> {
    fn from(response: &'a claim_keys::v3::Response) -> Self {
        Self::KeysClaim(response)
    }
}

impl<'a> From<&'a send_event_to_device::v3::Response> for AnyIncomingResponse<'a> {
    fn from(response: &'a send_event_to_device::v3::Response) -> Self {
        Self::ToDevice(response)
    }
}

/// Why a response was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// No request with this id is waiting for an answer, nor was one
    /// answered or cancelled lately (e.g. an id from before a restart).
    #[error("no outstanding request with id {0}")]
    UnknownRequest(OwnedTransactionId),
    /// The response is of another kind than the request.
    #[error("request {id} is a {expected} request, got a {found} response")]
    KindMismatch {
        /// The request id.
        id: OwnedTransactionId,
        /// The kind of the request.
        expected: &'static str,
        /// The kind of the response.
        found: &'static str,
    },
    /// A refusal was handed back for a request whose refusal means nothing
    /// to the engine (only backup requests have one); it stays queued.
    #[error("request {id} is a {kind} request, which cannot be refused with {refusal:?}")]
    RefusalNotExpected {
        /// The request id.
        id: OwnedTransactionId,
        /// The kind of the request.
        kind: &'static str,
        /// The refusal given.
        refusal: RequestRefusal,
    },
    /// Saving what the response changed failed; the response was not applied.
    #[error(transparent)]
    Store(#[from] crate::StoreError),
}

impl AnyOutgoingRequest {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::KeysUpload(_) => "keys upload",
            Self::KeysQuery(_) => "keys query",
            Self::KeysClaim(_) => "keys claim",
            Self::ToDevice(_) => "to-device",
            Self::SigningKeysUpload(_) => "signing keys upload",
            Self::SignatureUpload(_) => "signature upload",
            Self::RoomMessage(_) => "room message",
            Self::KeysBackup(_) => "keys backup",
            Self::BackupVersion(_) => "backup version",
            Self::BackupKeyLookup(_) => "backup key lookup",
        }
    }
}

impl AnyIncomingResponse<'_> {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::KeysUpload(_) => "keys upload",
            Self::KeysQuery(_) => "keys query",
            Self::KeysClaim(_) => "keys claim",
            Self::ToDevice(_) => "to-device",
            Self::SigningKeysUpload(_) => "signing keys upload",
            Self::SignatureUpload(_) => "signature upload",
            Self::RoomMessage(_) => "room message",
            Self::KeysBackup(_) => "keys backup",
            Self::BackupVersion(_) => "backup version",
            Self::BackupKeyLookup(_) => "backup key lookup",
        }
    }
}
