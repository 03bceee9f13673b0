//! Our cross-signing private keys. They live only in the store (encrypted at
//! rest by the persistent backends) and in this type, whose `Debug` names
//! the keys it holds and nothing else; each key zeroizes itself on drop.
//! An imported key is used only once it matches the public key the server
//! lists for us ([`PrivateCrossSigningIdentity::import`]).

use ruma_common::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use vodozemac::{Ed25519PublicKey, Ed25519SecretKey, Ed25519Signature};
use zeroize::{Zeroize, Zeroizing};

use super::{CrossSigningError, CrossSigningPublicKey, KeyRole, UserIdentityData, keys::key_id_of};

/// Which cross-signing private keys we hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrossSigningStatus {
    /// The master key.
    pub has_master: bool,
    /// The self-signing key.
    pub has_self_signing: bool,
    /// The user-signing key.
    pub has_user_signing: bool,
}

impl CrossSigningStatus {
    /// Whether all three are held.
    pub fn is_complete(&self) -> bool {
        self.has_master && self.has_self_signing && self.has_user_signing
    }
}

/// The private keys as secret storage and gossip carry them: unpadded
/// base64 of each 32-byte seed (`m.cross_signing.master` and so on).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CrossSigningKeyExport {
    /// The master key's seed.
    pub master: Option<Zeroizing<String>>,
    /// The self-signing key's seed.
    pub self_signing: Option<Zeroizing<String>>,
    /// The user-signing key's seed.
    pub user_signing: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for CrossSigningKeyExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossSigningKeyExport")
            .field("master", &self.master.is_some())
            .field("self_signing", &self.self_signing.is_some())
            .field("user_signing", &self.user_signing.is_some())
            .finish()
    }
}

/// Why importing cross-signing private keys failed. Nothing is imported then.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImportKeyError {
    /// The server lists no cross-signing keys for us (query our own keys first).
    #[error("the server lists no cross-signing identity for us to check the keys against")]
    NoPublicIdentity,
    /// A seed is not base64 of 32 bytes.
    #[error("the {} private key is not base64 of 32 bytes", role.name())]
    Malformed {
        /// The role.
        role: KeyRole,
    },
    /// A private key does not belong to the public key the server lists.
    #[error("the {} private key does not match the public key on the server", role.name())]
    Mismatch {
        /// The role.
        role: KeyRole,
    },
}

/// Our cross-signing private keys (any of the three may be missing: a
/// device may hold only the self-signing key, say), and whether the server
/// has the public half of the set we made.
#[derive(Serialize, Deserialize)]
pub struct PrivateCrossSigningIdentity {
    user_id: OwnedUserId,
    master: Option<Ed25519SecretKey>,
    self_signing: Option<Ed25519SecretKey>,
    user_signing: Option<Ed25519SecretKey>,
    /// Whether the signing-keys upload of keys we generated was accepted.
    uploaded: bool,
    /// The server lists an identity for us whose keys these are not (a
    /// reset elsewhere, or a server replaying an old identity): the keys are
    /// kept, but not used, exported or reported until they match again.
    #[serde(default)]
    stale: bool,
    /// Set aside for good: the server listed a new identity for us that we
    /// hold no keys of (a reset on another device). Only an import or a new
    /// bootstrap replaces retired keys.
    #[serde(default)]
    retired: bool,
}

impl std::fmt::Debug for PrivateCrossSigningIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateCrossSigningIdentity")
            .field("user_id", &self.user_id)
            .field("status", &self.status())
            .field("uploaded", &self.uploaded)
            .finish()
    }
}

impl Clone for PrivateCrossSigningIdentity {
    fn clone(&self) -> Self {
        let copy = |key: &Option<Ed25519SecretKey>| key.as_ref().map(copy_key);
        Self {
            user_id: self.user_id.clone(),
            master: copy(&self.master),
            self_signing: copy(&self.self_signing),
            user_signing: copy(&self.user_signing),
            uploaded: self.uploaded,
            stale: self.stale,
            retired: self.retired,
        }
    }
}

/// A copy of a secret key; the bytes vodozemac hands out are wiped.
fn copy_key(key: &Ed25519SecretKey) -> Ed25519SecretKey {
    let mut bytes = key.to_bytes();
    let copy = Ed25519SecretKey::from_slice(&bytes);
    bytes.zeroize();
    copy
}

impl PrivateCrossSigningIdentity {
    /// Three fresh keys for `user_id`, not uploaded yet.
    pub(crate) fn generate(user_id: &UserId) -> Self {
        Self {
            user_id: user_id.to_owned(),
            master: Some(Ed25519SecretKey::new()),
            self_signing: Some(Ed25519SecretKey::new()),
            user_signing: Some(Ed25519SecretKey::new()),
            uploaded: false,
            stale: false,
            retired: false,
        }
    }

    /// No keys, for a user who has none on this device yet.
    pub(crate) fn empty(user_id: &UserId) -> Self {
        Self {
            user_id: user_id.to_owned(),
            master: None,
            self_signing: None,
            user_signing: None,
            uploaded: true,
            stale: false,
            retired: false,
        }
    }

    /// Which keys we hold and may use (none while they are stale).
    pub fn status(&self) -> CrossSigningStatus {
        match self.stale {
            true => CrossSigningStatus::default(),
            false => self.held(),
        }
    }

    /// Which keys we hold, stale or not.
    pub(crate) fn held(&self) -> CrossSigningStatus {
        CrossSigningStatus {
            has_master: self.master.is_some(),
            has_self_signing: self.self_signing.is_some(),
            has_user_signing: self.user_signing.is_some(),
        }
    }

    /// Whether the server accepted the public keys of the set we generated.
    pub(crate) fn is_uploaded(&self) -> bool {
        self.uploaded
    }

    pub(crate) fn mark_uploaded(&mut self) {
        self.uploaded = true;
    }

    /// Whether the keys are set aside (see the field).
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    pub(crate) fn set_stale(&mut self, stale: bool) {
        self.stale = stale;
    }

    /// Whether the keys are retired for good (see the field).
    pub fn is_retired(&self) -> bool {
        self.retired
    }

    pub(crate) fn retire(&mut self) {
        self.retired = true;
        self.stale = true;
    }

    /// The key in `role`, for signing: not while stale.
    fn usable(&self, role: KeyRole) -> Result<&Ed25519SecretKey, CrossSigningError> {
        match self.stale {
            true => Err(CrossSigningError::MissingPrivateKey(role)),
            false => self.key(role).ok_or(CrossSigningError::MissingPrivateKey(role)),
        }
    }

    fn key(&self, role: KeyRole) -> Option<&Ed25519SecretKey> {
        match role {
            KeyRole::Master => self.master.as_ref(),
            KeyRole::SelfSigning => self.self_signing.as_ref(),
            KeyRole::UserSigning => self.user_signing.as_ref(),
        }
    }

    /// The public half of our key in `role`.
    pub fn public_key(&self, role: KeyRole) -> Option<Ed25519PublicKey> {
        self.key(role).map(Ed25519SecretKey::public_key)
    }

    /// Adds our signature in `role` to a JSON object (a device's keys).
    pub(crate) fn sign_json(&self, role: KeyRole, value: &mut serde_json::Value) -> Result<(), CrossSigningError> {
        let secret = self.usable(role)?;
        let sign = |bytes: &[u8]| -> Ed25519Signature { secret.sign(bytes) };
        crate::signing::sign_json(value, &self.user_id, &key_id_of(&secret.public_key()), sign)?;
        Ok(())
    }

    /// The public keys of a set we generated, the self-signing and
    /// user-signing keys signed by the master key (for the signing-keys upload).
    pub(crate) fn public_keys(&self) -> Result<Option<[CrossSigningPublicKey; 3]>, CrossSigningError> {
        let (Some(master), Some(self_signing), Some(user_signing)) = (
            self.public_key(KeyRole::Master),
            self.public_key(KeyRole::SelfSigning),
            self.public_key(KeyRole::UserSigning),
        ) else {
            return Ok(None);
        };
        let master = CrossSigningPublicKey::new_own(&self.user_id, KeyRole::Master, master);
        let mut self_signing = CrossSigningPublicKey::new_own(&self.user_id, KeyRole::SelfSigning, self_signing);
        let mut user_signing = CrossSigningPublicKey::new_own(&self.user_id, KeyRole::UserSigning, user_signing);
        for key in [&mut self_signing, &mut user_signing] {
            self.sign_key(KeyRole::Master, key)?;
        }
        Ok(Some([master, self_signing, user_signing]))
    }

    /// Adds our signature in `role` to `key` (self-signing and user-signing
    /// by the master key; another user's master by our user-signing key).
    pub(crate) fn sign_key(&self, role: KeyRole, key: &mut CrossSigningPublicKey) -> Result<(), CrossSigningError> {
        let secret = self.usable(role)?;
        key.sign(&self.user_id, &key_id_of(&secret.public_key()), |bytes| secret.sign(bytes))?;
        Ok(())
    }

    /// The seeds, for secret storage (nothing while the keys are stale:
    /// exporting them would overwrite good keys with useless ones).
    pub fn export(&self) -> CrossSigningKeyExport {
        if self.stale {
            return CrossSigningKeyExport::default();
        }
        let seed = |role| {
            self.key(role).map(|key| {
                let mut bytes = key.to_bytes();
                let encoded = Zeroizing::new(vodozemac::base64_encode(bytes.as_slice()));
                bytes.zeroize();
                encoded
            })
        };
        CrossSigningKeyExport {
            master: seed(KeyRole::Master),
            self_signing: seed(KeyRole::SelfSigning),
            user_signing: seed(KeyRole::UserSigning),
        }
    }

    /// The keys in `export` that match `identity` (our own, as the server
    /// lists it), on top of the keys we hold. Every given seed must match;
    /// otherwise nothing is imported.
    pub(crate) fn import(
        &self,
        export: &CrossSigningKeyExport,
        identity: &UserIdentityData,
    ) -> Result<Self, ImportKeyError> {
        let mut imported = self.clone();
        let roles = [
            (KeyRole::Master, &export.master, Some(identity.master_key())),
            (KeyRole::SelfSigning, &export.self_signing, Some(identity.self_signing_key())),
            (KeyRole::UserSigning, &export.user_signing, identity.user_signing_key()),
        ];
        for (role, seed, public) in roles {
            let Some(seed) = seed else { continue };
            let secret = crate::keys::ed25519_secret_from_base64(seed).ok_or(ImportKeyError::Malformed { role })?;
            if public.map(CrossSigningPublicKey::key) != Some(secret.public_key()) {
                return Err(ImportKeyError::Mismatch { role });
            }
            match role {
                KeyRole::Master => imported.master = Some(secret),
                KeyRole::SelfSigning => imported.self_signing = Some(secret),
                KeyRole::UserSigning => imported.user_signing = Some(secret),
            }
        }
        imported.uploaded = true;
        imported.stale = false;
        imported.retired = false;
        Ok(imported)
    }

    /// Whether the keys we hold are the public keys of `identity`.
    pub(crate) fn matches(&self, identity: &UserIdentityData) -> bool {
        let same = |role, public: Option<&CrossSigningPublicKey>| match self.public_key(role) {
            Some(ours) => public.map(CrossSigningPublicKey::key) == Some(ours),
            None => true,
        };
        same(KeyRole::Master, Some(identity.master_key()))
            && same(KeyRole::SelfSigning, Some(identity.self_signing_key()))
            && same(KeyRole::UserSigning, identity.user_signing_key())
    }
}
