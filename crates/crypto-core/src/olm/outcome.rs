//! What became of an Olm to-device event: [`ToDeviceOutcome`], and who sent
//! a decrypted one ([`OlmDecryptionInfo`]). `Debug` never shows decrypted
//! content.

use ruma_common::{OwnedDeviceId, OwnedUserId, serde::Raw};
use ruma_events::AnyToDeviceEvent;
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey};

use super::OlmError;

/// Who sent an Olm-encrypted to-device event, and over which session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OlmDecryptionInfo {
    /// The sending user (the event's `sender`, matched by the plaintext).
    pub sender: OwnedUserId,
    /// The sending device, if known from a keys query or proven by `sender_device_keys`.
    pub sender_device: Option<OwnedDeviceId>,
    /// The sender's curve25519 key (authenticated by the Olm session).
    pub sender_curve25519_key: Curve25519PublicKey,
    /// The ed25519 key the plaintext claims (checked against the known device).
    pub sender_ed25519_key: Ed25519PublicKey,
    /// The Olm session that decrypted it.
    pub session_id: String,
    /// The decrypted event's type.
    pub event_type: String,
}

/// What became of one to-device event. `Debug` shows a decrypted event's
/// type and sender, never its content (decrypted payloads are secret).
#[derive(Clone)]
pub enum ToDeviceOutcome {
    /// An Olm-encrypted event, decrypted and checked: `{sender, type, content}`.
    Decrypted {
        /// The decrypted event.
        event: Raw<AnyToDeviceEvent>,
        /// Who sent it, over which session.
        info: Box<OlmDecryptionInfo>,
    },
    /// An event that was not encrypted, passed on unchanged.
    PlainText(Raw<AnyToDeviceEvent>),
    /// An Olm event that decrypted and passed every plaintext check, whose
    /// payload was then refused (an invalid `m.room_key`, or one whose session
    /// id is held for another owner). The Olm layer worked: the session the
    /// message used or established is kept (and a one-time key it used stays
    /// consumed), since the sender really holds it and its next messages
    /// need it. Nothing the payload carried was stored.
    PayloadRejected {
        /// The decrypted event (a room key's secret blanked).
        event: Raw<AnyToDeviceEvent>,
        /// Who sent it, over which session.
        info: Box<OlmDecryptionInfo>,
        /// Why the payload was refused.
        error: OlmError,
    },
    /// An event that was rejected: no Olm session, one-time key or room key
    /// changed because of it. Only bookkeeping may be saved: the sender's
    /// device list marked outdated, or (for a known device's message that
    /// no session decrypts) the once-an-hour unwedging record.
    Failed {
        /// The event as received.
        event: Raw<AnyToDeviceEvent>,
        /// Why it was rejected.
        error: OlmError,
    },
}

/// `type` and `sender` of an event, for `Debug` without its content.
pub(crate) fn event_summary(event: &Raw<AnyToDeviceEvent>) -> String {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "type")]
        event_type: Option<String>,
        sender: Option<String>,
    }
    match event.deserialize_as_unchecked::<Head>() {
        Ok(head) => format!(
            "{} from {} (content redacted)",
            head.event_type.as_deref().unwrap_or("?"),
            head.sender.as_deref().unwrap_or("?")
        ),
        Err(_) => "(unreadable event, redacted)".to_owned(),
    }
}

impl std::fmt::Debug for ToDeviceOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Decrypted { event, info } => {
                f.debug_struct("Decrypted").field("event", &event_summary(event)).field("info", info).finish()
            }
            Self::PayloadRejected { event, info, error } => f
                .debug_struct("PayloadRejected")
                .field("event", &event_summary(event))
                .field("info", info)
                .field("error", error)
                .finish(),
            // Sent in the clear, or still encrypted: nothing secret to hide.
            Self::PlainText(event) => f.debug_tuple("PlainText").field(event).finish(),
            Self::Failed { event, error } => {
                f.debug_struct("Failed").field("event", event).field("error", error).finish()
            }
        }
    }
}
