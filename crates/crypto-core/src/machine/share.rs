//! Sharing our room key: deciding on rotation, choosing recipients, Olm-
//! encrypting `m.room_key` for them, telling the others why not, and
//! recording who has the key once the server acknowledged it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ruma_common::serde::Raw;
use ruma_common::{OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId, TransactionId, UserId};

use super::{OlmMachine, lock, pending::Meta};
use crate::{
    OutgoingRequest, StoreError, Timestamp,
    devices::DeviceData,
    megolm::{
        EncryptionSettings, InboundGroupSession, KeySource, MEGOLM_ALGORITHM, Origin, OutboundGroupSession, ShareError,
        SharedWith, SharingStrategy, WithheldCode, room_key_content, withheld_content,
    },
    olm::OlmEncryptionError,
    store::Changes,
};

/// Who a share request carries the key (or a withheld notice) to.
#[derive(Clone, Debug)]
pub(super) struct ShareTargets {
    pub(super) room_id: OwnedRoomId,
    pub(super) session_id: String,
    pub(super) shared: Vec<(OwnedUserId, OwnedDeviceId, SharedWith)>,
    pub(super) withheld: Vec<(OwnedUserId, OwnedDeviceId, WithheldCode)>,
}

impl OlmMachine {
    /// The lock that makes sharing and encrypting in one room single-flight.
    pub(super) fn room_lock(&self, room_id: &RoomId) -> Arc<async_lock::Mutex<()>> {
        lock(&self.inner.room_locks).entry(room_id.to_owned()).or_default().clone()
    }

    /// Loads our outbound session for `room_id` into the cache if it is not there.
    pub(super) async fn ensure_outbound_loaded(&self, room_id: &RoomId) -> Result<(), StoreError> {
        if lock(&self.inner.groups).outbound.contains_key(room_id) {
            return Ok(());
        }
        if let Some(stored) = self.inner.store.get_outbound_group_session(room_id).await? {
            lock(&self.inner.groups)
                .outbound
                .entry(room_id.to_owned())
                .or_insert(OutboundGroupSession::from_stored(stored));
        }
        Ok(())
    }

    /// Makes sure every device of `users` (except blocked ones, and per the
    /// strategy) holds the room's current key, rotating it first when needed:
    /// on reaching the message count or age limit, when a user it was shared
    /// with is no longer listed, when a device it was shared with was deleted
    /// or blocked, or when the settings changed. New devices of current
    /// members get the current key at its current index.
    ///
    /// Claims nothing: run `get_missing_sessions` first. Devices without an
    /// Olm session get `m.room_key.withheld` (`m.no_olm`). Returns to-device
    /// requests of at most 250 messages; until they are acknowledged, a
    /// repeat call returns the same requests, never a second session.
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
        let mut devices: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, DeviceData>> = BTreeMap::new();
        for user_id in &users {
            devices.insert(user_id.clone(), self.inner.store.get_user_devices(user_id).await?);
        }

        self.ensure_outbound_loaded(room_id).await?;
        let mut changes = Changes::default();
        let (session_id, key_content, index, shared, withheld) = {
            let mut groups = lock(&self.inner.groups);
            let rotate = match groups.outbound.get(room_id) {
                None => true,
                Some(session) => needs_rotation(session, &users, &devices, settings, now),
            };
            if rotate {
                let (session, own_inbound) = self.new_outbound_session(room_id, settings, now, &mut changes);
                tracing::info!(%room_id, session_id = %session.session_id, "created a new room key");
                groups.insert_inbound(own_inbound);
                groups.outbound.insert(room_id.to_owned(), session);
            }
            let Some(session) = groups.outbound.get(room_id) else {
                return Err(ShareError::Store(StoreError::Backend("outbound session vanished".into())));
            };
            let key = session.session_key().to_base64();
            let content = room_key_content(room_id, &session.session_id, &key, settings.shared_history());
            let shared: BTreeSet<(OwnedUserId, OwnedDeviceId)> =
                session.shared_with.iter().flat_map(|(u, d)| d.keys().map(|d| (u.clone(), d.clone()))).collect();
            let withheld: BTreeSet<(OwnedUserId, OwnedDeviceId)> =
                session.withheld_from.iter().flat_map(|(u, d)| d.keys().map(|d| (u.clone(), d.clone()))).collect();
            (session.session_id.clone(), content, session.message_index(), shared, withheld)
        };
        if changes.outbound_group_sessions.is_empty() {
            // No rotation: keep only pending requests of the current session.
        } else {
            lock(&self.inner.pending).drop_room_key_shares(room_id);
        }

        let in_flight = lock(&self.inner.pending).room_key_share_targets(room_id, &session_id);
        let mut to_share = Vec::new();
        let mut to_withhold = Vec::new();
        for device in devices.values().flat_map(BTreeMap::values) {
            let key = (device.user_id().to_owned(), device.device_id().to_owned());
            let is_own_device = key.0 == self.inner.own.user_id && key.1 == self.inner.own.device_id;
            if device.is_deleted() || is_own_device || shared.contains(&key) || in_flight.contains(&key) {
                continue;
            }
            let code = if device.is_blacklisted() {
                Some(WithheldCode::Blacklisted)
            } else if settings.sharing_strategy == SharingStrategy::OnlyTrustedDevices && !device.is_verified() {
                Some(WithheldCode::Unverified)
            } else {
                None
            };
            match code {
                Some(_) if withheld.contains(&key) => {}
                Some(code) => to_withhold.push((device.clone(), code)),
                None => to_share.push(device.clone()),
            }
        }

        let mut sessions = self.inner.sessions.lock().await;
        let (encrypted, failures) = self
            .encrypt_for_devices_into(&mut sessions, &to_share, "m.room_key", &key_content, now, &mut changes)
            .await?;
        for failure in failures {
            if let OlmEncryptionError::NoSession { user_id, device_id } = failure
                && !withheld.contains(&(user_id.clone(), device_id.clone()))
                && let Some(device) = to_share.iter().find(|d| d.user_id() == user_id && d.device_id() == device_id)
            {
                to_withhold.push((device.clone(), WithheldCode::NoOlm));
            }
        }
        self.save(None, Some(&mut sessions), changes).await?;
        drop(sessions);

        let shared_with = SharedWith { curve25519: self.inner.own.curve25519, message_index: index };
        for chunk in encrypted.chunks(crate::TO_DEVICE_BATCH) {
            let targets = ShareTargets {
                room_id: room_id.to_owned(),
                session_id: session_id.clone(),
                shared: chunk
                    .iter()
                    .map(|(d, _)| {
                        let with = SharedWith { curve25519: d.curve25519_key(), ..shared_with };
                        (d.user_id().to_owned(), d.device_id().to_owned(), with)
                    })
                    .collect(),
                withheld: Vec::new(),
            };
            let id = TransactionId::new();
            let request = super::to_device::to_device_request(id.clone(), "m.room.encrypted", chunk);
            self.register_with_id(id, request, Meta::RoomKeyShare(targets), false);
        }
        let own_key = self.inner.own.curve25519;
        // Serializing a notice cannot fail; one that did would be skipped whole.
        let notices: Vec<(DeviceData, super::to_device::ToDeviceContent, WithheldCode)> = to_withhold
            .into_iter()
            .filter_map(|(device, code)| {
                let content = withheld_content(&code, room_id, &session_id, own_key);
                Some((device, Raw::new(&content).ok()?.cast_unchecked(), code))
            })
            .collect();
        for chunk in notices.chunks(crate::TO_DEVICE_BATCH) {
            let targets = ShareTargets {
                room_id: room_id.to_owned(),
                session_id: session_id.clone(),
                shared: Vec::new(),
                withheld: chunk
                    .iter()
                    .map(|(d, _, c)| (d.user_id().to_owned(), d.device_id().to_owned(), c.clone()))
                    .collect(),
            };
            let messages: Vec<_> = chunk.iter().map(|(d, content, _)| (d.clone(), content.clone())).collect();
            let id = TransactionId::new();
            let request = super::to_device::to_device_request(id.clone(), "m.room_key.withheld", &messages);
            self.register_with_id(id, request, Meta::RoomKeyShare(targets), false);
        }
        Ok(lock(&self.inner.pending).room_key_share_requests(room_id, &session_id))
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

    /// The server took a share request: record who now has the key (or was
    /// told it is withheld). Ignored if the room key was rotated meanwhile.
    pub(super) async fn receive_room_key_share_ack(&self, targets: &ShareTargets) -> Result<(), StoreError> {
        let room_lock = self.room_lock(&targets.room_id);
        let _single_flight = room_lock.lock().await;
        self.ensure_outbound_loaded(&targets.room_id).await?;
        let stored = {
            let mut groups = lock(&self.inner.groups);
            let Some(session) = groups.outbound.get_mut(&targets.room_id) else { return Ok(()) };
            if session.session_id != targets.session_id {
                return Ok(());
            }
            for (user_id, device_id, with) in &targets.shared {
                session.shared_with.entry(user_id.clone()).or_default().insert(device_id.clone(), *with);
            }
            for (user_id, device_id, code) in &targets.withheld {
                session.withheld_from.entry(user_id.clone()).or_default().insert(device_id.clone(), code.clone());
            }
            session.to_stored()
        };
        self.save(None, None, Changes { outbound_group_sessions: vec![stored], ..Default::default() }).await
    }

    /// Forces the next `share_room_key` in the room to create a new key.
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
        lock(&self.inner.pending).drop_room_key_shares(room_id);
        self.save(None, None, Changes { outbound_group_sessions: vec![stored], ..Default::default() }).await?;
        Ok(true)
    }
}

/// Whether the room key must be replaced before it is shared further.
fn needs_rotation(
    session: &OutboundGroupSession,
    users: &BTreeSet<OwnedUserId>,
    devices: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, DeviceData>>,
    settings: &EncryptionSettings,
    now: Timestamp,
) -> bool {
    let reason = if session.invalidated {
        Some("discarded")
    } else if session.is_expired(now) {
        Some("rotation period or message count reached")
    } else if session.settings != *settings {
        Some("encryption settings changed")
    } else if session.shared_with.keys().any(|u| !users.contains(u)) {
        Some("a member it was shared with left")
    } else if session.shared_with.iter().any(|(user_id, shared)| {
        shared.keys().any(|device_id| {
            devices.get(user_id).and_then(|d| d.get(device_id)).is_none_or(|d| d.is_deleted() || d.is_blacklisted())
        })
    }) {
        Some("a device it was shared with was deleted or blocked")
    } else {
        None
    };
    if let Some(reason) = reason {
        tracing::info!(room_id = %session.room_id, session_id = %session.session_id, reason, "rotating the room key");
    }
    reason.is_some()
}
