//! What the client knows of each room, built from sync: membership, whether
//! it is encrypted (and with which rotation settings), history visibility.
//! Encryption can only be switched on: a later event cannot turn it off or
//! weaken it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use ruma_common::{OwnedRoomId, OwnedUserId};
use ruma_events::room::history_visibility::HistoryVisibility;
use serde_json::Value;

/// A member's state in a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Membership {
    /// Joined.
    Join,
    /// Invited.
    Invite,
    /// Left, kicked or banned.
    Leave,
}

/// The room's `m.room.encryption` settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomEncryption {
    /// The algorithm.
    pub algorithm: String,
    /// `rotation_period_ms`, if set.
    pub rotation_period_ms: Option<u64>,
    /// `rotation_period_msgs`, if set.
    pub rotation_period_msgs: Option<u64>,
}

/// One room's state as far as the client needs it. Persisted in the crypto
/// store with the sync token, so a restarted client resumes with an
/// incremental sync and knows which rooms are encrypted before it syncs.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// The server confirmed that the room has no `m.room.encryption` state.
    /// Until encryption is on or this is set, the room's encryption is
    /// unknown and nothing is sent in the clear. Never persisted: after a
    /// restart the server is asked again, since encryption may have been
    /// switched on while the client was not running.
    #[serde(skip)]
    pub confirmed_unencrypted: bool,
}

impl RoomState {
    pub(crate) fn new(room_id: OwnedRoomId, own_membership: Membership) -> Self {
        Self {
            room_id,
            own_membership,
            members: BTreeMap::new(),
            encryption: None,
            history_visibility: HistoryVisibility::Shared,
            confirmed_unencrypted: false,
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
                    None => {
                        self.encryption = Some(candidate);
                        self.confirmed_unencrypted = false;
                    }
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

    /// The room's encryption as far as it is known.
    pub fn encryption_state(&self) -> EncryptionState {
        match (&self.encryption, self.confirmed_unencrypted) {
            (Some(_), _) => EncryptionState::Encrypted,
            (None, true) => EncryptionState::Unencrypted,
            (None, false) => EncryptionState::Unknown,
        }
    }

    /// The store key of this room's persisted state.
    pub(crate) fn store_key(room_id: &ruma_common::RoomId) -> String {
        format!("{ROOM_KEY_PREFIX}{room_id}")
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

/// The custom-value name of the list of rooms whose state is persisted.
pub(crate) const ROOM_LIST_KEY: &str = "hush.client.rooms";
const ROOM_KEY_PREFIX: &str = "hush.client.room.";

/// Whether a room's messages must be encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncryptionState {
    /// `m.room.encryption` is set: every message is encrypted.
    Encrypted,
    /// The server confirmed the room has no `m.room.encryption` state.
    Unencrypted,
    /// Not known yet (e.g. a room whose state this client never saw):
    /// asked of the server before anything is sent.
    Unknown,
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
