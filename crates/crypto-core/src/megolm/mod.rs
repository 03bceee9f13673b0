//! Megolm: room keys. Our outbound session per room (shared over Olm, rotated
//! by count, age, membership and settings), the inbound sessions we decrypt
//! with, withheld notices, and the wire formats.

mod content;
mod error;
mod inbound;
mod outbound;
mod settings;
mod withheld;

pub(crate) use content::{IncomingRoomEvent, RoomKeyContent, RoomPlaintext, parse_encrypted_event, room_key_content};
pub use error::{EncryptError, MegolmError, ShareError};
pub(crate) use inbound::{InboundGroupSession, Origin};
pub use inbound::{KeySource, OwnerMismatch, StoredInboundGroupSession};
pub(crate) use outbound::OutboundGroupSession;
pub use outbound::{SharedWith, StoredOutboundGroupSession};
pub use settings::{
    DEFAULT_ROTATION_MESSAGES, DEFAULT_ROTATION_PERIOD, DecryptionSettings, EncryptionSettings, SharingStrategy,
    TrustRequirement,
};
pub use withheld::{WithheldCode, WithheldInfo};
pub(crate) use withheld::{parse_withheld, withheld_content};

/// The algorithm name of Megolm room encryption.
pub const MEGOLM_ALGORITHM: &str = "m.megolm.v1.aes-sha2";
