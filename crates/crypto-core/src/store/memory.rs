//! [`MemoryStore`]: a [`CryptoStore`] that keeps everything in memory.
//!
//! Values are held serialized, as a persistent store would, so that a store
//! round trip is exercised even in memory-only tests. Nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use ruma_common::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Serialize, de::DeserializeOwned};
use vodozemac::Curve25519PublicKey;
use zeroize::Zeroizing;

use super::{
    Changes, CryptoStore, LockRecord, MessageIndexRecord, OlmMessageHash, RoomKeyRef, StoreError, StoreLease,
    StoredAccount, StoredSession, TrackedUser,
};
use crate::{
    devices::DeviceData,
    identities::{PrivateCrossSigningIdentity, UserIdentityData},
    megolm::{RoomKeyShareRecord, StoredInboundGroupSession, StoredOutboundGroupSession, WithheldCode, WithheldInfo},
};

type Bytes = Zeroizing<Vec<u8>>;

/// The acknowledged shares of one room key, by device.
type SharesByDevice = BTreeMap<(OwnedUserId, OwnedDeviceId), RoomKeyShareRecord>;

#[derive(Default)]
struct Tables {
    account: Option<Bytes>,
    /// sender key (base64) -> session id -> session
    sessions: HashMap<String, BTreeMap<String, Bytes>>,
    devices: HashMap<OwnedUserId, BTreeMap<OwnedDeviceId, DeviceData>>,
    tracked_users: BTreeMap<OwnedUserId, TrackedUser>,
    inbound: BTreeMap<(OwnedRoomId, String), Bytes>,
    outbound: HashMap<OwnedRoomId, Bytes>,
    /// room -> (session id, the acknowledged shares of that session by device)
    room_key_shares: HashMap<OwnedRoomId, (String, SharesByDevice)>,
    /// By room, session and the notice's sender.
    withheld: HashMap<(OwnedRoomId, String, OwnedUserId), WithheldInfo>,
    /// By sender and sender key.
    no_olm: HashMap<(OwnedUserId, String), WithheldInfo>,
    /// (room, session) -> index -> (event id, timestamp): room and session
    /// are stored once per session, not once per decrypted event.
    message_indices: HashMap<(OwnedRoomId, String), BTreeMap<u32, (ruma_common::OwnedEventId, u64)>>,
    /// curve25519 key (base64) -> the devices claiming it
    devices_by_curve: HashMap<String, std::collections::BTreeSet<(OwnedUserId, OwnedDeviceId)>>,
    olm_hashes: std::collections::HashSet<OlmMessageHash>,
    custom: HashMap<String, Bytes>,
    next_batch_token: Option<String>,
    identities: HashMap<OwnedUserId, UserIdentityData>,
    private_identity: Option<PrivateCrossSigningIdentity>,
    backup_queue: std::collections::BTreeSet<RoomKeyRef>,
    secrets: HashMap<String, Zeroizing<String>>,
    lock: Option<LockRecord>,
}

impl Tables {
    fn put_device(&mut self, device: DeviceData) {
        let owner = (device.user_id().to_owned(), device.device_id().to_owned());
        self.devices_by_curve.entry(device.curve25519_key().to_base64()).or_default().insert(owner);
        self.devices.entry(device.user_id().to_owned()).or_default().insert(device.device_id().to_owned(), device);
    }

    fn put_outbound(&mut self, room_id: OwnedRoomId, session_id: &str, bytes: Bytes) {
        // A new room key: the shares of the one it replaced are dropped.
        if self.room_key_shares.get(&room_id).is_some_and(|(current, _)| current != session_id) {
            self.room_key_shares.remove(&room_id);
        }
        self.outbound.insert(room_id, bytes);
    }

    fn put_share(&mut self, record: RoomKeyShareRecord) {
        let entry = self.room_key_shares.entry(record.room_id.clone()).or_default();
        if entry.0 != record.session_id {
            *entry = (record.session_id.clone(), BTreeMap::new());
        }
        entry.1.insert((record.user_id.clone(), record.device_id.clone()), record);
    }

    fn put_withheld(&mut self, info: WithheldInfo) {
        match (&info.room_id, &info.session_id) {
            (Some(room_id), Some(session_id)) if info.code != WithheldCode::NoOlm => {
                self.withheld.insert((room_id.clone(), session_id.clone(), info.sender.clone()), info);
            }
            _ => {
                self.no_olm.insert((info.sender.clone(), info.sender_key.to_base64()), info);
            }
        }
    }
}

/// An in-memory [`CryptoStore`]: every key is lost when it is dropped.
#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding the lock cannot leave a half-applied batch:
        // batches are fully encoded before the lock is taken.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// The shared encoding of stored values (see `codec`).
fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Bytes, StoreError> {
    super::encode_value(value).map_err(|e| StoreError::serialization(what, e))
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    super::decode_value(bytes).map_err(|e| StoreError::serialization(what, e))
}

#[async_trait]
impl CryptoStore for MemoryStore {
    async fn load_account(&self) -> Result<Option<StoredAccount>, StoreError> {
        self.tables().account.as_ref().map(|b| decode("account", b)).transpose()
    }

    async fn save_changes(&self, changes: Changes) -> Result<(), StoreError> {
        let Changes {
            account,
            sessions,
            devices,
            tracked_users,
            untracked_users,
            inbound_group_sessions,
            outbound_group_sessions,
            room_key_shares,
            withheld,
            message_indices,
            olm_message_hashes,
            custom_values,
            next_batch_token,
            identities,
            private_identity,
            clear_backup_queue,
            backed_up,
            backup_queue,
            secrets,
            fence,
        } = changes;
        // Encode everything first, so a failure leaves the tables untouched.
        let account = account.map(|a| encode("account", &a)).transpose()?;
        let sessions = sessions
            .iter()
            .map(|s| Ok((s.sender_key.to_base64(), s.session_id.clone(), encode("session", s)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let inbound = inbound_group_sessions
            .iter()
            .map(|s| Ok(((s.room_id.clone(), s.session_id.clone()), encode("inbound group session", s)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let outbound = outbound_group_sessions
            .iter()
            .map(|s| Ok((s.room_id.clone(), s.session_id.clone(), encode("outbound group session", s)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;

        let mut tables = self.tables();
        if let Some(fence) = &fence {
            LockRecord::check(tables.lock.as_ref(), fence)?;
        }
        if let Some(account) = account {
            tables.account = Some(account);
        }
        for (sender_key, session_id, bytes) in sessions {
            tables.sessions.entry(sender_key).or_default().insert(session_id, bytes);
        }
        for device in devices {
            tables.put_device(device);
        }
        for user in tracked_users {
            tables.tracked_users.insert(user.user_id.clone(), user);
        }
        for user in untracked_users {
            tables.tracked_users.remove(&user);
        }
        tables.inbound.extend(inbound);
        for (room_id, session_id, bytes) in outbound {
            tables.put_outbound(room_id, &session_id, bytes);
        }
        for record in room_key_shares {
            tables.put_share(record);
        }
        for info in withheld {
            tables.put_withheld(info);
        }
        for record in message_indices {
            let MessageIndexRecord { room_id, session_id, message_index, event_id, origin_server_ts } = record;
            let session = tables.message_indices.entry((room_id, session_id)).or_default();
            session.insert(message_index, (event_id, origin_server_ts));
        }
        tables.olm_hashes.extend(olm_message_hashes);
        for (name, value) in custom_values {
            tables.custom.insert(name, Zeroizing::new(value));
        }
        for identity in identities {
            tables.identities.insert(identity.user_id().to_owned(), identity);
        }
        if private_identity.is_some() {
            tables.private_identity = private_identity;
        }
        if next_batch_token.is_some() {
            tables.next_batch_token = next_batch_token;
        }
        if clear_backup_queue {
            tables.backup_queue.clear();
        }
        for key in &backed_up {
            tables.backup_queue.remove(key);
        }
        tables.backup_queue.extend(backup_queue);
        for secret in secrets {
            match secret.value {
                Some(value) => tables.secrets.insert(secret.name, value),
                None => tables.secrets.remove(&secret.name),
            };
        }
        Ok(())
    }

    async fn get_backup_queue(&self, limit: usize) -> Result<Vec<RoomKeyRef>, StoreError> {
        Ok(self.tables().backup_queue.iter().take(limit).cloned().collect())
    }

    async fn backup_queue_len(&self) -> Result<usize, StoreError> {
        Ok(self.tables().backup_queue.len())
    }

    async fn get_secret(&self, name: &str) -> Result<Option<Zeroizing<String>>, StoreError> {
        Ok(self.tables().secrets.get(name).cloned())
    }

    async fn try_lock(
        &self,
        holder: &str,
        now: crate::Timestamp,
        lease: std::time::Duration,
    ) -> Result<StoreLease, StoreError> {
        let mut tables = self.tables();
        let record = LockRecord::take(tables.lock.as_ref(), holder, now, lease)?;
        let lease =
            StoreLease { holder: record.holder.clone(), generation: record.generation, expires_at: record.expires_at };
        tables.lock = Some(record);
        Ok(lease)
    }

    async fn unlock(&self, lease: &StoreLease) -> Result<(), StoreError> {
        let mut tables = self.tables();
        if let Some(released) = LockRecord::release(tables.lock.as_ref(), lease) {
            tables.lock = Some(released);
        }
        Ok(())
    }

    async fn get_sessions(&self, sender_key: &Curve25519PublicKey) -> Result<Vec<StoredSession>, StoreError> {
        let tables = self.tables();
        let Some(sessions) = tables.sessions.get(&sender_key.to_base64()) else { return Ok(Vec::new()) };
        sessions.values().map(|b| decode("session", b)).collect()
    }

    async fn get_device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Option<DeviceData>, StoreError> {
        Ok(self.tables().devices.get(user_id).and_then(|d| d.get(device_id)).cloned())
    }

    async fn get_user_devices(&self, user_id: &UserId) -> Result<BTreeMap<OwnedDeviceId, DeviceData>, StoreError> {
        Ok(self.tables().devices.get(user_id).cloned().unwrap_or_default())
    }

    async fn get_devices_by_curve25519(&self, key: &Curve25519PublicKey) -> Result<Vec<DeviceData>, StoreError> {
        let tables = self.tables();
        let Some(owners) = tables.devices_by_curve.get(&key.to_base64()) else { return Ok(Vec::new()) };
        Ok(owners.iter().filter_map(|(u, d)| tables.devices.get(u).and_then(|ds| ds.get(d)).cloned()).collect())
    }

    async fn is_olm_message_known(&self, hash: &OlmMessageHash) -> Result<bool, StoreError> {
        Ok(self.tables().olm_hashes.contains(hash))
    }

    async fn get_custom_value(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tables().custom.get(name).map(|v| v.to_vec()))
    }

    async fn load_tracked_users(&self) -> Result<Vec<TrackedUser>, StoreError> {
        Ok(self.tables().tracked_users.values().cloned().collect())
    }

    async fn get_user_identity(&self, user_id: &UserId) -> Result<Option<UserIdentityData>, StoreError> {
        Ok(self.tables().identities.get(user_id).cloned())
    }

    async fn load_private_identity(&self) -> Result<Option<PrivateCrossSigningIdentity>, StoreError> {
        Ok(self.tables().private_identity.clone())
    }

    async fn load_next_batch_token(&self) -> Result<Option<String>, StoreError> {
        Ok(self.tables().next_batch_token.clone())
    }

    async fn get_inbound_group_session(
        &self,
        room_id: &RoomId,
        session_id: &str,
    ) -> Result<Option<StoredInboundGroupSession>, StoreError> {
        let tables = self.tables();
        let key = (room_id.to_owned(), session_id.to_owned());
        tables.inbound.get(&key).map(|b| decode("inbound group session", b)).transpose()
    }

    async fn get_inbound_group_sessions(
        &self,
        after: Option<(&RoomId, &str)>,
        limit: usize,
    ) -> Result<Vec<StoredInboundGroupSession>, StoreError> {
        use std::ops::Bound;
        let tables = self.tables();
        let start = match after {
            Some((room_id, session_id)) => Bound::Excluded((room_id.to_owned(), session_id.to_owned())),
            None => Bound::Unbounded,
        };
        tables
            .inbound
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(_, b)| decode("inbound group session", b))
            .collect()
    }

    async fn inbound_group_session_count(&self) -> Result<usize, StoreError> {
        Ok(self.tables().inbound.len())
    }

    async fn get_outbound_group_session(
        &self,
        room_id: &RoomId,
    ) -> Result<Option<StoredOutboundGroupSession>, StoreError> {
        let tables = self.tables();
        let Some(bytes) = tables.outbound.get(room_id) else { return Ok(None) };
        let mut session: StoredOutboundGroupSession = decode("outbound group session", bytes)?;
        if let Some((_, records)) = tables.room_key_shares.get(room_id) {
            for record in records.values() {
                session.apply_share_record(record.clone());
            }
        }
        Ok(Some(session))
    }

    async fn get_withheld_info(
        &self,
        room_id: &RoomId,
        session_id: &str,
        sender: &UserId,
    ) -> Result<Option<WithheldInfo>, StoreError> {
        Ok(self.tables().withheld.get(&(room_id.to_owned(), session_id.to_owned(), sender.to_owned())).cloned())
    }

    async fn get_no_olm_notice(
        &self,
        sender: &UserId,
        sender_key: &Curve25519PublicKey,
    ) -> Result<Option<WithheldInfo>, StoreError> {
        Ok(self.tables().no_olm.get(&(sender.to_owned(), sender_key.to_base64())).cloned())
    }

    async fn get_message_index(
        &self,
        room_id: &RoomId,
        session_id: &str,
        message_index: u32,
    ) -> Result<Option<MessageIndexRecord>, StoreError> {
        let key = (room_id.to_owned(), session_id.to_owned());
        let tables = self.tables();
        let first = tables.message_indices.get(&key).and_then(|indices| indices.get(&message_index));
        Ok(first.map(|(event_id, origin_server_ts)| MessageIndexRecord {
            room_id: room_id.to_owned(),
            session_id: session_id.to_owned(),
            message_index,
            event_id: event_id.clone(),
            origin_server_ts: *origin_server_ts,
        }))
    }
}
