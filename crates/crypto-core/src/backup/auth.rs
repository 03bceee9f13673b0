//! A backup version as the server describes it ([`BackupInfo`]), its
//! `auth_data` ([`BackupAuthData`]) and why we trust it or not
//! ([`BackupTrust`]).
//!
//! The spec: a client stores keys in a backup only once it trusts the
//! `auth_data`, either because it is signed by the user's master key or by a
//! verified device of the user, or because we hold the private key from a
//! trusted source (the user, secret storage, a verified device).

use ruma_common::{OwnedDeviceId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vodozemac::Ed25519PublicKey;

use super::{BACKUP_ALGORITHM, BackupEncryptionKey, BackupKeyError};

/// A backup version (`GET /room_keys/version`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// The backup algorithm.
    pub algorithm: String,
    /// The algorithm's data: for v1, the public key and its signatures.
    pub auth_data: Value,
    /// The version id the server gave.
    pub version: String,
}

/// The v1 `auth_data`: the backup's public key, signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupAuthData {
    /// The curve25519 public key (unpadded base64).
    pub public_key: String,
    /// Signatures by user and key id.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub signatures: serde_json::Map<String, Value>,
}

/// Whether we upload to a backup, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupTrust {
    /// We hold the private key of its public key, from a trusted source.
    PrivateKeyHeld,
    /// Signed by this device.
    SignedByThisDevice,
    /// Signed by another device of ours that we verified.
    SignedByVerifiedDevice(OwnedDeviceId),
    /// Signed by our master key, which we trust.
    SignedByMasterKey,
    /// None of the above: we neither upload to it nor offer to restore from
    /// it without the private key.
    Untrusted,
}

impl BackupTrust {
    /// Whether keys may be uploaded to the backup.
    pub fn is_trusted(&self) -> bool {
        !matches!(self, Self::Untrusted)
    }
}

impl BackupInfo {
    /// The backup's public key, if the algorithm is v1 and the key is valid.
    pub fn public_key(&self) -> Result<BackupEncryptionKey, BackupKeyError> {
        if self.algorithm != BACKUP_ALGORITHM {
            return Err(BackupKeyError::MalformedPublicKey(format!("unsupported algorithm {}", self.algorithm)));
        }
        let key = self
            .auth_data
            .get("public_key")
            .and_then(Value::as_str)
            .ok_or_else(|| BackupKeyError::MalformedPublicKey("no public_key".into()))?;
        BackupEncryptionKey::from_base64(key)
    }

    /// The key ids under which `user_id` signed the `auth_data`.
    pub(crate) fn signing_key_ids(&self, user_id: &UserId) -> Vec<String> {
        self.auth_data
            .get("signatures")
            .and_then(|s| s.get(user_id.as_str()))
            .and_then(Value::as_object)
            .map(|by_key| by_key.keys().take(32).cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `user_id` signed the `auth_data` with `key` under `key_id`.
    pub(crate) fn is_signed_by(&self, user_id: &UserId, key_id: &str, key: &Ed25519PublicKey) -> bool {
        crate::signing::verify_json(&self.auth_data, user_id, key_id, key).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use ruma_common::user_id;

    use super::*;

    #[test]
    fn the_public_key_is_read_only_for_v1_backups() {
        let key = crate::backup::BackupDecryptionKey::generate().unwrap().public_key();
        let mut info = BackupInfo {
            algorithm: BACKUP_ALGORITHM.into(),
            auth_data: serde_json::json!({ "public_key": key.to_base64() }),
            version: "1".into(),
        };
        assert_eq!(info.public_key().unwrap(), key);
        info.algorithm = "org.example.other".into();
        assert!(info.public_key().is_err());
        info.algorithm = BACKUP_ALGORITHM.into();
        info.auth_data = serde_json::json!({ "public_key": "AAAA" });
        assert!(info.public_key().is_err());
    }

    #[test]
    fn a_signature_is_checked_against_the_key_it_claims() {
        let signer = vodozemac::Ed25519SecretKey::new();
        let other = vodozemac::Ed25519SecretKey::new();
        let user = user_id!("@alice:example.org");
        let mut auth_data = serde_json::json!({ "public_key": "k" });
        crate::signing::sign_json(&mut auth_data, user, "ed25519:DEV", |m| signer.sign(m)).unwrap();
        let info = BackupInfo { algorithm: BACKUP_ALGORITHM.into(), auth_data, version: "1".into() };
        assert_eq!(info.signing_key_ids(user), vec!["ed25519:DEV".to_owned()]);
        assert!(info.is_signed_by(user, "ed25519:DEV", &signer.public_key()));
        assert!(!info.is_signed_by(user, "ed25519:DEV", &other.public_key()));
        assert!(!info.is_signed_by(user_id!("@mallory:example.org"), "ed25519:DEV", &signer.public_key()));
    }
}
