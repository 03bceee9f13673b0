//! [`ClientError`]: what can go wrong in the client, by concern.

use hush_crypto_core::{EncryptError, ImportError, OpenError, ShareError, StoreError};

use crate::http::HttpError;

impl ClientError {
    pub(crate) fn serialization(error: impl std::fmt::Display) -> Self {
        Self::Serialization(error.to_string())
    }
}

/// An error of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Talking to the homeserver failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The crypto store failed or did not open.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The crypto engine could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Encrypting failed.
    #[error(transparent)]
    Encrypt(#[from] EncryptError),
    /// Sharing the room key failed.
    #[error(transparent)]
    Share(ShareError),
    /// Nothing was sent: users we verified changed their cross-signing
    /// identity (and, under `ErrorOnVerifiedUserProblem`, have devices
    /// their identity did not sign). Sending stays blocked until the
    /// application decides for each: withdraw the verification
    /// (`UserIdentity::withdraw_verification`, accepting the new identity
    /// as unverified) or verify them again.
    #[error(
        "nothing was sent in {room_id}: verified users changed identity ({changed:?}) or have unsigned devices ({unsigned_devices:?}); withdraw the verification or verify again"
    )]
    VerifiedUserProblem {
        /// The room.
        room_id: String,
        /// Users we verified whose identity changed.
        changed: Vec<ruma_common::OwnedUserId>,
        /// Devices of verified users their identity did not sign.
        unsigned_devices: Vec<(ruma_common::OwnedUserId, ruma_common::OwnedDeviceId)>,
    },
    /// Importing keys failed.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// A cross-signing command failed.
    #[error(transparent)]
    CrossSigning(#[from] hush_crypto_core::identities::CrossSigningError),
    /// A verification command failed.
    #[error(transparent)]
    Verification(#[from] hush_crypto_core::verification::VerificationError),
    /// A key backup could not be enabled, used or restored.
    #[error(transparent)]
    Backup(#[from] hush_crypto_core::BackupError),
    /// Backup data or a backup key was refused.
    #[error(transparent)]
    BackupKey(#[from] hush_crypto_core::backup::BackupKeyError),
    /// Secret storage could not be opened (a wrong recovery key or
    /// passphrase) or a secret in it was refused.
    #[error(transparent)]
    SecretStorage(#[from] hush_crypto_core::secret_storage::SecretStorageError),
    /// Recovered secrets did not match their public parts; nothing changed.
    #[error(transparent)]
    Recovery(#[from] hush_crypto_core::RecoveryError),
    /// The account has no secret storage (no default key) to recover from.
    #[error("this account has no secret storage to recover from; enable recovery on a device that has the keys")]
    NoSecretStorage,
    /// There is no backup on the server, or this device lacks its key.
    #[error("there is no key backup on the server, or this device does not hold its key")]
    NoBackup,
    /// Something we send or read could not be (de)serialized.
    #[error("serialization failed: {0}")]
    Serialization(String),
    /// The access token belongs to another device than the store.
    #[error(
        "the access token is for device {token_device} but the store belongs to device {store_device}; \
         restore the session saved with this store, or log in with device id {store_device}"
    )]
    DeviceMismatch {
        /// The device the access token is tied to.
        token_device: String,
        /// The device the store belongs to.
        store_device: String,
    },
    /// The call needs a logged-in client.
    #[error("the client is not logged in")]
    NotLoggedIn,
    /// The room is not known to the client (not joined, or not synced yet).
    #[error(
        "the encryption state of room {room_id} could not be learnt from the server ({reason}); \
         nothing was sent, since the room may be encrypted"
    )]
    EncryptionStateUnknown {
        /// The room.
        room_id: String,
        /// Why the server's answer was no help.
        reason: String,
    },
    /// The room did not become ready to encrypt (its requests kept failing
    /// or another task kept them busy); nothing was sent.
    #[error("room {room_id} is not ready to encrypt after several rounds (still {waiting}); nothing was sent")]
    RoomNotReady {
        /// The room.
        room_id: String,
        /// What it was still waiting for.
        waiting: String,
    },
    /// The room is not known to this client.
    #[error("unknown room {0}")]
    UnknownRoom(String),
    /// The engine refused the answer to one of its requests (an unknown or
    /// already answered request, or an answer of the wrong kind).
    #[error("the engine refused a response: {0}")]
    Response(hush_crypto_core::ResponseError),
    /// A task the client ran in the background failed (it panicked or was
    /// cancelled).
    #[error("a background task failed: {0}")]
    Task(String),
    /// The engine did something this client does not expect of it: a bug in
    /// hush, reported with what happened.
    #[error("unexpected engine behaviour (a bug in hush): {0}")]
    Internal(String),
    /// The device's store is shared through its lock, and another process
    /// or host held it for longer than this client waits.
    #[error("the store is locked by {holder}; waited {waited:?} for it")]
    StoreLocked {
        /// Who holds the lock.
        holder: String,
        /// How long this client waited.
        waited: std::time::Duration,
    },
    /// Requests of the engine were not sent in this turn: each failed for
    /// good before (refused, or answered with something unreadable) and
    /// waits until its next attempt. They stay queued.
    #[error("{count} request(s) held back after failing; the next attempt is in {retry_in:?}")]
    RequestsDeferred {
        /// How many were held back.
        count: usize,
        /// How long until the first of them is tried again.
        retry_in: std::time::Duration,
    },
    /// [`Encryption::ensure_identity`](crate::Encryption::ensure_identity)
    /// cannot go on without what this says.
    #[error(transparent)]
    IdentityNeeds(#[from] crate::IdentityNeed),
    /// The room is encrypted but the client was built without `e2e-encryption`.
    #[error("room {0} is encrypted and this client was built without the e2e-encryption feature")]
    EncryptionDisabled(String),
    /// An attachment could not be sent or downloaded.
    #[error(transparent)]
    Attachment(#[from] crate::media::AttachmentError),
    /// A file could not be read or written.
    #[error("file error: {0}")]
    Io(String),
    /// The builder was given inconsistent settings.
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl From<ShareError> for ClientError {
    fn from(error: ShareError) -> Self {
        match error {
            ShareError::VerifiedUserProblem { unsigned_devices, violations } => {
                Self::VerifiedUserProblem { room_id: String::new(), changed: violations, unsigned_devices }
            }
            other => Self::Share(other),
        }
    }
}

impl From<hush_crypto_core::ResponseError> for ClientError {
    fn from(error: hush_crypto_core::ResponseError) -> Self {
        match error {
            hush_crypto_core::ResponseError::Store(store) => Self::Store(store),
            other => Self::Response(other),
        }
    }
}
