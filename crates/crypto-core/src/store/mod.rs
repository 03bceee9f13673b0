//! Storage: the [`CryptoStore`] trait every backend implements, the
//! [`Changes`] batch it saves atomically, and the in-memory [`MemoryStore`].

mod changes;
mod codec;
mod error;
mod fenced;
pub mod lock;
mod memory;
mod types;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use ruma_common::{DeviceId, OwnedDeviceId, RoomId, UserId};
use vodozemac::Curve25519PublicKey;

pub use changes::Changes;
pub use codec::{MAX_JSON_DEPTH, MAX_VALUE_DEPTH, decode_value, encode_value, json_depth};
pub use error::StoreError;
pub(crate) use fenced::FencedStore;
pub use lock::{LockFence, LockRecord, StoreLease};
pub use memory::MemoryStore;
pub use types::{
    MessageIndexRecord, OlmMessageHash, RoomKeyRef, StoredAccount, StoredSecret, StoredSession, TrackedUser,
};

use crate::{
    devices::DeviceData,
    identities::{PrivateCrossSigningIdentity, UserIdentityData},
    megolm::{StoredInboundGroupSession, StoredOutboundGroupSession, WithheldInfo},
};

/// Persistent state of one device's crypto engine.
///
/// Object-safe: the machine holds an `Arc<dyn CryptoStore>`. Every write goes
/// through [`save_changes`](Self::save_changes), which must apply the whole
/// batch atomically. Reads are by key; nothing requires loading everything.
#[async_trait]
pub trait CryptoStore: fmt::Debug + Send + Sync {
    /// The account, or `None` for a new store.
    async fn load_account(&self) -> Result<Option<StoredAccount>, StoreError>;

    /// Applies `changes` atomically: after an error nothing of it is visible.
    /// Every field must be kept, `room_key_shares` included (see
    /// [`get_outbound_group_session`](Self::get_outbound_group_session)); a
    /// new outbound session for a room drops the share rows of the one it
    /// replaces.
    async fn save_changes(&self, changes: Changes) -> Result<(), StoreError>;

    /// All Olm sessions with the device whose curve25519 key is `sender_key`.
    async fn get_sessions(&self, sender_key: &Curve25519PublicKey) -> Result<Vec<StoredSession>, StoreError>;

    /// One device of a user.
    async fn get_device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Option<DeviceData>, StoreError>;

    /// Every known device of a user, including ones marked deleted.
    async fn get_user_devices(&self, user_id: &UserId) -> Result<BTreeMap<OwnedDeviceId, DeviceData>, StoreError>;

    /// Every known device (of any user, deleted ones included) whose
    /// curve25519 key is `key`: normally one, but a hostile user can publish
    /// a device claiming someone else's key.
    async fn get_devices_by_curve25519(&self, key: &Curve25519PublicKey) -> Result<Vec<DeviceData>, StoreError>;

    /// Whether an Olm message with this hash was decrypted before.
    async fn is_olm_message_known(&self, hash: &OlmMessageHash) -> Result<bool, StoreError>;

    /// A named value saved through [`Changes::custom_values`].
    async fn get_custom_value(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every tracked user with its dirty flag.
    async fn load_tracked_users(&self) -> Result<Vec<TrackedUser>, StoreError>;

    /// The sync token saved with the last processed sync.
    async fn load_next_batch_token(&self) -> Result<Option<String>, StoreError>;

    /// One room key by room and session id.
    async fn get_inbound_group_session(
        &self,
        room_id: &RoomId,
        session_id: &str,
    ) -> Result<Option<StoredInboundGroupSession>, StoreError>;

    /// Up to `limit` room keys in a stable order the store defines, starting
    /// after the key `after` names (the last of the previous page): a page,
    /// so a full export never holds every key at once.
    async fn get_inbound_group_sessions(
        &self,
        after: Option<(&RoomId, &str)>,
        limit: usize,
    ) -> Result<Vec<StoredInboundGroupSession>, StoreError>;

    /// How many room keys the store holds.
    async fn inbound_group_session_count(&self) -> Result<usize, StoreError>;

    /// Our outbound room key for a room, with its `shared_with` and
    /// `withheld_from` maps filled from the [`Changes::room_key_shares`]
    /// rows saved for that session (the engine saves the session itself
    /// with empty maps). A store that drops those rows would make the
    /// engine forget who holds the key: a member who left would not cause a
    /// rotation. The conformance suite (`room_key_share_records`) checks it.
    async fn get_outbound_group_session(
        &self,
        room_id: &RoomId,
    ) -> Result<Option<StoredOutboundGroupSession>, StoreError>;

    /// The withheld notice `sender` sent for a room key, if one arrived.
    /// Notices are kept per sender: one from another user about the same
    /// session (sent in the clear, anyone can) neither replaces nor hides it.
    async fn get_withheld_info(
        &self,
        room_id: &RoomId,
        session_id: &str,
        sender: &UserId,
    ) -> Result<Option<WithheldInfo>, StoreError>;

    /// The `m.no_olm` notice `sender` sent from the device with
    /// `sender_key`, if one arrived.
    async fn get_no_olm_notice(
        &self,
        sender: &UserId,
        sender_key: &Curve25519PublicKey,
    ) -> Result<Option<WithheldInfo>, StoreError>;

    /// A user's cross-signing identity, as last saved.
    async fn get_user_identity(&self, user_id: &UserId) -> Result<Option<UserIdentityData>, StoreError>;

    /// Our cross-signing private keys, if any were saved.
    async fn load_private_identity(&self) -> Result<Option<PrivateCrossSigningIdentity>, StoreError>;

    /// Which event first used a Megolm message index.
    async fn get_message_index(
        &self,
        room_id: &RoomId,
        session_id: &str,
        message_index: u32,
    ) -> Result<Option<MessageIndexRecord>, StoreError>;

    /// Up to `limit` room keys waiting to be uploaded to the key backup, in
    /// a stable order the store defines.
    async fn get_backup_queue(&self, limit: usize) -> Result<Vec<RoomKeyRef>, StoreError>;

    /// How many room keys wait to be uploaded to the key backup.
    async fn backup_queue_len(&self) -> Result<usize, StoreError>;

    /// A secret saved through [`Changes::secrets`].
    async fn get_secret(&self, name: &str) -> Result<Option<zeroize::Zeroizing<String>>, StoreError>;

    /// Takes the store lock for `holder` until `now + lease`, or renews it
    /// (see [`lock`]): the lease, whose generation tells whether someone
    /// else held the lock since; [`StoreError::LockHeld`] while another
    /// holder's lease runs. Atomic against every other holder sharing the
    /// store, and against batches fenced by them.
    async fn try_lock(
        &self,
        holder: &str,
        now: crate::Timestamp,
        lease: std::time::Duration,
    ) -> Result<StoreLease, StoreError>;

    /// Lets go of `lease` before it ends, so the next holder need not wait
    /// for it to expire; nothing if it was taken over meanwhile.
    async fn unlock(&self, lease: &StoreLease) -> Result<(), StoreError>;
}
