//! Answers to our own devices' requests that could not go out at once, and
//! the rules for when they are tried again or dropped:
//! * an answer for a device we have no Olm session with waits (at most
//!   [`MAX_WAITING`], the oldest dropped first) until the claim of a session
//!   with that device is answered, and is tried at most [`MAX_WAIT_TRIES`]
//!   times;
//! * a room-key request we could not answer (we lacked the key), or
//!   answered with a copy that starts at a later index, is kept for
//!   [`AWAITING_KEY_FOR`] (at most [`MAX_AWAITING_KEYS`]) and answered again
//!   once we hold the key, or hold it from an earlier index; asked again
//!   meanwhile, it is answered only with a better copy than the one sent;
//! * the asking device's cancellation drops both.
//!
//! Nothing here is persisted: the asking device asks again after a
//! restart. What is asked is kept, never the secret or key itself (the
//! content is built when the answer is sent).

#[cfg(test)]
use std::collections::HashSet;
use std::time::Duration;

use ruma_common::{DeviceId, OwnedDeviceId, OwnedRoomId};

use crate::Timestamp;

/// The most answers kept waiting for an Olm session with their device.
pub const MAX_WAITING: usize = 64;
/// How many times a waiting answer is tried before it is dropped.
pub const MAX_WAIT_TRIES: u8 = 5;
/// The most room-key requests kept for a later answer.
pub const MAX_AWAITING_KEYS: usize = 64;
/// How long such a request is kept: as long as the asking device waits at
/// most before it sends its open requests again
/// ([`RESEND_MAX`](super::resend::RESEND_MAX)).
pub const AWAITING_KEY_FOR: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// What a request of one of our devices asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Asked {
    /// A secret, by name.
    Secret(String),
    /// A room key: its room and session id.
    RoomKey(OwnedRoomId, String),
}

/// One answer to give: to which device, for which request, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The asking device (one of ours).
    pub(crate) device_id: OwnedDeviceId,
    /// The id of its request.
    pub(crate) request_id: String,
    /// What it asked for.
    pub(crate) asked: Asked,
    /// How many times it waited for a session already.
    tries: u8,
}

impl Answer {
    /// A new answer to `request_id` of `device_id`.
    pub(crate) fn new(device_id: OwnedDeviceId, request_id: String, asked: Asked) -> Self {
        Self { device_id, request_id, asked, tries: 0 }
    }

    fn is(&self, request_id: &str, device_id: &DeviceId) -> bool {
        self.request_id == request_id && self.device_id == device_id
    }
}

/// A room-key request kept for a later answer.
#[derive(Debug, Clone)]
pub(crate) struct AwaitingKey {
    /// The answer to give.
    pub(crate) answer: Answer,
    /// When it was first kept (the day counts from then).
    asked: Timestamp,
    /// The first index of the copy we sent, if we sent one.
    pub(crate) sent_from: Option<u32>,
}

/// The answers kept for later.
#[derive(Debug, Default)]
pub(crate) struct KeptAnswers {
    waiting: Vec<Answer>,
    awaiting_key: Vec<AwaitingKey>,
}

impl KeptAnswers {
    /// Keeps `answer` until a session with its device exists; `false` (and
    /// nothing kept) once it has waited [`MAX_WAIT_TRIES`] times.
    pub(crate) fn wait_for_session(&mut self, mut answer: Answer) -> bool {
        answer.tries += 1;
        if answer.tries > MAX_WAIT_TRIES {
            return false;
        }
        self.waiting.retain(|w| !w.is(&answer.request_id, &answer.device_id));
        if self.waiting.len() >= MAX_WAITING {
            self.waiting.remove(0);
        }
        self.waiting.push(answer);
        true
    }

    /// Takes the waiting answers whose device has no claim in flight
    /// (`being_claimed` says which have one): they are to be tried again.
    pub(crate) fn take_ready(&mut self, being_claimed: impl Fn(&DeviceId) -> bool) -> Vec<Answer> {
        let (ready, still): (Vec<Answer>, Vec<Answer>) =
            std::mem::take(&mut self.waiting).into_iter().partition(|w| !being_claimed(&w.device_id));
        self.waiting = still;
        ready
    }

    /// The asking device withdrew its request: nothing is answered for it.
    pub(crate) fn withdraw(&mut self, request_id: &str, device_id: &DeviceId) {
        self.waiting.retain(|w| !w.is(request_id, device_id));
        self.awaiting_key.retain(|k| !k.answer.is(request_id, device_id));
    }

    /// Keeps a room-key request for a later answer (a secret request is
    /// not kept: secrets do not get better), replacing an earlier entry
    /// for it; the day counts from the first.
    pub(crate) fn await_better_key(&mut self, answer: Answer, now: Timestamp, sent_from: Option<u32>) {
        if !matches!(answer.asked, Asked::RoomKey(..)) {
            return;
        }
        let same = |k: &AwaitingKey| k.answer.is(&answer.request_id, &answer.device_id);
        let asked = self.awaiting_key.iter().find(|k| same(k)).map_or(now, |k| k.asked);
        self.awaiting_key.retain(|k| !same(k));
        if self.awaiting_key.len() >= MAX_AWAITING_KEYS {
            self.awaiting_key.remove(0);
        }
        self.awaiting_key.push(AwaitingKey { answer, asked, sent_from });
    }

    /// The first index of the copy we sent in answer to `request_id` of
    /// `device_id`, if we sent one and keep the request: the same request
    /// asked again (our device sends its open requests again now and then)
    /// gets an answer only if we now hold a better copy.
    pub(crate) fn sent_copy_from(&self, request_id: &str, device_id: &DeviceId) -> Option<u32> {
        self.awaiting_key.iter().find(|k| k.answer.is(request_id, device_id)).and_then(|k| k.sent_from)
    }

    /// Forgets the kept room-key requests older than [`AWAITING_KEY_FOR`]
    /// and returns the others, to be answered if we now hold their key
    /// (see [`AwaitingKey::better_than_sent`]).
    pub(crate) fn awaiting_keys(&mut self, now: Timestamp) -> Vec<AwaitingKey> {
        self.awaiting_key.retain(|k| now.saturating_duration_since(k.asked) < AWAITING_KEY_FOR);
        self.awaiting_key.clone()
    }

    /// The devices some answer waits for a session with.
    #[cfg(test)]
    fn waiting_devices(&self) -> HashSet<OwnedDeviceId> {
        self.waiting.iter().map(|w| w.device_id.clone()).collect()
    }
}

impl AwaitingKey {
    /// Whether a copy we hold from `held_from` is worth sending: we sent
    /// none, or ours now starts earlier than the one we sent.
    pub(crate) fn better_than_sent(&self, held_from: u32) -> bool {
        self.sent_from.is_none_or(|sent| held_from < sent)
    }
}

#[cfg(test)]
mod tests;
