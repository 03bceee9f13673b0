//! [`EngineEvent`]: what changed in the engine's state, for the caller to
//! drain with `OlmMachine::poll_event` / `drain_events`.
//!
//! An event is queued only after the change it reports was saved. Events
//! live in memory: after a restart the store holds the state, the events
//! that announced it are gone. The queue is bounded; when a caller never
//! drains it, the oldest events make room and an
//! [`EngineEvent::EventsDropped`] says how many were lost.

use std::collections::VecDeque;

use ruma_common::{OwnedDeviceId, OwnedRoomId, OwnedUserId};
use vodozemac::Curve25519PublicKey;

use crate::megolm::{RotationReason, WithheldInfo};

/// A room key that arrived over Olm and was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomKeyInfo {
    /// The room.
    pub room_id: OwnedRoomId,
    /// The Megolm session id.
    pub session_id: String,
    /// The curve25519 key of the device that sent it.
    pub sender_key: Curve25519PublicKey,
    /// The user whose device sent it (authenticated by the Olm session).
    pub sender: OwnedUserId,
    /// How it came: [`KeySource::Olm`](crate::KeySource::Olm) from the
    /// sender, [`KeySource::Forwarded`](crate::KeySource::Forwarded) from one
    /// of our own devices in answer to our request.
    pub source: crate::KeySource,
}

/// How one user's device list changed after a keys query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceChanges {
    /// The user.
    pub user_id: OwnedUserId,
    /// Devices seen for the first time.
    pub added: Vec<OwnedDeviceId>,
    /// Known devices whose display name or signed keys changed.
    pub changed: Vec<OwnedDeviceId>,
    /// Devices the server no longer lists.
    pub deleted: Vec<OwnedDeviceId>,
}

/// An event that failed to decrypt earlier and decrypts now: its key
/// arrived (from the sender, another device of ours, the backup or an
/// import) or its sender became trusted enough. Show it in place of the
/// unreadable event shown before. `Debug` omits the decrypted content.
#[derive(Clone, Debug)]
pub struct LateDecryption {
    /// The room.
    pub room_id: OwnedRoomId,
    /// The event's id.
    pub event_id: String,
    /// The decrypted event.
    pub decrypted: crate::DecryptedRoomEvent,
}

impl LateDecryption {
    /// The bytes of the decrypted event (for the queue's memory bound).
    fn bytes(&self) -> usize {
        self.decrypted.event.json().get().len()
    }
}

impl PartialEq for LateDecryption {
    fn eq(&self, other: &Self) -> bool {
        self.room_id == other.room_id
            && self.event_id == other.event_id
            && self.decrypted.info == other.decrypted.info
            && self.decrypted.event.json().get() == other.decrypted.event.json().get()
    }
}

impl Eq for LateDecryption {}

/// Something the engine's state gained or lost. More kinds will come
/// (identities, verification), so match with a wildcard arm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineEvent {
    /// A room key arrived over Olm and was stored: events of its session
    /// that failed to decrypt can be tried again.
    RoomKeyReceived(RoomKeyInfo),
    /// A sender told us it withholds a room key, and why.
    RoomKeyWithheld(WithheldInfo),
    /// A keys query changed what we know of a user's devices.
    DevicesChanged(DeviceChanges),
    /// Our room key of a room can no longer be used: the next message in
    /// the room needs a new key shared first (the room-level command does
    /// it when called).
    RoomKeyExpired {
        /// The room.
        room_id: OwnedRoomId,
        /// The retired key's session id.
        session_id: String,
        /// Why.
        reason: RotationReason,
    },
    /// A user's cross-signing identity appeared, changed, or changed state
    /// (verified, a pin or verification violation): see
    /// [`OlmMachine::get_identity`](crate::OlmMachine::get_identity).
    IdentityChanged {
        /// The user.
        user_id: OwnedUserId,
        /// Where the identity stands now.
        state: crate::identities::IdentityState,
    },
    /// A verification flow appeared (a request we sent or received) or
    /// changed state: see [`OlmMachine::verification_state`](crate::OlmMachine::verification_state).
    VerificationChanged {
        /// The other user.
        user_id: OwnedUserId,
        /// The flow.
        flow: crate::verification::FlowId,
        /// Where it stands now.
        state: crate::verification::FlowState,
    },
    /// A secret we asked our other devices for arrived from one we
    /// verified, matched its public part and was stored (e.g. the backup
    /// key: the backup can now be enabled and restored).
    SecretReceived {
        /// The secret's name.
        name: String,
    },
    /// An event kept waiting for its key decrypts now (see
    /// [`LateDecryption`]). Each waiting event is announced once.
    LateDecryption(LateDecryption),
    /// The engine stopped uploading to the key backup: the server no longer
    /// lists its version. Room keys stay where they are; a new version is
    /// uploaded to once it is enabled.
    BackupDisabled {
        /// The version we uploaded to.
        version: String,
        /// Why.
        reason: crate::backup::BackupDisabledReason,
    },
    /// The queue overflowed: this many older events were dropped.
    EventsDropped {
        /// How many.
        count: u64,
    },
}

/// The most events held before the oldest are dropped.
pub(crate) const EVENT_QUEUE_CAPACITY: usize = 10_000;
/// The most bytes of late decryptions held before the oldest events are
/// dropped (an event can be 64 KiB; 10,000 of them would be 640 MiB).
pub(crate) const EVENT_QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// The bounded queue of events not yet drained.
#[derive(Debug, Default)]
pub(crate) struct EventQueue {
    events: VecDeque<EngineEvent>,
    /// Bytes of the late decryptions held.
    bytes: usize,
    dropped: u64,
}

fn weight(event: &EngineEvent) -> usize {
    match event {
        EngineEvent::LateDecryption(late) => late.bytes(),
        _ => 0,
    }
}

impl EventQueue {
    /// Adds an event, dropping the oldest while the queue is over its
    /// count or its bytes.
    pub(crate) fn push(&mut self, event: EngineEvent) {
        self.bytes += weight(&event);
        self.events.push_back(event);
        while self.events.len() > EVENT_QUEUE_CAPACITY || self.bytes > EVENT_QUEUE_BYTES {
            let Some(oldest) = self.events.pop_front() else { break };
            self.bytes = self.bytes.saturating_sub(weight(&oldest));
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    pub(crate) fn extend(&mut self, events: impl IntoIterator<Item = EngineEvent>) {
        for event in events {
            self.push(event);
        }
    }

    /// The oldest event; a drop report comes first if events were lost.
    pub(crate) fn pop(&mut self) -> Option<EngineEvent> {
        if self.dropped > 0 {
            let count = std::mem::take(&mut self.dropped);
            return Some(EngineEvent::EventsDropped { count });
        }
        let event = self.events.pop_front()?;
        self.bytes = self.bytes.saturating_sub(weight(&event));
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn withheld_room(n: usize) -> EngineEvent {
        EngineEvent::RoomKeyExpired {
            room_id: OwnedRoomId::try_from(format!("!r{n}:x.y")).unwrap(),
            session_id: String::new(),
            reason: RotationReason::Discarded,
        }
    }

    #[test]
    fn an_undrained_queue_stays_bounded_and_says_what_it_lost() {
        let mut queue = EventQueue::default();
        for n in 0..EVENT_QUEUE_CAPACITY + 5 {
            queue.push(withheld_room(n));
        }
        assert_eq!(queue.pop(), Some(EngineEvent::EventsDropped { count: 5 }));
        assert_eq!(queue.pop(), Some(withheld_room(5)));
        let rest = std::iter::from_fn(|| queue.pop()).count();
        assert_eq!(rest, EVENT_QUEUE_CAPACITY - 1);
    }
}
