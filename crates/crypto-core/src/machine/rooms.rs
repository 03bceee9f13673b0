//! [`RoomRegistry`]: per-room bookkeeping of the machine: the lock that makes
//! sharing and encrypting in a room single-flight, the room's encryption
//! settings as far as the engine has seen them (persisted, so the "never
//! switched off or weakened" rule of `megolm::room_encryption` survives a
//! restart), and when each room's key reaches its age limit.

use std::collections::HashMap;
use std::sync::Arc;

use ruma_common::{OwnedRoomId, RoomId};

use crate::{Timestamp, megolm::RoomEncryption};

/// The named value a room's known encryption settings are saved under.
pub(super) fn encryption_record_name(room_id: &RoomId) -> String {
    format!("hush.core.room_encryption.{room_id}")
}

/// Per-room state.
#[derive(Debug, Default)]
pub(super) struct RoomRegistry {
    locks: HashMap<OwnedRoomId, Arc<async_lock::Mutex<()>>>,
    /// Known settings (`None` inside: looked up, the room is not known to be encrypted).
    encryption: HashMap<OwnedRoomId, Option<RoomEncryption>>,
    /// Our room key per room: its session id and when it reaches its age limit.
    age_deadlines: HashMap<OwnedRoomId, (String, Timestamp)>,
}

impl RoomRegistry {
    pub(super) fn lock(&mut self, room_id: &RoomId) -> Arc<async_lock::Mutex<()>> {
        self.locks.entry(room_id.to_owned()).or_default().clone()
    }

    /// The known settings, if they were looked up.
    pub(super) fn encryption(&self, room_id: &RoomId) -> Option<Option<RoomEncryption>> {
        self.encryption.get(room_id).cloned()
    }

    pub(super) fn set_encryption(&mut self, room_id: &RoomId, encryption: Option<RoomEncryption>) {
        self.encryption.insert(room_id.to_owned(), encryption);
    }

    pub(super) fn set_age_deadline(&mut self, room_id: &RoomId, session_id: &str, at: Timestamp) {
        self.age_deadlines.insert(room_id.to_owned(), (session_id.to_owned(), at));
    }

    pub(super) fn clear_age_deadline(&mut self, room_id: &RoomId) {
        self.age_deadlines.remove(room_id);
    }

    /// The earliest age limit after `handled_until`.
    pub(super) fn next_deadline(&self, handled_until: Timestamp) -> Option<Timestamp> {
        self.age_deadlines.values().map(|(_, at)| *at).filter(|at| *at > handled_until).min()
    }

    /// Rooms whose key reached its age limit at `now`, removed from the list.
    pub(super) fn take_expired(&mut self, now: Timestamp) -> Vec<(OwnedRoomId, String)> {
        let due: Vec<OwnedRoomId> =
            self.age_deadlines.iter().filter(|(_, (_, at))| *at <= now).map(|(room, _)| room.clone()).collect();
        due.into_iter()
            .filter_map(|room| self.age_deadlines.remove(&room).map(|(session, _)| (room, session)))
            .collect()
    }
}
