//! What the client knows of each room, built from sync: membership, whether
//! it is encrypted (and with which rotation settings), history visibility.
//! The rules are crypto-core's: encryption can only be switched on, never
//! off or weakened (`RoomEncryption::merge`), and who receives room keys
//! follows the history visibility (`key_recipients`).

use std::collections::BTreeMap;

use hush_crypto_core::{EncryptionMerge, RoomInfo, SharingStrategy, key_recipients};
pub use hush_crypto_core::{Membership, RoomEncryption};
use serde::{Deserialize, Serialize};

use ruma_common::{OwnedRoomId, OwnedUserId};
use ruma_events::room::history_visibility::HistoryVisibility;
use serde_json::Value;

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
    /// The latest timeline event handed to the handlers (its timestamp and
    /// id): a sliding sync connection started again replays the rooms'
    /// latest events, and only those after it are delivered.
    #[serde(default)]
    pub(crate) last_delivered: Option<(u64, String)>,
    /// When our current membership began to entitle us to the room's keys
    /// (our join, or our invite where invited members receive keys), from
    /// our own `m.room.member` event; `None` once we leave, or if we never
    /// saw it.
    #[serde(default)]
    pub(crate) member_since: Option<u64>,
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
            last_delivered: None,
            member_since: None,
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
                self.members.insert(user, Membership::from_wire(content["membership"].as_str().unwrap_or_default()));
            }
            Some("m.room.encryption") => {
                let merge = RoomEncryption::merge(self.encryption.as_ref(), RoomEncryption::from_content(content));
                if matches!(merge, EncryptionMerge::SwitchedOn(_)) {
                    self.confirmed_unencrypted = false;
                }
                self.encryption = merge.into_current();
            }
            Some("m.room.history_visibility") => {
                if let Some(visibility) = content["history_visibility"].as_str() {
                    self.history_visibility = HistoryVisibility::from(visibility);
                }
            }
            _ => {}
        }
    }

    /// Records `event` as delivered if it is the latest so far.
    /// Notes our own membership event: when we became a member the room's
    /// keys are meant for, or that we left.
    pub(crate) fn note_own_membership(&mut self, event: &Value, own_user: &str) {
        if event["type"] != "m.room.member" || event["state_key"] != own_user {
            return;
        }
        let ts = event["origin_server_ts"].as_u64();
        match event["content"]["membership"].as_str() {
            Some("join") => self.member_since = self.member_since.or(ts),
            Some("invite") if self.history_visibility != HistoryVisibility::Joined => {
                self.member_since = self.member_since.or(ts);
            }
            Some("invite") => {}
            _ => self.member_since = None,
        }
    }

    /// Whether we were a member the keys were meant for when an event was
    /// sent at `sent`, as far as we know.
    pub(crate) fn membership_at(&self, sent: Option<u64>) -> hush_crypto_core::MembershipAtEvent {
        use hush_crypto_core::MembershipAtEvent;
        match (self.member_since, sent) {
            (Some(since), Some(sent)) if sent < since => MembershipAtEvent::NotMember,
            (Some(_), Some(_)) => MembershipAtEvent::Member,
            _ => MembershipAtEvent::Unknown,
        }
    }

    /// Records `event` as delivered if it is the latest so far.
    pub(crate) fn note_delivered(&mut self, event: &Value) {
        let (Some(ts), Some(id)) = (event["origin_server_ts"].as_u64(), event["event_id"].as_str()) else { return };
        if self.last_delivered.as_ref().is_none_or(|(last, _)| ts >= *last) {
            self.last_delivered = Some((ts, id.to_owned()));
        }
    }

    /// Of a replayed timeline, the events after the latest one delivered:
    /// those after its id if the timeline holds it, otherwise those not
    /// older than it (all of them if nothing was delivered yet).
    pub(crate) fn undelivered<'a>(&self, timeline: &'a [Value]) -> &'a [Value] {
        let Some((ts, id)) = &self.last_delivered else { return timeline };
        if let Some(at) = timeline.iter().position(|e| e["event_id"].as_str() == Some(id.as_str())) {
            return &timeline[at + 1..];
        }
        let from = timeline.iter().position(|e| e["origin_server_ts"].as_u64().is_some_and(|t| t >= *ts));
        from.map_or(&[], |from| &timeline[from..])
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
        key_recipients(self.members.iter().map(|(u, m)| (u.as_ref(), *m)), &self.history_visibility)
    }

    /// The room as crypto-core's room-level command takes it, with the
    /// sharing strategy in force.
    pub fn room_info(&self, sharing_strategy: SharingStrategy) -> RoomInfo {
        RoomInfo {
            room_id: self.room_id.clone(),
            members: self.members.iter().map(|(u, m)| (u.clone(), *m)).collect(),
            history_visibility: self.history_visibility.clone(),
            encryption: self.encryption.clone(),
            sharing_strategy,
        }
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

    #[test]
    fn a_replayed_timeline_delivers_only_what_came_after_the_last_delivered_event() {
        let mut room = RoomState::new(owned_room_id!("!r:e.org"), Membership::Join);
        let event = |id: &str, ts: u64| json!({"event_id": id, "origin_server_ts": ts});
        let timeline = vec![event("$a", 10), event("$b", 20), event("$c", 20), event("$d", 30)];
        assert_eq!(room.undelivered(&timeline).len(), 4, "nothing delivered yet");
        room.note_delivered(&timeline[1]);
        room.note_delivered(&timeline[0]);
        assert_eq!(room.undelivered(&timeline), &timeline[2..], "after $b, found by id");
        // The last delivered event fell out of the replayed window: by time.
        let later = vec![event("$x", 15), event("$y", 20), event("$z", 25)];
        assert_eq!(room.undelivered(&later), &later[1..]);
        let older = vec![event("$p", 1), event("$q", 2)];
        assert!(room.undelivered(&older).is_empty());
    }
}

#[cfg(test)]
mod membership_tests {
    use hush_crypto_core::MembershipAtEvent;
    use serde_json::json;

    use super::*;

    fn member(membership: &str, ts: u64) -> Value {
        json!({"type": "m.room.member", "state_key": "@me:e.org", "origin_server_ts": ts, "content": {"membership": membership}})
    }

    #[test]
    fn our_membership_events_say_which_events_were_meant_for_us() {
        let mut room = RoomState::new("!r:e.org".try_into().unwrap(), Membership::Join);
        assert_eq!(room.membership_at(Some(50)), MembershipAtEvent::Unknown, "nothing seen yet");
        room.note_own_membership(&member("join", 100), "@me:e.org");
        assert_eq!(room.membership_at(Some(50)), MembershipAtEvent::NotMember);
        assert_eq!(room.membership_at(Some(150)), MembershipAtEvent::Member);
        // Someone else's membership changes nothing.
        let other = json!({"type": "m.room.member", "state_key": "@you:e.org", "origin_server_ts": 120, "content": {"membership": "leave"}});
        room.note_own_membership(&other, "@me:e.org");
        assert_eq!(room.membership_at(Some(150)), MembershipAtEvent::Member);
        // We leave and join again: what was sent while we were out was not for us.
        room.note_own_membership(&member("leave", 200), "@me:e.org");
        assert_eq!(room.membership_at(Some(250)), MembershipAtEvent::Unknown);
        room.note_own_membership(&member("join", 300), "@me:e.org");
        assert_eq!(room.membership_at(Some(250)), MembershipAtEvent::NotMember);
        assert_eq!(room.membership_at(Some(350)), MembershipAtEvent::Member);
    }

    #[test]
    fn an_invite_counts_unless_only_joined_members_see_history() {
        let mut shared = RoomState::new("!r:e.org".try_into().unwrap(), Membership::Invite);
        shared.note_own_membership(&member("invite", 100), "@me:e.org");
        assert_eq!(shared.membership_at(Some(150)), MembershipAtEvent::Member);
        let mut joined_only = RoomState::new("!r:e.org".try_into().unwrap(), Membership::Invite);
        joined_only.history_visibility = HistoryVisibility::Joined;
        joined_only.note_own_membership(&member("invite", 100), "@me:e.org");
        joined_only.note_own_membership(&member("join", 200), "@me:e.org");
        assert_eq!(joined_only.membership_at(Some(150)), MembershipAtEvent::NotMember);
    }
}
