//! Requests handed out and not yet answered, in the order they were made.

use std::collections::HashSet;

use ruma_common::{OwnedDeviceId, OwnedUserId, RoomId, TransactionId};

use super::share::ShareTargets;
use crate::{AnyOutgoingRequest, OutgoingRequest};

/// What the machine must remember about a request to apply its answer.
#[derive(Clone, Debug)]
pub(super) enum Meta {
    /// Nothing beyond the request itself.
    None,
    /// The users queried, each with the generation of its dirty flag then.
    KeysQuery(Vec<(OwnedUserId, u64)>),
    /// The devices whose one-time keys were claimed.
    KeysClaim(Vec<(OwnedUserId, OwnedDeviceId)>),
    /// A room key (or withheld notices) for these devices.
    RoomKeyShare(ShareTargets),
}

#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) request: OutgoingRequest,
    /// Shared: entries are copied out on every answer.
    pub(super) meta: std::sync::Arc<Meta>,
    /// Listed by `outgoing_requests` (as opposed to returned by a command).
    listed: bool,
}

#[derive(Debug, Default)]
pub(super) struct Pending {
    entries: Vec<Entry>,
}

impl Pending {
    pub(super) fn insert(&mut self, request: OutgoingRequest, meta: Meta, listed: bool) {
        self.entries.push(Entry { request, meta: std::sync::Arc::new(meta), listed });
    }

    pub(super) fn get(&self, id: &TransactionId) -> Option<Entry> {
        self.entries.iter().find(|e| e.request.request_id() == id).cloned()
    }

    pub(super) fn remove(&mut self, id: &TransactionId) {
        self.entries.retain(|e| e.request.request_id() != id);
    }

    pub(super) fn listed(&self) -> Vec<OutgoingRequest> {
        self.entries.iter().filter(|e| e.listed).map(|e| e.request.clone()).collect()
    }

    pub(super) fn has_keys_upload(&self) -> bool {
        self.entries.iter().any(|e| matches!(e.request.request(), AnyOutgoingRequest::KeysUpload(_)))
    }

    /// Users in a keys query that is still unanswered.
    pub(super) fn users_being_queried(&self) -> impl Iterator<Item = &OwnedUserId> {
        self.entries.iter().flat_map(|e| match &*e.meta {
            Meta::KeysQuery(users) => users.iter().map(|(u, _)| u).collect::<Vec<_>>(),
            _ => Vec::new(),
        })
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
    pub(super) fn room_key_share_targets(
        &self,
        room_id: &RoomId,
        session_id: &str,
    ) -> HashSet<(OwnedUserId, OwnedDeviceId)> {
        self.room_key_shares(room_id, session_id)
            .flat_map(|(_, t)| {
                let shared = t.shared.iter().map(|(u, d, _)| (u.clone(), d.clone()));
                let withheld = t.withheld.iter().map(|(u, d, _)| (u.clone(), d.clone()));
                shared.chain(withheld).collect::<Vec<_>>()
            })
            .collect()
    }

    /// The unanswered share requests of this room key, oldest first.
    pub(super) fn room_key_share_requests(&self, room_id: &RoomId, session_id: &str) -> Vec<OutgoingRequest> {
        self.room_key_shares(room_id, session_id).map(|(e, _)| e.request.clone()).collect()
    }

    /// Forgets unanswered share requests of a room (its key was replaced).
    pub(super) fn drop_room_key_shares(&mut self, room_id: &RoomId) {
        self.entries.retain(|e| !matches!(&*e.meta, Meta::RoomKeyShare(t) if t.room_id == room_id));
    }

    /// Devices in a keys claim that is still unanswered.
    pub(super) fn devices_being_claimed(&self) -> impl Iterator<Item = &(OwnedUserId, OwnedDeviceId)> {
        self.entries.iter().flat_map(|e| match &*e.meta {
            Meta::KeysClaim(devices) => devices.iter().collect::<Vec<_>>(),
            _ => Vec::new(),
        })
    }
}
