//! Stateful targets: an engine (Alice's `OlmMachine` on a memory store)
//! fed to-device events, Olm plaintexts, room events and key-server
//! answers. Bob is a bare vodozemac device with an Olm session to Alice and
//! a Megolm session whose key Alice holds, so the fuzzer's bytes can be
//! encrypted for real and reach the checks behind decryption.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use futures_executor::block_on;
use hush_crypto_core::{
    AnyOutgoingRequest, DecryptionSettings, Membership, RoomEncryption, RoomInfo, SyncChanges, SyncOutput,
    ToDeviceOutcome, backup::BackupInfo,
};
use ruma_client_api::keys::{claim_keys, get_keys};
use ruma_common::{
    OwnedRoomId, OwnedUserId,
    api::{IncomingResponse, IncomingResponseExt},
    serde::Raw,
};
use serde_json::{Value, json};
use vodozemac::megolm::{GroupSession, SessionConfig};

use crate::{RogueDevice, TestDevice, TestServer, VirtualClock};

/// The room of Bob's Megolm session.
pub(super) fn room() -> OwnedRoomId {
    "!fuzz:example.org".try_into().expect("room id")
}

pub(super) fn alice_id() -> OwnedUserId {
    "@alice:example.org".try_into().expect("user id")
}

pub(super) fn bob_id() -> OwnedUserId {
    "@bob:example.org".try_into().expect("user id")
}

/// One fuzzing thread's engines.
pub(super) struct Engines {
    inputs: u32,
    pub(super) clock: VirtualClock,
    pub(super) server: Arc<TestServer>,
    pub(super) alice: TestDevice,
    /// Bob: a bare device with an Olm session to Alice.
    pub(super) bob: RogueDevice,
    /// Bob's Megolm session; Alice holds its key.
    pub(super) group: GroupSession,
    /// Carol: a real engine Alice knows, with no Olm session (claims go to her).
    pub(super) carol: TestDevice,
}

impl Engines {
    pub(super) async fn new() -> Self {
        let server = Arc::new(TestServer::new());
        let clock = VirtualClock::default();
        let alice = TestDevice::new(&server, &clock, &alice_id(), "ALICE1").await;
        alice.drain().await;
        let carol_id: OwnedUserId = "@carol:example.org".try_into().expect("user id");
        let carol = TestDevice::new(&server, &clock, &carol_id, "CAROL1").await;
        carol.drain().await;
        let mut bob = RogueDevice::register_with_keys(&server, &bob_id(), "BOB1", 5, true);
        bob.open_session(&server, &alice.user_id, &alice.device_id);
        let group = GroupSession::new(SessionConfig::version_1());
        let room_key = json!({
            "algorithm": "m.megolm.v1.aes-sha2",
            "room_id": room(),
            "session_id": group.session_id(),
            "session_key": group.session_key().to_base64(),
        });
        let engines = Self { inputs: 0, clock, server, alice, bob, group, carol };
        let alice_ed25519 = engines.alice.machine.identity_keys().0;
        let mut engines = engines;
        let plaintext = engines.bob.valid_plaintext(&alice_id(), &alice_ed25519, "m.room_key", room_key);
        let event = engines.bob.encrypt_raw(&engines.alice.machine.identity_keys().1, &plaintext);
        engines.receive(vec![event]).await;
        engines.alice.refresh_keys(&[&engines.carol.user_id]).await;
        engines
    }

    /// Feeds to-device events to Alice as one sync; her outcomes, if the
    /// sync was processed.
    pub(super) async fn receive(&mut self, events: Vec<Value>) -> Option<SyncOutput> {
        let events = events.into_iter().filter_map(|e| Raw::new(&e).ok().map(Raw::cast_unchecked)).collect();
        let changes = SyncChanges { to_device_events: events, ..Default::default() };
        self.alice.machine.receive_sync_changes(changes, self.clock.now()).await.ok()
    }
}

thread_local! {
    static ENGINES: RefCell<Option<Engines>> = const { RefCell::new(None) };
}

/// Runs `body` on this thread's engines, building them first (and again
/// every [`super::REBUILD_EVERY`] inputs, or when `body` asks by
/// returning `false`).
fn with_engines(body: impl AsyncFnOnce(&mut Engines) -> bool) {
    ENGINES.with(|cell| {
        let mut slot = cell.borrow_mut();
        let engines = match slot.as_mut() {
            Some(e) if e.inputs < super::REBUILD_EVERY => e,
            _ => slot.insert(block_on(Engines::new())),
        };
        engines.inputs += 1;
        if !block_on(body(engines)) {
            *slot = None;
        }
    });
}

/// A to-device event as the server delivers it (any type; plaintext
/// verification and key-request events, malformed `m.room.encrypted`).
pub(super) fn to_device(data: &[u8]) {
    let Some(event) = super::json(data) else { return };
    with_engines(async |engines| {
        engines.receive(vec![event]).await;
        true
    });
}

/// An Olm plaintext, encrypted for real by Bob for Alice: the checks on
/// sender, recipient, keys and content, and whatever the event carries.
pub(super) fn olm_plaintext(data: &[u8]) {
    with_engines(async |engines| {
        let alice_key = engines.alice.machine.identity_keys().1;
        let before = engines.bob.session_pickle(&alice_key);
        let event = engines.bob.encrypt_bytes(&alice_key, data);
        let output = engines.receive(vec![event]).await;
        // Alice's ratchet moves only when she accepts a message. Bob's must
        // stay in step: past Olm's largest bridgeable gap (2,000 messages)
        // every later input would fail to decrypt and never reach the checks.
        let accepted = output.is_some_and(|o| {
            matches!(
                o.to_device.first(),
                Some(ToDeviceOutcome::Decrypted { .. } | ToDeviceOutcome::PayloadRejected { .. })
            )
        });
        if !accepted && let Some(before) = before {
            engines.bob.restore_session(&alice_key, before);
        }
        true
    });
}

/// A room event: the first byte picks raw (the bytes are the event) or
/// encrypted (the bytes are a Megolm plaintext Bob encrypts for the room).
pub(super) fn megolm_event(data: &[u8]) {
    let Some((mode, bytes)) = data.split_first() else { return };
    with_engines(async |engines| {
        let event = if mode % 2 == 0 {
            let Some(event) = super::json(bytes) else { return true };
            event
        } else {
            let message = engines.group.encrypt(bytes);
            json!({
                "type": "m.room.encrypted",
                "sender": bob_id(),
                "event_id": format!("$fuzz{}", engines.inputs),
                "origin_server_ts": 1,
                "room_id": room(),
                "content": {
                    "algorithm": "m.megolm.v1.aes-sha2",
                    "sender_key": engines.bob.curve25519_key().to_base64(),
                    "device_id": "BOB1",
                    "session_id": engines.group.session_id(),
                    "ciphertext": message.to_base64(),
                },
            })
        };
        let Ok(raw) = Raw::<Value>::new(&event) else { return true };
        let _ = engines.alice.machine.decrypt_room_event(&raw, &room(), &DecryptionSettings::default()).await;
        true
    });
}

/// An HTTP 200 body, as ruma parses it.
fn response<R: IncomingResponse>(data: &[u8]) -> Option<R> {
    let http = hyper::http::Response::builder().status(200).body(data).ok()?;
    <R as IncomingResponseExt>::try_from_http_response(http).ok()
}

/// A `/keys/query` answer to Alice's query for Bob and Carol.
pub(super) fn keys_query(data: &[u8]) {
    let Some(answer) = response::<get_keys::v3::Response>(data) else { return };
    with_engines(async |engines| {
        let users = [bob_id(), engines.carol.user_id.clone()];
        let _ = engines.alice.machine.mark_users_outdated(users.iter().map(|u| u.as_ref())).await;
        let Ok(requests) = engines.alice.machine.outgoing_requests(engines.clock.now()).await else { return false };
        let Some(query) = requests.iter().find(|r| matches!(r.request(), AnyOutgoingRequest::KeysQuery(_))) else {
            return false;
        };
        let _ = engines.alice.machine.mark_request_as_sent(query.request_id(), &answer, engines.clock.now()).await;
        true
    });
}

/// A `/keys/claim` answer to Alice's claim for Carol's device (she has no
/// Olm session with her), made by sharing a room key with Carol.
pub(super) fn keys_claim(data: &[u8]) {
    let Some(answer) = response::<claim_keys::v3::Response>(data) else { return };
    with_engines(async |engines| {
        // Past any back-off from the previous failed claim.
        engines.clock.advance(Duration::from_secs(2 * 3600));
        let members = vec![(alice_id(), Membership::Join), (engines.carol.user_id.clone(), Membership::Join)];
        let encryption = RoomEncryption::from_content(&json!({"algorithm": "m.megolm.v1.aes-sha2"}));
        let info = RoomInfo::new("!claims:example.org".try_into().expect("room id"), members, encryption);
        let _ = engines.alice.machine.discard_room_key(&info.room_id).await;
        let _ = engines.alice.machine.prepare_room(&info, engines.clock.now()).await;
        let Ok(requests) = engines.alice.machine.outgoing_requests(engines.clock.now()).await else { return false };
        let Some(claim) = requests.iter().find(|r| matches!(r.request(), AnyOutgoingRequest::KeysClaim(_))) else {
            // A session exists now (the fuzzer found Carol's real key): start over.
            return false;
        };
        let _ = engines.alice.machine.mark_request_as_sent(claim.request_id(), &answer, engines.clock.now()).await;
        true
    });
}

/// A backup version's info, judged by Alice's engine.
pub(super) fn backup_info(info: &BackupInfo) {
    with_engines(async |engines| {
        let _ = engines.alice.machine.backup_trust(info).await;
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Thousands of refused plaintexts in a row (most fuzz inputs) must not
    /// put Bob's ratchet out of Alice's reach: a valid plaintext after them
    /// still decrypts and passes the checks, so later inputs reach them too.
    #[test]
    fn olm_plaintext_inputs_still_reach_the_checks_after_thousands_of_refusals() {
        for _ in 0..2_500 {
            olm_plaintext(b"not a plaintext");
        }
        ENGINES.with(|cell| {
            let mut slot = cell.borrow_mut();
            let engines = slot.as_mut().expect("the target built its engines");
            assert!(engines.inputs >= 2_500, "the engines were rebuilt during the run");
            block_on(async {
                let alice_key = engines.alice.machine.identity_keys().1;
                let alice_ed25519 = engines.alice.machine.identity_keys().0;
                let plaintext = engines.bob.valid_plaintext(&alice_id(), &alice_ed25519, "m.dummy", json!({}));
                let event = engines.bob.encrypt_raw(&alice_key, &plaintext);
                let output = engines.receive(vec![event]).await.expect("the sync is processed");
                assert!(
                    matches!(output.to_device.first(), Some(ToDeviceOutcome::Decrypted { .. })),
                    "a valid plaintext after 2,500 refusals was not decrypted: {:?}",
                    output.to_device
                );
            });
        });
    }
}
