//! [`QrVerification`]: one QR code verification between two devices, as a
//! state machine over message contents. Pure: it sends nothing and reads
//! no clock; each input returns the messages to send, and the whole
//! exchange must end within ten minutes of its creation.
//!
//! The showing side ([`QrVerification::show`]) waits for the scanner's
//! `m.key.verification.start` with `method: m.reciprocate.v1`; if its
//! `secret` is the code's, the user is asked whether the other device
//! reported success, and [`QrVerification::confirm`] proves the code's
//! second key (the key the scanner vouched for). The scanning side
//! ([`QrVerification::scan`]) checks the code's flow, mode and keys against
//! what it believes ([`ScanExpectations`]) before anything is sent, and
//! proves the keys it checked once the shower says `done`.
//!
//! Every content sent is built bare and named by [`FlowId::wrap`]; every
//! content received must name the flow ([`FlowId::named_by`]).

use std::time::Duration;

use serde_json::{Value, json};
use vodozemac::Ed25519PublicKey;
use zeroize::Zeroizing;

use super::payload::{MAX_SECRET, QrCodeData, QrError, QrMode};
use crate::{
    Timestamp,
    verification::{CancelCode, Cancellation, FlowId, Party, ProofMethod, VerificationProof, sas::Outgoing},
};

/// How long a verification may take, from its creation.
pub const QR_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The method of the scanner's `start`.
const RECIPROCATE: &str = "m.reciprocate.v1";

const START: &str = "m.key.verification.start";
const DONE: &str = "m.key.verification.done";
const CANCEL: &str = "m.key.verification.cancel";

/// The longest `secret` accepted before decoding: unpadded base64 of the
/// longest secret a code may hold.
const MAX_SECRET_BASE64: usize = (MAX_SECRET * 4).div_ceil(3);

/// What the scanning device believes, to compare a scanned code with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanExpectations {
    /// Our user's master key as the server lists it, if we have an identity.
    pub our_master_key: Option<Ed25519PublicKey>,
    /// Whether this device trusts `our_master_key` (it verified it, or
    /// holds its private key).
    pub our_master_key_trusted: bool,
    /// The other user's master key as the server lists it.
    pub their_master_key: Option<Ed25519PublicKey>,
    /// This device's ed25519 key.
    pub our_device_key: Ed25519PublicKey,
    /// The other device's ed25519 key as the server lists it.
    pub their_device_key: Ed25519PublicKey,
    /// Whether the other device is one of our own user's.
    pub own_user: bool,
}

/// Where a QR code verification stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QrState {
    /// We show the code and wait for the other device to scan it.
    WaitingForScan,
    /// The other device scanned our code and sent its secret back: ask our
    /// user whether the other device shows a success, then
    /// [`QrVerification::confirm`] or [`QrVerification::mismatch`].
    Scanned,
    /// We scanned their code, its keys matched and we sent the secret back;
    /// waiting for their `done`.
    Reciprocated,
    /// Verified: [`QrVerification::proof`] names the keys.
    Done,
    /// Ended without success.
    Cancelled(Cancellation),
}

enum State {
    Showing,
    Scanned,
    /// The proof is fixed when the code is checked, given when they are done.
    Reciprocated {
        proof: VerificationProof,
    },
    Done {
        proof: VerificationProof,
    },
    Cancelled(Cancellation),
}

/// One QR code verification, on the showing or on the scanning side.
pub struct QrVerification {
    flow: FlowId,
    us: Party,
    them: Party,
    data: QrCodeData,
    deadline: Timestamp,
    state: State,
}

impl std::fmt::Debug for QrVerification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QrVerification")
            .field("flow", &self.flow)
            .field("them", &self.them)
            .field("mode", &self.data.mode())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl QrVerification {
    /// We show `data` (made with one of [`QrCodeData`]'s mode constructors)
    /// to `them`. An error if the code names another flow, or if its mode
    /// is for verifying another user and `them` is our own user (or the
    /// other way round).
    pub fn show(us: Party, them: Party, flow: FlowId, data: QrCodeData, now: Timestamp) -> Result<Self, QrError> {
        if data.flow_id() != flow.as_str() {
            return Err(QrError::FlowMismatch { code: data.flow_id().to_owned(), flow: flow.as_str().to_owned() });
        }
        let own_user = us.user_id == them.user_id;
        if own_user == (data.mode() == QrMode::VerifyingAnotherUser) {
            return Err(QrError::ModeDoesNotFit { mode: data.mode(), own_user });
        }
        Ok(Self { flow, us, them, data, deadline: now.saturating_add(QR_TIMEOUT), state: State::Showing })
    }

    /// We scanned `data`, shown by `them`: if its flow, mode and keys are
    /// what we believe, the `start` (`m.reciprocate.v1`) to send;
    /// otherwise the `m.key_mismatch` cancellation for the caller to show
    /// and send (nothing else was sent).
    pub fn scan(
        us: Party,
        them: Party,
        flow: FlowId,
        data: QrCodeData,
        expected: ScanExpectations,
        now: Timestamp,
    ) -> Result<(Self, Outgoing), Cancellation> {
        let proof = scanned_proof(&us, &them, &flow, &data, &expected)
            .ok_or_else(|| Cancellation::ours(CancelCode::KeyMismatch))?;
        let secret = vodozemac::base64_encode(data.secret());
        let content = flow.wrap(json!({ "method": RECIPROCATE, "from_device": us.device_id, "secret": secret }));
        let verification = Self {
            flow,
            us,
            them,
            data,
            deadline: now.saturating_add(QR_TIMEOUT),
            state: State::Reciprocated { proof },
        };
        Ok((verification, Outgoing { event_type: START, content }))
    }

    /// The flow.
    pub fn flow(&self) -> &FlowId {
        &self.flow
    }

    /// The other side.
    pub fn other(&self) -> &Party {
        &self.them
    }

    /// The code, shown or scanned: [`QrCodeData::to_qr_code`] draws it.
    pub fn data(&self) -> &QrCodeData {
        &self.data
    }

    /// Where it stands.
    pub fn state(&self) -> QrState {
        match &self.state {
            State::Showing => QrState::WaitingForScan,
            State::Scanned => QrState::Scanned,
            State::Reciprocated { .. } => QrState::Reciprocated,
            State::Done { .. } => QrState::Done,
            State::Cancelled(cancellation) => QrState::Cancelled(cancellation.clone()),
        }
    }

    /// Proof of the keys verified, once done.
    pub fn proof(&self) -> Option<VerificationProof> {
        match &self.state {
            State::Done { proof } => Some(proof.clone()),
            _ => None,
        }
    }

    fn is_finished(&self) -> bool {
        matches!(self.state, State::Done { .. } | State::Cancelled(_))
    }

    /// The deadline, while it is not finished.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        (!self.is_finished()).then_some(self.deadline)
    }

    /// Cancels with `m.timeout` if the deadline passed.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Vec<Outgoing> {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => self.cancel(CancelCode::Timeout),
            _ => Vec::new(),
        }
    }

    /// The user (or the application) cancels. Nothing once finished.
    pub fn cancel(&mut self, code: CancelCode) -> Vec<Outgoing> {
        if self.is_finished() {
            return Vec::new();
        }
        self.fail(Cancellation::ours(code))
    }

    /// Our user says the other device did not show a success (or the
    /// application saw a mismatch): cancels with `m.key_mismatch`.
    pub fn mismatch(&mut self) -> Vec<Outgoing> {
        self.cancel(CancelCode::KeyMismatch)
    }

    /// Our user, shown that the other device scanned our code, says it
    /// shows a success: done, and the `done` to send. Nothing in any other
    /// state.
    pub fn confirm(&mut self) -> Vec<Outgoing> {
        if !matches!(self.state, State::Scanned) {
            return Vec::new();
        }
        match self.shown_proof() {
            Some(proof) => {
                self.state = State::Done { proof };
                vec![self.done_message()]
            }
            None => self.fail(Cancellation::ours(CancelCode::KeyMismatch)),
        }
    }

    fn fail(&mut self, cancellation: Cancellation) -> Vec<Outgoing> {
        let outgoing =
            cancellation.by_us.then(|| Outgoing { event_type: CANCEL, content: cancellation.content(&self.flow) });
        self.state = State::Cancelled(cancellation);
        outgoing.into_iter().collect()
    }

    fn done_message(&self) -> Outgoing {
        Outgoing { event_type: DONE, content: self.flow.wrap(json!({})) }
    }

    /// A message from the other side (`event_type` is the
    /// `m.key.verification.*` type). Returns what to send.
    ///
    /// Once finished, every message is ignored. A `start` or `cancel` that
    /// names another flow is not this flow's and is ignored (the spec's
    /// unknown-transaction rule exempts both); any other message naming
    /// another flow cancels with `m.unknown_transaction`.
    pub fn receive(&mut self, event_type: &str, content: &Value, now: Timestamp) -> Vec<Outgoing> {
        if self.is_finished() {
            return Vec::new();
        }
        if now >= self.deadline {
            return self.cancel(CancelCode::Timeout);
        }
        if !self.flow.named_by(content) {
            return match event_type {
                START | CANCEL => Vec::new(),
                _ => self.fail(Cancellation::ours(CancelCode::UnknownTransaction)),
            };
        }
        if event_type == CANCEL {
            return self.fail(Cancellation::theirs(content));
        }
        match self.step(event_type, content) {
            Ok(outgoing) => outgoing,
            Err(cancellation) => self.fail(cancellation),
        }
    }

    fn step(&mut self, event_type: &str, content: &Value) -> Result<Vec<Outgoing>, Cancellation> {
        let unexpected = Cancellation::ours(CancelCode::UnexpectedMessage);
        match (std::mem::replace(&mut self.state, State::Cancelled(unexpected.clone())), event_type) {
            (State::Showing, START) => {
                self.check_reciprocate(content)?;
                self.state = State::Scanned;
                Ok(Vec::new())
            }
            // The spec lets both sides send `done` in either order: theirs
            // before our user confirmed changes nothing.
            (State::Scanned, DONE) => {
                self.state = State::Scanned;
                Ok(Vec::new())
            }
            (State::Reciprocated { proof }, DONE) => {
                self.state = State::Done { proof };
                Ok(vec![self.done_message()])
            }
            _ => Err(unexpected),
        }
    }

    /// Checks the scanner's `start`: the method, the device, and the
    /// secret (in constant time).
    fn check_reciprocate(&self, content: &Value) -> Result<(), Cancellation> {
        let method = content.get("method").and_then(Value::as_str).ok_or_else(invalid)?;
        if method != RECIPROCATE {
            return Err(Cancellation::ours(CancelCode::UnknownMethod));
        }
        let from_device = content.get("from_device").and_then(Value::as_str).ok_or_else(invalid)?;
        if from_device != self.them.device_id.as_str() {
            return Err(invalid());
        }
        let secret = content.get("secret").and_then(Value::as_str).ok_or_else(invalid)?;
        if secret.len() > MAX_SECRET_BASE64 {
            return Err(invalid());
        }
        let secret = Zeroizing::new(vodozemac::base64_decode(secret).map_err(|_| invalid())?);
        if !self.data.secret_matches(&secret) {
            return Err(Cancellation::ours(CancelCode::KeyMismatch));
        }
        Ok(())
    }

    /// What the showing side proves once its user confirmed: the code's
    /// second key, which the scanner found to be its own.
    fn shown_proof(&self) -> Option<VerificationProof> {
        let key = self.data.second_key();
        let (user_id, device, master) = match self.data.mode() {
            QrMode::VerifyingAnotherUser => (&self.them.user_id, None, Some(key)),
            QrMode::SelfVerifyingMasterKeyTrusted => {
                (&self.them.user_id, Some((self.them.device_id.clone(), key)), None)
            }
            QrMode::SelfVerifyingMasterKeyUntrusted => (&self.us.user_id, None, Some(key)),
        };
        VerificationProof::new(user_id.clone(), device, master, ProofMethod::QrCode)
    }
}

fn invalid() -> Cancellation {
    Cancellation::ours(CancelCode::InvalidMessage)
}

/// What a scanned code proves, if its flow, its mode and both its keys are
/// what we believe; `None` if anything differs.
///
/// * `0x00`: their master key is the first key, and the second is our
///   master key, which we trust (otherwise we would vouch to them for a key
///   the server may have made up). Proves their master key.
/// * `0x01`: the first key is our master key as the server lists it (the
///   shower trusts it), the second is this device's key. Proves the master
///   key only: the code does not hold the shower's device key.
/// * `0x02`: the first key is their device key, the second our master key,
///   which we trust. Proves their device key.
fn scanned_proof(
    us: &Party,
    them: &Party,
    flow: &FlowId,
    data: &QrCodeData,
    expected: &ScanExpectations,
) -> Option<VerificationProof> {
    let own_user = us.user_id == them.user_id;
    if data.flow_id() != flow.as_str() || expected.own_user != own_user {
        return None;
    }
    let (first, second) = (data.first_key(), data.second_key());
    let trusted_own_master = expected.our_master_key.filter(|_| expected.our_master_key_trusted);
    let keys_match = match data.mode() {
        QrMode::VerifyingAnotherUser => {
            !own_user && expected.their_master_key == Some(first) && trusted_own_master == Some(second)
        }
        QrMode::SelfVerifyingMasterKeyTrusted => {
            own_user && expected.our_master_key == Some(first) && expected.our_device_key == second
        }
        QrMode::SelfVerifyingMasterKeyUntrusted => {
            own_user && expected.their_device_key == first && trusted_own_master == Some(second)
        }
    };
    if !keys_match {
        return None;
    }
    let (device, master) = match data.mode() {
        QrMode::SelfVerifyingMasterKeyUntrusted => (Some((them.device_id.clone(), first)), None),
        QrMode::VerifyingAnotherUser | QrMode::SelfVerifyingMasterKeyTrusted => (None, Some(first)),
    };
    VerificationProof::new(them.user_id.clone(), device, master, ProofMethod::QrCode)
}
