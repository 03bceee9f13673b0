//! [`FencedStore`]: the store as the engine writes to it once it shares the
//! store through the lock. Every batch it saves carries the fence of the
//! engine's lease, so no write path (there are many: syncs, backups,
//! gossip, verification) can forget it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use ruma_common::{DeviceId, OwnedDeviceId, RoomId, UserId};
use vodozemac::Curve25519PublicKey;

use super::{
    Changes, CryptoStore, LockFence, MessageIndexRecord, OlmMessageHash, RoomKeyRef, StoreError, StoreLease,
    StoredAccount, StoredSession, TrackedUser,
};
use crate::{
    Timestamp,
    devices::DeviceData,
    identities::{PrivateCrossSigningIdentity, UserIdentityData},
    megolm::{StoredInboundGroupSession, StoredOutboundGroupSession, WithheldInfo},
};

/// A store that fences every batch with the lease set on it.
#[derive(Debug)]
pub(crate) struct FencedStore {
    inner: Arc<dyn CryptoStore>,
    /// The fence of the last lease taken; kept after a release, so a batch
    /// written later still fails if someone else took the lock meanwhile.
    fence: Mutex<Option<LockFence>>,
}

impl FencedStore {
    pub(crate) fn new(inner: Arc<dyn CryptoStore>) -> Self {
        Self { inner, fence: Mutex::new(None) }
    }

    /// Fences every later batch with `lease`.
    pub(crate) fn set_lease(&self, lease: &StoreLease) {
        *self.fence.lock().unwrap_or_else(PoisonError::into_inner) = Some(lease.fence());
    }

    /// The generation of the last lease taken, if any.
    pub(crate) fn generation(&self) -> Option<u64> {
        self.fence.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(|f| f.generation)
    }
}

#[async_trait]
impl CryptoStore for FencedStore {
    async fn load_account(&self) -> Result<Option<StoredAccount>, StoreError> {
        self.inner.load_account().await
    }

    async fn save_changes(&self, mut changes: Changes) -> Result<(), StoreError> {
        if changes.fence.is_none() {
            changes.fence = self.fence.lock().unwrap_or_else(PoisonError::into_inner).clone();
        }
        self.inner.save_changes(changes).await
    }

    async fn get_sessions(&self, sender_key: &Curve25519PublicKey) -> Result<Vec<StoredSession>, StoreError> {
        self.inner.get_sessions(sender_key).await
    }

    async fn get_device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Option<DeviceData>, StoreError> {
        self.inner.get_device(user_id, device_id).await
    }

    async fn get_user_devices(&self, user_id: &UserId) -> Result<BTreeMap<OwnedDeviceId, DeviceData>, StoreError> {
        self.inner.get_user_devices(user_id).await
    }

    async fn get_devices_by_curve25519(&self, key: &Curve25519PublicKey) -> Result<Vec<DeviceData>, StoreError> {
        self.inner.get_devices_by_curve25519(key).await
    }

    async fn is_olm_message_known(&self, hash: &OlmMessageHash) -> Result<bool, StoreError> {
        self.inner.is_olm_message_known(hash).await
    }

    async fn get_custom_value(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_custom_value(name).await
    }

    async fn load_tracked_users(&self) -> Result<Vec<TrackedUser>, StoreError> {
        self.inner.load_tracked_users().await
    }

    async fn load_next_batch_token(&self) -> Result<Option<String>, StoreError> {
        self.inner.load_next_batch_token().await
    }

    async fn get_inbound_group_session(
        &self,
        room_id: &RoomId,
        session_id: &str,
    ) -> Result<Option<StoredInboundGroupSession>, StoreError> {
        self.inner.get_inbound_group_session(room_id, session_id).await
    }

    async fn get_inbound_group_sessions(
        &self,
        after: Option<(&RoomId, &str)>,
        limit: usize,
    ) -> Result<Vec<StoredInboundGroupSession>, StoreError> {
        self.inner.get_inbound_group_sessions(after, limit).await
    }

    async fn inbound_group_session_count(&self) -> Result<usize, StoreError> {
        self.inner.inbound_group_session_count().await
    }

    async fn get_outbound_group_session(
        &self,
        room_id: &RoomId,
    ) -> Result<Option<StoredOutboundGroupSession>, StoreError> {
        self.inner.get_outbound_group_session(room_id).await
    }

    async fn get_withheld_info(
        &self,
        room_id: &RoomId,
        session_id: &str,
        sender: &UserId,
    ) -> Result<Option<WithheldInfo>, StoreError> {
        self.inner.get_withheld_info(room_id, session_id, sender).await
    }

    async fn get_no_olm_notice(
        &self,
        sender: &UserId,
        sender_key: &Curve25519PublicKey,
    ) -> Result<Option<WithheldInfo>, StoreError> {
        self.inner.get_no_olm_notice(sender, sender_key).await
    }

    async fn get_user_identity(&self, user_id: &UserId) -> Result<Option<UserIdentityData>, StoreError> {
        self.inner.get_user_identity(user_id).await
    }

    async fn load_private_identity(&self) -> Result<Option<PrivateCrossSigningIdentity>, StoreError> {
        self.inner.load_private_identity().await
    }

    async fn get_message_index(
        &self,
        room_id: &RoomId,
        session_id: &str,
        message_index: u32,
    ) -> Result<Option<MessageIndexRecord>, StoreError> {
        self.inner.get_message_index(room_id, session_id, message_index).await
    }

    async fn get_backup_queue(&self, limit: usize) -> Result<Vec<RoomKeyRef>, StoreError> {
        self.inner.get_backup_queue(limit).await
    }

    async fn backup_queue_len(&self) -> Result<usize, StoreError> {
        self.inner.backup_queue_len().await
    }

    async fn get_secret(&self, name: &str) -> Result<Option<zeroize::Zeroizing<String>>, StoreError> {
        self.inner.get_secret(name).await
    }

    async fn try_lock(&self, holder: &str, now: Timestamp, lease: Duration) -> Result<StoreLease, StoreError> {
        self.inner.try_lock(holder, now, lease).await
    }

    async fn unlock(&self, lease: &StoreLease) -> Result<(), StoreError> {
        self.inner.unlock(lease).await
    }
}
