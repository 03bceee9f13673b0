//! [`SharedStore`]: a store file that several processes share through the
//! store lock, for engines whose file only one process may open at a time
//! (redb and sled lock their files).
//!
//! The lock cannot live in the store itself there: a process that wants it
//! could not open the store to read it while another holds the file. So the
//! lease record (see `hush_crypto_core::store::lock`) is kept in a small
//! lock file beside the store, read and written under an OS file lock
//! (`flock`), which makes each take, release and fence check atomic across
//! processes. The store is open only while this process holds the lease:
//! taking the lock opens it (if the previous holder still has it open, the
//! lock is not free yet), releasing closes it before the lease is marked
//! released. A holder that is killed loses its file handle at once, and its
//! lease runs out as any other. A fenced batch is written with the lock
//! file held, so no other process can take the lease between the check and
//! the write. Reads while the lease is not held open the store for the
//! read alone (and fail while another process holds it).
//!
//! The passphrase key is derived once, on the first open; later opens reuse
//! the unlocked key material ([`StoreKeys`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use hush_crypto_core::{
    Changes, CryptoStore, StoreError, Timestamp,
    devices::DeviceData,
    identities::{PrivateCrossSigningIdentity, UserIdentityData},
    megolm::{StoredInboundGroupSession, StoredOutboundGroupSession, WithheldInfo},
    store::{
        LockRecord, MessageIndexRecord, OlmMessageHash, RoomKeyRef, StoreLease, StoredAccount, StoredSession,
        TrackedUser,
    },
};
use ruma_common::{DeviceId, OwnedDeviceId, OwnedUserId, RoomId, UserId};
use vodozemac::Curve25519PublicKey;

use crate::{KvBackend, KvCryptoStore, StoreKeys, StoreOptions};

/// Opens the storage engine's file (a new handle each time).
pub type OpenBackend<B> = Box<dyn Fn() -> Result<B, StoreError> + Send + Sync>;

/// A crypto store shared by several processes through the store lock.
pub struct SharedStore<B: KvBackend> {
    lock_path: PathBuf,
    open_backend: OpenBackend<B>,
    user_id: OwnedUserId,
    device_id: OwnedDeviceId,
    options: StoreOptions,
    keys: Mutex<Option<StoreKeys>>,
    /// The store, open while this process holds the lease.
    held: Mutex<Option<Arc<KvCryptoStore<B>>>>,
}

impl<B: KvBackend> std::fmt::Debug for SharedStore<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore").field("lock_path", &self.lock_path).finish_non_exhaustive()
    }
}

fn io_error(what: &str, error: &std::io::Error) -> StoreError {
    StoreError::Backend(format!("store lock file: {what}: {error}"))
}

/// The lock file, held under an exclusive OS lock until dropped.
struct LockFile(File);

impl LockFile {
    fn read(&mut self) -> Result<Option<LockRecord>, StoreError> {
        let mut bytes = Vec::new();
        self.0.seek(SeekFrom::Start(0)).map_err(|e| io_error("seek", &e))?;
        self.0.read_to_end(&mut bytes).map_err(|e| io_error("read", &e))?;
        if bytes.is_empty() {
            return Ok(None);
        }
        hush_crypto_core::store::decode_value(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("the store lock file: {e}")))
    }

    fn write(&mut self, record: &LockRecord) -> Result<(), StoreError> {
        let bytes = hush_crypto_core::store::encode_value(record).map_err(|e| StoreError::serialization("lock", e))?;
        self.0.set_len(0).map_err(|e| io_error("truncate", &e))?;
        self.0.seek(SeekFrom::Start(0)).map_err(|e| io_error("seek", &e))?;
        self.0.write_all(&bytes).map_err(|e| io_error("write", &e))?;
        self.0.sync_all().map_err(|e| io_error("sync", &e))
    }
}

impl<B: KvBackend> SharedStore<B> {
    /// A shared store of `user_id` / `device_id`: `open_backend` opens the
    /// engine's file, `lock_path` names the lock file beside it. Nothing is
    /// opened here (another process may hold the file): a wrong passphrase,
    /// another device's store or a newer schema are refused by the first
    /// call that opens it, normally the first [`CryptoStore::try_lock`].
    pub fn new(
        lock_path: PathBuf,
        user_id: &UserId,
        device_id: &DeviceId,
        options: StoreOptions,
        open_backend: OpenBackend<B>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            lock_path,
            open_backend,
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            options,
            keys: Mutex::new(None),
            held: Mutex::new(None),
        })
    }

    fn lock_file(&self) -> Result<LockFile, StoreError> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock_path)
            .map_err(|e| io_error("open", &e))?;
        file.lock().map_err(|e| io_error("lock", &e))?;
        Ok(LockFile(file))
    }

    /// Opens the store file: the first time with the passphrase, later with
    /// the key material from then.
    fn open_store(&self) -> Result<KvCryptoStore<B>, StoreError> {
        let backend = (self.open_backend)()?;
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        match keys.as_ref() {
            Some(keys) => KvCryptoStore::open_with_keys(backend, &self.user_id, &self.device_id, keys),
            None => {
                let store = KvCryptoStore::open(backend, &self.user_id, &self.device_id, self.options.clone())?;
                *keys = Some(store.keys());
                Ok(store)
            }
        }
    }

    /// The store: the one open under the lease, or opened for this call.
    fn handle(&self) -> Result<Arc<KvCryptoStore<B>>, StoreError> {
        if let Some(store) = self.held.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            return Ok(Arc::clone(store));
        }
        Ok(Arc::new(self.open_store()?))
    }

    fn close(&self) {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

#[async_trait]
impl<B: KvBackend + 'static> CryptoStore for SharedStore<B> {
    async fn try_lock(&self, holder: &str, now: Timestamp, lease: Duration) -> Result<StoreLease, StoreError> {
        let mut file = self.lock_file()?;
        let current = file.read()?;
        let record = LockRecord::take(current.as_ref(), holder, now, lease)?;
        {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            if held.is_none() {
                match self.open_store() {
                    Ok(store) => *held = Some(Arc::new(store)),
                    // The previous holder's lease ended, but it still has the file open.
                    Err(error) => match current {
                        Some(previous) if previous.holder != holder => {
                            tracing::debug!(%error, "the previous holder still has the store open");
                            return Err(StoreError::LockHeld {
                                holder: previous.holder,
                                expires_at: previous.expires_at,
                            });
                        }
                        // A read of ours or of another process has it open for
                        // a moment: not free yet.
                        _ if matches!(error, StoreError::Backend(_)) => {
                            tracing::debug!(%error, "the store file is open elsewhere for now");
                            return Err(StoreError::LockHeld { holder: holder.to_owned(), expires_at: now });
                        }
                        _ => return Err(error),
                    },
                }
            }
        }
        file.write(&record)?;
        Ok(StoreLease { holder: record.holder, generation: record.generation, expires_at: record.expires_at })
    }

    async fn unlock(&self, lease: &StoreLease) -> Result<(), StoreError> {
        let mut file = self.lock_file()?;
        // Closed before the lease is marked released, so the next holder can open it.
        self.close();
        if let Some(released) = LockRecord::release(file.read()?.as_ref(), lease) {
            file.write(&released)?;
        }
        Ok(())
    }

    async fn save_changes(&self, mut changes: Changes) -> Result<(), StoreError> {
        let Some(fence) = changes.fence.take() else { return self.handle()?.save_changes(changes).await };
        // Held until the batch is written: nobody takes the lease in between.
        let mut file = self.lock_file()?;
        if let Err(lost) = LockRecord::check(file.read()?.as_ref(), &fence) {
            self.close();
            return Err(lost);
        }
        let result = self.handle()?.save_changes(changes).await;
        drop(file);
        result
    }

    async fn load_account(&self) -> Result<Option<StoredAccount>, StoreError> {
        self.handle()?.load_account().await
    }

    async fn get_sessions(&self, sender_key: &Curve25519PublicKey) -> Result<Vec<StoredSession>, StoreError> {
        self.handle()?.get_sessions(sender_key).await
    }

    async fn get_device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Option<DeviceData>, StoreError> {
        self.handle()?.get_device(user_id, device_id).await
    }

    async fn get_user_devices(&self, user_id: &UserId) -> Result<BTreeMap<OwnedDeviceId, DeviceData>, StoreError> {
        self.handle()?.get_user_devices(user_id).await
    }

    async fn get_devices_by_curve25519(&self, key: &Curve25519PublicKey) -> Result<Vec<DeviceData>, StoreError> {
        self.handle()?.get_devices_by_curve25519(key).await
    }

    async fn is_olm_message_known(&self, hash: &OlmMessageHash) -> Result<bool, StoreError> {
        self.handle()?.is_olm_message_known(hash).await
    }

    async fn get_custom_value(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.handle()?.get_custom_value(name).await
    }

    async fn load_tracked_users(&self) -> Result<Vec<TrackedUser>, StoreError> {
        self.handle()?.load_tracked_users().await
    }

    async fn load_next_batch_token(&self) -> Result<Option<String>, StoreError> {
        self.handle()?.load_next_batch_token().await
    }

    async fn get_inbound_group_session(
        &self,
        room_id: &RoomId,
        session_id: &str,
    ) -> Result<Option<StoredInboundGroupSession>, StoreError> {
        self.handle()?.get_inbound_group_session(room_id, session_id).await
    }

    async fn get_inbound_group_sessions(
        &self,
        after: Option<(&RoomId, &str)>,
        limit: usize,
    ) -> Result<Vec<StoredInboundGroupSession>, StoreError> {
        self.handle()?.get_inbound_group_sessions(after, limit).await
    }

    async fn inbound_group_session_count(&self) -> Result<usize, StoreError> {
        self.handle()?.inbound_group_session_count().await
    }

    async fn get_outbound_group_session(
        &self,
        room_id: &RoomId,
    ) -> Result<Option<StoredOutboundGroupSession>, StoreError> {
        self.handle()?.get_outbound_group_session(room_id).await
    }

    async fn get_withheld_info(
        &self,
        room_id: &RoomId,
        session_id: &str,
        sender: &UserId,
    ) -> Result<Option<WithheldInfo>, StoreError> {
        self.handle()?.get_withheld_info(room_id, session_id, sender).await
    }

    async fn get_no_olm_notice(
        &self,
        sender: &UserId,
        sender_key: &Curve25519PublicKey,
    ) -> Result<Option<WithheldInfo>, StoreError> {
        self.handle()?.get_no_olm_notice(sender, sender_key).await
    }

    async fn get_user_identity(&self, user_id: &UserId) -> Result<Option<UserIdentityData>, StoreError> {
        self.handle()?.get_user_identity(user_id).await
    }

    async fn load_private_identity(&self) -> Result<Option<PrivateCrossSigningIdentity>, StoreError> {
        self.handle()?.load_private_identity().await
    }

    async fn get_message_index(
        &self,
        room_id: &RoomId,
        session_id: &str,
        message_index: u32,
    ) -> Result<Option<MessageIndexRecord>, StoreError> {
        self.handle()?.get_message_index(room_id, session_id, message_index).await
    }

    async fn get_backup_queue(&self, limit: usize) -> Result<Vec<RoomKeyRef>, StoreError> {
        self.handle()?.get_backup_queue(limit).await
    }

    async fn backup_queue_len(&self) -> Result<usize, StoreError> {
        self.handle()?.backup_queue_len().await
    }

    async fn get_secret(&self, name: &str) -> Result<Option<zeroize::Zeroizing<String>>, StoreError> {
        self.handle()?.get_secret(name).await
    }
}
