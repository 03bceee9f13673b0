//! The backup key pair: [`BackupDecryptionKey`] (secret, kept in secret
//! storage as `m.megolm_backup.v1`) and [`BackupEncryptionKey`], its public
//! half, which encrypts room keys for the backup.
//!
//! Encryption, per the spec: an ephemeral curve25519 key, ECDH with the
//! backup key, HKDF-SHA-256 (salt 32 zero bytes, empty info) to 80 bytes:
//! AES-256 key, HMAC key, CBC IV; AES-256-CBC with PKCS#7 over the JSON;
//! the first 8 bytes of HMAC-SHA-256 over the *empty string* as the MAC.

use aes::{
    Aes256,
    cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7},
};
use base64::Engine as _;
use subtle::ConstantTimeEq;
use vodozemac::{Curve25519PublicKey, Curve25519SecretKey};
use zeroize::Zeroizing;

use super::{BackedUpRoomKey, EncryptedSessionData};
use crate::primitives;

/// Unpadded base64 out, either form in.
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);
/// A room key's JSON is a few hundred bytes; anything much larger is refused
/// unread.
const MAX_CIPHERTEXT_LEN: usize = 16 * 1024;
const MAC_LEN: usize = 8;

/// Why backup key material or backed-up data was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackupKeyError {
    /// The private key is not 32 bytes of base64.
    #[error("the backup private key is malformed")]
    MalformedPrivateKey,
    /// The backup's public key is malformed.
    #[error("the backup public key is malformed: {0}")]
    MalformedPublicKey(String),
    /// A field of the session data is malformed.
    #[error("the backed-up session data's {0} is malformed")]
    Malformed(&'static str),
    /// The ECDH result is all zeros (a low-order ephemeral key).
    #[error("the ephemeral key is not contributory")]
    NonContributory,
    /// The session data's MAC does not match: another key, or tampering.
    #[error("the backed-up session data failed its MAC check")]
    BadMac,
    /// The data decrypts to garbage (bad padding or not a room key).
    #[error("the backed-up session data does not decrypt to a room key: {0}")]
    NotARoomKey(String),
    /// No randomness was available.
    #[error("no randomness available")]
    Random,
}

/// The backup's private key (secret; wiped on drop, never printed).
pub struct BackupDecryptionKey {
    bytes: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for BackupDecryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupDecryptionKey").field("public_key", &self.public_key().to_base64()).finish()
    }
}

/// The backup's public key, which room keys are encrypted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupEncryptionKey(pub(crate) Curve25519PublicKey);

struct Derived {
    aes: Zeroizing<[u8; 32]>,
    mac: Zeroizing<[u8; 32]>,
    iv: Zeroizing<[u8; 16]>,
}

fn derive(shared: &[u8; 32]) -> Derived {
    let okm = primitives::hkdf_sha256::<80>(&[0u8; 32], shared, b"");
    let (aes, rest) = primitives::split::<32, 48>(okm.as_slice());
    let (mac, iv) = primitives::split::<32, 16>(rest.as_slice());
    Derived { aes, mac, iv }
}

/// The v1 MAC: HMAC-SHA-256 of the empty string, first 8 bytes.
fn empty_mac(key: &[u8; 32]) -> [u8; MAC_LEN] {
    let full = primitives::hmac_sha256(key, b"");
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full[..MAC_LEN]);
    out
}

impl BackupDecryptionKey {
    /// A new random backup key.
    pub fn generate() -> Result<Self, BackupKeyError> {
        let bytes = primitives::random_secret::<32>().map_err(|_| BackupKeyError::Random)?;
        Ok(Self { bytes })
    }

    /// The key from its base64 form (as secret storage and gossip carry it).
    pub fn from_base64(encoded: &str) -> Result<Self, BackupKeyError> {
        if encoded.len() > 64 {
            return Err(BackupKeyError::MalformedPrivateKey);
        }
        let decoded = Zeroizing::new(B64.decode(encoded).map_err(|_| BackupKeyError::MalformedPrivateKey)?);
        let mut bytes = Zeroizing::new([0u8; 32]);
        if decoded.len() != 32 {
            return Err(BackupKeyError::MalformedPrivateKey);
        }
        bytes.copy_from_slice(&decoded);
        Ok(Self { bytes })
    }

    /// The key's base64 form (secret).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.bytes.as_slice()))
    }

    fn secret(&self) -> Curve25519SecretKey {
        Curve25519SecretKey::from_slice(&self.bytes)
    }

    /// The public half.
    pub fn public_key(&self) -> BackupEncryptionKey {
        BackupEncryptionKey(Curve25519PublicKey::from(&self.secret()))
    }

    /// Decrypts one backed-up room key. The MAC is checked (in constant
    /// time) before decrypting; it fails for data encrypted to another key.
    pub fn decrypt(&self, data: &EncryptedSessionData) -> Result<BackedUpRoomKey, BackupKeyError> {
        let ephemeral = crate::keys::curve25519_from_base64(&data.ephemeral)
            .map_err(|_| BackupKeyError::Malformed("ephemeral key"))?;
        if data.ciphertext.len() > MAX_CIPHERTEXT_LEN || data.mac.len() > 24 {
            return Err(BackupKeyError::Malformed("ciphertext"));
        }
        let mac = B64.decode(&data.mac).map_err(|_| BackupKeyError::Malformed("mac"))?;
        let ciphertext = B64.decode(&data.ciphertext).map_err(|_| BackupKeyError::Malformed("ciphertext"))?;
        let shared = self.secret().diffie_hellman(&ephemeral).ok_or(BackupKeyError::NonContributory)?;
        let keys = derive(shared.as_bytes());
        if mac.len() != MAC_LEN || !bool::from(empty_mac(&keys.mac).ct_eq(mac.as_slice())) {
            return Err(BackupKeyError::BadMac);
        }
        let cipher = cbc::Decryptor::<Aes256>::new((&*keys.aes).into(), (&*keys.iv).into());
        let plaintext = Zeroizing::new(
            cipher
                .decrypt_padded_vec::<Pkcs7>(&ciphertext)
                .map_err(|_| BackupKeyError::NotARoomKey("padding".into()))?,
        );
        // The error may quote the decrypted plaintext: only its position is kept.
        serde_json::from_slice(&plaintext)
            .map_err(|e| BackupKeyError::NotARoomKey(crate::contain::secret_json_error(&e)))
    }
}

impl BackupEncryptionKey {
    /// The key from the backup's `auth_data.public_key`.
    pub fn from_base64(encoded: &str) -> Result<Self, BackupKeyError> {
        crate::keys::curve25519_from_base64(encoded)
            .map(Self)
            .map_err(|e| BackupKeyError::MalformedPublicKey(e.to_string()))
    }

    /// The key as `auth_data.public_key` carries it.
    pub fn to_base64(&self) -> String {
        self.0.to_base64()
    }

    /// Encrypts one room key for the backup.
    pub fn encrypt(&self, key: &BackedUpRoomKey) -> Result<EncryptedSessionData, BackupKeyError> {
        let ephemeral = Curve25519SecretKey::new();
        let ephemeral_public = Curve25519PublicKey::from(&ephemeral);
        let shared = ephemeral.diffie_hellman(&self.0).ok_or(BackupKeyError::NonContributory)?;
        let keys = derive(shared.as_bytes());
        let plaintext =
            Zeroizing::new(serde_json::to_vec(key).map_err(|e| BackupKeyError::NotARoomKey(e.to_string()))?);
        let cipher = cbc::Encryptor::<Aes256>::new((&*keys.aes).into(), (&*keys.iv).into());
        let ciphertext = cipher.encrypt_padded_vec::<Pkcs7>(&plaintext);
        Ok(EncryptedSessionData {
            ephemeral: ephemeral_public.to_base64(),
            ciphertext: B64.encode(ciphertext),
            mac: B64.encode(empty_mac(&keys.mac)),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn room_key() -> BackedUpRoomKey {
        BackedUpRoomKey {
            algorithm: "m.megolm.v1.aes-sha2".into(),
            forwarding_curve25519_key_chain: Vec::new(),
            sender_claimed_keys: [("ed25519".to_owned(), "claimed".to_owned())].into(),
            sender_key: "sender".into(),
            session_key: Zeroizing::new("the session key".into()),
            shared_history: true,
        }
    }

    #[test]
    fn a_room_key_round_trips_through_the_backup_key_pair() {
        let private = BackupDecryptionKey::generate().unwrap();
        let encrypted = private.public_key().encrypt(&room_key()).unwrap();
        let decrypted = private.decrypt(&encrypted).unwrap();
        assert_eq!(decrypted.session_key.as_str(), "the session key");
        assert!(decrypted.shared_history);
        assert_eq!(decrypted.sender_claimed_keys.get("ed25519").map(String::as_str), Some("claimed"));
        let reread = BackupDecryptionKey::from_base64(&private.to_base64()).unwrap();
        assert_eq!(reread.public_key(), private.public_key());
    }

    #[test]
    fn data_for_another_backup_key_fails_the_mac_check() {
        let ours = BackupDecryptionKey::generate().unwrap();
        let theirs = BackupDecryptionKey::generate().unwrap();
        let encrypted = theirs.public_key().encrypt(&room_key()).unwrap();
        assert_eq!(ours.decrypt(&encrypted).unwrap_err(), BackupKeyError::BadMac);
    }

    /// The v1 MAC covers nothing, so a changed ciphertext passes it: the
    /// damage shows as bad padding or JSON that is not a room key, and is
    /// still refused.
    #[test]
    fn a_changed_ciphertext_is_refused() {
        let private = BackupDecryptionKey::generate().unwrap();
        let mut encrypted = private.public_key().encrypt(&room_key()).unwrap();
        let mut bytes = B64.decode(&encrypted.ciphertext).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        encrypted.ciphertext = B64.encode(bytes);
        assert!(matches!(private.decrypt(&encrypted), Err(BackupKeyError::NotARoomKey(_))));
    }

    #[test]
    fn the_private_key_is_not_in_debug_output() {
        let private = BackupDecryptionKey::generate().unwrap();
        assert!(!format!("{private:?}").contains(private.to_base64().as_str()));
        assert!(!format!("{:?}", room_key()).contains("the session key"));
    }

    #[test]
    fn malformed_private_keys_are_refused() {
        for bad in ["", "AAAA", &"A".repeat(100), "not base64!"] {
            assert_eq!(BackupDecryptionKey::from_base64(bad).unwrap_err(), BackupKeyError::MalformedPrivateKey);
        }
    }

    proptest! {
        #[test]
        fn hostile_session_data_never_panics(ephemeral in ".{0,50}", ciphertext in ".{0,200}", mac in ".{0,30}") {
            let private = BackupDecryptionKey::generate().unwrap();
            let data = EncryptedSessionData { ephemeral, ciphertext, mac };
            prop_assert!(private.decrypt(&data).is_err());
        }
    }
}
