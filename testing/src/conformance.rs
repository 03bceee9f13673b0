//! The store conformance suite: generic checks every [`CryptoStore`] backend
//! must pass, run unchanged against MemoryStore, redb and sled, with and
//! without encryption (see `tests/store_conformance.rs`).

use std::collections::BTreeSet;

use hush_crypto_core::{
    Changes, CryptoStore, EncryptionSettings, KeySource, Timestamp, WithheldCode,
    devices::DeviceData,
    identities::{PrivateCrossSigningIdentity, UserIdentityData},
    megolm::{
        RoomKeyShareRecord, ShareOutcome, SharedWith, StoredInboundGroupSession, StoredOutboundGroupSession,
        WithheldInfo,
    },
    store::{MessageIndexRecord, OlmMessageHash, RoomKeyRef, StoredAccount, StoredSecret, StoredSession, TrackedUser},
};
use ruma_common::{OwnedRoomId, OwnedUserId, RoomId, UserId, owned_device_id, owned_user_id};
use serde_json::Value;
use vodozemac::{
    Curve25519PublicKey,
    megolm::{GroupSession, InboundGroupSession},
    olm::{Account, SessionConfig},
};

/// Makes stores for the suite: fresh ones, and the same one again after a
/// restart (persistent backends) or `None` (memory).
pub trait StoreFactory {
    /// The store type.
    type Store: CryptoStore;
    /// A new, empty store for `@owner:example.org` / `OWNER`.
    fn create(&mut self) -> Self::Store;
    /// The store last created, opened again (the previous handle is dropped
    /// first), or `None` if the backend does not persist.
    fn reopen(&mut self) -> Option<Self::Store>;
}

mod batches;
mod lock;
pub use batches::{
    FaultyStoreFactory, a_batch_is_applied_whole, a_failed_batch_leaves_nothing_visible, an_empty_batch_changes_nothing,
};
pub use lock::store_lock_leases_and_fences;

/// Serialized form, to compare records that hold pickles.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("records serialize")
}

/// A stored account of a fresh vodozemac account.
pub fn account_fixture() -> StoredAccount {
    StoredAccount {
        user_id: owned_user_id!("@owner:example.org"),
        device_id: owned_device_id!("OWNER"),
        pickle: Account::new().pickle(),
        device_keys_uploaded: true,
        uploaded_one_time_key_count: 25,
        created_at: Timestamp::from_millis(5),
    }
}

/// An Olm session with the device whose identity key is `sender_key`.
pub fn olm_session_fixture(sender_key: Curve25519PublicKey, n: u64) -> StoredSession {
    let alice = Account::new();
    let mut bob = Account::new();
    bob.generate_one_time_keys(1);
    let otk = *bob.one_time_keys().values().next().expect("a key");
    let session =
        alice.create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk).expect("session");
    StoredSession {
        sender_key,
        session_id: session.session_id(),
        pickle: session.pickle(),
        created_at: Timestamp::from_millis(n),
        last_used_at: Timestamp::from_millis(n + 1),
        owner_user: Some(ruma_common::owned_user_id!("@owner:example.org")),
        owner_device: Some(format!("DEVICE{n}").into()),
    }
}

/// A room key for `room_id`.
pub fn inbound_fixture(room_id: &RoomId) -> StoredInboundGroupSession {
    let outbound = GroupSession::new(Default::default());
    let inbound = InboundGroupSession::new(&outbound.session_key(), Default::default());
    StoredInboundGroupSession {
        room_id: room_id.to_owned(),
        session_id: inbound.session_id(),
        sender_key: Curve25519PublicKey::from_bytes([3; 32]),
        sender_ed25519: None,
        sender_user: Some(owned_user_id!("@sender:example.org")),
        source: KeySource::Olm,
        shared_history: true,
        pickle: inbound.pickle(),
    }
}

/// Our outbound room key for `room_id`.
pub fn outbound_fixture(room_id: &RoomId, message_count: u64) -> StoredOutboundGroupSession {
    let session = GroupSession::new(Default::default());
    StoredOutboundGroupSession {
        room_id: room_id.to_owned(),
        session_id: session.session_id(),
        created_at: Timestamp::from_millis(1),
        message_count,
        settings: EncryptionSettings::default(),
        shared_with: Default::default(),
        withheld_from: Default::default(),
        invalidated: false,
        pickle: session.pickle(),
        reserved_until: 0,
        shares_in_records: true,
        sent_to: Default::default(),
    }
}

/// A device of `user_id`, with self-signed keys.
pub fn device_fixture(user_id: &UserId, device_id: &str) -> DeviceData {
    let server = std::sync::Arc::new(crate::TestServer::new());
    let rogue = crate::RogueDevice::register(&server, user_id, device_id);
    DeviceData::from_signed_keys(rogue.device_keys_for(user_id), user_id, None).expect("valid device keys")
}

pub(crate) fn room(n: usize) -> OwnedRoomId {
    format!("!room{n}:example.org").try_into().expect("room id")
}

/// The account is absent in a new store, then reads back as saved.
pub async fn account_round_trip<F: StoreFactory>(factory: &mut F) {
    let store = factory.create();
    assert!(store.load_account().await.unwrap().is_none());
    let account = account_fixture();
    let expected = json(&account);
    store.save_changes(Changes { account: Some(account), ..Default::default() }).await.unwrap();
    assert_eq!(json(&store.load_account().await.unwrap().unwrap()), expected);
    drop(store);
    if let Some(store) = factory.reopen() {
        assert_eq!(json(&store.load_account().await.unwrap().unwrap()), expected, "account lost on reopen");
    }
}

/// Olm sessions are found by their sender key only.
pub async fn olm_sessions_by_sender_key<F: StoreFactory>(factory: &mut F) {
    let store = factory.create();
    let (k1, k2) = (Curve25519PublicKey::from_bytes([1; 32]), Curve25519PublicKey::from_bytes([2; 32]));
    let sessions = vec![olm_session_fixture(k1, 1), olm_session_fixture(k1, 2), olm_session_fixture(k2, 3)];
    let ids = |list: &[StoredSession]| list.iter().map(|s| s.session_id.clone()).collect::<BTreeSet<_>>();
    let expected_k1 = ids(&sessions[..2]);
    let expected_k2 = ids(&sessions[2..]);
    store.save_changes(Changes { sessions, ..Default::default() }).await.unwrap();
    assert_eq!(ids(&store.get_sessions(&k1).await.unwrap()), expected_k1);
    assert_eq!(ids(&store.get_sessions(&k2).await.unwrap()), expected_k2);
    assert!(store.get_sessions(&Curve25519PublicKey::from_bytes([9; 32])).await.unwrap().is_empty());
    // Saving a session again replaces it.
    let mut again = olm_session_fixture(k2, 10);
    again.session_id = expected_k2.iter().next().unwrap().clone();
    store.save_changes(Changes { sessions: vec![again], ..Default::default() }).await.unwrap();
    let stored = store.get_sessions(&k2).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].created_at, Timestamp::from_millis(10));
    drop(store);
    if let Some(store) = factory.reopen() {
        assert_eq!(ids(&store.get_sessions(&k1).await.unwrap()), expected_k1);
    }
}

/// Devices are found by user and device; updates replace; users do not mix.
pub async fn devices_by_user<F: StoreFactory>(factory: &mut F) {
    let store = factory.create();
    let alice = owned_user_id!("@alice:example.org");
    // A user id that is a prefix of the other must not see its devices.
    let alice2 = owned_user_id!("@alice:example.org2");
    let devices = vec![device_fixture(&alice, "A1"), device_fixture(&alice, "A2"), device_fixture(&alice2, "B1")];
    store.save_changes(Changes { devices: devices.clone(), ..Default::default() }).await.unwrap();
    assert_eq!(store.get_device(&alice, "A1".into()).await.unwrap(), Some(devices[0].clone()));
    assert_eq!(store.get_device(&alice, "B1".into()).await.unwrap(), None);
    let listed = store.get_user_devices(&alice).await.unwrap();
    assert_eq!(listed.keys().map(|d| d.as_str()).collect::<Vec<_>>(), vec!["A1", "A2"]);
    assert_eq!(store.get_user_devices(&alice2).await.unwrap().len(), 1);
    assert!(store.get_user_devices(&owned_user_id!("@nobody:example.org")).await.unwrap().is_empty());
    drop(store);
    if let Some(store) = factory.reopen() {
        assert_eq!(store.get_user_devices(&alice).await.unwrap().len(), 2);
    }
}

/// Tracked users: added, updated, removed.
pub async fn tracked_users<F: StoreFactory>(factory: &mut F) {
    let store = factory.create();
    let users: Vec<OwnedUserId> = (0..5).map(|i| format!("@u{i}:example.org").try_into().unwrap()).collect();
    let rows: Vec<_> = users.iter().map(|u| TrackedUser { user_id: u.clone(), dirty: true }).collect();
    store.save_changes(Changes { tracked_users: rows, ..Default::default() }).await.unwrap();
    let changes = Changes {
        tracked_users: vec![TrackedUser { user_id: users[0].clone(), dirty: false }],
        untracked_users: vec![users[4].clone()],
        ..Default::default()
    };
    store.save_changes(changes).await.unwrap();
    let mut loaded = store.load_tracked_users().await.unwrap();
    loaded.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    assert_eq!(loaded.len(), 4);
    assert_eq!(loaded[0], TrackedUser { user_id: users[0].clone(), dirty: false });
    assert!(loaded[1..].iter().all(|u| u.dirty));
    drop(store);
    if let Some(store) = factory.reopen() {
        assert_eq!(store.load_tracked_users().await.unwrap().len(), 4);
    }
}

/// Room keys by (room, session); pages cover every key exactly once.
pub async fn inbound_group_sessions_and_pages<F: StoreFactory>(factory: &mut F) {
    let store = factory.create();
    let sessions: Vec<_> = (0..10).map(|i| inbound_fixture(&room(i % 3))).collect();
    let expected: BTreeSet<(OwnedRoomId, String)> =
        sessions.iter().map(|s| (s.room_id.clone(), s.session_id.clone())).collect();
    let first = json(&sessions[0]);
    let (room0, session0) = (sessions[0].room_id.clone(), sessions[0].session_id.clone());
    store.save_changes(Changes { inbound_group_sessions: sessions, ..Default::default() }).await.unwrap();
    assert_eq!(json(&store.get_inbound_group_session(&room0, &session0).await.unwrap().unwrap()), first);
    assert!(store.get_inbound_group_session(&room(1), &session0).await.unwrap().is_none());
    assert_eq!(store.inbound_group_session_count().await.unwrap(), 10);

    let mut seen = BTreeSet::new();
    let mut after: Option<(OwnedRoomId, String)> = None;
    loop {
        let cursor = after.as_ref().map(|(r, s)| (r.as_ref(), s.as_str()));
        let page = store.get_inbound_group_sessions(cursor, 3).await.unwrap();
        assert!(page.len() <= 3);
        for s in &page {
            assert!(seen.insert((s.room_id.clone(), s.session_id.clone())), "a key was listed twice");
        }
        match page.last() {
            Some(last) => after = Some((last.room_id.clone(), last.session_id.clone())),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    drop(store);
    if let Some(store) = factory.reopen() {
        assert_eq!(store.inbound_group_session_count().await.unwrap(), 10);
    }
}

/// Our room key per room; withheld notices, kept per sender (another
/// user's notice about the same session, or with the same sender key, is
/// kept beside it, never in its place); replay records; the sync token.
pub async fn outbound_withheld_indices_and_token<F: StoreFactory>(factory: &mut F) {
    let store = factory.create();
    let first = outbound_fixture(&room(1), 3);
    let replacement = outbound_fixture(&room(1), 7);
    let expected = json(&replacement);
    let sender_key = Curve25519PublicKey::from_bytes([4; 32]);
    let (sender, other) = (owned_user_id!("@s:example.org"), owned_user_id!("@other:example.org"));
    let notice = |room_id: Option<OwnedRoomId>, session_id: Option<&str>, code| WithheldInfo {
        sender: sender.clone(),
        sender_key,
        room_id,
        session_id: session_id.map(ToOwned::to_owned),
        code,
        reason: Some("because".into()),
    };
    let record = |index, event: &str| MessageIndexRecord {
        room_id: room(1),
        session_id: "S".into(),
        message_index: index,
        event_id: event.try_into().unwrap(),
        origin_server_ts: 42,
    };
    let changes = Changes {
        outbound_group_sessions: vec![first],
        withheld: vec![
            notice(Some(room(1)), Some("S"), WithheldCode::Unverified),
            notice(None, None, WithheldCode::NoOlm),
            // Another user's notices, about the same session and key, after ours.
            WithheldInfo { sender: other.clone(), ..notice(Some(room(1)), Some("S"), WithheldCode::Blacklisted) },
            WithheldInfo { sender: other.clone(), ..notice(None, None, WithheldCode::Other("x.spoof".into())) },
        ],
        message_indices: vec![record(0, "$a"), record(1, "$b")],
        next_batch_token: Some("s1".into()),
        ..Default::default()
    };
    store.save_changes(changes).await.unwrap();
    store
        .save_changes(Changes {
            outbound_group_sessions: vec![replacement],
            next_batch_token: Some("s2".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let check = |store: F::Store| {
        let expected = expected.clone();
        let (sender, other) = (sender.clone(), other.clone());
        async move {
            assert_eq!(json(&store.get_outbound_group_session(&room(1)).await.unwrap().unwrap()), expected);
            assert!(store.get_outbound_group_session(&room(2)).await.unwrap().is_none());
            let withheld = |session, who| {
                let store = &store;
                async move { store.get_withheld_info(&room(1), session, who).await.unwrap().map(|i| i.code) }
            };
            assert_eq!(withheld("S", &sender).await, Some(WithheldCode::Unverified));
            assert_eq!(withheld("S", &other).await, Some(WithheldCode::Blacklisted));
            assert_eq!(withheld("T", &sender).await, None);
            let no_olm = |who, key| {
                let store = &store;
                async move { store.get_no_olm_notice(who, &key).await.unwrap().map(|i| i.code) }
            };
            assert_eq!(no_olm(&sender, sender_key).await, Some(WithheldCode::NoOlm));
            assert_eq!(no_olm(&other, sender_key).await, Some(WithheldCode::Other("x.spoof".into())));
            assert_eq!(no_olm(&sender, Curve25519PublicKey::from_bytes([5; 32])).await, None);
            assert_eq!(store.get_message_index(&room(1), "S", 1).await.unwrap().unwrap().event_id.as_str(), "$b");
            assert!(store.get_message_index(&room(1), "S", 2).await.unwrap().is_none());
            assert_eq!(store.load_next_batch_token().await.unwrap().as_deref(), Some("s2"));
        }
    };
    check(store).await;
    if let Some(store) = factory.reopen() {
        check(store).await;
    }
}

/// Devices are found by their curve25519 key too, across users; Olm
/// message hashes and named custom values read back as saved.
pub async fn device_index_hashes_and_custom_values<F: StoreFactory>(factory: &mut F) {
    let store = factory.create();
    let (alice, eve) = (owned_user_id!("@alice:example.org"), owned_user_id!("@eve:example.org"));
    let a1 = device_fixture(&alice, "A1");
    let e1 = device_fixture(&eve, "E1");
    let hash = OlmMessageHash { sender_key: "key".into(), hash: "h1".into() };
    let changes = Changes {
        devices: vec![a1.clone(), e1.clone()],
        olm_message_hashes: vec![hash.clone()],
        custom_values: vec![("one".into(), b"first".to_vec()), ("two".into(), b"2".to_vec())],
        ..Default::default()
    };
    store.save_changes(changes).await.unwrap();
    let later = Changes { custom_values: vec![("one".into(), b"second".to_vec())], ..Default::default() };
    store.save_changes(later).await.unwrap();
    check_index(&store, &a1, &e1, &hash).await;
    drop(store);
    if let Some(store) = factory.reopen() {
        check_index(&store, &a1, &e1, &hash).await;
    }
}

async fn check_index<S: CryptoStore>(store: &S, a1: &DeviceData, e1: &DeviceData, hash: &OlmMessageHash) {
    let found = store.get_devices_by_curve25519(&a1.curve25519_key()).await.unwrap();
    assert_eq!(found, vec![a1.clone()]);
    assert_eq!(store.get_devices_by_curve25519(&e1.curve25519_key()).await.unwrap(), vec![e1.clone()]);
    assert!(store.get_devices_by_curve25519(&Curve25519PublicKey::from_bytes([3; 32])).await.unwrap().is_empty());
    assert!(store.is_olm_message_known(hash).await.unwrap());
    let other = OlmMessageHash { sender_key: "key".into(), hash: "h2".into() };
    assert!(!store.is_olm_message_known(&other).await.unwrap());
    assert_eq!(store.get_custom_value("one").await.unwrap().as_deref(), Some(&b"second"[..]));
    assert_eq!(store.get_custom_value("two").await.unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(store.get_custom_value("three").await.unwrap(), None);
}

/// Acknowledged shares are saved one row per device and come back inside
/// the outbound session they belong to; a new room key for the room drops
/// the rows of the one it replaced.
pub async fn room_key_share_records<F: StoreFactory>(factory: &mut F) {
    let store = factory.create();
    let first = outbound_fixture(&room(3), 0);
    let replacement = outbound_fixture(&room(3), 0);
    let other_room = outbound_fixture(&room(4), 0);
    let share = |session: &StoredOutboundGroupSession, user: &str, device: &str, outcome| RoomKeyShareRecord {
        room_id: session.room_id.clone(),
        session_id: session.session_id.clone(),
        user_id: OwnedUserId::try_from(user).unwrap(),
        device_id: device.into(),
        outcome,
    };
    let with = SharedWith { curve25519: Curve25519PublicKey::from_bytes([8; 32]), message_index: 5 };
    let changes = Changes {
        outbound_group_sessions: vec![json_clone(&first), json_clone(&other_room)],
        room_key_shares: vec![
            share(&first, "@a:example.org", "A1", ShareOutcome::Shared(with)),
            share(&first, "@b:example.org", "B1", ShareOutcome::Withheld(WithheldCode::Blacklisted)),
            share(&other_room, "@a:example.org", "A1", ShareOutcome::Shared(with)),
        ],
        ..Default::default()
    };
    store.save_changes(changes).await.unwrap();
    // A second acknowledgement adds a row, without rewriting the session.
    let more = vec![share(&first, "@a:example.org", "A2", ShareOutcome::Shared(with))];
    store.save_changes(Changes { room_key_shares: more, ..Default::default() }).await.unwrap();
    let loaded = store.get_outbound_group_session(&room(3)).await.unwrap().unwrap();
    let alice = owned_user_id!("@a:example.org");
    let bob = owned_user_id!("@b:example.org");
    assert_eq!(loaded.shared_with[&alice].len(), 2);
    assert_eq!(loaded.shared_with[&alice][<&ruma_common::DeviceId>::from("A1")], with);
    assert_eq!(loaded.withheld_from[&bob][<&ruma_common::DeviceId>::from("B1")], WithheldCode::Blacklisted);
    // The room key is replaced: its rows go, the other room's stay.
    let changes = Changes { outbound_group_sessions: vec![json_clone(&replacement)], ..Default::default() };
    store.save_changes(changes).await.unwrap();
    let check = |store: F::Store| {
        let replacement_id = replacement.session_id.clone();
        async move {
            let loaded = store.get_outbound_group_session(&room(3)).await.unwrap().unwrap();
            assert_eq!(loaded.session_id, replacement_id);
            assert!(loaded.shared_with.is_empty() && loaded.withheld_from.is_empty());
            let other = store.get_outbound_group_session(&room(4)).await.unwrap().unwrap();
            assert_eq!(other.shared_with.values().map(|d| d.len()).sum::<usize>(), 1);
        }
    };
    check(store).await;
    if let Some(store) = factory.reopen() {
        check(store).await;
    }
}

fn json_clone(session: &StoredOutboundGroupSession) -> StoredOutboundGroupSession {
    serde_json::from_value(serde_json::to_value(session).unwrap()).unwrap()
}

/// Our cross-signing identity and private keys as a real bootstrap made
/// them (on a memory store, against the in-process server).
pub async fn identity_fixture() -> (UserIdentityData, PrivateCrossSigningIdentity) {
    let (user_id, device_id) = owner();
    let server = std::sync::Arc::new(crate::TestServer::new());
    let clock = crate::VirtualClock::default();
    let device = crate::TestDevice::new(&server, &clock, &user_id, device_id.as_str()).await;
    device.bootstrap_cross_signing(false).await;
    device.refresh_keys(&[&user_id]).await;
    let store = device.machine.store();
    let identity = store.get_user_identity(&user_id).await.unwrap().expect("own identity");
    let private = store.load_private_identity().await.unwrap().expect("private keys");
    (identity, private)
}

/// Identities and our private cross-signing keys read back as saved; a
/// later private identity replaces the earlier one.
pub async fn identities_and_private_keys<F: StoreFactory>(factory: &mut F) {
    let (identity, private) = identity_fixture().await;
    let (other, replacement) = identity_fixture().await;
    let store = factory.create();
    assert_eq!(store.get_user_identity(identity.user_id()).await.unwrap(), None);
    assert!(store.load_private_identity().await.unwrap().is_none());
    let changes = Changes { identities: vec![identity.clone()], private_identity: Some(private), ..Default::default() };
    store.save_changes(changes).await.unwrap();
    // The same user's identity again replaces it; so do the private keys.
    let changes =
        Changes { identities: vec![other.clone()], private_identity: Some(replacement.clone()), ..Default::default() };
    store.save_changes(changes).await.unwrap();
    let check = |store: F::Store| {
        let (other, replacement) = (other.clone(), replacement.clone());
        async move {
            assert_eq!(store.get_user_identity(other.user_id()).await.unwrap(), Some(other.clone()));
            assert_eq!(store.get_user_identity(&owned_user_id!("@nobody:example.org")).await.unwrap(), None);
            let loaded = store.load_private_identity().await.unwrap().expect("private keys");
            assert_eq!(loaded.export(), replacement.export());
            assert!(loaded.status().is_complete());
        }
    };
    check(store).await;
    if let Some(store) = factory.reopen() {
        check(store).await;
    }
}

fn key_ref(n: usize) -> RoomKeyRef {
    RoomKeyRef { room_id: room(n % 3), session_id: format!("session{n}") }
}

fn secret(name: &str, value: Option<&str>) -> StoredSecret {
    StoredSecret { name: name.to_owned(), value: value.map(|v| zeroize::Zeroizing::new(v.to_owned())) }
}

/// The backup queue keeps what was added until it is removed or cleared,
/// in the order one batch gives (clear, then remove, then add); secrets
/// read back as saved, a later value replaces one, `None` deletes it.
pub async fn backup_queue_and_secrets<F: StoreFactory>(factory: &mut F) {
    let store = factory.create();
    assert_eq!(store.backup_queue_len().await.unwrap(), 0);
    assert!(store.get_secret("m.megolm_backup.v1").await.unwrap().is_none());
    let added: Vec<RoomKeyRef> = (0..10).map(key_ref).collect();
    let changes = Changes {
        backup_queue: added.clone(),
        secrets: vec![secret("m.megolm_backup.v1", Some("first")), secret("m.cross_signing.master", Some("m"))],
        ..Default::default()
    };
    store.save_changes(changes).await.unwrap();
    // Remove three, add one again that is also removed in the same batch
    // (removals come first, so it stays), replace and delete secrets.
    let changes = Changes {
        backed_up: vec![key_ref(0), key_ref(1), key_ref(2)],
        backup_queue: vec![key_ref(2), key_ref(10)],
        secrets: vec![secret("m.megolm_backup.v1", Some("second")), secret("m.cross_signing.master", None)],
        ..Default::default()
    };
    store.save_changes(changes).await.unwrap();
    let expected: BTreeSet<RoomKeyRef> = (2..11).map(key_ref).collect();
    let check = |store: F::Store| {
        let expected = expected.clone();
        async move {
            assert_eq!(store.backup_queue_len().await.unwrap(), expected.len());
            let all: BTreeSet<RoomKeyRef> = store.get_backup_queue(100).await.unwrap().into_iter().collect();
            assert_eq!(all, expected);
            let page = store.get_backup_queue(4).await.unwrap();
            assert_eq!(page.len(), 4);
            assert!(page.iter().all(|k| expected.contains(k)));
            assert_eq!(
                store.get_secret("m.megolm_backup.v1").await.unwrap().as_deref().map(String::as_str),
                Some("second")
            );
            assert!(store.get_secret("m.cross_signing.master").await.unwrap().is_none());
            // A clear comes before the same batch's additions.
            let changes = Changes { clear_backup_queue: true, backup_queue: vec![key_ref(20)], ..Default::default() };
            store.save_changes(changes).await.unwrap();
            assert_eq!(store.get_backup_queue(100).await.unwrap(), vec![key_ref(20)]);
        }
    };
    check(store).await;
    if let Some(store) = factory.reopen() {
        assert_eq!(store.get_backup_queue(100).await.unwrap(), vec![key_ref(20)], "backup queue lost on reopen");
        // Put the queue as it was before the clear, and check it all again.
        let changes = Changes {
            clear_backup_queue: true,
            backup_queue: expected.iter().cloned().collect(),
            ..Default::default()
        };
        store.save_changes(changes).await.unwrap();
        check(store).await;
    }
}

/// The user and device every conformance store belongs to.
pub fn owner() -> (OwnedUserId, ruma_common::OwnedDeviceId) {
    (owned_user_id!("@owner:example.org"), owned_device_id!("OWNER"))
}

/// Declares a module `$name` with one `#[tokio::test]` per conformance
/// check, each on a fresh `$factory`: a failing check is reported by name
/// and does not hide the checks after it. Extra checks follow the factory,
/// e.g. [`a_failed_batch_leaves_nothing_visible`] for backends whose writes
/// can be made to fail ([`FaultyStoreFactory`]).
#[macro_export]
macro_rules! conformance_suite {
    ($(#[$attr:meta])* $name:ident, $factory:expr $(, $extra:ident)* $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_suite!(@checks [$(#[$attr])*] $factory;
                account_round_trip,
                olm_sessions_by_sender_key,
                devices_by_user,
                tracked_users,
                inbound_group_sessions_and_pages,
                outbound_withheld_indices_and_token,
                a_batch_is_applied_whole,
                an_empty_batch_changes_nothing,
                device_index_hashes_and_custom_values,
                room_key_share_records,
                identities_and_private_keys,
                backup_queue_and_secrets,
                store_lock_leases_and_fences
                $(, $extra)*
            );
        }
    };
    (@checks [$($attrs:tt)*] $factory:expr; $check:ident $(, $rest:ident)*) => {
        #[tokio::test]
        $($attrs)*
        async fn $check() {
            $crate::conformance::$check(&mut $factory).await;
        }
        $crate::conformance_suite!(@checks [$($attrs)*] $factory; $($rest),*);
    };
    (@checks [$($attrs:tt)*] $factory:expr;) => {};
}
