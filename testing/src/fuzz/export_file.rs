//! The `key_export` target's view of a file's header: its PBKDF2 round
//! count, and a copy of the file with that count made small and the MAC made
//! valid for the seeds' passphrase.
//!
//! Two reasons. PBKDF2 at up to [`MAX_ROUNDS`] rounds (the cap is the bound
//! on a hostile file, tested on its own) made the target run about 100
//! inputs a second, spending them on SHA-512. And no mutated file passes the
//! MAC, so without a repaired copy the fuzzer's bytes never reach the
//! decryption and the JSON behind it.

use base64::{
    Engine,
    alphabet::STANDARD,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use hmac::{Hmac, KeyInit, Mac};
use hush_crypto_core::export::MAX_ROUNDS;
use sha2::{Sha256, Sha512};

const HEADER: &str = "-----BEGIN MEGOLM SESSION DATA-----";
const FOOTER: &str = "-----END MEGOLM SESSION DATA-----";
/// version + salt + IV + rounds
const PREFIX_LEN: usize = 37;
const MAC_LEN: usize = 32;
/// Round counts the target decodes as they are; a repaired copy gets
/// `1..=FUZZ_ROUNDS`.
pub(super) const FUZZ_ROUNDS: u32 = 16;

const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_encode_padding(true).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The decoded body of an armored file, if the harness can read it.
fn body(data: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(data).ok()?;
    let start = text.find(HEADER)? + HEADER.len();
    let end = start + text.get(start..)?.find(FOOTER)?;
    let base64: String = text.get(start..end)?.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    BASE64.decode(base64).ok()
}

/// The round count the decoder would read, as it reads it: from the first
/// 52 base64 characters after the header line, before any footer (it
/// derives the keys once it has the header, before the rest of the file).
fn rounds_of(data: &[u8]) -> Option<u32> {
    let text = String::from_utf8_lossy(data);
    let start = text.find(HEADER)? + HEADER.len();
    let first: String = text.get(start..)?.chars().filter(|c| !c.is_whitespace()).take(52).collect();
    let prefix = BASE64.decode(first).ok()?;
    prefix.get(33..PREFIX_LEN).map(|r| u32::from_be_bytes([r[0], r[1], r[2], r[3]]))
}

/// Whether the target may hand `data` to the decoders as it is: its round
/// count is small, or one the decoder refuses before deriving keys, or the
/// input has no header the decoder could read a round count from.
pub(super) fn cheap_to_decode(data: &[u8]) -> bool {
    rounds_of(data).is_none_or(|rounds| rounds <= FUZZ_ROUNDS || rounds > MAX_ROUNDS)
}

/// `data` with its round count mapped into `1..=FUZZ_ROUNDS` (kept if it
/// is there already, so a seed still decrypts and a mutated ciphertext
/// byte is a mutated plaintext byte) and its MAC computed with
/// `passphrase`, armored again; `None` if the harness cannot read the file
/// or it is too short to hold a header and a MAC.
pub(super) fn repaired(data: &[u8], passphrase: &str) -> Option<String> {
    let mut bytes = body(data)?;
    if bytes.len() < PREFIX_LEN + MAC_LEN {
        return None;
    }
    let rounds = match u32::from_be_bytes([bytes[33], bytes[34], bytes[35], bytes[36]]) {
        small @ 1..=FUZZ_ROUNDS => small,
        other => other % FUZZ_ROUNDS + 1,
    };
    bytes[33..PREFIX_LEN].copy_from_slice(&rounds.to_be_bytes());
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&bytes[1..17]);
    let mut derived = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(passphrase.as_bytes(), &salt, rounds, &mut derived);
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&derived[32..]).ok()?;
    let signed = bytes.len() - MAC_LEN;
    mac.update(&bytes[..signed]);
    bytes[signed..].copy_from_slice(&mac.finalize().into_bytes());
    let encoded = BASE64.encode(&bytes);
    let mut file = format!("{HEADER}\n");
    for line in encoded.as_bytes().chunks(96) {
        file.push_str(&String::from_utf8_lossy(line));
        file.push('\n');
    }
    file.push_str(FOOTER);
    file.push('\n');
    Some(file)
}

#[cfg(test)]
mod tests {
    use hush_crypto_core::export::{KeyExportError, decrypt_room_key_export, encrypt_room_key_export};

    use super::*;

    const PASSPHRASE: &str = "fuzz";

    #[test]
    fn a_costly_round_count_is_skipped_and_its_repaired_copy_decodes() {
        let file = encrypt_room_key_export(&[], PASSPHRASE, 200_000).expect("a file");
        assert!(!cheap_to_decode(file.as_bytes()));
        let repaired = repaired(file.as_bytes(), PASSPHRASE).expect("a readable file");
        let rounds = body(repaired.as_bytes()).expect("armored").get(33..37).map(|r| r.to_vec());
        assert_eq!(rounds, Some((200_000 % FUZZ_ROUNDS + 1).to_be_bytes().to_vec()));
        // Past the MAC; the keys differ from the writer's, so the JSON is noise.
        assert!(matches!(decrypt_room_key_export(&repaired, PASSPHRASE), Err(KeyExportError::InvalidJson(_))));
    }

    #[test]
    fn cheap_and_refused_round_counts_are_decoded_as_they_are() {
        let file = encrypt_room_key_export(&[], PASSPHRASE, FUZZ_ROUNDS).expect("a file");
        assert!(cheap_to_decode(file.as_bytes()));
        let repaired = repaired(file.as_bytes(), PASSPHRASE).expect("a readable file");
        assert_eq!(decrypt_room_key_export(&repaired, PASSPHRASE), Ok(Vec::new()));
        let mut bytes = body(file.as_bytes()).expect("armored");
        bytes[33..37].copy_from_slice(&(MAX_ROUNDS + 1).to_be_bytes());
        let refused = format!("{HEADER}\n{}\n{FOOTER}\n", BASE64.encode(&bytes));
        assert!(cheap_to_decode(refused.as_bytes()));
        assert_eq!(decrypt_room_key_export(&refused, PASSPHRASE), Err(KeyExportError::InvalidRounds(MAX_ROUNDS + 1)));
    }

    /// A flipped ciphertext byte fails the MAC as the fuzzer mutated it, and
    /// reaches the JSON parser once repaired.
    #[test]
    fn a_repaired_copy_of_a_mutated_ciphertext_gets_past_the_mac() {
        let file = encrypt_room_key_export(&[], PASSPHRASE, 1).expect("a file");
        let mut bytes = body(file.as_bytes()).expect("armored");
        bytes[PREFIX_LEN] ^= 0x01;
        let mutated = format!("{HEADER}\n{}\n{FOOTER}\n", BASE64.encode(&bytes));
        assert_eq!(decrypt_room_key_export(&mutated, PASSPHRASE), Err(KeyExportError::WrongPassphraseOrCorrupt));
        let repaired = repaired(mutated.as_bytes(), PASSPHRASE).expect("a readable file");
        assert!(matches!(decrypt_room_key_export(&repaired, PASSPHRASE), Err(KeyExportError::InvalidJson(_))));
    }
}
