//! [`RequestQueue`]: every request the engine handed out and that is not yet
//! answered or cancelled, in the order it was made.
//!
//! The one drain rule: everything in the queue is listed by
//! `outgoing_requests` until its answer arrives or the engine cancels it.
//! A command that returns requests returns clones of queued ones, so a caller
//! that drops them still sends them from the queue. Answering a request that
//! was already answered or was cancelled is accepted and changes nothing
//! (both a command's copy and the queue's copy may be sent and answered).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use ruma_common::{OwnedDeviceId, OwnedTransactionId, OwnedUserId, RoomId, TransactionId, UserId};

use crate::OutgoingRequest;
use crate::megolm::ShareTargets;

/// What the machine must remember about a request to apply its answer.
#[derive(Clone, Debug)]
pub(crate) enum Meta {
    /// Nothing beyond the request itself.
    None,
    /// The keys upload (one at a time).
    KeysUpload,
    /// The users queried, each with the generation of its dirty flag then.
    KeysQuery(Vec<(OwnedUserId, u64)>),
    /// The devices whose one-time keys were claimed.
    KeysClaim(Vec<(OwnedUserId, OwnedDeviceId)>),
    /// A room key (or withheld notices) for these devices.
    RoomKeyShare(ShareTargets),
    /// Our cross-signing public keys, with the master key uploaded (the
    /// answer applies to that set only).
    SigningKeysUpload(vodozemac::Ed25519PublicKey),
    /// Signatures of devices or master keys.
    SignatureUpload,
    /// Room keys for the key backup (one upload at a time).
    KeysBackup,
    /// A read of the server's current backup version (one at a time), with
    /// the version we uploaded to when it was queued: its answer judges
    /// that backup only if it is still the one enabled.
    BackupVersion(Option<String>),
    /// A room key looked up in the backup.
    BackupKeyLookup {
        /// The room of the key.
        room_id: ruma_common::OwnedRoomId,
        /// The key's session id.
        session_id: String,
    },
    /// Our secret or room-key request with this id (marked sent on answer).
    GossipRequest(String),
    /// Our in-room verification request to this user: its event id names
    /// the flow.
    RoomVerificationRequest(OwnedUserId),
}

/// A queued request and what its answer needs.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) request: OutgoingRequest,
    /// Shared: entries are copied out on every answer.
    pub(crate) meta: Arc<Meta>,
}

/// How many answered or cancelled ids are remembered, so that a late
/// second answer is recognised as harmless.
const FINISHED_KEPT: usize = 4096;

/// The queue of unanswered requests.
#[derive(Debug, Default)]
pub(crate) struct RequestQueue {
    entries: Vec<Entry>,
    finished: VecDeque<OwnedTransactionId>,
    finished_set: HashSet<OwnedTransactionId>,
}

impl RequestQueue {
    /// Queues a request; returns a clone for the command that made it.
    pub(crate) fn push(&mut self, request: OutgoingRequest, meta: Meta) -> OutgoingRequest {
        self.entries.push(Entry { request: request.clone(), meta: Arc::new(meta) });
        request
    }

    #[cfg(test)]
    pub(crate) fn get(&self, id: &TransactionId) -> Option<Entry> {
        self.entries.iter().find(|e| e.request.request_id() == id).cloned()
    }

    /// The queued request with `id`.
    pub(crate) fn find(&self, id: &TransactionId) -> Option<&OutgoingRequest> {
        self.entries.iter().map(|e| &e.request).find(|r| r.request_id() == id)
    }

    /// What the queued request with `id` needs for its answer.
    pub(crate) fn meta(&self, id: &TransactionId) -> Option<Arc<Meta>> {
        self.entries.iter().find(|e| e.request.request_id() == id).map(|e| e.meta.clone())
    }

    /// Whether `id` is queued, being answered, or finished lately: a fresh
    /// id must be none of these.
    pub(crate) fn knows(&self, id: &TransactionId) -> bool {
        self.finished_set.contains(id) || self.entries.iter().any(|e| e.request.request_id() == id)
    }

    /// Takes a request out of the queue to apply its answer: a concurrent
    /// second answer then finds it finished and is ignored. Hand it back
    /// with [`restore`](Self::restore) if applying the answer failed.
    pub(crate) fn begin_answer(&mut self, id: &TransactionId) -> Option<Entry> {
        let position = self.entries.iter().position(|e| e.request.request_id() == id)?;
        let entry = self.entries.remove(position);
        self.remember(id.to_owned());
        Some(entry)
    }

    /// Puts back a request whose answer could not be applied, listed again.
    pub(crate) fn restore(&mut self, entry: Entry) {
        let id = entry.request.request_id().to_owned();
        self.finished_set.remove(&id);
        self.finished.retain(|f| *f != id);
        self.entries.push(entry);
    }

    /// Every queued request, oldest first.
    pub(crate) fn listed(&self) -> Vec<OutgoingRequest> {
        self.entries.iter().map(|e| e.request.clone()).collect()
    }

    /// Whether `id` was answered or cancelled recently.
    pub(crate) fn was_finished(&self, id: &TransactionId) -> bool {
        self.finished_set.contains(id)
    }

    /// Removes an answered request.
    #[cfg(test)]
    pub(crate) fn finish(&mut self, id: &TransactionId) {
        let before = self.entries.len();
        self.entries.retain(|e| e.request.request_id() != id);
        if self.entries.len() != before {
            self.remember(id.to_owned());
        }
    }

    /// Cancels every request `obsolete` picks; returns how many.
    pub(crate) fn cancel_where(&mut self, mut obsolete: impl FnMut(&Entry) -> bool) -> usize {
        let (cancelled, kept): (Vec<Entry>, Vec<Entry>) = self.entries.drain(..).partition(|e| obsolete(e));
        self.entries = kept;
        for entry in &cancelled {
            tracing::debug!(id = %entry.request.request_id(), kind = entry.request.request().kind(), "request cancelled");
            self.remember(entry.request.request_id().to_owned());
        }
        cancelled.len()
    }

    fn remember(&mut self, id: OwnedTransactionId) {
        if self.finished.len() >= FINISHED_KEPT
            && let Some(oldest) = self.finished.pop_front()
        {
            self.finished_set.remove(&oldest);
        }
        self.finished_set.insert(id.clone());
        self.finished.push_back(id);
    }

    pub(crate) fn has_keys_upload(&self) -> bool {
        self.entries.iter().any(|e| matches!(*e.meta, Meta::KeysUpload))
    }

    /// Whether a read of the backup version is unanswered.
    pub(crate) fn has_backup_read(&self) -> bool {
        self.entries.iter().any(|e| matches!(*e.meta, Meta::BackupVersion(_)))
    }

    /// Whether a lookup of this key in the backup is unanswered.
    pub(crate) fn has_backup_lookup(&self, room_id: &RoomId, session_id: &str) -> bool {
        self.entries.iter().any(|e| {
            matches!(&*e.meta, Meta::BackupKeyLookup { room_id: r, session_id: s } if r == room_id && s == session_id)
        })
    }

    /// Cancels backup reads and lookups (the backup was enabled or disabled:
    /// their answers are about another state).
    pub(crate) fn cancel_backup_reads(&mut self) -> usize {
        self.cancel_where(|e| matches!(&*e.meta, Meta::BackupVersion(_) | Meta::BackupKeyLookup { .. }))
    }

    /// Users in a keys query that is still unanswered.
    pub(crate) fn users_being_queried(&self) -> HashSet<OwnedUserId> {
        let mut users = HashSet::new();
        for entry in &self.entries {
            if let Meta::KeysQuery(queried) = &*entry.meta {
                users.extend(queried.iter().map(|(u, _)| u.clone()));
            }
        }
        users
    }

    /// Devices in a keys claim that is still unanswered.
    pub(crate) fn devices_being_claimed(&self) -> HashSet<(OwnedUserId, OwnedDeviceId)> {
        let mut devices = HashSet::new();
        for entry in &self.entries {
            if let Meta::KeysClaim(claimed) = &*entry.meta {
                devices.extend(claimed.iter().cloned());
            }
        }
        devices
    }

    fn room_key_shares<'a>(
        &'a self,
        room_id: &'a RoomId,
        session_id: &'a str,
    ) -> impl Iterator<Item = (&'a Entry, &'a ShareTargets)> {
        self.entries.iter().filter_map(move |e| match &*e.meta {
            Meta::RoomKeyShare(t) if t.room_id == room_id && t.session_id == session_id => Some((e, t)),
            _ => None,
        })
    }

    /// Devices an unanswered share request of this room key addresses.
    pub(crate) fn room_key_share_targets(
        &self,
        room_id: &RoomId,
        session_id: &str,
    ) -> HashSet<(OwnedUserId, OwnedDeviceId)> {
        self.room_key_shares(room_id, session_id).flat_map(|(_, t)| t.devices()).collect()
    }

    /// The unanswered share requests of this room key, oldest first.
    pub(crate) fn room_key_share_requests(&self, room_id: &RoomId, session_id: &str) -> Vec<OutgoingRequest> {
        self.room_key_shares(room_id, session_id).map(|(e, _)| e.request.clone()).collect()
    }

    /// Cancels the unanswered share requests of a room (its key was replaced).
    pub(crate) fn cancel_room_key_shares(&mut self, room_id: &RoomId) -> usize {
        self.cancel_where(|e| matches!(&*e.meta, Meta::RoomKeyShare(t) if t.room_id == room_id))
    }

    /// Cancels keys queries and claims that only concern users `is_tracked`
    /// no longer holds.
    pub(crate) fn cancel_untracked(&mut self, is_tracked: impl Fn(&UserId) -> bool) -> usize {
        self.cancel_where(|e| match &*e.meta {
            Meta::KeysQuery(users) => users.iter().all(|(u, _)| !is_tracked(u)),
            Meta::KeysClaim(devices) => devices.iter().all(|(u, _)| !is_tracked(u)),
            _ => false,
        })
    }

    /// Cancels signing-keys uploads: a new bootstrap replaces them.
    pub(crate) fn cancel_signing_keys_uploads(&mut self) -> usize {
        self.cancel_where(|e| matches!(&*e.meta, Meta::SigningKeysUpload(_)))
    }
}

#[cfg(test)]
mod tests {
    use ruma_client_api::keys::get_keys;
    use ruma_common::owned_user_id;

    use super::*;
    use crate::AnyOutgoingRequest;

    fn query(id: &str, users: &[&str]) -> (OutgoingRequest, Meta) {
        let request = OutgoingRequest::with_id(id.into(), AnyOutgoingRequest::KeysQuery(get_keys::v3::Request::new()));
        let meta = Meta::KeysQuery(users.iter().map(|u| (OwnedUserId::try_from(*u).unwrap(), 1)).collect());
        (request, meta)
    }

    #[test]
    fn listed_until_answered_then_a_late_answer_is_recognised() {
        let mut queue = RequestQueue::default();
        let (request, meta) = query("q1", &["@a:x.y"]);
        queue.push(request, meta);
        assert_eq!(queue.listed().len(), 1);
        assert!(!queue.was_finished("q1".into()));
        assert!(queue.get("q1".into()).is_some());
        queue.finish("q1".into());
        assert!(queue.listed().is_empty());
        assert!(queue.was_finished("q1".into()));
        assert!(!queue.was_finished("q2".into()));
    }

    #[test]
    fn an_answer_in_progress_is_not_applied_twice_and_a_failed_one_is_listed_again() {
        let mut queue = RequestQueue::default();
        let (request, meta) = query("q1", &["@a:x.y"]);
        queue.push(request, meta);
        let entry = queue.begin_answer("q1".into()).unwrap();
        assert!(queue.begin_answer("q1".into()).is_none(), "a second answer finds nothing to apply");
        assert!(queue.was_finished("q1".into()));
        queue.restore(entry);
        assert!(!queue.was_finished("q1".into()));
        assert_eq!(queue.listed().len(), 1);
        assert!(queue.knows("q1".into()));
    }

    #[test]
    fn requests_for_untracked_users_are_cancelled() {
        let mut queue = RequestQueue::default();
        for (id, users) in [("q1", &["@a:x.y"][..]), ("q2", &["@a:x.y", "@b:x.y"][..])] {
            let (request, meta) = query(id, users);
            queue.push(request, meta);
        }
        let b = owned_user_id!("@b:x.y");
        assert_eq!(queue.cancel_untracked(|u| u == b), 1);
        let left: Vec<_> = queue.listed().iter().map(|r| r.request_id().to_owned()).collect();
        assert_eq!(left, vec![OwnedTransactionId::from("q2")]);
        assert!(queue.was_finished("q1".into()));
    }

    #[test]
    fn the_finished_memory_is_bounded() {
        let mut queue = RequestQueue::default();
        for n in 0..(FINISHED_KEPT + 10) {
            let (request, meta) = query(&format!("q{n}"), &["@a:x.y"]);
            queue.push(request, meta);
            queue.finish(format!("q{n}").as_str().into());
        }
        assert_eq!(queue.finished.len(), FINISHED_KEPT);
        assert!(!queue.was_finished("q0".into()));
        assert!(queue.was_finished(format!("q{}", FINISHED_KEPT + 9).as_str().into()));
    }
}
