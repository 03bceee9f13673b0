//! Secret storage in the engine: the secrets this device holds, encrypted
//! for account data under a secret-storage key, and secrets read back from
//! account data, each checked against its public part before it is used
//! (the cross-signing keys against the keys the server lists for us, the
//! backup key against the backup version's public key). A secret that fails
//! its check changes nothing; a backup key that is not the current
//! backup's is dropped without undoing the cross-signing part.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::OlmMachine;
use crate::{
    StoreError,
    backup::{BackupDecryptionKey, BackupInfo, BackupKeyError},
    identities::{CrossSigningError, CrossSigningKeyExport, CrossSigningStatus},
    secret_storage::{SecretContent, SecretStorageError, SecretStorageKey, decrypt_secret, encrypt_secret, names},
};

/// Why secrets could not be stored or recovered. Nothing changed then.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    /// The key is wrong for the secrets, or a secret failed its check.
    #[error(transparent)]
    SecretStorage(#[from] SecretStorageError),
    /// The cross-signing keys do not match the ones the server lists for us.
    #[error(transparent)]
    CrossSigning(#[from] CrossSigningError),
    /// A backup key is malformed.
    #[error(transparent)]
    BackupKey(#[from] BackupKeyError),
    /// The stored backup key is not the private key of the current backup.
    #[error("the backup key in secret storage does not belong to backup version {0}")]
    BackupKeyMismatch(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a recovery from secret storage gave this device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredSecrets {
    /// The cross-signing keys now held.
    pub cross_signing: CrossSigningStatus,
    /// What became of the backup key.
    pub backup_key: BackupKeyRecovery,
}

impl RecoveredSecrets {
    /// Whether the backup key was recovered (and matches the backup).
    pub fn has_backup_key(&self) -> bool {
        self.backup_key == BackupKeyRecovery::Recovered
    }
}

/// What became of the backup key during a recovery. Only `Recovered` keeps
/// it; the others leave the cross-signing part of the recovery standing (a
/// stale backup key after someone made a new backup must not cost the user
/// their identity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupKeyRecovery {
    /// Kept: it is the private key of the current backup.
    Recovered,
    /// Secret storage holds no backup key.
    NotInStorage,
    /// There is no backup to check the stored key against, so it was not kept.
    NoBackup,
    /// The stored key is not the private key of this backup version (a
    /// stale key, or someone replaced the backup): not kept.
    Mismatch {
        /// The current backup version.
        version: String,
    },
    /// The stored secret is not a backup key: not kept.
    Malformed(BackupKeyError),
}

impl OlmMachine {
    /// The secrets this device holds (cross-signing private keys, the backup
    /// key), each encrypted under `key` as the account-data content of its
    /// name: `(event type, content)` pairs to `PUT` as global account data.
    pub async fn secrets_for_storage(
        &self,
        key: &SecretStorageKey,
    ) -> Result<Vec<(String, SecretContent)>, RecoveryError> {
        let mut plain: Vec<(&str, Zeroizing<String>)> = Vec::new();
        if let Some(export) = self.export_cross_signing_keys() {
            let CrossSigningKeyExport { master, self_signing, user_signing } = export;
            plain.extend(master.map(|s| (names::MASTER, s)));
            plain.extend(self_signing.map(|s| (names::SELF_SIGNING, s)));
            plain.extend(user_signing.map(|s| (names::USER_SIGNING, s)));
        }
        if let Some(backup) = self.backup_decryption_key().await? {
            plain.push((names::BACKUP, backup.to_base64()));
        }
        let mut out = Vec::with_capacity(plain.len());
        for (name, secret) in plain {
            let mut content = SecretContent::default();
            content.encrypted.insert(key.key_id().to_owned(), encrypt_secret(key, name, &secret)?);
            out.push((name.to_owned(), content));
        }
        Ok(out)
    }

    /// Recovers secrets from account data (`secrets` by event type) with
    /// `key`. Every secret present is decrypted first (a failed check is an
    /// error, and nothing changes); the cross-signing keys are imported only
    /// if they match the keys the server lists for us (query our own keys
    /// first), which marks our identity trusted and signs this device; the
    /// backup key is kept only if it is the private key of `backup` (if it
    /// is not, the rest of the recovery still stands and the result says
    /// why the key was dropped).
    pub async fn import_secrets_from_storage(
        &self,
        key: &SecretStorageKey,
        secrets: &BTreeMap<String, SecretContent>,
        backup: Option<&BackupInfo>,
    ) -> Result<RecoveredSecrets, RecoveryError> {
        let read = |name: &str| -> Result<Option<Zeroizing<String>>, RecoveryError> {
            match secrets.get(name) {
                Some(content) => Ok(Some(decrypt_secret(key, name, content)?)),
                None => Ok(None),
            }
        };
        let export = CrossSigningKeyExport {
            master: read(names::MASTER)?,
            self_signing: read(names::SELF_SIGNING)?,
            user_signing: read(names::USER_SIGNING)?,
        };
        let (backup_key, private) = match (read(names::BACKUP)?, backup) {
            (Some(secret), Some(info)) => match (BackupDecryptionKey::from_base64(&secret), info.public_key()) {
                (Ok(private), Ok(public)) if private.public_key() == public => {
                    (BackupKeyRecovery::Recovered, Some(private))
                }
                (Ok(_), Ok(_)) => (BackupKeyRecovery::Mismatch { version: info.version.clone() }, None),
                (Err(error), _) => (BackupKeyRecovery::Malformed(error), None),
                // The backup names no valid public key: nothing can match it.
                (Ok(_), Err(_)) => (BackupKeyRecovery::Mismatch { version: info.version.clone() }, None),
            },
            (Some(_), None) => (BackupKeyRecovery::NoBackup, None),
            (None, _) => (BackupKeyRecovery::NotInStorage, None),
        };
        if backup_key != BackupKeyRecovery::Recovered {
            tracing::warn!(?backup_key, "the backup key in secret storage was not kept");
        }
        let has_cross_signing =
            export.master.is_some() || export.self_signing.is_some() || export.user_signing.is_some();
        let cross_signing = match has_cross_signing {
            true => self.import_cross_signing_keys(&export).await?,
            false => self.cross_signing_status(),
        };
        if let Some(private) = &private {
            self.save_backup_decryption_key(private).await?;
        }
        Ok(RecoveredSecrets { cross_signing, backup_key })
    }
}
