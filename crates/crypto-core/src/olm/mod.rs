//! Olm: this device's account, its sessions with other devices, the rules
//! and timers for making new ones (`claims`), the encrypted to-device
//! wire format, and how a sync's one-time-key count is read (`key_counts`).

mod account;
mod batch;
mod claims;
mod encrypt;
mod error;
mod key_counts;
mod outcome;
mod payload;
mod session;
mod session_cache;

pub(crate) use account::Account;
pub(crate) use batch::{
    BatchOutcome, CarriedRoomKey, Classified, Fate, Pending, SenderDone, SenderJob, classify, decrypt_part, take,
};
pub(crate) use claims::{CLAIMS_RECORD, ClaimState, DeviceKey, LEGACY_UNWEDGE_RECORD, WedgeDecision};
pub(crate) use encrypt::{ToDeviceContent, encrypt_for, to_device_request};
pub use error::{OlmEncryptionError, OlmError};
pub use key_counts::OneTimeKeyCounts;
pub use outcome::{OlmDecryptionInfo, ToDeviceOutcome};
pub use payload::OLM_ALGORITHM;
pub(crate) use payload::{
    CheckedPlaintext, IncomingOlm, OwnIdentity, build_plaintext, check_plaintext, encrypted_content, parse_incoming,
};
pub(crate) use session::{Session, SessionOwner};
pub(crate) use session_cache::SessionCache;
