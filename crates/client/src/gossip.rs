//! Getting secrets from our other devices: asking for the cross-signing
//! keys and the backup key (after this device was verified), and restoring
//! the whole backup once its key arrived (the engine enables it). The
//! engine decides what to ask, whom to answer and whose answers to take,
//! and asks for the keys of undecryptable events itself.

use std::sync::atomic::Ordering;

use hush_crypto_core::secret_storage::names;

use crate::{ClientError, Encryption};

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
        if let Some(backup) = self.latest_backup_info().await? {
            machine.request_backup_key(&backup).await?;
        }
        self.client.send_outgoing_requests().await
    }
}

impl crate::Client {
    /// A backup key arrived from a verified device of ours: the current
    /// backup is enabled (it matches the key, so it is trusted; the engine
    /// does it too when its read of the backup is answered) and restored.
    /// Failures are logged.
    pub(crate) async fn use_gossiped_backup_key(&self) {
        if !self.inner.backup_key_arrived.swap(false, Ordering::SeqCst) {
            return;
        }
        let encryption = self.encryption();
        let result = async {
            let machine = self.olm_machine()?;
            let Some(backup) = encryption.latest_backup_info().await? else { return Ok(0) };
            if machine.backup_version().as_deref() != Some(backup.version.as_str()) {
                machine.enable_backup(&backup).await?;
            }
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
