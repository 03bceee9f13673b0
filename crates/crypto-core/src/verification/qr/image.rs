//! A verification QR code as a picture.
//!
//! [`QrImage`] is the code as a module matrix: one byte-mode segment (as
//! the spec requires; the `qrcode` crate's automatic segmentation could
//! split it into numeric and alphanumeric parts), error correction level
//! L, the smallest version that holds it, drawn as SVG or as terminal
//! text with a quiet zone of four modules.
//!
//! The modules encode the shared secret: `Debug` prints only the size and
//! the matrix is wiped when dropped. The `qrcode` crate's intermediate
//! buffers and the rendered strings are not wiped; the secret only keeps a
//! device that did not scan the code from completing the flow, it is not a
//! long-term key.

use std::fmt::{self, Write as _};

use qrcode::{Color, EcLevel, QrCode, Version, bits::Bits};
use zeroize::Zeroize;

use super::payload::QrError;

/// Light modules around the code on every side, as ISO/IEC 18004 asks.
const QUIET_ZONE: usize = 4;

/// The error correction level (the showing device chooses; L keeps the
/// code small, and a screen read by a camera needs little correction).
const EC_LEVEL: EcLevel = EcLevel::L;

/// `bytes` as one byte-mode segment with its terminator and padding, in
/// `version`; an error if it does not fit.
pub(super) fn byte_mode_bits(bytes: &[u8], version: Version) -> Result<Bits, qrcode::types::QrError> {
    let mut bits = Bits::new(version);
    bits.push_byte_data(bytes)?;
    bits.push_terminator(EC_LEVEL)?;
    Ok(bits)
}

/// A QR code as a square of modules, dark or light, without its quiet zone.
#[derive(Clone, PartialEq, Eq)]
pub struct QrImage {
    width: usize,
    /// Row by row, `true` for dark.
    modules: Vec<bool>,
}

/// The modules encode the secret: only the size is printed.
impl fmt::Debug for QrImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QrImage").field("width", &self.width).finish_non_exhaustive()
    }
}

impl Drop for QrImage {
    fn drop(&mut self) {
        self.modules.zeroize();
    }
}

impl QrImage {
    /// `bytes` as a QR code of one byte-mode segment, in the smallest
    /// version that holds it.
    pub(super) fn encode(bytes: &[u8]) -> Result<Self, QrError> {
        let code = (1..=40)
            .find_map(|version| byte_mode_bits(bytes, Version::Normal(version)).ok())
            .and_then(|bits| QrCode::with_bits(bits, EC_LEVEL).ok())
            .ok_or(QrError::TooLarge { length: bytes.len() })?;
        let modules = code.to_colors().into_iter().map(|color| color == Color::Dark).collect();
        Ok(Self { width: code.width(), modules })
    }

    /// Modules on each side, without the quiet zone.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Whether the module in column `x`, row `y` is dark (`false` outside
    /// the code).
    pub fn is_dark(&self, x: usize, y: usize) -> bool {
        if x >= self.width || y >= self.width {
            return false;
        }
        y.checked_mul(self.width)
            .and_then(|row| row.checked_add(x))
            .and_then(|index| self.modules.get(index))
            .copied()
            .unwrap_or(false)
    }

    /// Whether the module at `x`, `y` of the code framed by its quiet zone
    /// is dark.
    fn is_dark_framed(&self, x: usize, y: usize) -> bool {
        match (x.checked_sub(QUIET_ZONE), y.checked_sub(QUIET_ZONE)) {
            (Some(x), Some(y)) => self.is_dark(x, y),
            _ => false,
        }
    }

    /// Modules on each side with the quiet zone.
    fn framed_width(&self) -> usize {
        self.width.saturating_add(2 * QUIET_ZONE)
    }

    /// A plain SVG document, `module_px` pixels per module (at least 1),
    /// black on white with a quiet zone of four modules.
    pub fn to_svg(&self, module_px: u32) -> String {
        let px = u64::from(module_px.max(1));
        let size = self.framed_width() as u64 * px;
        let mut path = String::new();
        for y in 0..self.width {
            for x in 0..self.width {
                if self.is_dark(x, y) {
                    let (left, top) = ((x + QUIET_ZONE) as u64 * px, (y + QUIET_ZONE) as u64 * px);
                    let _ = write!(path, "M{left} {top}h{px}v{px}h-{px}z");
                }
            }
        }
        format!(
            concat!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{size}" height="{size}" "#,
                r#"viewBox="0 0 {size} {size}" shape-rendering="crispEdges">"#,
                r##"<rect width="{size}" height="{size}" fill="#ffffff"/>"##,
                r##"<path fill="#000000" d="{path}"/></svg>"##,
            ),
            size = size,
            path = path,
        )
    }

    /// The code as terminal text, two rows of modules per line in half
    /// blocks, with a quiet zone of four modules. Drawn for light text on a
    /// dark background: light modules (and the quiet zone) are the text
    /// colour, dark modules the background.
    pub fn to_unicode(&self) -> String {
        let side = self.framed_width();
        let mut text = String::with_capacity(side.saturating_add(1).saturating_mul(side.div_ceil(2)).saturating_mul(3));
        for y in (0..side).step_by(2) {
            for x in 0..side {
                let top = !self.is_dark_framed(x, y);
                let bottom = y + 1 < side && !self.is_dark_framed(x, y + 1);
                text.push(match (top, bottom) {
                    (true, true) => '█',
                    (true, false) => '▀',
                    (false, true) => '▄',
                    (false, false) => ' ',
                });
            }
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use qrcode::{EcLevel, QrCode, Version};
    use vodozemac::Ed25519PublicKey;
    use zeroize::Zeroizing;

    use super::*;
    use crate::verification::{
        FlowId,
        qr::{QrCodeData, QrMode},
    };

    fn key(seed: u8) -> Ed25519PublicKey {
        vodozemac::Ed25519SecretKey::from_slice(&[seed; 32]).public_key()
    }

    fn flow() -> FlowId {
        FlowId::ToDevice("flow-1".into())
    }

    fn secret() -> Zeroizing<Vec<u8>> {
        Zeroizing::new((0x20..0x30).collect())
    }

    fn version_of(image: &QrImage) -> i16 {
        i16::try_from((image.width() - 17) / 4).unwrap()
    }

    /// Reads `count` bits from `bytes`, starting at bit `start`.
    fn bits_at(bytes: &[u8], start: usize, count: usize) -> usize {
        (start..start + count).fold(0, |acc, i| (acc << 1) | usize::from((bytes[i / 8] >> (7 - i % 8)) & 1))
    }

    /// The spec asks for a single byte-mode segment: the data stream is mode
    /// `0100`, the length, the payload and the terminator; and the version is
    /// the smallest that holds it.
    #[test]
    fn the_code_is_one_byte_mode_segment() {
        for flow_id in ["t", &"x".repeat(200)] {
            let data = QrCodeData::verifying_other_user(&FlowId::ToDevice(flow_id.into()), key(1), key(2)).unwrap();
            let payload = data.to_bytes();
            let image = data.to_qr_code().unwrap();
            let version = version_of(&image);
            let stream = byte_mode_bits(&payload, Version::Normal(version)).unwrap().into_bytes();
            let count_bits = if version < 10 { 8 } else { 16 };
            assert_eq!(bits_at(&stream, 0, 4), 0b0100, "byte mode");
            assert_eq!(bits_at(&stream, 4, count_bits), payload.len());
            let start = 4 + count_bits;
            let read: Vec<u8> = (0..payload.len()).map(|i| bits_at(&stream, start + 8 * i, 8) as u8).collect();
            assert_eq!(read, *payload);
            assert_eq!(bits_at(&stream, start + 8 * payload.len(), 4), 0, "terminator: no second segment");
            assert!(byte_mode_bits(&payload, Version::Normal(version - 1)).is_err(), "not the smallest version");
        }
    }

    /// No QR decoder is at hand, so the image is checked against the same
    /// bytes encoded again by the qrcode crate: module for module, and a code
    /// with one secret byte changed does not match.
    #[test]
    fn the_image_is_the_code_of_the_payload() {
        let data = QrCodeData::new(QrMode::VerifyingAnotherUser, "$request".into(), key(1), key(2), secret()).unwrap();
        let image = data.to_qr_code().unwrap();
        let reference = |bytes: &[u8]| {
            let mut bits = Bits::new(Version::Normal(version_of(&image)));
            bits.push_byte_data(bytes).unwrap();
            bits.push_terminator(EcLevel::L).unwrap();
            QrCode::with_bits(bits, EcLevel::L).unwrap()
        };
        let same = |code: &QrCode| {
            code.width() == image.width()
                && (0..code.width())
                    .all(|y| (0..code.width()).all(|x| image.is_dark(x, y) == (code[(x, y)] == Color::Dark)))
        };
        assert!(same(&reference(&data.to_bytes())));
        let mut other = data.to_bytes().to_vec();
        *other.last_mut().unwrap() ^= 1;
        assert!(!same(&reference(&other)));
    }

    /// Outside the code every module is light.
    #[test]
    fn is_dark_is_false_outside_the_code() {
        let image = QrCodeData::verifying_other_user(&flow(), key(1), key(2)).unwrap().to_qr_code().unwrap();
        let w = image.width();
        assert!(image.is_dark(0, 0), "a finder pattern's corner");
        assert!(!image.is_dark(w, 0) && !image.is_dark(0, w) && !image.is_dark(usize::MAX, usize::MAX));
    }

    /// The SVG is square, framed by four light modules, with one square per
    /// dark module at its place; zero pixels per module are drawn as one.
    #[test]
    fn the_svg_draws_every_dark_module_inside_a_quiet_zone() {
        let image = QrCodeData::verifying_other_user(&flow(), key(1), key(2)).unwrap().to_qr_code().unwrap();
        let w = image.width();
        let svg = image.to_svg(3);
        let size = (w + 8) * 3;
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
        assert!(svg.contains(&format!(r#"width="{size}" height="{size}" viewBox="0 0 {size} {size}""#)));
        let squares: Vec<(usize, usize)> = svg
            .split('M')
            .skip(1)
            .map(|square| {
                let (x, rest) = square.split_once(' ').unwrap();
                (x.parse().unwrap(), rest.split_once('h').unwrap().0.parse().unwrap())
            })
            .collect();
        let dark: Vec<(usize, usize)> =
            (0..w).flat_map(|y| (0..w).map(move |x| (x, y))).filter(|&(x, y)| image.is_dark(x, y)).collect();
        assert_eq!(squares, dark.iter().map(|&(x, y)| ((x + 4) * 3, (y + 4) * 3)).collect::<Vec<_>>());
        assert!(image.to_svg(0).contains(&format!(r#"width="{}""#, w + 8)));
    }

    /// The terminal text reads back to the modules: half blocks, light as the
    /// text colour, a quiet zone of four modules on every side.
    #[test]
    fn the_terminal_text_reads_back_to_the_modules() {
        let image = QrCodeData::verifying_other_user(&flow(), key(1), key(2)).unwrap().to_qr_code().unwrap();
        let side = image.width() + 8;
        let text = image.to_unicode();
        let lines: Vec<Vec<char>> = text.lines().map(|line| line.chars().collect()).collect();
        assert_eq!(lines.len(), side.div_ceil(2));
        for (row, line) in lines.iter().enumerate() {
            assert_eq!(line.len(), side);
            for (x, &c) in line.iter().enumerate() {
                let (top_light, bottom_light) = match c {
                    '█' => (true, true),
                    '▀' => (true, false),
                    '▄' => (false, true),
                    ' ' => (false, false),
                    other => panic!("unexpected {other:?}"),
                };
                let light = |y: usize| {
                    (4..side - 4).contains(&x) && (4..side - 4).contains(&y) && !image.is_dark(x - 4, y - 4)
                        || !(4..side - 4).contains(&x)
                        || !(4..side - 4).contains(&y)
                };
                assert_eq!(top_light, light(2 * row), "({x}, {})", 2 * row);
                if 2 * row + 1 < side {
                    assert_eq!(bottom_light, light(2 * row + 1), "({x}, {})", 2 * row + 1);
                }
            }
        }
        assert!(lines[0].iter().chain(&lines[1]).all(|&c| c == '█'), "two lines of quiet zone on top");
    }
}
