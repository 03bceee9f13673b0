//! Replay detection: a Megolm message index belongs to the first event that
//! used it. Another event with the same session and index (a different event
//! id or timestamp) is a replay; the same event again is not.

use std::collections::HashMap;

use ruma_common::{OwnedEventId, RoomId};

use super::MegolmError;
use crate::store::MessageIndexRecord;

/// The first use of an index, as far as this batch and the store know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FirstUse {
    pub(crate) event_id: OwnedEventId,
    pub(crate) origin_server_ts: u64,
}

/// One decrypted event's claim on its index.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IndexUse<'a> {
    pub(crate) room_id: &'a RoomId,
    pub(crate) session_id: &'a str,
    pub(crate) message_index: u32,
    pub(crate) event_id: &'a OwnedEventId,
    pub(crate) origin_server_ts: u64,
}

/// The replay rule over one batch: remembers the indices the batch used
/// first, so a replay inside the batch is caught before anything is saved.
#[derive(Debug, Default)]
pub(crate) struct ReplayGuard {
    seen_in_batch: HashMap<(String, u32), FirstUse>,
}

impl ReplayGuard {
    /// A first use of the index seen earlier in this batch.
    pub(crate) fn seen(&self, session_id: &str, message_index: u32) -> Option<FirstUse> {
        self.seen_in_batch.get(&(session_id.to_owned(), message_index)).cloned()
    }

    /// Judges `claim` given the index's first use (`stored`: from the store,
    /// when the batch has none): `Ok(Some(record))` is a first use to save,
    /// `Ok(None)` the same event again, `Err` a replay.
    pub(crate) fn judge(
        &mut self,
        claim: IndexUse<'_>,
        stored: Option<FirstUse>,
    ) -> Result<Option<MessageIndexRecord>, MegolmError> {
        let key = (claim.session_id.to_owned(), claim.message_index);
        let first = self.seen_in_batch.get(&key).cloned().or(stored);
        match first {
            Some(first) if first.event_id != *claim.event_id || first.origin_server_ts != claim.origin_server_ts => {
                Err(MegolmError::Replay { message_index: claim.message_index, first_event_id: first.event_id })
            }
            Some(_) => Ok(None),
            None => {
                let first = FirstUse { event_id: claim.event_id.clone(), origin_server_ts: claim.origin_server_ts };
                self.seen_in_batch.insert(key, first);
                Ok(Some(MessageIndexRecord {
                    room_id: claim.room_id.to_owned(),
                    session_id: claim.session_id.to_owned(),
                    message_index: claim.message_index,
                    event_id: claim.event_id.clone(),
                    origin_server_ts: claim.origin_server_ts,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma_common::{owned_event_id, room_id};

    use super::*;

    #[test]
    fn the_first_event_owns_its_index() {
        let mut guard = ReplayGuard::default();
        let room_id = room_id!("!r:x.y");
        let first = owned_event_id!("$a");
        let other = owned_event_id!("$b");
        let claim =
            |event_id, ts| IndexUse { room_id, session_id: "s", message_index: 3, event_id, origin_server_ts: ts };
        assert!(guard.judge(claim(&first, 1), None).unwrap().is_some());
        // The same event again (a timeline re-fetch) is fine and saves nothing.
        assert_eq!(guard.judge(claim(&first, 1), None).unwrap(), None);
        // Another event, or the same id with another timestamp, is a replay.
        assert!(matches!(guard.judge(claim(&other, 1), None), Err(MegolmError::Replay { message_index: 3, .. })));
        assert!(guard.judge(claim(&first, 2), None).is_err());
        // A first use in the store counts as much as one in the batch.
        let mut fresh = ReplayGuard::default();
        let stored = FirstUse { event_id: other.clone(), origin_server_ts: 1 };
        assert!(fresh.judge(claim(&first, 1), Some(stored)).is_err());
    }
}
