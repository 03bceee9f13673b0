//! Secret storage in the engine: the secrets this device holds, encrypted
//! for account data under a secret-storage key, and secrets read back from
//! account data, each checked against its public part before it is used
//! (the cross-signing keys against the keys the server lists for us, the
//! backup key against the backup version's public key). Either everything
//! read is used, or nothing changes.

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
    /// The stored backup key is malformed.
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
    /// Whether the backup key was recovered (and matches the backup).
    pub backup_key: bool,
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
    /// backup key is kept only if it is the private key of `backup`.
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
        let backup_key = match (read(names::BACKUP)?, backup) {
            (Some(secret), Some(info)) => {
                let private = BackupDecryptionKey::from_base64(&secret)?;
                if private.public_key() != info.public_key()? {
                    return Err(RecoveryError::BackupKeyMismatch(info.version.clone()));
                }
                Some(private)
            }
            (Some(_), None) => {
                tracing::warn!("secret storage holds a backup key but there is no backup to check it against");
                None
            }
            (None, _) => None,
        };
        let has_cross_signing =
            export.master.is_some() || export.self_signing.is_some() || export.user_signing.is_some();
        let cross_signing = match has_cross_signing {
            true => self.import_cross_signing_keys(&export).await?,
            false => self.cross_signing_status(),
        };
        if let Some(private) = &backup_key {
            self.save_backup_decryption_key(private).await?;
        }
        Ok(RecoveredSecrets { cross_signing, backup_key: backup_key.is_some() })
    }
}
