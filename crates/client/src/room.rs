//! [`Room`]: sending into a room, encrypting automatically when it is encrypted.

use std::time::Duration;

use hush_crypto_core::EncryptionSettings;
use ruma_client_api::message::send_message_event;
use ruma_common::{OwnedEventId, OwnedRoomId, OwnedUserId, TransactionId, serde::Raw};
use ruma_events::MessageLikeEventType;
use serde_json::{Value, json};

use crate::{
    Client, ClientError,
    client::{lock, now},
    rooms::RoomState,
};

/// A room the client knows.
#[derive(Clone, Debug)]
pub struct Room {
    pub(crate) client: Client,
    pub(crate) room_id: OwnedRoomId,
}

impl Room {
    /// The room id.
    pub fn room_id(&self) -> &OwnedRoomId {
        &self.room_id
    }

    fn state(&self) -> Result<RoomState, ClientError> {
        lock(&self.client.inner.rooms)
            .get(&self.room_id)
            .cloned()
            .ok_or_else(|| ClientError::UnknownRoom(self.room_id.to_string()))
    }

    /// Whether the room is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.state().is_ok_and(|s| s.is_encrypted())
    }

    /// Members who receive room keys (joined, and invited where history allows).
    pub fn key_recipients(&self) -> Vec<OwnedUserId> {
        self.state().map(|s| s.key_recipients()).unwrap_or_default()
    }

    /// Sends a text message.
    pub async fn send_text(&self, body: &str) -> Result<OwnedEventId, ClientError> {
        self.send("m.room.message", json!({"msgtype": "m.text", "body": body})).await
    }

    /// Sends an event. In an encrypted room: makes sure the members' devices
    /// are known, claims missing Olm sessions, shares the room key with the
    /// room's rotation settings, encrypts and sends `m.room.encrypted`.
    pub async fn send(&self, event_type: &str, content: Value) -> Result<OwnedEventId, ClientError> {
        let state = self.state()?;
        let token = self.client.access_token()?;
        let (event_type, content) = match &state.encryption {
            Some(_) if !cfg!(feature = "e2e-encryption") => {
                self.client.warn_unencrypted_build_once(&self.room_id);
                return Err(ClientError::EncryptionDisabled(self.room_id.to_string()));
            }
            Some(encryption) => {
                let content = self.encrypt(&state, encryption, event_type, &content).await?;
                ("m.room.encrypted".to_owned(), content)
            }
            None => (event_type.to_owned(), content),
        };
        let raw = Raw::new(&content).map_err(|e| ClientError::Config(e.to_string()))?.cast_unchecked();
        let request = send_message_event::v3::Request::new_raw(
            self.room_id.clone(),
            TransactionId::new(),
            MessageLikeEventType::from(event_type.as_str()),
            raw,
        );
        let response = self.client.http().send(request, Some(&token), Duration::ZERO).await?;
        Ok(response.event_id)
    }

    async fn encrypt(
        &self,
        state: &RoomState,
        encryption: &crate::rooms::RoomEncryption,
        event_type: &str,
        content: &Value,
    ) -> Result<Value, ClientError> {
        let machine = self.client.olm_machine()?;
        let members = state.key_recipients();
        let users: Vec<_> = members.iter().map(|u| u.as_ref()).collect();
        machine.update_tracked_users(users.iter().copied()).await?;
        self.client.send_outgoing_requests().await?;
        if let Some(claim) = machine.get_missing_sessions(users.iter().copied(), now()).await? {
            self.client.send_crypto_request(&claim).await?;
        }
        let settings = EncryptionSettings::from_room_encryption(
            encryption.rotation_period_ms,
            encryption.rotation_period_msgs,
            state.history_visibility.clone(),
            Default::default(),
        );
        let settings = EncryptionSettings { algorithm: encryption.algorithm.clone(), ..settings };
        let requests = machine.share_room_key(&self.room_id, users.iter().copied(), &settings, now()).await?;
        for request in &requests {
            self.client.send_crypto_request(request).await?;
        }
        let encrypted = machine.encrypt_room_event(&self.room_id, event_type, content, now()).await?;
        encrypted.deserialize_as_unchecked().map_err(|e| ClientError::Config(e.to_string()))
    }
}
