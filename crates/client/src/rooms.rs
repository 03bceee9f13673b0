//! What the client knows of each room, built from sync: membership, whether
//! it is encrypted (and with which rotation settings), history visibility.
//! Encryption can only be switched on: a later event cannot turn it off or
//! weaken it.

use std::collections::BTreeMap;

use ruma_common::{OwnedRoomId, OwnedUserId};
use ruma_events::room::history_visibility::HistoryVisibility;
use serde_json::Value;

/// A member's state in a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    /// Joined.
    Join,
    /// Invited.
    Invite,
    /// Left, kicked or banned.
    Leave,
}

/// The room's `m.room.encryption` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomEncryption {
    /// The algorithm.
    pub algorithm: String,
    /// `rotation_period_ms`, if set.
    pub rotation_period_ms: Option<u64>,
    /// `rotation_period_msgs`, if set.
    pub rotation_period_msgs: Option<u64>,
}

/// One room's state as far as the client needs it.
#[derive(Clone, Debug)]
pub struct RoomState {
    /// The room id.
    pub room_id: OwnedRoomId,
    /// Our own membership.
    pub own_membership: Membership,
    /// Every member's membership.
    pub members: BTreeMap<OwnedUserId, Membership>,
    /// The encryption settings, once encryption was switched on.
    pub encryption: Option<RoomEncryption>,
    /// The history visibility (default `shared`).
    pub history_visibility: HistoryVisibility,
}

impl RoomState {
    pub(crate) fn new(room_id: OwnedRoomId, own_membership: Membership) -> Self {
        Self {
            room_id,
            own_membership,
            members: BTreeMap::new(),
            encryption: None,
            history_visibility: HistoryVisibility::Shared,
        }
    }

    /// Applies one state event (as JSON).
    pub(crate) fn apply(&mut self, event: &Value) {
        let content = &event["content"];
        match event["type"].as_str() {
            Some("m.room.member") => {
                let Some(user) = event["state_key"].as_str().and_then(|u| OwnedUserId::try_from(u).ok()) else {
                    return;
                };
                let membership = match content["membership"].as_str() {
                    Some("join") => Membership::Join,
                    Some("invite") => Membership::Invite,
                    _ => Membership::Leave,
                };
                self.members.insert(user, membership);
            }
            Some("m.room.encryption") => {
                let Some(algorithm) = content["algorithm"].as_str() else { return };
                let candidate = RoomEncryption {
                    algorithm: algorithm.to_owned(),
                    rotation_period_ms: content["rotation_period_ms"].as_u64(),
                    rotation_period_msgs: content["rotation_period_msgs"].as_u64(),
                };
                match &self.encryption {
                    None => self.encryption = Some(candidate),
                    // Once on, encryption stays on; a later event may only
                    // shorten the rotation limits, never switch it off or loosen it.
                    Some(current) if current.algorithm == candidate.algorithm => {
                        let tighter = |old: Option<u64>, new: Option<u64>| match (old, new) {
                            (Some(old), Some(new)) => Some(old.min(new)),
                            (old, None) => old,
                            (None, new) => new,
                        };
                        self.encryption = Some(RoomEncryption {
                            algorithm: current.algorithm.clone(),
                            rotation_period_ms: tighter(current.rotation_period_ms, candidate.rotation_period_ms),
                            rotation_period_msgs: tighter(current.rotation_period_msgs, candidate.rotation_period_msgs),
                        });
                    }
                    Some(_) => {
                        tracing::warn!(room_id = %self.room_id, "ignored an m.room.encryption event changing the algorithm")
                    }
                }
            }
            Some("m.room.history_visibility") => {
                if let Some(visibility) = content["history_visibility"].as_str() {
                    self.history_visibility = HistoryVisibility::from(visibility);
                }
            }
            _ => {}
        }
    }

    /// Whether messages in this room are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    /// Members who should receive room keys: joined members, and invited ones
    /// unless history is visible to joined members only.
    pub fn key_recipients(&self) -> Vec<OwnedUserId> {
        let invited_too = self.history_visibility != HistoryVisibility::Joined;
        self.members
            .iter()
            .filter(|(_, m)| **m == Membership::Join || (invited_too && **m == Membership::Invite))
            .map(|(u, _)| u.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use ruma_common::owned_room_id;
    use serde_json::json;

    use super::*;

    #[test]
    fn encryption_cannot_be_switched_off_or_weakened() {
        let mut room = RoomState::new(owned_room_id!("!r:e.org"), Membership::Join);
        assert!(!room.is_encrypted());
        room.apply(&json!({"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_msgs": 50}}));
        assert!(room.is_encrypted());
        room.apply(&json!({"type": "m.room.encryption", "state_key": "", "content": {}}));
        room.apply(&json!({"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.none"}}));
        room.apply(&json!({"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_msgs": 500}}));
        let encryption = room.encryption.clone().unwrap();
        assert_eq!(encryption.algorithm, "m.megolm.v1.aes-sha2");
        assert_eq!(encryption.rotation_period_msgs, Some(50));
    }

    #[test]
    fn key_recipients_follow_history_visibility() {
        let mut room = RoomState::new(owned_room_id!("!r:e.org"), Membership::Join);
        for (user, membership) in [("@a:e.org", "join"), ("@b:e.org", "invite"), ("@c:e.org", "leave")] {
            room.apply(&json!({"type": "m.room.member", "state_key": user, "content": {"membership": membership}}));
        }
        assert_eq!(room.key_recipients().len(), 2);
        room.apply(
            &json!({"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}),
        );
        assert_eq!(room.key_recipients(), vec![OwnedUserId::try_from("@a:e.org").unwrap()]);
    }
}
