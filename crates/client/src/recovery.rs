//! Recovery: what makes a new login able to read its history and be
//! trusted. [`Encryption::enable_recovery`] sets it up on a device that has
//! the keys (cross-signing, a key backup, secret storage holding both under
//! a recovery key); [`Encryption::recover`] uses it on a new device;
//! [`Encryption::reset_recovery`] replaces the backup and the recovery key.

use std::collections::BTreeMap;

use hush_crypto_core::deps::zeroize::Zeroizing;
use hush_crypto_core::{
    RecoveredSecrets,
    backup::BackupDecryptionKey,
    secret_storage::{
        DEFAULT_KEY_EVENT_TYPE, DefaultKeyContent, KEY_EVENT_TYPE_PREFIX, KeyDescription, SecretContent,
        SecretStorageKey, decode_recovery_key, names,
    },
};

use crate::{ClientError, Encryption};

/// What [`Encryption::recover`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoverySummary {
    /// The secrets recovered.
    pub secrets: RecoveredSecrets,
    /// Room keys restored from the backup.
    pub restored_keys: usize,
}

/// What [`Encryption::enable_recovery`] needs beyond the account: two
/// secrets that must not be swapped, so each is named. `Debug` shows
/// whether each is set, never its value.
#[derive(Clone, Copy, Default)]
pub struct RecoveryOptions<'a> {
    passphrase: Option<&'a str>,
    account_password: Option<&'a str>,
}

impl<'a> RecoveryOptions<'a> {
    /// No passphrase (the recovery key alone opens secret storage), no
    /// account password (the server must not ask for auth).
    pub fn new() -> Self {
        Self::default()
    }

    /// Secret storage's key is derived from this passphrase too (the
    /// recovery key still opens it).
    pub fn passphrase(mut self, passphrase: &'a str) -> Self {
        self.passphrase = Some(passphrase);
        self
    }

    /// The account's login password, to answer the server's
    /// user-interactive auth when cross-signing keys are uploaded.
    pub fn account_password(mut self, password: &'a str) -> Self {
        self.account_password = Some(password);
        self
    }
}

impl std::fmt::Debug for RecoveryOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryOptions")
            .field("passphrase", &self.passphrase.map(|_| "(set)"))
            .field("account_password", &self.account_password.map(|_| "(set)"))
            .finish()
    }
}

impl Encryption {
    /// Sets up recovery: cross-signing (bootstrapped if this account has
    /// none; the account password answers the server's auth if it asks), a
    /// new key backup signed by this device and our master key, and secret
    /// storage holding the cross-signing keys and the backup key under a
    /// new key, derived from the passphrase if given. Returns the recovery
    /// key for the user to keep (it opens secret storage, as the passphrase
    /// does).
    pub async fn enable_recovery(&self, options: RecoveryOptions<'_>) -> Result<Zeroizing<String>, ClientError> {
        let RecoveryOptions { passphrase, account_password } = options;
        let machine = self.client.olm_machine()?;
        let user_id = self.client.session().ok_or(ClientError::NotLoggedIn)?.user_id;
        self.refresh_user_keys(&[&user_id]).await?;
        if !machine.cross_signing_status().is_complete() {
            match account_password {
                Some(password) => self.bootstrap_cross_signing_with_password(false, password).await?,
                None => self.bootstrap_cross_signing(false, None).await?,
            }
        }
        self.create_backup().await?;
        self.create_secret_storage(passphrase).await
    }

    /// Replaces the key backup with a new one (the old version is deleted)
    /// and secret storage with a new key; the cross-signing identity stays.
    /// Returns the new recovery key.
    pub async fn reset_recovery(&self, passphrase: Option<&str>) -> Result<Zeroizing<String>, ClientError> {
        if let Some(old) = self.latest_backup_info().await? {
            self.delete_backup_version(&old.version).await?;
        }
        self.create_backup().await?;
        self.create_secret_storage(passphrase).await
    }

    /// A new backup version with a new key, enabled here (every key we hold
    /// is queued for it), and the key kept for secret storage.
    async fn create_backup(&self) -> Result<(), ClientError> {
        let machine = self.client.olm_machine()?;
        let key = BackupDecryptionKey::generate()?;
        let auth_data = machine.backup_auth_data(&key.public_key()).await?;
        let info = self.create_backup_version(auth_data).await?;
        machine.save_backup_decryption_key(&key).await?;
        machine.enable_backup(&info).await?;
        self.client.send_outgoing_requests().await
    }

    async fn create_secret_storage(&self, passphrase: Option<&str>) -> Result<Zeroizing<String>, ClientError> {
        let machine = self.client.olm_machine()?;
        let key = match passphrase {
            Some(passphrase) => {
                // PBKDF2 with 500,000 rounds: off the async workers.
                let passphrase = Zeroizing::new(passphrase.to_owned());
                blocking(move || SecretStorageKey::generate_from_passphrase(&passphrase)).await??
            }
            None => SecretStorageKey::generate()?,
        };
        self.write_secret_storage(&key).await?;
        // The user turned key backup on (MSC4287): other clients may follow.
        let enabled = serde_json::json!({ "enabled": machine.backup_version().is_some() });
        self.set_account_data(crate::KEY_BACKUP_EVENT_TYPE, &enabled).await?;
        Ok(key.recovery_key())
    }

    /// Opens secret storage with the recovery key or the passphrase (text
    /// that decodes as a recovery key is taken as one), imports the
    /// cross-signing keys (checked against the server's; this device is
    /// then signed, so our other devices and our contacts see it verified)
    /// and the backup key (checked against the current backup), enables the
    /// backup and restores every key from it. A wrong key is
    /// [`ClientError::SecretStorage`] and changes nothing.
    pub async fn recover(&self, recovery_key_or_passphrase: &str) -> Result<RecoverySummary, ClientError> {
        let machine = self.client.olm_machine()?;
        let key = self.open_secret_storage(recovery_key_or_passphrase).await?;
        let user_id = self.client.session().ok_or(ClientError::NotLoggedIn)?.user_id;
        self.refresh_user_keys(&[&user_id]).await?;
        let backup = self.latest_backup_info().await?;
        let mut secrets = BTreeMap::new();
        for name in names::ALL {
            if let Some(content) = self.account_data(name).await? {
                match serde_json::from_value::<SecretContent>(content) {
                    Ok(content) => {
                        secrets.insert(name.to_owned(), content);
                    }
                    Err(error) => tracing::warn!(%name, %error, "ignored malformed secret-storage content"),
                }
            }
        }
        let recovered = machine.import_secrets_from_storage(&key, &secrets, backup.as_ref()).await?;
        self.client.send_outgoing_requests().await?;
        let mut restored_keys = 0;
        // The user's choice in m.key_backup (spec v1.19) holds: no backup
        // turned on here when they turned it off.
        let backup_off = self.key_backup_preference().await? == Some(false);
        if let (true, false, Some(backup)) = (recovered.has_backup_key(), backup_off, backup) {
            machine.enable_backup(&backup).await?;
            restored_keys = self.restore_backup(|_, _| {}).await?.imported_count;
        }
        Ok(RecoverySummary { secrets: recovered, restored_keys })
    }

    async fn open_secret_storage(&self, text: &str) -> Result<SecretStorageKey, ClientError> {
        let default = self.account_data(DEFAULT_KEY_EVENT_TYPE).await?.ok_or(ClientError::NoSecretStorage)?;
        let default: DefaultKeyContent = serde_json::from_value(default).map_err(ClientError::serialization)?;
        let description = self
            .account_data(&format!("{KEY_EVENT_TYPE_PREFIX}{}", default.key))
            .await?
            .ok_or(ClientError::NoSecretStorage)?;
        let description: KeyDescription = serde_json::from_value(description).map_err(ClientError::serialization)?;
        let key = match decode_recovery_key(text) {
            Ok(_) => SecretStorageKey::from_recovery_key(&default.key, &description, text)?,
            Err(_) => {
                // PBKDF2 with up to 10,000,000 rounds (as account data says): off the async workers.
                let text = Zeroizing::new(text.to_owned());
                blocking(move || SecretStorageKey::from_passphrase(&default.key, &description, &text)).await??
            }
        };
        Ok(key)
    }
}

/// Runs CPU-heavy work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ClientError::Task(format!("a blocking task failed: {e}")))
}
