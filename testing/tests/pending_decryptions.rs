//! The engine's pending-decryption registry (`utd::pending`), driven as an
//! embedder of hush-crypto-core drives it: a failed decryption is kept and
//! saved with the decryption's own batch, a restarted engine still lists
//! it, its late decryption is flagged, and the engine decides which keys
//! to ask our own devices for.

use std::{collections::BTreeSet, sync::Arc};

use hush_crypto_core::{CryptoStore, EncryptionSettings, MegolmError, MemoryStore};
use hush_testing::{TestDevice, TestServer, VirtualClock};
use ruma_common::{RoomId, room_id, serde::Raw, user_id};
use serde_json::Value;

fn room() -> &'static RoomId {
    room_id!("!pending:e.org")
}

/// Bob reads Alice's message before its key reached him; his engine is
/// closed and opened again on the same store (a restart); the event is
/// still listed as waiting, and once the key arrives it decrypts as a late
/// decryption and waits no more, also after the next restart.
#[tokio::test]
async fn an_undecryptable_event_waits_across_a_restart_and_decrypts_late() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice = TestDevice::new(&server, &clock, user_id!("@alice:e.org"), "ALICE").await;
    let bob_store: Arc<dyn CryptoStore> = Arc::new(MemoryStore::new());
    let bob_id = user_id!("@bob:e.org");
    let bob = TestDevice::with_store(&server, &clock, bob_id, "BOB", bob_store.clone()).await;
    alice.share_room_key(room(), &[bob_id], &EncryptionSettings::default()).await;
    let event = alice.encrypt_text(room(), "read before its key").await;
    let session_id = event["content"]["session_id"].as_str().unwrap().to_owned();

    let error = bob.decrypt_text(room(), &event).await.unwrap_err();
    assert!(matches!(error, MegolmError::MissingRoomKey { .. }), "{error}");
    assert_eq!(bob.machine.pending_decryption_count(), 1);
    drop(bob);

    let mut bob = TestDevice::with_store(&server, &clock, bob_id, "BOB", bob_store.clone()).await;
    let waiting = bob.machine.pending_events();
    assert_eq!(waiting.len(), 1, "saved with the failed decryption's batch");
    assert_eq!((waiting[0].session_id.as_str(), waiting[0].room_id.as_ref()), (session_id.as_str(), room()));
    assert!(bob.machine.pending_events_for_sessions(&BTreeSet::from(["other".to_owned()])).is_empty());

    bob.sync().await; // the room key arrives
    let retry = bob.machine.pending_events_for_sessions(&BTreeSet::from([session_id.clone()]));
    assert_eq!(retry.len(), 1);
    let raw: Raw<Value> = retry[0].event.clone();
    let decrypted = bob.machine.decrypt_room_event(&raw, room(), &Default::default()).await.expect("late decryption");
    assert!(decrypted.was_waiting, "flagged as a late decryption");
    assert_eq!(bob.machine.pending_decryption_count(), 0);
    let again = bob.machine.decrypt_room_event(&raw, room(), &Default::default()).await.expect("decrypts again");
    assert!(!again.was_waiting, "late once");
    drop(bob);

    let bob = TestDevice::with_store(&server, &clock, bob_id, "BOB", bob_store).await;
    assert_eq!(bob.machine.pending_decryption_count(), 0, "the healing was saved too");
}

/// The engine asks our other devices for a waiting event's key only when
/// we have another device, once while the request is open.
#[tokio::test]
async fn a_missing_key_is_asked_of_our_other_devices_once() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice = TestDevice::new(&server, &clock, user_id!("@alice:e.org"), "ALICE").await;
    let bob_id = user_id!("@bob:e.org");
    let bob = TestDevice::new(&server, &clock, bob_id, "BOB").await;
    alice.share_room_key(room(), &[bob_id], &EncryptionSettings::default()).await;
    let event = alice.encrypt_text(room(), "asked for").await;
    bob.decrypt_text(room(), &event).await.unwrap_err();
    bob.refresh_keys(&[bob_id]).await;
    assert_eq!(bob.machine.request_missing_room_keys().await.unwrap(), 0, "no other device to ask");

    let _laptop = TestDevice::new(&server, &clock, bob_id, "BOBLAPTOP").await;
    bob.refresh_keys(&[bob_id]).await;
    assert_eq!(bob.machine.request_missing_room_keys().await.unwrap(), 1);
    assert_eq!(bob.machine.request_missing_room_keys().await.unwrap(), 0, "the request is open");
    let open = bob.machine.open_gossip_requests();
    assert_eq!(open.len(), 1, "{open:?}");
}
