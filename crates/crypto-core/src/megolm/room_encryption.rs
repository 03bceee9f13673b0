//! [`RoomEncryption`]: a room's `m.room.encryption` settings, and the rule
//! that once a room is encrypted it stays encrypted: a later event (or an
//! embedder that forgot the state) can neither switch encryption off,
//! change the algorithm, nor loosen the rotation limits; it may only
//! tighten them.

use ruma_events::room::history_visibility::HistoryVisibility;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{EncryptionSettings, SharingStrategy};

/// A room's `m.room.encryption` content, as far as encryption needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomEncryption {
    /// The algorithm.
    pub algorithm: String,
    /// `rotation_period_ms`, if set.
    pub rotation_period_ms: Option<u64>,
    /// `rotation_period_msgs`, if set.
    pub rotation_period_msgs: Option<u64>,
}

/// What merging a newer `m.room.encryption` into the known one did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncryptionMerge {
    /// The room was not encrypted; now it is.
    SwitchedOn(RoomEncryption),
    /// Still encrypted; the limits are the tighter of old and new.
    Kept(RoomEncryption),
    /// The newer content was ignored (no algorithm, another algorithm, or
    /// nothing new); the known settings stand.
    Ignored(Option<RoomEncryption>),
}

impl EncryptionMerge {
    /// The settings in force after the merge.
    pub fn into_current(self) -> Option<RoomEncryption> {
        match self {
            Self::SwitchedOn(e) | Self::Kept(e) => Some(e),
            Self::Ignored(e) => e,
        }
    }
}

impl RoomEncryption {
    /// From an `m.room.encryption` content; `None` if it names no algorithm.
    pub fn from_content(content: &Value) -> Option<Self> {
        Some(Self {
            algorithm: content.get("algorithm")?.as_str()?.to_owned(),
            rotation_period_ms: content.get("rotation_period_ms").and_then(Value::as_u64),
            rotation_period_msgs: content.get("rotation_period_msgs").and_then(Value::as_u64),
        })
    }

    /// Merges a newer content (`None`: no algorithm, or the embedder does not
    /// know the room's encryption) into `current` under the rule above.
    pub fn merge(current: Option<&Self>, newer: Option<Self>) -> EncryptionMerge {
        match (current, newer) {
            (None, Some(newer)) => EncryptionMerge::SwitchedOn(newer),
            (current, None) => EncryptionMerge::Ignored(current.cloned()),
            (Some(current), Some(newer)) if current.algorithm != newer.algorithm => {
                tracing::warn!(
                    kept = %current.algorithm,
                    ignored = %newer.algorithm,
                    "ignored an m.room.encryption change of algorithm"
                );
                EncryptionMerge::Ignored(Some(current.clone()))
            }
            (Some(current), Some(newer)) => {
                let tighter = |old: Option<u64>, new: Option<u64>| match (old, new) {
                    (Some(old), Some(new)) => Some(old.min(new)),
                    (old, None) => old,
                    (None, new) => new,
                };
                let merged = Self {
                    algorithm: current.algorithm.clone(),
                    rotation_period_ms: tighter(current.rotation_period_ms, newer.rotation_period_ms),
                    rotation_period_msgs: tighter(current.rotation_period_msgs, newer.rotation_period_msgs),
                };
                if merged == *current { EncryptionMerge::Ignored(Some(merged)) } else { EncryptionMerge::Kept(merged) }
            }
        }
    }

    /// The encryption settings for sharing and rotating the room key (the
    /// limits raised to at least [`MIN_ROTATION_PERIOD`](super::MIN_ROTATION_PERIOD)
    /// and [`MIN_ROTATION_MESSAGES`](super::MIN_ROTATION_MESSAGES)).
    pub fn settings(&self, history_visibility: HistoryVisibility, strategy: SharingStrategy) -> EncryptionSettings {
        let settings = EncryptionSettings::from_room_encryption(
            self.rotation_period_ms,
            self.rotation_period_msgs,
            history_visibility,
            strategy,
        );
        EncryptionSettings { algorithm: self.algorithm.clone(), ..settings }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(content: Value) -> Option<RoomEncryption> {
        RoomEncryption::from_content(&content)
    }

    #[test]
    fn encryption_cannot_be_switched_off_or_weakened() {
        let on = parse(json!({"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_msgs": 50}));
        let current = RoomEncryption::merge(None, on.clone()).into_current();
        assert_eq!(current, on);
        let mut current = current;
        for later in [
            json!({}),
            json!({"algorithm": "m.none"}),
            json!({"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_msgs": 500}),
        ] {
            current = RoomEncryption::merge(current.as_ref(), parse(later)).into_current();
        }
        let current = current.unwrap();
        assert_eq!(current.algorithm, "m.megolm.v1.aes-sha2");
        assert_eq!(current.rotation_period_msgs, Some(50));
        // Tightening is taken.
        let tighter = parse(json!({"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_ms": 1000}));
        let merged = RoomEncryption::merge(Some(&current), tighter);
        assert!(
            matches!(&merged, EncryptionMerge::Kept(e) if e.rotation_period_ms == Some(1000) && e.rotation_period_msgs == Some(50))
        );
    }

    #[test]
    fn settings_take_the_spec_defaults() {
        let encryption = parse(json!({"algorithm": "m.megolm.v1.aes-sha2"})).unwrap();
        let settings = encryption.settings(HistoryVisibility::Joined, SharingStrategy::LegacyAllDevices);
        assert_eq!(settings.rotation_period_msgs, 100);
        assert_eq!(settings.rotation_period, std::time::Duration::from_secs(7 * 24 * 3600));
        assert_eq!(settings.history_visibility, HistoryVisibility::Joined);
    }

    /// Attack: a room (or an invite's stripped state) names a rotation of
    /// 0 messages or 0 ms, so every key would expire as soon as it was
    /// shared and each message would re-share a new key with every device.
    #[test]
    fn rotation_limits_have_a_floor() {
        let zero =
            parse(json!({"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_ms": 0, "rotation_period_msgs": 0}));
        let settings = zero.unwrap().settings(HistoryVisibility::Shared, SharingStrategy::LegacyAllDevices);
        assert_eq!(settings.rotation_period_msgs, 1);
        assert_eq!(settings.rotation_period, std::time::Duration::from_secs(3600));
    }
}
