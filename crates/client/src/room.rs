//! [`Room`]: sending into a room, encrypting automatically when it is encrypted.

use std::time::Duration;

use hush_crypto_core::{Changes, RoomReadiness};
use ruma_client_api::{message::send_message_event, state::get_state_event_for_key};
use ruma_common::{OwnedEventId, OwnedRoomId, OwnedUserId, TransactionId, UserId, serde::Raw};
use ruma_events::{MessageLikeEventType, StateEventType};
use serde_json::{Value, json};

use crate::{
    Client, ClientError,
    client::lock,
    http::HttpError,
    rooms::{EncryptionState, Membership, RoomState},
};

/// How many steps of the room-level command a send waits for (query,
/// claim, share, and retries of each when another task was sending).
const PREPARE_ROUNDS: usize = 8;

/// What a send did: the event's id and, in an encrypted room, how it was
/// encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendResult {
    /// The id the server gave the event.
    pub event_id: OwnedEventId,
    /// How the event was encrypted; `None` when sent in the clear (the room
    /// is known to be unencrypted).
    pub encryption: Option<SentEncryption>,
}

/// How a sent event was encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentEncryption {
    /// The algorithm, `m.megolm.v1.aes-sha2`.
    pub algorithm: String,
    /// The Megolm session (the room key) it was encrypted with.
    pub session_id: String,
}

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

    pub(crate) fn state(&self) -> Result<RoomState, ClientError> {
        lock(&self.client.inner.rooms)
            .get(&self.room_id)
            .cloned()
            .ok_or_else(|| ClientError::UnknownRoom(self.room_id.to_string()))
    }

    /// Our own membership of the room, as the last sync left it.
    pub fn membership(&self) -> Option<Membership> {
        self.state().ok().map(|s| s.own_membership)
    }

    /// Whether the room is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.state().is_ok_and(|s| s.is_encrypted())
    }

    /// Members who receive room keys (joined, and invited where history allows).
    pub fn key_recipients(&self) -> Vec<OwnedUserId> {
        self.state().map(|s| s.key_recipients()).unwrap_or_default()
    }

    /// The members (key recipients) whose cross-signing identity has a pin
    /// violation (their master key changed, unacknowledged) or a
    /// verification violation (we had verified them, and no longer can):
    /// what a client shows as a warning on the room.
    pub async fn identity_violations(
        &self,
    ) -> Result<Vec<(OwnedUserId, hush_crypto_core::identities::IdentityState)>, ClientError> {
        let members = self.key_recipients();
        let machine = self.client.olm_machine()?;
        Ok(machine.identity_violations(members.iter().map(|m| m.as_ref())).await?)
    }

    /// Invites `user_id`. The invitee counts as a member at once (for the
    /// room's history visibility), before the sync that reports the invite
    /// arrives, so a message sent right after the invite is readable by
    /// them: a slow or held sync must not leave them without the key.
    pub async fn invite_user_by_id(&self, user_id: &UserId) -> Result<(), ClientError> {
        use ruma_client_api::membership::invite_user::v3::{InvitationRecipient, InviteUserId, Request};
        let token = self.client.access_token()?;
        let recipient = InvitationRecipient::UserId(InviteUserId::new(user_id.to_owned()));
        let request = Request::new(self.room_id.clone(), recipient);
        self.client.http().send(request, Some(&token), Duration::ZERO).await?;
        if let Some(room) = lock(&self.client.inner.rooms).get_mut(&self.room_id) {
            let membership = room.members.entry(user_id.to_owned()).or_insert(Membership::Invite);
            if !matches!(membership, Membership::Join) {
                *membership = Membership::Invite;
            }
        }
        Ok(())
    }

    /// Sends a text message.
    pub async fn send_text(&self, body: &str) -> Result<SendResult, ClientError> {
        self.send("m.room.message", json!({"msgtype": "m.text", "body": body})).await
    }

    /// Sends an event. In an encrypted room: makes sure the members' devices
    /// are known, claims missing Olm sessions, shares the room key with the
    /// room's rotation settings, encrypts and sends `m.room.encrypted`.
    /// Never sends in the clear unless the room is known to be unencrypted:
    /// a room whose encryption state this client never saw is asked of the
    /// server first (`m.room.encryption` state), and sending is refused if
    /// the server's answer does not settle it.
    ///
    /// The room key goes to the devices the room's trust settings allow
    /// ([`trust_settings`](Self::trust_settings)). Under the default, a user
    /// we verified whose identity changed blocks sending with
    /// [`ClientError::VerifiedUserProblem`] naming them, until the
    /// application withdraws the verification or verifies again
    /// (`UserIdentity::withdraw_verification` / `verify`).
    pub async fn send(&self, event_type: &str, content: Value) -> Result<SendResult, ClientError> {
        // Shared store: the room key is shared and advanced under the lock.
        self.client.with_store_lock(self.send_locked(event_type, content, None)).await
    }

    /// Sends an in-room verification event. The spec asks that every
    /// device of the user being verified can read it, even those that
    /// would not get room keys: the room key of this send goes to all
    /// devices (a room whose strategy is stricter gets a new key at its
    /// next ordinary message), and a verification violation (which the
    /// verification may be there to end) does not block it.
    pub(crate) async fn send_verification_event(
        &self,
        event_type: &str,
        content: Value,
    ) -> Result<SendResult, ClientError> {
        let all_devices = Some(hush_crypto_core::SharingStrategy::LegacyAllDevices);
        self.client.with_store_lock(self.send_locked(event_type, content, all_devices)).await
    }

    async fn send_locked(
        &self,
        event_type: &str,
        content: Value,
        sharing: Option<hush_crypto_core::SharingStrategy>,
    ) -> Result<SendResult, ClientError> {
        let mut state = self.state()?;
        if state.encryption_state() == EncryptionState::Unknown {
            state = self.learn_encryption_state().await?;
        }
        let token = self.client.access_token()?;
        let (event_type, content) = match &state.encryption {
            Some(_) if !cfg!(feature = "e2e-encryption") => {
                self.client.warn_unencrypted_build_once(&self.room_id);
                return Err(ClientError::EncryptionDisabled(self.room_id.to_string()));
            }
            Some(_) => {
                let sharing = sharing.unwrap_or(self.trust_settings().sharing);
                let content = self.encrypt(&state, event_type, &content, sharing).await?;
                ("m.room.encrypted".to_owned(), content)
            }
            None => (event_type.to_owned(), content),
        };
        let encryption = (event_type == "m.room.encrypted").then(|| SentEncryption {
            algorithm: content["algorithm"].as_str().unwrap_or_default().to_owned(),
            session_id: content["session_id"].as_str().unwrap_or_default().to_owned(),
        });
        let raw = Raw::new(&content).map_err(|e| ClientError::Serialization(e.to_string()))?.cast_unchecked();
        let request = send_message_event::v3::Request::new_raw(
            self.room_id.clone(),
            TransactionId::new(),
            MessageLikeEventType::from(event_type.as_str()),
            raw,
        );
        let response = match &encryption {
            // An encrypted event leaves only under the store lock's lease
            // (when the store is shared), at every attempt: a holder that
            // took over may have rotated its key.
            Some(_) => {
                let check = self.client.lease_check(&self.client.olm_machine()?);
                self.client.http().send_checked(request, Some(&token), Duration::ZERO, check).await?
            }
            None => self.client.http().send(request, Some(&token), Duration::ZERO).await?,
        };
        Ok(SendResult { event_id: response.event_id, encryption })
    }

    /// Asks the server for the room's `m.room.encryption` state and saves
    /// the answer with the room's state: present means encrypted, `M_NOT_FOUND`
    /// means unencrypted, anything else is an error and nothing is sent.
    pub(crate) async fn learn_encryption_state(&self) -> Result<RoomState, ClientError> {
        let token = self.client.access_token()?;
        let request = get_state_event_for_key::v3::Request::new(
            self.room_id.clone(),
            StateEventType::RoomEncryption,
            String::new(),
        );
        let answer = self.client.http().send(request, Some(&token), Duration::ZERO).await;
        let unknown =
            |reason: String| ClientError::EncryptionStateUnknown { room_id: self.room_id.to_string(), reason };
        // The answer is merged into the room's current state under the lock:
        // a sync that switched encryption on meanwhile is never undone.
        match answer {
            Ok(response) => {
                let content: Value =
                    serde_json::from_str(response.event_or_content.get()).map_err(|e| unknown(e.to_string()))?;
                // The endpoint answers the content; accept a whole event too.
                let content = if content.get("content").is_some() { content["content"].clone() } else { content };
                let event = json!({"type": "m.room.encryption", "state_key": "", "content": content});
                let state = {
                    let mut rooms = lock(&self.client.inner.rooms);
                    let room = rooms
                        .get_mut(&self.room_id)
                        .ok_or_else(|| ClientError::UnknownRoom(self.room_id.to_string()))?;
                    room.apply(&event);
                    room.clone()
                };
                if !state.is_encrypted() {
                    return Err(unknown("the m.room.encryption state names no algorithm".into()));
                }
                let machine = self.client.olm_machine()?;
                let custom_values = crate::persist::room_values([&state], None)?;
                machine.store().save_changes(Changes { custom_values, ..Default::default() }).await?;
                Ok(state)
            }
            Err(HttpError::Server { status: 404, errcode, .. }) if errcode == "M_NOT_FOUND" => {
                // Kept in memory only (never persisted), and only if nothing
                // switched encryption on in the meantime.
                let mut rooms = lock(&self.client.inner.rooms);
                let room =
                    rooms.get_mut(&self.room_id).ok_or_else(|| ClientError::UnknownRoom(self.room_id.to_string()))?;
                if room.encryption.is_none() {
                    room.confirmed_unencrypted = true;
                }
                Ok(room.clone())
            }
            Err(other) => Err(unknown(other.to_string())),
        }
    }

    /// Gets the room ready with crypto-core's room-level command (it picks
    /// the recipients, queries, claims and shares), driving the request
    /// queue between steps, then encrypts.
    async fn encrypt(
        &self,
        state: &RoomState,
        event_type: &str,
        content: &Value,
        sharing: hush_crypto_core::SharingStrategy,
    ) -> Result<Value, ClientError> {
        let machine = self.client.olm_machine()?;
        let room = state.room_info(sharing);
        // Another send in this room (an in-room verification event, whose
        // key goes to every device) must not swap the room key between our
        // preparing it and encrypting with it.
        let room_lock = lock(&self.client.inner.room_encrypt_locks).entry(self.room_id.clone()).or_default().clone();
        let _one_send = room_lock.lock().await;
        let mut last = None;
        let mut failure = None;
        for _ in 0..PREPARE_ROUNDS {
            let readiness = machine.prepare_room(&room, self.client.now()).await.map_err(|error| {
                match ClientError::from(error) {
                    ClientError::VerifiedUserProblem { changed, unsigned_devices, .. } => {
                        ClientError::VerifiedUserProblem {
                            room_id: self.room_id.to_string(),
                            changed,
                            unsigned_devices,
                        }
                    }
                    other => other,
                }
            })?;
            match readiness {
                RoomReadiness::Ready { .. } => {
                    let encrypted =
                        machine.encrypt_room_event(&self.room_id, event_type, content, self.client.now()).await?;
                    return encrypted.deserialize_as_unchecked().map_err(|e| ClientError::Serialization(e.to_string()));
                }
                waiting => {
                    last = Some(waiting);
                    // A request the room needs (a query, claim or share) may
                    // have failed: if the room never gets ready, that is why.
                    failure = self.client.drive().await?.into_last_failure().or(failure);
                }
            }
        }
        Err(failure
            .unwrap_or(ClientError::RoomNotReady { room_id: self.room_id.to_string(), waiting: format!("{last:?}") }))
    }
}
