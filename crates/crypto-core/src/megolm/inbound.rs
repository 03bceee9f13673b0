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
    /// Forwarded by one of our own verified devices in answer to our
    /// request (`m.forwarded_room_key`): the sender's keys are only claimed
    /// by the forwarder.
    Forwarded,
}

impl KeySource {
    /// Whether the sender's identity is proven (by our own creation or by Olm).
    pub fn is_authenticated(self) -> bool {
        matches!(self, Self::Own | Self::Olm)
    }

    /// How far a copy from this source is believed over another copy of the
    /// same session id when the two cannot both be right: ours or the
    /// sender's (over Olm), then what the user or a verified device of ours
    /// gave us (a file, a forward), then the server-writable backup.
    fn rank(self) -> u8 {
        match self {
            Self::Own | Self::Olm => 3,
            Self::Imported | Self::Forwarded => 2,
            Self::Backup => 1,
        }
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

    /// What to do with `self`, offered while `existing` (same room and
    /// session id) is held. The rules, in order:
    ///
    /// - a key from a better-believed source (see `KeySource::rank`: ours
    ///   or the sender's over Olm, then a file or a verified device's
    ///   forward, then the backup) takes the place of a held copy that has
    ///   another owner or a ratchet that does not connect: whoever can write
    ///   a backup entry (the server), a file or a forward can put a forged
    ///   ratchet under a real (public) session id, and must not block the
    ///   real key that way;
    /// - otherwise keys with different owners never replace each other;
    /// - an unauthenticated key never replaces an authenticated one, except
    ///   to extend it: a copy of the same ratchet (they connect, under the
    ///   same signing key) that reaches further back gives the held copy
    ///   its earlier ratchet, the held provenance kept. Only the sender
    ///   could make an earlier ratchet that advances to the one it sent us
    ///   over Olm, and every message is signed with the session's key, so
    ///   the earlier messages are as much the sender's as the later ones
    ///   (without this, a forwarded or backed-up key could never unlock
    ///   the messages sent before our device received the session);
    /// - among the same ratchet, the copy reaching further back wins, and an
    ///   authenticated copy that reaches less far lends its provenance to
    ///   the held one (the ratchets connect, so both are the same session).
    pub(crate) fn judge(&mut self, existing: &mut Self) -> Judgement {
        let upgrade = self.source.is_authenticated() && !existing.source.is_authenticated();
        let stronger = self.source.rank() > existing.source.rank();
        let mismatch = OwnerMismatch::between(existing, self);
        let ordering = self.inner.compare(&mut existing.inner);
        if stronger {
            if let Some(mismatch) = mismatch {
                return Judgement::Displace(Displaced::Owner(mismatch));
            }
            if ordering == SessionOrdering::Unconnected {
                return Judgement::Displace(Displaced::Ratchet);
            }
        }
        if let Some(mismatch) = mismatch {
            return Judgement::Conflict(mismatch);
        }
        if existing.source.is_authenticated() && !self.source.is_authenticated() {
            return match ordering {
                SessionOrdering::Better => Judgement::Extend,
                _ => Judgement::Keep,
            };
        }
        match ordering {
            SessionOrdering::Better => Judgement::Take,
            SessionOrdering::Equal if upgrade => Judgement::Take,
            SessionOrdering::Worse if upgrade => Judgement::Upgrade,
            SessionOrdering::Equal | SessionOrdering::Worse | SessionOrdering::Unconnected => Judgement::Keep,
        }
    }

    /// Takes `authenticated`'s provenance (a copy of the same ratchet that
    /// came from the sender itself): its keys, its owner, its source, and
    /// whether the sender let it be shared with later members (an
    /// unauthenticated copy's claim to that is not believed).
    pub(crate) fn adopt_provenance(&mut self, authenticated: &Self) {
        self.sender_ed25519 = authenticated.sender_ed25519;
        self.sender_user.clone_from(&authenticated.sender_user);
        self.source = authenticated.source;
        self.shared_history = authenticated.shared_history;
    }
}

/// A room key as key files, backups and forwards carry it: the session key
/// exported at some index and the sender's keys as claimed.
pub(crate) struct ExportedParts<'a> {
    pub(crate) room_id: &'a RoomId,
    pub(crate) session_id: &'a str,
    pub(crate) session_key: &'a str,
    pub(crate) sender_key: &'a str,
    pub(crate) claimed_ed25519: Option<&'a str>,
    pub(crate) shared_history: bool,
    pub(crate) source: KeySource,
}

/// Which part of an exported key is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BadExportedKey {
    /// The session key does not decode.
    SessionKey,
    /// The sender's curve25519 key does not decode.
    SenderKey,
    /// The claimed ed25519 key does not decode.
    ClaimedKey,
    /// The session id is not the key's.
    SessionId,
}

impl InboundGroupSession {
    /// The session an exported key describes, if every part decodes and its
    /// session id is the key's. The sender's keys are only claimed.
    pub(crate) fn from_exported_parts(parts: ExportedParts<'_>) -> Result<Self, BadExportedKey> {
        let key = ExportedSessionKey::from_base64(parts.session_key).map_err(|_| BadExportedKey::SessionKey)?;
        let origin = Origin {
            sender_key: crate::keys::curve25519_from_base64(parts.sender_key).map_err(|_| BadExportedKey::SenderKey)?,
            // A claimed key that is present but invalid makes the whole key invalid.
            sender_ed25519: match parts.claimed_ed25519 {
                Some(claimed) => {
                    Some(crate::keys::ed25519_from_base64(claimed).map_err(|_| BadExportedKey::ClaimedKey)?)
                }
                None => None,
            },
            sender_user: None,
            source: parts.source,
            shared_history: parts.shared_history,
        };
        let session = Self::from_export(parts.room_id, &key, origin);
        match session.session_id == parts.session_id {
            true => Ok(session),
            false => Err(BadExportedKey::SessionId),
        }
    }
}

/// The verdict of [`InboundGroupSession::judge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Judgement {
    /// The offered key replaces the held one.
    Take,
    /// The held key stays; the offered one is dropped.
    Keep,
    /// The held key stays but takes the offered key's provenance.
    Upgrade,
    /// The offered key (same ratchet, reaching further back) is stored
    /// with the held key's provenance.
    Extend,
    /// The offered key has another owner and is refused.
    Conflict(OwnerMismatch),
    /// The held key, from a less believed source, was not the sender's and
    /// the offered key replaces it.
    Displace(Displaced),
}

/// Why a held unauthenticated key was displaced by an authenticated one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Displaced {
    /// It named another owner.
    Owner(OwnerMismatch),
    /// Its ratchet is not the sender's.
    Ratchet,
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

        assert_eq!(imported_early.judge(&mut imported_late), Judgement::Take);
        assert_eq!(imported_late.judge(&mut imported_early), Judgement::Keep);
        // An unauthenticated copy of the same ratchet reaching further back
        // extends an authenticated one (keeping its provenance)...
        assert_eq!(imported_early.judge(&mut olm_late), Judgement::Extend);
        // ...but one reaching no further is dropped.
        assert_eq!(imported_late.judge(&mut olm_late), Judgement::Keep);
        // An earlier copy claiming another sender is refused, never an extension.
        let mut other_origin = origin(KeySource::Imported);
        other_origin.sender_key = Curve25519PublicKey::from_bytes([2; 32]);
        let mut foreign_early = InboundGroupSession::from_session_key(room, &at_zero, other_origin);
        assert!(matches!(foreign_early.judge(&mut olm_late), Judgement::Conflict(_)));
        // The extended copy keeps the authenticated copy's provenance, its
        // shared-history flag included.
        let mut claims_shared = Origin { shared_history: true, ..origin(KeySource::Forwarded) };
        claims_shared.sender_ed25519 = None;
        let mut extended = InboundGroupSession::from_session_key(room, &at_zero, claims_shared);
        extended.adopt_provenance(&olm_late);
        assert_eq!((extended.source, extended.shared_history), (KeySource::Olm, false));
        // The same ratchet arriving over Olm upgrades an imported copy...
        let mut olm_early = InboundGroupSession::from_session_key(room, &at_zero, origin(KeySource::Olm));
        assert_eq!(olm_early.judge(&mut imported_early), Judgement::Take);
        // ...and a later copy over Olm lends its provenance to an earlier file copy.
        assert_eq!(olm_late.judge(&mut imported_early), Judgement::Upgrade);
        // A different ratchet under the same id never replaces an authenticated key.
        let other = GroupSession::new(SessionConfig::version_1()).session_key();
        let mut unrelated = InboundGroupSession::from_session_key(room, &other, origin(KeySource::Imported));
        assert_eq!(unrelated.judge(&mut olm_late), Judgement::Keep);
    }

    /// Attack: whoever can write a key file, a backup entry or a forward puts
    /// a ratchet of their own under a real session id (session ids are
    /// public), hoping the real key over Olm is then refused as "unconnected"
    /// or "another owner" and the room stays unreadable. The real key must
    /// displace the forgery either way.
    #[test]
    fn a_forged_unauthenticated_copy_does_not_block_the_real_key() {
        let room = room_id!("!r:e.org");
        let real = GroupSession::new(SessionConfig::version_1()).session_key();
        let mut from_sender = InboundGroupSession::from_session_key(room, &real, origin(KeySource::Olm));

        // Same session id (the public signing key), another ratchet.
        let mut forged_ratchet = InboundGroupSession::from_session_key(room, &real, origin(KeySource::Backup));
        let other = GroupSession::new(SessionConfig::version_1()).session_key();
        forged_ratchet.inner = VodoSession::new(&other, SessionConfig::version_1());
        assert_eq!(from_sender.judge(&mut forged_ratchet), Judgement::Displace(Displaced::Ratchet));

        // Same ratchet, another claimed owner.
        let mut forged_owner = InboundGroupSession::from_session_key(room, &real, origin(KeySource::Backup));
        forged_owner.sender_key = Curve25519PublicKey::from_bytes([2; 32]);
        assert_eq!(
            from_sender.judge(&mut forged_owner),
            Judgement::Displace(Displaced::Owner(OwnerMismatch::SenderKey))
        );

        // A verified device's forward displaces a forged backup copy too,
        // but not a key from the sender.
        let mut forwarded = InboundGroupSession::from_session_key(room, &real, origin(KeySource::Forwarded));
        let mut forged_again = InboundGroupSession::from_session_key(room, &real, origin(KeySource::Backup));
        forged_again.inner = VodoSession::new(&other, SessionConfig::version_1());
        assert_eq!(forwarded.judge(&mut forged_again), Judgement::Displace(Displaced::Ratchet));
        let mut forged_forward = InboundGroupSession::from_session_key(room, &real, origin(KeySource::Forwarded));
        forged_forward.inner = VodoSession::new(&other, SessionConfig::version_1());
        assert_eq!(forged_forward.judge(&mut from_sender), Judgement::Keep);

        // Between two authenticated keys the owner rule still holds.
        let mut other_sender = InboundGroupSession::from_session_key(room, &real, origin(KeySource::Olm));
        other_sender.sender_key = Curve25519PublicKey::from_bytes([2; 32]);
        assert_eq!(other_sender.judge(&mut from_sender), Judgement::Conflict(OwnerMismatch::SenderKey));
    }
}
