//! Conformance checks about batches as a whole: a batch is visible entirely
//! after `save_changes` returns; an empty batch changes nothing; a batch
//! whose write fails leaves nothing of itself visible, now or after a
//! reopen, and the store keeps working.

use hush_crypto_core::{Changes, CryptoStore, store::TrackedUser};
use ruma_common::{OwnedRoomId, OwnedUserId, owned_user_id};
use serde_json::Value;
use vodozemac::Curve25519PublicKey;

use super::{
    StoreFactory, account_fixture, device_fixture, inbound_fixture, json, olm_session_fixture, outbound_fixture, room,
};

/// A factory whose stores' backends can be made to fail their next write
/// part-way, inside the engine's transaction.
pub trait FaultyStoreFactory: StoreFactory {
    /// Arms `store`'s backend: its next write fails after `ops` of its ops.
    fn fail_next_write_after(store: &Self::Store, ops: usize);
}

/// What a reader sees of the records the batches below touch.
#[derive(Debug, PartialEq)]
struct Visible {
    account: Option<Value>,
    sessions: usize,
    device: bool,
    tracked: Vec<(OwnedUserId, bool)>,
    inbound: bool,
    outbound: Option<String>,
    token: Option<String>,
    custom: Option<Vec<u8>>,
}

/// The records of [`full_batch`]: a sender key, a user, a room, a session id.
struct Names {
    key: Curve25519PublicKey,
    alice: OwnedUserId,
    room_id: OwnedRoomId,
    session_id: String,
}

async fn visible<S: CryptoStore>(store: &S, names: &Names) -> Visible {
    let mut tracked: Vec<_> =
        store.load_tracked_users().await.unwrap().into_iter().map(|u| (u.user_id, u.dirty)).collect();
    tracked.sort();
    Visible {
        account: store.load_account().await.unwrap().map(|a| json(&a)),
        sessions: store.get_sessions(&names.key).await.unwrap().len(),
        device: store.get_device(&names.alice, "D".into()).await.unwrap().is_some(),
        tracked,
        inbound: store.get_inbound_group_session(&names.room_id, &names.session_id).await.unwrap().is_some(),
        outbound: store.get_outbound_group_session(&names.room_id).await.unwrap().map(|s| s.session_id),
        token: store.load_next_batch_token().await.unwrap(),
        custom: store.get_custom_value("conformance").await.unwrap(),
    }
}

/// A batch holding every common kind of record, and the names to read it by.
fn full_batch(n: usize) -> (Changes, Names) {
    let alice = owned_user_id!("@alice:example.org");
    let key = Curve25519PublicKey::from_bytes([6; 32]);
    let inbound = inbound_fixture(&room(n));
    let names =
        Names { key, alice: alice.clone(), room_id: inbound.room_id.clone(), session_id: inbound.session_id.clone() };
    let changes = Changes {
        account: Some(account_fixture()),
        sessions: vec![olm_session_fixture(key, 1)],
        devices: vec![device_fixture(&alice, "D")],
        tracked_users: vec![TrackedUser { user_id: alice, dirty: false }],
        inbound_group_sessions: vec![inbound],
        outbound_group_sessions: vec![outbound_fixture(&room(n), 0)],
        custom_values: vec![("conformance".to_owned(), vec![n as u8; 3])],
        next_batch_token: Some(format!("t{n}")),
        ..Default::default()
    };
    (changes, names)
}

/// One batch holding every kind of record is visible whole after the call.
pub async fn a_batch_is_applied_whole<F: StoreFactory>(factory: &mut F) {
    let store = factory.create();
    let (changes, names) = full_batch(9);
    store.save_changes(changes).await.unwrap();
    let check = |seen: Visible| {
        assert!(seen.account.is_some() && seen.device && seen.inbound && seen.outbound.is_some(), "{seen:?}");
        assert_eq!(seen.sessions, 1);
        assert_eq!(seen.tracked.len(), 1);
        assert_eq!(seen.token.as_deref(), Some("t9"));
        assert_eq!(seen.custom.as_deref(), Some(&[9u8; 3][..]));
    };
    check(visible(&store, &names).await);
    drop(store);
    if let Some(store) = factory.reopen() {
        check(visible(&store, &names).await);
    }
}

/// Saving an empty batch succeeds and changes nothing that was saved before,
/// in this handle or after a reopen.
pub async fn an_empty_batch_changes_nothing<F: StoreFactory>(factory: &mut F) {
    let store = factory.create();
    let (changes, names) = full_batch(3);
    store.save_changes(changes).await.unwrap();
    let before = visible(&store, &names).await;
    assert!(Changes::default().is_empty());
    store.save_changes(Changes::default()).await.expect("an empty batch saves");
    assert_eq!(visible(&store, &names).await, before);
    drop(store);
    if let Some(store) = factory.reopen() {
        assert_eq!(visible(&store, &names).await, before);
        store.save_changes(Changes::default()).await.expect("an empty batch saves after a reopen");
        assert_eq!(visible(&store, &names).await, before);
    }
}

/// A batch whose write fails part-way (after 0, 1, 3 ops, or after all of
/// them but before the commit) returns the error and leaves the store as it
/// was: none of its records (new ones, overwrites, deletions) is visible in
/// this handle or after a reopen. The same batch then saves whole, so the
/// check would see it had it leaked.
pub async fn a_failed_batch_leaves_nothing_visible<F: FaultyStoreFactory>(factory: &mut F) {
    for fail_after in [0, 1, 3, usize::MAX - 1] {
        let store = factory.create();
        // What is there before: a first batch, with a user the second one untracks.
        let (first, names) = full_batch(1);
        store.save_changes(first).await.unwrap();
        let bob = owned_user_id!("@bob:example.org");
        let tracked =
            Changes { tracked_users: vec![TrackedUser { user_id: bob.clone(), dirty: true }], ..Default::default() };
        store.save_changes(tracked).await.unwrap();
        let before = visible(&store, &names).await;

        let (mut second, _) = full_batch(1);
        second.sessions = vec![olm_session_fixture(names.key, 2)];
        second.untracked_users = vec![bob];
        second.next_batch_token = Some("after the failure".into());
        second.custom_values = vec![("conformance".to_owned(), b"overwritten".to_vec())];
        let retry = Changes { untracked_users: second.untracked_users.clone(), ..full_batch(1).0 };
        F::fail_next_write_after(&store, fail_after);
        let error = store.save_changes(second).await;
        assert!(error.is_err(), "the armed write failed (after {fail_after} ops)");
        assert_eq!(visible(&store, &names).await, before, "a failed write (after {fail_after} ops) leaked");
        drop(store);
        let store = factory.reopen().expect("a faulty factory persists");
        assert_eq!(visible(&store, &names).await, before, "after a reopen (failed after {fail_after} ops)");

        // The store still works, and a batch's effects are visible to this check.
        store.save_changes(retry).await.expect("the next write succeeds");
        let after = visible(&store, &names).await;
        assert_ne!(after, before, "the retried batch is visible");
        assert_eq!(after.tracked.len(), 1, "bob was untracked by the retried batch");
    }
}
