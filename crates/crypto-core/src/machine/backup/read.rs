//! Reading the server's backup as requests of the engine: the current
//! version (`GET /room_keys/version`), read to look up the keys of waiting
//! undecryptable events, to check a refused upload, or to enable the backup
//! whose key just arrived; and the keys looked up
//! (`GET /room_keys/keys/{room}/{session}`). What the answers mean is
//! decided in `backup/server` (disable or keep) and `utd/pending` (which
//! keys to look up); this routes.

use std::collections::BTreeMap;

use ruma_client_api::backup::{RoomKeyBackup, get_backup_keys_for_session, get_latest_backup_info};
use ruma_common::RoomId;

use super::{OlmMachine, lock};
use crate::{
    AnyOutgoingRequest, StoreError, Timestamp,
    backup::{ServerBackup, judge},
    events::EngineEvent,
    requests::Meta,
};

impl OlmMachine {
    /// Whether keys can be looked up in the backup: one is enabled and we
    /// hold its private key.
    pub(in crate::machine) fn backup_readable(&self) -> bool {
        let state = lock(&self.inner.backup);
        matches!((&state.active, &state.held), (Some((_, public)), Some(held)) if public == held)
    }

    /// Queues a read of the server's backup version, unless one is queued.
    pub(in crate::machine) fn queue_backup_read(&self) {
        if lock(&self.inner.requests).has_backup_read() {
            return;
        }
        let request = AnyOutgoingRequest::BackupVersion(get_latest_backup_info::v3::Request::new());
        self.queue(request, Meta::BackupVersion(self.backup_version()));
    }

    /// A backup key arrived from our verified device: the next read of the
    /// server's backup enables it if its public key matches.
    pub(in crate::machine) fn read_backup_to_enable(&self) {
        lock(&self.inner.backup).enable_on_read = true;
        self.queue_backup_read();
    }

    /// The server's current backup version (`None`: it has none), read
    /// while we uploaded to `judged`. If it is not the version we upload
    /// to (and that is still `judged`), that backup is disabled (announced
    /// as [`EngineEvent::BackupDisabled`]); if a backup key just arrived and
    /// matches it, it is enabled; if keys of waiting events are due to be
    /// looked up in it, the lookups are queued.
    pub(in crate::machine) async fn receive_backup_version(
        &self,
        judged: Option<&str>,
        response: Option<&get_latest_backup_info::v3::Response>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let current = match response.map(ServerBackup::from_response).transpose() {
            Ok(current) => current,
            Err(error) => {
                // Hostile or broken: nothing changes; read again at the recheck.
                tracing::warn!(%error, "the server's backup version could not be read");
                lock(&self.inner.pending).backup_read_fruitless(now);
                return Ok(());
            }
        };
        let active = self.backup_version();
        // A read queued before the backup changed says nothing about it.
        let verdict = match active.as_deref() == judged {
            true => judge(active.as_deref(), current.as_ref().map(|c| c.info.version.as_str())),
            false => None,
        };
        if let Some(reason) = verdict {
            let version = active.unwrap_or_default();
            tracing::warn!(%version, ?reason, "the key backup version is gone; backup disabled");
            self.disable_backup().await?;
            self.announce([EngineEvent::BackupDisabled { version, reason }]);
        }
        let Some(current) = current else { return Ok(()) };
        self.enable_if_key_arrived(&current).await;
        self.queue_backup_lookups(&current, now);
        Ok(())
    }

    /// Enables `current` if a backup key arrived for it (its public key
    /// matches the private key we hold, so it is trusted).
    async fn enable_if_key_arrived(&self, current: &ServerBackup) {
        let wanted = std::mem::take(&mut lock(&self.inner.backup).enable_on_read);
        if !wanted || self.backup_version().as_deref() == Some(current.info.version.as_str()) {
            return;
        }
        let held = lock(&self.inner.backup).held;
        if held.is_none() || current.info.public_key().ok() != held {
            return;
        }
        match self.enable_backup(&current.info).await {
            Ok(trust) => {
                tracing::info!(version = %current.info.version, ?trust, "enabled the backup whose key arrived")
            }
            Err(error) => tracing::warn!(%error, "enabling the backup whose key arrived failed"),
        }
    }

    /// Queues the lookups of waiting events' keys that are due in `current`,
    /// if it is the backup we can read.
    fn queue_backup_lookups(&self, current: &ServerBackup, now: Timestamp) {
        if !self.backup_readable() || self.backup_version().as_deref() != Some(current.info.version.as_str()) {
            return;
        }
        let lookups = {
            let mut pending = lock(&self.inner.pending);
            match pending.backup_read_due(now) {
                Some(due) => pending.take_backup_lookups((&current.info.version, &current.etag), due, now),
                None => Vec::new(),
            }
        };
        for (room_id, session_id) in lookups {
            if lock(&self.inner.requests).has_backup_lookup(&room_id, &session_id) {
                continue;
            }
            let request = get_backup_keys_for_session::v3::Request::new(
                current.info.version.clone(),
                room_id.clone(),
                session_id.clone(),
            );
            self.queue(AnyOutgoingRequest::BackupKeyLookup(request), Meta::BackupKeyLookup { room_id, session_id });
        }
    }

    /// A key looked up in the backup: imported (checked and decrypted with
    /// the private key we hold, marked as from the backup); the events
    /// waiting for it are decrypted again at the next `handle_timeout`.
    pub(in crate::machine) async fn receive_backup_key_lookup(
        &self,
        room_id: &RoomId,
        session_id: &str,
        response: &get_backup_keys_for_session::v3::Response,
    ) -> Result<(), StoreError> {
        let Some(key) = self.backup_decryption_key().await? else { return Ok(()) };
        let sessions = BTreeMap::from([(session_id.to_owned(), response.key_data.clone())]);
        let rooms = BTreeMap::from([(room_id.to_owned(), RoomKeyBackup::new(sessions))]);
        let result = self.import_backed_up_room_keys(&key, &rooms, |_, _| {}).await?;
        if result.invalid_count > 0 {
            tracing::warn!(%room_id, %session_id, "a key looked up in the backup failed its check");
        }
        Ok(())
    }

    /// The server refused an upload to the backup as not found or not the
    /// current version: the upload ends (its keys stay queued, and no new
    /// upload is prepared until the next key is queued or the engine
    /// starts again: a server that keeps refusing is not asked in a loop),
    /// and the server's current version is read to decide whether the
    /// backup is gone.
    pub(in crate::machine) fn receive_backup_upload_refused(&self, id: &ruma_common::TransactionId) {
        lock(&self.inner.backup).uploads.refused(id);
        self.queue_backup_read();
    }
}
