//! Getting secrets and room keys from our other devices: asking for the
//! cross-signing keys and the backup key (after this device was verified),
//! asking for the room keys of waiting undecryptable events, and acting on
//! a backup key that arrived (the backup is enabled and restored). The
//! engine decides whom to answer and whose answers to take.

use std::sync::atomic::Ordering;

use hush_crypto_core::{gossip::GossipKind, secret_storage::names};

use crate::{ClientError, Encryption};

/// Room-key requests opened per sync, so a flood of undecryptable events
/// cannot make one sync send hundreds of requests.
const KEY_REQUESTS_PER_SYNC: usize = 20;

impl Encryption {
    /// Asks our other devices for the cross-signing private keys and the
    /// current backup's key. Only a device of ours that verified this one
    /// answers, and an answer is taken only from a device we verified (so
    /// verify first, e.g. by SAS). Secrets arrive with later syncs: the
    /// cross-signing keys are imported (our identity trusted, this device
    /// signed), and the backup key enables and restores the backup.
    pub async fn request_secrets_from_own_devices(&self) -> Result<(), ClientError> {
        let machine = self.client.olm_machine()?;
        for name in [names::MASTER, names::SELF_SIGNING, names::USER_SIGNING] {
            machine.request_secret(name).await?;
        }
        if let Some(backup) = self.latest_backup().await? {
            machine.request_backup_key(&backup).await?;
        }
        self.client.send_outgoing_requests().await
    }
}

impl crate::Client {
    /// Asks our other devices for the room keys of waiting undecryptable
    /// events that have no request open yet (at most 20 new ones per sync),
    /// if we have another device. Failures are logged.
    pub(crate) async fn request_missing_keys_from_own_devices(&self) {
        let Ok(machine) = self.olm_machine() else { return };
        let own = machine.user_id().to_owned();
        let others = match machine.get_user_devices(&own).await {
            Ok(devices) => devices.values().filter(|d| d.device_id() != machine.device_id() && !d.is_deleted()).count(),
            Err(error) => {
                tracing::warn!(%error, "reading our devices failed");
                return;
            }
        };
        if others == 0 {
            return;
        }
        let open = machine.open_gossip_requests();
        let wanted: Vec<(ruma_common::OwnedRoomId, String)> = {
            let waiting = crate::client::lock(&self.inner.undecrypted);
            let mut wanted = Vec::new();
            for (room_id, event) in waiting.iter() {
                let Some(session_id) = event["content"]["session_id"].as_str() else { continue };
                let kind = GossipKind::RoomKey { room_id: room_id.clone(), session_id: session_id.to_owned() };
                let key = (room_id.clone(), session_id.to_owned());
                if wanted.len() < KEY_REQUESTS_PER_SYNC
                    && !open.iter().any(|r| r.kind == kind)
                    && !wanted.contains(&key)
                {
                    wanted.push(key);
                }
            }
            wanted
        };
        let mut asked = 0;
        for (room_id, session_id) in wanted {
            match machine.request_room_key(&room_id, &session_id).await {
                Ok(request) => asked += usize::from(request.is_some()),
                Err(error) => tracing::warn!(%room_id, %session_id, %error, "opening a room-key request failed"),
            }
        }
        // A request that fails is logged by the drive and sent again later.
        if asked > 0
            && let Err(error) = self.drive().await
        {
            tracing::warn!(%error, "the drive loop failed after opening room-key requests");
        }
    }

    /// A backup key arrived from a verified device of ours: the current
    /// backup is enabled (it matches the key, so it is trusted) and
    /// restored. Failures are logged.
    pub(crate) async fn use_gossiped_backup_key(&self) {
        if !self.inner.backup_key_arrived.swap(false, Ordering::SeqCst) {
            return;
        }
        let encryption = self.encryption();
        let result = async {
            let machine = self.olm_machine()?;
            let Some(backup) = encryption.latest_backup().await? else { return Ok(0) };
            machine.enable_backup(&backup).await?;
            let restored = encryption.restore_backup(|_, _| {}).await?;
            let _requests = self.drive().await?;
            Ok::<_, ClientError>(restored.imported_count)
        }
        .await;
        match result {
            Ok(count) => tracing::info!(count, "restored the backup with a key from our verified device"),
            Err(error) => tracing::warn!(%error, "using the backup key from our device failed"),
        }
    }
}
