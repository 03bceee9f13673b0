//! [`OneTimeKeyCounts`]: what a sync says of the one-time keys the server
//! holds for this device, read by the rule of the transport that carried it.

use std::collections::BTreeMap;

use js_int::UInt;
use ruma_common::OneTimeKeyAlgorithm;

/// What one sync said of the one-time keys the server holds for this
/// device. What an absent count means depends on the transport, so the
/// caller says which it used:
/// * `/sync` (v3): the count is left out when it is zero (spec v1.17:
///   required only while unclaimed keys exist), so an absent or empty
///   `device_one_time_keys_count` is zero: [`from_sync_v3`](Self::from_sync_v3)
///   gives `Known`.
/// * Simplified sliding sync's e2ee extension leaves the count out when it
///   did not change: [`from_sliding_sync`](Self::from_sliding_sync) gives
///   `Unknown` for an absent or empty count.
///
/// A known count below the target makes the engine generate and upload
/// keys; an unknown one changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum OneTimeKeyCounts {
    /// The sync said nothing usable about the count.
    #[default]
    Unknown,
    /// The counts per algorithm; an algorithm not listed has none left.
    Known(BTreeMap<OneTimeKeyAlgorithm, UInt>),
}

impl OneTimeKeyCounts {
    /// The counts of a `/sync` (v3) answer: absent or empty means zero.
    pub fn from_sync_v3(counts: BTreeMap<OneTimeKeyAlgorithm, UInt>) -> Self {
        Self::Known(counts)
    }

    /// The counts of a sliding-sync e2ee extension: absent or empty means
    /// unchanged, so unknown.
    pub fn from_sliding_sync(counts: Option<BTreeMap<OneTimeKeyAlgorithm, UInt>>) -> Self {
        match counts {
            Some(counts) if !counts.is_empty() => Self::Known(counts),
            _ => Self::Unknown,
        }
    }

    /// The count of `signed_curve25519` keys, if known.
    pub fn signed_curve25519(&self) -> Option<u64> {
        match self {
            Self::Unknown => None,
            Self::Known(counts) => {
                Some(counts.get(&OneTimeKeyAlgorithm::SignedCurve25519).map_or(0, |count| u64::from(*count)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use js_int::uint;

    use super::*;

    fn counts(n: u32) -> BTreeMap<OneTimeKeyAlgorithm, UInt> {
        BTreeMap::from([(OneTimeKeyAlgorithm::SignedCurve25519, UInt::from(n))])
    }

    #[test]
    fn on_sync_v3_an_absent_count_is_zero() {
        assert_eq!(OneTimeKeyCounts::from_sync_v3(BTreeMap::new()).signed_curve25519(), Some(0));
        assert_eq!(OneTimeKeyCounts::from_sync_v3(counts(37)).signed_curve25519(), Some(37));
        let other = BTreeMap::from([(OneTimeKeyAlgorithm::from("org.example.other"), uint!(5))]);
        assert_eq!(OneTimeKeyCounts::from_sync_v3(other).signed_curve25519(), Some(0), "an algorithm not listed");
    }

    #[test]
    fn on_sliding_sync_an_absent_count_is_unknown() {
        assert_eq!(OneTimeKeyCounts::from_sliding_sync(None).signed_curve25519(), None);
        assert_eq!(OneTimeKeyCounts::from_sliding_sync(Some(BTreeMap::new())).signed_curve25519(), None);
        assert_eq!(OneTimeKeyCounts::from_sliding_sync(Some(counts(0))).signed_curve25519(), Some(0));
        assert_eq!(OneTimeKeyCounts::from_sliding_sync(Some(counts(12))).signed_curve25519(), Some(12));
        assert_eq!(OneTimeKeyCounts::default(), OneTimeKeyCounts::Unknown);
    }
}
