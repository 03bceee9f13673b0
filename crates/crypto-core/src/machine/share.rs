//! Routing for sharing our room key, as named phases: gather the
//! recipients' devices, plan (rotate if `megolm::rotation` says so, pick
//! each device's share by `megolm::recipients`), encrypt `m.room_key` for
//! them on the workers, then queue the to-device requests. The server's
//! acknowledgement records one share row per device.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use ruma_common::serde::Raw;
use ruma_common::{OwnedDeviceId, OwnedUserId, RoomId, UserId};

use super::{OlmMachine, lock};
use crate::{
    OutgoingRequest, StoreError, Timestamp,
    devices::DeviceData,
    megolm::{
        DeviceShare, EncryptionSettings, InboundGroupSession, KeySource, MEGOLM_ALGORITHM, Origin,
        OutboundGroupSession, RoomKeyShareRecord, ShareError, ShareOutcome, ShareTargets, SharedWith, WithheldCode,
        age_deadline, device_share, room_key_content, rotation_reason, withheld_content,
    },
    olm::{OlmEncryptionError, ToDeviceContent},
    requests::Meta,
    store::Changes,
};

type DevicesByUser = BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, DeviceData>>;

/// Who the room key is for: the users, their devices, and (for the
/// strategies that look at it) each device's trust.
#[derive(Clone, Copy)]
struct Recipients<'a> {
    users: &'a BTreeSet<OwnedUserId>,
    devices: &'a DevicesByUser,
    trust: &'a super::identities::RecipientTrust,
}

/// What the plan phase decided for the current room key.
struct SharePlan {
    session_id: String,
    key_content: serde_json::Value,
    message_index: u32,
    to_share: Vec<DeviceData>,
    to_withhold: Vec<(DeviceData, WithheldCode)>,
    /// Devices already told the key is withheld (no second notice).
    withheld_before: HashSet<(OwnedUserId, OwnedDeviceId)>,
}

impl OlmMachine {
    /// The lock that makes sharing and encrypting in one room single-flight.
    pub(super) fn room_lock(&self, room_id: &RoomId) -> Arc<async_lock::Mutex<()>> {
        lock(&self.inner.rooms).lock(room_id)
    }

    /// Loads our outbound session for `room_id` into the cache if it is not
    /// there. A session an older version saved with its shares inline has
    /// them converted to share rows.
    pub(super) async fn ensure_outbound_loaded(&self, room_id: &RoomId) -> Result<(), StoreError> {
        if lock(&self.inner.groups).outbound.contains_key(room_id) {
            return Ok(());
        }
        let Some(stored) = self.inner.store.get_outbound_group_session(room_id).await? else { return Ok(()) };
        let legacy = !stored.shares_in_records;
        let session = OutboundGroupSession::from_stored(stored);
        if legacy {
            // Rows for the inline shares, and the session rewritten as one
            // whose shares are rows, in one batch: converted once.
            let changes = Changes {
                room_key_shares: session.share_records(),
                outbound_group_sessions: vec![session.to_stored()],
                ..Default::default()
            };
            self.save(None, None, changes).await?;
        }
        lock(&self.inner.rooms).set_age_deadline(room_id, &session.session_id, age_deadline(&session));
        lock(&self.inner.groups).outbound.entry(room_id.to_owned()).or_insert(session);
        Ok(())
    }

    /// Makes sure every device of `users` (except blocked ones, and per the
    /// strategy) holds the room's current key, rotating it first when needed:
    /// on reaching the message count or age limit, when a user it was shared
    /// with is no longer listed, when a device it was shared with was deleted
    /// or blocked, or when the settings changed. New devices of current
    /// members get the current key at its current index.
    ///
    /// Claims nothing: run `get_missing_sessions` first (or use
    /// [`prepare_room`](Self::prepare_room), which does all of it). Devices
    /// without an Olm session get `m.room_key.withheld` (`m.no_olm`). The
    /// to-device requests (at most 250 messages each) are queued and listed
    /// by `outgoing_requests`; the returned copies are the unanswered share
    /// requests of the current key. Until they are acknowledged, a repeat
    /// call returns the same requests, never a second session; a rotation
    /// cancels the requests of the key it replaces.
    pub async fn share_room_key<'a>(
        &self,
        room_id: &RoomId,
        users: impl IntoIterator<Item = &'a UserId>,
        settings: &EncryptionSettings,
        now: Timestamp,
    ) -> Result<Vec<OutgoingRequest>, ShareError> {
        if settings.algorithm != MEGOLM_ALGORITHM {
            return Err(ShareError::UnsupportedAlgorithm(settings.algorithm.clone()));
        }
        let room_lock = self.room_lock(room_id);
        let _single_flight = room_lock.lock().await;

        let users: BTreeSet<OwnedUserId> = users.into_iter().map(ToOwned::to_owned).collect();
        let devices = self.gather_devices(&users).await?;
        let trust = self.recipient_trust(&devices, settings.sharing_strategy).await?;
        self.ensure_outbound_loaded(room_id).await?;
        let mut changes = Changes::default();
        let recipients = Recipients { users: &users, devices: &devices, trust: &trust };
        let mut plan = self.plan_share(room_id, &recipients, settings, now, &mut changes)?;

        let mut sessions = self.inner.sessions.lock().await;
        let (encrypted, failures) = self
            .encrypt_for_devices_into(&mut sessions, &plan.to_share, "m.room_key", &plan.key_content, now, &mut changes)
            .await?;
        for failure in failures {
            if let OlmEncryptionError::NoSession { user_id, device_id } = failure
                && !plan.withheld_before.contains(&(user_id.clone(), device_id.clone()))
                && let Some(device) =
                    plan.to_share.iter().find(|d| d.user_id() == user_id && d.device_id() == device_id)
            {
                plan.to_withhold.push((device.clone(), WithheldCode::NoOlm));
            }
        }
        self.note_sent_to(room_id, &plan.session_id, &encrypted, &mut changes);
        self.save(None, Some(&mut sessions), changes).await?;
        drop(sessions);

        self.queue_room_key_shares(room_id, &plan, encrypted);
        self.queue_withheld_notices(room_id, &plan.session_id, std::mem::take(&mut plan.to_withhold));
        Ok(lock(&self.inner.requests).room_key_share_requests(room_id, &plan.session_id))
    }

    /// Records, in the batch that saves the encrypted shares (before any
    /// request leaves), every device the key is sent toward: if the server
    /// takes a share but the answer is lost (a crash), the share is not
    /// acknowledged, yet the device has the key, and a member who then
    /// leaves must still make the key rotate (found by the network
    /// simulator, seed 5768: the left member read the next message).
    fn note_sent_to(
        &self,
        room_id: &RoomId,
        session_id: &str,
        encrypted: &[(DeviceData, ToDeviceContent)],
        changes: &mut Changes,
    ) {
        if encrypted.is_empty() {
            return;
        }
        let mut groups = lock(&self.inner.groups);
        let Some(session) = groups.outbound.get_mut(room_id).filter(|s| s.session_id == session_id) else { return };
        for (device, _) in encrypted {
            session.sent_to.entry(device.user_id().to_owned()).or_default().insert(device.device_id().to_owned());
        }
        changes.outbound_group_sessions.retain(|s| s.room_id != room_id);
        changes.outbound_group_sessions.push(session.to_stored());
    }

    /// Gather: every known device of each user.
    async fn gather_devices(&self, users: &BTreeSet<OwnedUserId>) -> Result<DevicesByUser, StoreError> {
        let mut devices = BTreeMap::new();
        for user_id in users {
            devices.insert(user_id.clone(), self.inner.store.get_user_devices(user_id).await?);
        }
        Ok(devices)
    }

    /// Plan: rotates the key if needed (the new session goes into
    /// `changes`), then decides what each device gets.
    fn plan_share(
        &self,
        room_id: &RoomId,
        recipients: &Recipients<'_>,
        settings: &EncryptionSettings,
        now: Timestamp,
        changes: &mut Changes,
    ) -> Result<SharePlan, ShareError> {
        let Recipients { users, devices, trust } = *recipients;
        let mut groups = lock(&self.inner.groups);
        let reason = match groups.outbound.get(room_id) {
            None => Some(None),
            Some(session) => {
                let allowed = |device: &DeviceData| {
                    let key = (device.user_id().to_owned(), device.device_id().to_owned());
                    device_share(device, settings.sharing_strategy, false, trust.get(&key)) == DeviceShare::Share
                };
                rotation_reason(session, users, devices, settings, now, &allowed).map(Some)
            }
        };
        if let Some(reason) = reason {
            let (session, own_inbound) = self.new_outbound_session(room_id, settings, now, changes);
            match reason {
                Some(reason) => {
                    tracing::info!(%room_id, session_id = %session.session_id, %reason, "rotated the room key")
                }
                None => tracing::info!(%room_id, session_id = %session.session_id, "created a room key"),
            }
            lock(&self.inner.requests).cancel_room_key_shares(room_id);
            lock(&self.inner.rooms).set_age_deadline(room_id, &session.session_id, age_deadline(&session));
            groups.insert_inbound(own_inbound);
            groups.outbound.insert(room_id.to_owned(), session);
        }
        let Some(session) = groups.outbound.get(room_id) else {
            return Err(ShareError::Store(StoreError::Backend("outbound session vanished".into())));
        };
        let key = session.session_key().to_base64();
        let key_content = room_key_content(room_id, &session.session_id, &key, settings.shared_history());
        let shared = device_pairs(&session.shared_with);
        let withheld_before = device_pairs(&session.withheld_from);
        let in_flight = lock(&self.inner.requests).room_key_share_targets(room_id, &session.session_id);
        let mut to_share = Vec::new();
        let mut to_withhold = Vec::new();
        for device in devices.values().flat_map(BTreeMap::values) {
            let key = (device.user_id().to_owned(), device.device_id().to_owned());
            if shared.contains(&key) || in_flight.contains(&key) {
                continue;
            }
            let is_own = key.0 == self.inner.own.user_id && key.1 == self.inner.own.device_id;
            match device_share(device, settings.sharing_strategy, is_own, trust.get(&key)) {
                DeviceShare::Skip => {}
                DeviceShare::Withhold(_) if withheld_before.contains(&key) => {}
                DeviceShare::Withhold(code) => to_withhold.push((device.clone(), code)),
                DeviceShare::Share => to_share.push(device.clone()),
            }
        }
        Ok(SharePlan {
            session_id: session.session_id.clone(),
            key_content,
            message_index: session.message_index(),
            to_share,
            to_withhold,
            withheld_before,
        })
    }

    /// Queue: the encrypted room keys, at most 250 per request.
    fn queue_room_key_shares(&self, room_id: &RoomId, plan: &SharePlan, encrypted: Vec<(DeviceData, ToDeviceContent)>) {
        for chunk in encrypted.chunks(crate::TO_DEVICE_BATCH) {
            let shared = chunk
                .iter()
                .map(|(d, _)| {
                    let with = SharedWith { curve25519: d.curve25519_key(), message_index: plan.message_index };
                    (d.user_id().to_owned(), d.device_id().to_owned(), with)
                })
                .collect();
            let targets = ShareTargets {
                room_id: room_id.to_owned(),
                session_id: plan.session_id.clone(),
                shared,
                withheld: Vec::new(),
            };
            self.queue_to_device_chunk("m.room.encrypted", chunk, Meta::RoomKeyShare(targets));
        }
    }

    /// Queue: withheld notices, at most 250 per request.
    fn queue_withheld_notices(&self, room_id: &RoomId, session_id: &str, to_withhold: Vec<(DeviceData, WithheldCode)>) {
        let own_key = self.inner.own.curve25519;
        // Serializing a notice cannot fail; one that did would be skipped whole.
        let notices: Vec<(DeviceData, ToDeviceContent, WithheldCode)> = to_withhold
            .into_iter()
            .filter_map(|(device, code)| {
                let content = withheld_content(&code, room_id, session_id, own_key);
                Some((device, Raw::new(&content).ok()?.cast_unchecked(), code))
            })
            .collect();
        for chunk in notices.chunks(crate::TO_DEVICE_BATCH) {
            let targets = ShareTargets {
                room_id: room_id.to_owned(),
                session_id: session_id.to_owned(),
                shared: Vec::new(),
                withheld: chunk
                    .iter()
                    .map(|(d, _, c)| (d.user_id().to_owned(), d.device_id().to_owned(), c.clone()))
                    .collect(),
            };
            let messages: Vec<_> = chunk.iter().map(|(d, content, _)| (d.clone(), content.clone())).collect();
            self.queue_to_device_chunk("m.room_key.withheld", &messages, Meta::RoomKeyShare(targets));
        }
    }

    /// A new outbound session and our own inbound copy of it, both added to `changes`.
    fn new_outbound_session(
        &self,
        room_id: &RoomId,
        settings: &EncryptionSettings,
        now: Timestamp,
        changes: &mut Changes,
    ) -> (OutboundGroupSession, InboundGroupSession) {
        let session = OutboundGroupSession::new(room_id, settings.clone(), now);
        let origin = Origin {
            sender_key: self.inner.own.curve25519,
            sender_ed25519: Some(self.inner.own.ed25519),
            sender_user: Some(self.inner.own.user_id.clone()),
            source: KeySource::Own,
            shared_history: settings.shared_history(),
        };
        let inbound = InboundGroupSession::from_session_key(room_id, &session.session_key(), origin);
        changes.inbound_group_sessions.push(inbound.to_stored());
        changes.outbound_group_sessions.push(session.to_stored());
        (session, inbound)
    }

    /// The server took a share request: save one share row per device it
    /// addressed and record them in memory. Ignored if the room key was
    /// rotated meanwhile.
    pub(super) async fn receive_room_key_share_ack(&self, targets: &ShareTargets) -> Result<(), StoreError> {
        let room_lock = self.room_lock(&targets.room_id);
        let _single_flight = room_lock.lock().await;
        self.ensure_outbound_loaded(&targets.room_id).await?;
        let current = lock(&self.inner.groups)
            .outbound
            .get(&targets.room_id)
            .is_some_and(|session| session.session_id == targets.session_id);
        if !current {
            return Ok(());
        }
        let record = |user_id: &OwnedUserId, device_id: &OwnedDeviceId, outcome| RoomKeyShareRecord {
            room_id: targets.room_id.clone(),
            session_id: targets.session_id.clone(),
            user_id: user_id.clone(),
            device_id: device_id.clone(),
            outcome,
        };
        let shared = targets.shared.iter().map(|(u, d, with)| record(u, d, ShareOutcome::Shared(*with)));
        let withheld = targets.withheld.iter().map(|(u, d, code)| record(u, d, ShareOutcome::Withheld(code.clone())));
        let records: Vec<RoomKeyShareRecord> = shared.chain(withheld).collect();
        self.save(None, None, Changes { room_key_shares: records, ..Default::default() }).await?;
        let mut groups = lock(&self.inner.groups);
        if let Some(session) = groups.outbound.get_mut(&targets.room_id)
            && session.session_id == targets.session_id
        {
            for (user_id, device_id, with) in &targets.shared {
                session.shared_with.entry(user_id.clone()).or_default().insert(device_id.clone(), *with);
            }
            for (user_id, device_id, code) in &targets.withheld {
                session.withheld_from.entry(user_id.clone()).or_default().insert(device_id.clone(), code.clone());
            }
        }
        Ok(())
    }

    /// Forces the next `share_room_key` in the room to create a new key,
    /// and cancels the unanswered shares of the old one.
    pub async fn discard_room_key(&self, room_id: &RoomId) -> Result<bool, StoreError> {
        let room_lock = self.room_lock(room_id);
        let _single_flight = room_lock.lock().await;
        self.ensure_outbound_loaded(room_id).await?;
        let stored = {
            let mut groups = lock(&self.inner.groups);
            let Some(session) = groups.outbound.get_mut(room_id) else { return Ok(false) };
            session.invalidated = true;
            session.to_stored()
        };
        lock(&self.inner.requests).cancel_room_key_shares(room_id);
        lock(&self.inner.rooms).clear_age_deadline(room_id);
        self.save(None, None, Changes { outbound_group_sessions: vec![stored], ..Default::default() }).await?;
        Ok(true)
    }
}

/// Every (user, device) of a per-user device map.
fn device_pairs<V>(map: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, V>>) -> HashSet<(OwnedUserId, OwnedDeviceId)> {
    map.iter().flat_map(|(u, d)| d.keys().map(|d| (u.clone(), d.clone()))).collect()
}
