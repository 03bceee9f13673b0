//! The client's room state in the crypto store: one custom value per room
//! and a list of the rooms, written in the same batch as the sync token, so
//! a restart resumes exactly where the last processed sync left off.

use std::collections::BTreeMap;

use hush_crypto_core::{CryptoStore, StoreError};
use ruma_common::OwnedRoomId;

use crate::rooms::{ROOM_LIST_KEY, RoomState};

/// Loads every persisted room; `None` if this store never held a room list
/// (a store written before room state was persisted, or a new one).
pub(crate) async fn load_rooms(
    store: &dyn CryptoStore,
) -> Result<Option<BTreeMap<OwnedRoomId, RoomState>>, StoreError> {
    let Some(list) = store.get_custom_value(ROOM_LIST_KEY).await? else { return Ok(None) };
    let ids: Vec<OwnedRoomId> =
        serde_json::from_slice(&list).map_err(|e| StoreError::Corrupt(format!("room list: {e}")))?;
    let mut rooms = BTreeMap::new();
    for room_id in ids {
        let Some(bytes) = store.get_custom_value(&RoomState::store_key(&room_id)).await? else { continue };
        let room: RoomState =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt(format!("room {room_id}: {e}")))?;
        rooms.insert(room_id, room);
    }
    Ok(Some(rooms))
}

/// The custom values that persist `updated` rooms, plus the room list if
/// it changed (`all_ids` is every room id known after the update).
pub(crate) fn room_values<'a>(
    updated: impl IntoIterator<Item = &'a RoomState>,
    all_ids: Option<Vec<&OwnedRoomId>>,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut values = Vec::new();
    for room in updated {
        let bytes = serde_json::to_vec(room).map_err(|e| StoreError::serialization("room state", e))?;
        values.push((RoomState::store_key(&room.room_id), bytes));
    }
    if let Some(ids) = all_ids {
        let bytes = serde_json::to_vec(&ids).map_err(|e| StoreError::serialization("room list", e))?;
        values.push((ROOM_LIST_KEY.to_owned(), bytes));
    }
    Ok(values)
}
