//! Secrets in account data (`m.secret_storage.v1.aes-hmac-sha2`): HKDF-SHA-256
//! of the key with the secret's name, AES-256-CTR, HMAC-SHA-256 over the
//! ciphertext. The MAC binds the secret to its name, so a secret copied into
//! another name's account data fails its check.

use std::collections::BTreeMap;

use base64::{
    Engine as _,
    alphabet::STANDARD,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use hmac::Mac;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{SecretStorageError, SecretStorageKey};
use crate::primitives;

/// Unpadded base64 out; padded or unpadded in (the spec asks us to accept both).
pub(super) const B64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Secrets longer than this are refused unread (a cross-signing or backup
/// key is 43 characters).
const MAX_SECRET_LEN: usize = 64 * 1024;

/// One secret encrypted under one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedSecret {
    /// The AES-CTR IV (base64).
    pub iv: String,
    /// The encrypted secret (base64).
    pub ciphertext: String,
    /// HMAC-SHA-256 of the raw ciphertext (base64).
    pub mac: String,
}

/// The account-data content of a stored secret: the secret encrypted under
/// one or more keys, by key id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretContent {
    /// Encryptions of the secret by key id.
    pub encrypted: BTreeMap<String, EncryptedSecret>,
}

pub(super) struct DerivedKeys {
    pub(super) aes: Zeroizing<[u8; 32]>,
    pub(super) mac: Zeroizing<[u8; 32]>,
}

/// HKDF-SHA-256, salt 32 zero bytes, info the secret's name: 32 bytes of AES
/// key, then 32 of MAC key.
pub(super) fn derive_keys(key: &[u8; 32], name: &str) -> DerivedKeys {
    let okm = primitives::hkdf_sha256::<64>(&[0u8; 32], key, name.as_bytes());
    let (aes, mac) = primitives::split::<32, 32>(okm.as_slice());
    DerivedKeys { aes, mac }
}

pub(super) fn aes_ctr(key: &[u8; 32], iv: &[u8; 16], data: &mut [u8]) {
    primitives::aes256_ctr_apply(key, iv, data);
}

pub(super) fn hmac_sha256(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    primitives::hmac_sha256(key, data)
}

pub(super) fn random_bytes<const N: usize>() -> Result<[u8; N], SecretStorageError> {
    primitives::random_bytes::<N>().map_err(|e| SecretStorageError::Random(e.to_string()))
}

/// 16 random bytes with bit 63 cleared, as the spec asks (AES-CTR
/// implementations disagree on counter overflow).
pub(super) fn random_iv() -> Result<[u8; 16], SecretStorageError> {
    let mut iv = random_bytes::<16>()?;
    iv[8] &= 0x7f;
    Ok(iv)
}

/// Encrypts `secret` (a string, as the spec defines secrets) for account
/// data `name` under `key`.
pub fn encrypt_secret(key: &SecretStorageKey, name: &str, secret: &str) -> Result<EncryptedSecret, SecretStorageError> {
    encrypt_with_iv(key, name, secret, random_iv()?)
}

fn encrypt_with_iv(
    key: &SecretStorageKey,
    name: &str,
    secret: &str,
    iv: [u8; 16],
) -> Result<EncryptedSecret, SecretStorageError> {
    let keys = derive_keys(key.bytes(), name);
    let mut data = Zeroizing::new(secret.as_bytes().to_vec());
    aes_ctr(&keys.aes, &iv, &mut data);
    let mac = hmac_sha256(&keys.mac, &data);
    Ok(EncryptedSecret { iv: B64.encode(iv), ciphertext: B64.encode(data.as_slice()), mac: B64.encode(mac) })
}

/// The secret in account data `name`, decrypted with `key`. The MAC is
/// checked (in constant time) before decrypting.
pub fn decrypt_secret(
    key: &SecretStorageKey,
    name: &str,
    content: &SecretContent,
) -> Result<Zeroizing<String>, SecretStorageError> {
    let encrypted = content
        .encrypted
        .get(key.key_id())
        .ok_or_else(|| SecretStorageError::NotEncryptedForKey(key.key_id().into()))?;
    let malformed = |field| SecretStorageError::Malformed { field };
    if encrypted.ciphertext.len() > MAX_SECRET_LEN || encrypted.iv.len() > 32 || encrypted.mac.len() > 64 {
        return Err(malformed("ciphertext"));
    }
    let iv: [u8; 16] = B64.decode(&encrypted.iv).ok().and_then(|v| v.try_into().ok()).ok_or_else(|| malformed("iv"))?;
    let mac = B64.decode(&encrypted.mac).map_err(|_| malformed("mac"))?;
    let mut data = Zeroizing::new(B64.decode(&encrypted.ciphertext).map_err(|_| malformed("ciphertext"))?);
    let keys = derive_keys(key.bytes(), name);
    let mut check = primitives::hmac_sha256_with(keys.mac.as_slice());
    check.update(&data);
    check.verify_slice(&mac).map_err(|_| SecretStorageError::BadMac(name.to_owned()))?;
    aes_ctr(&keys.aes, &iv, &mut data);
    let text = String::from_utf8(std::mem::take(&mut *data)).map_err(|error| {
        // Wipe the bytes that were not text before reporting.
        zeroize::Zeroize::zeroize(&mut error.into_bytes());
        SecretStorageError::NotText(name.to_owned())
    })?;
    Ok(Zeroizing::new(text))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::secret_storage::KeyDescription;

    /// Key bytes 0..=31, as a description without a check.
    fn counting_key() -> SecretStorageKey {
        let description: KeyDescription =
            serde_json::from_value(serde_json::json!({ "algorithm": "m.secret_storage.v1.aes-hmac-sha2" })).unwrap();
        let bytes: [u8; 32] = std::array::from_fn(|i| i as u8);
        SecretStorageKey::open("key_id", &description, Zeroizing::new(bytes)).unwrap()
    }

    /// An independent vector, computed with Python's `cryptography` 48
    /// (HKDF-SHA-256, AES-256-CTR, HMAC-SHA-256 as the spec describes; the
    /// script is in docs/key-history.md): key bytes 0..=31, IV 0x10..=0x1f
    /// with bit 63 cleared, the secret "hush test secret" named
    /// `m.cross_signing.master`.
    const VECTOR_IV: &str = "EBESExQVFhcYGRobHB0eHw";
    const VECTOR_CIPHERTEXT: &str = "NOQKf7SvAJNlZJnvOX15fQ";
    const VECTOR_MAC: &str = "vjkGkKSP2bakQo7h2Uj0LvaZ03wocz8Lpr7tO+udhWI";

    #[test]
    fn encryption_matches_an_independent_implementation() {
        let iv: [u8; 16] = B64.decode(VECTOR_IV).unwrap().try_into().unwrap();
        assert_eq!(iv[8] & 0x80, 0);
        let encrypted = encrypt_with_iv(&counting_key(), "m.cross_signing.master", "hush test secret", iv).unwrap();
        assert_eq!(encrypted.ciphertext, VECTOR_CIPHERTEXT);
        assert_eq!(encrypted.mac, VECTOR_MAC);
    }

    #[test]
    fn the_independent_vector_decrypts_only_under_its_name() {
        let content = SecretContent {
            encrypted: [(
                "key_id".to_owned(),
                EncryptedSecret { iv: VECTOR_IV.into(), ciphertext: VECTOR_CIPHERTEXT.into(), mac: VECTOR_MAC.into() },
            )]
            .into(),
        };
        let key = counting_key();
        assert_eq!(decrypt_secret(&key, "m.cross_signing.master", &content).unwrap().as_str(), "hush test secret");
        // The MAC binds the name: the same data under another name fails.
        assert_eq!(
            decrypt_secret(&key, "m.megolm_backup.v1", &content).unwrap_err(),
            SecretStorageError::BadMac("m.megolm_backup.v1".into())
        );
    }

    #[test]
    fn a_secret_round_trips_and_every_modification_is_refused() {
        let key = SecretStorageKey::generate().unwrap();
        let encrypted = encrypt_secret(&key, "m.megolm_backup.v1", "the backup key").unwrap();
        let mut content = SecretContent::default();
        content.encrypted.insert(key.key_id().to_owned(), encrypted.clone());
        assert_eq!(decrypt_secret(&key, "m.megolm_backup.v1", &content).unwrap().as_str(), "the backup key");

        let mut bytes = B64.decode(&encrypted.ciphertext).unwrap();
        bytes[0] ^= 1;
        content.encrypted.get_mut(key.key_id()).unwrap().ciphertext = B64.encode(&bytes);
        assert_eq!(
            decrypt_secret(&key, "m.megolm_backup.v1", &content).unwrap_err(),
            SecretStorageError::BadMac("m.megolm_backup.v1".into())
        );
        let other = SecretStorageKey::generate().unwrap();
        assert!(matches!(
            decrypt_secret(&other, "m.megolm_backup.v1", &content),
            Err(SecretStorageError::NotEncryptedForKey(_))
        ));
    }

    #[test]
    fn the_iv_has_bit_63_cleared() {
        for _ in 0..64 {
            assert_eq!(random_iv().unwrap()[8] & 0x80, 0);
        }
    }

    proptest! {
        #[test]
        fn decrypting_hostile_content_never_panics(
            iv in ".{0,40}", ciphertext in ".{0,100}", mac in ".{0,70}"
        ) {
            let key = counting_key();
            let content = SecretContent {
                encrypted: [("key_id".to_owned(), EncryptedSecret { iv, ciphertext, mac })].into(),
            };
            prop_assert!(decrypt_secret(&key, "n", &content).is_err());
        }
    }
}
