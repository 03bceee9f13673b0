//! Encrypting room events with our room key and decrypting others' with the
//! keys we hold, explaining every failure.

use ruma_common::{RoomId, UserId, serde::Raw};
use ruma_events::room::encrypted::RoomEncryptedEventContent;
use serde_json::{Value, value::RawValue};
use vodozemac::Curve25519PublicKey;

use super::{OlmMachine, lock};
use crate::{
    StoreError, Timestamp,
    megolm::{EncryptError, KeyFacts, MegolmError, SenderState, VerificationState, WithheldCode},
    store::Changes,
};

/// The plaintext of a Megolm message, serialized without building a `Value`.
#[derive(serde::Serialize)]
struct RoomPlaintextOut<'a, C: serde::Serialize + ?Sized> {
    #[serde(rename = "type")]
    event_type: &'a str,
    content: &'a C,
    room_id: &'a RoomId,
}

/// `m.megolm.v1.aes-sha2` `m.room.encrypted` content. `sender_key` and
/// `device_id` are deprecated but still sent, as the spec asks.
#[derive(serde::Serialize)]
struct EncryptedContentOut<'a> {
    algorithm: &'a str,
    ciphertext: String,
    session_id: &'a str,
    sender_key: String,
    device_id: &'a str,
    #[serde(rename = "m.relates_to", skip_serializing_if = "Option::is_none")]
    relates_to: Option<&'a RawValue>,
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
        let serialization = |e: serde_json::Error| EncryptError::Serialization(e.to_string());
        let relates_to =
            content.get("m.relates_to").map(serde_json::value::to_raw_value).transpose().map_err(serialization)?;
        self.encrypt_serialized(room_id, event_type, content, relates_to.as_deref(), now).await
    }

    /// [`encrypt_room_event`](Self::encrypt_room_event) for content the
    /// caller already holds as JSON text: it goes into the plaintext as is,
    /// without being parsed into a `Value` (only its `m.relates_to`, which
    /// stays readable to the server, is looked up).
    pub async fn encrypt_room_event_raw<T>(
        &self,
        room_id: &RoomId,
        event_type: &str,
        content: &Raw<T>,
        now: Timestamp,
    ) -> Result<Raw<RoomEncryptedEventContent>, EncryptError> {
        #[derive(serde::Deserialize)]
        struct Relation<'a> {
            #[serde(rename = "m.relates_to", borrow)]
            relates_to: Option<&'a RawValue>,
        }
        let relation: Relation<'_> =
            serde_json::from_str(content.json().get()).map_err(|e| EncryptError::Serialization(e.to_string()))?;
        self.encrypt_serialized(room_id, event_type, content.json(), relation.relates_to, now).await
    }

    /// Encrypts serialized content with the room's current key.
    async fn encrypt_serialized<C: serde::Serialize + ?Sized>(
        &self,
        room_id: &RoomId,
        event_type: &str,
        content: &C,
        relates_to: Option<&RawValue>,
        now: Timestamp,
    ) -> Result<Raw<RoomEncryptedEventContent>, EncryptError> {
        let room_lock = self.room_lock(room_id);
        let _single_flight = room_lock.lock().await;
        // An engine sharing its store encrypts only under a running lease:
        // a holder that took the lock over may have rotated this key.
        self.check_lease_for_sending(now)?;
        self.ensure_outbound_loaded(room_id).await?;
        let plaintext = RoomPlaintextOut { event_type, content, room_id };
        let bytes = serde_json::to_vec(&plaintext).map_err(|e| EncryptError::Serialization(e.to_string()))?;
        let (message, session_id, reservation) = {
            let mut groups = lock(&self.inner.groups);
            let session =
                groups.outbound.get_mut(room_id).ok_or_else(|| EncryptError::NoSharedSession(room_id.to_owned()))?;
            if crate::megolm::expiry_reason(session, now).is_some() {
                return Err(EncryptError::SessionExpired(room_id.to_owned()));
            }
            // Once per reservation the session is saved before the message
            // leaves: a crash can skip indices, never reuse one.
            let reservation = session.reserve_next().then(|| session.to_stored());
            (session.encrypt(&bytes), session.session_id.clone(), reservation)
        };
        if let Some(stored) = reservation {
            self.save(None, None, Changes { outbound_group_sessions: vec![stored], ..Default::default() }).await?;
        }
        let content = EncryptedContentOut {
            algorithm: crate::megolm::MEGOLM_ALGORITHM,
            ciphertext: message.to_base64(),
            session_id: &session_id,
            sender_key: self.inner.own.curve25519.to_base64(),
            device_id: self.inner.own.device_id.as_str(),
            // Relations stay readable to the server, as the spec allows.
            relates_to,
        };
        let json = serde_json::value::to_raw_value(&content).map_err(|e| EncryptError::Serialization(e.to_string()))?;
        Ok(Raw::from_json(json))
    }

    /// The withheld code explaining a missing key: the event's sender's
    /// notice for the session (from the device the event names, when it
    /// names one), or that sender's `m.no_olm` notice from that device.
    /// Notices arrive in the clear, so only the sender's own count: a
    /// co-member cannot make us say the sender withheld a key.
    pub(super) async fn withheld_code(
        &self,
        room_id: &RoomId,
        session_id: &str,
        sender: &UserId,
        claimed_sender_key: Option<Curve25519PublicKey>,
    ) -> Result<Option<WithheldCode>, StoreError> {
        let notice = self.inner.store.get_withheld_info(room_id, session_id, sender).await?;
        if let Some(info) = notice.filter(|info| claimed_sender_key.is_none_or(|key| key == info.sender_key)) {
            return Ok(Some(info.code));
        }
        match claimed_sender_key {
            Some(key) => Ok(self.inner.store.get_no_olm_notice(sender, &key).await?.map(|info| info.code)),
            None => Ok(None),
        }
    }

    /// The sending device and its trust, looked up by the key's curve25519
    /// key. A key whose owner we did not learn over Olm (an imported key) is
    /// tied here to the known device with its curve25519 and claimed ed25519
    /// keys: an event from any other user is a [`MegolmError::SenderMismatch`].
    pub(super) async fn sender_device_state(
        &self,
        sender: &UserId,
        key: &KeyFacts,
    ) -> Result<SenderState, MegolmError> {
        if *sender == self.inner.own.user_id && key.sender_key == self.inner.own.curve25519 {
            let state = if key.source.is_authenticated() {
                VerificationState::Verified
            } else {
                VerificationState::UnauthenticatedSource
            };
            return Ok(SenderState::plain(Some(self.inner.own.device_id.clone()), state));
        }
        if key.sender_user.is_none() {
            let owners = self.inner.store.get_devices_by_curve25519(&key.sender_key).await?;
            let owner = owners.iter().find(|d| key.sender_ed25519.is_some_and(|ed| ed == d.ed25519_key()));
            if let Some(owner) = owner
                && owner.user_id() != sender
            {
                return Err(MegolmError::SenderMismatch {
                    event_sender: sender.to_owned(),
                    key_owner: owner.user_id().to_owned(),
                });
            }
        }
        let devices = self.inner.store.get_user_devices(sender).await?;
        let Some(device) = devices.into_values().find(|d| d.curve25519_key() == key.sender_key) else {
            return Ok(SenderState::plain(None, VerificationState::UnknownDevice));
        };
        let (trust, identity) = self.sender_trust(&device).await?;
        let verification = if key.sender_ed25519.is_some_and(|ed| ed != device.ed25519_key()) {
            VerificationState::KeyMismatch
        } else if !key.source.is_authenticated() {
            VerificationState::UnauthenticatedSource
        } else if trust.is_verified() {
            VerificationState::Verified
        } else {
            VerificationState::Unverified
        };
        Ok(SenderState {
            device_id: Some(device.device_id().to_owned()),
            verification,
            cross_signed: trust.cross_signed_by_owner,
            identity,
        })
    }
}
