//! Cross-signing public keys from outside, through one checked decoder:
//! [`CrossSigningPublicKey::parse`] accepts a key only if it names the user
//! it was listed under, has exactly the one usage of its role (a key in two
//! roles is refused), and holds exactly one ed25519 key whose key id names
//! that same key.

use std::sync::Arc;

use ruma_common::{OwnedUserId, UserId, encryption::CrossSigningKey, encryption::KeyUsage};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vodozemac::Ed25519PublicKey;

use crate::signing::{SignatureError, sign_json, verify_json};

/// The three cross-signing roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyRole {
    /// The master key: the user's identity; signs the other two.
    Master,
    /// Signs the user's own devices.
    SelfSigning,
    /// Signs other users' master keys.
    UserSigning,
}

impl KeyRole {
    /// The `usage` value the spec gives the role.
    pub fn usage(self) -> KeyUsage {
        match self {
            Self::Master => KeyUsage::Master,
            Self::SelfSigning => KeyUsage::SelfSigning,
            Self::UserSigning => KeyUsage::UserSigning,
        }
    }

    /// The role's name in errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::SelfSigning => "self-signing",
            Self::UserSigning => "user-signing",
        }
    }
}

/// Why a user's cross-signing keys were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The JSON is not a cross-signing key.
    #[error("malformed {} key: {reason}", role.name())]
    Malformed {
        /// The role the key was listed as.
        role: KeyRole,
        /// What was wrong.
        reason: String,
    },
    /// The key names another user than the one it was listed under.
    #[error("the {} key names {found}, expected {expected}", role.name())]
    UserMismatch {
        /// The role.
        role: KeyRole,
        /// The user it was listed under.
        expected: OwnedUserId,
        /// The user named inside.
        found: OwnedUserId,
    },
    /// The usage is not exactly the role's one usage.
    #[error("the {} key has usage {found:?}", role.name())]
    Usage {
        /// The role.
        role: KeyRole,
        /// The usages it claims.
        found: Vec<String>,
    },
    /// Not exactly one ed25519 key whose id names it.
    #[error("the {} key must hold exactly one ed25519 key named by its key id", role.name())]
    KeyId {
        /// The role.
        role: KeyRole,
    },
    /// The signature that ties the key to the master key is missing or wrong.
    #[error("the {} key is not signed by the master key: {source}", role.name())]
    NotSignedByMaster {
        /// The role.
        role: KeyRole,
        /// The check that failed.
        source: SignatureError,
    },
    /// One public key in two roles (key confusion).
    #[error("the same public key is used as the {} and the {} key", first.name(), second.name())]
    KeyReused {
        /// One role.
        first: KeyRole,
        /// The other.
        second: KeyRole,
    },
    /// A key the identity needs is not listed (a self-signing key without
    /// a master key, or the reverse).
    #[error("the {} key is missing", role.name())]
    Missing {
        /// The role of the missing key.
        role: KeyRole,
    },
}

/// The key id a cross-signing key signs with: `ed25519:` and the key itself.
pub(crate) fn key_id_of(key: &Ed25519PublicKey) -> String {
    format!("ed25519:{}", key.to_base64())
}

/// One user's cross-signing public key in one role, checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrossSigningPublicKey {
    user_id: OwnedUserId,
    role: KeyRole,
    key: Ed25519PublicKey,
    /// The JSON as received, so its signatures can be checked again and
    /// extended (a signature upload carries the whole object).
    signed: Arc<Value>,
}

impl CrossSigningPublicKey {
    /// Checks `value`, listed as `user_id`'s key in `role` (signatures are
    /// checked by whoever knows the signer: see
    /// [`is_signed_by`](Self::is_signed_by)).
    pub fn parse(value: Value, user_id: &UserId, role: KeyRole) -> Result<Self, IdentityError> {
        let depth = crate::store::json_depth(&value);
        if depth > crate::store::MAX_JSON_DEPTH {
            let reason = format!("nested {depth} levels deep (at most {})", crate::store::MAX_JSON_DEPTH);
            return Err(IdentityError::Malformed { role, reason });
        }
        let parsed = CrossSigningKey::deserialize(&value)
            .map_err(|e| IdentityError::Malformed { role, reason: e.to_string() })?;
        if parsed.user_id != user_id {
            return Err(IdentityError::UserMismatch { role, expected: user_id.to_owned(), found: parsed.user_id });
        }
        if parsed.usage.as_slice() != [role.usage()] {
            let found = parsed.usage.iter().map(|u| u.as_str().to_owned()).collect();
            return Err(IdentityError::Usage { role, found });
        }
        let mut keys = parsed.keys.iter();
        let (Some((key_id, encoded)), None) = (keys.next(), keys.next()) else {
            return Err(IdentityError::KeyId { role });
        };
        let key = crate::keys::ed25519_from_base64(encoded).map_err(|_| IdentityError::KeyId { role })?;
        if key_id.as_str() != key_id_of(&key) {
            return Err(IdentityError::KeyId { role });
        }
        Ok(Self { user_id: user_id.to_owned(), role, key, signed: Arc::new(value) })
    }

    /// A key we made: `user_id`'s public key in `role`, unsigned.
    pub(crate) fn new_own(user_id: &UserId, role: KeyRole, key: Ed25519PublicKey) -> Self {
        let value = serde_json::json!({
            "user_id": user_id,
            "usage": [role.usage().as_str()],
            "keys": { key_id_of(&key): key.to_base64() },
        });
        Self { user_id: user_id.to_owned(), role, key, signed: Arc::new(value) }
    }

    /// The owner.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The role.
    pub fn role(&self) -> KeyRole {
        self.role
    }

    /// The public key.
    pub fn key(&self) -> Ed25519PublicKey {
        self.key
    }

    /// The signed JSON as received (or as we made and signed it).
    pub fn signed_json(&self) -> &Value {
        &self.signed
    }

    /// Whether `signer`'s key `key` signed this key.
    pub fn is_signed_by(&self, signer: &UserId, key: &Ed25519PublicKey) -> bool {
        self.check_signed_by(signer, &key_id_of(key), key).is_ok()
    }

    /// Checks the signature by `signer` under `key_id` (a device's
    /// `ed25519:DEVICE` or a cross-signing key's `ed25519:KEY`).
    pub(crate) fn check_signed_by(
        &self,
        signer: &UserId,
        key_id: &str,
        key: &Ed25519PublicKey,
    ) -> Result<(), SignatureError> {
        verify_json(&self.signed, signer, key_id, key)
    }

    /// This key as a signature upload carries it: the signed object with
    /// only the signature `signer` made under `key_id` (absent if there is
    /// none). A server checks every signature of an uploaded master key of
    /// our own as a signature by one of our devices (Synapse answers
    /// `M_INVALID_SIGNATURE` for the master key's self-signature, or another
    /// client's), and merges what it accepts with what it holds.
    pub(crate) fn with_only_signature(&self, signer: &UserId, key_id: &str) -> Value {
        let mut object = (*self.signed).clone();
        let signature =
            object.get("signatures").and_then(|s| s.get(signer.as_str())).and_then(|s| s.get(key_id)).cloned();
        if let Value::Object(map) = &mut object {
            map.remove("unsigned");
            let signatures = signature.map(|s| serde_json::json!({ signer.as_str(): { key_id: s } }));
            map.insert("signatures".to_owned(), signatures.unwrap_or_else(|| serde_json::json!({})));
        }
        object
    }

    /// Takes `signer`'s signature under `key_id` from `older`, another copy
    /// of this same key, if this copy lacks it and it verifies on this copy
    /// with `key`: whether it did. (Our signature of a key we verified,
    /// which the server does not list: its upload was lost.)
    pub(crate) fn adopt_signature(
        &mut self,
        older: &Self,
        signer: &UserId,
        key_id: &str,
        key: &Ed25519PublicKey,
    ) -> bool {
        if older.key() != self.key() || self.check_signed_by(signer, key_id, key).is_ok() {
            return false;
        }
        let signature =
            older.signed.get("signatures").and_then(|s| s.get(signer.as_str())).and_then(|s| s.get(key_id)).cloned();
        let Some(signature) = signature else { return false };
        let before = Arc::clone(&self.signed);
        let inserted = (|| {
            let map = Arc::make_mut(&mut self.signed).as_object_mut()?;
            let signatures = map.entry("signatures").or_insert_with(|| serde_json::json!({})).as_object_mut()?;
            let by_signer =
                signatures.entry(signer.as_str()).or_insert_with(|| serde_json::json!({})).as_object_mut()?;
            by_signer.insert(key_id.to_owned(), signature);
            Some(())
        })();
        if inserted.is_none() || self.check_signed_by(signer, key_id, key).is_err() {
            self.signed = before;
            return false;
        }
        true
    }

    /// Adds a signature by `signer` under `key_id`.
    pub(crate) fn sign(
        &mut self,
        signer: &UserId,
        key_id: &str,
        sign: impl FnOnce(&[u8]) -> vodozemac::Ed25519Signature,
    ) -> Result<(), SignatureError> {
        sign_json(Arc::make_mut(&mut self.signed), signer, key_id, sign)
    }
}
