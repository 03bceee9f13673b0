//! [`Verifications`]: every verification flow this device takes part in,
//! by the other user and the flow id, and the routing of messages to the
//! request and the method (SAS or QR code) of their flow. Pure: the
//! engine fetches the keys a step needs beforehand ([`FlowKeys`]) and
//! sends the messages a step returns ([`Step`]).
//!
//! Rules kept here, beside those of the request and method machines:
//! * a message of a flow we do not know, or of a third user, is ignored
//!   (answering could let anyone cancel flows);
//! * after `ready`, only the device that answered takes part: messages from
//!   the user's other devices are ignored;
//! * our to-device request's other recipients are told `m.accepted` once
//!   one device answers; in a room, our own other device's `ready` or
//!   `start` means the request was answered elsewhere;
//! * a `start` from the other side is accepted at once (our user accepted
//!   the request already); two crossing `start`s keep the one of the
//!   smaller user id, then device id, and with different methods the flow
//!   is cancelled with `m.unexpected_message`;
//! * how many flows are held, and which gives way to a new one, is
//!   `verification/limits`: per sender, per room, our own apart.

use std::collections::BTreeMap;

use ruma_common::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, UserId};
use serde_json::Value;

use super::limits::{self, Admission, FlowSummary};
use super::{
    CancelCode, Cancellation, FlowId, Party, QrCodeData, QrState, QrVerification, RequestState, SasKeys, SasState,
    SasVerification, ScanExpectations, VerificationProof, VerificationRequest,
    request::{RECIPROCATE_METHOD, SAS_METHOD, accepted_elsewhere, our_start_wins},
    sas::Outgoing,
};
use crate::Timestamp;

/// Where a verification message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// To-device, to these devices of the user.
    Devices(OwnedUserId, Vec<OwnedDeviceId>),
    /// A room event.
    Room(OwnedRoomId),
}

/// A message to send.
#[derive(Clone, Debug, PartialEq)]
pub struct VerificationMessage {
    /// Where.
    pub to: Recipient,
    /// `m.key.verification.*`.
    pub event_type: &'static str,
    /// The content, naming its flow.
    pub content: Value,
}

/// What a flow's method stands at, for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MethodState {
    /// A SAS exchange.
    Sas(SasState),
    /// A QR code, shown or scanned.
    Qr(QrState),
}

/// Where a whole flow stands: its request and its method, if one started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowState {
    /// Whether this device sent the request.
    pub we_requested: bool,
    /// The other user's device in this flow, once known (the device that
    /// sent or answered the request; `None` while a request sent to all of
    /// a user's devices is unanswered).
    pub other_device: Option<OwnedDeviceId>,
    /// The request.
    pub request: RequestState,
    /// The method.
    pub method: Option<MethodState>,
}

impl FlowState {
    /// Whether the flow ended (verified or cancelled).
    pub fn is_finished(&self) -> bool {
        match &self.method {
            Some(MethodState::Sas(SasState::Done { .. } | SasState::Cancelled(_))) => true,
            Some(MethodState::Qr(QrState::Done | QrState::Cancelled(_))) => true,
            _ => matches!(self.request, RequestState::Cancelled(_)),
        }
    }

    /// The cancellation that ended it, if any.
    pub fn cancellation(&self) -> Option<&Cancellation> {
        match (&self.method, &self.request) {
            (Some(MethodState::Sas(SasState::Cancelled(c)) | MethodState::Qr(QrState::Cancelled(c))), _) => Some(c),
            (_, RequestState::Cancelled(c)) => Some(c),
            _ => None,
        }
    }
}

/// The keys a step may need, fetched by the engine before it: ours, and
/// those of the flow's other device as the server lists them.
#[derive(Clone, Debug)]
pub struct FlowKeys {
    /// Ours, as our MAC covers them (the master key only if we trust it).
    pub ours: SasKeys,
    /// The other device's, if we know the device.
    pub theirs: Option<SasKeys>,
    /// For QR codes: what we believe about both sides.
    pub expectations: Option<ScanExpectations>,
}

/// What one input did.
#[derive(Debug, Default)]
pub struct Step {
    /// Messages to send.
    pub messages: Vec<VerificationMessage>,
    /// The flow changed (or appeared).
    pub changed: Option<(OwnedUserId, FlowId)>,
    /// The flow verified these keys.
    pub proof: Option<VerificationProof>,
}

enum Method {
    Sas(Box<SasVerification>),
    Qr(Box<QrVerification>),
}

struct Flow {
    request: VerificationRequest,
    /// Hashes of the messages received (type and content), to ignore a
    /// message the network delivers twice.
    seen: Vec<u64>,
    /// Our to-device request's recipients (for `m.accepted`).
    recipients: Vec<OwnedDeviceId>,
    method: Option<Method>,
    /// Insertion order, to drop the oldest finished flow first.
    serial: u64,
}

/// How many received messages a flow remembers (a flow has about ten).
const SEEN_KEPT: usize = 32;

impl Flow {
    fn request_us(&self) -> &Party {
        self.request.us()
    }

    /// Whether this message was not received before (and remembers it).
    fn first_delivery(&mut self, event_type: &str, content: &Value) -> bool {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        event_type.hash(&mut hasher);
        content.to_string().hash(&mut hasher);
        let hash = hasher.finish();
        if self.seen.contains(&hash) {
            return false;
        }
        if self.seen.len() >= SEEN_KEPT {
            self.seen.remove(0);
        }
        self.seen.push(hash);
        true
    }

    fn state(&self) -> FlowState {
        let method = self.method.as_ref().map(|method| match method {
            Method::Sas(sas) => MethodState::Sas(sas.state()),
            Method::Qr(qr) => MethodState::Qr(qr.state()),
        });
        FlowState {
            we_requested: self.request.we_requested(),
            other_device: self.request.other().map(|party| party.device_id),
            request: self.request.state().clone(),
            method,
        }
    }
}

/// Every flow of this device.
pub struct Verifications {
    us: Party,
    flows: BTreeMap<(OwnedUserId, FlowId), Flow>,
    serial: u64,
}

impl std::fmt::Debug for Verifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifications").field("flows", &self.flows.len()).finish_non_exhaustive()
    }
}

/// Why a command on a flow could not run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// No such flow.
    #[error("no verification flow {flow:?} with {user_id}")]
    UnknownFlow {
        /// The other user.
        user_id: OwnedUserId,
        /// The flow.
        flow: FlowId,
    },
    /// The flow is not in a state where this can be done.
    #[error("the verification flow cannot {action} now")]
    WrongState {
        /// What was asked.
        action: &'static str,
    },
    /// The other side did not offer what this needs.
    #[error("the other side does not support {method}")]
    MethodNotOffered {
        /// The method.
        method: &'static str,
    },
    /// We do not know the other device's keys.
    #[error("the other device's keys are not known")]
    UnknownDevice,
    /// Too many flows of our own making are in progress (see
    /// [`MAX_OUTGOING`](super::limits::MAX_OUTGOING)); requests from others never count.
    #[error("too many verification flows of ours are in progress")]
    TooMany,
    /// A QR code could not be made or does not fit the flow.
    #[error("QR code: {0}")]
    Qr(String),
}

/// Where a flow's messages go: its room; the device that answered; or,
/// before an answer, every device our request went to.
fn recipient_of(key: &(OwnedUserId, FlowId), entry: &Flow) -> Recipient {
    match (key.1.room_id(), entry.request.other()) {
        (Some(room_id), _) => Recipient::Room(room_id.to_owned()),
        (None, Some(party)) => Recipient::Devices(party.user_id, vec![party.device_id]),
        (None, None) => Recipient::Devices(key.0.clone(), entry.recipients.clone()),
    }
}

impl Verifications {
    /// For this device.
    pub fn new(us: Party) -> Self {
        Self { us, flows: BTreeMap::new(), serial: 0 }
    }

    /// A flow's state.
    pub fn state(&self, user_id: &UserId, flow: &FlowId) -> Option<FlowState> {
        self.flows.get(&(user_id.to_owned(), flow.clone())).map(Flow::state)
    }

    /// Every flow with `user_id`.
    pub fn flows_with(&self, user_id: &UserId) -> Vec<(FlowId, FlowState)> {
        self.flows.iter().filter(|((u, _), _)| u == user_id).map(|((_, f), flow)| (f.clone(), flow.state())).collect()
    }

    /// The other device of a flow, once known.
    pub fn other_device(&self, user_id: &UserId, flow: &FlowId) -> Option<OwnedDeviceId> {
        self.flows.get(&(user_id.to_owned(), flow.clone()))?.request.other().map(|p| p.device_id)
    }

    /// The other user of an in-room flow, found by the flow alone.
    pub fn user_of_room_flow(&self, flow: &FlowId) -> Option<OwnedUserId> {
        self.flows.keys().find(|(_, f)| f == flow).map(|(u, _)| u.clone())
    }

    /// The SAS short strings of a flow, once keys are exchanged.
    pub fn sas(&self, user_id: &UserId, flow: &FlowId) -> Option<&SasVerification> {
        match &self.flows.get(&(user_id.to_owned(), flow.clone()))?.method {
            Some(Method::Sas(sas)) => Some(sas),
            _ => None,
        }
    }

    /// The QR code we show in a flow.
    pub fn qr(&self, user_id: &UserId, flow: &FlowId) -> Option<&QrVerification> {
        match &self.flows.get(&(user_id.to_owned(), flow.clone()))?.method {
            Some(Method::Qr(qr)) => Some(qr),
            _ => None,
        }
    }

    /// Every flow as the limits see it.
    fn summaries(&self) -> Vec<((OwnedUserId, FlowId), FlowSummary<'_>)> {
        self.flows
            .iter()
            .map(|(key, flow)| {
                let state = flow.state();
                let summary = FlowSummary {
                    user: &key.0,
                    room: key.1.room_id(),
                    we_requested: state.we_requested,
                    finished: state.is_finished(),
                    accepted: state.request != RequestState::Requested || state.method.is_some(),
                    serial: flow.serial,
                };
                (key.clone(), summary)
            })
            .collect()
    }

    /// Drops finished flows beyond what the limits keep.
    fn prune_finished(&mut self) {
        let dropped = limits::finished_to_drop(&self.summaries());
        for key in dropped {
            self.flows.remove(&key);
        }
    }

    fn insert(&mut self, request: VerificationRequest, recipients: Vec<OwnedDeviceId>) -> (OwnedUserId, FlowId) {
        let key = (request.other_user().to_owned(), request.flow().clone());
        self.serial = self.serial.saturating_add(1);
        self.flows
            .insert(key.clone(), Flow { request, seen: Vec::new(), recipients, method: None, serial: self.serial });
        key
    }

    /// Our request to `other_user` on `flow`; for a to-device flow,
    /// `recipients` are the devices the request goes to.
    pub fn request(
        &mut self,
        other_user: OwnedUserId,
        flow: FlowId,
        recipients: Vec<OwnedDeviceId>,
        now: Timestamp,
    ) -> Result<(), FlowError> {
        if self.flows.keys().any(|(_, f)| *f == flow) {
            return Err(FlowError::WrongState { action: "reuse a flow id" });
        }
        if !limits::admit_outgoing(&self.summaries()) {
            return Err(FlowError::TooMany);
        }
        let request = VerificationRequest::outgoing(self.us.clone(), other_user, flow, now);
        self.insert(request, recipients);
        self.prune_finished();
        Ok(())
    }

    /// A flow the user can still act on (not finished).
    fn flow_mut(&mut self, user_id: &UserId, flow: &FlowId) -> Result<&mut Flow, FlowError> {
        let entry = self
            .flows
            .get_mut(&(user_id.to_owned(), flow.clone()))
            .ok_or_else(|| FlowError::UnknownFlow { user_id: user_id.to_owned(), flow: flow.clone() })?;
        match entry.state().is_finished() {
            true => Err(FlowError::WrongState { action: "act on a finished flow" }),
            false => Ok(entry),
        }
    }

    fn step(key: (OwnedUserId, FlowId), entry: &Flow, outgoing: Vec<Outgoing>) -> Step {
        let to = recipient_of(&key, entry);
        let messages = outgoing
            .into_iter()
            .map(|o| VerificationMessage { to: to.clone(), event_type: o.event_type, content: o.content })
            .collect();
        Step { messages, changed: Some(key), proof: None }
    }

    /// Our user accepts a request we received: `ready`.
    pub fn accept(&mut self, user_id: &UserId, flow: &FlowId, now: Timestamp) -> Result<Step, FlowError> {
        let entry = self.flow_mut(user_id, flow)?;
        if entry.request.we_requested() || entry.request.state() != &RequestState::Requested {
            return Err(FlowError::WrongState { action: "accept" });
        }
        let outgoing = entry.request.accept(now);
        Ok(Self::step((user_id.to_owned(), flow.clone()), entry, outgoing))
    }

    /// We start SAS on a ready flow.
    pub fn start_sas(
        &mut self,
        user_id: &UserId,
        flow: &FlowId,
        keys: FlowKeys,
        now: Timestamp,
    ) -> Result<Step, FlowError> {
        let us = self.us.clone();
        let entry = self.flow_mut(user_id, flow)?;
        let RequestState::Ready { methods } = entry.request.state() else {
            return Err(FlowError::WrongState { action: "start SAS" });
        };
        if !methods.iter().any(|m| m == SAS_METHOD) {
            return Err(FlowError::MethodNotOffered { method: SAS_METHOD });
        }
        match entry.method {
            // The other side started first and its start was accepted: both
            // users pressing "start" end in that one SAS, nothing to send.
            Some(Method::Sas(_)) => return Ok(Self::step((user_id.to_owned(), flow.clone()), entry, Vec::new())),
            Some(Method::Qr(_)) => return Err(FlowError::WrongState { action: "start SAS" }),
            None => {}
        }
        let them = entry.request.other().ok_or(FlowError::WrongState { action: "start SAS" })?;
        let theirs = keys.theirs.ok_or(FlowError::UnknownDevice)?;
        let (sas, start) = SasVerification::start(us, them.clone(), flow.clone(), &keys.ours, theirs, now);
        entry.method = Some(Method::Sas(Box::new(sas)));
        Ok(Self::step((user_id.to_owned(), flow.clone()), entry, vec![start]))
    }

    /// We show `data` as a QR code on a ready flow (sends nothing).
    pub fn show_qr(
        &mut self,
        user_id: &UserId,
        flow: &FlowId,
        data: QrCodeData,
        now: Timestamp,
    ) -> Result<Step, FlowError> {
        let us = self.us.clone();
        let entry = self.flow_mut(user_id, flow)?;
        if !matches!(entry.request.state(), RequestState::Ready { .. }) || entry.method.is_some() {
            return Err(FlowError::WrongState { action: "show a QR code" });
        }
        let them = entry.request.other().ok_or(FlowError::WrongState { action: "show a QR code" })?;
        let qr = QrVerification::show(us, them, flow.clone(), data, now).map_err(|e| FlowError::Qr(e.to_string()))?;
        entry.method = Some(Method::Qr(Box::new(qr)));
        Ok(Step { changed: Some((user_id.to_owned(), flow.clone())), ..Step::default() })
    }

    /// We scanned the other device's code: the reciprocating `start`, or
    /// (keys not matching) the cancel.
    pub fn scan_qr(
        &mut self,
        user_id: &UserId,
        flow: &FlowId,
        data: QrCodeData,
        expectations: ScanExpectations,
        now: Timestamp,
    ) -> Result<Step, FlowError> {
        let us = self.us.clone();
        let entry = self.flow_mut(user_id, flow)?;
        if !matches!(entry.request.state(), RequestState::Ready { .. }) {
            return Err(FlowError::WrongState { action: "scan a QR code" });
        }
        if matches!(entry.method, Some(Method::Sas(_))) {
            return Err(FlowError::WrongState { action: "scan a QR code" });
        }
        let them = entry.request.other().ok_or(FlowError::WrongState { action: "scan a QR code" })?;
        let key = (user_id.to_owned(), flow.clone());
        match QrVerification::scan(us, them.clone(), flow.clone(), data, expectations, now) {
            Ok((qr, start)) => {
                entry.method = Some(Method::Qr(Box::new(qr)));
                Ok(Self::step(key, entry, vec![start]))
            }
            Err(cancellation) => {
                let outgoing = entry.request.cancel(cancellation.code.clone());
                Ok(Self::step(key, entry, outgoing))
            }
        }
    }

    /// Our user confirms: the SAS strings match, or the scanner shows
    /// success. May finish the flow with a proof.
    pub fn confirm(&mut self, user_id: &UserId, flow: &FlowId) -> Result<Step, FlowError> {
        let entry = self.flow_mut(user_id, flow)?;
        let (outgoing, proof) = match &mut entry.method {
            Some(Method::Sas(sas)) => (sas.confirm(), sas.proof()),
            Some(Method::Qr(qr)) if qr.state() == QrState::Scanned => (qr.confirm(), qr.proof()),
            _ => return Err(FlowError::WrongState { action: "confirm" }),
        };
        let mut step = Self::step((user_id.to_owned(), flow.clone()), entry, outgoing);
        step.proof = proof;
        Ok(step)
    }

    /// Our user says the SAS strings (or the scanner's screen) differ.
    pub fn mismatch(&mut self, user_id: &UserId, flow: &FlowId) -> Result<Step, FlowError> {
        let entry = self.flow_mut(user_id, flow)?;
        let outgoing = match &mut entry.method {
            Some(Method::Sas(sas)) => sas.mismatch(),
            Some(Method::Qr(qr)) => qr.mismatch(),
            None => return Err(FlowError::WrongState { action: "report a mismatch" }),
        };
        Ok(Self::step((user_id.to_owned(), flow.clone()), entry, outgoing))
    }

    /// We cancel the flow (`code`, usually `m.user`). For our to-device
    /// request not yet answered, every recipient is told.
    pub fn cancel(&mut self, user_id: &UserId, flow: &FlowId, code: CancelCode) -> Result<Step, FlowError> {
        let entry = self.flow_mut(user_id, flow)?;
        let mut outgoing = match &mut entry.method {
            Some(Method::Sas(sas)) => sas.cancel(code.clone()),
            Some(Method::Qr(qr)) => qr.cancel(code.clone()),
            None => Vec::new(),
        };
        let request_cancel = entry.request.cancel(code);
        if outgoing.is_empty() {
            outgoing = request_cancel;
        }
        Ok(Self::step((user_id.to_owned(), flow.clone()), entry, outgoing))
    }

    /// The earliest deadline of any flow.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.flows
            .values()
            .flat_map(|flow| {
                let method = match &flow.method {
                    Some(Method::Sas(sas)) => sas.poll_timeout(),
                    Some(Method::Qr(qr)) => qr.poll_timeout(),
                    None => None,
                };
                [flow.request.poll_timeout().filter(|_| !flow.state().is_finished()), method]
            })
            .flatten()
            .min()
    }

    /// Cancels what expired at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Vec<Step> {
        let due: Vec<(OwnedUserId, FlowId)> = self
            .flows
            .iter()
            .filter(|(_, flow)| !flow.state().is_finished())
            .filter(|(_, flow)| {
                let method = match &flow.method {
                    Some(Method::Sas(sas)) => sas.poll_timeout(),
                    Some(Method::Qr(qr)) => qr.poll_timeout(),
                    None => None,
                };
                [flow.request.poll_timeout(), method].into_iter().flatten().any(|at| at <= now)
            })
            .map(|(key, _)| key.clone())
            .collect();
        let mut steps = Vec::new();
        for key in due {
            let Some(entry) = self.flows.get_mut(&key) else { continue };
            let mut outgoing = match &mut entry.method {
                Some(Method::Sas(sas)) => sas.handle_timeout(now),
                Some(Method::Qr(qr)) => qr.handle_timeout(now),
                None => Vec::new(),
            };
            let request = entry.request.handle_timeout(now);
            if outgoing.is_empty() {
                outgoing = request;
            }
            // The request's end ends its method too (one cancel is sent).
            if matches!(entry.request.state(), RequestState::Cancelled(_)) {
                let method = match &mut entry.method {
                    Some(Method::Sas(sas)) => sas.cancel(CancelCode::Timeout),
                    Some(Method::Qr(qr)) => qr.cancel(CancelCode::Timeout),
                    None => Vec::new(),
                };
                if outgoing.is_empty() {
                    outgoing = method;
                }
            }
            steps.push(Self::step(key, entry, outgoing));
        }
        steps
    }

    /// A verification message from `sender` (a to-device event, or an
    /// in-room event with its flow already found from its relation).
    /// `event_type` is the `m.key.verification.*` type (an in-room
    /// request's is `m.key.verification.request`), `sent_at` the request's
    /// timestamp or the room event's `origin_server_ts`.
    pub fn receive(&mut self, incoming: Incoming<'_>, keys: Option<FlowKeys>, now: Timestamp) -> Step {
        if incoming.event_type == "m.key.verification.request" {
            return self.receive_request(incoming, now);
        }
        if incoming.flow.room_id().is_some() && incoming.sender == self.us.user_id {
            return self.receive_own_room_echo(incoming);
        }
        let key = (incoming.sender.to_owned(), incoming.flow.clone());
        let us = self.us.clone();
        let Some(entry) = self.flows.get_mut(&key) else { return self.foreign_user(incoming) };
        // A finished flow stays as it ended (its keys may be verified
        // already); a message delivered twice is handled once.
        if entry.state().is_finished() || !entry.first_delivery(incoming.event_type, incoming.content) {
            return Step::default();
        }
        let from_device = incoming.content.get("from_device").and_then(Value::as_str);
        match incoming.event_type {
            "m.key.verification.ready" => receive_ready(entry, key, from_device, incoming.content, now),
            "m.key.verification.cancel" => {
                if !from_expected_device(entry, incoming.from_device) {
                    return Step::default();
                }
                entry.request.receive_cancel(incoming.content);
                let outgoing = match &mut entry.method {
                    Some(Method::Sas(sas)) => sas.receive(incoming.event_type, incoming.content, now),
                    Some(Method::Qr(qr)) => qr.receive(incoming.event_type, incoming.content, now),
                    None => Vec::new(),
                };
                Self::step(key, entry, outgoing)
            }
            "m.key.verification.start" => receive_start(us, entry, key, from_device, incoming.content, keys, now),
            _ => {
                if !from_expected_device(entry, incoming.from_device) {
                    return Step::default();
                }
                let (outgoing, proof) = match &mut entry.method {
                    Some(Method::Sas(sas)) => {
                        let was_done = sas.proof().is_some();
                        let outgoing = sas.receive(incoming.event_type, incoming.content, now);
                        (outgoing, sas.proof().filter(|_| !was_done))
                    }
                    Some(Method::Qr(qr)) => {
                        let was_done = qr.proof().is_some();
                        let outgoing = qr.receive(incoming.event_type, incoming.content, now);
                        (outgoing, qr.proof().filter(|_| !was_done))
                    }
                    None => (entry.request.cancel(CancelCode::UnexpectedMessage), None),
                };
                let mut step = Self::step(key, entry, outgoing);
                step.proof = proof;
                step
            }
        }
    }

    /// A to-device message naming one of our flows, from another user than
    /// the flow's: that user is told `m.user_mismatch` (to the device it
    /// names); the flow itself is not touched. In a room, a third member's
    /// events are ignored (a cancel there would reach the real partner).
    fn foreign_user(&self, incoming: Incoming<'_>) -> Step {
        let ours = self.flows.keys().any(|(_, flow)| flow == incoming.flow);
        let device =
            incoming.content.get("from_device").and_then(Value::as_str).filter(|d| !d.is_empty() && d.len() <= 255);
        let (true, FlowId::ToDevice(_), Some(device)) = (ours, incoming.flow, device) else { return Step::default() };
        if incoming.event_type == "m.key.verification.cancel" {
            return Step::default();
        }
        let cancel = Cancellation::ours(CancelCode::UserMismatch).content(incoming.flow);
        let to = Recipient::Devices(incoming.sender.to_owned(), vec![device.into()]);
        Step {
            messages: vec![VerificationMessage { to, event_type: "m.key.verification.cancel", content: cancel }],
            ..Step::default()
        }
    }

    fn receive_request(&mut self, incoming: Incoming<'_>, now: Timestamp) -> Step {
        let key = (incoming.sender.to_owned(), incoming.flow.clone());
        let from_self = incoming.sender == self.us.user_id
            && incoming.content.get("from_device").and_then(Value::as_str) == Some(self.us.device_id.as_str());
        if from_self || self.flows.contains_key(&key) {
            return Step::default();
        }
        let own_user = self.us.user_id.clone();
        let admission = limits::admit_incoming(&self.summaries(), incoming.sender, incoming.flow.room_id(), &own_user);
        let evicted = match admission {
            Admission::Admit(evicted) => evicted,
            Admission::Refuse => {
                tracing::debug!(sender = %incoming.sender, "a verification request was ignored: too many in progress");
                return Step::default();
            }
        };
        let us = self.us.clone();
        let request = match &incoming.flow {
            FlowId::ToDevice(_) => VerificationRequest::incoming(us, incoming.sender.to_owned(), incoming.content, now),
            FlowId::InRoom { .. } => VerificationRequest::incoming_in_room(
                us,
                incoming.sender.to_owned(),
                incoming.flow.clone(),
                incoming.content,
                incoming.sent_at,
                now,
            ),
        };
        match request {
            Ok(Some(request)) => {
                // Requests nobody accepted give way (see `limits`): dropped
                // unanswered, as an ignored request would be.
                for key in evicted {
                    self.flows.remove(&key);
                }
                let key = self.insert(request, Vec::new());
                self.prune_finished();
                Step { changed: Some(key), ..Step::default() }
            }
            Ok(None) | Err(_) => Step::default(),
        }
    }

    /// Our own other device answered a request in a room: it was accepted
    /// elsewhere, and this device leaves it.
    fn receive_own_room_echo(&mut self, incoming: Incoming<'_>) -> Step {
        let from_device = incoming.content.get("from_device").and_then(Value::as_str);
        let answered = matches!(incoming.event_type, "m.key.verification.ready" | "m.key.verification.start");
        if from_device == Some(self.us.device_id.as_str()) || !answered {
            return Step::default();
        }
        let Some(user_id) = self.user_of_room_flow(incoming.flow) else { return Step::default() };
        let key = (user_id, incoming.flow.clone());
        let Some(entry) = self.flows.get_mut(&key) else { return Step::default() };
        if entry.request.we_requested() || entry.request.state() != &RequestState::Requested {
            return Step::default();
        }
        entry.request.handled_elsewhere();
        Step { changed: Some(key), ..Step::default() }
    }
}

/// One incoming verification message.
#[derive(Clone, Copy, Debug)]
pub struct Incoming<'a> {
    /// Its sender (authenticated by the server, or by Olm).
    pub sender: &'a UserId,
    /// The sending device, when Olm authenticated it.
    pub from_device: Option<&'a DeviceId>,
    /// Its flow.
    pub flow: &'a FlowId,
    /// `m.key.verification.*`.
    pub event_type: &'a str,
    /// Its content.
    pub content: &'a Value,
    /// The request's timestamp or the event's `origin_server_ts`.
    pub sent_at: Timestamp,
}

/// A message from a device other than the one that answered is ignored;
/// an Olm-authenticated sender device must be that device.
fn from_expected_device(entry: &Flow, authenticated: Option<&DeviceId>) -> bool {
    match (entry.request.other(), authenticated) {
        (Some(other), Some(device)) => other.device_id == device,
        _ => true,
    }
}

fn receive_ready(
    entry: &mut Flow,
    key: (OwnedUserId, FlowId),
    from_device: Option<&str>,
    content: &Value,
    now: Timestamp,
) -> Step {
    let Some(device) = from_device.filter(|d| !d.is_empty() && d.len() <= 255) else { return Step::default() };
    if !entry.request.we_requested() || entry.request.state() != &RequestState::Requested {
        return Step::default();
    }
    let device: OwnedDeviceId = device.into();
    let is_us = key.0 == entry.request_us().user_id && device == entry.request_us().device_id;
    let not_asked = key.1.room_id().is_none() && !entry.recipients.contains(&device);
    if is_us || not_asked {
        return Step::default();
    }
    let outgoing = entry.request.receive_ready(device.clone(), content, now);
    let mut step = Verifications::step(key.clone(), entry, outgoing);
    if key.1.room_id().is_none() {
        let others: Vec<OwnedDeviceId> = entry.recipients.iter().filter(|d| **d != device).cloned().collect();
        if !others.is_empty() {
            let cancel = accepted_elsewhere(&key.1);
            step.messages.push(VerificationMessage {
                to: Recipient::Devices(key.0.clone(), others),
                event_type: cancel.event_type,
                content: cancel.content,
            });
        }
    }
    step
}

fn receive_start(
    us: Party,
    entry: &mut Flow,
    key: (OwnedUserId, FlowId),
    from_device: Option<&str>,
    content: &Value,
    keys: Option<FlowKeys>,
    now: Timestamp,
) -> Step {
    let Some(them) = entry.request.other() else { return Step::default() };
    if from_device != Some(them.device_id.as_str()) {
        return Step::default();
    }
    if !matches!(entry.request.state(), RequestState::Ready { .. }) {
        // Before our user accepted: ignored (a cancel here could be sent
        // into a room we cannot post in, for a flow nobody accepted).
        return Step::default();
    }
    let method = content.get("method").and_then(Value::as_str).unwrap_or_default();
    let outgoing = match (&mut entry.method, method) {
        (Some(Method::Qr(qr)), RECIPROCATE_METHOD) => qr.receive("m.key.verification.start", content, now),
        (Some(Method::Sas(sas)), SAS_METHOD) if sas.state() == SasState::WaitingForAccept => {
            if our_start_wins(&us, &them) {
                return Step::default();
            }
            accept_sas(us, entry, &key, them.clone(), content, keys, now)
        }
        (None | Some(Method::Qr(_)), SAS_METHOD) => accept_sas(us, entry, &key, them.clone(), content, keys, now),
        (None, RECIPROCATE_METHOD) => entry.request.cancel(CancelCode::UnexpectedMessage),
        (Some(_), _) => {
            let code = CancelCode::UnexpectedMessage;
            let mut outgoing = match &mut entry.method {
                Some(Method::Sas(sas)) => sas.cancel(code.clone()),
                Some(Method::Qr(qr)) => qr.cancel(code.clone()),
                None => Vec::new(),
            };
            outgoing.extend(entry.request.cancel(code));
            outgoing.truncate(1);
            outgoing
        }
        (None, _) => entry.request.cancel(CancelCode::UnknownMethod),
    };
    Verifications::step(key, entry, outgoing)
}

fn accept_sas(
    us: Party,
    entry: &mut Flow,
    key: &(OwnedUserId, FlowId),
    them: Party,
    content: &Value,
    keys: Option<FlowKeys>,
    now: Timestamp,
) -> Vec<Outgoing> {
    let Some(FlowKeys { ours, theirs: Some(theirs), .. }) = keys else {
        return entry.request.cancel(CancelCode::KeyMismatch);
    };
    match SasVerification::accept(us, them, key.1.clone(), content, &ours, theirs, now) {
        Ok((sas, accept)) => {
            entry.method = Some(Method::Sas(Box::new(sas)));
            vec![accept]
        }
        Err(cancellation) => entry.request.cancel(cancellation.code),
    }
}
