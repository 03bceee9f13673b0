//! What a verification QR code holds.
//!
//! [`QrCodeData`] is the spec's binary segment: `MATRIX`, the format
//! version `0x02`, the [`QrMode`], the flow id (two big-endian length
//! bytes, then UTF-8), two ed25519 keys of 32 bytes each, and the shared
//! secret, which is the rest of the segment. [`QrCodeData::from_bytes`] is
//! the one checked decoder for a scanned code: every malformed input is a
//! [`QrError`], never a panic, and a decoded code encodes back to exactly
//! the bytes it came from.
//!
//! The secret is wiped when the code is dropped, compared in constant
//! time, and never printed by `Debug`.

use std::fmt;

use subtle::ConstantTimeEq;
use vodozemac::Ed25519PublicKey;
use zeroize::Zeroizing;

use super::image::QrImage;
use crate::verification::FlowId;

/// The segment's first six bytes.
const PREFIX: &[u8; 6] = b"MATRIX";

/// The format version, the only one the spec defines.
const FORMAT_VERSION: u8 = 0x02;

/// Prefix, version, mode and the flow id's two length bytes.
const HEADER_LEN: usize = PREFIX.len() + 4;

/// The longest flow id accepted. The format's two length bytes would allow
/// 65 535, but hush accepts no flow id from outside longer than this.
const MAX_FLOW_ID: usize = 255;

/// The shortest shared secret accepted (the spec suggests about 8 bytes).
const MIN_SECRET: usize = 8;

/// The longest shared secret accepted.
pub(super) const MAX_SECRET: usize = 64;

/// The length of the secrets this device makes.
const SECRET_LEN: usize = 16;

/// Which keys a code holds, named from the side of the device showing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QrMode {
    /// `0x00`: verifying another user. First key: our master key; second:
    /// what we believe the other user's master key is.
    VerifyingAnotherUser,
    /// `0x01`: verifying one of our own devices while this device trusts
    /// our master key. First key: our master key; second: what we believe
    /// the other device's ed25519 key is.
    SelfVerifyingMasterKeyTrusted,
    /// `0x02`: verifying one of our own devices while this device does not
    /// yet trust our master key. First key: this device's ed25519 key;
    /// second: what we believe our master key is.
    SelfVerifyingMasterKeyUntrusted,
}

impl QrMode {
    /// The mode byte.
    pub fn as_byte(self) -> u8 {
        match self {
            Self::VerifyingAnotherUser => 0x00,
            Self::SelfVerifyingMasterKeyTrusted => 0x01,
            Self::SelfVerifyingMasterKeyUntrusted => 0x02,
        }
    }

    /// The mode a byte names, if any.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0x00 => Some(Self::VerifyingAnotherUser),
            0x01 => Some(Self::SelfVerifyingMasterKeyTrusted),
            0x02 => Some(Self::SelfVerifyingMasterKeyUntrusted),
            _ => None,
        }
    }
}

/// Why a code was refused or could not be made.
///
/// The first group is a scanned code that is not a valid verification
/// code (the peer's, or the camera's, doing); `FlowMismatch` and
/// `ModeDoesNotFit` are the caller's mistakes; `NoRandomness` and
/// `TooLarge` are the environment's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QrError {
    /// The code does not start with `MATRIX`: not a verification code.
    #[error("the code does not start with MATRIX")]
    NotMatrix,
    /// A format version other than `0x02`.
    #[error("the code has format version {version:#04x}, expected 0x02")]
    UnsupportedVersion {
        /// The version byte.
        version: u8,
    },
    /// A mode byte other than `0x00`, `0x01` and `0x02`.
    #[error("the code has mode {mode:#04x}, expected 0x00, 0x01 or 0x02")]
    UnknownMode {
        /// The mode byte.
        mode: u8,
    },
    /// The code ends before its keys do.
    #[error("the code ends after {length} bytes, expected at least {needed}")]
    Truncated {
        /// The code's length.
        length: usize,
        /// The length reached before it ended.
        needed: usize,
    },
    /// The flow id is longer than hush accepts.
    #[error("the flow id is {length} bytes long, at most {MAX_FLOW_ID} are accepted")]
    FlowIdTooLong {
        /// Its length.
        length: usize,
    },
    /// The flow id is not UTF-8.
    #[error("the flow id is not UTF-8")]
    FlowIdNotUtf8,
    /// A key's 32 bytes are not a valid ed25519 public key.
    #[error("the {which} key is not a valid ed25519 public key")]
    InvalidKey {
        /// `first` or `second`.
        which: &'static str,
    },
    /// The shared secret is too short to resist guessing.
    #[error("the shared secret is {length} bytes long, expected at least {MIN_SECRET}")]
    SecretTooShort {
        /// Its length.
        length: usize,
    },
    /// The shared secret is longer than hush accepts.
    #[error("the shared secret is {length} bytes long, expected at most {MAX_SECRET}")]
    SecretTooLong {
        /// Its length.
        length: usize,
    },
    /// The code names another flow than the one it is shown or scanned in.
    #[error("the code names flow {code:?}, not this flow {flow:?}")]
    FlowMismatch {
        /// The code's flow id.
        code: String,
        /// The flow's id.
        flow: String,
    },
    /// The mode is for verifying another user and the other side is one
    /// of our devices, or the other way round.
    #[error("mode {mode:?} does not fit a verification where own_user is {own_user}")]
    ModeDoesNotFit {
        /// The code's mode.
        mode: QrMode,
        /// Whether the other side is a device of our own user.
        own_user: bool,
    },
    /// The operating system gave no randomness for the secret.
    #[error("no random source for the shared secret")]
    NoRandomness,
    /// The payload does not fit the largest QR code.
    #[error("the payload ({length} bytes) does not fit a QR code")]
    TooLarge {
        /// The payload's length.
        length: usize,
    },
}

/// The contents of a verification QR code.
///
/// Made by the three mode constructors (with a fresh secret) or decoded
/// from a scan; either way the flow id and secret lengths are within
/// bounds, so it always encodes.
#[derive(Clone)]
pub struct QrCodeData {
    mode: QrMode,
    flow_id: String,
    first_key: Ed25519PublicKey,
    second_key: Ed25519PublicKey,
    secret: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for QrCodeData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QrCodeData")
            .field("mode", &self.mode)
            .field("flow_id", &self.flow_id)
            .field("first_key", &self.first_key)
            .field("second_key", &self.second_key)
            .finish_non_exhaustive()
    }
}

/// Equal when every field is; the secrets are compared in constant time.
impl PartialEq for QrCodeData {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode
            && self.flow_id == other.flow_id
            && self.first_key == other.first_key
            && self.second_key == other.second_key
            && self.secret_matches(&other.secret)
    }
}

impl Eq for QrCodeData {}

impl QrCodeData {
    /// Mode `0x00`, verifying another user: our master key and what we
    /// believe theirs is, with a fresh secret.
    pub fn verifying_other_user(
        flow: &FlowId,
        our_master: Ed25519PublicKey,
        their_master: Ed25519PublicKey,
    ) -> Result<Self, QrError> {
        Self::new(QrMode::VerifyingAnotherUser, flow.as_str().to_owned(), our_master, their_master, fresh_secret()?)
    }

    /// Mode `0x01`, verifying our other device while we trust our master
    /// key: the master key and what we believe the other device's ed25519
    /// key is, with a fresh secret.
    pub fn self_verifying_trusted(
        flow: &FlowId,
        our_master: Ed25519PublicKey,
        other_device_key: Ed25519PublicKey,
    ) -> Result<Self, QrError> {
        let mode = QrMode::SelfVerifyingMasterKeyTrusted;
        Self::new(mode, flow.as_str().to_owned(), our_master, other_device_key, fresh_secret()?)
    }

    /// Mode `0x02`, verifying our other device while we do not trust our
    /// master key: this device's ed25519 key and what we believe the master
    /// key is, with a fresh secret.
    pub fn self_verifying_untrusted(
        flow: &FlowId,
        our_device_key: Ed25519PublicKey,
        master: Ed25519PublicKey,
    ) -> Result<Self, QrError> {
        let mode = QrMode::SelfVerifyingMasterKeyUntrusted;
        Self::new(mode, flow.as_str().to_owned(), our_device_key, master, fresh_secret()?)
    }

    /// A code from its parts, with the flow id and the secret checked.
    pub(super) fn new(
        mode: QrMode,
        flow_id: String,
        first_key: Ed25519PublicKey,
        second_key: Ed25519PublicKey,
        secret: Zeroizing<Vec<u8>>,
    ) -> Result<Self, QrError> {
        if flow_id.len() > MAX_FLOW_ID {
            return Err(QrError::FlowIdTooLong { length: flow_id.len() });
        }
        if secret.len() < MIN_SECRET {
            return Err(QrError::SecretTooShort { length: secret.len() });
        }
        if secret.len() > MAX_SECRET {
            return Err(QrError::SecretTooLong { length: secret.len() });
        }
        Ok(Self { mode, flow_id, first_key, second_key, secret })
    }

    /// The mode.
    pub fn mode(&self) -> QrMode {
        self.mode
    }

    /// The flow id: the request's `transaction_id` or event id.
    pub fn flow_id(&self) -> &str {
        &self.flow_id
    }

    /// The first key (see [`QrMode`] for which key it is).
    pub fn first_key(&self) -> Ed25519PublicKey {
        self.first_key
    }

    /// The second key (see [`QrMode`] for which key it is).
    pub fn second_key(&self) -> Ed25519PublicKey {
        self.second_key
    }

    /// The shared secret.
    pub(super) fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Whether `given` is the shared secret, compared in constant time.
    pub(super) fn secret_matches(&self, given: &[u8]) -> bool {
        bool::from(self.secret.as_slice().ct_eq(given))
    }

    /// The binary segment, as the spec lays it out.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        // The constructors bound the flow id to MAX_FLOW_ID bytes.
        let flow_length = u16::try_from(self.flow_id.len()).unwrap_or(u16::MAX);
        let capacity = HEADER_LEN + self.flow_id.len() + 2 * Ed25519PublicKey::LENGTH + self.secret.len();
        let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
        bytes.extend_from_slice(PREFIX);
        bytes.push(FORMAT_VERSION);
        bytes.push(self.mode.as_byte());
        bytes.extend_from_slice(&flow_length.to_be_bytes());
        bytes.extend_from_slice(self.flow_id.as_bytes());
        bytes.extend_from_slice(self.first_key.as_bytes());
        bytes.extend_from_slice(self.second_key.as_bytes());
        bytes.extend_from_slice(&self.secret);
        bytes
    }

    /// Decodes a scanned code: the one checked decoder.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, QrError> {
        if !bytes.starts_with(PREFIX) {
            return Err(match PREFIX.starts_with(bytes) {
                true => QrError::Truncated { length: bytes.len(), needed: PREFIX.len() },
                false => QrError::NotMatrix,
            });
        }
        let mut reader = Reader { rest: bytes, length: bytes.len() };
        reader.take(PREFIX.len())?;
        let [version] = reader.take_array()?;
        if version != FORMAT_VERSION {
            return Err(QrError::UnsupportedVersion { version });
        }
        let [mode] = reader.take_array()?;
        let mode = QrMode::from_byte(mode).ok_or(QrError::UnknownMode { mode })?;
        let flow_length = usize::from(u16::from_be_bytes(reader.take_array()?));
        if flow_length > MAX_FLOW_ID {
            return Err(QrError::FlowIdTooLong { length: flow_length });
        }
        let flow_id = std::str::from_utf8(reader.take(flow_length)?).map_err(|_| QrError::FlowIdNotUtf8)?;
        let first_key = decode_key(&reader.take_array()?, "first")?;
        let second_key = decode_key(&reader.take_array()?, "second")?;
        let secret = Zeroizing::new(reader.rest.to_vec());
        Self::new(mode, flow_id.to_owned(), first_key, second_key, secret)
    }

    /// The code to show.
    pub fn to_qr_code(&self) -> Result<QrImage, QrError> {
        QrImage::encode(&self.to_bytes())
    }
}

/// Reads a code front to back; every read checks the length first.
struct Reader<'a> {
    rest: &'a [u8],
    length: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], QrError> {
        let consumed = self.length.saturating_sub(self.rest.len());
        let truncated = QrError::Truncated { length: self.length, needed: consumed.saturating_add(n) };
        let (taken, rest) = self.rest.split_at_checked(n).ok_or(truncated)?;
        self.rest = rest;
        Ok(taken)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], QrError> {
        let taken = self.take(N)?;
        <[u8; N]>::try_from(taken).map_err(|_| QrError::Truncated { length: self.length, needed: N })
    }
}

fn decode_key(bytes: &[u8; 32], which: &'static str) -> Result<Ed25519PublicKey, QrError> {
    crate::keys::ed25519_from_bytes(bytes).map_err(|_| QrError::InvalidKey { which })
}

/// A fresh shared secret from the operating system's random source. Not
/// seedable: a predictable secret would let a third party complete a flow.
fn fresh_secret() -> Result<Zeroizing<Vec<u8>>, QrError> {
    let mut secret = Zeroizing::new(vec![0u8; SECRET_LEN]);
    getrandom::fill(secret.as_mut_slice()).map_err(|_| QrError::NoRandomness)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(seed: u8) -> Ed25519PublicKey {
        vodozemac::Ed25519SecretKey::from_slice(&[seed; 32]).public_key()
    }

    fn flow() -> FlowId {
        FlowId::ToDevice("flow-1".into())
    }

    fn in_room() -> FlowId {
        FlowId::InRoom {
            room_id: ruma_common::owned_room_id!("!dm:example.org"),
            event_id: ruma_common::owned_event_id!("$request"),
        }
    }

    fn secret() -> Zeroizing<Vec<u8>> {
        Zeroizing::new((0x20..0x30).collect())
    }

    /// Known answer: the bytes are laid out as the spec's QR code format says
    /// (written out by hand here, not by the encoder).
    #[test]
    fn the_payload_is_laid_out_as_the_spec_says() {
        let data = QrCodeData::new(QrMode::VerifyingAnotherUser, "$ABCD".into(), key(1), key(2), secret()).unwrap();
        let mut expected = vec![0x4D, 0x41, 0x54, 0x52, 0x49, 0x58, 0x02, 0x00, 0x00, 0x05];
        expected.extend_from_slice(b"$ABCD");
        expected.extend_from_slice(key(1).as_bytes());
        expected.extend_from_slice(key(2).as_bytes());
        expected.extend((0x20..0x30).collect::<Vec<u8>>());
        assert_eq!(*data.to_bytes(), expected);
        assert_eq!(QrCodeData::from_bytes(&expected), Ok(data));
        // The spec's example secret 2021222324252627 is "ICEiIyQlJic" in unpadded base64.
        assert_eq!(vodozemac::base64_encode([0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27]), "ICEiIyQlJic");
    }

    /// The mode bytes are the spec's, and no other byte is a mode.
    #[test]
    fn mode_bytes_are_the_specs() {
        let modes = [
            (0x00, QrMode::VerifyingAnotherUser),
            (0x01, QrMode::SelfVerifyingMasterKeyTrusted),
            (0x02, QrMode::SelfVerifyingMasterKeyUntrusted),
        ];
        for (byte, mode) in modes {
            assert_eq!((mode.as_byte(), QrMode::from_byte(byte)), (byte, Some(mode)));
        }
        assert!((3..=255).all(|byte| QrMode::from_byte(byte).is_none()));
    }

    /// Each mode constructor puts its keys where the spec's table says, with
    /// a fresh 16-byte secret each time.
    #[test]
    fn constructors_place_the_keys_and_make_fresh_secrets() {
        let made = [
            QrCodeData::verifying_other_user(&flow(), key(1), key(2)).unwrap(),
            QrCodeData::self_verifying_trusted(&flow(), key(1), key(2)).unwrap(),
            QrCodeData::self_verifying_untrusted(&flow(), key(1), key(2)).unwrap(),
        ];
        let modes: Vec<QrMode> = made.iter().map(QrCodeData::mode).collect();
        let expected_modes = [
            QrMode::VerifyingAnotherUser,
            QrMode::SelfVerifyingMasterKeyTrusted,
            QrMode::SelfVerifyingMasterKeyUntrusted,
        ];
        assert_eq!(modes, expected_modes);
        for data in &made {
            assert_eq!((data.flow_id(), data.first_key(), data.second_key()), ("flow-1", key(1), key(2)));
            assert_eq!(data.secret().len(), 16);
        }
        assert_ne!(made[0].secret(), made[1].secret());
        assert_eq!(QrCodeData::verifying_other_user(&in_room(), key(1), key(2)).unwrap().flow_id(), "$request");
    }

    /// Hostile input: each field of a valid code broken in turn is refused
    /// with that field's error, and so is a secret outside hush's bounds.
    #[test]
    fn each_malformed_field_has_its_error() {
        let valid =
            QrCodeData::new(QrMode::SelfVerifyingMasterKeyTrusted, "f".into(), key(1), key(2), secret()).unwrap();
        let bytes = valid.to_bytes().to_vec();
        let with = |index: usize, byte: u8| {
            let mut changed = bytes.clone();
            changed[index] = byte;
            QrCodeData::from_bytes(&changed)
        };
        assert_eq!(with(5, b'Y'), Err(QrError::NotMatrix));
        assert_eq!(QrCodeData::from_bytes(b"https://example.org"), Err(QrError::NotMatrix));
        assert_eq!(with(6, 0x01), Err(QrError::UnsupportedVersion { version: 0x01 }));
        assert_eq!(with(7, 0x03), Err(QrError::UnknownMode { mode: 0x03 }));
        assert_eq!(with(10, 0xFF), Err(QrError::FlowIdNotUtf8));
        let not_a_point = (0..=255u8).map(|b| [b; 32]).find(|k| Ed25519PublicKey::from_slice(k).is_err()).unwrap();
        let mut bad_first = bytes.clone();
        bad_first[11..43].copy_from_slice(&not_a_point);
        assert_eq!(QrCodeData::from_bytes(&bad_first), Err(QrError::InvalidKey { which: "first" }));
        let mut bad_second = bytes.clone();
        bad_second[43..75].copy_from_slice(&not_a_point);
        assert_eq!(QrCodeData::from_bytes(&bad_second), Err(QrError::InvalidKey { which: "second" }));
        let mut long_secret = bytes.clone();
        long_secret.extend([7; 49]);
        assert_eq!(QrCodeData::from_bytes(&long_secret), Err(QrError::SecretTooLong { length: 65 }));
        assert!(QrCodeData::from_bytes(&long_secret[..long_secret.len() - 1]).is_ok(), "64 bytes is accepted");
        assert_eq!(QrCodeData::from_bytes(&bytes[..75 + 7]), Err(QrError::SecretTooShort { length: 7 }));
    }

    /// The flow id's bound: 255 bytes pass both ways, 256 are refused by the
    /// constructor and by the decoder (even when the bytes are all there).
    #[test]
    fn a_flow_id_of_256_bytes_is_refused() {
        let make = |id: String| QrCodeData::new(QrMode::VerifyingAnotherUser, id, key(1), key(2), secret());
        let longest = make("a".repeat(255)).unwrap();
        assert_eq!(QrCodeData::from_bytes(&longest.to_bytes()), Ok(longest.clone()));
        assert_eq!(make("a".repeat(256)).unwrap_err(), QrError::FlowIdTooLong { length: 256 });
        let mut bytes = longest.to_bytes().to_vec();
        bytes[8..10].copy_from_slice(&256u16.to_be_bytes());
        bytes.insert(10, b'a');
        assert_eq!(QrCodeData::from_bytes(&bytes), Err(QrError::FlowIdTooLong { length: 256 }));
        let long_flow = FlowId::ToDevice("b".repeat(256));
        assert!(QrCodeData::verifying_other_user(&long_flow, key(1), key(2)).is_err());
    }

    /// Hostile input: every truncation of a valid code. The spec makes the
    /// secret "the remainder of the segment", so a cut inside the secret that
    /// leaves at least 8 bytes is a valid code with a shorter secret (whose
    /// scan then fails the secret check); every other cut is an error.
    #[test]
    fn every_truncation_is_refused_or_a_shorter_secret() {
        let data = QrCodeData::new(QrMode::VerifyingAnotherUser, "$event:id".into(), key(1), key(2), secret()).unwrap();
        let bytes = data.to_bytes();
        let secret_start = bytes.len() - data.secret().len();
        for length in 0..bytes.len() {
            let decoded = QrCodeData::from_bytes(&bytes[..length]);
            if length >= secret_start + 8 {
                let decoded = decoded.unwrap();
                assert_eq!(decoded.secret(), &data.secret()[..length - secret_start]);
                assert_eq!((decoded.first_key(), decoded.second_key()), (key(1), key(2)));
                assert!(!decoded.secret_matches(data.secret()));
            } else {
                assert!(decoded.is_err(), "a cut at {length} bytes was accepted");
            }
        }
        assert_eq!(QrCodeData::from_bytes(&[]), Err(QrError::Truncated { length: 0, needed: 6 }));
        assert_eq!(QrCodeData::from_bytes(&bytes[..20]), Err(QrError::Truncated { length: 20, needed: 19 + 32 }));
    }

    proptest! {
        /// Any code made from valid parts decodes to itself.
        #[test]
        fn a_code_decodes_to_itself(
            mode in 0u8..3,
            flow_id in "[^\u{0}]{0,60}",
            seeds in (any::<u8>(), any::<u8>()),
            secret in proptest::collection::vec(any::<u8>(), 8..=64),
        ) {
            let mode = QrMode::from_byte(mode).unwrap();
            let data = QrCodeData::new(mode, flow_id, key(seeds.0), key(seeds.1), Zeroizing::new(secret)).unwrap();
            prop_assert_eq!(QrCodeData::from_bytes(&data.to_bytes()), Ok(data));
        }

        /// Hostile input: arbitrary bytes, with and without a valid header,
        /// never panic, and whatever decodes encodes back to the same bytes
        /// (one reading per code).
        #[test]
        fn arbitrary_bytes_decode_canonically_or_not_at_all(
            header in any::<bool>(),
            tail in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut bytes = if header { b"MATRIX\x02".to_vec() } else { Vec::new() };
            bytes.extend(tail);
            if let Ok(data) = QrCodeData::from_bytes(&bytes) {
                prop_assert_eq!(data.to_bytes().to_vec(), bytes);
            }
        }
    }
}
