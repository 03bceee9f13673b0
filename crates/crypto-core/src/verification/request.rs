//! The key verification framework's request / ready phase, to-device and
//! in a room (the request is then an `m.room.message` whose event id names
//! the flow, and its timestamp is the event's `origin_server_ts`): who
//! asked whom, which methods both sides support, how long a request lives,
//! and which of two crossing `start`s wins. Pure, time as input, like
//! [`SasVerification`](super::SasVerification) which follows it.
//!
//! Spec rules kept here:
//! * a received request whose `timestamp` is more than 10 minutes in the
//!   past or more than 5 minutes in the future is ignored;
//! * a request (and its flow) expires 10 minutes after its timestamp;
//! * `ready` names the methods both sides support; with none in common the
//!   request is cancelled with `m.unknown_method`;
//! * two crossing `start`s with the same method: the one from the
//!   lexicographically larger user id is ignored, and for the same user the
//!   one from the larger device id.

use std::time::Duration;

use ruma_common::{OwnedDeviceId, OwnedUserId, UserId};
use serde_json::{Value, json};

use super::{CancelCode, Cancellation, FlowId, Party, sas::Outgoing};
use crate::Timestamp;

/// How long a request lives, from its timestamp.
pub const REQUEST_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// How long an unanswered request we received is offered to our user (the
/// spec's prompt dismissal; it ends sooner if the request expires first).
pub const PROMPT_LIFETIME: Duration = Duration::from_secs(2 * 60);
/// How far in the future a request's timestamp may be (clock skew).
pub const REQUEST_FUTURE_SKEW: Duration = Duration::from_secs(5 * 60);
/// The methods hush supports: SAS, and QR codes both ways (showing needs
/// the other side to scan, and either needs `m.reciprocate.v1`).
pub const SUPPORTED_METHODS: [&str; 4] = [SAS_METHOD, QR_SHOW_METHOD, QR_SCAN_METHOD, RECIPROCATE_METHOD];
/// `m.sas.v1`.
pub const SAS_METHOD: &str = "m.sas.v1";
/// `m.qr_code.show.v1`: the sender can show a QR code.
pub const QR_SHOW_METHOD: &str = "m.qr_code.show.v1";
/// `m.qr_code.scan.v1`: the sender can scan a QR code.
pub const QR_SCAN_METHOD: &str = "m.qr_code.scan.v1";
/// `m.reciprocate.v1`: the start a scanner sends.
pub const RECIPROCATE_METHOD: &str = "m.reciprocate.v1";
/// The msgtype of an in-room request.
pub const IN_ROOM_REQUEST_MSGTYPE: &str = "m.key.verification.request";
/// The most methods a request or ready may list.
const MAX_METHODS: usize = 16;

/// Where a request stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestState {
    /// Sent or received, not answered.
    Requested,
    /// Both sides are ready, with the methods both support.
    Ready {
        /// The methods in common.
        methods: Vec<String>,
    },
    /// Ended without success.
    Cancelled(Cancellation),
}

/// One verification request.
#[derive(Clone, Debug)]
pub struct VerificationRequest {
    flow: FlowId,
    us: Party,
    other_user: OwnedUserId,
    /// The other device: the requester's, or (for our request, which may
    /// go to all of the user's devices) the one that answered `ready`.
    other_device: Option<OwnedDeviceId>,
    we_requested: bool,
    their_methods: Vec<String>,
    expires_at: Timestamp,
    /// For a request we received: until when it is offered unanswered.
    prompt_until: Option<Timestamp>,
    state: RequestState,
}

fn methods_of(content: &Value) -> Result<Vec<String>, Cancellation> {
    let invalid = || Cancellation::ours(CancelCode::InvalidMessage);
    let list = content.get("methods").and_then(Value::as_array).ok_or_else(invalid)?;
    if list.len() > MAX_METHODS {
        return Err(invalid());
    }
    list.iter().map(|m| m.as_str().map(str::to_owned).ok_or_else(invalid)).collect()
}

fn common(theirs: &[String]) -> Vec<String> {
    SUPPORTED_METHODS.iter().filter(|m| theirs.iter().any(|t| t == *m)).map(|m| (*m).to_owned()).collect()
}

impl VerificationRequest {
    /// Our request to `other_user` on `flow` (to-device: all their
    /// devices, or one; in a room: the flow is named by the request event,
    /// made with [`in_room_content`](Self::in_room_content) and sent first).
    pub fn outgoing(us: Party, other_user: OwnedUserId, flow: FlowId, now: Timestamp) -> Self {
        Self {
            flow,
            us,
            other_user,
            other_device: None,
            we_requested: true,
            their_methods: Vec::new(),
            expires_at: now.saturating_add(REQUEST_LIFETIME),
            prompt_until: None,
            state: RequestState::Requested,
        }
    }

    /// The to-device `m.key.verification.request` content of a request.
    pub fn to_device_content(us: &Party, transaction_id: &str, now: Timestamp) -> Value {
        json!({
            "from_device": us.device_id,
            "methods": SUPPORTED_METHODS,
            "timestamp": now.as_millis(),
            "transaction_id": transaction_id,
        })
    }

    /// The `m.room.message` content of an in-room request to `to`.
    pub fn in_room_content(us: &Party, to: &UserId) -> Value {
        json!({
            "msgtype": IN_ROOM_REQUEST_MSGTYPE,
            "body": format!("{} is requesting to verify your key, but your client does not support in-chat key verification.", us.user_id),
            "from_device": us.device_id,
            "methods": SUPPORTED_METHODS,
            "to": to,
        })
    }

    /// A request `sender` sent us. `Ok(None)`: ignored (its timestamp is
    /// out of the window); `Err`: malformed.
    pub fn incoming(
        us: Party,
        sender: OwnedUserId,
        content: &Value,
        now: Timestamp,
    ) -> Result<Option<Self>, Cancellation> {
        let invalid = || Cancellation::ours(CancelCode::InvalidMessage);
        let flow_id = super::flow::to_device_flow(content).ok_or_else(invalid)?;
        let timestamp = content.get("timestamp").and_then(Value::as_u64).ok_or_else(invalid)?;
        Self::received(
            us,
            sender,
            FlowId::ToDevice(flow_id.to_owned()),
            content,
            Timestamp::from_millis(timestamp),
            now,
        )
    }

    /// An in-room request: `event_id` in `room_id`, sent at
    /// `origin_server_ts`. `Ok(None)`: ignored (not addressed to us, or out
    /// of the time window).
    pub fn incoming_in_room(
        us: Party,
        sender: OwnedUserId,
        flow: FlowId,
        content: &Value,
        origin_server_ts: Timestamp,
        now: Timestamp,
    ) -> Result<Option<Self>, Cancellation> {
        if content.get("to").and_then(Value::as_str) != Some(us.user_id.as_str()) {
            return Ok(None);
        }
        Self::received(us, sender, flow, content, origin_server_ts, now)
    }

    fn received(
        us: Party,
        sender: OwnedUserId,
        flow: FlowId,
        content: &Value,
        sent: Timestamp,
        now: Timestamp,
    ) -> Result<Option<Self>, Cancellation> {
        let invalid = || Cancellation::ours(CancelCode::InvalidMessage);
        let from_device = content.get("from_device").and_then(Value::as_str).ok_or_else(invalid)?;
        if from_device.is_empty() || from_device.len() > 255 {
            return Err(invalid());
        }
        let too_old = now.saturating_duration_since(sent) > REQUEST_LIFETIME;
        let in_future = sent.saturating_duration_since(now) > REQUEST_FUTURE_SKEW;
        if too_old || in_future {
            return Ok(None);
        }
        let request = Self {
            flow,
            us,
            other_user: sender,
            other_device: Some(from_device.into()),
            we_requested: false,
            their_methods: methods_of(content)?,
            expires_at: sent.saturating_add(REQUEST_LIFETIME),
            prompt_until: Some(now.saturating_add(PROMPT_LIFETIME)),
            state: RequestState::Requested,
        };
        Ok(Some(request))
    }

    /// The flow.
    pub fn flow(&self) -> &FlowId {
        &self.flow
    }

    /// This device.
    pub fn us(&self) -> &Party {
        &self.us
    }

    /// The other user.
    pub fn other_user(&self) -> &UserId {
        &self.other_user
    }

    /// The methods the other side listed.
    pub fn their_methods(&self) -> &[String] {
        &self.their_methods
    }

    /// The other side, once known.
    pub fn other(&self) -> Option<Party> {
        let device_id = self.other_device.clone()?;
        Some(Party { user_id: self.other_user.clone(), device_id })
    }

    /// Whether we sent the request.
    pub fn we_requested(&self) -> bool {
        self.we_requested
    }

    /// Where it stands.
    pub fn state(&self) -> &RequestState {
        &self.state
    }

    /// When it expires, while it is not cancelled: 10 minutes after its
    /// timestamp, or for a request we received and did not answer, 2
    /// minutes after it arrived if that is sooner.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match (&self.state, self.prompt_until) {
            (RequestState::Cancelled(_), _) => None,
            (RequestState::Requested, Some(prompt)) => Some(prompt.min(self.expires_at)),
            _ => Some(self.expires_at),
        }
    }

    /// Once expired: our request, or one we answered, is cancelled with
    /// `m.timeout`; an unanswered request we received is dropped without a
    /// message (another of our devices may still answer it).
    pub fn handle_timeout(&mut self, now: Timestamp) -> Vec<Outgoing> {
        match self.poll_timeout() {
            Some(at) if now >= at && self.state == RequestState::Requested && !self.we_requested => {
                self.state = RequestState::Cancelled(Cancellation::ours(CancelCode::Timeout));
                Vec::new()
            }
            Some(at) if now >= at => self.cancel(CancelCode::Timeout),
            _ => Vec::new(),
        }
    }

    /// We answer a request we received: `ready` with the methods in common,
    /// or `m.unknown_method` if there are none.
    pub fn accept(&mut self, now: Timestamp) -> Vec<Outgoing> {
        if self.we_requested || self.state != RequestState::Requested {
            return Vec::new();
        }
        if now >= self.expires_at {
            return self.cancel(CancelCode::Timeout);
        }
        let methods = common(&self.their_methods);
        if methods.is_empty() {
            return self.cancel(CancelCode::UnknownMethod);
        }
        // `ready` names the methods we support (the spec's "methods
        // supported by the sender"); the state keeps those both support.
        let content = self.flow.wrap(json!({ "from_device": self.us.device_id, "methods": SUPPORTED_METHODS }));
        self.state = RequestState::Ready { methods };
        vec![Outgoing { event_type: "m.key.verification.ready", content }]
    }

    /// The other side's `ready` to our request, from `device`. The first
    /// one wins; the caller tells our request's other recipients
    /// `m.accepted` (see [`accepted_elsewhere`]).
    pub fn receive_ready(&mut self, device: OwnedDeviceId, content: &Value, now: Timestamp) -> Vec<Outgoing> {
        if !self.we_requested || self.state != RequestState::Requested {
            return Vec::new();
        }
        if now >= self.expires_at {
            return self.cancel(CancelCode::Timeout);
        }
        let methods = match methods_of(content) {
            Ok(theirs) => {
                let methods = common(&theirs);
                self.their_methods = theirs;
                methods
            }
            Err(cancellation) => return self.fail(cancellation),
        };
        self.other_device = Some(device);
        if methods.is_empty() {
            return self.cancel(CancelCode::UnknownMethod);
        }
        self.state = RequestState::Ready { methods };
        Vec::new()
    }

    /// Another of our devices answered this request (seen in its room): this
    /// device leaves it, sending nothing.
    pub fn handled_elsewhere(&mut self) {
        if self.state == RequestState::Requested && !self.we_requested {
            self.state = RequestState::Cancelled(Cancellation {
                code: CancelCode::Accepted,
                reason: "answered by another device".into(),
                by_us: false,
            });
        }
    }

    /// The other side cancelled.
    pub fn receive_cancel(&mut self, content: &Value) {
        if !matches!(self.state, RequestState::Cancelled(_)) {
            self.state = RequestState::Cancelled(Cancellation::theirs(content));
        }
    }

    /// We cancel (the user declined: `m.user`).
    pub fn cancel(&mut self, code: CancelCode) -> Vec<Outgoing> {
        if matches!(self.state, RequestState::Cancelled(_)) {
            return Vec::new();
        }
        self.fail(Cancellation::ours(code))
    }

    fn fail(&mut self, cancellation: Cancellation) -> Vec<Outgoing> {
        let content = cancellation.content(&self.flow);
        self.state = RequestState::Cancelled(cancellation);
        vec![Outgoing { event_type: "m.key.verification.cancel", content }]
    }
}

/// The cancel our request's other recipients get once one device answered.
pub fn accepted_elsewhere(flow: &FlowId) -> Outgoing {
    Outgoing {
        event_type: "m.key.verification.cancel",
        content: Cancellation::ours(CancelCode::Accepted).content(flow),
    }
}

/// Of two crossing `start`s with the same method, whether ours is the one
/// kept: the start from the lexicographically larger user id is ignored,
/// and between two devices of one user, the one from the larger device id.
pub fn our_start_wins(us: &Party, them: &Party) -> bool {
    match us.user_id.as_str().cmp(them.user_id.as_str()) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => us.device_id.as_str() < them.device_id.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use ruma_common::{owned_device_id, owned_user_id};

    use super::*;

    fn party(user: &str, device: &str) -> Party {
        Party { user_id: OwnedUserId::try_from(user).unwrap(), device_id: device.into() }
    }

    fn at(minutes: u64) -> Timestamp {
        Timestamp::from_millis(1_000_000_000 + minutes * 60_000)
    }

    /// The request, its ready and the methods in common, both sides.
    #[test]
    fn a_request_and_its_ready_agree_on_the_common_methods() {
        let alice = party("@alice:x.y", "A1");
        let bob = party("@bob:x.y", "B1");
        let flow = FlowId::ToDevice("f".into());
        let mut ours = VerificationRequest::outgoing(alice.clone(), bob.user_id.clone(), flow, at(0));
        let mut content = VerificationRequest::to_device_content(&alice, "f", at(0));
        content["methods"] = json!(["m.qr_code.show.v1", "m.sas.v1", "m.unknown.v9"]);
        let mut theirs = VerificationRequest::incoming(bob, alice.user_id.clone(), &content, at(1)).unwrap().unwrap();
        assert_eq!(theirs.other(), Some(alice));
        let ready = theirs.accept(at(1));
        assert_eq!(ready[0].event_type, "m.key.verification.ready");
        assert_eq!(ready[0].content["methods"], json!(SUPPORTED_METHODS), "ready names our own methods");
        assert_eq!(ready[0].content["transaction_id"], "f");
        assert!(ours.receive_ready(owned_device_id!("B1"), &ready[0].content, at(2)).is_empty());
        let in_common = vec!["m.sas.v1".to_owned(), "m.qr_code.show.v1".to_owned()];
        assert_eq!(theirs.state(), &RequestState::Ready { methods: in_common }, "the answerer keeps the overlap");
        let ours_all: Vec<String> = SUPPORTED_METHODS.iter().map(|m| (*m).to_owned()).collect();
        assert_eq!(ours.state(), &RequestState::Ready { methods: ours_all });
        assert_eq!(ours.other().unwrap().device_id, "B1");
    }

    /// Requests too old or too far in the future are ignored, not answered.
    #[test]
    fn requests_outside_the_time_window_are_ignored() {
        let content = |ts: Timestamp| json!({"from_device": "A1", "methods": ["m.sas.v1"], "timestamp": ts.as_millis(), "transaction_id": "f"});
        let us = party("@bob:x.y", "B1");
        let sender = owned_user_id!("@alice:x.y");
        assert!(VerificationRequest::incoming(us.clone(), sender.clone(), &content(at(0)), at(11)).unwrap().is_none());
        assert!(VerificationRequest::incoming(us.clone(), sender.clone(), &content(at(6)), at(0)).unwrap().is_none());
        assert!(VerificationRequest::incoming(us.clone(), sender.clone(), &content(at(4)), at(0)).unwrap().is_some());
        assert!(VerificationRequest::incoming(us, sender, &json!({"transaction_id": "f"}), at(0)).is_err());
    }

    /// No method in common: `m.unknown_method`; an expired request:
    /// `m.timeout`, and nothing after a cancel.
    #[test]
    fn no_common_method_or_expiry_cancels() {
        let us = party("@bob:x.y", "B1");
        let content = json!({"from_device": "A1", "methods": ["org.example.method"], "timestamp": at(0).as_millis(), "transaction_id": "f"});
        let mut request =
            VerificationRequest::incoming(us.clone(), owned_user_id!("@alice:x.y"), &content, at(0)).unwrap().unwrap();
        assert_eq!(request.accept(at(0))[0].content["code"], "m.unknown_method");
        assert!(request.accept(at(0)).is_empty());
        let flow = FlowId::ToDevice("g".into());
        let mut ours = VerificationRequest::outgoing(us, owned_user_id!("@alice:x.y"), flow.clone(), at(0));
        assert_eq!(ours.poll_timeout(), Some(at(10)));
        assert!(ours.handle_timeout(at(9)).is_empty());
        assert_eq!(ours.handle_timeout(at(10))[0].content["code"], "m.timeout");
        assert_eq!(ours.poll_timeout(), None);
        assert_eq!(accepted_elsewhere(&flow).content["code"], "m.accepted");
    }

    /// An unanswered request we received is offered for 2 minutes, then
    /// dropped silently; once answered it lives 10 minutes from its
    /// timestamp and then cancels with `m.timeout`.
    #[test]
    fn an_unanswered_request_is_dropped_silently_after_two_minutes() {
        let us = party("@bob:x.y", "B1");
        let content = VerificationRequest::to_device_content(&party("@alice:x.y", "A1"), "f", at(0));
        let sender = owned_user_id!("@alice:x.y");
        let mut ignored = VerificationRequest::incoming(us.clone(), sender.clone(), &content, at(1)).unwrap().unwrap();
        assert_eq!(ignored.poll_timeout(), Some(at(3)));
        assert!(ignored.handle_timeout(at(3)).is_empty(), "no cancel: another device may answer");
        assert!(matches!(ignored.state(), RequestState::Cancelled(c) if c.code == CancelCode::Timeout));
        let mut answered = VerificationRequest::incoming(us, sender, &content, at(1)).unwrap().unwrap();
        answered.accept(at(2));
        assert_eq!(answered.poll_timeout(), Some(at(10)));
        assert_eq!(answered.handle_timeout(at(10))[0].content["code"], "m.timeout");
    }

    /// An in-room request is for the user it names only, its flow is the
    /// request event, and its answer relates to that event.
    #[test]
    fn an_in_room_request_is_answered_in_the_room() {
        let alice = party("@alice:x.y", "A1");
        let bob = party("@bob:x.y", "B1");
        let flow = FlowId::InRoom {
            room_id: ruma_common::owned_room_id!("!dm:x.y"),
            event_id: ruma_common::owned_event_id!("$req"),
        };
        let content = VerificationRequest::in_room_content(&alice, &bob.user_id);
        assert_eq!(content["msgtype"], IN_ROOM_REQUEST_MSGTYPE);
        let carol = party("@carol:x.y", "C1");
        let not_ours =
            VerificationRequest::incoming_in_room(carol, alice.user_id.clone(), flow.clone(), &content, at(0), at(0));
        assert!(not_ours.unwrap().is_none(), "a request to Bob is not Carol's");
        let mut theirs =
            VerificationRequest::incoming_in_room(bob, alice.user_id.clone(), flow, &content, at(0), at(1))
                .unwrap()
                .unwrap();
        let ready = theirs.accept(at(1));
        assert_eq!(ready[0].content["m.relates_to"]["event_id"], "$req");
        assert!(ready[0].content.get("transaction_id").is_none());
    }

    /// The crossing rule, both ways, for two users and for one user's devices.
    #[test]
    fn the_start_from_the_smaller_user_then_device_wins() {
        let (alice, bob) = (party("@alice:x.y", "Z"), party("@bob:x.y", "A"));
        assert!(our_start_wins(&alice, &bob) && !our_start_wins(&bob, &alice));
        let (first, second) = (party("@alice:x.y", "AAA"), party("@alice:x.y", "BBB"));
        assert!(our_start_wins(&first, &second) && !our_start_wins(&second, &first));
    }
}
