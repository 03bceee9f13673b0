//! In-memory caches of Megolm sessions in front of the store: hot inbound
//! sessions (bounded) and our outbound session per room.

use std::collections::HashMap;

use ruma_common::{OwnedRoomId, RoomId};

use super::{InboundGroupSession, OutboundGroupSession};

/// How many inbound sessions stay in memory; beyond that the cache is
/// emptied and refilled from the store on demand.
const INBOUND_CACHE_CAPACITY: usize = 4096;

/// Hot Megolm sessions. The store stays the source of truth.
#[derive(Default)]
pub(crate) struct GroupCache {
    inbound: HashMap<(OwnedRoomId, String), InboundGroupSession>,
    pub(crate) outbound: HashMap<OwnedRoomId, OutboundGroupSession>,
}

impl std::fmt::Debug for GroupCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCache")
            .field("inbound", &self.inbound.len())
            .field("outbound", &self.outbound.len())
            .finish()
    }
}

impl GroupCache {
    /// Takes a session out (to be handed back with `insert_inbound`).
    pub(crate) fn take_inbound(&mut self, room_id: &RoomId, session_id: &str) -> Option<InboundGroupSession> {
        self.inbound.remove(&(room_id.to_owned(), session_id.to_owned()))
    }

    pub(crate) fn insert_inbound(&mut self, session: InboundGroupSession) {
        if self.inbound.len() >= INBOUND_CACHE_CAPACITY {
            self.inbound.clear();
        }
        self.inbound.insert((session.room_id.clone(), session.session_id.clone()), session);
    }

    /// Hands back a session taken with `take_inbound`, unless a newer copy
    /// (e.g. a better key that arrived meanwhile) took its place.
    pub(crate) fn return_inbound(&mut self, session: InboundGroupSession) {
        let key = (session.room_id.clone(), session.session_id.clone());
        if !self.inbound.contains_key(&key) {
            self.insert_inbound(session);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.inbound.clear();
        self.outbound.clear();
    }
}
