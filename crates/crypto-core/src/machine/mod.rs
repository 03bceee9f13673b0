//! [`OlmMachine`]: the sans-I/O engine one device runs. This module only
//! routes: inputs and commands go to the concern that owns the rule
//! (`olm/`, `megolm/`, `devices/`, `requests/`), and each input's changes
//! are collected into one [`Changes`] batch and saved before it returns.

mod backup;
mod claim;
mod export;
mod gossip;
mod group;
mod identities;
mod keys_query;
mod keys_upload;
mod olm_batch;
mod pending;
mod room;
mod room_decrypt;
mod room_keys;
mod rooms;
mod secrets;
mod share;
mod store_lock;
mod sync;
mod timers;
mod to_device;
mod utd;
mod verification;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ruma_common::{DeviceId, OwnedDeviceId, TransactionId, UserId};
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey};

pub use crate::megolm::{DecryptedRoomEvent, MegolmDecryptionInfo, VerificationState};
pub use crate::olm::OneTimeKeyCounts;
pub use crate::olm::{OlmDecryptionInfo, ToDeviceOutcome};
pub use backup::BackupError;
pub use export::{ImportError, RoomKeyImportResult};
pub use room::{RoomInfo, RoomReadiness};
pub use secrets::{BackupKeyRecovery, RecoveredSecrets, RecoveryError};
pub use store_lock::StoreLockOutcome;
pub use sync::{DeviceListChanges, SyncChanges, SyncOutput};
pub use to_device::{TO_DEVICE_BATCH, ToDeviceEncryption};

use self::rooms::RoomRegistry;
use crate::{
    AnyIncomingResponse, AnyOutgoingRequest, OutgoingRequest, RequestRefusal, ResponseError, Timestamp,
    devices::{DeviceData, DeviceTracker, LocalTrust, QUERY_RETRY_RECORD},
    events::{EngineEvent, EventQueue},
    identities::PrivateCrossSigningIdentity,
    megolm::GroupCache,
    olm::{Account, CLAIMS_RECORD, ClaimState, LEGACY_UNWEDGE_RECORD, OwnIdentity, SessionCache},
    requests::{IdSource, Meta, RequestQueue},
    signing::SignatureError,
    store::{Changes, CryptoStore, StoreError, TrackedUser},
};

/// Why [`OlmMachine::open`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Our own device keys could not be signed (cannot happen with valid ids).
    #[error(transparent)]
    Signing(#[from] SignatureError),
}

/// The end-to-end encryption engine of one Matrix device. It performs no I/O:
/// the caller moves bytes between it and the homeserver.
///
/// `OlmMachine` is cheap to clone (an `Arc` inside), `Send` and `Sync`.
/// Concurrent calls are safe: syncs, responses and encryptions that touch Olm
/// sessions are serialized so that no session is used by two tasks at once,
/// and sharing and encrypting in one room are single-flight.
///
/// # Method kinds
///
/// * **Inputs** say what the server said:
///   [`receive_sync_changes`](Self::receive_sync_changes) (one call per
///   sync), [`mark_request_as_sent`](Self::mark_request_as_sent) (the
///   answer to a queued request) and
///   [`mark_request_as_refused`](Self::mark_request_as_refused) (a refusal
///   that is an answer: a backup version or key not found).
/// * **Time** is an input too: [`poll_timeout`](Self::poll_timeout) names the
///   next deadline, [`handle_timeout`](Self::handle_timeout) runs what is due.
/// * **The room-level command** [`prepare_room`](Self::prepare_room) owns the
///   whole query → claim → share choreography for a room and says when the
///   room is ready for [`encrypt_room_event`](Self::encrypt_room_event).
/// * **Low-level commands**, for embedders who choreograph themselves:
///   [`update_tracked_users`](Self::update_tracked_users),
///   [`get_missing_sessions`](Self::get_missing_sessions),
///   [`share_room_key`](Self::share_room_key),
///   [`encrypt_to_device`](Self::encrypt_to_device),
///   [`discard_room_key`](Self::discard_room_key); and the others:
///   [`decrypt_room_event`](Self::decrypt_room_event) /
///   [`decrypt_room_events`](Self::decrypt_room_events),
///   [`export_room_keys`](Self::export_room_keys),
///   [`import_room_keys`](Self::import_room_keys),
///   [`set_local_trust`](Self::set_local_trust).
/// * **Healing** (`utd::pending`) needs no calls: every room-event
///   decryption keeps the events that may still heal, and `handle_timeout`
///   decrypts them again when a key of theirs was stored or their sender
///   changed, asks our other devices for missing keys and looks them up in
///   the backup (requests the drive loop sends, a 404 handed back with
///   [`mark_request_as_refused`](Self::mark_request_as_refused)); each
///   event that decrypts late is announced once as
///   [`EngineEvent::LateDecryption`].
///   [`pending_decryption_count`](Self::pending_decryption_count) reads the
///   registry.
/// * **Outputs**: the request queue, drained with
///   [`outgoing_requests`](Self::outgoing_requests), and the event queue,
///   drained with [`poll_event`](Self::poll_event) /
///   [`drain_events`](Self::drain_events).
/// * **Getters** read state: [`user_id`](Self::user_id),
///   [`device_id`](Self::device_id), [`identity_keys`](Self::identity_keys),
///   [`get_device`](Self::get_device), [`get_user_devices`](Self::get_user_devices),
///   [`tracked_users`](Self::tracked_users).
///
/// Every input and command saves everything it changed in one atomic
/// [`Changes`] batch before it returns (persist before acknowledge): the
/// caller stores its sync token only after `receive_sync_changes` returned.
/// The machine never reads a clock.
///
/// # The drain rule
///
/// Every request the engine wants sent is in one queue and listed by
/// `outgoing_requests` until its answer is handed back or the engine
/// cancels it (a share superseded by a new room key, a query or claim for
/// users no longer tracked). Commands that return requests return copies of
/// queued ones for convenience; dropping them loses nothing. A request may
/// be sent more than once (to-device requests carry their id as the
/// transaction id, so the server drops repeats), and a second answer, or an
/// answer to a cancelled request, is accepted and ignored. So a driver is
/// one loop: feed an input, send every listed request (concurrently),
/// answer each, drain the events, and sleep until the next sync or
/// `poll_timeout`.
#[derive(Clone, Debug)]
pub struct OlmMachine {
    inner: Arc<Inner>,
}

/// The engine's state, each part owned by its concern.
#[derive(Debug)]
struct Inner {
    own: OwnIdentity,
    /// The store, as [`Inner::fenced`]: every batch fenced with our lease.
    store: Arc<dyn CryptoStore>,
    /// The same store, to set the lease on (`machine/store_lock`).
    fenced: Arc<crate::store::FencedStore>,
    /// The store lock's lease, while this engine shares the store.
    lease: Mutex<Option<store_lock::HeldLease>>,
    /// Lock order: `account`, then `sessions`, then the std mutexes.
    account: async_lock::Mutex<Account>,
    /// Olm sessions in memory (`olm/`).
    sessions: async_lock::Mutex<SessionCache>,
    /// Whose device lists we follow (`devices/tracker`).
    tracker: Mutex<DeviceTracker>,
    /// Claim back-off, wedged devices, the unwedging budget (`olm/claims`).
    claims: Mutex<ClaimState>,
    /// Room keys in memory (`megolm/`).
    groups: Mutex<GroupCache>,
    /// Per-room locks and the rooms' known encryption settings.
    rooms: Mutex<RoomRegistry>,
    /// Every unanswered request (`requests/queue`).
    requests: Mutex<RequestQueue>,
    /// Events not yet drained (`events`).
    events: Mutex<EventQueue>,
    /// The latest `now` handled by `handle_timeout`.
    timers_handled_until: Mutex<Timestamp>,
    /// Our cross-signing private keys (`identities/`), if this device has any.
    cross_signing: Mutex<Option<PrivateCrossSigningIdentity>>,
    /// New keys of a reset, until the server accepts them (the current ones
    /// stay in use, and stored, until then).
    pending_reset: Mutex<Option<identities::PendingReset>>,
    /// The key backup we upload to, and the upload in flight (`backup/`).
    backup: Mutex<backup::BackupState>,
    /// Our open secret and room-key requests, answers waiting for a session (`gossip/`).
    gossip: Mutex<gossip::GossipState>,
    /// Interactive verification flows (`verification/`), in memory only.
    verifications: Mutex<crate::verification::Verifications>,
    /// Events waiting for their keys and the healing schedule (`utd/pending`).
    pending: Mutex<crate::utd::pending::PendingDecryptions>,
    /// Where request and transaction ids come from.
    ids: IdSource,
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
        let fenced = Arc::new(crate::store::FencedStore::new(store));
        let store: Arc<dyn CryptoStore> = fenced.clone();
        let account = match store.load_account().await? {
            Some(stored) => {
                if stored.user_id != user_id || stored.device_id != device_id {
                    return Err(OpenError::Store(StoreError::AccountMismatch {
                        store_user_id: stored.user_id,
                        store_device_id: stored.device_id,
                        user_id: user_id.to_owned(),
                        device_id: device_id.to_owned(),
                    }));
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
        let retry = store.get_custom_value(QUERY_RETRY_RECORD).await?;
        let tracker = DeviceTracker::from_stored(store.load_tracked_users().await?, retry.as_deref());
        let claims_record = store.get_custom_value(CLAIMS_RECORD).await?;
        let legacy_unwedge = match claims_record {
            Some(_) => None,
            None => store.get_custom_value(LEGACY_UNWEDGE_RECORD).await?,
        };
        let claims = ClaimState::from_records(claims_record.as_deref(), legacy_unwedge.as_deref());
        let cross_signing = store.load_private_identity().await?;
        let backup = backup::BackupState::load(store.as_ref()).await?;
        let gossip =
            gossip::GossipState::from_record(store.get_custom_value(crate::gossip::GOSSIP_RECORD).await?.as_deref());
        let pending = crate::utd::pending::PendingDecryptions::from_record(
            store.get_custom_value(crate::utd::pending::PENDING_RECORD).await?.as_deref(),
        );
        let us = crate::verification::Party { user_id: own.user_id.clone(), device_id: own.device_id.clone() };
        let verifications = crate::verification::Verifications::new(us);
        Ok(Self {
            inner: Arc::new(Inner {
                own,
                store,
                fenced,
                lease: Mutex::new(None),
                account: async_lock::Mutex::new(account),
                sessions: async_lock::Mutex::new(SessionCache::default()),
                tracker: Mutex::new(tracker),
                claims: Mutex::new(claims),
                groups: Mutex::new(GroupCache::default()),
                rooms: Mutex::new(RoomRegistry::default()),
                requests: Mutex::new(RequestQueue::default()),
                events: Mutex::new(EventQueue::default()),
                timers_handled_until: Mutex::new(Timestamp::EPOCH),
                cross_signing: Mutex::new(cross_signing),
                pending_reset: Mutex::new(None),
                backup: Mutex::new(backup),
                gossip: Mutex::new(gossip),
                verifications: Mutex::new(verifications),
                pending: Mutex::new(pending),
                ids: IdSource::random(),
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

    /// Makes the ids of the requests this machine creates from now on a
    /// fixed sequence determined by `seed`, so that a simulated network
    /// replays exactly. Never use a fixed seed for a real device across
    /// restarts: the server drops a to-device request whose transaction id
    /// it already saw from the device. By default the seed is random.
    pub fn set_id_seed(&self, seed: u64) {
        self.inner.ids.reseed(seed);
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
        let set = match trust {
            // The caller says its user compared this device's key.
            LocalTrust::Verified => crate::verification::proof::key_comparison(
                user_id,
                Some((device_id.to_owned(), device.ed25519_key())),
                None,
            )
            .is_some_and(|proof| device.mark_verified(&proof)),
            other => device.set_local_trust(other),
        };
        if !set {
            return Ok(false);
        }
        self.save(None, None, Changes { devices: vec![device], ..Default::default() }).await?;
        // Events refused for this sender's trust may decrypt now.
        lock(&self.inner.pending).sender_changed(&user_id.to_owned());
        if trust == LocalTrust::Verified && user_id == self.user_id() {
            // Our device we now trust may answer what we asked before.
            self.resend_open_gossip_requests();
        }
        Ok(true)
    }

    /// Every request waiting to be sent, oldest first: the keys upload if
    /// the server lacks keys, keys queries for outdated device lists (at most
    /// 250 users each), claims, room-key shares, queued to-device messages.
    /// A request stays listed, under the same id, until it is answered or
    /// cancelled (see the drain rule on [`OlmMachine`]). An engine sharing
    /// its store hands out requests only under a lease with more than a
    /// third of its length left ([`StoreError::LockNotHeld`] otherwise).
    pub async fn outgoing_requests(&self, now: Timestamp) -> Result<Vec<OutgoingRequest>, StoreError> {
        self.check_lease_for_sending(now)?;
        self.ensure_keys_upload_listed().await?;
        self.ensure_keys_queries_listed(now);
        self.ensure_unwedging_claim_listed(now);
        self.ensure_backup_upload_listed().await?;
        self.ensure_gossip_listed(now).await?;
        Ok(lock(&self.inner.requests).listed())
    }

    /// Hands back the homeserver's answer to the request with `request_id`,
    /// and saves what it changes. The answer to a request that was already
    /// answered or was cancelled is accepted and changes nothing.
    pub async fn mark_request_as_sent<'a>(
        &self,
        request_id: &TransactionId,
        response: impl Into<AnyIncomingResponse<'a>>,
        now: Timestamp,
    ) -> Result<(), ResponseError> {
        let response = response.into();
        let check = |request: &OutgoingRequest, _: &Meta| {
            let expected = request.request().kind();
            match expected == response.kind() {
                true => Ok(()),
                false => {
                    Err(ResponseError::KindMismatch { id: request_id.to_owned(), expected, found: response.kind() })
                }
            }
        };
        let Some(entry) = self.begin_answer(request_id, check)? else { return Ok(()) };
        let applied = match (&*entry.meta, response) {
            (Meta::KeysUpload, AnyIncomingResponse::KeysUpload(r)) => self.receive_keys_upload_response(r).await,
            (Meta::KeysQuery(users), AnyIncomingResponse::KeysQuery(r)) => {
                self.receive_keys_query_response(users, r, now).await
            }
            (Meta::KeysClaim(devices), AnyIncomingResponse::KeysClaim(r)) => {
                self.receive_keys_claim_response(devices, r, now).await
            }
            (Meta::RoomKeyShare(targets), AnyIncomingResponse::ToDevice(_)) => {
                self.receive_room_key_share_ack(targets).await
            }
            (Meta::SigningKeysUpload(master), AnyIncomingResponse::SigningKeysUpload(_)) => {
                self.receive_signing_keys_upload_response(*master).await
            }
            (Meta::KeysBackup, AnyIncomingResponse::KeysBackup(_)) => self.receive_backup_response(request_id).await,
            (Meta::BackupVersion(judged), AnyIncomingResponse::BackupVersion(r)) => {
                self.receive_backup_version(judged.as_deref(), Some(r), now).await
            }
            (Meta::BackupKeyLookup { room_id, session_id }, AnyIncomingResponse::BackupKeyLookup(r)) => {
                self.receive_backup_key_lookup(room_id, session_id, r).await
            }
            (Meta::GossipRequest(gossip_id), AnyIncomingResponse::ToDevice(_)) => {
                self.receive_gossip_request_sent(gossip_id).await
            }
            (Meta::SignatureUpload, AnyIncomingResponse::SignatureUpload(r)) => {
                self.receive_signature_upload_response(r);
                Ok(())
            }
            (Meta::RoomVerificationRequest(user_id), AnyIncomingResponse::RoomMessage(r)) => {
                if let AnyOutgoingRequest::RoomMessage(request) = entry.request.request() {
                    self.receive_room_request_sent(request, user_id, r.event_id.clone(), now);
                }
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(error) = applied {
            // Not applied: listed again, to be sent and answered again.
            lock(&self.inner.requests).restore(entry);
            return Err(error.into());
        }
        Ok(())
    }

    /// Hands back the homeserver's refusal of the request with `request_id`
    /// where the refusal is an answer (see [`RequestRefusal`]): no backup
    /// version, no such key in the backup, an upload to a version that is
    /// not current. The request is answered. Any other failure is not handed
    /// back: the request stays queued and is sent again.
    pub async fn mark_request_as_refused(
        &self,
        request_id: &TransactionId,
        refusal: RequestRefusal,
        now: Timestamp,
    ) -> Result<(), ResponseError> {
        let check = |request: &OutgoingRequest, meta: &Meta| {
            let expected = matches!(
                (meta, refusal),
                (Meta::BackupVersion(_) | Meta::BackupKeyLookup { .. }, RequestRefusal::NotFound)
                    | (Meta::KeysBackup, _)
            );
            match expected {
                true => Ok(()),
                false => Err(ResponseError::RefusalNotExpected {
                    id: request_id.to_owned(),
                    kind: request.request().kind(),
                    refusal,
                }),
            }
        };
        let Some(entry) = self.begin_answer(request_id, check)? else { return Ok(()) };
        let applied = match &*entry.meta {
            Meta::BackupVersion(judged) => self.receive_backup_version(judged.as_deref(), None, now).await,
            Meta::KeysBackup => {
                self.receive_backup_upload_refused(request_id);
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(error) = applied {
            lock(&self.inner.requests).restore(entry);
            return Err(error.into());
        }
        Ok(())
    }

    /// Takes the request `request_id` out of the queue to apply its answer,
    /// if `check` accepts the answer for it: a second answer arriving
    /// meanwhile finds it finished and does nothing. `None` if it was
    /// answered or cancelled already (the answer is then ignored).
    fn begin_answer(
        &self,
        request_id: &TransactionId,
        check: impl FnOnce(&OutgoingRequest, &Meta) -> Result<(), ResponseError>,
    ) -> Result<Option<crate::requests::Entry>, ResponseError> {
        let mut requests = lock(&self.inner.requests);
        let Some(request) = requests.find(request_id) else {
            return match requests.was_finished(request_id) {
                true => Ok(None),
                false => Err(ResponseError::UnknownRequest(request_id.to_owned())),
            };
        };
        let meta = requests.meta(request_id).ok_or_else(|| ResponseError::UnknownRequest(request_id.to_owned()))?;
        check(request, &meta)?;
        Ok(requests.begin_answer(request_id))
    }

    /// The oldest event not yet drained, if any (see [`EngineEvent`]).
    pub fn poll_event(&self) -> Option<EngineEvent> {
        let event = lock(&self.inner.events).pop()?;
        self.note_drained(std::slice::from_ref(&event));
        Some(event)
    }

    /// Every event not yet drained, oldest first.
    pub fn drain_events(&self) -> Vec<EngineEvent> {
        let drained: Vec<EngineEvent> = {
            let mut events = lock(&self.inner.events);
            std::iter::from_fn(|| events.pop()).collect()
        };
        self.note_drained(&drained);
        drained
    }

    /// Queues a request with a fresh id; returns a copy for the caller.
    fn queue(&self, request: AnyOutgoingRequest, meta: Meta) -> OutgoingRequest {
        let mut requests = lock(&self.inner.requests);
        let id = self.fresh_id(&requests);
        requests.push(OutgoingRequest::with_id(id, request), meta)
    }

    /// An id no queued or lately finished request has (a reseeded source
    /// may repeat an earlier one; it is skipped).
    fn fresh_id(&self, requests: &RequestQueue) -> ruma_common::OwnedTransactionId {
        let mut id = self.inner.ids.next();
        for _ in 0..64 {
            if !requests.knows(&id) {
                break;
            }
            id = self.inner.ids.next();
        }
        id
    }

    /// Queues events, after the changes they report were saved.
    fn announce(&self, events: impl IntoIterator<Item = EngineEvent>) {
        let events: Vec<EngineEvent> = events.into_iter().collect();
        self.note_announced(&events);
        lock(&self.inner.events).extend(events);
    }

    /// Saves `changes`: the engine's one writer to the store once it is
    /// open (every batch goes through here, so every stored room key is
    /// queued for the backup and every failure rolls memory back). On
    /// failure the in-memory caches are dropped and the account reloaded,
    /// so memory never runs ahead of the store.
    async fn save(
        &self,
        account: Option<&mut Account>,
        sessions: Option<&mut SessionCache>,
        mut changes: Changes,
    ) -> Result<(), StoreError> {
        self.queue_for_backup(&mut changes);
        if changes.is_empty() {
            return Ok(());
        }
        // Read before the save, noted after it: a failed save retries
        // nothing that was not stored.
        let stored_keys = self.waited_for_keys(&changes);
        match self.inner.store.save_changes(changes).await {
            Ok(()) => {
                self.note_keys_stored(stored_keys);
                Ok(())
            }
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
