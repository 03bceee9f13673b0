//! Room history over `/messages`: a page of events, decrypted as one batch
//! by the engine. The engine keeps the undecryptable ones (`utd::pending`),
//! heals them, and announces each that decrypts later; the drive loop
//! delivers those to the handlers as late decryptions.

use std::time::Duration;

use hush_crypto_core::{DecryptionSettings, MegolmError};
use js_int::UInt;
use ruma_client_api::message::get_message_events;
use ruma_common::{OwnedRoomId, serde::Raw};
use serde_json::Value;

use crate::{Client, ClientError, Room, RoomEvent, client::lock};

/// The most events one `/messages` page asks for.
pub const MAX_PAGE: u32 = 1000;

/// Which way a history page runs from its `from` token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    /// Towards older events (the usual way to read history).
    #[default]
    Backward,
    /// Towards newer events.
    Forward,
}

/// What history page to fetch (`room.messages(options)`).
#[derive(Clone, Debug)]
pub struct MessagesOptions {
    /// Where to start: a token from a previous page's `end`, or `None` for
    /// the room's latest event (backward) or its first (forward).
    pub from: Option<String>,
    /// How many events at most (capped at [`MAX_PAGE`]).
    pub limit: u32,
    /// Which way to read.
    pub direction: Direction,
}

impl MessagesOptions {
    /// Backward from the latest event, 10 events.
    pub fn backward() -> Self {
        Self { from: None, limit: 10, direction: Direction::Backward }
    }

    /// Forward from the room's start, 10 events.
    pub fn forward() -> Self {
        Self { from: None, limit: 10, direction: Direction::Forward }
    }

    /// Starts from a previous page's `end` token.
    pub fn from(mut self, token: impl Into<String>) -> Self {
        self.from = Some(token.into());
        self
    }

    /// At most `limit` events.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }
}

/// One page of history.
#[derive(Clone, Debug)]
pub struct Messages {
    /// The token the page started from.
    pub start: String,
    /// The token to continue from, or `None` at the end of the history.
    pub end: Option<String>,
    /// The events, in the order read (newest first when reading backward):
    /// decrypted where the keys are held, the others with their reason.
    pub chunk: Vec<RoomEvent>,
}

impl Room {
    /// One page of the room's history from `/messages`. Encrypted events
    /// are decrypted as one batch; an event whose key is missing comes back
    /// with its reason and is delivered to the handlers as a late
    /// decryption once the key arrives (by to-device, backup or a key
    /// request). Handlers are not called for the page itself.
    pub async fn messages(&self, options: MessagesOptions) -> Result<Messages, ClientError> {
        let token = self.client.access_token()?;
        let mut request = match options.direction {
            Direction::Backward => get_message_events::v3::Request::backward(self.room_id.clone()),
            Direction::Forward => get_message_events::v3::Request::forward(self.room_id.clone()),
        };
        request.from = options.from;
        let request_limit = options.limit.min(MAX_PAGE) as usize;
        request.limit = UInt::from(options.limit.min(MAX_PAGE));
        let response = self.client.http().send(request, Some(&token), Duration::ZERO).await?;
        let limit = request_limit;
        let events: Vec<Value> =
            response.chunk.iter().take(limit).filter_map(|raw| raw.deserialize_as_unchecked::<Value>().ok()).collect();
        let chunk = self.client.decrypt_page(&self.room_id, events).await;
        Ok(Messages { start: response.start, end: response.end, chunk })
    }
}

impl Client {
    /// Decrypts the encrypted events of a page in one engine batch and
    /// remembers the ones whose key is missing for a later retry.
    pub(crate) async fn decrypt_page(&self, room_id: &OwnedRoomId, events: Vec<Value>) -> Vec<RoomEvent> {
        let mut page: Vec<RoomEvent> = events
            .into_iter()
            .map(|event| RoomEvent {
                room_id: room_id.clone(),
                event,
                encryption: None,
                unable_to_decrypt: None,
                utd_cause: None,
                late_decryption: false,
            })
            .collect();
        if !cfg!(feature = "e2e-encryption") {
            return page;
        }
        let encrypted: Vec<usize> = (0..page.len()).filter(|&i| page[i].event_type() == "m.room.encrypted").collect();
        if encrypted.is_empty() {
            return page;
        }
        let machine = match self.olm_machine() {
            Ok(machine) => machine,
            Err(error) => {
                for &i in &encrypted {
                    page[i].unable_to_decrypt = Some(MegolmError::Malformed(error.to_string()));
                }
                return page;
            }
        };
        let mut raws = Vec::with_capacity(encrypted.len());
        for &i in &encrypted {
            raws.push(Raw::new(&page[i].event).map_err(|e| MegolmError::Malformed(e.to_string())));
        }
        let valid: Vec<Raw<Value>> = raws.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
        let settings = DecryptionSettings { sender_device_trust_requirement: self.room_trust(room_id).decryption };
        let mut results = machine.decrypt_room_events(&valid, room_id, &settings).await.into_iter();
        for (&i, raw) in encrypted.iter().zip(raws) {
            let result = match raw {
                Err(error) => Err(error),
                Ok(_) => {
                    results.next().unwrap_or_else(|| Err(MegolmError::Malformed("no result for the event".into())))
                }
            };
            let event = &mut page[i];
            match result.and_then(|decrypted| {
                let value =
                    decrypted.event.deserialize_as_unchecked().map_err(|e| MegolmError::Malformed(e.to_string()))?;
                Ok((value, decrypted.info, decrypted.was_waiting))
            }) {
                Ok((value, info, was_waiting)) => {
                    event.event = value;
                    event.encryption = Some(info);
                    event.late_decryption |= was_waiting;
                }
                Err(error) => {
                    event.utd_cause = self.utd_cause(room_id, &event.event, &error).await;
                    event.unable_to_decrypt = Some(error);
                }
            }
        }
        page
    }

    /// Why an event is unreadable (see `OlmMachine::utd_cause`), with our
    /// membership when it was sent as far as the room's state tells.
    pub(crate) async fn utd_cause(
        &self,
        room_id: &OwnedRoomId,
        event: &Value,
        error: &MegolmError,
    ) -> Option<hush_crypto_core::UtdCause> {
        let machine = self.olm_machine().ok()?;
        let raw: Raw<Value> = Raw::new(event).ok()?;
        let sent = event["origin_server_ts"].as_u64();
        let membership = lock(&self.inner.rooms)
            .get(room_id)
            .map_or(hush_crypto_core::MembershipAtEvent::Unknown, |room| room.membership_at(sent));
        Some(machine.utd_cause(&raw, room_id, error, membership).await)
    }
}

impl Client {
    /// Hands a late decryption the engine announced (an event delivered
    /// before as undecryptable) to the handlers.
    pub(crate) async fn deliver_late(&self, late: hush_crypto_core::LateDecryption) {
        let event = match late.decrypted.event.deserialize_as_unchecked::<Value>() {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, room_id = %late.room_id, event_id = %late.event_id, "a late decryption could not be read");
                return;
            }
        };
        let room_event = RoomEvent {
            room_id: late.room_id,
            event,
            encryption: Some(late.decrypted.info),
            unable_to_decrypt: None,
            utd_cause: None,
            late_decryption: true,
        };
        self.deliver_event(room_event).await;
    }
}
