//! QR code verification (`m.qr_code.show.v1`, `m.qr_code.scan.v1` and
//! `m.reciprocate.v1`): one device shows a code holding two keys and a
//! shared secret, the other scans it, checks the keys and sends the secret
//! back; the user of the showing device then confirms that the scanning
//! device reported success.
//!
//! * `payload`: the code's binary contents ([`QrCodeData`], [`QrMode`])
//!   and their one checked decoder ([`QrError`]).
//! * `image`: the code drawn ([`QrImage`]: one byte-mode segment, as SVG
//!   or terminal text).
//! * `machine`: the exchange as a pure state machine over message contents
//!   ([`QrVerification`], [`QrState`], [`ScanExpectations`]), time as an
//!   input, ending in a `VerificationProof` of exactly the keys checked.

mod image;
mod machine;
mod payload;

pub use image::QrImage;
pub use machine::{QR_TIMEOUT, QrState, QrVerification, ScanExpectations};
pub use payload::{QrCodeData, QrError, QrMode};

#[cfg(test)]
mod tests;
