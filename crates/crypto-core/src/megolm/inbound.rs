//! [`InboundGroupSession`]: a Megolm key we can decrypt with, bound to the
//! room, the sender's identity keys and where it came from.

use std::fmt;

use ruma_common::{OwnedRoomId, OwnedUserId, RoomId};
use serde::{Deserialize, Serialize};
use vodozemac::{
    Curve25519PublicKey, Ed25519PublicKey,
    megolm::{
        DecryptedMessage, DecryptionError, ExportedSessionKey, InboundGroupSession as VodoSession,
        InboundGroupSessionPickle, MegolmMessage, SessionConfig, SessionKey, SessionOrdering,
    },
};

/// How we obtained a room key, which decides how far it is authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeySource {
    /// We created it (our own outbound session).
    Own,
    /// An `m.room_key` over an Olm session with the sender: authenticated.
    Olm,
    /// A key file: the sender's keys are only claimed.
    Imported,
    /// A server-side key backup (even our own trusted one: the v1 backup
    /// algorithm lets anyone who knows its public key add entries), so the
    /// sender's keys are only claimed.
    Backup,
}

impl KeySource {
    /// Whether the sender's identity is proven (by our own creation or by Olm).
    pub fn is_authenticated(self) -> bool {
        matches!(self, Self::Own | Self::Olm)
    }
}

/// A stored inbound group session (the ratchet is secret).
#[derive(Serialize, Deserialize)]
pub struct StoredInboundGroupSession {
    /// The room the key is for.
    pub room_id: OwnedRoomId,
    /// The Megolm session id.
    pub session_id: String,
    /// The curve25519 key of the device that shared it.
    pub sender_key: Curve25519PublicKey,
    /// The ed25519 key the sharing device claimed.
    pub sender_ed25519: Option<Ed25519PublicKey>,
    /// The user who sent it over Olm (`None` for imported keys).
    pub sender_user: Option<OwnedUserId>,
    /// Where the key came from.
    pub source: KeySource,
    /// Whether the sender marked the key shareable with later members.
    #[serde(default)]
    pub shared_history: bool,
    /// The ratchet (secret).
    pub pickle: InboundGroupSessionPickle,
}

impl fmt::Debug for StoredInboundGroupSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredInboundGroupSession")
            .field("room_id", &self.room_id)
            .field("session_id", &self.session_id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A Megolm key for decrypting one sender's messages in one room.
pub(crate) struct InboundGroupSession {
    inner: VodoSession,
    pub(crate) room_id: OwnedRoomId,
    pub(crate) session_id: String,
    pub(crate) sender_key: Curve25519PublicKey,
    pub(crate) sender_ed25519: Option<Ed25519PublicKey>,
    pub(crate) sender_user: Option<OwnedUserId>,
    pub(crate) source: KeySource,
    pub(crate) shared_history: bool,
}

/// Common description of where a session key comes from.
pub(crate) struct Origin {
    pub(crate) sender_key: Curve25519PublicKey,
    pub(crate) sender_ed25519: Option<Ed25519PublicKey>,
    pub(crate) sender_user: Option<OwnedUserId>,
    pub(crate) source: KeySource,
    pub(crate) shared_history: bool,
}

impl InboundGroupSession {
    /// From an `m.room_key` (or our own outbound session's key).
    pub(crate) fn from_session_key(room_id: &RoomId, key: &SessionKey, origin: Origin) -> Self {
        Self::with(VodoSession::new(key, SessionConfig::version_1()), room_id, origin)
    }

    /// From an exported key (file or backup).
    pub(crate) fn from_export(room_id: &RoomId, key: &ExportedSessionKey, origin: Origin) -> Self {
        Self::with(VodoSession::import(key, SessionConfig::version_1()), room_id, origin)
    }

    fn with(inner: VodoSession, room_id: &RoomId, origin: Origin) -> Self {
        let Origin { sender_key, sender_ed25519, sender_user, source, shared_history } = origin;
        Self {
            session_id: inner.session_id(),
            inner,
            room_id: room_id.to_owned(),
            sender_key,
            sender_ed25519,
            sender_user,
            source,
            shared_history,
        }
    }

    pub(crate) fn from_stored(stored: StoredInboundGroupSession) -> Self {
        let StoredInboundGroupSession {
            room_id,
            session_id,
            sender_key,
            sender_ed25519,
            sender_user,
            source,
            shared_history,
            pickle,
        } = stored;
        Self {
            inner: VodoSession::from_pickle(pickle),
            room_id,
            session_id,
            sender_key,
            sender_ed25519,
            sender_user,
            source,
            shared_history,
        }
    }

    pub(crate) fn to_stored(&self) -> StoredInboundGroupSession {
        StoredInboundGroupSession {
            room_id: self.room_id.clone(),
            session_id: self.session_id.clone(),
            sender_key: self.sender_key,
            sender_ed25519: self.sender_ed25519,
            sender_user: self.sender_user.clone(),
            source: self.source,
            shared_history: self.shared_history,
            pickle: self.inner.pickle(),
        }
    }

    pub(crate) fn decrypt(&mut self, message: &MegolmMessage) -> Result<DecryptedMessage, DecryptionError> {
        self.inner.decrypt(message)
    }

    pub(crate) fn export(&self) -> ExportedSessionKey {
        self.inner.export_at_first_known_index()
    }

    /// The first message index this key decrypts.
    pub(crate) fn first_known_index(&self) -> u32 {
        self.inner.first_known_index()
    }

    /// Whether `self` should replace `existing` (same session id): it must
    /// reach further back, and an authenticated key is never replaced by an
    /// unauthenticated one.
    pub(crate) fn is_better_than(&mut self, existing: &mut Self) -> bool {
        if existing.source.is_authenticated() && !self.source.is_authenticated() {
            return false;
        }
        match self.inner.compare(&mut existing.inner) {
            SessionOrdering::Better => true,
            // Same ratchet, but now authenticated: take the better provenance.
            SessionOrdering::Equal => self.source.is_authenticated() && !existing.source.is_authenticated(),
            SessionOrdering::Worse | SessionOrdering::Unconnected => false,
        }
    }
}

/// How a refused key's owner differs from the held key's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerMismatch {
    /// Another sender curve25519 key.
    SenderKey,
    /// Another claimed ed25519 key.
    ClaimedEd25519,
    /// Another owning user.
    User,
}

impl OwnerMismatch {
    /// The rule: two keys are the same key only if every owner fact that
    /// both record agrees. A fact one side lacks (an imported key knows no
    /// user) is not a difference, so an imported copy can be upgraded by the
    /// same owner's copy over Olm, and only by that.
    pub(crate) fn between(held: &InboundGroupSession, offered: &InboundGroupSession) -> Option<Self> {
        if held.sender_key != offered.sender_key {
            return Some(Self::SenderKey);
        }
        if let (Some(a), Some(b)) = (held.sender_ed25519, offered.sender_ed25519)
            && a != b
        {
            return Some(Self::ClaimedEd25519);
        }
        if let (Some(a), Some(b)) = (&held.sender_user, &offered.sender_user)
            && a != b
        {
            return Some(Self::User);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use ruma_common::room_id;
    use vodozemac::megolm::GroupSession;

    use super::*;

    fn origin(source: KeySource) -> Origin {
        Origin {
            sender_key: Curve25519PublicKey::from_bytes([1; 32]),
            sender_ed25519: None,
            sender_user: None,
            source,
            shared_history: false,
        }
    }

    #[test]
    fn the_better_copy_wins_and_olm_beats_files() {
        let room = room_id!("!r:e.org");
        let mut outbound = GroupSession::new(SessionConfig::version_1());
        let at_zero = outbound.session_key();
        outbound.encrypt("one");
        let at_one = outbound.session_key();

        let mut imported_late = InboundGroupSession::from_session_key(room, &at_one, origin(KeySource::Imported));
        let mut imported_early = InboundGroupSession::from_session_key(room, &at_zero, origin(KeySource::Imported));
        let mut olm_late = InboundGroupSession::from_session_key(room, &at_one, origin(KeySource::Olm));

        assert!(imported_early.is_better_than(&mut imported_late));
        assert!(!imported_late.is_better_than(&mut imported_early));
        // An unauthenticated copy never replaces an authenticated one, even if earlier.
        assert!(!imported_early.is_better_than(&mut olm_late));
        // The same ratchet arriving over Olm upgrades an imported copy.
        let mut olm_early = InboundGroupSession::from_session_key(room, &at_zero, origin(KeySource::Olm));
        assert!(olm_early.is_better_than(&mut imported_early));
        // A different session under the same id is never taken.
        let other = GroupSession::new(SessionConfig::version_1()).session_key();
        let mut unrelated = InboundGroupSession::from_session_key(room, &other, origin(KeySource::Olm));
        assert!(!unrelated.is_better_than(&mut imported_late));
    }
}
