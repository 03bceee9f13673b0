//! [`OlmMachine`]: the sans-I/O engine one device runs.

mod claim;
mod export;
mod group;
mod group_cache;
mod keys_upload;
mod olm_batch;
mod pending;
mod room_decrypt;
mod room_keys;
mod session_cache;
mod share;
mod sync;
mod to_device;
mod tracking;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ruma_common::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedTransactionId, TransactionId, UserId};
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey};

pub use export::{ImportError, RoomKeyImportResult};
pub use group::{DecryptedRoomEvent, MegolmDecryptionInfo, VerificationState};
pub use room_keys::RoomKeyInfo;
pub use sync::{DeviceListChanges, OlmDecryptionInfo, SyncChanges, SyncOutput, ToDeviceOutcome};
pub use to_device::{TO_DEVICE_BATCH, ToDeviceEncryption};

use self::{
    claim::ClaimState, group_cache::GroupCache, pending::Pending, session_cache::SessionCache, tracking::Tracking,
};
use crate::{
    AnyIncomingResponse, AnyOutgoingRequest, OutgoingRequest, ResponseError, Timestamp,
    devices::{DeviceData, LocalTrust},
    olm::{Account, OwnIdentity},
    signing::SignatureError,
    store::{Changes, CryptoStore, StoreError, TrackedUser},
};

/// Why [`OlmMachine::open`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store holds the account of another user or device.
    #[error(
        "the store belongs to {store_user_id} / {store_device_id}, not {user_id} / {device_id}; \
         open the store that was created for this device, or log in again with the store's device id"
    )]
    AccountMismatch {
        /// The user the store belongs to.
        store_user_id: ruma_common::OwnedUserId,
        /// The device the store belongs to.
        store_device_id: OwnedDeviceId,
        /// The user that was asked for.
        user_id: ruma_common::OwnedUserId,
        /// The device that was asked for.
        device_id: OwnedDeviceId,
    },
    /// Our own device keys could not be signed (cannot happen with valid ids).
    #[error(transparent)]
    Signing(#[from] SignatureError),
}

/// The end-to-end encryption engine of one Matrix device. It performs no I/O:
/// the caller moves bytes between it and the homeserver.
///
/// `OlmMachine` is cheap to clone (an `Arc` inside), `Send` and `Sync`.
/// Concurrent calls are safe: syncs, responses and encryptions that touch Olm
/// sessions are serialized so that no session is used by two tasks at once.
///
/// # Method kinds
///
/// * **Getters** read state: [`user_id`](Self::user_id),
///   [`device_id`](Self::device_id), [`identity_keys`](Self::identity_keys),
///   [`get_device`](Self::get_device), [`get_user_devices`](Self::get_user_devices),
///   [`tracked_users`](Self::tracked_users).
/// * **Inputs** feed what the server said:
///   [`receive_sync_changes`](Self::receive_sync_changes) (one call per sync:
///   to-device events, device-list changes, key counts, the sync token) and
///   [`mark_request_as_sent`](Self::mark_request_as_sent) (the answer to an
///   outgoing request).
/// * **Commands** are the caller's wishes:
///   [`update_tracked_users`](Self::update_tracked_users),
///   [`get_missing_sessions`](Self::get_missing_sessions),
///   [`encrypt_to_device`](Self::encrypt_to_device),
///   [`share_room_key`](Self::share_room_key),
///   [`encrypt_room_event`](Self::encrypt_room_event),
///   [`decrypt_room_event`](Self::decrypt_room_event),
///   [`discard_room_key`](Self::discard_room_key),
///   [`export_room_keys`](Self::export_room_keys),
///   [`import_room_keys`](Self::import_room_keys),
///   [`set_local_trust`](Self::set_local_trust).
/// * **Outputs** are what the caller must send:
///   [`outgoing_requests`](Self::outgoing_requests), plus the requests the
///   commands return.
///
/// Every input and command saves everything it changed in one atomic
/// [`Changes`] batch before it returns (persist before acknowledge): the
/// caller stores its sync token only after `receive_sync_changes` returned.
/// Time-dependent calls take `now`; the machine never reads a clock.
///
/// # Drain order
///
/// After each sync: call `receive_sync_changes`, then send every request from
/// `outgoing_requests` (keys upload, keys queries, queued to-device messages,
/// claims for wedged sessions) and answer each with `mark_request_as_sent`.
/// Before encrypting for users, answer their keys queries first, then send the
/// claim from `get_missing_sessions`, then send the requests `share_room_key`
/// returns, then encrypt. Until answered, a request is listed again
/// by `outgoing_requests` under the same id, so sending it twice is harmless.
#[derive(Clone, Debug)]
pub struct OlmMachine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    own: OwnIdentity,
    store: Arc<dyn CryptoStore>,
    /// Lock order: `account`, then `sessions`, then the std mutexes.
    account: async_lock::Mutex<Account>,
    sessions: async_lock::Mutex<SessionCache>,
    tracking: Mutex<Tracking>,
    pending: Mutex<Pending>,
    claims: Mutex<ClaimState>,
    groups: Mutex<GroupCache>,
    /// Per-room locks: sharing and encrypting in one room are single-flight.
    room_locks: Mutex<HashMap<OwnedRoomId, Arc<async_lock::Mutex<()>>>>,
    /// How many threads CPU-heavy batches may use (see [`OlmMachine::set_worker_threads`]).
    workers: AtomicUsize,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account").field("device_id", &self.device_id()).finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl OlmMachine {
    /// Opens the engine for `user_id` / `device_id` on `store`: loads the
    /// account, or creates and saves a new one (with one-time and fallback keys
    /// ready for upload) if the store is empty.
    pub async fn open(
        user_id: &UserId,
        device_id: &DeviceId,
        store: Arc<dyn CryptoStore>,
        now: Timestamp,
    ) -> Result<Self, OpenError> {
        let account = match store.load_account().await? {
            Some(stored) => {
                if stored.user_id != user_id || stored.device_id != device_id {
                    return Err(OpenError::AccountMismatch {
                        store_user_id: stored.user_id,
                        store_device_id: stored.device_id,
                        user_id: user_id.to_owned(),
                        device_id: device_id.to_owned(),
                    });
                }
                Account::from_stored(stored)
            }
            None => {
                let account = Account::new(user_id.to_owned(), device_id.to_owned(), now);
                let changes = Changes {
                    account: Some(account.to_stored()),
                    // Our own other devices are tracked from the start.
                    tracked_users: vec![TrackedUser { user_id: user_id.to_owned(), dirty: true }],
                    ..Default::default()
                };
                store.save_changes(changes).await?;
                tracing::info!(%user_id, %device_id, "created a new Olm account");
                account
            }
        };
        let own = OwnIdentity {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            ed25519: account.ed25519_key(),
            curve25519: account.curve25519_key(),
            signed_device_keys: account.signed_device_keys()?,
        };
        let tracking = Tracking::from_stored(store.load_tracked_users().await?);
        let claims = ClaimState::from_unwedge_record(store.get_custom_value(claim::UNWEDGE_RECORD).await?.as_deref());
        Ok(Self {
            inner: Arc::new(Inner {
                own,
                store,
                account: async_lock::Mutex::new(account),
                sessions: async_lock::Mutex::new(SessionCache::default()),
                tracking: Mutex::new(tracking),
                pending: Mutex::new(Pending::default()),
                claims: Mutex::new(claims),
                groups: Mutex::new(GroupCache::default()),
                room_locks: Mutex::new(HashMap::new()),
                workers: AtomicUsize::new(crate::parallel::default_workers()),
            }),
        })
    }

    /// Sets how many threads CPU-heavy batches may use: creating Olm
    /// sessions from a `/keys/claim` answer, encrypting a room key for many
    /// devices, decrypting a sync's to-device events or a batch of room
    /// events. The default is the number of cores available to the process;
    /// `1` keeps all work on the calling thread (e.g. where threads are not
    /// available). Small batches always stay on the calling thread.
    pub fn set_worker_threads(&self, threads: usize) {
        self.inner.workers.store(threads.max(1), Ordering::Relaxed);
    }

    fn workers(&self) -> usize {
        self.inner.workers.load(Ordering::Relaxed)
    }

    /// Our user id.
    pub fn user_id(&self) -> &UserId {
        &self.inner.own.user_id
    }

    /// Our device id.
    pub fn device_id(&self) -> &DeviceId {
        &self.inner.own.device_id
    }

    /// Our identity keys: (ed25519 fingerprint key, curve25519 identity key).
    pub fn identity_keys(&self) -> (Ed25519PublicKey, Curve25519PublicKey) {
        (self.inner.own.ed25519, self.inner.own.curve25519)
    }

    /// Our signed device keys, as uploaded.
    pub fn signed_device_keys(&self) -> &serde_json::Value {
        &self.inner.own.signed_device_keys
    }

    /// The store this machine persists to.
    pub fn store(&self) -> &Arc<dyn CryptoStore> {
        &self.inner.store
    }

    /// A known device of a user, or `None`.
    pub async fn get_device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Option<DeviceData>, StoreError> {
        self.inner.store.get_device(user_id, device_id).await
    }

    /// Every known device of a user that the server still lists.
    pub async fn get_user_devices(&self, user_id: &UserId) -> Result<BTreeMap<OwnedDeviceId, DeviceData>, StoreError> {
        let mut devices = self.inner.store.get_user_devices(user_id).await?;
        devices.retain(|_, d| !d.is_deleted());
        Ok(devices)
    }

    /// Records the user's trust decision for a device.
    pub async fn set_local_trust(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        trust: LocalTrust,
    ) -> Result<bool, StoreError> {
        let Some(mut device) = self.inner.store.get_device(user_id, device_id).await? else { return Ok(false) };
        device.set_local_trust(trust);
        self.inner.store.save_changes(Changes { devices: vec![device], ..Default::default() }).await?;
        Ok(true)
    }

    /// Every request waiting to be sent: a keys upload if the server lacks
    /// keys, keys queries for users whose device lists are outdated (at most
    /// 250 users each), queued to-device messages, and claims that will
    /// replace wedged sessions. Requests not yet answered are listed again
    /// with the same id.
    pub async fn outgoing_requests(&self, now: Timestamp) -> Result<Vec<OutgoingRequest>, StoreError> {
        self.ensure_keys_upload_listed().await?;
        self.ensure_keys_queries_listed();
        self.ensure_unwedging_claim_listed(now).await?;
        Ok(lock(&self.inner.pending).listed())
    }

    /// Hands back the homeserver's answer to the request with `request_id`,
    /// and saves what it changes.
    pub async fn mark_request_as_sent<'a>(
        &self,
        request_id: &TransactionId,
        response: impl Into<AnyIncomingResponse<'a>>,
        now: Timestamp,
    ) -> Result<(), ResponseError> {
        let response = response.into();
        let entry = lock(&self.inner.pending)
            .get(request_id)
            .ok_or_else(|| ResponseError::UnknownRequest(request_id.to_owned()))?;
        let expected = entry.request.request().kind();
        if expected != response.kind() {
            return Err(ResponseError::KindMismatch { id: request_id.to_owned(), expected, found: response.kind() });
        }
        match (&entry.request.request(), response) {
            (AnyOutgoingRequest::KeysUpload(_), AnyIncomingResponse::KeysUpload(r)) => {
                self.receive_keys_upload_response(r).await?
            }
            (AnyOutgoingRequest::KeysQuery(_), AnyIncomingResponse::KeysQuery(r)) => {
                self.receive_keys_query_response(&entry.meta, r).await?
            }
            (AnyOutgoingRequest::KeysClaim(_), AnyIncomingResponse::KeysClaim(r)) => {
                self.receive_keys_claim_response(&entry.meta, r, now).await?
            }
            (AnyOutgoingRequest::ToDevice(_), AnyIncomingResponse::ToDevice(_)) => {
                if let pending::Meta::RoomKeyShare(targets) = &*entry.meta {
                    self.receive_room_key_share_ack(targets).await?;
                }
            }
            _ => {}
        }
        lock(&self.inner.pending).remove(request_id);
        Ok(())
    }

    fn register(&self, request: AnyOutgoingRequest, meta: pending::Meta, listed: bool) -> OutgoingRequest {
        let request = OutgoingRequest::new(request);
        lock(&self.inner.pending).insert(request.clone(), meta, listed);
        request
    }

    fn register_with_id(
        &self,
        id: OwnedTransactionId,
        request: AnyOutgoingRequest,
        meta: pending::Meta,
        listed: bool,
    ) -> OutgoingRequest {
        let request = OutgoingRequest::with_id(id, request);
        lock(&self.inner.pending).insert(request.clone(), meta, listed);
        request
    }

    /// Saves `changes`. On failure the in-memory caches are dropped and the
    /// account reloaded, so memory never runs ahead of the store.
    async fn save(
        &self,
        account: Option<&mut Account>,
        sessions: Option<&mut SessionCache>,
        changes: Changes,
    ) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        match self.inner.store.save_changes(changes).await {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::error!(%error, "saving changes failed; reloading state from the store");
                lock(&self.inner.groups).clear();
                if let Some(sessions) = sessions {
                    sessions.clear();
                }
                if let Some(account) = account
                    && let Ok(Some(stored)) = self.inner.store.load_account().await
                {
                    *account = Account::from_stored(stored);
                }
                Err(error)
            }
        }
    }
}
