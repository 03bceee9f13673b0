//! [`StoreCipher`]: the random store key that encrypts every value
//! (XChaCha20-Poly1305, a fresh 24-byte nonce per value) and keys the hashes
//! that replace table keys; and its wrapping under the user's passphrase
//! (PBKDF2-HMAC-SHA256) or a raw key the application supplies.

use std::fmt;

use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305,
    aead::{Aead, Payload},
};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// PBKDF2 rounds for a new passphrase-protected store.
pub const DEFAULT_KDF_ROUNDS: u32 = 200_000;
/// The fewest PBKDF2 rounds a new store may use (creating with fewer is an
/// error; stores created before this minimum existed still open).
pub const MIN_KDF_ROUNDS: u32 = 10_000;
/// The most PBKDF2 rounds a store may ask for: the count is read from the
/// file before the passphrase is checked, so an unbounded count would let a
/// damaged or hostile file cost minutes of CPU per open (u32::MAX is about
/// 13 minutes here); 2,000,000 is about 1 s.
pub const MAX_KDF_ROUNDS: u32 = 2_000_000;
const VALUE_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

/// Why the cipher failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// The passphrase or key does not unwrap the store key.
    #[error("wrong passphrase or key")]
    WrongPassphrase,
    /// A value failed authentication, or has an unknown envelope.
    #[error("a stored value is corrupt: {0}")]
    Corrupt(&'static str),
    /// A PBKDF2 round count outside [`MIN_KDF_ROUNDS`]..=[`MAX_KDF_ROUNDS`].
    #[error("the store asks for {0} PBKDF2 rounds (allowed: {MIN_KDF_ROUNDS} to {MAX_KDF_ROUNDS})")]
    KdfRounds(u32),
    /// The system gave no randomness.
    #[error("no randomness available: {0}")]
    Randomness(String),
}

/// What opens an encrypted store.
#[derive(Clone, ZeroizeOnDrop)]
pub enum StoreSecret {
    /// A passphrase, stretched with PBKDF2-HMAC-SHA256 once per open.
    Passphrase(String),
    /// A raw 32-byte key the application keeps (e.g. in the OS keychain): no KDF.
    Key([u8; 32]),
}

impl fmt::Debug for StoreSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Passphrase(_) => f.write_str("StoreSecret::Passphrase(<redacted>)"),
            Self::Key(_) => f.write_str("StoreSecret::Key(<redacted>)"),
        }
    }
}

/// How the wrapping key was derived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Kdf {
    Pbkdf2 { rounds: u32, salt: [u8; 16] },
    RawKey,
}

/// The store key, encrypted under the user's secret; kept in the store's meta table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedStoreKey {
    version: u8,
    kdf: Kdf,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

fn random<const N: usize>() -> Result<[u8; N], CipherError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| CipherError::Randomness(e.to_string()))?;
    Ok(bytes)
}

fn wrapping_key(secret: &StoreSecret, kdf: &Kdf) -> Result<Zeroizing<[u8; 32]>, CipherError> {
    let mut key = Zeroizing::new([0u8; 32]);
    match (secret, kdf) {
        (StoreSecret::Passphrase(passphrase), Kdf::Pbkdf2 { rounds, salt }) => {
            // The minimum is enforced when a store is created (`wrap`); a
            // stored count is only bounded above, so stores made before the
            // minimum existed still open.
            if *rounds == 0 || *rounds > MAX_KDF_ROUNDS {
                return Err(CipherError::KdfRounds(*rounds));
            }
            pbkdf2::pbkdf2_hmac::<Sha256>(passphrase.as_bytes(), salt, *rounds, key.as_mut_slice());
        }
        (StoreSecret::Key(raw), Kdf::RawKey) => key.copy_from_slice(raw),
        // A passphrase for a key-protected store, or the reverse.
        _ => return Err(CipherError::WrongPassphrase),
    }
    Ok(key)
}

/// Derives table keys and hashes table keys with them.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct KeyHasher {
    key: [u8; 32],
}

impl KeyHasher {
    /// The keyed hash (HMAC-SHA256) of a table key.
    pub fn hash(&self, input: &[u8]) -> [u8; 32] {
        let mut mac = hmac_with(&self.key);
        mac.update(input);
        mac.finalize().into_bytes().into()
    }
}

fn hmac_with(key: &[u8]) -> Hmac<Sha256> {
    match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// The store key: encrypts values and keys the table-key hashes.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct StoreCipher {
    key: Box<[u8; 32]>,
}

impl fmt::Debug for StoreCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreCipher(<redacted>)")
    }
}

impl StoreCipher {
    /// A new random store key.
    pub fn new() -> Result<Self, CipherError> {
        Ok(Self { key: Box::new(random()?) })
    }

    fn aead(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.key).into())
    }

    /// The hasher for one table's keys: its key is derived from the store
    /// key and the table name, so equal keys in two tables hash differently.
    pub fn key_hasher(&self, table: &str) -> KeyHasher {
        let mut mac = hmac_with(self.key.as_slice());
        mac.update(b"hush table key:");
        mac.update(table.as_bytes());
        KeyHasher { key: mac.finalize().into_bytes().into() }
    }

    /// Encrypts a value. `aad` binds it to its place (table and key), so a
    /// value moved to another key fails to decrypt.
    pub fn encrypt_value(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CipherError> {
        let nonce: [u8; NONCE_LEN] = random()?;
        let ciphertext = self
            .aead()
            .encrypt((&nonce).into(), Payload { msg: plaintext, aad })
            .map_err(|_| CipherError::Corrupt("encryption failed"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(VALUE_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Decrypts a value written by [`encrypt_value`](Self::encrypt_value) with the same `aad`.
    pub fn decrypt_value(&self, aad: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>, CipherError> {
        let (&version, rest) = data.split_first().ok_or(CipherError::Corrupt("empty value"))?;
        if version != VALUE_VERSION {
            return Err(CipherError::Corrupt("unknown value envelope version"));
        }
        if rest.len() < NONCE_LEN {
            return Err(CipherError::Corrupt("value shorter than its nonce"));
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CipherError::Corrupt("nonce"))?;
        self.aead()
            .decrypt((&nonce).into(), Payload { msg: ciphertext, aad })
            .map(Zeroizing::new)
            .map_err(|_| CipherError::Corrupt("value failed authentication"))
    }

    /// Encrypts the store key under `secret` (PBKDF2 with `rounds` for a passphrase).
    pub fn wrap(&self, secret: &StoreSecret, rounds: u32) -> Result<WrappedStoreKey, CipherError> {
        let kdf = match secret {
            StoreSecret::Passphrase(_) if !(MIN_KDF_ROUNDS..=MAX_KDF_ROUNDS).contains(&rounds) => {
                return Err(CipherError::KdfRounds(rounds));
            }
            StoreSecret::Passphrase(_) => Kdf::Pbkdf2 { rounds, salt: random()? },
            StoreSecret::Key(_) => Kdf::RawKey,
        };
        let wrapping = wrapping_key(secret, &kdf)?;
        let nonce: [u8; NONCE_LEN] = random()?;
        let ciphertext = XChaCha20Poly1305::new((&*wrapping).into())
            .encrypt((&nonce).into(), Payload { msg: self.key.as_slice(), aad: b"hush store key" })
            .map_err(|_| CipherError::Corrupt("wrapping failed"))?;
        Ok(WrappedStoreKey { version: 1, kdf, nonce, ciphertext })
    }

    /// Recovers the store key; a wrong secret is [`CipherError::WrongPassphrase`].
    pub fn unwrap(wrapped: &WrappedStoreKey, secret: &StoreSecret) -> Result<Self, CipherError> {
        if wrapped.version != 1 {
            return Err(CipherError::Corrupt("unknown store key version"));
        }
        let wrapping = wrapping_key(secret, &wrapped.kdf)?;
        let plaintext = Zeroizing::new(
            XChaCha20Poly1305::new((&*wrapping).into())
                .decrypt((&wrapped.nonce).into(), Payload { msg: &wrapped.ciphertext, aad: b"hush store key" })
                .map_err(|_| CipherError::WrongPassphrase)?,
        );
        let key: [u8; 32] = plaintext.as_slice().try_into().map_err(|_| CipherError::Corrupt("store key length"))?;
        Ok(Self { key: Box::new(key) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_are_bound_to_their_place() {
        let cipher = StoreCipher::new().unwrap();
        let sealed = cipher.encrypt_value(b"table/key", b"secret value").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(cipher.decrypt_value(b"table/key", &sealed).unwrap().as_slice(), b"secret value");
        assert_eq!(
            cipher.decrypt_value(b"table/other", &sealed),
            Err(CipherError::Corrupt("value failed authentication"))
        );
        // A fresh nonce each time.
        assert_ne!(sealed, cipher.encrypt_value(b"table/key", b"secret value").unwrap());
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(cipher.decrypt_value(b"table/key", &flipped).is_err());
        assert!(cipher.decrypt_value(b"table/key", &sealed[..10]).is_err());
        assert!(cipher.decrypt_value(b"table/key", &[]).is_err());
    }

    #[test]
    fn wrapping_needs_the_right_secret() {
        let cipher = StoreCipher::new().unwrap();
        let passphrase = StoreSecret::Passphrase("hunter2".into());
        let wrapped = cipher.wrap(&passphrase, MIN_KDF_ROUNDS).unwrap();
        let reopened = StoreCipher::unwrap(&wrapped, &passphrase).unwrap();
        assert_eq!(reopened.key, cipher.key);
        assert_eq!(
            StoreCipher::unwrap(&wrapped, &StoreSecret::Passphrase("hunter3".into())).unwrap_err(),
            CipherError::WrongPassphrase
        );
        assert_eq!(
            StoreCipher::unwrap(&wrapped, &StoreSecret::Key([0; 32])).unwrap_err(),
            CipherError::WrongPassphrase
        );

        let raw = StoreSecret::Key([9; 32]);
        let wrapped = cipher.wrap(&raw, 0).unwrap();
        assert_eq!(StoreCipher::unwrap(&wrapped, &raw).unwrap().key, cipher.key);
        assert_eq!(
            StoreCipher::unwrap(&wrapped, &StoreSecret::Key([8; 32])).unwrap_err(),
            CipherError::WrongPassphrase
        );
    }

    #[test]
    fn table_keys_differ_per_table_and_store() {
        let a = StoreCipher::new().unwrap();
        let b = StoreCipher::new().unwrap();
        let key = b"@alice:example.org";
        assert_eq!(a.key_hasher("devices").hash(key), a.key_hasher("devices").hash(key));
        assert_ne!(a.key_hasher("devices").hash(key), a.key_hasher("tracked").hash(key));
        assert_ne!(a.key_hasher("devices").hash(key), b.key_hasher("devices").hash(key));
    }

    #[test]
    fn secrets_are_not_printed() {
        let secret = StoreSecret::Passphrase("hunter2".into());
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(format!("{:?}", StoreCipher::new().unwrap()), "StoreCipher(<redacted>)");
    }
}
