//! The recovery key: a 32-byte key as the user sees it, in the spec's
//! "Cryptographic key representation" (appendices): `0x8B 0x01`, the key, a
//! parity byte (all previous bytes XORed), base58 (Bitcoin alphabet), a space
//! after every fourth character.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::SecretStorageError;

const PREFIX: [u8; 2] = [0x8B, 0x01];
/// Prefix, key, parity.
const DECODED_LEN: usize = 2 + 32 + 1;
/// Longer input is refused before decoding: base58 decoding is quadratic,
/// and a real key is 48 characters plus 11 spaces.
const MAX_INPUT_LEN: usize = 256;

fn parity(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, b| acc ^ b)
}

/// The recovery-key text for `key`.
pub fn encode_recovery_key(key: &[u8; 32]) -> Zeroizing<String> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(DECODED_LEN));
    bytes.extend_from_slice(&PREFIX);
    bytes.extend_from_slice(key);
    let check = parity(&bytes);
    bytes.push(check);
    let plain = Zeroizing::new(bs58::encode(bytes.as_slice()).into_string());
    let mut spaced = Zeroizing::new(String::with_capacity(plain.len() + plain.len() / 4));
    for (i, c) in plain.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            spaced.push(' ');
        }
        spaced.push(c);
    }
    spaced
}

/// The 32-byte key in recovery-key text, ignoring whitespace.
pub fn decode_recovery_key(text: &str) -> Result<Zeroizing<[u8; 32]>, SecretStorageError> {
    if text.len() > MAX_INPUT_LEN {
        return Err(SecretStorageError::RecoveryKeyLength(text.len()));
    }
    let compact: Zeroizing<String> = Zeroizing::new(text.chars().filter(|c| !c.is_whitespace()).collect());
    let bytes = Zeroizing::new(bs58::decode(compact.as_str()).into_vec().map_err(|_| SecretStorageError::NotBase58)?);
    if bytes.len() != DECODED_LEN {
        return Err(SecretStorageError::RecoveryKeyLength(bytes.len()));
    }
    let (body, last) = bytes.split_at(DECODED_LEN - 1);
    let found = last.first().copied().unwrap_or_default();
    let expected = parity(body);
    if !bool::from(found.ct_eq(&expected)) {
        return Err(SecretStorageError::RecoveryKeyParity { found, expected });
    }
    let (prefix, key) = body.split_at(2);
    if let [a, b] = *prefix
        && [a, b] != PREFIX
    {
        return Err(SecretStorageError::RecoveryKeyPrefix([a, b]));
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(key);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Test data from matrix-rust-sdk (`matrix-sdk-crypto` 0.19.1,
    /// `secret_storage.rs`, test `base58_parsing`), used as data: a key
    /// written with irregular whitespace, and the bytes it stands for.
    const SDK_KEY_TEXT: &str = "EsT           pRvZTnjck8    YrhRAtw XLS84Nr2r9S9LGAWDaExVAPBvLRK   ";
    const SDK_KEY_BYTES: [u8; 32] = [
        159, 189, 70, 187, 52, 81, 113, 198, 246, 2, 44, 154, 37, 213, 104, 27, 165, 78, 236, 106, 108, 73, 83, 243,
        173, 192, 185, 110, 157, 145, 173, 163,
    ];

    #[test]
    fn a_published_key_decodes_to_its_bytes_whatever_the_whitespace() {
        assert_eq!(*decode_recovery_key(SDK_KEY_TEXT).unwrap(), SDK_KEY_BYTES);
    }

    #[test]
    fn encoding_groups_by_four_and_matches_the_published_text() {
        let text = encode_recovery_key(&SDK_KEY_BYTES);
        assert_eq!(text.as_str(), "EsTp RvZT njck 8Yrh RAtw XLS8 4Nr2 r9S9 LGAW DaEx VAPB vLRK");
    }

    #[test]
    fn a_mistyped_last_character_fails_the_parity_check() {
        // The same key with its last character's case changed (same source).
        let error = decode_recovery_key("EsTpRvZTnjck8YrhRAtwXLS84Nr2r9S9LGAWDaExVAPBvLRk").unwrap_err();
        assert!(matches!(error, SecretStorageError::RecoveryKeyParity { .. }), "{error:?}");
    }

    #[test]
    fn a_key_with_another_prefix_is_refused() {
        // A 35-byte string with a correct parity byte but the prefix 0x8B 0x02.
        let mut bytes = vec![0x8B, 0x02];
        bytes.extend_from_slice(&[7u8; 32]);
        let check = parity(&bytes);
        bytes.push(check);
        let text = bs58::encode(&bytes).into_string();
        assert_eq!(decode_recovery_key(&text).unwrap_err(), SecretStorageError::RecoveryKeyPrefix([0x8B, 0x02]));
        // The published bad-prefix example (same source) also fails; its
        // parity is wrong too, and parity is checked first.
        assert!(decode_recovery_key("AATpRvZTnjck8YrhRAtwXLS84Nr2r9S9LGAWDaExVAPBvLRk").is_err());
    }

    #[test]
    fn short_long_and_non_base58_keys_are_refused() {
        assert!(matches!(
            decode_recovery_key("AATpRvZTnjck8YrhRAtwXLS84Nr2r9S9"),
            Err(SecretStorageError::RecoveryKeyLength(_))
        ));
        // 0, O, I and l are not in the alphabet.
        assert_eq!(decode_recovery_key("AATpRvZTnjck8YrhRAtwXLS84Nr0OIl"), Err(SecretStorageError::NotBase58));
        assert!(matches!(decode_recovery_key(&"1".repeat(10_000)), Err(SecretStorageError::RecoveryKeyLength(_))));
        assert!(matches!(decode_recovery_key(""), Err(SecretStorageError::RecoveryKeyLength(0))));
    }

    proptest! {
        #[test]
        fn every_key_round_trips(key in any::<[u8; 32]>()) {
            let text = encode_recovery_key(&key);
            prop_assert_eq!(*decode_recovery_key(&text).unwrap(), key);
        }

        #[test]
        fn decoding_never_panics(text in ".{0,300}") {
            let _ = decode_recovery_key(&text);
        }

        #[test]
        fn a_damaged_parity_byte_is_always_detected(key in any::<[u8; 32]>(), damage in 1u8..=255) {
            let mut bytes = PREFIX.to_vec();
            bytes.extend_from_slice(&key);
            let check = parity(&bytes) ^ damage;
            bytes.push(check);
            let text = bs58::encode(&bytes).into_string();
            let is_parity_error = matches!(decode_recovery_key(&text), Err(SecretStorageError::RecoveryKeyParity { .. }));
            prop_assert!(is_parity_error);
        }
    }
}
