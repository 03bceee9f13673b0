//! Model test: arbitrary sequences of `Changes` give the same reads on redb,
//! sled and PostgreSQL (plain and encrypted) as on MemoryStore. The
//! PostgreSQL run needs the test cluster (`cargo xtask test` starts it).

use std::collections::BTreeSet;

use hush_crypto_core::{
    Changes, CryptoStore,
    megolm::StoredInboundGroupSession,
    store::{MessageIndexRecord, TrackedUser},
};
use hush_testing::{
    conformance::{StoreFactory, inbound_fixture, outbound_fixture},
    stores::{Encryption, MemoryFactory, PgFactory, RedbFactory, SledFactory},
};
use proptest::prelude::*;
use ruma_common::{OwnedRoomId, OwnedUserId};
use serde_json::Value;

#[derive(Clone, Debug)]
enum Op {
    Track(u8, bool),
    Untrack(u8),
    RoomKey(u8),
    Index(u8, u8, u32, u8),
    Outbound(u8, u64),
    Token(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, any::<bool>()).prop_map(|(u, d)| Op::Track(u, d)),
        (0u8..4).prop_map(Op::Untrack),
        (0u8..6).prop_map(Op::RoomKey),
        (0u8..3, 0u8..2, 0u32..3, 0u8..3).prop_map(|(r, s, i, e)| Op::Index(r, s, i, e)),
        (0u8..3, 0u64..5).prop_map(|(r, c)| Op::Outbound(r, c)),
        (0u8..5).prop_map(Op::Token),
    ]
}

fn user(n: u8) -> OwnedUserId {
    format!("@user{n}:example.org").try_into().unwrap()
}

fn room(n: u8) -> OwnedRoomId {
    format!("!room{n}:example.org").try_into().unwrap()
}

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

/// The same pool of room keys for every store, so reads can be compared.
fn pool() -> Vec<Value> {
    (0..6u8).map(|k| json(&inbound_fixture(&room(k % 3)))).collect()
}

fn changes(batch: &[Op], pool: &[Value]) -> Changes {
    let mut changes = Changes::default();
    for op in batch {
        match op {
            Op::Track(u, dirty) => changes.tracked_users.push(TrackedUser { user_id: user(*u), dirty: *dirty }),
            Op::Untrack(u) => changes.untracked_users.push(user(*u)),
            Op::RoomKey(k) => changes
                .inbound_group_sessions
                .push(serde_json::from_value::<StoredInboundGroupSession>(pool[*k as usize].clone()).unwrap()),
            Op::Index(r, s, i, e) => changes.message_indices.push(MessageIndexRecord {
                room_id: room(*r),
                session_id: format!("S{s}"),
                message_index: *i,
                event_id: format!("$e{e}").try_into().unwrap(),
                origin_server_ts: u64::from(*e),
            }),
            Op::Outbound(r, count) => changes.outbound_group_sessions.push(outbound_fixture(&room(*r), *count)),
            Op::Token(n) => changes.next_batch_token = Some(format!("t{n}")),
        }
    }
    changes
}

/// Everything a store answers about the universe of the model.
async fn reads(store: &impl CryptoStore, pool: &[Value]) -> Value {
    let mut tracked: Vec<_> = store.load_tracked_users().await.unwrap().into_iter().map(|u| json(&u)).collect();
    tracked.sort_by_key(|v| v.to_string());
    let mut keys = Vec::new();
    for key in pool {
        let room: OwnedRoomId = serde_json::from_value(key["room_id"].clone()).unwrap();
        let session = key["session_id"].as_str().unwrap();
        keys.push(store.get_inbound_group_session(&room, session).await.unwrap().map(|s| json(&s)));
    }
    let listed: BTreeSet<String> = store
        .get_inbound_group_sessions(None, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|s| format!("{}/{}", s.room_id, s.session_id))
        .collect();
    let mut indices = Vec::new();
    let mut outbound = Vec::new();
    for r in 0..3 {
        for s in 0..2 {
            for i in 0..3 {
                let record = store.get_message_index(&room(r), &format!("S{s}"), i).await.unwrap();
                indices.push(record.map(|r| json(&r)));
            }
        }
        outbound.push(store.get_outbound_group_session(&room(r)).await.unwrap().map(|s| s.message_count));
    }
    serde_json::json!({
        "tracked": tracked,
        "keys": keys,
        "listed": listed,
        "count": store.inbound_group_session_count().await.unwrap(),
        "indices": indices,
        "outbound": outbound,
        "token": store.load_next_batch_token().await.unwrap(),
    })
}

async fn apply<F: StoreFactory>(factory: &mut F, batches: &[Vec<Op>], pool: &[Value]) -> Value {
    let store = factory.create();
    for batch in batches {
        store.save_changes(changes(batch, pool)).await.unwrap();
    }
    reads(&store, pool).await
}

/// Compares two read sets, naming the parts that differ (not printing key material).
fn same(actual: &Value, expected: &Value, backend: &str) {
    let differing: Vec<&String> = expected
        .as_object()
        .unwrap()
        .iter()
        .filter(|(part, value)| actual.get(part.as_str()) != Some(value))
        .map(|(part, _)| part)
        .collect();
    assert!(differing.is_empty(), "{backend} differs from the memory store in: {differing:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn every_backend_reads_like_the_memory_store(batches in proptest::collection::vec(proptest::collection::vec(op(), 0..6), 1..8)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let pool = pool();
            let expected = apply(&mut MemoryFactory, &batches, &pool).await;
            let redb = apply(&mut RedbFactory::new(Encryption::RawKey), &batches, &pool).await;
            same(&redb, &expected, "redb (encrypted)");
            let redb_plain = apply(&mut RedbFactory::new(Encryption::None), &batches, &pool).await;
            same(&redb_plain, &expected, "redb (plain)");
            let sled = apply(&mut SledFactory::new(Encryption::RawKey), &batches, &pool).await;
            same(&sled, &expected, "sled (encrypted)");
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    #[ignore = "needs the test PostgreSQL (cargo xtask test starts it)"]
    fn postgres_reads_like_the_memory_store(batches in proptest::collection::vec(proptest::collection::vec(op(), 0..6), 1..8)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let pool = pool();
            let expected = apply(&mut MemoryFactory, &batches, &pool).await;
            let encrypted = apply(&mut PgFactory::new(Encryption::RawKey), &batches, &pool).await;
            same(&encrypted, &expected, "PostgreSQL (encrypted)");
            let plain = apply(&mut PgFactory::new(Encryption::None), &batches, &pool).await;
            same(&plain, &expected, "PostgreSQL (plain)");
        });
    }
}
