//! The upload of room keys to the backup, one batch at a time: which keys
//! an upload carries, which of them its answer takes off the persisted
//! queue, and when the queue is worth reading.
//!
//! The rules:
//! * one upload is prepared or in flight at a time;
//! * a key stored again (a better copy) while an upload is prepared or in
//!   flight may be one that upload carries in its older form: the upload's
//!   answer leaves it on the queue, so its better copy goes up next;
//! * the answer to an upload that is no longer the one in flight (the
//!   backup was replaced, the upload refused) changes nothing;
//! * the queue is read only when it may hold keys: at start, after a key
//!   was queued, after an upload's answer; not again after a look found it
//!   empty, after preparing failed, or after the server refused an upload
//!   (a server that keeps refusing is not asked in a loop).

use std::collections::BTreeSet;

use ruma_common::{OwnedTransactionId, TransactionId};

use crate::store::RoomKeyRef;

/// The upload bookkeeping of an enabled backup (in memory; the queue itself
/// is in the store).
#[derive(Debug)]
pub(crate) struct Uploads {
    /// The upload in flight and the keys it carries.
    in_flight: Option<(OwnedTransactionId, Vec<RoomKeyRef>)>,
    /// Whether an upload is being prepared (the queue read, keys encrypted).
    preparing: bool,
    /// Keys stored again since the current upload started to be prepared.
    requeued: BTreeSet<RoomKeyRef>,
    /// Whether the persisted queue may hold keys.
    maybe_pending: bool,
}

impl Default for Uploads {
    /// At start the queue may hold keys from before.
    fn default() -> Self {
        Self { in_flight: None, preparing: false, requeued: BTreeSet::new(), maybe_pending: true }
    }
}

/// What the answer to an upload does to the queue.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct UploadDone {
    /// Keys that leave the queue.
    pub(crate) backed_up: Vec<RoomKeyRef>,
}

impl Uploads {
    /// Whether the queue is worth reading for an upload.
    pub(crate) fn may_have_keys(&self) -> bool {
        self.maybe_pending
    }

    /// The queue was found empty, or preparing an upload failed: it is not
    /// read again until a key is queued (or the engine starts again).
    pub(crate) fn nothing_to_upload(&mut self) {
        self.maybe_pending = false;
    }

    /// Starts preparing an upload; `false` if one is prepared or in flight.
    pub(crate) fn begin(&mut self) -> bool {
        if self.preparing || self.in_flight.is_some() {
            return false;
        }
        self.preparing = true;
        // From here on, a key stored again is remembered.
        self.requeued.clear();
        true
    }

    /// The preparing ended: with the upload made (its id and the keys it
    /// carries) it is in flight; with `None` nothing is.
    pub(crate) fn prepared(&mut self, upload: Option<(OwnedTransactionId, Vec<RoomKeyRef>)>) {
        self.preparing = false;
        self.in_flight = upload;
    }

    /// The server stored the upload `id`: the keys it carried leave the
    /// queue, except those stored again meanwhile. `None` if `id` is not
    /// the upload in flight. The upload stays in flight until
    /// [`finish`](Self::finish), so no other upload reads its keys while
    /// the queue is being updated.
    pub(crate) fn answered(&self, id: &TransactionId) -> Option<UploadDone> {
        let (_, keys) = self.in_flight.as_ref().filter(|(in_flight, _)| in_flight == id)?;
        let backed_up = keys.iter().filter(|k| !self.requeued.contains(*k)).cloned().collect();
        Some(UploadDone { backed_up })
    }

    /// The queue was updated after the answer to `id`: the upload ends.
    /// Returns the keys of `done` stored again in between (they go back on
    /// the queue).
    pub(crate) fn finish(&mut self, id: &TransactionId, done: UploadDone) -> Vec<RoomKeyRef> {
        if self.in_flight.as_ref().is_some_and(|(in_flight, _)| in_flight == id) {
            self.in_flight = None;
        }
        let requeued = std::mem::take(&mut self.requeued);
        done.backed_up.into_iter().filter(|k| requeued.contains(k)).collect()
    }

    /// The server refused the upload `id` (no such backup, or not the
    /// current version): it ends, its keys stay queued, and the queue is
    /// not read again until a key is queued.
    pub(crate) fn refused(&mut self, id: &TransactionId) {
        if self.in_flight.as_ref().is_some_and(|(in_flight, _)| in_flight == id) {
            self.in_flight = None;
        }
        self.maybe_pending = false;
    }

    /// Keys were queued (stored, not from the backup itself).
    pub(crate) fn queued(&mut self, keys: &[RoomKeyRef]) {
        // While an upload is prepared or in flight, any of these may be one
        // it carries: remember them all (its answer filters).
        if self.preparing || self.in_flight.is_some() {
            self.requeued.extend(keys.iter().cloned());
        }
        self.maybe_pending |= !keys.is_empty();
    }
}

#[cfg(test)]
mod tests {
    use ruma_common::owned_room_id;

    use super::*;

    fn key(n: usize) -> RoomKeyRef {
        RoomKeyRef { room_id: owned_room_id!("!room:example.org"), session_id: format!("s{n}") }
    }

    fn id(n: usize) -> OwnedTransactionId {
        format!("upload{n}").into()
    }

    fn in_flight(keys: &[RoomKeyRef]) -> Uploads {
        let mut uploads = Uploads::default();
        assert!(uploads.begin());
        uploads.prepared(Some((id(1), keys.to_vec())));
        uploads
    }

    #[test]
    fn one_upload_at_a_time() {
        let mut uploads = Uploads::default();
        assert!(uploads.begin());
        assert!(!uploads.begin(), "one is being prepared");
        uploads.prepared(Some((id(1), vec![key(1)])));
        assert!(!uploads.begin(), "one is in flight");
        let done = uploads.answered(&id(1)).unwrap_or_default();
        assert!(!uploads.begin(), "still in flight while the queue is updated");
        assert!(uploads.finish(&id(1), done).is_empty());
        assert!(uploads.begin(), "the next may start");
    }

    #[test]
    fn a_preparing_that_made_nothing_leaves_nothing_in_flight() {
        let mut uploads = Uploads::default();
        assert!(uploads.begin());
        uploads.prepared(None);
        assert!(uploads.begin());
    }

    #[test]
    fn the_answer_takes_the_carried_keys_off_the_queue() {
        let uploads = in_flight(&[key(1), key(2)]);
        assert_eq!(uploads.answered(&id(1)), Some(UploadDone { backed_up: vec![key(1), key(2)] }));
    }

    /// A better copy of a key stored while the older copy was on its way:
    /// the answer must not take the better copy off the queue.
    #[test]
    fn a_key_stored_again_during_an_upload_stays_queued() {
        let mut uploads = Uploads::default();
        assert!(uploads.begin());
        uploads.queued(&[key(2)]);
        uploads.prepared(Some((id(1), vec![key(1), key(2)])));
        uploads.queued(&[key(1)]);
        let done = uploads.answered(&id(1)).unwrap_or_default();
        assert!(done.backed_up.is_empty(), "both were stored again: {done:?}");
        let mut uploads = in_flight(&[key(1), key(2)]);
        uploads.queued(&[key(2)]);
        let done = uploads.answered(&id(1)).unwrap_or_default();
        assert_eq!(done.backed_up, vec![key(1)]);
        assert!(uploads.finish(&id(1), done).is_empty());
    }

    #[test]
    fn a_key_stored_again_while_the_queue_is_updated_goes_back_on_it() {
        let mut uploads = in_flight(&[key(1), key(2)]);
        let done = uploads.answered(&id(1)).unwrap_or_default();
        uploads.queued(&[key(2)]);
        assert_eq!(uploads.finish(&id(1), done), vec![key(2)]);
    }

    #[test]
    fn an_answer_to_an_upload_not_in_flight_changes_nothing() {
        let mut uploads = in_flight(&[key(1)]);
        assert_eq!(uploads.answered(&id(2)), None);
        assert!(uploads.finish(&id(2), UploadDone::default()).is_empty());
        assert!(!uploads.begin(), "upload 1 is still in flight");
        assert!(uploads.answered(&id(1)).is_some());
    }

    #[test]
    fn the_queue_is_read_at_start_and_again_only_once_a_key_is_queued() {
        let mut uploads = Uploads::default();
        assert!(uploads.may_have_keys(), "at start");
        uploads.nothing_to_upload();
        assert!(!uploads.may_have_keys());
        uploads.queued(&[]);
        assert!(!uploads.may_have_keys(), "nothing was queued");
        uploads.queued(&[key(1)]);
        assert!(uploads.may_have_keys());
    }

    /// A server that keeps refusing uploads is not asked in a loop.
    #[test]
    fn a_refused_upload_ends_and_the_queue_waits_for_the_next_key() {
        let mut uploads = in_flight(&[key(1)]);
        uploads.refused(&id(1));
        assert!(!uploads.may_have_keys());
        assert!(uploads.begin(), "nothing is in flight any more");
        uploads.prepared(None);
        uploads.refused(&id(7));
        uploads.queued(&[key(2)]);
        assert!(uploads.may_have_keys());
    }
}
