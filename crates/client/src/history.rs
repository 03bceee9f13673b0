//! Room history over `/messages`: a page of events, decrypted as one batch
//! by the engine; the undecryptable ones are kept to be retried when their
//! keys arrive and then delivered to handlers as late decryptions.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::time::Duration;

use hush_crypto_core::{DecryptionSettings, MegolmError};
use js_int::UInt;
use ruma_client_api::message::get_message_events;
use ruma_common::{OwnedRoomId, serde::Raw};
use serde_json::Value;

use crate::{Client, ClientError, Room, RoomEvent, client::lock};

/// The most events one `/messages` page asks for.
pub const MAX_PAGE: u32 = 1000;
/// The most undecryptable events kept for a retry; the oldest are dropped
/// first, so a flood of undecryptable events cannot grow memory.
pub(crate) const MAX_WAITING: usize = 10_000;

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
        self.client.save_waiting_events().await;
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
                Ok((value, decrypted.info))
            }) {
                Ok((value, info)) => {
                    event.event = value;
                    event.encryption = Some(info);
                }
                Err(error) => {
                    self.remember_undecrypted(room_id, &event.event, &error);
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

    /// Keeps an event whose key may still arrive (missing, or known only
    /// from a later index) for a retry.
    pub(crate) fn remember_undecrypted(&self, room_id: &OwnedRoomId, event: &Value, error: &MegolmError) {
        // A key may come later; a sender's device may be listed, or
        // cross-signed, later (tried again when the sender's devices change).
        let may_change = matches!(
            error,
            MegolmError::MissingRoomKey { .. }
                | MegolmError::UnknownMessageIndex { .. }
                | MegolmError::InsufficientSenderTrust { .. }
                | MegolmError::UnverifiedSenderDevice
        );
        if may_change {
            lock(&self.inner.undecrypted).push(room_id, event);
        }
    }
}

/// The custom value holding the waiting events across restarts.
pub(crate) const WAITING_KEY: &str = "hush.client.waiting_events";
/// The most waiting events saved (the newest): a restarted client still
/// delivers them as late decryptions when their keys come, or came just
/// before it stopped.
const MAX_SAVED: usize = 500;

/// Events waiting for their keys: once per event id, at most
/// [`MAX_WAITING`], the oldest dropped first.
#[derive(Default)]
pub(crate) struct WaitingEvents {
    events: VecDeque<(OwnedRoomId, Value)>,
    ids: HashSet<String>,
    /// Changed since it was last saved.
    dirty: bool,
}

fn event_id(event: &Value) -> Option<&str> {
    event.get("event_id").and_then(Value::as_str)
}

impl WaitingEvents {
    fn push(&mut self, room_id: &OwnedRoomId, event: &Value) {
        if let Some(id) = event_id(event)
            && !self.ids.insert(id.to_owned())
        {
            return;
        }
        self.dirty = true;
        if self.events.len() >= MAX_WAITING
            && let Some((_, oldest)) = self.events.pop_front()
            && let Some(id) = event_id(&oldest)
        {
            self.ids.remove(id);
        }
        self.events.push_back((room_id.clone(), event.clone()));
    }

    /// The waiting events, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &(OwnedRoomId, Value)> {
        self.events.iter()
    }

    /// Takes out the events of these sessions.
    pub(crate) fn take_sessions(&mut self, sessions: &BTreeSet<String>) -> Vec<(OwnedRoomId, Value)> {
        self.take_where(|e| e["content"]["session_id"].as_str().is_some_and(|s| sessions.contains(s)))
    }

    /// Takes the waiting events sent by one of `senders`.
    pub(crate) fn take_senders(&mut self, senders: &BTreeSet<String>) -> Vec<(OwnedRoomId, Value)> {
        self.take_where(|e| e["sender"].as_str().is_some_and(|s| senders.contains(s)))
    }

    fn take_where(&mut self, take: impl Fn(&Value) -> bool) -> Vec<(OwnedRoomId, Value)> {
        let (ready, waiting): (Vec<_>, Vec<_>) = self.events.drain(..).partition(|(_, e)| take(e));
        self.events = waiting.into();
        self.dirty |= !ready.is_empty();
        for (_, event) in &ready {
            if let Some(id) = event_id(event) {
                self.ids.remove(id);
            }
        }
        ready
    }
}

impl WaitingEvents {
    /// The newest [`MAX_SAVED`] events to save, if they changed since the
    /// last save (which this marks done).
    pub(crate) fn take_record(&mut self) -> Option<Vec<u8>> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let skip = self.events.len().saturating_sub(MAX_SAVED);
        let newest: Vec<&(OwnedRoomId, Value)> = self.events.iter().skip(skip).collect();
        serde_json::to_vec(&newest).ok()
    }

    /// The saved events (a record that does not decode reads as none: they
    /// are only a convenience, and the store is outside input).
    pub(crate) fn from_record(record: Option<&[u8]>) -> Self {
        let events: Vec<(OwnedRoomId, Value)> =
            record.and_then(|bytes| serde_json::from_slice(bytes).ok()).unwrap_or_default();
        let mut waiting = Self::default();
        for (room_id, event) in events.into_iter().take(MAX_SAVED) {
            waiting.push(&room_id, &event);
        }
        waiting.dirty = false;
        waiting
    }

    /// The sessions of every waiting event.
    pub(crate) fn sessions(&self) -> BTreeSet<String> {
        self.events.iter().filter_map(|(_, e)| e["content"]["session_id"].as_str().map(str::to_owned)).collect()
    }
}

impl Client {
    /// Saves the waiting events if they changed (a failure is logged: the
    /// events are only a convenience for late decryption).
    pub(crate) async fn save_waiting_events(&self) {
        let Some(record) = lock(&self.inner.undecrypted).take_record() else { return };
        let Ok(machine) = self.olm_machine() else { return };
        let changes =
            hush_crypto_core::Changes { custom_values: vec![(WAITING_KEY.to_owned(), record)], ..Default::default() };
        if let Err(error) = machine.store().save_changes(changes).await {
            tracing::warn!(%error, "saving the events waiting for their keys failed");
        }
    }

    /// After a restart: the saved waiting events are tried again once (a
    /// key may have arrived just before the client stopped), and whatever
    /// still fails keeps waiting.
    pub(crate) async fn retry_restored_waiting_events(&self) {
        if !self.inner.retry_restored_waiting.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let sessions = lock(&self.inner.undecrypted).sessions();
        if !sessions.is_empty() {
            self.retry_undecrypted(&sessions).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_events_are_kept_once_and_bounded() {
        let room: OwnedRoomId = "!r:e.org".try_into().unwrap();
        let mut waiting = WaitingEvents::default();
        let event = |n: usize, session: &str| serde_json::json!({"event_id": format!("$e{n}"), "content": {"session_id": session}});
        waiting.push(&room, &event(0, "s0"));
        waiting.push(&room, &event(0, "s0"));
        assert_eq!(waiting.iter().count(), 1, "the same event once");
        for n in 1..=MAX_WAITING {
            waiting.push(&room, &event(n, "s1"));
        }
        assert_eq!(waiting.iter().count(), MAX_WAITING);
        assert!(waiting.take_sessions(&["s0".to_owned()].into()).is_empty(), "the oldest was dropped");
        assert_eq!(waiting.take_sessions(&["s1".to_owned()].into()).len(), MAX_WAITING);
        waiting.push(&room, &event(1, "s1"));
        assert_eq!(waiting.iter().count(), 1, "a taken event may wait again");
    }

    #[test]
    fn waiting_events_are_saved_when_changed_and_restored_bounded() {
        let room: OwnedRoomId = "!r:e.org".try_into().unwrap();
        let event =
            |n: usize| serde_json::json!({"event_id": format!("$e{n}"), "content": {"session_id": format!("s{n}")}});
        let mut waiting = WaitingEvents::default();
        assert!(waiting.take_record().is_none(), "nothing changed");
        for n in 0..MAX_SAVED + 10 {
            waiting.push(&room, &event(n));
        }
        let record = waiting.take_record().expect("changed");
        assert!(waiting.take_record().is_none(), "saved");
        let restored = WaitingEvents::from_record(Some(&record));
        assert_eq!(restored.iter().count(), MAX_SAVED, "the newest are saved");
        assert!(restored.sessions().contains(&format!("s{}", MAX_SAVED + 9)));
        assert!(!restored.sessions().contains("s0"));
        assert_eq!(WaitingEvents::from_record(Some(b"not json")).iter().count(), 0);
    }
}
