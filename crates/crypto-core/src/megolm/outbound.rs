//! [`OutboundGroupSession`]: our Megolm session for one room, with whom it was
//! shared (and at which index), and when it must be rotated.

use std::collections::BTreeMap;
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
    /// Devices whose receipt of the key the server acknowledged.
    pub shared_with: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, SharedWith>>,
    /// Devices told (and acknowledged) that the key is withheld from them.
    pub withheld_from: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, WithheldCode>>,
    /// Set by `discard_room_key`: never used again.
    pub invalidated: bool,
    /// The ratchet (secret).
    pub pickle: GroupSessionPickle,
    /// Message indices below this may have been used although the stored
    /// ratchet is older: a session loaded from the store skips them.
    #[serde(default)]
    pub reserved_until: u32,
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
    /// Indices below this are covered by the last save (see [`RESERVATION`]).
    reserved_until: u32,
}

/// How many message indices one save of an outbound session covers. The
/// session is saved once per this many messages, with the promise that the
/// indices up to the reservation may be in use; after a restart the ratchet
/// skips past them, so a crash can skip indices but never reuse one.
pub(crate) const RESERVATION: u32 = 64;

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
            reserved_until: 0,
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
            reserved_until,
        };
        // Indices the last process may have used after its last save are
        // skipped (vodozemac can only move the ratchet by encrypting).
        while session.inner.message_index() < reserved_until {
            session.encrypt(&[]);
        }
        session
    }

    pub(crate) fn to_stored(&self) -> StoredOutboundGroupSession {
        StoredOutboundGroupSession {
            room_id: self.room_id.clone(),
            session_id: self.session_id.clone(),
            created_at: self.created_at,
            message_count: self.message_count,
            settings: self.settings.clone(),
            shared_with: self.shared_with.clone(),
            withheld_from: self.withheld_from.clone(),
            invalidated: self.invalidated,
            pickle: self.inner.pickle(),
            reserved_until: self.reserved_until,
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
        self.reserved_until = next.saturating_add(RESERVATION);
        true
    }

    /// The key at the current index, for `m.room_key`.
    pub(crate) fn session_key(&self) -> SessionKey {
        self.inner.session_key()
    }

    pub(crate) fn message_index(&self) -> u32 {
        self.inner.message_index()
    }

    /// Whether the message count or the age reached the rotation limits.
    pub(crate) fn is_expired(&self, now: Timestamp) -> bool {
        self.message_count >= self.settings.rotation_period_msgs
            || now.saturating_duration_since(self.created_at) >= self.settings.rotation_period
    }

    pub(crate) fn encrypt(&mut self, plaintext: &[u8]) -> MegolmMessage {
        self.message_count += 1;
        self.inner.encrypt(plaintext)
    }
}
