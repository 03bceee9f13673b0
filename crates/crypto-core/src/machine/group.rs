//! Encrypting room events with our room key and decrypting others' with the
//! keys we hold, explaining every failure.

use ruma_common::{OwnedDeviceId, OwnedUserId, RoomId, serde::Raw};
use ruma_events::{AnyTimelineEvent, room::encrypted::RoomEncryptedEventContent};
use serde_json::{Value, json};
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey, megolm::DecryptionError};

use super::{OlmMachine, lock};
use crate::{
    StoreError, Timestamp,
    megolm::{
        DecryptionSettings, EncryptError, InboundGroupSession, KeySource, MegolmError, RoomPlaintext, TrustRequirement,
        WithheldCode, encrypted_content, parse_encrypted_event,
    },
    store::{Changes, MessageIndexRecord},
};

/// How far the device that sent a room event is trusted, as known today.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerificationState {
    /// Our own device, or a device the user verified.
    Verified,
    /// A known device the user has not verified.
    Unverified,
    /// The key's device is not among the sender's known devices.
    UnknownDevice,
    /// The known device's ed25519 key differs from the one the key's sender claimed.
    KeyMismatch,
}

/// Who sent a decrypted room event, and how we know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MegolmDecryptionInfo {
    /// The event's sender (checked against the key's owner).
    pub sender: OwnedUserId,
    /// The sending device, if known.
    pub sender_device: Option<OwnedDeviceId>,
    /// The curve25519 key of the device that shared the room key.
    pub sender_curve25519_key: Curve25519PublicKey,
    /// The ed25519 key that device claimed.
    pub sender_claimed_ed25519_key: Option<Ed25519PublicKey>,
    /// The Megolm session.
    pub session_id: String,
    /// The message's index in the session.
    pub message_index: u32,
    /// Where our copy of the key came from.
    pub key_source: KeySource,
    /// The sending device's trust.
    pub verification_state: VerificationState,
}

/// A decrypted room event: the original event with the plaintext's type and
/// content in place of the ciphertext.
#[derive(Clone, Debug)]
pub struct DecryptedRoomEvent {
    /// The decrypted event (`room_id` included).
    pub event: Raw<AnyTimelineEvent>,
    /// Who sent it.
    pub info: MegolmDecryptionInfo,
}

impl OlmMachine {
    /// Encrypts one room event with the room's current key, as
    /// `m.megolm.v1.aes-sha2` `m.room.encrypted` content. `share_room_key`
    /// must have run for the room (and again once the key reached its limits).
    pub async fn encrypt_room_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        content: &Value,
        now: Timestamp,
    ) -> Result<Raw<RoomEncryptedEventContent>, EncryptError> {
        let room_lock = self.room_lock(room_id);
        let _single_flight = room_lock.lock().await;
        self.ensure_outbound_loaded(room_id).await?;
        let plaintext = json!({ "type": event_type, "content": content, "room_id": room_id });
        let bytes = serde_json::to_vec(&plaintext).map_err(|e| EncryptError::Serialization(e.to_string()))?;
        let (encrypted, stored) = {
            let mut groups = lock(&self.inner.groups);
            let session =
                groups.outbound.get_mut(room_id).ok_or_else(|| EncryptError::NoSharedSession(room_id.to_owned()))?;
            if session.invalidated || session.is_expired(now) {
                return Err(EncryptError::SessionExpired(room_id.to_owned()));
            }
            let message = session.encrypt(&bytes);
            let mut encrypted = encrypted_content(
                &message,
                &session.session_id,
                self.inner.own.curve25519,
                self.inner.own.device_id.as_str(),
            );
            // Relations stay readable to the server, as the spec allows.
            if let Some(relation) = content.get("m.relates_to") {
                encrypted["m.relates_to"] = relation.clone();
            }
            (encrypted, session.to_stored())
        };
        // The advanced ratchet is saved before the ciphertext leaves: a crash
        // can skip an index, never reuse one.
        self.save(None, None, Changes { outbound_group_sessions: vec![stored], ..Default::default() }).await?;
        Raw::new(&encrypted).map(Raw::cast_unchecked).map_err(|e| EncryptError::Serialization(e.to_string()))
    }

    /// Decrypts an `m.room.encrypted` room event received in `room_id`.
    /// Checks that the event's sender owns the room key, that the payload is
    /// for this room, and that the message index was not already used by
    /// another event (replay). Nothing stored changes unless it succeeds.
    pub async fn decrypt_room_event<T>(
        &self,
        event: &Raw<T>,
        room_id: &RoomId,
        settings: &DecryptionSettings,
    ) -> Result<DecryptedRoomEvent, MegolmError> {
        let value: Value = event.deserialize_as_unchecked().map_err(|e| MegolmError::Malformed(e.to_string()))?;
        let outer_relation = value["content"].get("m.relates_to").cloned();
        let claimed_sender_key =
            value["content"]["sender_key"].as_str().and_then(|k| Curve25519PublicKey::from_base64(k).ok());
        let incoming = parse_encrypted_event(value)?;

        let cached = lock(&self.inner.groups).inbound_mut(room_id, &incoming.session_id).is_some();
        if !cached {
            match self.load_inbound(room_id, &incoming.session_id).await? {
                Some(session) => lock(&self.inner.groups).insert_inbound(session),
                None => {
                    let withheld = self.withheld_code(room_id, &incoming.session_id, claimed_sender_key).await?;
                    return Err(MegolmError::MissingRoomKey { session_id: incoming.session_id, withheld });
                }
            }
        }
        let (decrypted, key) = {
            let mut groups = lock(&self.inner.groups);
            let Some(session) = groups.inbound_mut(room_id, &incoming.session_id) else {
                return Err(MegolmError::MissingRoomKey { session_id: incoming.session_id, withheld: None });
            };
            let decrypted = session.decrypt(&incoming.message).map_err(|e| match e {
                DecryptionError::UnknownMessageIndex(first_known_index, message_index) => {
                    MegolmError::UnknownMessageIndex { first_known_index, message_index }
                }
                other => MegolmError::DecryptionFailed(other.to_string()),
            })?;
            (decrypted, KeyFacts::of(session))
        };

        if let Some(owner) = &key.sender_user
            && *owner != incoming.sender
        {
            return Err(MegolmError::SenderMismatch { event_sender: incoming.sender, key_owner: owner.clone() });
        }
        let plaintext: RoomPlaintext = serde_json::from_slice(&decrypted.plaintext)
            .map_err(|e| MegolmError::Malformed(format!("payload: {e}")))?;
        if plaintext.room_id != room_id.as_str() {
            return Err(MegolmError::RoomMismatch { expected: room_id.to_owned(), found: plaintext.room_id });
        }

        let ts = u64::from(incoming.origin_server_ts);
        let index = decrypted.message_index;
        let seen = self.inner.store.get_message_index(room_id, &incoming.session_id, index).await?;
        let mut changes = Changes::default();
        match seen {
            Some(first) if first.event_id != incoming.event_id || first.origin_server_ts != ts => {
                return Err(MegolmError::Replay { message_index: index, first_event_id: first.event_id });
            }
            Some(_) => {}
            None => changes.message_indices.push(MessageIndexRecord {
                room_id: room_id.to_owned(),
                session_id: incoming.session_id.clone(),
                message_index: index,
                event_id: incoming.event_id.clone(),
                origin_server_ts: ts,
            }),
        }

        let (sender_device, verification_state) = self.sender_device_state(&incoming.sender, &key).await?;
        if settings.sender_device_trust_requirement == TrustRequirement::VerifiedDevice
            && verification_state != VerificationState::Verified
        {
            return Err(MegolmError::UnverifiedSenderDevice);
        }
        self.save(None, None, changes).await?;

        let mut content = plaintext.content;
        if let Some(relation) = outer_relation {
            content.entry("m.relates_to").or_insert(relation);
        }
        let mut event = json!({
            "type": plaintext.event_type,
            "content": content,
            "room_id": room_id,
            "sender": incoming.sender,
            "event_id": incoming.event_id,
            "origin_server_ts": incoming.origin_server_ts,
        });
        if let Some(unsigned) = incoming.unsigned {
            event["unsigned"] = unsigned;
        }
        let event = Raw::new(&event).map(Raw::cast_unchecked).map_err(|e| MegolmError::Malformed(e.to_string()))?;
        let info = MegolmDecryptionInfo {
            sender: incoming.sender,
            sender_device,
            sender_curve25519_key: key.sender_key,
            sender_claimed_ed25519_key: key.sender_ed25519,
            session_id: incoming.session_id,
            message_index: index,
            key_source: key.source,
            verification_state,
        };
        Ok(DecryptedRoomEvent { event, info })
    }

    /// Decrypts a batch of `m.room.encrypted` events received in `room_id`
    /// (a timeline page, a backlog): one result per event, in order, each as
    /// [`decrypt_room_event`](Self::decrypt_room_event) would give it.
    pub async fn decrypt_room_events<T>(
        &self,
        events: &[Raw<T>],
        room_id: &RoomId,
        settings: &DecryptionSettings,
    ) -> Vec<Result<DecryptedRoomEvent, MegolmError>> {
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            results.push(self.decrypt_room_event(event, room_id, settings).await);
        }
        results
    }

    /// The withheld code explaining a missing key: a notice for the session,
    /// or an `m.no_olm` notice from the device the event claims to come from.
    async fn withheld_code(
        &self,
        room_id: &RoomId,
        session_id: &str,
        claimed_sender_key: Option<Curve25519PublicKey>,
    ) -> Result<Option<WithheldCode>, StoreError> {
        if let Some(info) = self.inner.store.get_withheld_info(room_id, session_id).await? {
            return Ok(Some(info.code));
        }
        match claimed_sender_key {
            Some(key) => Ok(self.inner.store.get_no_olm_notice(&key).await?.map(|info| info.code)),
            None => Ok(None),
        }
    }

    /// The sending device and its trust, looked up by the key's curve25519 key.
    async fn sender_device_state(
        &self,
        sender: &ruma_common::UserId,
        key: &KeyFacts,
    ) -> Result<(Option<OwnedDeviceId>, VerificationState), StoreError> {
        if *sender == self.inner.own.user_id && key.sender_key == self.inner.own.curve25519 {
            return Ok((Some(self.inner.own.device_id.clone()), VerificationState::Verified));
        }
        let devices = self.inner.store.get_user_devices(sender).await?;
        let Some(device) = devices.into_values().find(|d| d.curve25519_key() == key.sender_key) else {
            return Ok((None, VerificationState::UnknownDevice));
        };
        let state = if key.sender_ed25519.is_some_and(|ed| ed != device.ed25519_key()) {
            VerificationState::KeyMismatch
        } else if device.is_verified() {
            VerificationState::Verified
        } else {
            VerificationState::Unverified
        };
        Ok((Some(device.device_id().to_owned()), state))
    }
}

/// What a decryption needs to know about the key, copied out of the cache.
struct KeyFacts {
    sender_key: Curve25519PublicKey,
    sender_ed25519: Option<Ed25519PublicKey>,
    sender_user: Option<OwnedUserId>,
    source: KeySource,
}

impl KeyFacts {
    fn of(session: &InboundGroupSession) -> Self {
        Self {
            sender_key: session.sender_key,
            sender_ed25519: session.sender_ed25519,
            sender_user: session.sender_user.clone(),
            source: session.source,
        }
    }
}
