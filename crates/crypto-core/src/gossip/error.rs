//! Why a gossip message was refused.

use ruma_common::{OwnedDeviceId, OwnedUserId};

/// Why a secret or a forwarded room key was not taken, or a request not
/// answered. Each names the values that explain it; never the secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GossipError {
    /// The content is not the shape the spec requires.
    #[error("malformed {event_type}: {reason}")]
    Malformed {
        /// The event type.
        event_type: &'static str,
        /// What is wrong (never the secret itself).
        reason: String,
    },
    /// A secret or a forwarded key came in the clear.
    #[error("a {0} arrived unencrypted")]
    NotEncrypted(&'static str),
    /// It came from another user.
    #[error("{event_type} from {sender}, who is not us")]
    NotOurUser {
        /// The event type.
        event_type: &'static str,
        /// The sender.
        sender: OwnedUserId,
    },
    /// It came from one of our devices that we have not verified.
    #[error("{event_type} from our unverified device {device_id}")]
    UnverifiedDevice {
        /// The event type.
        event_type: &'static str,
        /// The device.
        device_id: OwnedDeviceId,
    },
    /// It came from a device whose Olm identity we could not tie to a known device.
    #[error("{0} from a device we do not know")]
    UnknownDevice(&'static str),
    /// No open request of ours matches it.
    #[error("{event_type} answers no open request of ours ({what})")]
    Unrequested {
        /// The event type.
        event_type: &'static str,
        /// The request id, or room and session.
        what: String,
    },
    /// The secret does not match its public part.
    #[error("the secret {name} does not match its public key")]
    SecretMismatch {
        /// The secret's name.
        name: String,
    },
}
