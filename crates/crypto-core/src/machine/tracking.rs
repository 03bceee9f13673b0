//! Which users' device lists we follow, which are outdated, and applying
//! `/keys/query` answers.

use std::collections::{BTreeMap, HashMap, HashSet};

use ruma_client_api::keys::get_keys;
use ruma_common::{OwnedUserId, UserId};

use super::{OlmMachine, lock, pending::Meta, sync::DeviceListChanges};
use crate::parallel::run_split;
use crate::{
    AnyOutgoingRequest, StoreError,
    devices::process_user_devices,
    store::{Changes, TrackedUser},
};

/// The most users one `/keys/query` request names.
pub(crate) const KEYS_QUERY_BATCH: usize = 250;

#[derive(Clone, Copy, Debug)]
struct UserState {
    dirty: bool,
    /// Bumped each time the user is marked dirty, so an answer to an older
    /// query does not clear a newer change.
    generation: u64,
}

/// The tracked users, in memory; persisted as [`TrackedUser`] rows.
#[derive(Debug, Default)]
pub(super) struct Tracking {
    users: HashMap<OwnedUserId, UserState>,
    /// Unknown devices (user, curve25519 key) that already triggered a query.
    unknown_reported: HashSet<(OwnedUserId, vodozemac::Curve25519PublicKey)>,
}

/// The most unknown-device reports remembered before the set starts afresh.
const UNKNOWN_REPORTS_KEPT: usize = 10_000;

impl Tracking {
    pub(super) fn from_stored(users: Vec<TrackedUser>) -> Self {
        let users = users.into_iter().map(|u| (u.user_id, UserState { dirty: u.dirty, generation: 0 })).collect();
        Self { users, unknown_reported: HashSet::new() }
    }

    /// Whether this is the first report of this unknown device (bounded memory).
    pub(super) fn first_unknown_device_report(
        &mut self,
        user_id: &UserId,
        key: vodozemac::Curve25519PublicKey,
    ) -> bool {
        if self.unknown_reported.len() >= UNKNOWN_REPORTS_KEPT {
            self.unknown_reported.clear();
        }
        self.unknown_reported.insert((user_id.to_owned(), key))
    }

    /// Marks every tracked user outdated. Returns the rows to save.
    fn mark_all_dirty(&mut self) -> Vec<TrackedUser> {
        let users: Vec<OwnedUserId> = self.users.keys().cloned().collect();
        users.iter().filter_map(|u| self.mark_dirty(u)).collect()
    }

    fn row(user_id: &UserId, dirty: bool) -> TrackedUser {
        TrackedUser { user_id: user_id.to_owned(), dirty }
    }

    /// Starts tracking `user_id` (dirty). Returns the row to save if it is new.
    fn track(&mut self, user_id: &UserId) -> Option<TrackedUser> {
        if self.users.contains_key(user_id) {
            return None;
        }
        self.users.insert(user_id.to_owned(), UserState { dirty: true, generation: 1 });
        Some(Self::row(user_id, true))
    }

    /// Marks a tracked user dirty. Returns the row to save.
    pub(super) fn mark_dirty(&mut self, user_id: &UserId) -> Option<TrackedUser> {
        let state = self.users.get_mut(user_id)?;
        state.dirty = true;
        state.generation += 1;
        Some(Self::row(user_id, true))
    }

    pub(super) fn is_tracked(&self, user_id: &UserId) -> bool {
        self.users.contains_key(user_id)
    }

    fn dirty_users(&self) -> Vec<(OwnedUserId, u64)> {
        let mut users: Vec<_> =
            self.users.iter().filter(|(_, s)| s.dirty).map(|(u, s)| (u.clone(), s.generation)).collect();
        users.sort();
        users
    }

    fn generation(&self, user_id: &UserId) -> Option<u64> {
        self.users.get(user_id).map(|s| s.generation)
    }

    fn mark_clean(&mut self, user_id: &UserId, generation: u64) {
        if let Some(state) = self.users.get_mut(user_id)
            && state.generation == generation
        {
            state.dirty = false;
        }
    }
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
            let mut tracking = lock(&self.inner.tracking);
            users.into_iter().filter_map(|u| tracking.track(u)).collect()
        };
        self.save(None, None, Changes { tracked_users: rows, ..Default::default() }).await
    }

    /// Every tracked user.
    pub fn tracked_users(&self) -> Vec<OwnedUserId> {
        lock(&self.inner.tracking).users.keys().cloned().collect()
    }

    /// Whether a tracked user's device list is outdated.
    pub fn is_user_dirty(&self, user_id: &UserId) -> bool {
        lock(&self.inner.tracking).users.get(user_id).is_some_and(|s| s.dirty)
    }

    /// Applies a sync's device-list changes to the tracked set, adding the
    /// rows to save to `changes`.
    pub(super) fn apply_device_list_changes(&self, lists: &DeviceListChanges, changes: &mut Changes) {
        let mut tracking = lock(&self.inner.tracking);
        if lists.is_initial {
            // Changes are reported only between two tokens: after a sync from
            // nothing, any tracked user may have added a device meanwhile.
            changes.tracked_users.extend(tracking.mark_all_dirty());
        }
        for user_id in &lists.changed {
            changes.tracked_users.extend(tracking.mark_dirty(user_id));
        }
        for user_id in &lists.left {
            if *user_id != self.inner.own.user_id && tracking.users.remove(user_id).is_some() {
                changes.untracked_users.push(user_id.clone());
            }
        }
    }

    /// Lists keys queries (at most [`KEYS_QUERY_BATCH`] users each) for dirty
    /// users not already in an unanswered query.
    pub(super) fn ensure_keys_queries_listed(&self) {
        let dirty = lock(&self.inner.tracking).dirty_users();
        let in_flight: HashSet<OwnedUserId> = lock(&self.inner.pending).users_being_queried().cloned().collect();
        let to_query: Vec<_> = dirty.into_iter().filter(|(u, _)| !in_flight.contains(u)).collect();
        for chunk in to_query.chunks(KEYS_QUERY_BATCH) {
            let mut request = get_keys::v3::Request::new();
            request.device_keys = chunk.iter().map(|(u, _)| (u.clone(), Vec::new())).collect();
            self.register(AnyOutgoingRequest::KeysQuery(request), Meta::KeysQuery(chunk.to_vec()), true);
        }
    }

    /// Applies a keys-query answer: checked devices are saved in one batch,
    /// then the queried users are marked up to date.
    pub(super) async fn receive_keys_query_response(
        &self,
        meta: &Meta,
        response: &get_keys::v3::Response,
    ) -> Result<(), StoreError> {
        let Meta::KeysQuery(users) = meta else { return Ok(()) };
        // Serialized with syncs, so a dirty mark cannot slip between the
        // check below and the save.
        let _account = self.inner.account.lock().await;
        let empty = BTreeMap::new();
        let mut changes = Changes::default();
        let mut cleaned = Vec::new();
        let mut to_check = Vec::with_capacity(users.len());
        for (user_id, generation) in users {
            if !lock(&self.inner.tracking).is_tracked(user_id) {
                continue;
            }
            let listed = match response.device_keys.get(user_id) {
                Some(listed) => listed,
                // The user's server could not be reached: keep the old list, retry later.
                None if response.failures.contains_key(user_id.server_name().as_str()) => continue,
                // Listed nowhere: the user has no devices (any more).
                None => &empty,
            };
            let known = self.inner.store.get_user_devices(user_id).await?;
            to_check.push((user_id, *generation, known, listed));
        }
        // Checking the devices' signatures is independent per user.
        let own = &self.inner.own;
        let checked = run_split(
            to_check,
            self.workers(),
            |(_, _, _, listed)| listed.len(),
            |part| {
                part.into_iter()
                    .map(|(user_id, generation, known, listed)| {
                        (user_id, generation, process_user_devices(user_id, &known, listed, own))
                    })
                    .collect::<Vec<_>>()
            },
        );
        for (user_id, generation, outcome) in checked.into_iter().flatten() {
            changes.devices.extend(outcome.changed);
            if lock(&self.inner.tracking).generation(user_id) == Some(generation) {
                changes.tracked_users.push(Tracking::row(user_id, false));
                cleaned.push((user_id.clone(), generation));
            }
        }
        self.save(None, None, changes).await?;
        let mut tracking = lock(&self.inner.tracking);
        for (user_id, generation) in cleaned {
            tracking.mark_clean(&user_id, generation);
        }
        Ok(())
    }
}
