//! The symmetric primitives several concerns build on, written once:
//! HKDF-SHA-256 and PBKDF2-HMAC-SHA-512 expansion into key material,
//! HMAC-SHA-256, AES-256-CTR, and random bytes. Secret storage
//! (`secret_storage/`), key export files (`export/`) and the key backup
//! (`backup/`) each lay out their own keys from these; the layouts and the
//! Matrix rules stay in their folders. (`hush-store-cipher`, a crate of its
//! own that must not depend on the engine, keeps its own few lines.)

use aes::Aes256;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Sha256, Sha512};
use zeroize::Zeroizing;

/// HMAC-SHA-256, for MACs computed over data that comes in pieces.
pub(crate) type HmacSha256 = Hmac<Sha256>;

/// AES-256 in CTR mode with a 128-bit big-endian counter (the whole IV), as
/// the Matrix spec's AES-CTR uses it; for data that comes in pieces.
pub(crate) type Aes256Ctr = ctr::Ctr128BE<Aes256>;

/// `N` bytes of HKDF-SHA-256 output (`N` at most 8,160, the limit of
/// HKDF-SHA-256: every caller asks for a constant far below it).
pub(crate) fn hkdf_sha256<const N: usize>(salt: &[u8], ikm: &[u8], info: &[u8]) -> Zeroizing<[u8; N]> {
    let hkdf = hkdf::Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut okm = Zeroizing::new([0u8; N]);
    if hkdf.expand(info, okm.as_mut_slice()).is_err() {
        unreachable!("the callers' output lengths are within HKDF-SHA-256's limit");
    }
    okm
}

/// `N` bytes of PBKDF2-HMAC-SHA-512 from a passphrase.
pub(crate) fn pbkdf2_sha512<const N: usize>(passphrase: &[u8], salt: &[u8], rounds: u32) -> Zeroizing<[u8; N]> {
    let mut derived = Zeroizing::new([0u8; N]);
    pbkdf2::pbkdf2_hmac::<Sha512>(passphrase, salt, rounds, derived.as_mut_slice());
    derived
}

/// A running HMAC-SHA-256 under `key`.
pub(crate) fn hmac_sha256_with(key: &[u8]) -> HmacSha256 {
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// HMAC-SHA-256 of `data` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = hmac_sha256_with(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A running AES-256-CTR keystream.
pub(crate) fn aes256_ctr(key: &[u8; 32], iv: &[u8; 16]) -> Aes256Ctr {
    Aes256Ctr::new(key.into(), iv.into())
}

/// Encrypts or decrypts `data` in place with AES-256-CTR.
pub(crate) fn aes256_ctr_apply(key: &[u8; 32], iv: &[u8; 16], data: &mut [u8]) {
    aes256_ctr(key, iv).apply_keystream(data);
}

/// `N` random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

/// `N` random bytes of key material, zeroized when dropped.
pub(crate) fn random_secret<const N: usize>() -> Result<Zeroizing<[u8; N]>, getrandom::Error> {
    let mut bytes = Zeroizing::new([0u8; N]);
    getrandom::fill(bytes.as_mut_slice())?;
    Ok(bytes)
}

/// Splits key material into consecutive parts of the lengths asked.
pub(crate) fn split<const A: usize, const B: usize>(material: &[u8]) -> (Zeroizing<[u8; A]>, Zeroizing<[u8; B]>) {
    let mut first = Zeroizing::new([0u8; A]);
    let mut second = Zeroizing::new([0u8; B]);
    first.copy_from_slice(&material[..A]);
    second.copy_from_slice(&material[A..A + B]);
    (first, second)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5869, test case 1 (HKDF-SHA-256), used as data.
    #[test]
    fn hkdf_matches_rfc_5869_case_1() {
        let ikm = [0x0b_u8; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let okm = hkdf_sha256::<42>(&salt, &ikm, &info);
        let expected = "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865";
        assert_eq!(hex(okm.as_slice()), expected);
    }

    /// RFC 4231, test case 2 (HMAC-SHA-256), used as data.
    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex(&mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        let mut running = hmac_sha256_with(b"Jefe");
        running.update(b"what do ya want ");
        running.update(b"for nothing?");
        assert_eq!(<[u8; 32]>::from(running.finalize().into_bytes()), mac, "in pieces, the same");
    }

    #[test]
    fn ctr_is_its_own_inverse_and_split_keeps_the_order() {
        let (key, iv) = ([7u8; 32], [9u8; 16]);
        let mut data = *b"attack at dawn";
        aes256_ctr_apply(&key, &iv, &mut data);
        assert_ne!(&data, b"attack at dawn");
        aes256_ctr_apply(&key, &iv, &mut data);
        assert_eq!(&data, b"attack at dawn");
        let material: Vec<u8> = (0..48).collect();
        let (a, b) = split::<32, 16>(&material);
        assert_eq!((a[0], a[31], b[0], b[15]), (0, 31, 32, 47));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
