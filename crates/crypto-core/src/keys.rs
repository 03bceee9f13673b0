//! The one checked decoder for public keys that come from outside: every
//! curve25519 and ed25519 key read from an event, a keys-query answer, a key
//! file or a store-independent source goes through here.
//!
//! vodozemac 0.11's `Ed25519PublicKey::from_base64` accepts a 44-character
//! unpadded string that decodes to 33 bytes and then panics copying it into
//! a 32-byte array; a hostile device could use that to crash any client that
//! parsed its keys. Here the decoded length is checked before vodozemac sees
//! the bytes, so every malformed key is a [`KeyDecodeError`]. `cargo xtask ci`
//! (the purity check) fails if a vodozemac key type's `from_base64` is called
//! anywhere else in crypto-core.

use vodozemac::{Curve25519PublicKey, Ed25519PublicKey};

/// Why a public key from outside was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyDecodeError {
    /// The text is not base64.
    #[error("the {kind} key is not valid base64")]
    NotBase64 {
        /// `curve25519` or `ed25519`.
        kind: &'static str,
    },
    /// The text decodes to the wrong number of bytes.
    #[error("the {kind} key decodes to {length} bytes, not 32")]
    WrongLength {
        /// `curve25519` or `ed25519`.
        kind: &'static str,
        /// How many bytes it decoded to.
        length: usize,
    },
    /// The 32 bytes are not a valid point.
    #[error("the {kind} key is not a valid public key")]
    InvalidPoint {
        /// `curve25519` or `ed25519`.
        kind: &'static str,
    },
}

/// The largest encoded key accepted before decoding (44 characters of base64
/// with padding, plus slack for nothing: anything longer is refused unread).
const MAX_ENCODED_LEN: usize = 44;

fn decode_32(kind: &'static str, encoded: &str) -> Result<[u8; 32], KeyDecodeError> {
    if encoded.len() > MAX_ENCODED_LEN {
        // Bounded work: a megabyte-long "key" is not decoded at all.
        return Err(KeyDecodeError::WrongLength { kind, length: encoded.len().saturating_mul(3) / 4 });
    }
    // Wiped when dropped: this also decodes private keys.
    let bytes =
        zeroize::Zeroizing::new(vodozemac::base64_decode(encoded).map_err(|_| KeyDecodeError::NotBase64 { kind })?);
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyDecodeError::WrongLength { kind, length: bytes.len() })
}

/// A curve25519 public key from (unpadded or padded) base64.
pub fn curve25519_from_base64(encoded: &str) -> Result<Curve25519PublicKey, KeyDecodeError> {
    decode_32("curve25519", encoded).map(Curve25519PublicKey::from_bytes)
}

/// An ed25519 public key from (unpadded or padded) base64.
pub fn ed25519_from_base64(encoded: &str) -> Result<Ed25519PublicKey, KeyDecodeError> {
    let bytes = decode_32("ed25519", encoded)?;
    Ed25519PublicKey::from_slice(&bytes).map_err(|_| KeyDecodeError::InvalidPoint { kind: "ed25519" })
}

/// An ed25519 public key from its 32 raw bytes (as a QR code carries it).
pub fn ed25519_from_bytes(bytes: &[u8; 32]) -> Result<Ed25519PublicKey, KeyDecodeError> {
    Ed25519PublicKey::from_slice(bytes).map_err(|_| KeyDecodeError::InvalidPoint { kind: "ed25519" })
}

/// An ed25519 private key (a 32-byte seed) from base64, as secret storage
/// and gossip carry cross-signing keys; `None` if it is not 32 bytes. The
/// decoded copy is wiped.
pub(crate) fn ed25519_secret_from_base64(encoded: &str) -> Option<vodozemac::Ed25519SecretKey> {
    let bytes = zeroize::Zeroizing::new(decode_32("ed25519", encoded).ok()?);
    Some(vodozemac::Ed25519SecretKey::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The string that made vodozemac panic: 44 unpadded characters, 33 bytes.
    #[test]
    fn a_33_byte_key_is_an_error_not_a_panic() {
        let encoded = vodozemac::base64_encode([7u8; 33]);
        assert_eq!(encoded.len(), 44);
        assert_eq!(ed25519_from_base64(&encoded), Err(KeyDecodeError::WrongLength { kind: "ed25519", length: 33 }));
        assert_eq!(
            curve25519_from_base64(&encoded),
            Err(KeyDecodeError::WrongLength { kind: "curve25519", length: 33 })
        );
    }

    #[test]
    fn real_keys_round_trip() {
        let account = vodozemac::olm::Account::new();
        let ed = account.ed25519_key();
        let curve = account.curve25519_key();
        assert_eq!(ed25519_from_base64(&ed.to_base64()), Ok(ed));
        assert_eq!(curve25519_from_base64(&curve.to_base64()), Ok(curve));
    }

    proptest! {
        /// Any bytes of any length 0–100, base64-encoded: a key or a typed error.
        #[test]
        fn random_base64_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..=100)) {
            let encoded = vodozemac::base64_encode(&bytes);
            let ed = ed25519_from_base64(&encoded);
            let curve = curve25519_from_base64(&encoded);
            if bytes.len() != 32 {
                prop_assert!(ed.is_err());
                prop_assert!(curve.is_err());
            } else {
                prop_assert!(curve.is_ok());
            }
        }

        /// Arbitrary text too.
        #[test]
        fn random_text_never_panics(text in ".{0,100}") {
            let _ = ed25519_from_base64(&text);
            let _ = curve25519_from_base64(&text);
        }
    }
}
