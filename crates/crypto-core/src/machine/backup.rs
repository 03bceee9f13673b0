//! Server-side key backup in the engine: which backup we upload to and why
//! we trust it, the persisted queue of room keys still to upload (filled in
//! the same batch that stores each key), the upload requests, and restoring
//! keys from a backup. The crypto is in `backup/`; reading the server's
//! backup (its version, and keys looked up for waiting events) is in
//! `read`.

mod read;

use std::collections::BTreeMap;

use ruma_client_api::backup::{RoomKeyBackup, add_backup_keys};
use ruma_common::{OwnedDeviceId, OwnedRoomId, serde::Raw};
use serde::{Deserialize, Serialize};

use super::{OlmMachine, lock};
use crate::{
    AnyOutgoingRequest, KeySource, OutgoingRequest, RoomKeyImportResult, StoreError,
    backup::{
        BackupDecryptionKey, BackupEncryptionKey, BackupInfo, BackupKeyError, BackupTrust, KeyBackupData, Uploads,
        backup_entry, session_from_backup,
    },
    contain::contain,
    identities::KeyRole,
    requests::Meta,
    secret_storage::names,
    store::{Changes, RoomKeyRef, StoredSecret},
};

/// The custom value holding the enabled backup.
pub(super) const BACKUP_RECORD: &str = "hush.backup";
/// Room keys per upload request (matrix-sdk-crypto uses 100 as well).
const UPLOAD_BATCH: usize = 100;
/// Room keys enqueued, or restored, per saved batch.
const PAGE: usize = 1000;
/// Why an entry could not be written as JSON (it always can).
const NOT_SERIALIZABLE: &str = "a backup entry could not be serialized";

/// Why a backup could not be enabled, uploaded to or restored from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    /// The backup is not signed by anything we trust and we do not hold its
    /// private key: keys are not uploaded to it.
    #[error(
        "backup version {0} is not trusted: not signed by this device, a verified device of ours or our trusted master key"
    )]
    Untrusted(String),
    /// The backup's key or data is malformed.
    #[error(transparent)]
    Key(#[from] BackupKeyError),
    /// The private key given does not belong to the backup.
    #[error("the backup private key does not match backup version {0}")]
    WrongKey(String),
    /// No backup is enabled.
    #[error("no key backup is enabled")]
    NotEnabled,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The backup we upload to.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredBackup {
    version: String,
    public_key: String,
    trust: BackupTrust,
    /// Whether every key held when the backup was enabled has been queued
    /// (records from before this field are complete).
    #[serde(default = "complete")]
    queued_all: bool,
}

fn complete() -> bool {
    true
}

/// Backup state in memory.
#[derive(Debug, Default)]
pub(super) struct BackupState {
    active: Option<(StoredBackup, BackupEncryptionKey)>,
    /// The uploads to it (see `backup/upload`).
    pub(super) uploads: Uploads,
    /// The public part of the backup private key we hold, if any.
    held: Option<BackupEncryptionKey>,
    /// The next read of the server's backup enables it if it matches the
    /// key we hold (a backup key arrived from our verified device).
    enable_on_read: bool,
}

impl BackupState {
    /// The state saved in the store, if a backup was enabled, and the
    /// backup private key we hold (its public part).
    pub(super) async fn load(store: &dyn crate::CryptoStore) -> Result<Self, StoreError> {
        let record = store.get_custom_value(BACKUP_RECORD).await?;
        let active = record
            .and_then(|bytes| serde_json::from_slice::<Option<StoredBackup>>(&bytes).ok())
            .flatten()
            .and_then(|stored| BackupEncryptionKey::from_base64(&stored.public_key).ok().map(|key| (stored, key)));
        let held = store
            .get_secret(names::BACKUP)
            .await?
            .and_then(|secret| BackupDecryptionKey::from_base64(&secret).ok())
            .map(|key| key.public_key());
        Ok(Self { active, held, ..Default::default() })
    }

    /// A fresh state for `active` (or none), keeping what is known of the
    /// key we hold.
    fn reset(&mut self, active: Option<(StoredBackup, BackupEncryptionKey)>) {
        let held = self.held.take();
        *self = Self { active, held, ..Default::default() };
    }

    /// Whether enabling was cut short before every held key was queued.
    fn scan_unfinished(&self) -> bool {
        self.active.as_ref().is_some_and(|(stored, _)| !stored.queued_all)
    }
}

fn record(backup: Option<&StoredBackup>) -> (String, Vec<u8>) {
    // `null` for "no backup": custom values cannot be deleted.
    (BACKUP_RECORD.to_owned(), serde_json::to_vec(&backup).unwrap_or_default())
}

impl OlmMachine {
    /// Whether we would upload to `info`'s backup, and why: we hold its
    /// private key (from the user, secret storage or a verified device of
    /// ours), or its `auth_data` is signed by this device, by a verified
    /// device of ours, or by our master key while we trust it.
    pub async fn backup_trust(&self, info: &BackupInfo) -> Result<BackupTrust, BackupError> {
        let key = info.public_key()?;
        if self.backup_decryption_key().await?.is_some_and(|private| private.public_key() == key) {
            return Ok(BackupTrust::PrivateKeyHeld);
        }
        // Checked in a fixed order, strongest reason first, so the answer
        // does not depend on the order of the signatures.
        let own = self.user_id();
        let this_device = format!("ed25519:{}", self.device_id());
        if info.is_signed_by(own, &this_device, &self.inner.own.ed25519) {
            return Ok(BackupTrust::SignedByThisDevice);
        }
        if let Some(identity) = self.inner.store.get_user_identity(own).await?
            && identity.is_master_trusted()
        {
            let master = identity.master_key().key();
            let master_id = format!("ed25519:{}", master.to_base64());
            if info.is_signed_by(own, &master_id, &master) {
                return Ok(BackupTrust::SignedByMasterKey);
            }
        }
        // Our own ids are looked up directly above; other devices' among the
        // first 32 signatures (a server can pad the list, but not forge one).
        for key_id in info.signing_key_ids(own).iter().filter(|id| **id != this_device) {
            let Some(name) = key_id.strip_prefix("ed25519:") else { continue };
            let device_id = OwnedDeviceId::from(name);
            let Some(device) = self.inner.store.get_device(own, &device_id).await? else { continue };
            let verified = self.device_trust(own, &device_id).await?.is_some_and(|t| t.is_verified());
            if verified && !device.is_deleted() && info.is_signed_by(own, key_id, &device.ed25519_key()) {
                return Ok(BackupTrust::SignedByVerifiedDevice(device_id));
            }
        }
        Ok(BackupTrust::Untrusted)
    }

    /// The `auth_data` for a new backup with `public_key`, signed by this
    /// device and, if we hold it, our master key.
    pub async fn backup_auth_data(&self, public_key: &BackupEncryptionKey) -> Result<serde_json::Value, BackupError> {
        let mut auth_data = serde_json::json!({ "public_key": public_key.to_base64() });
        let signing_error =
            |e: crate::SignatureError| BackupError::Key(BackupKeyError::MalformedPublicKey(e.to_string()));
        {
            let private = lock(&self.inner.cross_signing);
            if let Some(private) = private.as_ref().filter(|p| p.status().has_master) {
                private
                    .sign_json(KeyRole::Master, &mut auth_data)
                    .map_err(|e| BackupError::Key(BackupKeyError::MalformedPublicKey(e.to_string())))?;
            }
        }
        let key_id = format!("ed25519:{}", self.device_id());
        let account = self.inner.account.lock().await;
        crate::signing::sign_json(&mut auth_data, self.user_id(), &key_id, |m| account.sign_bytes(m))
            .map_err(signing_error)?;
        Ok(auth_data)
    }

    /// Starts uploading room keys to `info`'s backup, if we trust it (see
    /// [`backup_trust`](Self::backup_trust)). Every room key we hold is
    /// queued for it, and every key we get from now on.
    pub async fn enable_backup(&self, info: &BackupInfo) -> Result<BackupTrust, BackupError> {
        let trust = self.backup_trust(info).await?;
        if !trust.is_trusted() {
            return Err(BackupError::Untrusted(info.version.clone()));
        }
        let key = info.public_key()?;
        let stored = StoredBackup {
            version: info.version.clone(),
            public_key: key.to_base64(),
            trust: trust.clone(),
            queued_all: false,
        };
        // Active first, so a key stored while we scan is queued by `save`;
        // the record says the scan is unfinished until it is, so a crash
        // in between resumes it.
        self.cancel_backup_uploads();
        let changes =
            Changes { clear_backup_queue: true, custom_values: vec![record(Some(&stored))], ..Default::default() };
        self.save(None, None, changes).await?;
        lock(&self.inner.backup).reset(Some((stored.clone(), key)));
        tracing::info!(version = %info.version, ?trust, "key backup enabled");
        self.queue_all_held_keys(stored).await?;
        if let Err(error) = self.backup_room_keys().await {
            // Enabled all the same: the next `outgoing_requests` tries again.
            tracing::warn!(%error, "the first backup upload could not be prepared");
        }
        Ok(trust)
    }

    /// Queues every room key we hold for `stored`'s backup, a page per
    /// batch, then records that this is done.
    async fn queue_all_held_keys(&self, mut stored: StoredBackup) -> Result<(), StoreError> {
        let mut after: Option<(OwnedRoomId, String)> = None;
        loop {
            let cursor = after.as_ref().map(|(r, s)| (r.as_ref(), s.as_str()));
            let page = self.inner.store.get_inbound_group_sessions(cursor, PAGE).await?;
            let full = page.len() == PAGE;
            after = page.last().map(|last| (last.room_id.clone(), last.session_id.clone()));
            let queue: Vec<RoomKeyRef> = page
                .into_iter()
                .filter(|s| s.source != KeySource::Backup)
                .map(|s| RoomKeyRef { room_id: s.room_id, session_id: s.session_id })
                .collect();
            if !queue.is_empty() {
                self.save(None, None, Changes { backup_queue: queue, ..Default::default() }).await?;
            }
            if !full {
                break;
            }
        }
        stored.queued_all = true;
        let still_active =
            lock(&self.inner.backup).active.as_ref().is_some_and(|(active, _)| active.version == stored.version);
        if !still_active {
            // Disabled or replaced meanwhile: its record must not come back.
            return Ok(());
        }
        self.save(None, None, Changes { custom_values: vec![record(Some(&stored))], ..Default::default() }).await?;
        let mut state = lock(&self.inner.backup);
        if let Some((active, _)) = state.active.as_mut().filter(|(active, _)| active.version == stored.version) {
            active.queued_all = true;
        }
        Ok(())
    }

    /// Stops uploading to the backup (it was deleted, or the server has a
    /// newer version): the queue is emptied, and any upload request cancelled.
    pub async fn disable_backup(&self) -> Result<(), StoreError> {
        let changes = Changes { clear_backup_queue: true, custom_values: vec![record(None)], ..Default::default() };
        self.save(None, None, changes).await?;
        self.cancel_backup_uploads();
        lock(&self.inner.backup).reset(None);
        Ok(())
    }

    /// Cancels the uploads, reads and lookups of the backup state that ends.
    fn cancel_backup_uploads(&self) {
        let mut requests = lock(&self.inner.requests);
        requests.cancel_where(|entry| matches!(*entry.meta, Meta::KeysBackup));
        requests.cancel_backup_reads();
    }

    /// The version we upload to, if a backup is enabled.
    pub fn backup_version(&self) -> Option<String> {
        lock(&self.inner.backup).active.as_ref().map(|(stored, _)| stored.version.clone())
    }

    /// How many room keys wait to be uploaded (for progress reports).
    pub async fn backup_pending_count(&self) -> Result<usize, StoreError> {
        self.inner.store.backup_queue_len().await
    }

    /// Saves the backup's private key (from the user, secret storage or a
    /// verified device of ours). With it a backup with its public key is
    /// trusted, and keys can be restored.
    pub async fn save_backup_decryption_key(&self, key: &BackupDecryptionKey) -> Result<(), StoreError> {
        let secret = StoredSecret { name: names::BACKUP.to_owned(), value: Some(key.to_base64()) };
        self.save(None, None, Changes { secrets: vec![secret], ..Default::default() }).await?;
        lock(&self.inner.backup).held = Some(key.public_key());
        Ok(())
    }

    /// The backup's private key, if we hold it.
    pub async fn backup_decryption_key(&self) -> Result<Option<BackupDecryptionKey>, StoreError> {
        let Some(secret) = self.inner.store.get_secret(names::BACKUP).await? else { return Ok(None) };
        Ok(BackupDecryptionKey::from_base64(&secret).ok())
    }

    /// Lists the next backup upload if keys may be waiting (called by
    /// `outgoing_requests`). Only a store failure is an error here; a key
    /// that cannot be encrypted is logged, and stays queued.
    pub(super) async fn ensure_backup_upload_listed(&self) -> Result<(), StoreError> {
        let resume = {
            let state = lock(&self.inner.backup);
            state.active.as_ref().filter(|_| state.scan_unfinished()).map(|(stored, _)| stored.clone())
        };
        if let Some(stored) = resume {
            tracing::info!(version = %stored.version, "resuming the queueing of held keys for the backup");
            self.queue_all_held_keys(stored).await?;
        }
        if !lock(&self.inner.backup).uploads.may_have_keys() {
            return Ok(());
        }
        match self.backup_room_keys().await {
            Ok(_) => Ok(()),
            Err(BackupError::Store(error)) => Err(error),
            Err(error) => {
                // Not retried on every call: the next key queued, or the
                // next start, tries again.
                lock(&self.inner.backup).uploads.nothing_to_upload();
                tracing::warn!(%error, "a backup upload could not be prepared");
                Ok(())
            }
        }
    }

    /// Queues the next upload of room keys to the backup, if a backup is
    /// enabled, keys are waiting and no upload is in flight; returns a copy
    /// (the request is also listed by `outgoing_requests`, which calls this
    /// whenever keys were queued; so does each upload's answer).
    pub async fn backup_room_keys(&self) -> Result<Option<OutgoingRequest>, BackupError> {
        let (version, key) = {
            let mut state = lock(&self.inner.backup);
            let Some((stored, key)) = &state.active else { return Ok(None) };
            let active = (stored.version.clone(), *key);
            if !state.uploads.begin() {
                return Ok(None);
            }
            active
        };
        let prepared = self.prepare_backup_upload(&version, &key).await;
        let mut state = lock(&self.inner.backup);
        // Disabled or replaced meanwhile (the state was reset): this upload
        // is for a stale version.
        let current = state.active.as_ref().is_some_and(|(stored, _)| stored.version == version);
        let (request, carried) = match prepared {
            Ok(Some(prepared)) if current => prepared,
            other => {
                if current {
                    state.uploads.prepared(None);
                }
                return other.map(|_| None);
            }
        };
        state.uploads.prepared(Some((request.request_id().to_owned(), carried)));
        drop(state);
        Ok(Some(lock(&self.inner.requests).push(request, Meta::KeysBackup)))
    }

    /// Reads up to one batch from the queue and encrypts it for `version`.
    async fn prepare_backup_upload(
        &self,
        version: &str,
        key: &BackupEncryptionKey,
    ) -> Result<Option<(OutgoingRequest, Vec<RoomKeyRef>)>, BackupError> {
        let queued = self.inner.store.get_backup_queue(UPLOAD_BATCH).await?;
        if queued.is_empty() {
            lock(&self.inner.backup).uploads.nothing_to_upload();
            return Ok(None);
        }
        let mut rooms: BTreeMap<OwnedRoomId, RoomKeyBackup> = BTreeMap::new();
        let mut gone = Vec::new();
        for entry in &queued {
            let Some(session) = self.load_inbound(&entry.room_id, &entry.session_id).await? else {
                gone.push(entry.clone());
                continue;
            };
            let data = backup_entry(&session, key)?;
            let raw = Raw::new(&data).map_err(|_| BackupKeyError::NotARoomKey(NOT_SERIALIZABLE.to_owned()))?;
            rooms
                .entry(entry.room_id.clone())
                .or_insert_with(|| RoomKeyBackup::new(BTreeMap::new()))
                .sessions
                .insert(entry.session_id.clone(), raw.cast_unchecked());
        }
        if !gone.is_empty() {
            self.save(None, None, Changes { backed_up: gone, ..Default::default() }).await?;
        }
        if rooms.is_empty() {
            return Ok(None);
        }
        let request = OutgoingRequest::with_id(
            self.inner.ids.next(),
            AnyOutgoingRequest::KeysBackup(add_backup_keys::v3::Request::new(version.to_owned(), rooms)),
        );
        Ok(Some((request, queued)))
    }

    /// The server stored an upload: its keys leave the queue (except keys
    /// stored again meanwhile), and the next batch is queued. The upload
    /// stays in flight until the queue is updated, so no other upload reads
    /// the keys in between.
    pub(super) async fn receive_backup_response(&self, id: &ruma_common::TransactionId) -> Result<(), StoreError> {
        let Some(done) = lock(&self.inner.backup).uploads.answered(id) else { return Ok(()) };
        self.save(None, None, Changes { backed_up: done.backed_up.clone(), ..Default::default() }).await?;
        let stored_again = lock(&self.inner.backup).uploads.finish(id, done);
        // Stored again while we took it off the queue: it goes back on.
        if !stored_again.is_empty() {
            self.save(None, None, Changes { backup_queue: stored_again, ..Default::default() }).await?;
        }
        if let Err(error) = self.backup_room_keys().await {
            tracing::warn!(%error, "queueing the next backup upload failed");
        }
        Ok(())
    }

    /// Adds the room keys `changes` stores to the backup queue (called by
    /// `save`, so a key is never stored without being queued). Keys restored
    /// from a backup are not uploaded back.
    pub(super) fn queue_for_backup(&self, changes: &mut Changes) {
        let mut state = lock(&self.inner.backup);
        if state.active.is_none() {
            return;
        }
        let fresh: Vec<RoomKeyRef> = changes
            .inbound_group_sessions
            .iter()
            .filter(|s| s.source != KeySource::Backup)
            .map(|s| RoomKeyRef { room_id: s.room_id.clone(), session_id: s.session_id.clone() })
            .collect();
        state.uploads.queued(&fresh);
        changes.backup_queue.extend(fresh);
    }

    /// Restores room keys from backup data (`GET /room_keys/keys`, or one
    /// room's or one session's part of it) decrypted with `key`. Each entry's
    /// MAC is checked; an entry that fails is counted in `invalid_count` and
    /// skipped. Restored keys are marked [`KeySource::Backup`] and never
    /// replace a better or differently owned key. `progress` gets
    /// (processed, total).
    pub async fn import_backed_up_room_keys(
        &self,
        key: &BackupDecryptionKey,
        rooms: &BTreeMap<OwnedRoomId, RoomKeyBackup>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<RoomKeyImportResult, StoreError> {
        let total = rooms.values().map(|room| room.sessions.len()).sum();
        let mut result = RoomKeyImportResult { total_count: total, ..Default::default() };
        let mut batch = Vec::new();
        let mut done = 0;
        for (room_id, room) in rooms {
            for (session_id, raw) in &room.sessions {
                let session = contain("a backed-up room key", || {
                    let data: KeyBackupData = raw.deserialize_as_unchecked().ok()?;
                    let decrypted = key.decrypt(&data.session_data).ok()?;
                    session_from_backup(room_id, session_id, &decrypted)
                })
                .ok()
                .flatten();
                match session {
                    Some(session) => batch.push(session),
                    None => {
                        tracing::warn!(%room_id, %session_id, "skipped a backed-up room key that failed to decrypt");
                        result.invalid_count += 1;
                    }
                }
                done += 1;
                if batch.len() == PAGE {
                    self.import_backup_batch(std::mem::take(&mut batch), &mut result).await?;
                    progress(done, total);
                }
            }
        }
        self.import_backup_batch(batch, &mut result).await?;
        progress(done, total);
        Ok(result)
    }

    async fn import_backup_batch(
        &self,
        sessions: Vec<crate::megolm::InboundGroupSession>,
        result: &mut RoomKeyImportResult,
    ) -> Result<(), StoreError> {
        let tally = self.store_unauthenticated_keys(sessions).await?;
        result.conflicting_count += tally.conflicting;
        for (room_id, session_id) in tally.stored {
            result.imported_count += 1;
            result.keys.entry(room_id).or_default().insert(session_id);
        }
        Ok(())
    }
}
