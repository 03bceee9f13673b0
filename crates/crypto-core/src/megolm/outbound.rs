//! [`OutboundGroupSession`]: our Megolm session for one room, with whom it was
//! shared (and at which index), and when it must be rotated.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ruma_common::{OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId};
use serde::{Deserialize, Serialize};
use vodozemac::{
    Curve25519PublicKey,
    megolm::{GroupSession, GroupSessionPickle, MegolmMessage, SessionConfig, SessionKey},
};

use super::{EncryptionSettings, WithheldCode};
use crate::Timestamp;

/// A device that received the session, at which message index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedWith {
    /// The device's curve25519 key when the key was sent.
    pub curve25519: Curve25519PublicKey,
    /// The first message index the device can decrypt.
    pub message_index: u32,
}

/// What one device got of one of our room keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShareOutcome {
    /// The key, at this index.
    Shared(SharedWith),
    /// A withheld notice with this code.
    Withheld(WithheldCode),
}

/// One device's share of one of our room keys, acknowledged by the server:
/// saved per device, so acknowledging a share costs one row per device
/// instead of a rewrite of the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomKeyShareRecord {
    /// The room.
    pub room_id: OwnedRoomId,
    /// The room key's session id.
    pub session_id: String,
    /// The device's user.
    pub user_id: OwnedUserId,
    /// The device.
    pub device_id: OwnedDeviceId,
    /// What it got.
    pub outcome: ShareOutcome,
}

impl StoredOutboundGroupSession {
    /// Adds a share record of this session (records of other sessions are
    /// ignored): how a store rebuilds the maps when it loads the session.
    pub fn apply_share_record(&mut self, record: RoomKeyShareRecord) {
        if record.room_id != self.room_id || record.session_id != self.session_id {
            return;
        }
        match record.outcome {
            ShareOutcome::Shared(with) => {
                self.shared_with.entry(record.user_id).or_default().insert(record.device_id, with);
            }
            ShareOutcome::Withheld(code) => {
                self.withheld_from.entry(record.user_id).or_default().insert(record.device_id, code);
            }
        }
    }
}

/// A stored outbound group session (the ratchet is secret).
#[derive(Serialize, Deserialize)]
pub struct StoredOutboundGroupSession {
    /// The room.
    pub room_id: OwnedRoomId,
    /// The session id.
    pub session_id: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// How many messages it encrypted.
    pub message_count: u64,
    /// The settings it was created under.
    pub settings: EncryptionSettings,
    /// Devices whose receipt of the key the server acknowledged. The engine
    /// saves these as [`RoomKeyShareRecord`]s, one per device, and the store
    /// fills this map from them when it loads the session; a session saved
    /// by an older version may carry them here too.
    pub shared_with: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, SharedWith>>,
    /// Devices told (and acknowledged) that the key is withheld from them,
    /// stored and loaded like `shared_with`.
    pub withheld_from: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, WithheldCode>>,
    /// Set by `discard_room_key`: never used again.
    pub invalidated: bool,
    /// The ratchet (secret).
    pub pickle: GroupSessionPickle,
    /// Message indices below this may have been used although the stored
    /// ratchet is older: a session loaded from the store skips them.
    #[serde(default)]
    pub reserved_until: u32,
    /// Set by versions that save the share maps as [`RoomKeyShareRecord`]s;
    /// a session saved without it may carry its shares inline only, and the
    /// engine converts them to records when it loads it.
    #[serde(default)]
    pub shares_in_records: bool,
    /// Every device a share of the key was sent toward, acknowledged or
    /// not, saved before the request leaves: a share the server took but
    /// whose answer was lost (a crash) still counts when deciding whether
    /// a member left, so the key is rotated away from them.
    #[serde(default)]
    pub sent_to: BTreeMap<OwnedUserId, BTreeSet<OwnedDeviceId>>,
}

impl fmt::Debug for StoredOutboundGroupSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredOutboundGroupSession")
            .field("room_id", &self.room_id)
            .field("session_id", &self.session_id)
            .field("message_count", &self.message_count)
            .finish_non_exhaustive()
    }
}

/// Our Megolm session for a room.
pub(crate) struct OutboundGroupSession {
    inner: GroupSession,
    pub(crate) room_id: OwnedRoomId,
    pub(crate) session_id: String,
    pub(crate) created_at: Timestamp,
    pub(crate) message_count: u64,
    pub(crate) settings: EncryptionSettings,
    pub(crate) shared_with: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, SharedWith>>,
    pub(crate) withheld_from: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, WithheldCode>>,
    pub(crate) invalidated: bool,
    /// Devices a share was sent toward, acknowledged or not (saved).
    pub(crate) sent_to: BTreeMap<OwnedUserId, BTreeSet<OwnedDeviceId>>,
    /// Indices below this are covered by the last save (see [`MAX_RESERVATION`]).
    reserved_until: u32,
    /// The size of the next reservation: 1 in a new process, doubling per
    /// reservation up to [`MAX_RESERVATION`].
    next_block: u32,
}

/// The largest number of message indices one save of an outbound session
/// covers. The session is saved before a message whose index lies beyond
/// the last reservation leaves, reserving the next block of indices; after
/// a restart the ratchet skips past the reserved ones, and counts them as
/// sent, so a crash can skip indices but never reuse one, and the session
/// never carries more messages than the room allows. Blocks start at one
/// index in each process and double while it keeps sending (1, 2, 4, … 64):
/// a process that sends `k` messages and stops skips fewer than `k` (at
/// most 63) indices, and one that restarts after every message skips none,
/// at one save per message, which it would pay for the share anyway.
pub(crate) const MAX_RESERVATION: u32 = 64;

impl OutboundGroupSession {
    pub(crate) fn new(room_id: &RoomId, settings: EncryptionSettings, now: Timestamp) -> Self {
        let inner = GroupSession::new(SessionConfig::version_1());
        Self {
            session_id: inner.session_id(),
            inner,
            room_id: room_id.to_owned(),
            created_at: now,
            message_count: 0,
            settings,
            shared_with: BTreeMap::new(),
            withheld_from: BTreeMap::new(),
            invalidated: false,
            sent_to: BTreeMap::new(),
            reserved_until: 0,
            next_block: 1,
        }
    }

    pub(crate) fn from_stored(stored: StoredOutboundGroupSession) -> Self {
        let StoredOutboundGroupSession {
            room_id,
            session_id,
            created_at,
            message_count,
            settings,
            shared_with,
            withheld_from,
            invalidated,
            pickle,
            reserved_until,
            shares_in_records: _,
            sent_to,
        } = stored;
        let mut session = Self {
            inner: GroupSession::from_pickle(pickle),
            room_id,
            session_id,
            created_at,
            message_count,
            settings,
            shared_with,
            withheld_from,
            invalidated,
            sent_to,
            reserved_until,
            next_block: 1,
        };
        // Indices the last process may have used after its last save are
        // skipped and counted (vodozemac can only move the ratchet by
        // encrypting).
        while session.inner.message_index() < reserved_until {
            session.encrypt(&[]);
        }
        session
    }

    /// The stored form, without the share maps (those are saved as
    /// [`RoomKeyShareRecord`]s when the server acknowledges a share).
    pub(crate) fn to_stored(&self) -> StoredOutboundGroupSession {
        StoredOutboundGroupSession {
            room_id: self.room_id.clone(),
            session_id: self.session_id.clone(),
            created_at: self.created_at,
            message_count: self.message_count,
            settings: self.settings.clone(),
            shared_with: BTreeMap::new(),
            withheld_from: BTreeMap::new(),
            invalidated: self.invalidated,
            pickle: self.inner.pickle(),
            reserved_until: self.reserved_until,
            shares_in_records: true,
            sent_to: self.sent_to.clone(),
        }
    }

    /// Whether the next message's index lies beyond the saved reservation;
    /// if so, extends it: the caller must save the session before the
    /// message leaves.
    pub(crate) fn reserve_next(&mut self) -> bool {
        let next = self.inner.message_index();
        if next < self.reserved_until {
            return false;
        }
        self.reserved_until = next.saturating_add(self.next_block);
        self.next_block = self.next_block.saturating_mul(2).min(MAX_RESERVATION);
        true
    }

    /// Every share in the maps as records (to convert a session an older
    /// version saved with its maps inline).
    pub(crate) fn share_records(&self) -> Vec<RoomKeyShareRecord> {
        let record = |user_id: &OwnedUserId, device_id: &OwnedDeviceId, outcome| RoomKeyShareRecord {
            room_id: self.room_id.clone(),
            session_id: self.session_id.clone(),
            user_id: user_id.clone(),
            device_id: device_id.clone(),
            outcome,
        };
        let shared = self
            .shared_with
            .iter()
            .flat_map(|(u, devices)| devices.iter().map(move |(d, with)| record(u, d, ShareOutcome::Shared(*with))));
        let withheld = self.withheld_from.iter().flat_map(|(u, devices)| {
            devices.iter().map(move |(d, code)| record(u, d, ShareOutcome::Withheld(code.clone())))
        });
        shared.chain(withheld).collect()
    }

    /// The key at the current index, for `m.room_key`.
    pub(crate) fn session_key(&self) -> SessionKey {
        self.inner.session_key()
    }

    pub(crate) fn message_index(&self) -> u32 {
        self.inner.message_index()
    }

    pub(crate) fn encrypt(&mut self, plaintext: &[u8]) -> MegolmMessage {
        self.message_count += 1;
        self.inner.encrypt(plaintext)
    }
}
