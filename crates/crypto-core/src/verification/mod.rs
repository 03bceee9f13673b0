//! Interactive verification: checking, over a channel the server does not
//! control (two people side by side, a phone call), that the keys a device
//! shows are the keys the other device has. Pure and time-driven, like the
//! rest of the engine.
//!
//! * `cancel`: the cancellation codes of `m.key.verification.cancel`.
//! * `emoji`: the spec's SAS emoji table.
//! * `request`: the request / ready phase ([`VerificationRequest`]), the
//!   crossing-start rule.
//! * `sas`: the `m.sas.v1` exchange ([`SasVerification`]).
//!
//! Built so far: the request phase and the SAS exchange between two
//! devices over to-device contents, as pure state machines. Still to come
//! (the verification issue): their routing through `OlmMachine` and the
//! client, in-room flows, QR codes, and marking the verified keys trusted.

mod cancel;
mod emoji;
pub mod request;
pub mod sas;

pub use cancel::{CancelCode, Cancellation};
pub use emoji::{SasEmoji, emoji_table};
pub use request::{RequestState, VerificationRequest};
pub use sas::{Party, SasState, SasVerification};
