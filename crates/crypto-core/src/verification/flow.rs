//! Where a verification's messages travel, and how they name their flow:
//! to-device messages carry a `transaction_id`; in-room events carry an
//! `m.reference` relation to the request event, whose event id is the
//! flow id. The messages' contents are otherwise the same, so the state
//! machines build bare contents and [`FlowId::wrap`] adds the flow's name
//! in the form its channel uses.

use ruma_common::{OwnedEventId, OwnedRoomId};
use serde_json::{Value, json};

/// The longest flow id accepted from outside.
const MAX_FLOW_ID: usize = 255;

/// A verification flow's id, with its channel.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowId {
    /// To-device messages naming this `transaction_id`.
    ToDevice(String),
    /// Events in `room_id` related to the request event `event_id`.
    InRoom {
        /// The room.
        room_id: OwnedRoomId,
        /// The request event.
        event_id: OwnedEventId,
    },
}

impl FlowId {
    /// The id as the SAS and MAC info strings use it: the transaction id,
    /// or the request's event id.
    pub fn as_str(&self) -> &str {
        match self {
            Self::ToDevice(id) => id,
            Self::InRoom { event_id, .. } => event_id.as_str(),
        }
    }

    /// The room, for an in-room flow.
    pub fn room_id(&self) -> Option<&ruma_common::RoomId> {
        match self {
            Self::ToDevice(_) => None,
            Self::InRoom { room_id, .. } => Some(room_id),
        }
    }

    /// `content` with this flow's name added as its channel wants it.
    pub fn wrap(&self, mut content: Value) -> Value {
        if let Some(object) = content.as_object_mut() {
            match self {
                Self::ToDevice(id) => {
                    object.insert("transaction_id".into(), json!(id));
                }
                Self::InRoom { event_id, .. } => {
                    object.insert("m.relates_to".into(), json!({ "rel_type": "m.reference", "event_id": event_id }));
                }
            }
        }
        content
    }

    /// Whether a received content names this flow.
    pub fn named_by(&self, content: &Value) -> bool {
        match self {
            Self::ToDevice(id) => to_device_flow(content) == Some(id.as_str()),
            Self::InRoom { event_id, .. } => related_event(content) == Some(event_id.as_str()),
        }
    }
}

/// The `transaction_id` of a to-device verification content, if it has a
/// usable one.
pub(crate) fn to_device_flow(content: &Value) -> Option<&str> {
    let id = content.get("transaction_id")?.as_str()?;
    (!id.is_empty() && id.len() <= MAX_FLOW_ID).then_some(id)
}

/// The event an in-room verification event refers to (`m.reference`).
pub(crate) fn related_event(content: &Value) -> Option<&str> {
    let relation = content.get("m.relates_to")?;
    if relation.get("rel_type")?.as_str()? != "m.reference" {
        return None;
    }
    let id = relation.get("event_id")?.as_str()?;
    (!id.is_empty() && id.len() <= MAX_FLOW_ID).then_some(id)
}

#[cfg(test)]
mod tests {
    use ruma_common::{owned_event_id, owned_room_id};

    use super::*;

    /// Both channels wrap a content so that it names its own flow and no
    /// other.
    #[test]
    fn wrapped_contents_name_their_flow_only() {
        let to_device = FlowId::ToDevice("t1".into());
        let in_room = FlowId::InRoom { room_id: owned_room_id!("!r:x.y"), event_id: owned_event_id!("$e1") };
        let a = to_device.wrap(json!({"key": "k"}));
        let b = in_room.wrap(json!({"key": "k"}));
        assert!(to_device.named_by(&a) && !to_device.named_by(&b));
        assert!(in_room.named_by(&b) && !in_room.named_by(&a));
        assert_eq!(b["m.relates_to"]["rel_type"], "m.reference");
        assert!(!FlowId::ToDevice("t2".into()).named_by(&a));
        assert_eq!(in_room.as_str(), "$e1");
        assert_eq!(to_device_flow(&json!({"transaction_id": ""})), None);
        assert_eq!(related_event(&json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$e1"}})), None);
    }
}
