//! The key verification framework's request / ready phase, to-device: who
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

use ruma_common::{OwnedDeviceId, OwnedUserId};
use serde_json::{Value, json};

use super::{CancelCode, Cancellation, Party, sas::Outgoing};
use crate::Timestamp;

/// How long a request lives, from its timestamp.
pub const REQUEST_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// How far in the future a request's timestamp may be (clock skew).
pub const REQUEST_FUTURE_SKEW: Duration = Duration::from_secs(5 * 60);
/// The methods hush supports.
pub const SUPPORTED_METHODS: [&str; 1] = ["m.sas.v1"];
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
    flow_id: String,
    us: Party,
    other_user: OwnedUserId,
    /// The other device: the requester's, or (for our request, which may
    /// go to all of the user's devices) the one that answered `ready`.
    other_device: Option<OwnedDeviceId>,
    we_requested: bool,
    their_methods: Vec<String>,
    expires_at: Timestamp,
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
    /// Our request to `other_user` (all their devices, or one): the
    /// `m.key.verification.request` content to send.
    pub fn outgoing(us: Party, other_user: OwnedUserId, flow_id: &str, now: Timestamp) -> (Self, Outgoing) {
        let content = json!({
            "from_device": us.device_id,
            "methods": SUPPORTED_METHODS,
            "timestamp": now.as_millis(),
            "transaction_id": flow_id,
        });
        let request = Self {
            flow_id: flow_id.to_owned(),
            us,
            other_user,
            other_device: None,
            we_requested: true,
            their_methods: Vec::new(),
            expires_at: now.saturating_add(REQUEST_LIFETIME),
            state: RequestState::Requested,
        };
        (request, Outgoing { event_type: "m.key.verification.request", content })
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
        let flow_id = content.get("transaction_id").and_then(Value::as_str).ok_or_else(invalid)?;
        if flow_id.is_empty() || flow_id.len() > 255 {
            return Err(invalid());
        }
        let from_device = content.get("from_device").and_then(Value::as_str).ok_or_else(invalid)?;
        let timestamp = content.get("timestamp").and_then(Value::as_u64).ok_or_else(invalid)?;
        let sent = Timestamp::from_millis(timestamp);
        let too_old = now.saturating_duration_since(sent) > REQUEST_LIFETIME;
        let in_future = sent.saturating_duration_since(now) > REQUEST_FUTURE_SKEW;
        if too_old || in_future {
            return Ok(None);
        }
        let request = Self {
            flow_id: flow_id.to_owned(),
            us,
            other_user: sender,
            other_device: Some(from_device.into()),
            we_requested: false,
            their_methods: methods_of(content)?,
            expires_at: sent.saturating_add(REQUEST_LIFETIME),
            state: RequestState::Requested,
        };
        Ok(Some(request))
    }

    /// The flow id.
    pub fn flow_id(&self) -> &str {
        &self.flow_id
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

    /// When it expires, while it is not cancelled.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        (!matches!(self.state, RequestState::Cancelled(_))).then_some(self.expires_at)
    }

    /// Cancels with `m.timeout` once expired.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Vec<Outgoing> {
        match self.poll_timeout() {
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
        let content = json!({ "from_device": self.us.device_id, "methods": methods, "transaction_id": self.flow_id });
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
            Ok(methods) => common(&methods),
            Err(cancellation) => return self.fail(cancellation),
        };
        self.other_device = Some(device);
        if methods.is_empty() {
            return self.cancel(CancelCode::UnknownMethod);
        }
        self.state = RequestState::Ready { methods };
        Vec::new()
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
        let content = cancellation.content(&self.flow_id);
        self.state = RequestState::Cancelled(cancellation);
        vec![Outgoing { event_type: "m.key.verification.cancel", content }]
    }
}

/// The cancel our request's other recipients get once one device answered.
pub fn accepted_elsewhere(flow_id: &str) -> Outgoing {
    Outgoing {
        event_type: "m.key.verification.cancel",
        content: Cancellation::ours(CancelCode::Accepted).content(flow_id),
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
        let (mut ours, request) = VerificationRequest::outgoing(alice.clone(), bob.user_id.clone(), "f", at(0));
        let mut content = request.content.clone();
        content["methods"] = json!(["m.qr_code.show.v1", "m.sas.v1"]);
        let mut theirs = VerificationRequest::incoming(bob, alice.user_id.clone(), &content, at(1)).unwrap().unwrap();
        assert_eq!(theirs.other(), Some(alice));
        let ready = theirs.accept(at(1));
        assert_eq!(ready[0].event_type, "m.key.verification.ready");
        assert_eq!(ready[0].content["methods"], json!(["m.sas.v1"]));
        assert!(ours.receive_ready(owned_device_id!("B1"), &ready[0].content, at(2)).is_empty());
        assert_eq!(ours.state(), &RequestState::Ready { methods: vec!["m.sas.v1".into()] });
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
        let content = json!({"from_device": "A1", "methods": ["m.qr_code.show.v1"], "timestamp": at(0).as_millis(), "transaction_id": "f"});
        let mut request =
            VerificationRequest::incoming(us.clone(), owned_user_id!("@alice:x.y"), &content, at(0)).unwrap().unwrap();
        assert_eq!(request.accept(at(0))[0].content["code"], "m.unknown_method");
        assert!(request.accept(at(0)).is_empty());
        let (mut ours, _) = VerificationRequest::outgoing(us, owned_user_id!("@alice:x.y"), "g", at(0));
        assert_eq!(ours.poll_timeout(), Some(at(10)));
        assert!(ours.handle_timeout(at(9)).is_empty());
        assert_eq!(ours.handle_timeout(at(10))[0].content["code"], "m.timeout");
        assert_eq!(ours.poll_timeout(), None);
        assert_eq!(accepted_elsewhere("g").content["code"], "m.accepted");
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
