//! [`SecretStorageKey`]: the 32-byte key secrets are encrypted under, its
//! [`KeyDescription`] in account data (`m.secret_storage.key.<id>`), and the
//! description's check that tells a right key from a wrong one.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{
    KEY_EVENT_TYPE_PREFIX, SECRET_STORAGE_ALGORITHM, SecretStorageError,
    cipher::{B64, aes_ctr, derive_keys, hmac_sha256, random_bytes, random_iv},
    recovery_key::{decode_recovery_key, encode_recovery_key},
};
use base64::Engine as _;

/// PBKDF2 rounds for a passphrase we set up (matrix-sdk-crypto uses the same).
pub const PBKDF2_ITERATIONS: u32 = 500_000;
/// A description asking for more rounds is refused: hostile account data
/// must not make us spin for minutes.
pub const MAX_PBKDF2_ITERATIONS: u64 = 10_000_000;
const PBKDF2_ALGORITHM: &str = "m.pbkdf2";
const KEY_ID_LEN: usize = 32;

/// How to derive the key from a passphrase (`m.pbkdf2`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassphraseInfo {
    /// Must be `m.pbkdf2`.
    pub algorithm: String,
    /// The PBKDF2 salt, used as given (UTF-8 bytes).
    pub salt: String,
    /// PBKDF2-SHA-512 rounds.
    pub iterations: u64,
    /// Bits of key to derive; 256 if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<u64>,
}

/// The content of `m.secret_storage.key.<id>` account data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDescription {
    /// A human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Must be `m.secret_storage.v1.aes-hmac-sha2`.
    pub algorithm: String,
    /// How to derive the key from a passphrase, if it was made from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<PassphraseInfo>,
    /// The check's IV (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iv: Option<String>,
    /// The check's MAC over 32 encrypted zero bytes (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The content of `m.secret_storage.default_key` account data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultKeyContent {
    /// The default key's id.
    pub key: String,
}

/// A secret-storage key, opened: its id, its bytes (secret, wiped on drop)
/// and its description.
pub struct SecretStorageKey {
    key_id: String,
    bytes: Zeroizing<[u8; 32]>,
    description: KeyDescription,
}

impl std::fmt::Debug for SecretStorageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStorageKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// The check the spec defines: the MAC of 32 zero bytes encrypted under the
/// key (HKDF info "") with `iv`.
fn check_mac(bytes: &[u8; 32], iv: &[u8; 16]) -> [u8; 32] {
    let keys = derive_keys(bytes, "");
    let mut zeros = [0u8; 32];
    aes_ctr(&keys.aes, iv, &mut zeros);
    hmac_sha256(&keys.mac, &zeros)
}

fn random_key_id() -> Result<String, SecretStorageError> {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut id = String::with_capacity(KEY_ID_LEN);
    while id.len() < KEY_ID_LEN {
        for byte in random_bytes::<64>()? {
            // Rejection sampling keeps the id uniform: 248 = 4 * 62.
            if byte < 248 && id.len() < KEY_ID_LEN {
                id.push(char::from(ALPHABET[usize::from(byte % 62)]));
            }
        }
    }
    Ok(id)
}

fn decode_fixed<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N], SecretStorageError> {
    if text.len() > 4 * N {
        return Err(SecretStorageError::Malformed { field });
    }
    let bytes = Zeroizing::new(B64.decode(text).map_err(|_| SecretStorageError::Malformed { field })?);
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| SecretStorageError::Malformed { field })
}

impl SecretStorageKey {
    /// A new random key with a random id, described with its check.
    pub fn generate() -> Result<Self, SecretStorageError> {
        let bytes = Zeroizing::new(random_bytes::<32>()?);
        Self::described(random_key_id()?, bytes, None)
    }

    /// A new key derived from `passphrase` with a random salt and
    /// [`PBKDF2_ITERATIONS`] rounds. It can be opened with either the
    /// passphrase or its recovery key.
    pub fn generate_from_passphrase(passphrase: &str) -> Result<Self, SecretStorageError> {
        Self::generate_from_passphrase_with(passphrase, PBKDF2_ITERATIONS)
    }

    /// As [`Self::generate_from_passphrase`], with a chosen round count
    /// (tests use few rounds).
    pub fn generate_from_passphrase_with(passphrase: &str, iterations: u32) -> Result<Self, SecretStorageError> {
        let info = PassphraseInfo {
            algorithm: PBKDF2_ALGORITHM.to_owned(),
            salt: random_key_id()?,
            iterations: u64::from(iterations),
            bits: None,
        };
        let bytes = derive_from_passphrase(passphrase, &info)?;
        Self::described(random_key_id()?, bytes, Some(info))
    }

    fn described(
        key_id: String,
        bytes: Zeroizing<[u8; 32]>,
        passphrase: Option<PassphraseInfo>,
    ) -> Result<Self, SecretStorageError> {
        let iv = random_iv()?;
        let mac = check_mac(&bytes, &iv);
        let description = KeyDescription {
            name: None,
            algorithm: SECRET_STORAGE_ALGORITHM.to_owned(),
            passphrase,
            iv: Some(B64.encode(iv)),
            mac: Some(B64.encode(mac)),
        };
        Ok(Self { key_id, bytes, description })
    }

    /// Opens key `key_id` from its recovery key, if the description's check
    /// accepts it.
    pub fn from_recovery_key(
        key_id: &str,
        description: &KeyDescription,
        recovery_key: &str,
    ) -> Result<Self, SecretStorageError> {
        let bytes = decode_recovery_key(recovery_key)?;
        Self::open(key_id, description, bytes)
    }

    /// Opens key `key_id` from the passphrase it was derived from, if the
    /// description's check accepts it.
    pub fn from_passphrase(
        key_id: &str,
        description: &KeyDescription,
        passphrase: &str,
    ) -> Result<Self, SecretStorageError> {
        let info =
            description.passphrase.as_ref().ok_or_else(|| SecretStorageError::NoPassphrase(key_id.to_owned()))?;
        Self::check_algorithm(description)?;
        let bytes = derive_from_passphrase(passphrase, info)?;
        Self::open(key_id, description, bytes)
    }

    /// Opens key `key_id` from its raw bytes, if the description's check
    /// accepts them. A description without a check accepts any key (the
    /// spec: "clients must assume that the key is valid").
    pub fn open(
        key_id: &str,
        description: &KeyDescription,
        bytes: Zeroizing<[u8; 32]>,
    ) -> Result<Self, SecretStorageError> {
        Self::check_algorithm(description)?;
        if let (Some(iv), Some(mac)) = (&description.iv, &description.mac) {
            let iv = decode_fixed::<16>("iv", iv)?;
            let mac = decode_fixed::<32>("mac", mac)?;
            if !bool::from(check_mac(&bytes, &iv).ct_eq(&mac)) {
                return Err(SecretStorageError::WrongKey(key_id.to_owned()));
            }
        }
        Ok(Self { key_id: key_id.to_owned(), bytes, description: description.clone() })
    }

    fn check_algorithm(description: &KeyDescription) -> Result<(), SecretStorageError> {
        if description.algorithm == SECRET_STORAGE_ALGORITHM {
            Ok(())
        } else {
            Err(SecretStorageError::UnsupportedAlgorithm(description.algorithm.clone()))
        }
    }

    /// The key's id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The key's description, for `m.secret_storage.key.<id>`.
    pub fn description(&self) -> &KeyDescription {
        &self.description
    }

    /// The account-data type of the key's description.
    pub fn event_type(&self) -> String {
        format!("{KEY_EVENT_TYPE_PREFIX}{}", self.key_id)
    }

    /// The key as a recovery key, for the user to write down.
    pub fn recovery_key(&self) -> Zeroizing<String> {
        encode_recovery_key(&self.bytes)
    }

    pub(super) fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

/// PBKDF2-SHA-512 over the passphrase with the description's salt and
/// rounds, bounded.
fn derive_from_passphrase(passphrase: &str, info: &PassphraseInfo) -> Result<Zeroizing<[u8; 32]>, SecretStorageError> {
    if info.algorithm != PBKDF2_ALGORITHM {
        return Err(SecretStorageError::UnsupportedPassphrase(info.algorithm.clone()));
    }
    if info.iterations == 0 || info.iterations > MAX_PBKDF2_ITERATIONS {
        return Err(SecretStorageError::UnsupportedPassphrase(format!("{} rounds", info.iterations)));
    }
    if info.bits.is_some_and(|bits| bits != 256) {
        return Err(SecretStorageError::UnsupportedPassphrase(format!("{:?} bits", info.bits)));
    }
    let rounds = u32::try_from(info.iterations)
        .map_err(|_| SecretStorageError::UnsupportedPassphrase(format!("{} rounds", info.iterations)))?;
    Ok(crate::primitives::pbkdf2_sha512::<32>(passphrase.as_bytes(), info.salt.as_bytes(), rounds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn description(json: serde_json::Value) -> KeyDescription {
        serde_json::from_value(json).unwrap()
    }

    /// Test data from matrix-rust-sdk (`matrix-sdk-crypto` 0.19.1,
    /// `secret_storage.rs`, test `from_account_data_and_base58`): a key
    /// description written by another implementation, with padded base64,
    /// and the recovery key it checks against.
    #[test]
    fn a_published_description_accepts_its_recovery_key_and_refuses_others() {
        let described = description(serde_json::json!({
            "algorithm": "m.secret_storage.v1.aes-hmac-sha2",
            "iv": "xv5b6/p3ExEw++wTyfSHEg==",
            "mac": "ujBBbXahnTAMkmPUX2/0+VTfUh63pGyVRuBcDMgmJC8="
        }));
        let id = "bmur2d9ypPUH1msSwCxQOJkuKRmJI55e";
        let key = SecretStorageKey::from_recovery_key(
            id,
            &described,
            "EsTj 3yST y93F SLpB jJsz eAXc 2XzA ygD3 w69H fGaN TKBj jXEd",
        )
        .unwrap();
        assert_eq!(key.key_id(), id);
        let other = encode_recovery_key(&[1u8; 32]);
        assert_eq!(
            SecretStorageKey::from_recovery_key(id, &described, &other).unwrap_err(),
            SecretStorageError::WrongKey(id.to_owned())
        );
    }

    /// Test data from matrix-rust-sdk (same file, test
    /// `from_account_data_and_passphrase`): PBKDF2-SHA-512 with 10 rounds
    /// over the given salt must give the key the check describes.
    #[test]
    fn a_published_passphrase_description_derives_the_checked_key() {
        let described = description(serde_json::json!({
            "algorithm": "m.secret_storage.v1.aes-hmac-sha2",
            "iv": "gH2iNpiETFhApvW6/FFEJQ",
            "mac": "9Lw12m5SKDipNghdQXKjgpfdj1/K7HFI2brO+UWAGoM",
            "passphrase": { "algorithm": "m.pbkdf2", "salt": "IuLnH7S85YtZmkkBJKwNUKxWF42g9O1H", "iterations": 10 }
        }));
        let id = "DZkbKc0RtKSq0z8V61w6KBmJCK6OCiIu";
        SecretStorageKey::from_passphrase(id, &described, "It's a secret to everybody").unwrap();
        assert_eq!(
            SecretStorageKey::from_passphrase(id, &described, "It's a secret to nobody").unwrap_err(),
            SecretStorageError::WrongKey(id.to_owned())
        );
    }

    /// Hand-worked: PBKDF2-HMAC-SHA-512("password", "salt", 1) as published
    /// in RFC 6070-style vectors for SHA-512 (first 32 bytes of
    /// `867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252`).
    #[test]
    fn passphrase_derivation_is_pbkdf2_sha512_over_the_salt_text() {
        let info = PassphraseInfo { algorithm: "m.pbkdf2".into(), salt: "salt".into(), iterations: 1, bits: None };
        let key = derive_from_passphrase("password", &info).unwrap();
        let expected = "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252";
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
    }

    /// The key check for key bytes 0..=31 with IV 0x10..=0x1f (bit 63
    /// cleared), computed independently with Python's `cryptography` 48.
    #[test]
    fn the_key_check_matches_an_independent_implementation() {
        let bytes: [u8; 32] = std::array::from_fn(|i| i as u8);
        let iv: [u8; 16] = B64.decode("EBESExQVFhcYGRobHB0eHw").unwrap().try_into().unwrap();
        assert_eq!(B64.encode(check_mac(&bytes, &iv)), "nrMWSgMXBpO1lS9nLEL08Saa+XuAn1pdQ0B7gSgsrQQ");
    }

    #[test]
    fn hostile_passphrase_parameters_are_refused_before_any_work() {
        let mut info =
            PassphraseInfo { algorithm: "m.pbkdf2".into(), salt: "s".into(), iterations: u64::MAX, bits: None };
        assert!(matches!(derive_from_passphrase("p", &info), Err(SecretStorageError::UnsupportedPassphrase(_))));
        info.iterations = 0;
        assert!(matches!(derive_from_passphrase("p", &info), Err(SecretStorageError::UnsupportedPassphrase(_))));
        info.iterations = 1;
        info.bits = Some(128);
        assert!(matches!(derive_from_passphrase("p", &info), Err(SecretStorageError::UnsupportedPassphrase(_))));
        info.bits = None;
        info.algorithm = "m.scrypt".into();
        assert!(matches!(derive_from_passphrase("p", &info), Err(SecretStorageError::UnsupportedPassphrase(_))));
    }

    #[test]
    fn a_generated_key_reopens_from_its_recovery_key_and_passphrase() {
        let key = SecretStorageKey::generate_from_passphrase_with("correct horse", 1000).unwrap();
        let text = serde_json::to_value(key.description()).unwrap();
        let described: KeyDescription = serde_json::from_value(text).unwrap();
        let by_passphrase = SecretStorageKey::from_passphrase(key.key_id(), &described, "correct horse").unwrap();
        assert_eq!(by_passphrase.bytes(), key.bytes());
        let by_recovery = SecretStorageKey::from_recovery_key(key.key_id(), &described, &key.recovery_key()).unwrap();
        assert_eq!(by_recovery.bytes(), key.bytes());
        assert!(SecretStorageKey::from_passphrase(key.key_id(), &described, "wrong horse").is_err());
        assert_eq!(key.key_id().len(), KEY_ID_LEN);
        assert!(key.event_type().starts_with("m.secret_storage.key."));
    }

    #[test]
    fn a_description_without_a_check_accepts_any_key_and_another_algorithm_none() {
        let unchecked = description(serde_json::json!({ "algorithm": "m.secret_storage.v1.aes-hmac-sha2" }));
        assert!(SecretStorageKey::open("k", &unchecked, Zeroizing::new([9u8; 32])).is_ok());
        let other = description(serde_json::json!({ "algorithm": "m.secret_storage.v2" }));
        assert_eq!(
            SecretStorageKey::open("k", &other, Zeroizing::new([9u8; 32])).unwrap_err(),
            SecretStorageError::UnsupportedAlgorithm("m.secret_storage.v2".into())
        );
        let bad_iv = description(serde_json::json!({
            "algorithm": "m.secret_storage.v1.aes-hmac-sha2", "iv": "AAAA", "mac": "AAAA"
        }));
        assert_eq!(
            SecretStorageKey::open("k", &bad_iv, Zeroizing::new([9u8; 32])).unwrap_err(),
            SecretStorageError::Malformed { field: "iv" }
        );
    }

    #[test]
    fn the_key_never_appears_in_debug_output() {
        let key = SecretStorageKey::open(
            "k",
            &description(serde_json::json!({ "algorithm": "m.secret_storage.v1.aes-hmac-sha2" })),
            Zeroizing::new([0xAB; 32]),
        )
        .unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains("171") && !debug.contains("ab") && !debug.contains(key.recovery_key().as_str()));
    }
}
