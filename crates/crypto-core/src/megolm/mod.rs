//! Megolm: room keys. Our outbound session per room (shared over Olm, rotated
//! by count, age, membership and settings: `rotation`), who receives it
//! (`recipients`), the room's encryption rule (`room_encryption`), the
//! inbound sessions we decrypt with and the replay rule (`replay`), withheld
//! notices, and the wire formats.

mod cache;
mod content;
mod error;
mod event;
mod inbound;
mod open;
mod outbound;
pub mod recipients;
mod replay;
mod room_encryption;
mod room_key;
mod rotation;
mod settings;
mod sharing;
mod withheld;

pub(crate) use cache::GroupCache;
pub(crate) use content::{IncomingRoomEvent, RoomKeyContent, RoomPlaintext, parse_encrypted_event, room_key_content};
pub use error::{EncryptError, MegolmError, ShareError};
pub(crate) use event::SenderState;
pub use event::{DecryptedRoomEvent, MegolmDecryptionInfo, VerificationState};
pub(crate) use inbound::{BadExportedKey, ExportedParts, InboundGroupSession, Judgement, Origin};
pub use inbound::{KeySource, OwnerMismatch, StoredInboundGroupSession};
pub(crate) use open::{KeyFacts, Opened, Parsed, SessionMap, contain_open, parse};
pub(crate) use outbound::OutboundGroupSession;
pub use outbound::{RoomKeyShareRecord, ShareOutcome, SharedWith, StoredOutboundGroupSession};
pub(crate) use recipients::{DeviceShare, MemberTrust, device_share, verified_user_problems};
pub use recipients::{Membership, key_recipients};
pub(crate) use replay::{FirstUse, IndexUse, ReplayGuard};
pub use room_encryption::{EncryptionMerge, RoomEncryption};
pub(crate) use room_key::{PreparedRoomKey, prepare_room_key};
pub use rotation::RotationReason;
pub(crate) use rotation::{age_deadline, expiry_reason, rotation_reason};
pub use settings::{
    DEFAULT_ROTATION_MESSAGES, DEFAULT_ROTATION_PERIOD, DecryptionSettings, EncryptionSettings, MIN_ROTATION_MESSAGES,
    MIN_ROTATION_PERIOD, SharingStrategy, TrustRequirement,
};
pub(crate) use sharing::ShareTargets;
pub use withheld::{WithheldCode, WithheldInfo};
pub(crate) use withheld::{parse_withheld, withheld_content};

/// The algorithm name of Megolm room encryption.
pub const MEGOLM_ALGORITHM: &str = "m.megolm.v1.aes-sha2";
