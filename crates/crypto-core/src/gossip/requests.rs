//! The secret and room-key requests we have open, persisted (as one record
//! saved in the same batch as whatever opens or closes a request), so an
//! answer that arrives after a restart is still recognised, and a request
//! not yet sent is sent after one.

use std::collections::BTreeMap;

use ruma_common::{OwnedRoomId, RoomId};
use serde::{Deserialize, Serialize};

/// The custom value holding the open requests.
pub(crate) const GOSSIP_RECORD: &str = "hush.gossip.requests";
/// The most requests kept open; the oldest room-key request gives way.
const MAX_OPEN: usize = 256;

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipKind {
    /// A secret by name (`m.cross_signing.master`, `m.megolm_backup.v1`...).
    Secret {
        /// The secret's name.
        name: String,
    },
    /// A room key.
    RoomKey {
        /// The room.
        room_id: OwnedRoomId,
        /// The session id.
        session_id: String,
    },
}

impl GossipKind {
    /// Whether it asks for a room key.
    pub fn is_room_key(&self) -> bool {
        matches!(self, Self::RoomKey { .. })
    }
}

/// One open request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipRequest {
    /// Its id (also the to-device transaction id it was sent with).
    pub request_id: String,
    /// What it asks for.
    pub kind: GossipKind,
    /// Whether the server accepted the to-device message.
    pub sent: bool,
    /// For the backup key: the backup's public key an answer must match.
    pub expected_public_key: Option<String>,
    /// Order of creation (the oldest gives way when too many are open).
    pub sequence: u64,
}

/// Every open request, by id.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct GossipRequests {
    open: BTreeMap<String, GossipRequest>,
    next_sequence: u64,
}

impl GossipRequests {
    /// The saved requests (an unreadable record is read as none: the
    /// requests are made again when needed).
    pub(crate) fn from_record(record: Option<&[u8]>) -> Self {
        record.and_then(|bytes| serde_json::from_slice(bytes).ok()).unwrap_or_default()
    }

    /// The record to save after a change.
    pub(crate) fn record(&self) -> (String, Vec<u8>) {
        (GOSSIP_RECORD.to_owned(), serde_json::to_vec(self).unwrap_or_default())
    }

    /// The open request asking for `kind`, if any.
    pub(crate) fn find(&self, kind: &GossipKind) -> Option<&GossipRequest> {
        self.open.values().find(|r| &r.kind == kind)
    }

    /// The open request with this id.
    pub(crate) fn get(&self, request_id: &str) -> Option<&GossipRequest> {
        self.open.get(request_id)
    }

    /// The open request for this room key.
    pub(crate) fn for_room_key(&self, room_id: &RoomId, session_id: &str) -> Option<&GossipRequest> {
        self.open.values().find(|r| {
            matches!(&r.kind, GossipKind::RoomKey { room_id: r_room, session_id: r_session }
                if r_room == room_id && r_session == session_id)
        })
    }

    /// Opens a request. If too many are open, the oldest room-key request
    /// (or, with none, the oldest request) is dropped and returned.
    pub(crate) fn open(
        &mut self,
        request_id: String,
        kind: GossipKind,
        expected_public_key: Option<String>,
    ) -> Option<GossipRequest> {
        let dropped = if self.open.len() >= MAX_OPEN {
            let oldest = |key_only: bool| {
                self.open
                    .values()
                    .filter(|r| !key_only || matches!(r.kind, GossipKind::RoomKey { .. }))
                    .min_by_key(|r| r.sequence)
                    .map(|r| r.request_id.clone())
            };
            oldest(true).or_else(|| oldest(false)).and_then(|id| self.open.remove(&id))
        } else {
            None
        };
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let request =
            GossipRequest { request_id: request_id.clone(), kind, sent: false, expected_public_key, sequence };
        self.open.insert(request_id, request);
        dropped
    }

    /// Marks a request sent.
    pub(crate) fn mark_sent(&mut self, request_id: &str) -> bool {
        match self.open.get_mut(request_id) {
            Some(request) if !request.sent => {
                request.sent = true;
                true
            }
            _ => false,
        }
    }

    /// Closes a request.
    pub(crate) fn close(&mut self, request_id: &str) -> Option<GossipRequest> {
        self.open.remove(request_id)
    }

    /// The requests sent and not yet answered.
    pub(crate) fn sent(&self) -> Vec<GossipRequest> {
        self.open.values().filter(|r| r.sent).cloned().collect()
    }

    /// The requests not yet sent (to send again after a restart).
    pub(crate) fn unsent(&self) -> Vec<GossipRequest> {
        self.open.values().filter(|r| !r.sent).cloned().collect()
    }

    /// How many are open.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use ruma_common::room_id;

    use super::*;

    fn key(n: usize) -> GossipKind {
        GossipKind::RoomKey { room_id: room_id!("!r:e.org").to_owned(), session_id: format!("s{n}") }
    }

    #[test]
    fn the_open_set_is_bounded_and_the_oldest_room_key_request_gives_way() {
        let mut requests = GossipRequests::default();
        requests.open("secret".into(), GossipKind::Secret { name: "m.cross_signing.master".into() }, None);
        for n in 0..MAX_OPEN - 1 {
            assert_eq!(requests.open(format!("k{n}"), key(n), None), None);
        }
        let dropped = requests.open("new".into(), key(999), None).expect("one gives way");
        assert_eq!(dropped.request_id, "k0");
        assert_eq!(requests.len(), MAX_OPEN);
        assert!(requests.get("secret").is_some(), "a secret request outlives room-key requests");
    }

    #[test]
    fn requests_survive_their_record_and_a_bad_record_reads_as_none() {
        let mut requests = GossipRequests::default();
        requests.open("a".into(), key(1), None);
        requests.open("b".into(), GossipKind::Secret { name: "m.megolm_backup.v1".into() }, Some("pk".into()));
        assert!(requests.mark_sent("a"));
        assert!(!requests.mark_sent("a"), "already sent");
        let (_, bytes) = requests.record();
        let back = GossipRequests::from_record(Some(&bytes));
        assert!(back.get("a").is_some_and(|r| r.sent));
        assert_eq!(back.unsent().len(), 1);
        assert_eq!(back.for_room_key(room_id!("!r:e.org"), "s1").map(|r| r.request_id.as_str()), Some("a"));
        assert_eq!(GossipRequests::from_record(Some(b"not json")).len(), 0);
    }
}
