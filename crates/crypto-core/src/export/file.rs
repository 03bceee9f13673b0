//! The key export file: the spec's "Key exports" format, written and read as
//! streams so that a file of any size needs memory for one key at a time.
//!
//! Layout (before base64 and armor): version `0x01`, 16-byte salt, 16-byte
//! IV (bit 63 clear), rounds (u32 big-endian), AES-256-CTR ciphertext of the
//! JSON array of keys, HMAC-SHA-256 of everything before it. The AES and HMAC
//! keys are the two halves of PBKDF2-HMAC-SHA-512(passphrase, salt, rounds).

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};

use base64::{
    Engine,
    alphabet::STANDARD,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use ctr::cipher::StreamCipher;
use hmac::Mac;
use zeroize::Zeroizing;

use super::ExportedRoomKey;
use crate::primitives::{self, Aes256Ctr, HmacSha256};

const HEADER: &str = "-----BEGIN MEGOLM SESSION DATA-----";
const FOOTER: &str = "-----END MEGOLM SESSION DATA-----";
const VERSION: u8 = 1;
/// version + salt + IV + rounds
const PREFIX_LEN: usize = 1 + 16 + 16 + 4;
const MAC_LEN: usize = 32;
/// Bytes per armored line (96 base64 characters).
const LINE_BYTES: usize = 72;
/// Files asking for more PBKDF2 rounds than this are refused: a hostile file
/// must not make the importer spin for hours.
pub const MAX_ROUNDS: u32 = 1_000_000;

/// Base64 that writes padding and reads it with or without.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_encode_padding(true).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a key export could not be written or read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyExportError {
    /// Reading or writing the underlying stream failed.
    #[error("I/O error: {0}")]
    Io(String),
    /// The text lacks the `BEGIN MEGOLM SESSION DATA` armor.
    #[error("not a key export file: {0}")]
    NotAKeyExport(String),
    /// The armored body is not valid base64.
    #[error("the key export is not valid base64")]
    InvalidBase64,
    /// The file ends too early.
    #[error("the key export is truncated")]
    Truncated,
    /// The version byte is not one this code reads.
    #[error("unsupported key export version {0}")]
    UnsupportedVersion(u8),
    /// The round count is zero or unreasonably high.
    #[error("the key export asks for {0} PBKDF2 rounds (allowed: 1 to {MAX_ROUNDS})")]
    InvalidRounds(u32),
    /// The MAC does not match: a wrong passphrase, or a modified file.
    #[error("wrong passphrase, or the file was modified")]
    WrongPassphraseOrCorrupt,
    /// The decrypted content is not a JSON array of keys.
    #[error("the decrypted key export is not valid: {0}")]
    InvalidJson(String),
}

impl From<io::Error> for KeyExportError {
    fn from(error: io::Error) -> Self {
        // Our own readers carry their errors through `io::Error`: unwrap them.
        if let Some(inner) = error.get_ref().and_then(|e| e.downcast_ref::<Self>()) {
            return inner.clone();
        }
        if error.kind() == io::ErrorKind::UnexpectedEof { Self::Truncated } else { Self::Io(error.to_string()) }
    }
}

struct DerivedKeys {
    aes: Zeroizing<[u8; 32]>,
    mac: Zeroizing<[u8; 32]>,
}

fn derive_keys(passphrase: &str, salt: &[u8; 16], rounds: u32) -> DerivedKeys {
    let derived = primitives::pbkdf2_sha512::<64>(passphrase.as_bytes(), salt, rounds);
    let (aes, mac) = primitives::split::<32, 32>(derived.as_slice());
    DerivedKeys { aes, mac }
}

fn hmac(keys: &DerivedKeys) -> HmacSha256 {
    primitives::hmac_sha256_with(keys.mac.as_slice())
}

fn random_bytes<const N: usize>() -> Result<[u8; N], KeyExportError> {
    primitives::random_bytes::<N>().map_err(|e| KeyExportError::Io(format!("no randomness: {e}")))
}

/// Writes base64 in lines between the armor lines.
struct ArmorWriter<W: Write> {
    out: W,
    pending: Vec<u8>,
}

impl<W: Write> ArmorWriter<W> {
    fn new(mut out: W) -> io::Result<Self> {
        writeln!(out, "{HEADER}")?;
        Ok(Self { out, pending: Vec::with_capacity(LINE_BYTES * 2) })
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(bytes);
        let whole = self.pending.len() / LINE_BYTES * LINE_BYTES;
        for line in self.pending[..whole].chunks(LINE_BYTES) {
            writeln!(self.out, "{}", BASE64.encode(line))?;
        }
        self.pending.drain(..whole);
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        if !self.pending.is_empty() {
            writeln!(self.out, "{}", BASE64.encode(&self.pending))?;
        }
        writeln!(self.out, "{FOOTER}")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Encrypts keys into a key export file, one key at a time.
pub struct KeyExportWriter<W: Write> {
    armor: ArmorWriter<W>,
    cipher: Aes256Ctr,
    mac: HmacSha256,
    keys_written: usize,
}

impl<W: Write> KeyExportWriter<W> {
    /// Starts a file: derives the keys from `passphrase` (PBKDF2, `rounds`
    /// rounds; the spec asks for at least 100,000) and writes the header.
    pub fn new(out: W, passphrase: &str, rounds: u32) -> Result<Self, KeyExportError> {
        if rounds == 0 || rounds > MAX_ROUNDS {
            return Err(KeyExportError::InvalidRounds(rounds));
        }
        let salt: [u8; 16] = random_bytes()?;
        let mut iv: [u8; 16] = random_bytes()?;
        // Bit 63 clear, so no implementation's counter overflows into the nonce half.
        iv[8] &= 0x7f;
        let keys = derive_keys(passphrase, &salt, rounds);
        let mut prefix = Vec::with_capacity(PREFIX_LEN);
        prefix.push(VERSION);
        prefix.extend_from_slice(&salt);
        prefix.extend_from_slice(&iv);
        prefix.extend_from_slice(&rounds.to_be_bytes());
        let mut mac = hmac(&keys);
        mac.update(&prefix);
        let mut armor = ArmorWriter::new(out)?;
        armor.write(&prefix)?;
        let cipher = primitives::aes256_ctr(&keys.aes, &iv);
        let mut writer = Self { armor, cipher, mac, keys_written: 0 };
        writer.write_plaintext(b"[")?;
        Ok(writer)
    }

    fn write_plaintext(&mut self, plaintext: &[u8]) -> Result<(), KeyExportError> {
        let mut buffer = Zeroizing::new(plaintext.to_vec());
        self.cipher.apply_keystream(&mut buffer);
        self.mac.update(&buffer);
        self.armor.write(&buffer)?;
        Ok(())
    }

    /// Appends one key.
    pub fn write_key(&mut self, key: &ExportedRoomKey) -> Result<(), KeyExportError> {
        let json = Zeroizing::new(serde_json::to_vec(key).map_err(|e| KeyExportError::InvalidJson(e.to_string()))?);
        if self.keys_written > 0 {
            self.write_plaintext(b",")?;
        }
        self.write_plaintext(&json)?;
        self.keys_written += 1;
        Ok(())
    }

    /// Closes the array, appends the MAC and the footer; returns the writer.
    pub fn finish(mut self) -> Result<W, KeyExportError> {
        self.write_plaintext(b"]")?;
        let tag = self.mac.finalize().into_bytes();
        self.armor.write(&tag)?;
        Ok(self.armor.finish()?)
    }
}

/// Encrypts `keys` into a complete key export file in memory.
pub fn encrypt_room_key_export(
    keys: &[ExportedRoomKey],
    passphrase: &str,
    rounds: u32,
) -> Result<String, KeyExportError> {
    let mut writer = KeyExportWriter::new(Vec::new(), passphrase, rounds)?;
    for key in keys {
        writer.write_key(key)?;
    }
    String::from_utf8(writer.finish()?).map_err(|e| KeyExportError::Io(e.to_string()))
}

/// Decodes the armored base64 body, line by line.
struct ArmorReader<R: BufRead> {
    input: R,
    line: String,
    decoded: Vec<u8>,
    position: usize,
    /// Base64 characters not yet decoded (a partial 4-character group).
    carry: String,
    done: bool,
}

impl<R: BufRead> ArmorReader<R> {
    fn new(mut input: R) -> Result<Self, KeyExportError> {
        let mut line = String::new();
        loop {
            line.clear();
            if input.read_line(&mut line)? == 0 {
                return Err(KeyExportError::NotAKeyExport("no BEGIN MEGOLM SESSION DATA line".into()));
            }
            let trimmed = line.trim();
            if trimmed == HEADER {
                break;
            }
            if !trimmed.is_empty() {
                return Err(KeyExportError::NotAKeyExport("text before the BEGIN line".into()));
            }
        }
        Ok(Self { input, line, decoded: Vec::new(), position: 0, carry: String::new(), done: false })
    }

    /// Decodes the next line into `decoded`; false at the footer.
    fn next_line(&mut self) -> Result<bool, KeyExportError> {
        self.line.clear();
        if self.input.read_line(&mut self.line)? == 0 {
            return Err(KeyExportError::Truncated);
        }
        let trimmed = self.line.trim();
        if trimmed == FOOTER {
            if !self.carry.is_empty() {
                self.decoded = BASE64.decode(&self.carry).map_err(|_| KeyExportError::InvalidBase64)?;
                self.carry.clear();
                self.position = 0;
            }
            return Ok(false);
        }
        // Only ASCII can be base64: anything else is refused here, which
        // also keeps the byte slicing below on character boundaries (a
        // multi-byte character once made it panic; found by fuzzing).
        if !trimmed.is_ascii() {
            return Err(KeyExportError::InvalidBase64);
        }
        self.carry.extend(trimmed.chars().filter(|c| !c.is_whitespace()));
        let whole = self.carry.len() / 4 * 4;
        // Padding may only end the data: keep a padded group for the footer.
        let whole = if self.carry[..whole].ends_with('=') { whole.saturating_sub(4) } else { whole };
        self.decoded = BASE64.decode(&self.carry[..whole]).map_err(|_| KeyExportError::InvalidBase64)?;
        self.carry.drain(..whole);
        self.position = 0;
        Ok(true)
    }
}

impl<R: BufRead> Read for ArmorReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position == self.decoded.len() {
            if self.done {
                return Ok(0);
            }
            let more = self.next_line().map_err(io::Error::other)?;
            if !more {
                self.done = true;
                if self.position == self.decoded.len() {
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.decoded.len() - self.position);
        buf[..n].copy_from_slice(&self.decoded[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

/// The decoded payload: yields the ciphertext, holding back the final MAC.
struct PayloadReader<R: Read> {
    inner: R,
    held: Vec<u8>,
    eof: bool,
}

impl<R: Read> PayloadReader<R> {
    fn new(inner: R) -> Self {
        Self { inner, held: Vec::new(), eof: false }
    }

    /// The trailing MAC, once the ciphertext was read to the end.
    fn mac(&self) -> Option<&[u8]> {
        (self.eof && self.held.len() == MAC_LEN).then_some(&self.held[..])
    }
}

impl<R: Read> Read for PayloadReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut chunk = [0u8; 4096];
        while !self.eof && self.held.len() <= MAC_LEN {
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                self.eof = true;
                if self.held.len() < MAC_LEN {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "missing MAC"));
                }
            }
            self.held.extend_from_slice(&chunk[..n]);
        }
        let available = self.held.len().saturating_sub(MAC_LEN);
        let n = buf.len().min(available);
        buf[..n].copy_from_slice(&self.held[..n]);
        self.held.drain(..n);
        Ok(n)
    }
}

/// The header of a key export file.
struct Prefix {
    salt: [u8; 16],
    iv: [u8; 16],
    rounds: u32,
    bytes: [u8; PREFIX_LEN],
}

fn read_prefix(reader: &mut impl Read) -> Result<Prefix, KeyExportError> {
    let mut bytes = [0u8; PREFIX_LEN];
    reader.read_exact(&mut bytes)?;
    if bytes[0] != VERSION {
        return Err(KeyExportError::UnsupportedVersion(bytes[0]));
    }
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    let mut rounds = [0u8; 4];
    salt.copy_from_slice(&bytes[1..17]);
    iv.copy_from_slice(&bytes[17..33]);
    rounds.copy_from_slice(&bytes[33..37]);
    let rounds = u32::from_be_bytes(rounds);
    if rounds == 0 || rounds > MAX_ROUNDS {
        return Err(KeyExportError::InvalidRounds(rounds));
    }
    Ok(Prefix { salt, iv, rounds, bytes })
}

/// The decoded payload of a file, read from its start.
type Payload<'a, R> = PayloadReader<ArmorReader<BufReader<&'a mut R>>>;

fn payload<R: Read + Seek>(input: &mut R) -> Result<(Payload<'_, R>, Prefix), KeyExportError> {
    input.seek(SeekFrom::Start(0)).map_err(KeyExportError::from)?;
    let mut armor = ArmorReader::new(BufReader::new(input))?;
    let prefix = read_prefix(&mut armor)?;
    Ok((PayloadReader::new(armor), prefix))
}

/// Decrypts on read.
struct DecryptingReader<R: Read> {
    inner: R,
    cipher: Aes256Ctr,
}

impl<R: Read> Read for DecryptingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.cipher.apply_keystream(&mut buf[..n]);
        Ok(n)
    }
}

type Plaintext<'a, R> = BufReader<DecryptingReader<Payload<'a, R>>>;

/// Pulls the elements of the decrypted JSON array one at a time.
struct KeyStream<'a, R: Read + Seek> {
    plaintext: Plaintext<'a, R>,
    started: bool,
    finished: bool,
}

impl<'a, R: Read + Seek> KeyStream<'a, R> {
    fn open(input: &'a mut R, keys: &DerivedKeys) -> Result<Self, KeyExportError> {
        let (payload, prefix) = payload(input)?;
        let cipher = primitives::aes256_ctr(&keys.aes, &prefix.iv);
        let plaintext = BufReader::new(DecryptingReader { inner: payload, cipher });
        Ok(Self { plaintext, started: false, finished: false })
    }

    /// The next byte that is not JSON whitespace, consumed.
    fn next_token(&mut self) -> Result<Option<u8>, KeyExportError> {
        loop {
            let buffer = self.plaintext.fill_buf()?;
            let Some(&byte) = buffer.first() else { return Ok(None) };
            self.plaintext.consume(1);
            if !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
                return Ok(Some(byte));
            }
        }
    }

    fn invalid(what: &str) -> KeyExportError {
        KeyExportError::InvalidJson(what.to_owned())
    }

    fn next_key(&mut self) -> Result<Option<ExportedRoomKey>, KeyExportError> {
        if self.finished {
            return Ok(None);
        }
        if !self.started {
            self.started = true;
            if self.next_token()? != Some(b'[') {
                return Err(Self::invalid("expected a JSON array"));
            }
            // An empty array?
            let buffer = self.plaintext.fill_buf()?;
            let first = buffer.iter().position(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'));
            if let Some(i) = first
                && buffer[i] == b']'
            {
                self.plaintext.consume(i + 1);
                return self.end();
            }
        } else {
            match self.next_token()? {
                Some(b',') => {}
                Some(b']') => return self.end(),
                _ => return Err(Self::invalid("expected ',' or ']' between keys")),
            }
        }
        let mut deserializer = serde_json::Deserializer::from_reader(&mut self.plaintext);
        let key = serde::Deserialize::deserialize(&mut deserializer).map_err(|e| Self::invalid(&e.to_string()))?;
        Ok(Some(key))
    }

    fn end(&mut self) -> Result<Option<ExportedRoomKey>, KeyExportError> {
        self.finished = true;
        match self.next_token()? {
            None => Ok(None),
            Some(_) => Err(Self::invalid("data after the array")),
        }
    }
}

/// Reads a key export file as a stream of keys. Opening it checks the MAC
/// over the whole file (a wrong passphrase or a modified file is refused
/// before anything is parsed) and parses every key once without handing it
/// out (a malformed file is refused before anything is imported); then
/// [`next_key`](Self::next_key) yields the keys one at a time. PBKDF2 runs
/// once; memory holds one key at a time.
pub struct KeyExportReader<'a, R: Read + Seek> {
    stream: KeyStream<'a, R>,
    total: usize,
}

impl<'a, R: Read + Seek> KeyExportReader<'a, R> {
    /// Opens and checks a key export file.
    pub fn open(input: &'a mut R, passphrase: &str) -> Result<Self, KeyExportError> {
        let (mut reader, prefix) = payload(&mut *input)?;
        let keys = derive_keys(passphrase, &prefix.salt, prefix.rounds);
        let mut mac = hmac(&keys);
        mac.update(&prefix.bytes);
        let mut chunk = [0u8; 8192];
        loop {
            let n = reader.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            mac.update(&chunk[..n]);
        }
        let tag = reader.mac().ok_or(KeyExportError::Truncated)?;
        mac.verify_slice(tag).map_err(|_| KeyExportError::WrongPassphraseOrCorrupt)?;
        drop(reader);

        let mut total = 0;
        let mut check = KeyStream::open(&mut *input, &keys)?;
        while check.next_key()?.is_some() {
            total += 1;
        }
        drop(check);
        Ok(Self { stream: KeyStream::open(input, &keys)?, total })
    }

    /// How many keys the file holds.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The next key, or `None` after the last.
    pub fn next_key(&mut self) -> Result<Option<ExportedRoomKey>, KeyExportError> {
        self.stream.next_key()
    }
}

/// Decrypts a whole key export held in memory.
pub fn decrypt_room_key_export(text: &str, passphrase: &str) -> Result<Vec<ExportedRoomKey>, KeyExportError> {
    let mut input = io::Cursor::new(text.as_bytes());
    let mut reader: KeyExportReader<'_, io::Cursor<&[u8]>> = KeyExportReader::open(&mut input, passphrase)?;
    let mut keys = Vec::with_capacity(reader.total());
    while let Some(key) = reader.next_key()? {
        keys.push(key);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ruma_common::owned_room_id;

    use super::*;

    fn key(n: u8) -> ExportedRoomKey {
        ExportedRoomKey {
            algorithm: "m.megolm.v1.aes-sha2".into(),
            room_id: owned_room_id!("!room:example.org"),
            sender_key: format!("sender{n}"),
            session_id: format!("session{n}"),
            session_key: format!("secret{n}"),
            sender_claimed_keys: BTreeMap::from([("ed25519".into(), format!("ed{n}"))]),
            forwarding_curve25519_key_chain: Vec::new(),
            shared_history: n.is_multiple_of(2),
        }
    }

    fn body_bytes(file: &str) -> Vec<u8> {
        let body: String = file.lines().filter(|l| !l.starts_with("-----")).collect();
        BASE64.decode(body).unwrap()
    }

    fn rearmor(bytes: &[u8]) -> String {
        format!("{HEADER}\n{}\n{FOOTER}\n", BASE64.encode(bytes))
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let keys: Vec<_> = (0..5).map(key).collect();
        let file = encrypt_room_key_export(&keys, "correct horse", 10).unwrap();
        assert!(file.starts_with("-----BEGIN MEGOLM SESSION DATA-----\n"));
        assert!(file.ends_with("-----END MEGOLM SESSION DATA-----\n"));
        assert!(!file.contains("secret0"));
        assert_eq!(decrypt_room_key_export(&file, "correct horse").unwrap(), keys);
        let empty = encrypt_room_key_export(&[], "p", 1).unwrap();
        assert!(decrypt_room_key_export(&empty, "p").unwrap().is_empty());
    }

    #[test]
    fn layout_matches_the_spec() {
        let file = encrypt_room_key_export(&[key(1)], "p", 1234).unwrap();
        let bytes = body_bytes(&file);
        assert_eq!(bytes[0], 1, "version");
        assert_eq!(bytes[17 + 8] & 0x80, 0, "IV bit 63 is clear");
        assert_eq!(u32::from_be_bytes(bytes[33..37].try_into().unwrap()), 1234);
        // Lines are at most 96 characters.
        assert!(file.lines().all(|l| l.len() <= 96));
    }

    #[test]
    fn unpadded_single_line_and_crlf_files_are_read() {
        let file = encrypt_room_key_export(&[key(1), key(2)], "p", 3).unwrap();
        let bytes = body_bytes(&file);
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&bytes);
        let text = format!("{HEADER}\r\n{unpadded}\r\n{FOOTER}\r\n");
        assert_eq!(decrypt_room_key_export(&text, "p").unwrap().len(), 2);
    }

    #[test]
    fn wrong_passphrase_is_refused() {
        let file = encrypt_room_key_export(&[key(1)], "right", 5).unwrap();
        assert_eq!(decrypt_room_key_export(&file, "wrong"), Err(KeyExportError::WrongPassphraseOrCorrupt));
    }

    #[test]
    fn a_modified_byte_is_refused() {
        let file = encrypt_room_key_export(&[key(1)], "p", 5).unwrap();
        let mut bytes = body_bytes(&file);
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        assert_eq!(decrypt_room_key_export(&rearmor(&bytes), "p"), Err(KeyExportError::WrongPassphraseOrCorrupt));
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let file = encrypt_room_key_export(&[key(1), key(2), key(3)], "p", 5).unwrap();
        let without_footer: String = file.lines().take(3).map(|l| format!("{l}\n")).collect();
        assert_eq!(decrypt_room_key_export(&without_footer, "p"), Err(KeyExportError::Truncated));
        let bytes = body_bytes(&file);
        assert_eq!(decrypt_room_key_export(&rearmor(&bytes[..20]), "p"), Err(KeyExportError::Truncated));
        assert!(decrypt_room_key_export(&rearmor(&bytes[..bytes.len() - 10]), "p").is_err());
    }

    #[test]
    fn unknown_versions_and_bad_rounds_are_refused() {
        let file = encrypt_room_key_export(&[key(1)], "p", 5).unwrap();
        let mut bytes = body_bytes(&file);
        bytes[0] = 2;
        assert_eq!(decrypt_room_key_export(&rearmor(&bytes), "p"), Err(KeyExportError::UnsupportedVersion(2)));
        let mut bytes = body_bytes(&file);
        bytes[33..37].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(decrypt_room_key_export(&rearmor(&bytes), "p"), Err(KeyExportError::InvalidRounds(0)));
        let mut bytes = body_bytes(&file);
        bytes[33..37].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decrypt_room_key_export(&rearmor(&bytes), "p"), Err(KeyExportError::InvalidRounds(u32::MAX)));
        assert!(matches!(encrypt_room_key_export(&[], "p", 0), Err(KeyExportError::InvalidRounds(0))));
    }

    /// Attack: a hostile key file with a multi-byte character inside the
    /// armored data (it panicked slicing the base64; found by fuzzing).
    #[test]
    fn a_non_ascii_character_in_the_armor_is_refused() {
        let text = "-----BEGIN MEGOLM SESSION DATA-----\nAYBSv0GV5RgvQoVig6ZJcRCuL-----BEGIN MEGO\u{6c3}LM SESSIOOhN\u{fffd}\u{fffd}\n";
        assert!(matches!(decrypt_room_key_export(text, "x"), Err(KeyExportError::InvalidBase64)));
    }

    #[test]
    fn text_that_is_not_an_export_is_refused() {
        assert!(matches!(decrypt_room_key_export("hello", "p"), Err(KeyExportError::NotAKeyExport(_))));
        let garbage = format!("{HEADER}\n!!!!\n{FOOTER}\n");
        assert_eq!(decrypt_room_key_export(&garbage, "p"), Err(KeyExportError::InvalidBase64));
    }

    #[test]
    fn a_valid_mac_over_invalid_json_is_refused_before_any_key() {
        // Build a file whose MAC is right but whose plaintext is not an array of keys.
        let salt = [1u8; 16];
        let iv = [2u8; 16];
        let keys = derive_keys("p", &salt, 1);
        let mut bytes = vec![VERSION];
        bytes.extend_from_slice(&salt);
        bytes.extend_from_slice(&iv);
        bytes.extend_from_slice(&1u32.to_be_bytes());
        let mut plaintext = br#"[{"algorithm":"m.megolm.v1.aes-sha2"},"#.to_vec();
        primitives::aes256_ctr_apply(&keys.aes, &iv, &mut plaintext);
        bytes.extend_from_slice(&plaintext);
        let mut mac = hmac(&keys);
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        let file = rearmor(&bytes);
        let mut input = io::Cursor::new(file.as_bytes());
        assert!(matches!(KeyExportReader::open(&mut input, "p"), Err(KeyExportError::InvalidJson(_))));
    }

    #[test]
    fn debug_output_hides_the_session_key() {
        assert!(!format!("{:?}", key(7)).contains("secret7"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        /// Any set of keys and any passphrase survive a round trip; any other
        /// passphrase is refused.
        #[test]
        fn arbitrary_keys_and_passphrases_round_trip(
            passphrase in ".{0,24}",
            keys in proptest::collection::vec(("[a-z]{1,8}", "\\PC{0,40}", proptest::bool::ANY), 0..12),
        ) {
            let keys: Vec<ExportedRoomKey> = keys
                .into_iter()
                .map(|(room, secret, shared)| ExportedRoomKey {
                    algorithm: "m.megolm.v1.aes-sha2".into(),
                    room_id: format!("!{room}:example.org").try_into().unwrap(),
                    sender_key: "s".into(),
                    session_id: room.clone(),
                    session_key: secret,
                    sender_claimed_keys: BTreeMap::new(),
                    forwarding_curve25519_key_chain: vec![],
                    shared_history: shared,
                })
                .collect();
            let file = encrypt_room_key_export(&keys, &passphrase, 2).unwrap();
            proptest::prop_assert_eq!(decrypt_room_key_export(&file, &passphrase).unwrap(), keys);
            let wrong = format!("{passphrase}x");
            proptest::prop_assert_eq!(decrypt_room_key_export(&file, &wrong), Err(KeyExportError::WrongPassphraseOrCorrupt));
        }
    }
}
