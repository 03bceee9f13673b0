//! The sync loop: one `/sync`, its crypto parts fed to the engine (which
//! saves them, with the sync token, before anything else happens), then the
//! rooms, then the timeline decrypted and delivered, then one turn of the
//! drive loop (the engine's requests, timers and events).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hush_crypto_core::{DeviceListChanges, OneTimeKeyCounts, StoreError, SyncChanges};
use ruma_client_api::sync::sync_events::{self, v3::State};
use ruma_common::OwnedRoomId;
use serde_json::Value;

use crate::{
    Client, ClientError, RoomEvent,
    client::lock,
    http::HttpError,
    rooms::{Membership, RoomState},
};

/// How to sync.
#[derive(Clone, Debug)]
pub struct SyncSettings {
    /// How long the server may hold the request open waiting for news.
    pub timeout: Duration,
    /// A filter (an uploaded filter's id, or a definition) for the rooms'
    /// events. To-device messages and device lists are never filtered out
    /// by hush; a filter that drops them starves the crypto engine.
    pub filter: Option<sync_events::v3::Filter>,
    /// Asks for the full state of every room, not only what changed.
    pub full_state: bool,
    /// Syncs from this token instead of the one stored with the crypto
    /// state. The answer's token is stored as usual; to-device messages the
    /// engine already handled are recognised and not handled twice.
    pub since: Option<String>,
    /// Uses simplified sliding sync (MSC4186) instead of `/sync`; see
    /// [`Client::supports_sliding_sync`]. `filter`, `full_state` and `since`
    /// are `/sync`'s and do not apply to it.
    pub sliding_sync: bool,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(30), filter: None, full_state: false, since: None, sliding_sync: false }
    }
}

impl SyncSettings {
    /// Long-polls for at most `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Syncs with this filter.
    pub fn filter(mut self, filter: sync_events::v3::Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Asks for the rooms' full state.
    pub fn full_state(mut self, full_state: bool) -> Self {
        self.full_state = full_state;
        self
    }

    /// Uses simplified sliding sync (MSC4186) instead of `/sync`.
    pub fn sliding_sync(mut self, sliding_sync: bool) -> Self {
        self.sliding_sync = sliding_sync;
        self
    }

    /// Syncs from `token` instead of the stored token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.since = Some(token.into());
        self
    }
}

/// The rooms one sync changed: updated copies (applied to the client only
/// after they were saved), the timeline to deliver, and whether a room new
/// to the client appeared.
pub(crate) struct RoomUpdate {
    pub(crate) updated: BTreeMap<OwnedRoomId, RoomState>,
    pub(crate) timeline: Vec<(OwnedRoomId, Value)>,
    pub(crate) new_rooms: bool,
}

/// What one sync brought.
#[derive(Clone, Debug, Default)]
pub struct SyncSummary {
    /// The sync token now stored.
    pub next_batch: String,
    /// Timeline events delivered to handlers.
    pub events: usize,
    /// Room keys received.
    pub room_keys: usize,
    /// To-device messages the sync carried. A server hands out a bounded
    /// number per sync (Synapse: 100), so a client that needs every message
    /// waiting for it now (a bot catching up before it reads history) syncs
    /// again until a sync carries none.
    pub to_device_events: usize,
}

impl Client {
    /// One sync. The token is saved by the crypto store together with
    /// everything the sync changed in the crypto state, so a crash never
    /// acknowledges a to-device message whose keys were not saved.
    pub async fn sync_once(&self, settings: SyncSettings) -> Result<SyncSummary, ClientError> {
        let _one_at_a_time = self.inner.sync_lock.lock().await;
        // Shared store: the token is read, and everything saved, under the lock.
        self.with_store_lock(self.sync_locked(settings)).await
    }

    async fn sync_locked(&self, settings: SyncSettings) -> Result<SyncSummary, ClientError> {
        // Each kind of sync in its own heap allocation: their futures are
        // large, and a sync is awaited deep inside other futures (a send
        // drives the engine, which may sync again) on a thread's stack.
        if settings.sliding_sync {
            return Box::pin(self.sliding_sync_locked(settings)).await;
        }
        Box::pin(self.classic_sync_locked(settings)).await
    }

    async fn classic_sync_locked(&self, settings: SyncSettings) -> Result<SyncSummary, ClientError> {
        let machine = self.olm_machine()?;
        let token = self.access_token()?;
        // Resume from the stored token: never a sync from nothing once a
        // token exists (Synapse answers a repeated sync from a cache, and a
        // restart's first full sync repeated the previous process's one, so
        // the token moved back). A store without persisted room state gets
        // its rooms back with `full_state` on top of the stored token.
        let since = match settings.since.clone() {
            Some(token) => Some(token),
            None => machine.store().load_next_batch_token().await?,
        };
        let rooms_known = self.inner.rooms_restored.load(std::sync::atomic::Ordering::Relaxed);
        let full_state = since.is_some() && (!rooms_known || settings.full_state);
        let mut request = sync_events::v3::Request::new();
        request.since = since.clone();
        request.full_state = full_state;
        request.filter = settings.filter.clone();
        let catching_up = since.is_none() || full_state;
        request.timeout = (!catching_up).then_some(self.long_poll(&machine, &settings));
        let response = self.http().send(request, Some(&token), settings.timeout).await?;

        let rooms = self.updated_rooms(&response.rooms);
        let changes = SyncChanges {
            to_device_events: response.to_device.events,
            device_lists: DeviceListChanges {
                changed: response.device_lists.changed,
                left: response.device_lists.left,
                is_initial: since.is_none(),
            },
            // Absent on /sync means zero (spec v1.17).
            one_time_keys_counts: OneTimeKeyCounts::from_sync_v3(response.device_one_time_keys_count),
            unused_fallback_keys: response.device_unused_fallback_key_types,
            next_batch_token: Some(response.next_batch.clone()),
            custom_values: Vec::new(),
        };
        Box::pin(self.apply_sync(&machine, changes, rooms, response.next_batch)).await
    }

    /// How long a sync may wait for news: the settings' timeout, ended by
    /// the engine's next deadline so its timers run on time (the drive
    /// after the sync handles them), and by the store lock's lease.
    pub(crate) fn long_poll(&self, machine: &hush_crypto_core::OlmMachine, settings: &SyncSettings) -> Duration {
        let until_deadline = machine
            .poll_timeout()
            .map(|at| Duration::from_millis(at.as_millis().saturating_sub(self.now().as_millis())));
        self.poll_under_lock(until_deadline.map_or(settings.timeout, |d| d.min(settings.timeout)))
    }

    /// Feeds one sync, classic or sliding, to the engine and the rooms, in
    /// the one input shape both take: the room state it changed is saved
    /// with the crypto changes and the sync positions in one batch; then
    /// the members are tracked, the timeline delivered, and the drive loop
    /// turned once.
    pub(crate) async fn apply_sync(
        &self,
        machine: &hush_crypto_core::OlmMachine,
        mut changes: SyncChanges,
        rooms: RoomUpdate,
        next_batch: String,
    ) -> Result<SyncSummary, ClientError> {
        let RoomUpdate { updated, timeline, new_rooms } = rooms;
        let to_device_events = changes.to_device_events.len();
        let rooms_known = self.inner.rooms_restored.load(std::sync::atomic::Ordering::Relaxed);
        // The room list is rewritten when a room is new, or when it was never saved.
        let all_ids: Option<Vec<OwnedRoomId>> = (new_rooms || !rooms_known).then(|| {
            let rooms = lock(&self.inner.rooms);
            rooms.keys().chain(updated.keys()).cloned().collect::<BTreeSet<_>>().into_iter().collect()
        });
        changes
            .custom_values
            .extend(crate::persist::room_values(updated.values(), all_ids.as_ref().map(|ids| ids.iter().collect()))?);
        let output = machine.receive_sync_changes(changes, self.now()).await?;
        lock(&self.inner.rooms).extend(updated);
        self.inner.rooms_restored.store(true, std::sync::atomic::Ordering::Relaxed);

        // Members of encrypted rooms are tracked, so their devices are known.
        let members: BTreeSet<_> = lock(&self.inner.rooms)
            .values()
            .filter(|r| r.is_encrypted() && r.own_membership == Membership::Join)
            .flat_map(|r| r.key_recipients())
            .collect();
        machine.update_tracked_users(members.iter().map(|u| u.as_ref())).await?;

        let delivered = Box::pin(self.deliver_timeline(timeline)).await;
        // Requests out, answers in, events handled (late decryptions);
        // then the engine's room events (in-room verification). The sync
        // itself is saved: a crypto request that fails (the server down,
        // refusing it, or answering what we cannot read) fails alone, stays
        // queued in the engine and goes out at a later drive (see
        // `driver`); it never fails the sync.
        let _requests = Box::pin(self.drive()).await?;
        self.send_room_messages_logged().await;
        self.use_gossiped_backup_key().await;
        Ok(SyncSummary { next_batch, events: delivered, room_keys: output.room_keys.len(), to_device_events })
    }

    /// The rooms this sync changes, as updated copies (applied to the
    /// client only after they were saved), the timeline to deliver, and
    /// whether a room new to the client appeared.
    fn updated_rooms(&self, rooms: &sync_events::v3::Rooms) -> RoomUpdate {
        let known = lock(&self.inner.rooms);
        let mut updated: BTreeMap<OwnedRoomId, RoomState> = BTreeMap::new();
        let mut new_rooms = false;
        let mut copy =
            |room_id: &OwnedRoomId, membership: Membership, updated: &mut BTreeMap<OwnedRoomId, RoomState>| {
                if !updated.contains_key(room_id) {
                    let room = known.get(room_id).cloned().unwrap_or_else(|| {
                        new_rooms = true;
                        RoomState::new(room_id.clone(), membership)
                    });
                    updated.insert(room_id.clone(), room);
                }
            };
        let mut timeline = Vec::new();
        let own = self.user_id();
        for (room_id, joined) in &rooms.join {
            copy(room_id, Membership::Join, &mut updated);
            let Some(room) = updated.get_mut(room_id) else { continue };
            room.own_membership = Membership::Join;
            apply_state(room, &joined.state, own.as_ref().map(|o| o.as_str()));
            for event in &joined.timeline.events {
                let value: Value = event.deserialize_as_unchecked().unwrap_or_default();
                if value.get("state_key").is_some() {
                    room.apply(&value);
                    if let Some(own) = &own {
                        room.note_own_membership(&value, own.as_str());
                    }
                }
                room.note_delivered(&value);
                timeline.push((room_id.clone(), value));
            }
        }
        for (room_id, invited) in &rooms.invite {
            copy(room_id, Membership::Invite, &mut updated);
            let Some(room) = updated.get_mut(room_id) else { continue };
            // The stripped state carries `m.room.encryption`: an invited
            // room is known to be encrypted before we join.
            for event in &invited.invite_state.events {
                if let Ok(value) = event.deserialize_as_unchecked::<Value>() {
                    room.apply(&value);
                }
            }
            if room.own_membership != Membership::Join {
                room.own_membership = Membership::Invite;
            }
        }
        for (room_id, left) in &rooms.leave {
            copy(room_id, Membership::Leave, &mut updated);
            let Some(room) = updated.get_mut(room_id) else { continue };
            room.own_membership = Membership::Leave;
            room.member_since = None;
            apply_state(room, &left.state, None);
        }
        RoomUpdate { updated, timeline, new_rooms }
    }

    /// Syncs until an error that retrying cannot fix (e.g. the session was
    /// logged out). Network errors and server restarts are waited out.
    pub async fn sync(&self, settings: SyncSettings) -> Result<(), ClientError> {
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.sync_once(settings.clone()).await {
                Ok(_) => backoff = Duration::from_secs(1),
                Err(ClientError::Http(HttpError::LoggedOut)) => return Err(ClientError::Http(HttpError::LoggedOut)),
                Err(error @ (ClientError::Http(_) | ClientError::StoreLocked { .. }))
                | Err(
                    error @ ClientError::Store(
                        StoreError::LockHeld { .. } | StoreError::LockLost { .. } | StoreError::LockNotHeld { .. },
                    ),
                ) => {
                    // The network, the server, or another holder of a shared
                    // store: all pass.
                    tracing::warn!(%error, wait_s = backoff.as_secs(), "sync failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// Hands a sync's timeline to the handlers, each room's events
    /// decrypted as one engine batch (one save per room, not per event).
    /// Returns how many events were delivered.
    async fn deliver_timeline(&self, timeline: Vec<(OwnedRoomId, Value)>) -> usize {
        let mut delivered = 0;
        let mut rest = timeline.into_iter().peekable();
        while let Some((room_id, first)) = rest.next() {
            let mut events = vec![first];
            while let Some((_, event)) = rest.next_if(|(other, _)| *other == room_id) {
                events.push(event);
            }
            if !cfg!(feature = "e2e-encryption") && events.iter().any(|e| e["type"] == "m.room.encrypted") {
                self.warn_unencrypted_build_once(&room_id);
            }
            for room_event in self.decrypt_page(&room_id, events).await {
                self.deliver_event(room_event).await;
                delivered += 1;
            }
        }
        delivered
    }

    /// Hands one event, decrypted or not, to in-room verification and the handlers.
    pub(crate) async fn deliver_event(&self, room_event: RoomEvent) {
        self.feed_verification(&room_event.room_id, &room_event).await;
        let handlers = lock(&self.inner.handlers).clone();
        for handler in handlers {
            handler(room_event.clone()).await;
        }
    }

    /// Hands an in-room verification event (decrypted, with the outer
    /// event's sender, id and timestamp) to the engine.
    async fn feed_verification(&self, room_id: &OwnedRoomId, room_event: &RoomEvent) {
        let event = &room_event.event;
        let event_type = event.get("type").and_then(Value::as_str).unwrap_or_default();
        let is_request = event_type == "m.room.message"
            && event.pointer("/content/msgtype").and_then(Value::as_str) == Some("m.key.verification.request");
        if !is_request && !event_type.starts_with("m.key.verification.") {
            return;
        }
        let Ok(machine) = self.olm_machine() else { return };
        if let Err(error) = machine.receive_room_verification_event(room_id, event, self.now()).await {
            tracing::warn!(%error, %room_id, "an in-room verification event failed");
        }
    }
}

fn apply_state(room: &mut RoomState, state: &State, own: Option<&str>) {
    let events = match state {
        State::Before(events) | State::After(events) => events,
        _ => return,
    };
    for event in &events.events {
        if let Ok(value) = event.deserialize_as_unchecked::<Value>() {
            room.apply(&value);
            if let Some(own) = own {
                room.note_own_membership(&value, own);
            }
        }
    }
}
