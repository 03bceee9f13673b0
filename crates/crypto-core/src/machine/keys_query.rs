//! Routing for device tracking: tracked users in, keys queries out, their
//! answers checked on the workers and applied in one batch, device-change
//! events after the save. The rules live in `devices/`.

use std::collections::BTreeMap;

use ruma_client_api::keys::get_keys;
use ruma_common::{OwnedDeviceId, OwnedUserId, UserId, encryption::DeviceKeys, serde::Raw};

use super::{OlmMachine, lock, sync::DeviceListChanges};
use crate::parallel::run_split;
use crate::{
    AnyOutgoingRequest, StoreError, Timestamp,
    devices::{DeviceData, DeviceTracker, KEYS_QUERY_BATCH, device_changes, process_user_devices},
    events::EngineEvent,
    requests::Meta,
    store::Changes,
};

/// One queried user's answer, with what we knew before.
struct QueriedUser<'a> {
    user_id: &'a OwnedUserId,
    generation: u64,
    known: BTreeMap<OwnedDeviceId, DeviceData>,
    listed: &'a BTreeMap<OwnedDeviceId, Raw<DeviceKeys>>,
    /// The user's cross-signing keys, for the key-confusion check.
    identity_keys: Vec<crate::identities::CrossSigningPublicKey>,
}

impl OlmMachine {
    /// Starts tracking the device lists of `users` (e.g. the members of an
    /// encrypted room). New users are queried by the next `outgoing_requests`.
    pub async fn update_tracked_users<'a>(
        &self,
        users: impl IntoIterator<Item = &'a UserId>,
    ) -> Result<(), StoreError> {
        let _account = self.inner.account.lock().await;
        let rows: Vec<_> = {
            let mut tracker = lock(&self.inner.tracker);
            users.into_iter().filter_map(|u| tracker.track(u)).collect()
        };
        self.save(None, None, Changes { tracked_users: rows, ..Default::default() }).await
    }

    /// Marks tracked `users` outdated, so the next `outgoing_requests`
    /// queries their keys again (a refresh on demand; untracked users are
    /// tracked first).
    pub async fn mark_users_outdated<'a>(&self, users: impl IntoIterator<Item = &'a UserId>) -> Result<(), StoreError> {
        let _account = self.inner.account.lock().await;
        let rows: Vec<_> = {
            let mut tracker = lock(&self.inner.tracker);
            users
                .into_iter()
                .flat_map(|u| {
                    let tracked = tracker.track(u);
                    tracked.into_iter().chain(tracker.mark_dirty(u))
                })
                .collect()
        };
        self.save(None, None, Changes { tracked_users: rows, ..Default::default() }).await
    }

    /// Every tracked user.
    pub fn tracked_users(&self) -> Vec<OwnedUserId> {
        lock(&self.inner.tracker).users()
    }

    /// Whether a tracked user's device list is outdated.
    pub fn is_user_dirty(&self, user_id: &UserId) -> bool {
        lock(&self.inner.tracker).is_dirty(user_id)
    }

    /// Applies a sync's device-list changes to the tracked set, adding the
    /// rows to save to `changes`. Queries and claims only for users no
    /// longer tracked are cancelled.
    pub(super) fn apply_device_list_changes(&self, lists: &DeviceListChanges, changes: &mut Changes) {
        let mut tracker = lock(&self.inner.tracker);
        if lists.is_initial {
            // Changes are reported only between two tokens: after a sync from
            // nothing, any tracked user may have added a device meanwhile.
            changes.tracked_users.extend(tracker.mark_all_dirty());
        }
        for user_id in &lists.changed {
            changes.tracked_users.extend(tracker.mark_dirty(user_id));
        }
        let mut untracked = false;
        for user_id in &lists.left {
            if *user_id != self.inner.own.user_id && tracker.untrack(user_id) {
                changes.untracked_users.push(user_id.clone());
                untracked = true;
            }
        }
        if untracked {
            changes.custom_values.push(tracker.retry_record());
            let mut claims = lock(&self.inner.claims);
            for user_id in &lists.left {
                if !tracker.is_tracked(user_id) {
                    claims.forget_user(user_id);
                }
            }
            changes.custom_values.push(claims.record_unpruned());
            drop(claims);
            lock(&self.inner.requests).cancel_untracked(|u| tracker.is_tracked(u));
        }
    }

    /// Lists keys queries (at most [`KEYS_QUERY_BATCH`] users each) for dirty
    /// users not already in an unanswered query nor waiting out a back-off.
    pub(super) fn ensure_keys_queries_listed(&self, now: Timestamp) {
        let dirty = lock(&self.inner.tracker).users_to_query(now);
        let in_flight = lock(&self.inner.requests).users_being_queried();
        let to_query: Vec<_> = dirty.into_iter().filter(|(u, _)| !in_flight.contains(u)).collect();
        for chunk in to_query.chunks(KEYS_QUERY_BATCH) {
            let mut request = get_keys::v3::Request::new();
            request.device_keys = chunk.iter().map(|(u, _)| (u.clone(), Vec::new())).collect();
            self.queue(AnyOutgoingRequest::KeysQuery(request), Meta::KeysQuery(chunk.to_vec()));
        }
    }

    /// Applies a keys-query answer: devices checked on the workers, saved in
    /// one batch with the users marked up to date; users whose server could
    /// not be reached back off. Device-change events follow the save.
    pub(super) async fn receive_keys_query_response(
        &self,
        users: &[(OwnedUserId, u64)],
        response: &get_keys::v3::Response,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        // Serialized with syncs, so a dirty mark cannot slip between the
        // check below and the save.
        let _account = self.inner.account.lock().await;
        let empty = BTreeMap::new();
        let mut to_check = Vec::with_capacity(users.len());
        let mut unreachable = Vec::new();
        for (user_id, generation) in users {
            if !lock(&self.inner.tracker).is_tracked(user_id) {
                continue;
            }
            let listed = match response.device_keys.get(user_id) {
                Some(listed) => listed,
                None if response.failures.contains_key(user_id.server_name().as_str()) => {
                    unreachable.push(user_id);
                    continue;
                }
                // Listed nowhere: the user has no devices (any more).
                None => &empty,
            };
            let known = self.inner.store.get_user_devices(user_id).await?;
            to_check.push(QueriedUser { user_id, generation: *generation, known, listed, identity_keys: Vec::new() });
        }
        let answered: Vec<OwnedUserId> = to_check.iter().map(|u| u.user_id.clone()).collect();
        let queried: Vec<&OwnedUserId> = to_check.iter().map(|u| u.user_id).collect();
        let mut identities = self.check_listed_identities(&queried, response).await?;
        for user in &mut to_check {
            user.identity_keys = identities.keys.remove(user.user_id).unwrap_or_default();
        }
        let (mut changes, mut events, cleaned) = self.check_queried_users(to_check);
        changes.identities = identities.identities;
        let reuploads = std::mem::take(&mut identities.reuploads);
        let private_identity = identities.private_identity.clone();
        changes.private_identity = identities.private_identity;
        events.extend(identities.events);
        {
            let mut tracker = lock(&self.inner.tracker);
            for user_id in &unreachable {
                tracker.record_failure(user_id, now);
            }
            if !unreachable.is_empty() || !answered.is_empty() {
                // An answer ends the user's back-off, even if a newer mark keeps them outdated.
                let answered: Vec<&OwnedUserId> = answered.iter().collect();
                changes.custom_values.push(tracker.retry_record_excluding(&answered));
            }
        }
        self.save(None, None, changes).await?;
        if let Some(private) = private_identity {
            *lock(&self.inner.cross_signing) = Some(private);
        }
        let mut tracker = lock(&self.inner.tracker);
        for user_id in &answered {
            tracker.clear_retry(user_id);
        }
        for (user_id, generation) in cleaned {
            tracker.mark_clean(&user_id, generation);
        }
        drop(tracker);
        self.announce(events);
        self.queue_signature_reuploads(reuploads);
        Ok(())
    }

    /// Checks each user's devices on the workers: the changed devices and
    /// clean marks to save, the events to announce, the users to mark clean.
    fn check_queried_users(
        &self,
        to_check: Vec<QueriedUser<'_>>,
    ) -> (Changes, Vec<EngineEvent>, Vec<(OwnedUserId, u64)>) {
        let own = &self.inner.own;
        let checked = run_split(
            to_check,
            self.workers(),
            |user| user.listed.len(),
            |part| {
                part.into_iter()
                    .map(|user| {
                        let outcome =
                            process_user_devices(user.user_id, &user.known, user.listed, own, &user.identity_keys);
                        let summary = device_changes(user.user_id, &user.known, &outcome.changed);
                        (user.user_id, user.generation, outcome, summary)
                    })
                    .collect::<Vec<_>>()
            },
        );
        let mut changes = Changes::default();
        let mut events = Vec::new();
        let mut cleaned = Vec::new();
        let tracker = lock(&self.inner.tracker);
        for (user_id, generation, outcome, summary) in checked.into_iter().flatten() {
            changes.devices.extend(outcome.changed);
            events.extend(summary.map(EngineEvent::DevicesChanged));
            if tracker.generation(user_id) == Some(generation) {
                changes.tracked_users.push(DeviceTracker::row(user_id, false));
                cleaned.push((user_id.clone(), generation));
            }
        }
        (changes, events, cleaned)
    }
}
