//! Interactive verification: checking, over a channel the server does not
//! control (two people side by side, a phone call), that the keys a device
//! shows are the keys the other device has. Pure and time-driven, like the
//! rest of the engine.
//!
//! * `cancel`: the cancellation codes of `m.key.verification.cancel`.
//! * `emoji`: the spec's SAS emoji table.
//! * `sas`: the `m.sas.v1` exchange ([`SasVerification`]).
//!
//! Built so far: the SAS exchange between two devices over to-device
//! contents. Still to come (the verification issue): requests / ready /
//! done and their routing through `OlmMachine`, in-room flows, QR codes,
//! and marking the verified keys trusted.

mod cancel;
mod emoji;
pub mod sas;

pub use cancel::{CancelCode, Cancellation};
pub use emoji::{SasEmoji, emoji_table};
pub use sas::{Party, SasState, SasVerification};
