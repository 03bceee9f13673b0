//! Key backup in the client: the homeserver's backup and account-data
//! endpoints, and restoring room keys from the backup on request (all of
//! it, or the key of one event). The engine checks trust and MACs, and
//! looks up the keys of undecryptable events itself (requests the drive
//! loop sends); this module moves the bytes.

use std::collections::BTreeMap;
use std::time::Duration;

use hush_crypto_core::{
    RoomKeyImportResult,
    backup::{BACKUP_ALGORITHM, BackupInfo, ServerBackup},
};
use ruma_client_api::{
    backup::{
        RoomKeyBackup, create_backup_version, delete_backup_version, get_backup_keys, get_backup_keys_for_session,
        get_latest_backup_info,
    },
    config::{get_global_account_data, set_global_account_data},
};
use ruma_common::{RoomId, serde::Raw};
use serde_json::Value;

use crate::{ClientError, Encryption, http::HttpError};

impl crate::Client {
    /// Runs the drive loop after a restore, so the engine decrypts the
    /// waiting events whose keys it brought (delivered as late
    /// decryptions). Failures are logged: the keys are stored.
    async fn deliver_restored(&self) {
        match self.drive().await {
            Ok(report) => {
                if let Some(error) = report.into_last_failure() {
                    tracing::warn!(%error, "a request failed after a restore");
                }
            }
            Err(error) => tracing::warn!(%error, "the drive loop failed after a restore"),
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
            // One batch per step, so `progress` sees each: the upload just
            // prepared, or the one already queued (a repeated upload is
            // harmless); the drive loop if there is none.
            let request = match machine.backup_room_keys().await? {
                Some(request) => Some(request),
                None => machine
                    .outgoing_requests(self.client.now())
                    .await?
                    .into_iter()
                    .find(|r| matches!(r.request(), hush_crypto_core::AnyOutgoingRequest::KeysBackup(_))),
            };
            match request {
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
    /// The current backup version on the server, if there is one: its
    /// algorithm and `auth_data` (`info`), how many keys it holds
    /// (`count`) and its `etag` (which changes whenever a key is added or
    /// replaced).
    pub async fn latest_backup(&self) -> Result<Option<ServerBackup>, ClientError> {
        let token = self.client.access_token()?;
        let request = get_latest_backup_info::v3::Request::new();
        let response = match self.client.http().send(request, Some(&token), Duration::ZERO).await {
            Ok(response) => response,
            Err(error) => {
                let error = ClientError::from(error);
                return if not_found(&error) { Ok(None) } else { Err(error) };
            }
        };
        Ok(Some(ServerBackup::from_response(&response).map_err(ClientError::serialization)?))
    }

    /// The current backup version's algorithm and `auth_data`, if any.
    pub(crate) async fn latest_backup_info(&self) -> Result<Option<BackupInfo>, ClientError> {
        Ok(self.latest_backup().await?.map(|backup| backup.info))
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
    pub async fn restore_backup(&self, progress: impl FnMut(usize, usize)) -> Result<RoomKeyImportResult, ClientError> {
        let machine = self.client.olm_machine()?;
        let info = self.latest_backup_info().await?.ok_or(ClientError::NoBackup)?;
        let key = machine.backup_decryption_key().await?.ok_or(ClientError::NoBackup)?;
        if key.public_key() != info.public_key()? {
            return Err(ClientError::Recovery(hush_crypto_core::RecoveryError::BackupKeyMismatch(info.version)));
        }
        let token = self.client.access_token()?;
        let request = get_backup_keys::v3::Request::new(info.version.clone());
        let response = self.client.http().send(request, Some(&token), Duration::ZERO).await?;
        let result = machine.import_backed_up_room_keys(&key, &response.rooms, progress).await?;
        self.client.deliver_restored().await;
        Ok(result)
    }

    /// Restores one room key from the backup (the key of an event that
    /// could not be decrypted). `Ok(false)` if the backup has no such key.
    pub async fn restore_room_key(&self, room_id: &RoomId, session_id: &str) -> Result<bool, ClientError> {
        let Some(info) = self.latest_backup_info().await? else { return Ok(false) };
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
        self.client.deliver_restored().await;
        Ok(result.imported_count > 0)
    }
}
