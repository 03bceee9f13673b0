//! [`KvCryptoStore`]: hush's [`CryptoStore`] on any [`KvBackend`].
//!
//! Opening checks, in order: the schema version (newer than this code: an
//! error; older: migrations run), whether the store is encrypted and the
//! secret opens it, and that it belongs to the requested user and device.
//! A store is never reset or overwritten because something did not match.

use std::collections::BTreeMap;

use async_trait::async_trait;
use hush_crypto_core::{
    Changes, CryptoStore, StoreError,
    devices::DeviceData,
    identities::{PrivateCrossSigningIdentity, UserIdentityData},
    megolm::{RoomKeyShareRecord, StoredInboundGroupSession, StoredOutboundGroupSession, WithheldInfo},
    store::{
        LockRecord, MessageIndexRecord, OlmMessageHash, RoomKeyRef, StoreLease, StoredAccount, StoredSession,
        TrackedUser,
    },
};
use ruma_common::{DeviceId, OwnedDeviceId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use vodozemac::Curve25519PublicKey;

use crate::{
    KvBackend, Table, WriteOp,
    cipher::{DEFAULT_KDF_ROUNDS, StoreCipher, StoreSecret, WrappedStoreKey},
    codec::{Codec, cipher_error},
    migrations::{MIGRATIONS, SCHEMA_VERSION, message_index_key},
};

const META_VERSION: &[u8] = b"schema_version";
const META_STORE_KEY: &[u8] = b"store_key";
const META_OWNER: &[u8] = b"owner";
/// The store lock's record (not secret: who holds it, until when).
const META_LOCK: &[u8] = b"lock";

/// The lock record under [`META_LOCK`], if any.
fn decode_lock(bytes: Option<&[u8]>) -> Result<Option<LockRecord>, StoreError> {
    bytes
        .map(hush_crypto_core::store::decode_value::<LockRecord>)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("the store lock record: {e}")))
}

/// The lock record as stored.
fn encode_lock(record: &LockRecord) -> Result<Vec<u8>, StoreError> {
    hush_crypto_core::store::encode_value(record)
        .map(|bytes| bytes.to_vec())
        .map_err(|e| StoreError::serialization("store lock", e))
}

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `None`: a plain store (values readable by anyone with the file).
    /// `Some`: every value encrypted, every table key hashed.
    pub secret: Option<StoreSecret>,
    /// PBKDF2 rounds when a new store is created with a passphrase.
    pub kdf_rounds: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { secret: None, kdf_rounds: DEFAULT_KDF_ROUNDS }
    }
}

impl StoreOptions {
    /// A store encrypted under a passphrase.
    pub fn passphrase(passphrase: &str) -> Self {
        Self { secret: Some(StoreSecret::Passphrase(passphrase.to_owned())), ..Self::default() }
    }

    /// A store encrypted under a raw 32-byte key (no KDF cost).
    pub fn key(key: [u8; 32]) -> Self {
        Self { secret: Some(StoreSecret::Key(key)), ..Self::default() }
    }
}

#[derive(Serialize, Deserialize)]
struct Owner {
    user_id: OwnedUserId,
    device_id: OwnedDeviceId,
}

/// The crypto store of one device on a key-value engine.
#[derive(Debug)]
pub struct KvCryptoStore<B> {
    backend: B,
    codec: std::sync::Arc<Codec>,
}

/// The key material of an opened store (its unwrapped store key, or the
/// fact that it is plain), kept so the same store can be opened again
/// without deriving the passphrase key again (see [`KvCryptoStore::keys`]).
#[derive(Clone, Debug)]
pub struct StoreKeys(std::sync::Arc<Codec>);

impl<B: KvBackend> KvCryptoStore<B> {
    /// Opens (or initializes) the store of `user_id` / `device_id` on `backend`.
    pub fn open(backend: B, user_id: &UserId, device_id: &DeviceId, options: StoreOptions) -> Result<Self, StoreError> {
        // Created meanwhile by another process sharing the store (`None`):
        // opened as it is below.
        if backend.get(Table::Meta, META_VERSION)?.is_none()
            && let Some(codec) = Self::create(&backend, user_id, device_id, &options)?
        {
            return Ok(Self { backend, codec: std::sync::Arc::new(codec) });
        }
        let (store, version) = Self::check(backend, user_id, device_id, &options)?;
        store.migrate(version)?;
        Ok(store)
    }

    /// Runs every check of [`open`](Self::open) on an existing store and
    /// writes nothing (no creation, no migration): for a backend opened
    /// read-only, so that a refused open leaves the files untouched. `None`
    /// for a store that was never initialized (e.g. a first open that failed
    /// after the engine made its file): [`open`](Self::open) creates it.
    pub fn open_checked(
        backend: B,
        user_id: &UserId,
        device_id: &DeviceId,
        options: &StoreOptions,
    ) -> Result<Option<Self>, StoreError> {
        if backend.get(Table::Meta, META_VERSION)?.is_none() {
            return Ok(None);
        }
        Ok(Some(Self::check(backend, user_id, device_id, options)?.0))
    }

    fn check(
        backend: B,
        user_id: &UserId,
        device_id: &DeviceId,
        options: &StoreOptions,
    ) -> Result<(Self, u32), StoreError> {
        let version = match backend.get(Table::Meta, META_VERSION)? {
            None => return Err(StoreError::Corrupt("the store has no schema version".into())),
            Some(bytes) => {
                let bytes: [u8; 4] =
                    bytes.try_into().map_err(|_| StoreError::Corrupt("schema version is not 4 bytes".into()))?;
                u32::from_be_bytes(bytes)
            }
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::UnsupportedSchema { found: version, supported: SCHEMA_VERSION });
        }
        if version == 0 {
            return Err(StoreError::Corrupt("schema version 0".into()));
        }
        let wrapped = backend.get(Table::Meta, META_STORE_KEY)?;
        let codec = match (wrapped, &options.secret) {
            (Some(wrapped), Some(secret)) => {
                let wrapped: WrappedStoreKey = hush_crypto_core::store::decode_value(&wrapped)
                    .map_err(|e| StoreError::Corrupt(format!("wrapped store key: {e}")))?;
                Codec::encrypted(StoreCipher::unwrap(&wrapped, secret).map_err(cipher_error)?)
            }
            (Some(_), None) => return Err(StoreError::PassphraseRequired),
            (None, Some(_)) => return Err(StoreError::NotEncrypted),
            (None, None) => Codec::Plain,
        };
        let store = Self { backend, codec: std::sync::Arc::new(codec) };
        store.check_owner(user_id, device_id)?;
        Ok((store, version))
    }

    /// Writes a new store's meta records: its codec, or `None` if another
    /// process created the store between our look and our write (the write
    /// checks inside the backend's atomic update, so two processes opening a
    /// new shared store at once cannot both create it with different keys).
    pub(crate) fn create(
        backend: &B,
        user_id: &UserId,
        device_id: &DeviceId,
        options: &StoreOptions,
    ) -> Result<Option<Codec>, StoreError> {
        // Data without a schema version is not a new store: refuse to touch
        // it. Unless another process created the store since our look and
        // has written to it already: its version was committed before any
        // data, so it is seen now, and that store is opened instead.
        for table in Table::ALL {
            if backend.count(table)? > 0 {
                if backend.get(Table::Meta, META_VERSION)?.is_some() {
                    return Ok(None);
                }
                return Err(StoreError::Corrupt(format!(
                    "table {} holds data but the store has no schema version",
                    table.name()
                )));
            }
        }
        let mut ops = vec![WriteOp::Put(Table::Meta, META_VERSION.to_vec(), SCHEMA_VERSION.to_be_bytes().to_vec())];
        let codec = match &options.secret {
            Some(secret) => {
                let cipher = StoreCipher::new().map_err(cipher_error)?;
                let wrapped = cipher.wrap(secret, options.kdf_rounds).map_err(cipher_error)?;
                let wrapped =
                    rmp_serde::to_vec_named(&wrapped).map_err(|e| StoreError::serialization("store key", e))?;
                ops.push(WriteOp::Put(Table::Meta, META_STORE_KEY.to_vec(), wrapped));
                Codec::encrypted(cipher)
            }
            None => Codec::Plain,
        };
        let owner = Owner { user_id: user_id.to_owned(), device_id: device_id.to_owned() };
        ops.push(WriteOp::Put(Table::Meta, META_OWNER.to_vec(), codec.seal(Table::Meta, META_OWNER, &owner)?));
        let created = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&created);
        backend.update(
            Table::Meta,
            META_VERSION,
            Box::new(move |current| {
                if current.is_some() {
                    return Ok(Vec::new());
                }
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(ops)
            }),
        )?;
        Ok(created.load(std::sync::atomic::Ordering::SeqCst).then_some(codec))
    }

    fn check_owner(&self, user_id: &UserId, device_id: &DeviceId) -> Result<(), StoreError> {
        let bytes = self.backend.get(Table::Meta, META_OWNER)?.ok_or_else(|| StoreError::Corrupt("no owner".into()))?;
        let owner: Owner = self.codec.open(Table::Meta, META_OWNER, &bytes)?;
        if owner.user_id != user_id || owner.device_id != device_id {
            return Err(StoreError::AccountMismatch {
                store_user_id: owner.user_id.clone(),
                store_device_id: owner.device_id.clone(),
                user_id: user_id.to_owned(),
                device_id: device_id.to_owned(),
            });
        }
        Ok(())
    }

    fn migrate(&self, from: u32) -> Result<(), StoreError> {
        for version in from..SCHEMA_VERSION {
            let migration = MIGRATIONS
                .get(version as usize - 1)
                .ok_or_else(|| StoreError::Corrupt(format!("no migration from version {version}")))?;
            let mut ops = migration(&self.codec, &self.backend)?;
            ops.push(WriteOp::Put(Table::Meta, META_VERSION.to_vec(), (version + 1).to_be_bytes().to_vec()));
            // Applied only if no other process sharing the store migrated
            // this step meanwhile (then its result stands).
            let from = version.to_be_bytes();
            self.backend.update(
                Table::Meta,
                META_VERSION,
                Box::new(move |current| Ok(if current == Some(from.as_slice()) { ops } else { Vec::new() })),
            )?;
            tracing::info!(from = version, to = version + 1, "migrated the crypto store");
        }
        Ok(())
    }

    /// The record encoding (for the migration tests).
    #[cfg(test)]
    pub(crate) fn codec(&self) -> &Codec {
        &self.codec
    }

    /// The engine underneath.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// This store's key material, to open it again with [`open_with_keys`](Self::open_with_keys).
    pub fn keys(&self) -> StoreKeys {
        StoreKeys(std::sync::Arc::clone(&self.codec))
    }

    /// Opens a store this process opened before (with [`open`](Self::open))
    /// on a new handle to its backend, with the key material kept from then:
    /// no passphrase derivation. The schema version (at most this code's,
    /// as the first open left it) and the owner are checked again, and keys
    /// that do not open the store are [`StoreError::WrongPassphrase`].
    pub fn open_with_keys(
        backend: B,
        user_id: &UserId,
        device_id: &DeviceId,
        keys: &StoreKeys,
    ) -> Result<Self, StoreError> {
        let version = backend.get(Table::Meta, META_VERSION)?;
        if version.as_deref() != Some(SCHEMA_VERSION.to_be_bytes().as_slice()) {
            return Err(StoreError::Corrupt("the store's schema version changed since it was first opened".into()));
        }
        let encrypted = backend.get(Table::Meta, META_STORE_KEY)?.is_some();
        match (encrypted, &*keys.0) {
            (true, Codec::Plain) => return Err(StoreError::PassphraseRequired),
            (false, Codec::Encrypted { .. }) => return Err(StoreError::NotEncrypted),
            _ => {}
        }
        let store = Self { backend, codec: std::sync::Arc::clone(&keys.0) };
        store.check_owner(user_id, device_id).map_err(|error| match error {
            StoreError::Corrupt(_) if encrypted => StoreError::WrongPassphrase,
            other => other,
        })?;
        Ok(store)
    }

    fn get<T: serde::de::DeserializeOwned>(&self, table: Table, parts: &[&[u8]]) -> Result<Option<T>, StoreError> {
        self.get_at(table, &self.codec.key(table, parts))
    }

    fn get_at<T: serde::de::DeserializeOwned>(&self, table: Table, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.backend.get(table, key)?.map(|bytes| self.codec.open(table, key, &bytes)).transpose()
    }

    fn scan<T: serde::de::DeserializeOwned>(
        &self,
        table: Table,
        prefix: &[&[u8]],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        let prefix = self.codec.key(table, prefix);
        self.backend
            .scan(table, &prefix, after, limit)?
            .into_iter()
            .map(|(key, bytes)| self.codec.open(table, &key, &bytes))
            .collect()
    }

    fn put<T: Serialize>(
        &self,
        ops: &mut Vec<WriteOp>,
        table: Table,
        parts: &[&[u8]],
        value: &T,
    ) -> Result<(), StoreError> {
        self.put_at(ops, table, self.codec.key(table, parts), value)
    }

    fn put_at<T: Serialize>(
        &self,
        ops: &mut Vec<WriteOp>,
        table: Table,
        key: Vec<u8>,
        value: &T,
    ) -> Result<(), StoreError> {
        let value = self.codec.seal(table, &key, value)?;
        ops.push(WriteOp::Put(table, key, value));
        Ok(())
    }

    /// A withheld notice: by room key and sender, or (`m.no_olm`) by
    /// sender and sender key (see `migrations::withheld_key_parts`).
    fn put_withheld(&self, ops: &mut Vec<WriteOp>, info: &WithheldInfo) -> Result<(), StoreError> {
        let sender_key = info.sender_key.to_base64();
        let (table, parts) = crate::migrations::withheld_key_parts(info, &sender_key);
        self.put(ops, table, &parts, info)
    }

    /// When a room gets a new room key, the share records of the keys it
    /// replaced are deleted.
    fn drop_replaced_shares(
        &self,
        ops: &mut Vec<WriteOp>,
        session: &StoredOutboundGroupSession,
    ) -> Result<(), StoreError> {
        let old: Option<StoredOutboundGroupSession> =
            self.get(Table::OutboundGroupSessions, &[session.room_id.as_bytes()])?;
        if old.is_none_or(|old| old.session_id == session.session_id) {
            return Ok(());
        }
        let prefix = self.codec.key(Table::RoomKeyShares, &[session.room_id.as_bytes()]);
        let current =
            self.codec.key(Table::RoomKeyShares, &[session.room_id.as_bytes(), session.session_id.as_bytes()]);
        for (key, _) in self.backend.scan(Table::RoomKeyShares, &prefix, None, usize::MAX)? {
            if !key.starts_with(&current) {
                ops.push(WriteOp::Delete(Table::RoomKeyShares, key));
            }
        }
        Ok(())
    }

    /// The backup queue's writes, in the order [`Changes`] defines: clear,
    /// then remove, then add (the backend applies a batch in order).
    fn backup_queue_ops(
        &self,
        ops: &mut Vec<WriteOp>,
        clear: bool,
        removed: &[RoomKeyRef],
        added: &[RoomKeyRef],
    ) -> Result<(), StoreError> {
        if clear {
            for (key, _) in self.backend.scan(Table::BackupQueue, &[], None, usize::MAX)? {
                ops.push(WriteOp::Delete(Table::BackupQueue, key));
            }
        }
        for key in removed {
            let parts: [&[u8]; 2] = [key.room_id.as_bytes(), key.session_id.as_bytes()];
            ops.push(WriteOp::Delete(Table::BackupQueue, self.codec.key(Table::BackupQueue, &parts)));
        }
        for key in added {
            let parts: [&[u8]; 2] = [key.room_id.as_bytes(), key.session_id.as_bytes()];
            self.put(ops, Table::BackupQueue, &parts, key)?;
        }
        Ok(())
    }

    fn ops_for(&self, changes: Changes) -> Result<Vec<WriteOp>, StoreError> {
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
            // Taken out by save_changes (checked inside the write).
            fence: _,
        } = changes;
        let mut ops = Vec::new();
        if let Some(account) = account {
            self.put(&mut ops, Table::Account, &[b"account"], &account)?;
        }
        for session in &sessions {
            let sender_key = session.sender_key.to_base64();
            self.put(&mut ops, Table::OlmSessions, &[sender_key.as_bytes(), session.session_id.as_bytes()], session)?;
        }
        for device in &devices {
            let parts: [&[u8]; 2] = [device.user_id().as_bytes(), device.device_id().as_bytes()];
            self.put(&mut ops, Table::Devices, &parts, device)?;
            let curve = device.curve25519_key().to_base64();
            let index: [&[u8]; 3] = [curve.as_bytes(), parts[0], parts[1]];
            let owner = (device.user_id(), device.device_id());
            self.put(&mut ops, Table::DevicesByCurve, &index, &owner)?;
        }
        for user in &tracked_users {
            self.put(&mut ops, Table::TrackedUsers, &[user.user_id.as_bytes()], user)?;
        }
        for user_id in &untracked_users {
            ops.push(WriteOp::Delete(Table::TrackedUsers, self.codec.key(Table::TrackedUsers, &[user_id.as_bytes()])));
        }
        for session in &inbound_group_sessions {
            let parts: [&[u8]; 2] = [session.room_id.as_bytes(), session.session_id.as_bytes()];
            self.put(&mut ops, Table::InboundGroupSessions, &parts, session)?;
        }
        for session in &outbound_group_sessions {
            self.drop_replaced_shares(&mut ops, session)?;
            self.put(&mut ops, Table::OutboundGroupSessions, &[session.room_id.as_bytes()], session)?;
        }
        for record in &room_key_shares {
            let parts: [&[u8]; 4] = [
                record.room_id.as_bytes(),
                record.session_id.as_bytes(),
                record.user_id.as_bytes(),
                record.device_id.as_bytes(),
            ];
            self.put(&mut ops, Table::RoomKeyShares, &parts, record)?;
        }
        for info in &withheld {
            self.put_withheld(&mut ops, info)?;
        }
        for record in &message_indices {
            let key = message_index_key(&self.codec, &record.room_id, &record.session_id, record.message_index);
            self.put_at(&mut ops, Table::MessageIndices, key, record)?;
        }
        for hash in &olm_message_hashes {
            self.put(&mut ops, Table::OlmHashes, &[hash.sender_key.as_bytes(), hash.hash.as_bytes()], &true)?;
        }
        for (name, value) in &custom_values {
            self.put(&mut ops, Table::Custom, &[name.as_bytes()], value)?;
        }
        for identity in &identities {
            self.put(&mut ops, Table::Identities, &[identity.user_id().as_bytes()], identity)?;
        }
        if let Some(private) = &private_identity {
            self.put(&mut ops, Table::PrivateIdentity, &[b"private"], private)?;
        }
        if let Some(token) = next_batch_token {
            self.put(&mut ops, Table::Sync, &[b"next_batch"], &token)?;
        }
        self.backup_queue_ops(&mut ops, clear_backup_queue, &backed_up, &backup_queue)?;
        for secret in &secrets {
            match &secret.value {
                Some(value) => self.put(&mut ops, Table::Secrets, &[secret.name.as_bytes()], value)?,
                None => {
                    ops.push(WriteOp::Delete(Table::Secrets, self.codec.key(Table::Secrets, &[secret.name.as_bytes()])))
                }
            }
        }
        Ok(ops)
    }
}

#[async_trait]
impl<B: KvBackend> CryptoStore for KvCryptoStore<B> {
    async fn load_account(&self) -> Result<Option<StoredAccount>, StoreError> {
        self.get(Table::Account, &[b"account"])
    }

    async fn save_changes(&self, mut changes: Changes) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let fence = changes.fence.take();
        let ops = self.ops_for(changes)?;
        match fence {
            None => self.backend.write(ops),
            Some(fence) => self.backend.update(
                Table::Meta,
                META_LOCK,
                Box::new(move |current| {
                    LockRecord::check(decode_lock(current)?.as_ref(), &fence)?;
                    Ok(ops)
                }),
            ),
        }
    }

    async fn try_lock(
        &self,
        holder: &str,
        now: hush_crypto_core::Timestamp,
        lease: std::time::Duration,
    ) -> Result<StoreLease, StoreError> {
        let taken = std::sync::Arc::new(std::sync::Mutex::new(None));
        let slot = std::sync::Arc::clone(&taken);
        let holder = holder.to_owned();
        self.backend.update(
            Table::Meta,
            META_LOCK,
            Box::new(move |current| {
                let record = LockRecord::take(decode_lock(current)?.as_ref(), &holder, now, lease)?;
                let bytes = encode_lock(&record)?;
                if let Ok(mut slot) = slot.lock() {
                    *slot = Some(StoreLease {
                        holder: record.holder,
                        generation: record.generation,
                        expires_at: record.expires_at,
                    });
                }
                Ok(vec![WriteOp::Put(Table::Meta, META_LOCK.to_vec(), bytes)])
            }),
        )?;
        let lease = taken.lock().ok().and_then(|mut slot| slot.take());
        lease.ok_or_else(|| StoreError::Backend("the lock update did not run".into()))
    }

    async fn unlock(&self, lease: &StoreLease) -> Result<(), StoreError> {
        let lease = lease.clone();
        self.backend.update(
            Table::Meta,
            META_LOCK,
            Box::new(move |current| match LockRecord::release(decode_lock(current)?.as_ref(), &lease) {
                Some(released) => Ok(vec![WriteOp::Put(Table::Meta, META_LOCK.to_vec(), encode_lock(&released)?)]),
                None => Ok(Vec::new()),
            }),
        )
    }

    async fn get_sessions(&self, sender_key: &Curve25519PublicKey) -> Result<Vec<StoredSession>, StoreError> {
        self.scan(Table::OlmSessions, &[sender_key.to_base64().as_bytes()], None, usize::MAX)
    }

    async fn get_device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Option<DeviceData>, StoreError> {
        self.get(Table::Devices, &[user_id.as_bytes(), device_id.as_bytes()])
    }

    async fn get_user_devices(&self, user_id: &UserId) -> Result<BTreeMap<OwnedDeviceId, DeviceData>, StoreError> {
        let devices: Vec<DeviceData> = self.scan(Table::Devices, &[user_id.as_bytes()], None, usize::MAX)?;
        Ok(devices.into_iter().map(|d| (d.device_id().to_owned(), d)).collect())
    }

    async fn get_devices_by_curve25519(&self, key: &Curve25519PublicKey) -> Result<Vec<DeviceData>, StoreError> {
        let owners: Vec<(OwnedUserId, OwnedDeviceId)> =
            self.scan(Table::DevicesByCurve, &[key.to_base64().as_bytes()], None, usize::MAX)?;
        let mut devices = Vec::with_capacity(owners.len());
        for (user_id, device_id) in owners {
            devices.extend(self.get::<DeviceData>(Table::Devices, &[user_id.as_bytes(), device_id.as_bytes()])?);
        }
        Ok(devices)
    }

    async fn is_olm_message_known(&self, hash: &OlmMessageHash) -> Result<bool, StoreError> {
        Ok(self.get::<bool>(Table::OlmHashes, &[hash.sender_key.as_bytes(), hash.hash.as_bytes()])?.is_some())
    }

    async fn get_custom_value(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(Table::Custom, &[name.as_bytes()])
    }

    async fn get_user_identity(&self, user_id: &UserId) -> Result<Option<UserIdentityData>, StoreError> {
        self.get(Table::Identities, &[user_id.as_bytes()])
    }

    async fn load_private_identity(&self) -> Result<Option<PrivateCrossSigningIdentity>, StoreError> {
        self.get(Table::PrivateIdentity, &[b"private"])
    }

    async fn load_tracked_users(&self) -> Result<Vec<TrackedUser>, StoreError> {
        self.scan(Table::TrackedUsers, &[], None, usize::MAX)
    }

    async fn load_next_batch_token(&self) -> Result<Option<String>, StoreError> {
        self.get(Table::Sync, &[b"next_batch"])
    }

    async fn get_inbound_group_session(
        &self,
        room_id: &RoomId,
        session_id: &str,
    ) -> Result<Option<StoredInboundGroupSession>, StoreError> {
        self.get(Table::InboundGroupSessions, &[room_id.as_bytes(), session_id.as_bytes()])
    }

    async fn get_inbound_group_sessions(
        &self,
        after: Option<(&RoomId, &str)>,
        limit: usize,
    ) -> Result<Vec<StoredInboundGroupSession>, StoreError> {
        let after = after
            .map(|(room, session)| self.codec.key(Table::InboundGroupSessions, &[room.as_bytes(), session.as_bytes()]));
        self.scan(Table::InboundGroupSessions, &[], after.as_deref(), limit)
    }

    async fn inbound_group_session_count(&self) -> Result<usize, StoreError> {
        self.backend.count(Table::InboundGroupSessions)
    }

    async fn get_outbound_group_session(
        &self,
        room_id: &RoomId,
    ) -> Result<Option<StoredOutboundGroupSession>, StoreError> {
        let session: Option<StoredOutboundGroupSession> =
            self.get(Table::OutboundGroupSessions, &[room_id.as_bytes()])?;
        let Some(mut session) = session else { return Ok(None) };
        let parts: [&[u8]; 2] = [room_id.as_bytes(), session.session_id.as_bytes()];
        let records: Vec<RoomKeyShareRecord> = self.scan(Table::RoomKeyShares, &parts, None, usize::MAX)?;
        for record in records {
            session.apply_share_record(record);
        }
        Ok(Some(session))
    }

    async fn get_withheld_info(
        &self,
        room_id: &RoomId,
        session_id: &str,
        sender: &UserId,
    ) -> Result<Option<WithheldInfo>, StoreError> {
        self.get(Table::Withheld, &[room_id.as_bytes(), session_id.as_bytes(), sender.as_bytes()])
    }

    async fn get_no_olm_notice(
        &self,
        sender: &UserId,
        sender_key: &Curve25519PublicKey,
    ) -> Result<Option<WithheldInfo>, StoreError> {
        self.get(Table::NoOlm, &[sender.as_bytes(), sender_key.to_base64().as_bytes()])
    }

    async fn get_message_index(
        &self,
        room_id: &RoomId,
        session_id: &str,
        message_index: u32,
    ) -> Result<Option<MessageIndexRecord>, StoreError> {
        self.get_at(Table::MessageIndices, &message_index_key(&self.codec, room_id, session_id, message_index))
    }

    async fn get_backup_queue(&self, limit: usize) -> Result<Vec<RoomKeyRef>, StoreError> {
        self.scan(Table::BackupQueue, &[], None, limit)
    }

    async fn backup_queue_len(&self) -> Result<usize, StoreError> {
        self.backend.count(Table::BackupQueue)
    }

    async fn get_secret(&self, name: &str) -> Result<Option<zeroize::Zeroizing<String>>, StoreError> {
        self.get(Table::Secrets, &[name.as_bytes()])
    }
}
