//! Schema versions and the migration from each to the next. A migration
//! reads what it needs and returns its writes, applied in one batch with
//! the new version number, so a store is at one version or the next, never
//! between.
//!
//! * 1 → 2: the index of devices by curve25519 key (through it a room key
//!   from a file is tied to the device that made it, and a device claiming
//!   another's key is found), built from the devices already stored.
//! * 2 → 3: encrypted stores key replay records by the Megolm index itself
//!   after the hashed room and session, instead of a hash of the index, so
//!   the records of one session are stored in index order
//!   ([`Codec::numbered_key`]): a streamed decryption's save per 512 events
//!   writes a few pages instead of one per record. Plain stores already
//!   had that order; their keys do not change.
//! * 3 → 4: cross-signing identities and our private cross-signing keys, in
//!   tables of their own; nothing to convert.
//! * 4 → 5: the key-backup queue and secrets, in tables of their own;
//!   nothing to convert (no backup was enabled before).
//! * 5 → 6: withheld notices are keyed by their sender too (room, session
//!   and sender; `m.no_olm` by sender and sender key), so a notice another
//!   user sends about someone else's session neither replaces nor stands
//!   for the real sender's. Each stored notice names its sender: it is
//!   re-keyed.

use hush_crypto_core::{
    StoreError,
    devices::DeviceData,
    megolm::{WithheldCode, WithheldInfo},
    store::MessageIndexRecord,
};
use ruma_common::RoomId;

use crate::{KvBackend, Table, WriteOp, codec::Codec};

/// The schema version this code writes.
pub const SCHEMA_VERSION: u32 = 6;

/// A migration from version `n` to `n + 1` is `MIGRATIONS[n - 1]`.
pub(crate) type Migration = fn(&Codec, &dyn KvBackend) -> Result<Vec<WriteOp>, StoreError>;
pub(crate) const MIGRATIONS: [Migration; SCHEMA_VERSION as usize - 1] = [
    index_devices_by_curve25519,
    order_message_indices,
    add_identity_tables,
    add_key_history_tables,
    key_withheld_notices_by_sender,
];

/// How many entries a migration reads at once.
const PAGE: usize = 1000;

/// The key of the replay record of `message_index` in a room's session.
pub(crate) fn message_index_key(codec: &Codec, room_id: &RoomId, session_id: &str, message_index: u32) -> Vec<u8> {
    codec.numbered_key(Table::MessageIndices, &[room_id.as_bytes(), session_id.as_bytes()], message_index)
}

/// Where a withheld notice is kept: a room key's notice by room, session
/// and sender; an `m.no_olm` notice by sender and sender key
/// (`sender_key` is the notice's, in base64).
pub(crate) fn withheld_key_parts<'a>(info: &'a WithheldInfo, sender_key: &'a str) -> (Table, Vec<&'a [u8]>) {
    match (&info.room_id, &info.session_id) {
        (Some(room_id), Some(session_id)) if info.code != WithheldCode::NoOlm => {
            (Table::Withheld, vec![room_id.as_bytes(), session_id.as_bytes(), info.sender.as_bytes()])
        }
        _ => (Table::NoOlm, vec![info.sender.as_bytes(), sender_key.as_bytes()]),
    }
}

/// Calls `each` on every entry of `table`, a page at a time.
fn for_each_entry(
    backend: &dyn KvBackend,
    table: Table,
    mut each: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = backend.scan(table, &[], after.as_deref(), PAGE)?;
        for (key, bytes) in &page {
            each(key, bytes)?;
        }
        match page.last() {
            Some((last, _)) if page.len() == PAGE => after = Some(last.clone()),
            _ => return Ok(()),
        }
    }
}

/// 1 → 2, see the module documentation.
fn index_devices_by_curve25519(codec: &Codec, backend: &dyn KvBackend) -> Result<Vec<WriteOp>, StoreError> {
    let mut ops = Vec::new();
    for_each_entry(backend, Table::Devices, |key, bytes| {
        let device: DeviceData = codec.open(Table::Devices, key, bytes)?;
        let curve = device.curve25519_key().to_base64();
        let parts: [&[u8]; 3] = [curve.as_bytes(), device.user_id().as_bytes(), device.device_id().as_bytes()];
        let index_key = codec.key(Table::DevicesByCurve, &parts);
        let owner = (device.user_id(), device.device_id());
        let value = codec.seal(Table::DevicesByCurve, &index_key, &owner)?;
        ops.push(WriteOp::Put(Table::DevicesByCurve, index_key, value));
        Ok(())
    })?;
    Ok(ops)
}

/// 2 → 3, see the module documentation. Each record is opened under its
/// old key and sealed again under the new one (a value is bound to its key).
fn order_message_indices(codec: &Codec, backend: &dyn KvBackend) -> Result<Vec<WriteOp>, StoreError> {
    let mut ops = Vec::new();
    if codec.is_plain() {
        return Ok(ops);
    }
    for_each_entry(backend, Table::MessageIndices, |key, bytes| {
        let record: MessageIndexRecord = codec.open(Table::MessageIndices, key, bytes)?;
        let new_key = message_index_key(codec, &record.room_id, &record.session_id, record.message_index);
        if new_key != key {
            let value = codec.seal(Table::MessageIndices, &new_key, &record)?;
            ops.push(WriteOp::Delete(Table::MessageIndices, key.to_vec()));
            ops.push(WriteOp::Put(Table::MessageIndices, new_key, value));
        }
        Ok(())
    })?;
    Ok(ops)
}

/// 3 → 4, see the module documentation: the new tables start empty.
fn add_identity_tables(_: &Codec, _: &dyn KvBackend) -> Result<Vec<WriteOp>, StoreError> {
    Ok(Vec::new())
}

/// 4 → 5, see the module documentation.
fn add_key_history_tables(_: &Codec, _: &dyn KvBackend) -> Result<Vec<WriteOp>, StoreError> {
    Ok(Vec::new())
}

/// 5 → 6, see the module documentation. A notice that no longer opens
/// (damaged) is dropped: notices only explain missing keys.
fn key_withheld_notices_by_sender(codec: &Codec, backend: &dyn KvBackend) -> Result<Vec<WriteOp>, StoreError> {
    let mut ops = Vec::new();
    for table in [Table::Withheld, Table::NoOlm] {
        for_each_entry(backend, table, |key, bytes| {
            ops.push(WriteOp::Delete(table, key.to_vec()));
            let Ok(info) = codec.open::<WithheldInfo>(table, key, bytes) else { return Ok(()) };
            let sender_key = info.sender_key.to_base64();
            let (new_table, parts) = withheld_key_parts(&info, &sender_key);
            let new_key = codec.key(new_table, &parts);
            let value = codec.seal(new_table, &new_key, &info)?;
            ops.push(WriteOp::Put(new_table, new_key, value));
            Ok(())
        })?;
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        sync::{Arc, Mutex},
    };

    use futures_executor::block_on;
    use hush_crypto_core::{Changes, CryptoStore};
    use ruma_common::{device_id, owned_event_id, owned_room_id, user_id};

    use super::*;
    use crate::{KvCryptoStore, KvEngine, StoreOptions};

    /// Every entry of every table.
    type Entries = BTreeMap<(Table, Vec<u8>), Vec<u8>>;

    /// An engine over a shared map, so a test can reopen what it wrote.
    #[derive(Clone, Debug, Default)]
    struct MapEngine(Arc<Mutex<Entries>>);

    impl KvEngine for MapEngine {
        fn engine_get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.0.lock().unwrap().get(&(table, key.to_vec())).cloned())
        }

        fn engine_scan(
            &self,
            table: Table,
            prefix: &[u8],
            after: Option<&[u8]>,
            limit: usize,
        ) -> Result<crate::Entries, StoreError> {
            let map = self.0.lock().unwrap();
            Ok(map
                .range((table, prefix.to_vec())..)
                .take_while(|((t, key), _)| *t == table && key.starts_with(prefix))
                .filter(|((_, key), _)| after.is_none_or(|after| key.as_slice() > after))
                .take(limit)
                .map(|((_, key), value)| (key.clone(), value.clone()))
                .collect())
        }

        fn engine_count(&self, table: Table) -> Result<usize, StoreError> {
            Ok(self.0.lock().unwrap().keys().filter(|(t, _)| *t == table).count())
        }

        fn engine_write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
            let mut map = self.0.lock().unwrap();
            for op in ops {
                match op {
                    WriteOp::Put(table, key, value) => map.insert((table, key), value),
                    WriteOp::Delete(table, key) => map.remove(&(table, key)),
                };
            }
            Ok(())
        }

        fn engine_update(&self, table: Table, key: &[u8], decide: crate::Decide) -> Result<(), StoreError> {
            let current = self.engine_get(table, key)?;
            self.engine_write(decide(current.as_deref())?)
        }
    }

    const INDICES: u32 = 40;

    fn open(engine: &MapEngine) -> KvCryptoStore<MapEngine> {
        KvCryptoStore::open(engine.clone(), user_id!("@me:x.y"), device_id!("ME"), StoreOptions::key([7; 32])).unwrap()
    }

    fn record(message_index: u32) -> MessageIndexRecord {
        MessageIndexRecord {
            room_id: owned_room_id!("!room:x.y"),
            session_id: "session".into(),
            message_index,
            event_id: owned_event_id!("$event"),
            origin_server_ts: u64::from(message_index),
        }
    }

    /// The indices of the stored records, in the order of their keys.
    fn stored_order(store: &KvCryptoStore<MapEngine>) -> Vec<u32> {
        let entries = store.backend().scan(Table::MessageIndices, &[], None, usize::MAX).unwrap();
        entries
            .iter()
            .map(|(key, bytes)| store.codec().open::<MessageIndexRecord>(Table::MessageIndices, key, bytes).unwrap())
            .map(|record| record.message_index)
            .collect()
    }

    /// Two hosts open a new shared store at once: the second looked before
    /// the first created it, and the first has already written records when
    /// the second's creation runs. The second opens that store instead of
    /// calling it corrupt; data without any schema version is still refused.
    #[test]
    fn a_store_created_and_written_by_another_host_since_our_look_is_opened() {
        let engine = MapEngine::default();
        let store = open(&engine);
        block_on(store.save_changes(Changes { message_indices: vec![record(1)], ..Default::default() })).unwrap();
        let options = StoreOptions::key([7; 32]);
        let create = || KvCryptoStore::create(&engine, user_id!("@me:x.y"), device_id!("ME"), &options);
        assert!(create().unwrap().is_none(), "the other host's store stands");
        engine.0.lock().unwrap().remove(&(Table::Meta, b"schema_version".to_vec()));
        assert!(matches!(create(), Err(StoreError::Corrupt(_))), "data without a version is refused");
    }

    /// Saved in a shuffled order, one session's records are stored in index
    /// order in an encrypted store.
    #[test]
    fn replay_records_of_a_session_are_stored_in_index_order() {
        let engine = MapEngine::default();
        let store = open(&engine);
        let shuffled: Vec<MessageIndexRecord> = (0..INDICES).map(|i| record((i * 17) % INDICES)).collect();
        block_on(store.save_changes(Changes { message_indices: shuffled, ..Default::default() })).unwrap();
        assert_eq!(stored_order(&store), (0..INDICES).collect::<Vec<_>>());
    }

    /// A version-2 encrypted store (records under a hash of the index) is
    /// migrated on open: every record is found under its new key, in order,
    /// and nothing is left under the old keys.
    #[test]
    fn a_version_2_store_gets_its_replay_records_in_order() {
        let engine = MapEngine::default();
        let store = open(&engine);
        let records: Vec<MessageIndexRecord> = (0..INDICES).map(record).collect();
        block_on(store.save_changes(Changes { message_indices: records.clone(), ..Default::default() })).unwrap();
        // Back to what version 2 wrote.
        let codec = store.codec();
        let mut ops = Vec::new();
        for record in &records {
            let index = record.message_index.to_be_bytes();
            let parts: [&[u8]; 3] = [record.room_id.as_bytes(), record.session_id.as_bytes(), &index];
            let old_key = codec.key(Table::MessageIndices, &parts);
            let new_key = message_index_key(codec, &record.room_id, &record.session_id, record.message_index);
            ops.push(WriteOp::Delete(Table::MessageIndices, new_key));
            let value = codec.seal(Table::MessageIndices, &old_key, record).unwrap();
            ops.push(WriteOp::Put(Table::MessageIndices, old_key, value));
        }
        ops.push(WriteOp::Put(Table::Meta, b"schema_version".to_vec(), 2u32.to_be_bytes().to_vec()));
        store.backend().write(ops).unwrap();
        assert_ne!(stored_order(&store), (0..INDICES).collect::<Vec<_>>(), "the old layout is not in order");
        let room = owned_room_id!("!room:x.y");
        assert_eq!(block_on(store.get_message_index(&room, "session", 3)).unwrap(), None, "the old layout is gone");
        drop(store);

        let store = open(&engine);
        assert_eq!(stored_order(&store), (0..INDICES).collect::<Vec<_>>());
        for record in &records {
            let found = block_on(store.get_message_index(&room, "session", record.message_index)).unwrap();
            assert_eq!(found.as_ref(), Some(record));
        }
        let version = store.backend().get(Table::Meta, b"schema_version").unwrap().unwrap();
        assert_eq!(version, SCHEMA_VERSION.to_be_bytes().to_vec());
    }
}
