//! How records become bytes: table keys (length-prefixed parts, or keyed
//! hashes of each part when encrypted) and values (MessagePack, sealed with
//! the store key when encrypted).

use hush_crypto_core::StoreError;
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    Table,
    cipher::{CipherError, KeyHasher, StoreCipher},
};

/// Plain or encrypted record encoding.
pub(crate) enum Codec {
    Plain,
    Encrypted { cipher: StoreCipher, hashers: Vec<KeyHasher> },
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain => "Codec::Plain",
            Self::Encrypted { .. } => "Codec::Encrypted",
        })
    }
}

impl Codec {
    pub(crate) fn encrypted(cipher: StoreCipher) -> Self {
        let hashers = Table::ALL.iter().map(|t| cipher.key_hasher(t.name())).collect();
        Self::Encrypted { cipher, hashers }
    }

    /// The key of a record from its parts. Keys with more parts extend the
    /// key of their first parts, so a prefix scan finds e.g. a user's devices.
    pub(crate) fn key(&self, table: Table, parts: &[&[u8]]) -> Vec<u8> {
        let mut key = Vec::with_capacity(parts.len() * 32);
        for part in parts {
            match self {
                Self::Plain => {
                    key.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
                    key.extend_from_slice(part);
                }
                Self::Encrypted { hashers, .. } => key.extend_from_slice(&hashers[table.index()].hash(part)),
            }
        }
        key
    }

    /// The key of a record numbered within its parts (a Megolm message
    /// index within its room and session). The number is kept as it is,
    /// big-endian, after the hashed parts: records of one prefix sit next to
    /// each other in number order, so a batch of consecutive indices writes
    /// a few pages instead of a page each. It hides nothing the server does
    /// not see (the index travels in the clear in every Megolm message).
    /// Plain stores encode the number as one more part.
    pub(crate) fn numbered_key(&self, table: Table, parts: &[&[u8]], number: u32) -> Vec<u8> {
        let number = number.to_be_bytes();
        match self {
            Self::Plain => {
                let mut all = parts.to_vec();
                all.push(&number);
                self.key(table, &all)
            }
            Self::Encrypted { .. } => {
                let mut key = self.key(table, parts);
                key.extend_from_slice(&number);
                key
            }
        }
    }

    /// Whether values and keys are stored as they are.
    pub(crate) fn is_plain(&self) -> bool {
        matches!(self, Self::Plain)
    }

    fn aad(table: Table, key: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(table.name().len() + 1 + key.len());
        aad.extend_from_slice(table.name().as_bytes());
        aad.push(0);
        aad.extend_from_slice(key);
        aad
    }

    /// Encodes a value stored under `key`.
    pub(crate) fn seal<T: Serialize>(&self, table: Table, key: &[u8], value: &T) -> Result<Vec<u8>, StoreError> {
        let plain =
            hush_crypto_core::store::encode_value(value).map_err(|e| StoreError::serialization(table.name(), e))?;
        match self {
            Self::Plain => Ok(plain.to_vec()),
            Self::Encrypted { cipher, .. } => {
                cipher.encrypt_value(&Self::aad(table, key), &plain).map_err(cipher_error)
            }
        }
    }

    /// Decodes a value read from `key`.
    pub(crate) fn open<T: DeserializeOwned>(&self, table: Table, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
        let decode = |plain: &[u8]| {
            hush_crypto_core::store::decode_value(plain)
                .map_err(|e| StoreError::Corrupt(format!("{}: {e}", table.name())))
        };
        match self {
            Self::Plain => decode(bytes),
            Self::Encrypted { cipher, .. } => {
                decode(&cipher.decrypt_value(&Self::aad(table, key), bytes).map_err(cipher_error)?)
            }
        }
    }
}

pub(crate) fn cipher_error(error: CipherError) -> StoreError {
    match error {
        CipherError::WrongPassphrase => StoreError::WrongPassphrase,
        CipherError::Corrupt(what) => StoreError::Corrupt(what.to_owned()),
        CipherError::Randomness(reason) => StoreError::Backend(reason),
        CipherError::KdfRounds(rounds) => StoreError::InvalidKdfRounds {
            rounds,
            min: crate::cipher::MIN_KDF_ROUNDS,
            max: crate::cipher::MAX_KDF_ROUNDS,
        },
    }
}
