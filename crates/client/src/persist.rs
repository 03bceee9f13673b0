//! The client's room state in the crypto store: one custom value per room
//! and a list of the rooms, written in the same batch as the sync token, so
//! a restart resumes exactly where the last processed sync left off.

use std::collections::BTreeMap;

use hush_crypto_core::{CryptoStore, StoreError};
use ruma_common::OwnedRoomId;

use crate::rooms::{ROOM_LIST_KEY, RoomState};

/// Loads every persisted room; `None` if this store never held a room list
/// (a store written before room state was persisted, or a new one), or if
/// what it holds does not decode: the store is outside input too, and a
/// damaged room record must not lock the user out. `None` makes the next
/// sync a `full_state` catch-up on top of the stored token, which rewrites
/// every room.
pub(crate) async fn load_rooms(
    store: &dyn CryptoStore,
) -> Result<Option<BTreeMap<OwnedRoomId, RoomState>>, StoreError> {
    let Some(list) = store.get_custom_value(ROOM_LIST_KEY).await? else { return Ok(None) };
    let Ok(ids) = serde_json::from_slice::<Vec<OwnedRoomId>>(&list) else {
        tracing::warn!("the saved room list does not decode; rebuilding room state from the server");
        return Ok(None);
    };
    let mut rooms = BTreeMap::new();
    for room_id in ids {
        let Some(bytes) = store.get_custom_value(&RoomState::store_key(&room_id)).await? else { return Ok(None) };
        match serde_json::from_slice::<RoomState>(&bytes) {
            Ok(room) if room.room_id == room_id => {
                rooms.insert(room_id, room);
            }
            _ => {
                tracing::warn!(%room_id, "a saved room does not decode; rebuilding room state from the server");
                return Ok(None);
            }
        }
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

#[cfg(test)]
mod tests {
    use std::future::Future;

    use hush_crypto_core::{Changes, MemoryStore};
    use ruma_common::owned_room_id;

    use super::*;
    use crate::rooms::Membership;

    fn save(store: &MemoryStore, values: Vec<(String, Vec<u8>)>) {
        block_on(store.save_changes(Changes { custom_values: values, ..Default::default() })).expect("save");
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(future)
    }

    #[test]
    fn rooms_round_trip_and_damaged_records_mean_rebuild() {
        let store = MemoryStore::new();
        assert!(block_on(load_rooms(&store)).unwrap().is_none(), "a new store has no rooms");
        let room = RoomState::new(owned_room_id!("!a:e.org"), Membership::Join);
        let ids = vec![&room.room_id];
        save(&store, room_values([&room], Some(ids)).unwrap());
        let loaded = block_on(load_rooms(&store)).unwrap().expect("rooms");
        assert_eq!(loaded.keys().collect::<Vec<_>>(), vec![&room.room_id]);

        // A damaged room record, then a damaged list: rebuilt, not an error.
        save(&store, vec![(RoomState::store_key(&room.room_id), b"{not json".to_vec())]);
        assert!(block_on(load_rooms(&store)).unwrap().is_none());
        save(&store, vec![(ROOM_LIST_KEY.to_owned(), vec![0xff, 0x00])]);
        assert!(block_on(load_rooms(&store)).unwrap().is_none());
    }
}
