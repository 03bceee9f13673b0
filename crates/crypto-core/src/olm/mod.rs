//! Olm: this device's account, its sessions with other devices, the rules
//! and timers for making new ones (`claims`), and the encrypted to-device
//! wire format.

mod account;
mod claims;
mod error;
mod payload;
mod session;

pub(crate) use account::Account;
pub(crate) use claims::{CLAIMS_RECORD, ClaimState, DeviceKey, LEGACY_UNWEDGE_RECORD, WedgeDecision};
pub use error::{OlmEncryptionError, OlmError};
pub use payload::OLM_ALGORITHM;
pub(crate) use payload::{
    CheckedPlaintext, IncomingOlm, OwnIdentity, build_plaintext, check_plaintext, encrypted_content, parse_incoming,
};
pub(crate) use session::{Session, SessionOwner};
