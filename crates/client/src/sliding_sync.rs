//! Simplified sliding sync (MSC4186), where the homeserver offers it: one
//! list of the user's rooms with the state hush needs (encryption, members,
//! history visibility) and their latest timeline, and the `to_device` and
//! `e2ee` extensions. Their contents go to the engine in the same
//! [`SyncChanges`] shape as a `/sync` (one input shape for both), saved in
//! the same batch as the connection's position and the to-device token, so
//! a crash never acknowledges a to-device message whose keys were not
//! saved (Synapse deletes to-device messages up to the `since` we send).

use std::collections::BTreeMap;

use hush_crypto_core::{DeviceListChanges, OneTimeKeyCounts, SyncChanges};
use js_int::uint;
use ruma_client_api::sync::sync_events::v5;
use ruma_common::{OwnedRoomId, UserId};
use ruma_events::StateEventType;
use serde_json::Value;

use crate::{
    Client, ClientError, SyncSettings, SyncSummary,
    client::lock,
    http::HttpError,
    rooms::{Membership, RoomState},
    sync::RoomUpdate,
};

/// The store key of the connection's position (`pos`).
pub(crate) const POS_KEY: &str = "hush.sliding_sync.pos";
/// The store key of the to-device extension's `since` token.
const TO_DEVICE_KEY: &str = "hush.sliding_sync.to_device_since";
/// The connection id: one connection per device.
const CONN_ID: &str = "hush";
/// The list's name.
const LIST: &str = "rooms";
/// How many rooms the list covers (the most recently active first).
pub const SLIDING_SYNC_ROOMS: u32 = 1000;
/// How many timeline events a room brings at most.
const TIMELINE_LIMIT: u32 = 20;
/// The unstable feature the server lists in `/versions` when it offers
/// simplified sliding sync.
const FEATURE: &str = "org.matrix.simplified_msc3575";

impl Client {
    /// Whether the homeserver offers simplified sliding sync (it lists
    /// `org.matrix.simplified_msc3575` among its unstable features).
    pub async fn supports_sliding_sync(&self) -> Result<bool, ClientError> {
        let versions = self.http().get_json("/_matrix/client/versions").await?;
        Ok(versions["unstable_features"][FEATURE].as_bool().unwrap_or(false))
    }

    pub(crate) async fn sliding_sync_locked(&self, settings: SyncSettings) -> Result<SyncSummary, ClientError> {
        let machine = self.olm_machine()?;
        let token = self.access_token()?;
        let store = machine.store();
        let mut pos = text(store.get_custom_value(POS_KEY).await?);
        let since = text(store.get_custom_value(TO_DEVICE_KEY).await?);
        let response = loop {
            let request = self.sliding_request(pos.clone(), since.clone(), &machine, &settings);
            match self.http().send(request, Some(&token), settings.timeout).await {
                // The server forgot the connection: start it again (the
                // to-device token is ours, so nothing is lost or repeated).
                Err(HttpError::Server { errcode, .. }) if errcode == "M_UNKNOWN_POS" && pos.is_some() => {
                    tracing::info!("the sliding sync connection expired; starting a new one");
                    pos = None;
                }
                other => break other?,
            }
        };
        let own = self.session().ok_or(ClientError::NotLoggedIn)?.user_id;
        // A new connection (first, or after a reset) brings each room's
        // latest events again: only those after the latest one delivered
        // are handed to the handlers.
        let replayed = pos.is_none();
        let rooms = self.sliding_rooms(&response.rooms, &own, replayed);
        let e2ee = response.extensions.e2ee;
        let mut custom_values = vec![(POS_KEY.to_owned(), response.pos.clone().into_bytes())];
        let mut to_device_events = Vec::new();
        if let Some(to_device) = response.extensions.to_device {
            custom_values.push((TO_DEVICE_KEY.to_owned(), to_device.next_batch.into_bytes()));
            to_device_events = to_device.events;
        }
        let changes = SyncChanges {
            to_device_events,
            // Device-list changes come only between two positions: after a
            // new connection every tracked user is queried again.
            device_lists: DeviceListChanges {
                changed: e2ee.device_lists.changed,
                left: e2ee.device_lists.left,
                is_initial: pos.is_none(),
            },
            // Absent in the e2ee extension means unchanged: unknown.
            one_time_keys_counts: OneTimeKeyCounts::from_sliding_sync(Some(e2ee.device_one_time_keys_count)),
            unused_fallback_keys: e2ee.device_unused_fallback_key_types,
            next_batch_token: None,
            custom_values,
        };
        Box::pin(self.apply_sync(&machine, changes, rooms, response.pos)).await
    }

    fn sliding_request(
        &self,
        pos: Option<String>,
        since: Option<String>,
        machine: &hush_crypto_core::OlmMachine,
        settings: &SyncSettings,
    ) -> v5::Request {
        let mut list = v5::request::List::default();
        list.ranges = vec![(uint!(0), (SLIDING_SYNC_ROOMS - 1).into())];
        list.room_details.required_state = vec![
            (StateEventType::RoomEncryption, String::new()),
            (StateEventType::RoomHistoryVisibility, String::new()),
            (StateEventType::RoomMember, "*".to_owned()),
        ];
        list.room_details.timeline_limit = TIMELINE_LIMIT.into();
        let mut request = v5::Request::new();
        request.conn_id = Some(CONN_ID.to_owned());
        // A new connection is answered at once; an existing one long-polls.
        request.timeout = pos.is_some().then(|| self.long_poll(machine, settings));
        request.pos = pos;
        request.lists.insert(LIST.to_owned(), list);
        request.extensions.to_device.enabled = Some(true);
        request.extensions.to_device.since = since;
        request.extensions.e2ee.enabled = Some(true);
        request
    }

    /// The rooms a sliding sync response changes, as for `/sync`: state
    /// applied (the room's required state, then its timeline's state
    /// events), our membership from our own member event or an invite.
    fn sliding_rooms(
        &self,
        rooms: &BTreeMap<OwnedRoomId, v5::response::Room>,
        own: &UserId,
        replayed: bool,
    ) -> RoomUpdate {
        let known = lock(&self.inner.rooms);
        let mut update = RoomUpdate { updated: BTreeMap::new(), timeline: Vec::new(), new_rooms: false };
        for (room_id, room) in rooms {
            let mut state = known.get(room_id).cloned().unwrap_or_else(|| {
                update.new_rooms = true;
                let invited = room.invite_state.is_some();
                RoomState::new(room_id.clone(), if invited { Membership::Invite } else { Membership::Join })
            });
            let apply = |state: &mut RoomState, event: &Value| {
                state.apply(event);
                if event["type"] == "m.room.member" && event["state_key"] == own.as_str() {
                    state.own_membership =
                        Membership::from_wire(event["content"]["membership"].as_str().unwrap_or_default());
                }
            };
            if let Some(invite_state) = &room.invite_state {
                // The stripped state is the inviter's word: it may say the
                // room is encrypted, never what our membership is.
                for event in invite_state {
                    if let Ok(value) = event.deserialize_as_unchecked::<Value>() {
                        state.apply(&value);
                    }
                }
                state.own_membership = Membership::Invite;
                update.updated.insert(room_id.clone(), state);
                continue;
            }
            // The timeline's state events first: the required state is the
            // room's current state and wins.
            let timeline: Vec<Value> =
                room.timeline.iter().filter_map(|e| e.deserialize_as_unchecked::<Value>().ok()).collect();
            let fresh = if replayed { state.undelivered(&timeline) } else { &timeline[..] };
            for value in &timeline {
                if value.get("state_key").is_some() {
                    apply(&mut state, value);
                }
            }
            for value in fresh {
                state.note_delivered(value);
                update.timeline.push((room_id.clone(), value.clone()));
            }
            for event in &room.required_state {
                if let Ok(value) = event.deserialize_as_unchecked::<Value>() {
                    apply(&mut state, &value);
                }
            }
            update.updated.insert(room_id.clone(), state);
        }
        update
    }
}

/// A stored token.
fn text(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.and_then(|b| String::from_utf8(b).ok()).filter(|t| !t.is_empty())
}
