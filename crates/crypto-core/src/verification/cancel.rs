//! Why a verification ended without success: the spec's cancellation codes
//! (`m.key.verification.cancel`), sent and understood.

use serde_json::{Value, json};

/// A cancellation code.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CancelCode {
    /// `m.user`: the user cancelled or rejected.
    User,
    /// `m.timeout`: the verification took too long.
    Timeout,
    /// `m.unknown_transaction`: the transaction id is not known.
    UnknownTransaction,
    /// `m.unknown_method`: no method both sides support.
    UnknownMethod,
    /// `m.unexpected_message`: a message out of order.
    UnexpectedMessage,
    /// `m.key_mismatch`: a key was not verified (a MAC did not match).
    KeyMismatch,
    /// `m.user_mismatch`: a message from another user than the partner.
    UserMismatch,
    /// `m.invalid_message`: a malformed message.
    InvalidMessage,
    /// `m.accepted`: another of the user's devices accepted the request.
    Accepted,
    /// `m.mismatched_commitment`: the SAS key commitment did not match.
    MismatchedCommitment,
    /// `m.mismatched_sas`: the user said the short strings differ.
    MismatchedSas,
    /// Any other code (the spec asks for Java package naming).
    Other(String),
}

impl CancelCode {
    /// The code on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::User => "m.user",
            Self::Timeout => "m.timeout",
            Self::UnknownTransaction => "m.unknown_transaction",
            Self::UnknownMethod => "m.unknown_method",
            Self::UnexpectedMessage => "m.unexpected_message",
            Self::KeyMismatch => "m.key_mismatch",
            Self::UserMismatch => "m.user_mismatch",
            Self::InvalidMessage => "m.invalid_message",
            Self::Accepted => "m.accepted",
            Self::MismatchedCommitment => "m.mismatched_commitment",
            Self::MismatchedSas => "m.mismatched_sas",
            Self::Other(code) => code,
        }
    }

    /// The code a received cancel names.
    pub fn parse(code: &str) -> Self {
        match code {
            "m.user" => Self::User,
            "m.timeout" => Self::Timeout,
            "m.unknown_transaction" => Self::UnknownTransaction,
            "m.unknown_method" => Self::UnknownMethod,
            "m.unexpected_message" => Self::UnexpectedMessage,
            "m.key_mismatch" => Self::KeyMismatch,
            "m.user_mismatch" => Self::UserMismatch,
            "m.invalid_message" => Self::InvalidMessage,
            "m.accepted" => Self::Accepted,
            "m.mismatched_commitment" => Self::MismatchedCommitment,
            "m.mismatched_sas" => Self::MismatchedSas,
            other => Self::Other(other.to_owned()),
        }
    }

    /// A reason for people, sent beside the code.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::User => "The user cancelled the verification.",
            Self::Timeout => "The verification process timed out.",
            Self::UnknownTransaction => "The device does not know about the given transaction ID.",
            Self::UnknownMethod => "The device does not know how to handle the requested method.",
            Self::UnexpectedMessage => "The device received an unexpected message.",
            Self::KeyMismatch => "The key was not verified.",
            Self::UserMismatch => "The expected user did not match the user verified.",
            Self::InvalidMessage => "The message received was invalid.",
            Self::Accepted => "The verification request was accepted by a different device.",
            Self::MismatchedCommitment => "The hash commitment did not match.",
            Self::MismatchedSas => "The SAS did not match.",
            Self::Other(_) => "The verification was cancelled.",
        }
    }
}

/// A verification that ended: the code, its reason, and who ended it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cancellation {
    /// The code.
    pub code: CancelCode,
    /// The reason given (ours, or the other side's, shortened to 256 characters).
    pub reason: String,
    /// Whether this device cancelled (and sends the cancel).
    pub by_us: bool,
}

/// Longest reason kept from a peer's cancel.
const MAX_REASON: usize = 256;

impl Cancellation {
    /// We cancel with `code`.
    pub fn ours(code: CancelCode) -> Self {
        Self { reason: code.reason().to_owned(), code, by_us: true }
    }

    /// The other side cancelled with this content.
    pub fn theirs(content: &Value) -> Self {
        let code = CancelCode::parse(content.get("code").and_then(Value::as_str).unwrap_or("m.invalid_message"));
        let reason: String =
            content.get("reason").and_then(Value::as_str).unwrap_or("").chars().take(MAX_REASON).collect();
        Self { code, reason, by_us: false }
    }

    /// The `m.key.verification.cancel` content for `flow`.
    pub fn content(&self, flow: &super::FlowId) -> Value {
        flow.wrap(json!({ "code": self.code.as_str(), "reason": self.reason }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code of the spec's list is sent as named and understood back.
    #[test]
    fn every_spec_code_round_trips() {
        let codes = [
            "m.user",
            "m.timeout",
            "m.unknown_transaction",
            "m.unknown_method",
            "m.unexpected_message",
            "m.key_mismatch",
            "m.user_mismatch",
            "m.invalid_message",
            "m.accepted",
            "m.mismatched_commitment",
            "m.mismatched_sas",
        ];
        for code in codes {
            let parsed = CancelCode::parse(code);
            assert!(!matches!(parsed, CancelCode::Other(_)), "{code} is a known code");
            assert_eq!(parsed.as_str(), code);
            let received = Cancellation::theirs(
                &Cancellation::ours(parsed.clone()).content(&crate::verification::FlowId::ToDevice("t".into())),
            );
            assert_eq!(received.code, parsed);
            assert!(!received.by_us);
        }
        assert_eq!(CancelCode::parse("org.example.custom"), CancelCode::Other("org.example.custom".into()));
    }

    /// A hostile cancel (no code, a huge reason) is bounded and understood.
    #[test]
    fn a_hostile_cancel_is_bounded() {
        let content = json!({ "reason": "x".repeat(100_000) });
        let cancel = Cancellation::theirs(&content);
        assert_eq!(cancel.code, CancelCode::InvalidMessage);
        assert_eq!(cancel.reason.len(), MAX_REASON);
    }
}
