//! The short authentication strings from the 6 bytes HKDF gives both
//! sides, as the spec defines them: seven emoji from the first 42 bits in
//! groups of 6 (indices into the spec's table), and three numbers from the
//! first 39 bits in groups of 13, each plus 1000.

/// The seven emoji indices (0–63).
pub fn emoji_indices(bytes: &[u8; 6]) -> [u8; 7] {
    let bits = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let mut indices = [0u8; 7];
    for (i, index) in indices.iter_mut().enumerate() {
        let shift = 48 - 6 * (i as u32 + 1);
        *index = ((bits >> shift) & 0x3f) as u8;
    }
    indices
}

/// The three numbers (1000–9191).
pub fn decimals(bytes: &[u8; 6]) -> (u16, u16, u16) {
    let bits = bytes[..5].iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let number = |i: u32| ((bits >> (40 - 13 * (i + 1))) & 0x1fff) as u16 + 1000;
    (number(0), number(1), number(2))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Vectors worked out by hand from the spec's definition: 0x12 0x34 …
    /// is 000100 100011 010001 010110 011110 001001 101010 … in bits, and
    /// 0001001000110 1010101000001 1110001001101 … for the numbers; the
    /// extremes give 0 / 63 and 1000 / 9191.
    #[test]
    fn spec_vectors() {
        let bytes = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc];
        assert_eq!(emoji_indices(&bytes), [4, 35, 17, 22, 30, 9, 42]);
        assert_eq!(decimals(&bytes), (1582, 5441, 8245));
        assert_eq!(emoji_indices(&[0xff; 6]), [63; 7]);
        assert_eq!(decimals(&[0xff; 6]), (9191, 9191, 9191));
        assert_eq!(emoji_indices(&[0; 6]), [0; 7]);
        assert_eq!(decimals(&[0; 6]), (1000, 1000, 1000));
    }

    proptest! {
        /// For real exchanges, the same strings as vodozemac computes.
        #[test]
        fn the_same_as_vodozemac(info in "[a-zA-Z0-9|:]{0,40}") {
            let ours = vodozemac::sas::Sas::new();
            let theirs = vodozemac::sas::Sas::new();
            let established = ours.diffie_hellman(theirs.public_key()).unwrap();
            let sas_bytes = established.bytes(&info);
            prop_assert_eq!(emoji_indices(sas_bytes.as_bytes()), sas_bytes.emoji_indices());
            prop_assert_eq!(decimals(sas_bytes.as_bytes()), sas_bytes.decimals());
        }
    }
}
