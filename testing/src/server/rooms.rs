//! Room timelines on the [`TestServer`]: events sent into a room, in order,
//! with server-given event ids and timestamps, read back by each member as
//! a timeline. No membership or encryption: what a test needs to carry
//! in-room verification events between devices.

use ruma_client_api::message::send_message_event;
use ruma_common::{OwnedEventId, OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};

use super::TestServer;

/// One room's events, in order.
pub(super) type Timeline = Vec<Value>;

impl TestServer {
    /// `PUT /rooms/{room_id}/send/{type}/{txn}` by `sender` at `now_ms`:
    /// appends the event, answers with its new event id.
    pub fn send_room_event(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        event_type: &str,
        content: &Value,
        now_ms: u64,
    ) -> send_message_event::v3::Response {
        let mut state = self.state();
        let count: usize = state.rooms.values().map(Vec::len).sum();
        let event_id = OwnedEventId::try_from(format!("$event{count}")).expect("valid id");
        let timeline = state.rooms.entry(room_id.to_owned()).or_default();
        timeline.push(json!({
            "type": event_type,
            "sender": sender,
            "event_id": event_id,
            "origin_server_ts": now_ms,
            "room_id": room_id,
            "content": content,
        }));
        send_message_event::v3::Response::new(event_id)
    }

    /// The room's events from index `from` on.
    pub fn room_events(&self, room_id: &RoomId, from: usize) -> Vec<Value> {
        let state = self.state();
        state.rooms.get(room_id).map(|t| t.iter().skip(from).cloned().collect()).unwrap_or_default()
    }

    /// Every room with events.
    pub fn rooms(&self) -> Vec<OwnedRoomId> {
        self.state().rooms.keys().cloned().collect()
    }
}
