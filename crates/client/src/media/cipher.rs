//! AES-256-CTR with a SHA-256 of the ciphertext, as attachments use it:
//! a fresh random key and IV per file (the IV's low 64 bits zero, so the
//! counter never wraps into the random half), the hash taken as the
//! ciphertext is produced or checked as it is read.

use aes::Aes256;
use ctr::cipher::{KeyIvInit, StreamCipher};
use ruma_common::{OwnedMxcUri, serde::Base64};
use ruma_events::room::{
    EncryptedFile, EncryptedFileHash, EncryptedFileHashes, EncryptedFileInfo, V2EncryptedFileInfo,
};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::AttachmentError;
use crate::ClientError;

type Aes256Ctr = ctr::Ctr128BE<Aes256>;

/// Encrypts a file chunk by chunk and hashes the ciphertext.
pub(crate) struct FileEncryptor {
    cipher: Aes256Ctr,
    hasher: Sha256,
    key: Zeroizing<[u8; 32]>,
    iv: [u8; 16],
}

impl FileEncryptor {
    /// A fresh random key and IV.
    pub(crate) fn new() -> Result<Self, ClientError> {
        let mut key = Zeroizing::new([0u8; 32]);
        let mut iv = [0u8; 16];
        getrandom::fill(key.as_mut_slice()).map_err(|e| ClientError::Internal(format!("no randomness: {e}")))?;
        getrandom::fill(&mut iv[..8]).map_err(|e| ClientError::Internal(format!("no randomness: {e}")))?;
        Ok(Self::with_key(key, iv))
    }

    fn with_key(key: Zeroizing<[u8; 32]>, iv: [u8; 16]) -> Self {
        let cipher = Aes256Ctr::new((&*key).into(), (&iv).into());
        Self { cipher, hasher: Sha256::new(), key, iv }
    }

    /// Encrypts `chunk` in place and adds the ciphertext to the hash.
    pub(crate) fn encrypt(&mut self, chunk: &mut [u8]) {
        self.cipher.apply_keystream(chunk);
        self.hasher.update(&*chunk);
    }

    /// The file's encryption info, once every chunk went through.
    pub(crate) fn finish(self, url: OwnedMxcUri) -> EncryptedFile {
        let hash: [u8; 32] = self.hasher.finalize().into();
        let info = V2EncryptedFileInfo::new(Base64::new(*self.key), Base64::new(self.iv));
        EncryptedFile::new(url, EncryptedFileInfo::V2(info), EncryptedFileHashes::with_sha256(hash))
    }
}

/// Decrypts a file chunk by chunk.
pub(crate) struct FileDecryptor {
    cipher: Aes256Ctr,
}

impl FileDecryptor {
    /// The decryptor for `file`, and the SHA-256 its ciphertext must have.
    /// Refuses a version other than v2 and a file without a SHA-256.
    pub(crate) fn for_file(file: &EncryptedFile) -> Result<(Self, [u8; 32]), AttachmentError> {
        let EncryptedFileInfo::V2(info) = &file.info else {
            return Err(AttachmentError::UnsupportedVersion(file.info.version().to_owned()));
        };
        let hash = file
            .hashes
            .values()
            .find_map(|hash| match hash {
                EncryptedFileHash::Sha256(hash) => Some(*hash.as_inner()),
                _ => None,
            })
            .ok_or(AttachmentError::NoSha256)?;
        let key = Zeroizing::new(*info.k.as_inner());
        let cipher = Aes256Ctr::new((&*key).into(), info.iv.as_inner().into());
        Ok((Self { cipher }, hash))
    }

    /// Decrypts `chunk` in place.
    pub(crate) fn decrypt(&mut self, chunk: &mut [u8]) {
        self.cipher.apply_keystream(chunk);
    }
}

/// Hashes ciphertext as it is downloaded.
#[derive(Default)]
pub(crate) struct CiphertextHash(Sha256);

impl CiphertextHash {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Whether the ciphertext hashed to `expected` (compared in constant time).
    pub(crate) fn matches(self, expected: &[u8; 32]) -> bool {
        use subtle::ConstantTimeEq;
        let got: [u8; 32] = self.0.finalize().into();
        bool::from(got.ct_eq(expected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// NIST SP 800-38A, F.5.5 (CTR-AES256.Encrypt), first two blocks.
    #[test]
    fn the_keystream_is_aes_256_ctr() {
        let key: [u8; 32] = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4").try_into().unwrap();
        let iv: [u8; 16] = hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff").try_into().unwrap();
        let mut data = hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        let mut encryptor = FileEncryptor::with_key(Zeroizing::new(key), iv);
        // In two uneven chunks: the stream continues across chunks.
        let (first, second) = data.split_at_mut(7);
        encryptor.encrypt(first);
        encryptor.encrypt(second);
        assert_eq!(data, hex("601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"));
    }

    #[test]
    fn a_file_round_trips_and_its_hash_is_of_the_ciphertext() {
        let plaintext: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut data = plaintext.clone();
        let mut encryptor = FileEncryptor::new().unwrap();
        assert_eq!(&encryptor.iv[8..], &[0u8; 8], "the counter half starts at zero");
        for chunk in data.chunks_mut(super::super::CHUNK) {
            encryptor.encrypt(chunk);
        }
        assert_ne!(data, plaintext);
        let url: OwnedMxcUri = "mxc://example.org/abc".into();
        let file = encryptor.finish(url);
        let (mut decryptor, expected) = FileDecryptor::for_file(&file).unwrap();
        let mut hash = CiphertextHash::default();
        hash.update(&data);
        assert!(hash.matches(&expected));
        for chunk in data.chunks_mut(1000) {
            decryptor.decrypt(chunk);
        }
        assert_eq!(data, plaintext);
    }

    #[test]
    fn a_changed_byte_changes_the_hash() {
        let mut data = vec![7u8; 1000];
        let mut encryptor = FileEncryptor::new().unwrap();
        encryptor.encrypt(&mut data);
        let file = encryptor.finish("mxc://example.org/abc".into());
        let (_, expected) = FileDecryptor::for_file(&file).unwrap();
        data[500] ^= 1;
        let mut hash = CiphertextHash::default();
        hash.update(&data);
        assert!(!hash.matches(&expected));
    }

    #[test]
    fn the_file_serializes_as_the_spec_shows_it() {
        let file = FileEncryptor::new().unwrap().finish("mxc://example.org/abc".into());
        let json = serde_json::to_value(&file).unwrap();
        assert_eq!(json["v"], "v2");
        assert_eq!(json["key"]["alg"], "A256CTR");
        assert_eq!(json["key"]["kty"], "oct");
        assert!(json["hashes"]["sha256"].is_string());
        let back: EncryptedFile = serde_json::from_value(json).unwrap();
        assert!(FileDecryptor::for_file(&back).is_ok());
    }

    #[test]
    fn a_file_without_sha256_is_refused() {
        let file = FileEncryptor::new().unwrap().finish("mxc://example.org/abc".into());
        let mut json = serde_json::to_value(&file).unwrap();
        json["hashes"] = serde_json::json!({});
        let file: EncryptedFile = serde_json::from_value(json).unwrap();
        assert!(matches!(FileDecryptor::for_file(&file), Err(AttachmentError::NoSha256)));
    }
}
