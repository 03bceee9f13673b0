//! Creating rooms: [`CreateRoomOptions`] (name, topic, preset, invites,
//! history visibility, and the encryption with its rotation settings,
//! written into the room's `m.room.encryption` state).

use std::time::Duration;

use ruma_client_api::room::create_room;
pub use ruma_client_api::room::create_room::v3::RoomPreset;
use ruma_common::{OwnedRoomId, OwnedUserId, serde::Raw};
use ruma_events::room::history_visibility::HistoryVisibility;
use serde_json::{Value, json};

use crate::{Client, ClientError};

/// How a new room's room keys rotate (the `rotation_period_ms` and
/// `rotation_period_msgs` of its `m.room.encryption` state); `None` leaves
/// the spec's default (a week, 100 messages).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationSettings {
    /// Rotate the room key after this long.
    pub period: Option<Duration>,
    /// Rotate the room key after this many messages.
    pub messages: Option<u64>,
}

/// What room to create (`client.create_room_with(options)`).
#[derive(Clone, Debug)]
pub struct CreateRoomOptions {
    /// The room's name, if any.
    pub name: Option<String>,
    /// The room's topic, if any.
    pub topic: Option<String>,
    /// The server's preset (join rules, history visibility, power levels).
    pub preset: RoomPreset,
    /// Users invited at creation.
    pub invite: Vec<OwnedUserId>,
    /// Encrypted with these rotation settings, or `None` for a room in the clear.
    pub encryption: Option<RotationSettings>,
    /// The history visibility, if not the preset's.
    pub history_visibility: Option<HistoryVisibility>,
    /// Marks the room as a direct chat with the invitees.
    pub is_direct: bool,
}

impl Default for CreateRoomOptions {
    /// A private, encrypted room with the default rotation and no name.
    fn default() -> Self {
        Self {
            name: None,
            topic: None,
            preset: RoomPreset::PrivateChat,
            invite: Vec::new(),
            encryption: Some(RotationSettings::default()),
            history_visibility: None,
            is_direct: false,
        }
    }
}

impl CreateRoomOptions {
    /// The `m.room.encryption` content these options ask for, if any.
    pub fn encryption_content(&self) -> Option<Value> {
        let rotation = self.encryption.as_ref()?;
        let mut content = json!({"algorithm": hush_crypto_core::MEGOLM_ALGORITHM});
        if let Some(period) = rotation.period {
            content["rotation_period_ms"] = json!(u64::try_from(period.as_millis()).unwrap_or(u64::MAX));
        }
        if let Some(messages) = rotation.messages {
            content["rotation_period_msgs"] = json!(messages);
        }
        Some(content)
    }

    fn initial_state(&self) -> Vec<Value> {
        let mut state = Vec::new();
        if let Some(content) = self.encryption_content() {
            state.push(json!({"type": "m.room.encryption", "state_key": "", "content": content}));
        }
        if let Some(visibility) = &self.history_visibility {
            state.push(json!({"type": "m.room.history_visibility", "state_key": "",
                "content": {"history_visibility": visibility.as_str()}}));
        }
        state
    }
}

impl Client {
    /// Creates a room as `options` say. Returns its id; the room is known
    /// to the client after the next sync.
    pub async fn create_room_with(&self, options: CreateRoomOptions) -> Result<OwnedRoomId, ClientError> {
        let mut request = create_room::v3::Request::new();
        request.name = options.name.clone();
        request.topic = options.topic.clone();
        request.invite = options.invite.clone();
        request.preset = Some(options.preset.clone());
        request.is_direct = options.is_direct;
        request.initial_state = options
            .initial_state()
            .iter()
            .map(|event| Raw::new(event).map(Raw::cast_unchecked).map_err(ClientError::serialization))
            .collect::<Result<_, _>>()?;
        let response = self.http().send(request, Some(&self.access_token()?), Duration::ZERO).await?;
        Ok(response.room_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_settings_are_written_into_the_encryption_state() {
        let options = CreateRoomOptions {
            encryption: Some(RotationSettings { period: Some(Duration::from_secs(3600)), messages: Some(25) }),
            ..Default::default()
        };
        let content = options.encryption_content().expect("encrypted");
        assert_eq!(content["rotation_period_ms"], 3_600_000);
        assert_eq!(content["rotation_period_msgs"], 25);
        assert_eq!(content["algorithm"], hush_crypto_core::MEGOLM_ALGORITHM);
        let plain = CreateRoomOptions { encryption: None, ..Default::default() };
        assert!(plain.encryption_content().is_none() && plain.initial_state().is_empty());
    }
}
