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
//! * `flow`: how a flow names itself, to-device or in a room ([`FlowId`]).
//! * `qr`: QR codes, their payload and the `m.reciprocate.v1` exchange.
//! * `proof`: [`VerificationProof`], the only key to the trust setters.
//! * `limits`: how many flows are held, per sender, per room, ours apart.
//! * `registry`: every flow of this device and the routing of messages
//!   ([`Verifications`]); the engine's `machine/verification` feeds it.

mod cancel;
mod emoji;
mod flow;
pub mod limits;
pub mod proof;
pub mod qr;
pub mod registry;
#[cfg(test)]
mod registry_tests;
pub mod request;
pub mod sas;

pub use cancel::{CancelCode, Cancellation};
pub use emoji::{SasEmoji, emoji_table};
pub use flow::FlowId;
pub use proof::{ProofMethod, VerificationProof};
pub use qr::{QrCodeData, QrError, QrImage, QrMode, QrState, QrVerification, ScanExpectations};
pub use registry::{
    FlowError, FlowKeys, FlowState, Incoming, MethodState, Recipient, Step, VerificationMessage, Verifications,
};
pub use request::{RequestState, VerificationRequest};
pub use sas::{Party, SasKeys, SasState, SasVerification};

/// Why a verification command failed.
#[derive(Debug, thiserror::Error)]
pub enum VerificationError {
    /// The flow does not allow it (unknown, wrong state, method not offered).
    #[error(transparent)]
    Flow(#[from] FlowError),
    /// Reading or saving keys failed.
    #[error(transparent)]
    Store(#[from] crate::StoreError),
}

/// The flow a to-device verification content names.
pub(crate) fn flow_of_to_device(content: &serde_json::Value) -> Option<FlowId> {
    flow::to_device_flow(content).map(|id| FlowId::ToDevice(id.to_owned()))
}

/// The request event an in-room verification content relates to.
pub(crate) fn related_event_of(content: &serde_json::Value) -> Option<&str> {
    flow::related_event(content)
}
