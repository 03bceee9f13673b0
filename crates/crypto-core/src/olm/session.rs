//! [`Session`]: one Olm double ratchet with another device, plus when it was
//! made and last used (the newest working session is the one we send with).

use vodozemac::{
    Curve25519PublicKey,
    olm::{DecryptionError, EncryptionError, OlmMessage, Session as OlmSession},
};

use ruma_common::{OwnedDeviceId, OwnedUserId};

use crate::{Timestamp, devices::DeviceData, store::StoredSession};

/// An Olm session with the device whose curve25519 key is `sender_key`.
pub(crate) struct Session {
    inner: OlmSession,
    sender_key: Curve25519PublicKey,
    session_id: String,
    created_at: Timestamp,
    last_used_at: Timestamp,
    owner: SessionOwner,
}

/// Who the session was made with: a session is used only for that device,
/// never for another device (of another user) that claims the same
/// curve25519 key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SessionOwner {
    pub(crate) user: Option<OwnedUserId>,
    pub(crate) device: Option<OwnedDeviceId>,
}

impl SessionOwner {
    /// The owner of a session made with `device`.
    pub(crate) fn of(device: &DeviceData) -> Self {
        Self { user: Some(device.user_id().to_owned()), device: Some(device.device_id().to_owned()) }
    }
}

impl Session {
    pub(crate) fn new(inner: OlmSession, sender_key: Curve25519PublicKey, owner: SessionOwner, now: Timestamp) -> Self {
        let session_id = inner.session_id();
        Self { inner, sender_key, session_id, created_at: now, last_used_at: now, owner }
    }

    pub(crate) fn from_stored(stored: StoredSession) -> Self {
        let StoredSession { sender_key, session_id, pickle, created_at, last_used_at, owner_user, owner_device } =
            stored;
        let owner = SessionOwner { user: owner_user, device: owner_device };
        Self { inner: OlmSession::from_pickle(pickle), sender_key, session_id, created_at, last_used_at, owner }
    }

    /// Whether this session may be used to encrypt for `device`: every
    /// owner fact it records matches (sessions from stores that recorded
    /// none match any device with their curve25519 key).
    pub(crate) fn belongs_to(&self, device: &DeviceData) -> bool {
        self.owner.user.as_deref().is_none_or(|u| u == device.user_id())
            && self.owner.device.as_deref().is_none_or(|d| d == device.device_id())
    }

    pub(crate) fn to_stored(&self) -> StoredSession {
        StoredSession {
            sender_key: self.sender_key,
            session_id: self.session_id.clone(),
            pickle: self.inner.pickle(),
            created_at: self.created_at,
            last_used_at: self.last_used_at,
            owner_user: self.owner.user.clone(),
            owner_device: self.owner.device.clone(),
        }
    }

    pub(crate) fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Ordering key for "newest working session": last use, then creation.
    pub(crate) fn recency(&self) -> (Timestamp, Timestamp) {
        (self.last_used_at, self.created_at)
    }

    /// Encrypts `plaintext`, advancing the sending chain. Fails only if the
    /// peer's ratchet key is degenerate (a peer fault, not ours).
    pub(crate) fn encrypt(&mut self, plaintext: &[u8], now: Timestamp) -> Result<OlmMessage, EncryptionError> {
        let message = self.inner.encrypt(plaintext)?;
        self.last_used_at = self.last_used_at.max(now);
        Ok(message)
    }

    /// Tries to decrypt `message`. The ratchet only moves on success.
    pub(crate) fn decrypt(&mut self, message: &OlmMessage, now: Timestamp) -> Result<Vec<u8>, DecryptionError> {
        let plaintext = self.inner.decrypt(message)?;
        self.last_used_at = self.last_used_at.max(now);
        Ok(plaintext)
    }

    /// A copy through the pickle (vodozemac sessions are not `Clone`), to roll
    /// back a decryption whose plaintext was then rejected.
    pub(crate) fn snapshot(&self) -> Self {
        Self::from_stored(self.to_stored())
    }
}
