//! [`Encryption::ensure_identity`]: the one call a bot, a bridge or the
//! CLI makes so its device lives by today's Matrix (spec v1.18: cross-sign
//! every device; Element shares room keys only with cross-signed ones).
//!
//! On an account without a cross-signing identity it creates one, signs
//! this device, creates a key backup and secret storage holding the
//! cross-signing and backup keys under a new recovery key, which it returns
//! (again on every call, until the application says the user has it). On an account set up elsewhere it needs that recovery key: it
//! imports the secrets, signs this device and restores the backup. It is
//! idempotent, and every step can be interrupted (a crash, a lost answer):
//! the next call finishes the work without a second identity or a second
//! backup version, because what a step needs again is saved before the
//! step's request leaves:
//! * the cross-signing keys are saved before their upload (the engine's
//!   bootstrap), and uploaded again unchanged;
//! * the backup key is saved before its version is created, and a version
//!   whose public key is that key is taken as ours, never created twice
//!   (the create is not retried by the HTTP layer either);
//! * the recovery key is saved (in the encrypted store) before secret
//!   storage is written, reused until secret storage is complete, and
//!   forgotten only when the application calls
//!   [`Encryption::recovery_key_saved`].
//!
//! `m.key_backup` account data (MSC4287, spec v1.19) is honoured: when the
//! user turned backup off, none is created or enabled; when this call turns
//! it on, it says so there.

use hush_crypto_core::deps::zeroize::Zeroizing;
use hush_crypto_core::{
    Changes,
    backup::{BackupDecryptionKey, BackupInfo},
    secret_storage::{DEFAULT_KEY_EVENT_TYPE, DefaultKeyContent, KeyDescription, SecretStorageKey},
};
use ruma_client_api::uiaa::AuthData;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{ClientError, Encryption, http::HttpError};

/// What [`Encryption::ensure_identity`] may use.
#[derive(Clone, Default)]
pub struct IdentitySetup {
    password: Option<Zeroizing<String>>,
    auth: Option<AuthData>,
    recovery_key: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for IdentitySetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySetup")
            .field("password", &self.password.is_some())
            .field("auth", &self.auth.is_some())
            .field("recovery_key", &self.recovery_key.is_some())
            .finish()
    }
}

impl IdentitySetup {
    /// Nothing yet: enough for an account whose server lets cross-signing
    /// keys be created without user-interactive auth (Synapse does, the
    /// first time).
    pub fn new() -> Self {
        Self::default()
    }

    /// The account password, for the server's user-interactive auth when it
    /// asks for it to create the cross-signing keys.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(Zeroizing::new(password.to_owned()));
        self
    }

    /// Auth of the caller's making (another UIA stage), instead of a password.
    pub fn auth(mut self, auth: AuthData) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The recovery key (or the secret-storage passphrase) of an account
    /// whose identity was set up elsewhere.
    pub fn recovery_key(mut self, recovery_key: &str) -> Self {
        self.recovery_key = Some(Zeroizing::new(recovery_key.to_owned()));
        self
    }
}

/// What [`Encryption::ensure_identity`] did.
#[derive(Clone, PartialEq, Eq)]
pub enum IdentityOutcome {
    /// The account had no identity; it has one now, with this device
    /// signed, and secret storage. The recovery key opens secret storage on
    /// a new device: give it to the user, then call
    /// [`Encryption::recovery_key_saved`]; until then every call returns it
    /// again.
    Created {
        /// The recovery key (zeroized when dropped).
        recovery_key: Zeroizing<String>,
        /// Whether a key backup is on (not when the user turned it off).
        backup: bool,
    },
    /// The account's identity was set up elsewhere: its secrets were
    /// imported with the recovery key, this device signed, the backup
    /// restored.
    Recovered {
        /// Room keys restored from the backup.
        restored_keys: usize,
    },
    /// Everything was in place already (this device signed, secret storage
    /// present); a missing backup was created or enabled.
    Ready {
        /// Whether a key backup is on.
        backup: bool,
    },
}

impl std::fmt::Debug for IdentityOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Created { backup, .. } => f.debug_struct("Created").field("backup", backup).finish_non_exhaustive(),
            Self::Recovered { restored_keys } => {
                f.debug_struct("Recovered").field("restored_keys", restored_keys).finish()
            }
            Self::Ready { backup } => f.debug_struct("Ready").field("backup", backup).finish(),
        }
    }
}

/// What [`Encryption::ensure_identity`] lacked to go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityNeed {
    /// The account's identity was set up on another device: give its
    /// recovery key (or secret-storage passphrase), or verify this device
    /// from one of those devices (SAS or QR code).
    #[error(
        "this account's cross-signing identity was set up elsewhere: give its recovery key, or verify this device from another one"
    )]
    RecoveryKey,
    /// Creating the cross-signing keys needs user-interactive auth the call
    /// did not carry: the password, or auth for one of these flows (give
    /// it with [`IdentitySetup::auth`], naming `session`).
    #[error(
        "creating the cross-signing keys needs user-interactive auth (the password, or one of the flows {flows:?})"
    )]
    Auth {
        /// The stage lists the server accepts.
        flows: Vec<Vec<String>>,
        /// The server's UIA session, to name in the auth.
        session: Option<String>,
    },
    /// Secret storage opened, but holds no cross-signing keys (set up by a
    /// client that kept them elsewhere): verify this device from another
    /// one of the account's devices (SAS or QR code).
    #[error("secret storage holds no cross-signing keys: verify this device from another of the account's devices")]
    Verification,
}

/// Where this account's identity stands on this device, as
/// [`Encryption::identity_status`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityStatus {
    /// The account has a cross-signing identity on the server.
    pub identity_on_server: bool,
    /// This device holds the master, self-signing and user-signing keys.
    pub private_keys: bool,
    /// The server lists this device signed by our self-signing key (what
    /// others judge it by: Element shares room keys only then).
    pub this_device_cross_signed: bool,
    /// Secret storage has a default key.
    pub secret_storage: bool,
    /// The server's current backup version, if any.
    pub backup_on_server: Option<String>,
    /// The backup version this device uploads to, if any.
    pub backup_enabled_here: Option<String>,
    /// This device holds the backup's private key.
    pub backup_key_held: bool,
    /// The user's choice in `m.key_backup`, if set.
    pub key_backup_preference: Option<bool>,
}

impl IdentityStatus {
    /// Whether everything today's Matrix expects is in place: an identity
    /// this device is signed by, secret storage, and a backup this device
    /// uploads to (unless the user turned backup off).
    pub fn is_complete(&self) -> bool {
        let backup = self.key_backup_preference == Some(false)
            || (self.backup_enabled_here.is_some() && self.backup_enabled_here == self.backup_on_server);
        self.identity_on_server && self.this_device_cross_signed && self.secret_storage && backup
    }
}

/// The custom value keeping a recovery key until it is returned.
const PENDING_KEY: &str = "hush.client.identity.pending_recovery";

/// A secret-storage key made but not yet handed to the user, as saved.
#[derive(Serialize, Deserialize)]
struct PendingRecovery {
    key_id: String,
    description: KeyDescription,
    recovery_key: String,
}

impl Drop for PendingRecovery {
    fn drop(&mut self) {
        use hush_crypto_core::deps::zeroize::Zeroize;
        self.recovery_key.zeroize();
    }
}

/// The `m.key_backup` account data event type (MSC4287, spec v1.19).
pub const KEY_BACKUP_EVENT_TYPE: &str = "m.key_backup";

impl Encryption {
    /// Makes sure this device has a cross-signing identity it is signed by,
    /// secret storage, and (unless the user turned it off in `m.key_backup`)
    /// a key backup: see the module documentation. Safe to call at every
    /// start; an interrupted call is finished by the next one. A new
    /// recovery key is returned by every call until
    /// [`recovery_key_saved`](Self::recovery_key_saved).
    ///
    /// Errors: [`ClientError::IdentityNeeds`] says what is missing (the
    /// recovery key of an identity set up elsewhere, or auth to create
    /// one); a wrong recovery key is [`ClientError::SecretStorage`] and
    /// changes nothing.
    pub async fn ensure_identity(&self, setup: IdentitySetup) -> Result<IdentityOutcome, ClientError> {
        let machine = self.client.olm_machine()?;
        let user_id = self.client.session().ok_or(ClientError::NotLoggedIn)?.user_id;
        // Our device keys on the server, then what it lists for us.
        self.client.send_outgoing_requests().await?;
        self.refresh_user_keys(&[&user_id]).await?;
        let on_server = machine.get_identity(&user_id).await?.is_some();
        if on_server && !machine.cross_signing_status().is_complete() {
            let Some(recovery_key) = setup.recovery_key.as_deref() else {
                return Err(ClientError::IdentityNeeds(IdentityNeed::RecoveryKey));
            };
            let summary = self.recover(recovery_key).await?;
            if !machine.cross_signing_status().has_self_signing {
                return Err(ClientError::IdentityNeeds(IdentityNeed::Verification));
            }
            self.sign_this_device().await?;
            return Ok(IdentityOutcome::Recovered { restored_keys: summary.restored_keys });
        }
        // Made here but perhaps never acknowledged (an earlier call's upload
        // answer lost): uploaded again, unchanged; acknowledged already: done.
        match self.create_cross_signing(&setup).await {
            Err(ClientError::CrossSigning(hush_crypto_core::identities::CrossSigningError::AlreadyBootstrapped)) => {}
            other => other?,
        }
        self.sign_this_device().await?;
        let backup = match self.key_backup_preference().await? {
            Some(false) => false,
            _ => self.ensure_backup().await?,
        };
        let pending = self.pending_recovery().await?;
        if pending.is_none() && self.account_data(DEFAULT_KEY_EVENT_TYPE).await?.is_some() {
            return Ok(IdentityOutcome::Ready { backup });
        }
        let pending = match pending {
            Some(pending) => pending,
            None => self.new_pending_recovery().await?,
        };
        let key = SecretStorageKey::from_recovery_key(&pending.key_id, &pending.description, &pending.recovery_key)?;
        self.write_secret_storage(&key).await?;
        if backup {
            self.set_account_data(KEY_BACKUP_EVENT_TYPE, &json!({ "enabled": true })).await?;
        }
        // Kept until the application says the user has it: a key lost on
        // its way (a crash, a closed terminal) is returned again.
        Ok(IdentityOutcome::Created { recovery_key: Zeroizing::new(pending.recovery_key.clone()), backup })
    }

    /// The user has the recovery key [`ensure_identity`](Self::ensure_identity)
    /// returned (shown, stored): it is forgotten here. Until this is
    /// called, every `ensure_identity` returns the same key again
    /// (`Created`), so a key lost between the call and the user is not
    /// lost for good.
    pub async fn recovery_key_saved(&self) -> Result<(), ClientError> {
        self.forget_pending_recovery().await
    }

    /// Where this account's identity stands on this device (reads the
    /// server: our keys, account data, the backup).
    pub async fn identity_status(&self) -> Result<IdentityStatus, ClientError> {
        let machine = self.client.olm_machine()?;
        let session = self.client.session().ok_or(ClientError::NotLoggedIn)?;
        self.refresh_user_keys(&[&session.user_id]).await?;
        let mut query = ruma_client_api::keys::get_keys::v3::Request::new();
        query.device_keys.insert(session.user_id.clone(), vec![session.device_id.clone()]);
        let token = self.client.access_token()?;
        let listed = self.client.http().send(query, Some(&token), std::time::Duration::ZERO).await?;
        let this_device = listed.device_keys.get(&session.user_id).and_then(|d| d.get(&session.device_id));
        let this_device: Option<Value> = this_device.and_then(|raw| raw.deserialize_as_unchecked().ok());
        let this_device_cross_signed = match this_device {
            Some(keys) => machine.is_own_device_cross_signed(&keys).await?,
            None => false,
        };
        Ok(IdentityStatus {
            identity_on_server: machine.get_identity(&session.user_id).await?.is_some(),
            private_keys: machine.cross_signing_status().is_complete(),
            this_device_cross_signed,
            secret_storage: self.account_data(DEFAULT_KEY_EVENT_TYPE).await?.is_some(),
            backup_on_server: self.latest_backup_info().await?.map(|b| b.version),
            backup_enabled_here: machine.backup_version(),
            backup_key_held: machine.backup_decryption_key().await?.is_some(),
            key_backup_preference: self.key_backup_preference().await?,
        })
    }

    /// The user's choice in `m.key_backup`: `Some(enabled)` if the event is
    /// there and well-formed; otherwise `None` (the spec: ignore it).
    pub async fn key_backup_preference(&self) -> Result<Option<bool>, ClientError> {
        let content = self.account_data(KEY_BACKUP_EVENT_TYPE).await?;
        Ok(content.and_then(|c| c.get("enabled").and_then(Value::as_bool)))
    }

    /// Creates and uploads the cross-signing keys (or uploads again keys
    /// made here whose upload was not acknowledged), with the setup's auth
    /// if the server asks for it. A server that asks for auth may hold an
    /// identity another device just made: our keys are queried again first,
    /// and such an identity is never replaced (its recovery key is needed
    /// instead).
    async fn create_cross_signing(&self, setup: &IdentitySetup) -> Result<(), ClientError> {
        let (flows, session) = match self.bootstrap_cross_signing(false, setup.auth.clone()).await {
            Err(ClientError::Http(HttpError::AuthRequired { flows, session, .. })) => (flows, session),
            other => return other,
        };
        let machine = self.client.olm_machine()?;
        let user_id = self.client.session().ok_or(ClientError::NotLoggedIn)?.user_id;
        self.refresh_user_keys(&[&user_id]).await?;
        let listed = machine.get_identity(&user_id).await?;
        let ours = machine.cross_signing_status().has_master && listed.as_ref().is_some_and(|i| i.is_verified());
        if listed.is_some() && !ours {
            return Err(ClientError::IdentityNeeds(IdentityNeed::RecoveryKey));
        }
        match (&setup.auth, &setup.password) {
            (None, Some(password)) => self.bootstrap_cross_signing_with_password(false, password).await,
            _ => Err(ClientError::IdentityNeeds(IdentityNeed::Auth { flows, session })),
        }
    }

    /// Signs this device with our self-signing key and uploads the
    /// signature (again, if an earlier call's upload may have been lost:
    /// the server keeps the one it has).
    async fn sign_this_device(&self) -> Result<(), ClientError> {
        if self.client.olm_machine()?.sign_own_device() {
            self.client.send_outgoing_requests().await?;
        }
        Ok(())
    }

    /// A key backup we hold the key of, enabled here: the current version
    /// if its public key is ours (made by an earlier, interrupted call, or
    /// on another of our devices whose key we got), else a new version with
    /// the key saved before it is created. A current version whose key we
    /// do not hold is left alone (`false`): replacing it would cut off the
    /// devices uploading to it.
    async fn ensure_backup(&self) -> Result<bool, ClientError> {
        let machine = self.client.olm_machine()?;
        let held = machine.backup_decryption_key().await?;
        if let Some(latest) = self.latest_backup_info().await? {
            let ours = held.as_ref().is_some_and(|key| is_key_of(&latest, key));
            if !ours {
                tracing::warn!(version = %latest.version, "a key backup exists whose key this device does not hold; left alone");
                return Ok(false);
            }
            if machine.backup_version().as_deref() != Some(latest.version.as_str()) {
                machine.enable_backup(&latest).await?;
                self.client.send_outgoing_requests().await?;
            }
            return Ok(true);
        }
        let key = match held {
            Some(key) => key,
            None => {
                let key = BackupDecryptionKey::generate()?;
                machine.save_backup_decryption_key(&key).await?;
                key
            }
        };
        let auth_data = machine.backup_auth_data(&key.public_key()).await?;
        let info = self.create_backup_version(auth_data).await?;
        machine.enable_backup(&info).await?;
        self.client.send_outgoing_requests().await?;
        Ok(true)
    }

    /// The recovery key saved by an earlier call that did not return it.
    async fn pending_recovery(&self) -> Result<Option<PendingRecovery>, ClientError> {
        let record = self.client.olm_machine()?.store().get_custom_value(PENDING_KEY).await?;
        // An empty record is one that was forgotten.
        let Some(record) = record.filter(|r| !r.is_empty()).map(Zeroizing::new) else { return Ok(None) };
        match serde_json::from_slice(&record) {
            Ok(pending) => Ok(Some(pending)),
            Err(error) => {
                tracing::warn!(%error, "a saved recovery key could not be read; a new one is made");
                Ok(None)
            }
        }
    }

    /// A new secret-storage key, saved before anything is written with it.
    async fn new_pending_recovery(&self) -> Result<PendingRecovery, ClientError> {
        let key = SecretStorageKey::generate()?;
        let pending = PendingRecovery {
            key_id: key.key_id().to_owned(),
            description: key.description().clone(),
            recovery_key: (*key.recovery_key()).clone(),
        };
        let record = Zeroizing::new(serde_json::to_vec(&pending).map_err(ClientError::serialization)?);
        let custom_values = vec![(PENDING_KEY.to_owned(), record.to_vec())];
        self.client.olm_machine()?.store().save_changes(Changes { custom_values, ..Default::default() }).await?;
        Ok(pending)
    }

    /// Forgets the saved recovery key (its record emptied).
    async fn forget_pending_recovery(&self) -> Result<(), ClientError> {
        let custom_values = vec![(PENDING_KEY.to_owned(), Vec::new())];
        self.client.olm_machine()?.store().save_changes(Changes { custom_values, ..Default::default() }).await?;
        Ok(())
    }

    /// Writes secret storage under `key`: its description, every secret we
    /// hold, then the default key (until it is set, no client reads them).
    /// Each write replaces the same account data: repeating it is harmless.
    pub(crate) async fn write_secret_storage(&self, key: &SecretStorageKey) -> Result<(), ClientError> {
        let machine = self.client.olm_machine()?;
        let description = serde_json::to_value(key.description()).map_err(ClientError::serialization)?;
        self.set_account_data(&key.event_type(), &description).await?;
        for (name, content) in machine.secrets_for_storage(key).await? {
            let content = serde_json::to_value(content).map_err(ClientError::serialization)?;
            self.set_account_data(&name, &content).await?;
        }
        let default = serde_json::to_value(DefaultKeyContent { key: key.key_id().to_owned() })
            .map_err(ClientError::serialization)?;
        self.set_account_data(DEFAULT_KEY_EVENT_TYPE, &default).await
    }
}

/// Whether `backup`'s public key is `key`'s.
fn is_key_of(backup: &BackupInfo, key: &BackupDecryptionKey) -> bool {
    backup.public_key().is_ok_and(|public| public.to_base64() == key.public_key().to_base64())
}
