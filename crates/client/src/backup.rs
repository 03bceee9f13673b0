//! Key backup in the client: the homeserver's backup and account-data
//! endpoints, and restoring room keys from the backup (all of it, or the
//! key of one undecryptable event). The engine checks trust and MACs; this
//! module moves the bytes.

use std::collections::BTreeMap;
use std::time::Duration;

use hush_crypto_core::Timestamp;
use hush_crypto_core::{
    BackupRestoreResult,
    backup::{BACKUP_ALGORITHM, BackupInfo},
};
use ruma_client_api::{
    backup::{
        RoomKeyBackup, create_backup_version, delete_backup_version, get_backup_keys, get_backup_keys_for_session,
        get_latest_backup_info,
    },
    config::{get_global_account_data, set_global_account_data},
};
use ruma_common::{OwnedRoomId, RoomId, serde::Raw};
use serde_json::Value;

use crate::{ClientError, Encryption, http::HttpError};

impl crate::Client {
    /// Delivers again, as late decryptions, the waiting events whose keys a
    /// restore brought.
    pub(crate) async fn retry_after_restore(&self, result: &BackupRestoreResult) {
        let sessions: std::collections::BTreeSet<String> = result.keys.values().flatten().cloned().collect();
        if !sessions.is_empty() {
            self.retry_undecrypted(&sessions).await;
        }
    }
}

/// Backup lookups for missing keys per sync, so a flood of undecryptable
/// events cannot make one sync send thousands of requests.
const LOOKUPS_PER_SYNC: usize = 20;
/// How many looked-up keys are remembered (so each is looked up once per
/// state of the backup).
const LOOKUPS_REMEMBERED: usize = 10_000;
/// How often the backup's etag is checked again for keys it did not have.
const BACKUP_RECHECK: Duration = Duration::from_secs(600);

/// Keys looked up in the backup, with the backup's etag at the time: a
/// key that was not there is looked up again once the backup changed (our
/// other devices upload the keys they receive), the etag being checked at
/// most every [`BACKUP_RECHECK`].
#[derive(Default)]
pub(crate) struct BackupLookups {
    /// (room, session) → (backup version, etag) when it was looked up.
    looked: BTreeMap<(OwnedRoomId, String), (String, String)>,
    checked_at: Option<Timestamp>,
}

impl BackupLookups {
    /// Whether the backup must be read now for these waiting keys: one was
    /// never looked up, or the recheck of those that were is due. Returns
    /// (read it, it is a recheck).
    fn needs_backup(&self, waiting: &[(OwnedRoomId, String)], now: Timestamp) -> (bool, bool) {
        let fresh = waiting.iter().any(|k| !self.looked.contains_key(k));
        let looked_before = waiting.iter().any(|k| self.looked.contains_key(k));
        let due = self.checked_at.is_none_or(|at| now.saturating_duration_since(at) >= BACKUP_RECHECK);
        let recheck = looked_before && due;
        (fresh || recheck, recheck)
    }

    /// The keys to look up in the backup `version`, whose etag is now
    /// `etag` (at most [`LOOKUPS_PER_SYNC`]): never looked up, looked up in
    /// another version (etags count per version), or looked up when the
    /// backup was different and `recheck` is on. They are remembered with
    /// the version and etag.
    fn take_due(
        &mut self,
        waiting: Vec<(OwnedRoomId, String)>,
        (version, etag): (&str, &str),
        recheck: bool,
        now: Timestamp,
    ) -> Vec<(OwnedRoomId, String)> {
        if recheck {
            self.checked_at = Some(now);
        }
        if self.looked.len() > LOOKUPS_REMEMBERED {
            // Forgotten lookups may be made once more; memory stays bounded.
            self.looked.clear();
        }
        let due = |key: &(OwnedRoomId, String)| match self.looked.get(key) {
            None => true,
            Some((seen_version, seen_etag)) => seen_version != version || (recheck && seen_etag != etag),
        };
        let wanted: Vec<_> = waiting.into_iter().filter(due).take(LOOKUPS_PER_SYNC).collect();
        for key in &wanted {
            self.looked.insert(key.clone(), (version.to_owned(), etag.to_owned()));
        }
        wanted
    }
}

impl crate::Client {
    /// Looks each missing room key of a waiting event up in the backup, if a
    /// backup is enabled and we hold its key: once, and again after the
    /// backup changed. The events it unlocks are delivered again as late
    /// decryptions. Failures are logged.
    pub(crate) async fn restore_missing_keys_from_backup(&self) {
        let Ok(machine) = self.olm_machine() else { return };
        if machine.backup_version().is_none() || !matches!(machine.backup_decryption_key().await, Ok(Some(_))) {
            return;
        }
        let waiting: Vec<(OwnedRoomId, String)> = {
            let waiting = crate::client::lock(&self.inner.undecrypted);
            let mut keys: Vec<_> = waiting
                .iter()
                .filter_map(|(room_id, event)| {
                    Some((room_id.clone(), event["content"]["session_id"].as_str()?.to_owned()))
                })
                .collect();
            keys.sort();
            keys.dedup();
            keys
        };
        let now = self.now();
        let (read, recheck) = crate::client::lock(&self.inner.backup_lookups).needs_backup(&waiting, now);
        if !read {
            return;
        }
        let (info, etag) = match self.encryption().latest_backup_with_etag().await {
            Ok(Some(info)) => info,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "reading the backup version failed");
                return;
            }
        };
        let wanted =
            crate::client::lock(&self.inner.backup_lookups).take_due(waiting, (&info.version, &etag), recheck, now);
        for (room_id, session_id) in wanted {
            if let Err(error) = self.encryption().restore_room_key_from(&info, &room_id, &session_id).await {
                tracing::warn!(%room_id, %session_id, %error, "looking a room key up in the backup failed");
            }
        }
    }
}

impl Encryption {
    /// How many room keys wait to be uploaded to the backup.
    pub async fn backup_keys_pending(&self) -> Result<usize, ClientError> {
        Ok(self.client.olm_machine()?.backup_pending_count().await?)
    }

    /// Uploads every room key waiting for the backup now, one batch of 100
    /// at a time; `progress` gets (uploaded, total) before the first batch
    /// and after each. Keys are also uploaded by every sync, so this is for
    /// an application that wants to show progress, e.g. after enabling a
    /// backup on a device with many keys. [`ClientError::NoBackup`] if no
    /// backup is enabled.
    pub async fn upload_backup(&self, mut progress: impl FnMut(usize, usize)) -> Result<(), ClientError> {
        let machine = self.client.olm_machine()?;
        if machine.backup_version().is_none() {
            return Err(ClientError::NoBackup);
        }
        let total = machine.backup_pending_count().await?;
        let mut pending = total;
        progress(0, total);
        while pending > 0 {
            // `None`: an upload is in flight (another task sends it), or
            // nothing can be prepared; the drive loop sends what is listed.
            match machine.backup_room_keys().await? {
                Some(request) => self.client.send_crypto_request(&request).await?,
                None => self.client.send_outgoing_requests().await?,
            }
            let now_pending = machine.backup_pending_count().await?;
            if now_pending >= pending {
                // No progress (the backup was disabled, or keys keep coming).
                break;
            }
            pending = now_pending;
            progress(total.saturating_sub(pending), total);
        }
        Ok(())
    }
}

fn not_found(error: &ClientError) -> bool {
    matches!(error, ClientError::Http(HttpError::Server { status: 404, .. }))
}

impl Encryption {
    /// The current backup version on the server, if there is one.
    pub async fn latest_backup(&self) -> Result<Option<BackupInfo>, ClientError> {
        Ok(self.latest_backup_with_etag().await?.map(|(info, _)| info))
    }

    /// The current backup version and its `etag` (which changes whenever a
    /// key is added or replaced), if there is one.
    pub(crate) async fn latest_backup_with_etag(&self) -> Result<Option<(BackupInfo, String)>, ClientError> {
        let token = self.client.access_token()?;
        let request = get_latest_backup_info::v3::Request::new();
        let response = match self.client.http().send(request, Some(&token), Duration::ZERO).await {
            Ok(response) => response,
            Err(error) => {
                let error = ClientError::from(error);
                return if not_found(&error) { Ok(None) } else { Err(error) };
            }
        };
        let algorithm: Value = response.algorithm.deserialize_as_unchecked().map_err(ClientError::serialization)?;
        let info = BackupInfo {
            algorithm: algorithm["algorithm"].as_str().unwrap_or_default().to_owned(),
            auth_data: algorithm["auth_data"].clone(),
            version: response.version,
        };
        Ok(Some((info, response.etag)))
    }

    /// Creates a backup version with `auth_data` (our public key, signed)
    /// and returns it as the server now lists it. Sent once, never retried:
    /// a create whose answer was lost may have made a version, and a retry
    /// would make a second one (the caller finds the first by its key).
    pub(crate) async fn create_backup_version(&self, auth_data: Value) -> Result<BackupInfo, ClientError> {
        let token = self.client.access_token()?;
        let algorithm = serde_json::json!({ "algorithm": BACKUP_ALGORITHM, "auth_data": auth_data });
        let raw = Raw::new(&algorithm).map_err(ClientError::serialization)?.cast_unchecked();
        let request = create_backup_version::v3::Request::new(raw);
        let response = self.client.http().send_once(request, Some(&token), Duration::ZERO).await?;
        Ok(BackupInfo { algorithm: BACKUP_ALGORITHM.to_owned(), auth_data, version: response.version })
    }

    /// Deletes a backup version and its keys from the server.
    pub(crate) async fn delete_backup_version(&self, version: &str) -> Result<(), ClientError> {
        let token = self.client.access_token()?;
        let request = delete_backup_version::v3::Request::new(version.to_owned());
        self.client.http().send(request, Some(&token), Duration::ZERO).await?;
        Ok(())
    }

    /// Global account data of `event_type`, if set.
    pub(crate) async fn account_data(&self, event_type: &str) -> Result<Option<Value>, ClientError> {
        let token = self.client.access_token()?;
        let user_id = self.client.session().ok_or(ClientError::NotLoggedIn)?.user_id;
        let request = get_global_account_data::v3::Request::new(user_id, event_type.into());
        match self.client.http().send(request, Some(&token), Duration::ZERO).await {
            Ok(response) => {
                Ok(Some(response.account_data.deserialize_as_unchecked().map_err(ClientError::serialization)?))
            }
            Err(error) => {
                let error = ClientError::from(error);
                if not_found(&error) { Ok(None) } else { Err(error) }
            }
        }
    }

    /// Sets global account data of `event_type`.
    pub(crate) async fn set_account_data(&self, event_type: &str, content: &Value) -> Result<(), ClientError> {
        let token = self.client.access_token()?;
        let user_id = self.client.session().ok_or(ClientError::NotLoggedIn)?.user_id;
        let raw = Raw::new(content).map_err(ClientError::serialization)?.cast_unchecked();
        let request = set_global_account_data::v3::Request::new_raw(user_id, event_type.into(), raw);
        self.client.http().send(request, Some(&token), Duration::ZERO).await?;
        Ok(())
    }

    /// Restores every room key in the current backup (we must hold its
    /// private key: recovery, or `save_backup_decryption_key`). Entries that
    /// fail their check are counted, not imported. `progress` gets
    /// (processed, total).
    pub async fn restore_backup(&self, progress: impl FnMut(usize, usize)) -> Result<BackupRestoreResult, ClientError> {
        let machine = self.client.olm_machine()?;
        let info = self.latest_backup().await?.ok_or(ClientError::NoBackup)?;
        let key = machine.backup_decryption_key().await?.ok_or(ClientError::NoBackup)?;
        if key.public_key() != info.public_key()? {
            return Err(ClientError::Recovery(hush_crypto_core::RecoveryError::BackupKeyMismatch(info.version)));
        }
        let token = self.client.access_token()?;
        let request = get_backup_keys::v3::Request::new(info.version.clone());
        let response = self.client.http().send(request, Some(&token), Duration::ZERO).await?;
        let result = machine.import_backed_up_room_keys(&key, &response.rooms, progress).await?;
        self.client.retry_after_restore(&result).await;
        Ok(result)
    }

    /// Restores one room key from the backup (the key of an event that
    /// could not be decrypted). `Ok(false)` if the backup has no such key.
    pub async fn restore_room_key(&self, room_id: &RoomId, session_id: &str) -> Result<bool, ClientError> {
        let Some(info) = self.latest_backup().await? else { return Ok(false) };
        self.restore_room_key_from(&info, room_id, session_id).await
    }

    /// [`restore_room_key`](Self::restore_room_key) from a backup version
    /// already read.
    pub(crate) async fn restore_room_key_from(
        &self,
        info: &BackupInfo,
        room_id: &RoomId,
        session_id: &str,
    ) -> Result<bool, ClientError> {
        let machine = self.client.olm_machine()?;
        let Some(key) = machine.backup_decryption_key().await? else { return Ok(false) };
        // Our key cannot decrypt another backup's entries: no request for them.
        if info.public_key().ok() != Some(key.public_key()) {
            return Ok(false);
        }
        let token = self.client.access_token()?;
        let request = get_backup_keys_for_session::v3::Request::new(
            info.version.clone(),
            room_id.to_owned(),
            session_id.to_owned(),
        );
        let response = match self.client.http().send(request, Some(&token), Duration::ZERO).await {
            Ok(response) => response,
            Err(error) => {
                let error = ClientError::from(error);
                return if not_found(&error) { Ok(false) } else { Err(error) };
            }
        };
        let sessions = BTreeMap::from([(session_id.to_owned(), response.key_data)]);
        let rooms = BTreeMap::from([(room_id.to_owned(), RoomKeyBackup::new(sessions))]);
        let result = machine.import_backed_up_room_keys(&key, &rooms, |_, _| {}).await?;
        self.client.retry_after_restore(&result).await;
        Ok(result.imported_count > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> (OwnedRoomId, String) {
        ("!r:e.org".try_into().unwrap(), format!("s{n}"))
    }

    #[test]
    fn a_key_is_looked_up_once_per_state_of_the_backup_and_rechecked_at_most_every_ten_minutes() {
        let start = Timestamp::from_millis(1_000_000);
        let later = |secs: u64| Timestamp::from_millis(1_000_000 + secs * 1000);
        let mut lookups = BackupLookups::default();
        assert_eq!(lookups.needs_backup(&[key(0)], start), (true, false), "never looked up");
        assert_eq!(lookups.take_due(vec![key(0)], ("1", "etag1"), false, start), vec![key(0)]);
        // Looked up, nothing new: the recheck of the backup is due at once
        // (never checked), but the same etag brings no new lookup.
        assert_eq!(lookups.needs_backup(&[key(0)], start), (true, true));
        assert!(lookups.take_due(vec![key(0)], ("1", "etag1"), true, start).is_empty());
        // Within ten minutes of that check: the backup is not read again.
        assert_eq!(lookups.needs_backup(&[key(0)], later(599)), (false, false));
        // After ten minutes, a changed backup: looked up again, once.
        assert_eq!(lookups.needs_backup(&[key(0)], later(600)), (true, true));
        assert_eq!(lookups.take_due(vec![key(0)], ("1", "etag2"), true, later(600)), vec![key(0)]);
        assert!(lookups.take_due(vec![key(0)], ("1", "etag2"), true, later(1200)).is_empty());
        // A new key is looked up at once, whatever the recheck.
        assert_eq!(lookups.needs_backup(&[key(0), key(1)], later(601)), (true, false));
        assert_eq!(lookups.take_due(vec![key(0), key(1)], ("1", "etag2"), false, later(601)), vec![key(1)]);
        // A new backup version: its etags count anew, so every key is due.
        assert_eq!(lookups.take_due(vec![key(0)], ("2", "etag2"), false, later(602)), vec![key(0)]);
    }

    #[test]
    fn lookups_per_sync_are_bounded() {
        let mut lookups = BackupLookups::default();
        let waiting: Vec<_> = (0..100).map(key).collect();
        let now = Timestamp::from_millis(0);
        assert_eq!(lookups.take_due(waiting.clone(), ("1", "e"), false, now).len(), LOOKUPS_PER_SYNC);
        assert_eq!(lookups.take_due(waiting, ("1", "e"), false, now).len(), LOOKUPS_PER_SYNC, "the next ones");
    }
}
