//! complement-crypto's scenarios (matrix-org/complement-crypto, `tests/`)
//! against a real Synapse, each test named after the original so the
//! mapping is plain. Every client talks to Synapse through a fault proxy
//! ([`hush_testing::proxy`]), which injects the faults a scenario names and
//! records what each client sent. Where hush is stricter than the original
//! expects, the test says so. Ignored by a plain `cargo test`; `cargo xtask
//! test` starts Synapse and runs them.

#![allow(non_snake_case)]

mod federation;
mod keys;
mod kills;
mod membership;
mod restarts;
mod room_keys;
mod shared_store;
mod to_device;

use std::time::Duration;

use hush_client::{RoomEvent, http::HttpClient};
use hush_testing::proxy::FaultProxy;
use hush_testing::synapse::{StoreKind, TestClient, homeserver_url};
use ruma_client_api::room::create_room::v3::{Request as CreateRoom, RoomPreset};
use ruma_common::{OwnedEventId, OwnedRoomId, serde::Raw};
use serde_json::{Value, json};

/// An engine clock the test moves forward: the wall clock plus the
/// returned offset, in milliseconds (0 at first).
pub(crate) fn movable_clock() -> (hush_client::Clock, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let offset = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let moved = offset.clone();
    let clock = hush_client::Clock::new(move || {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let wall = u64::try_from(wall).unwrap_or(u64::MAX);
        hush_crypto_core::Timestamp::from_millis(wall + moved.load(std::sync::atomic::Ordering::SeqCst))
    });
    (clock, offset)
}

/// A proxy in front of the test Synapse; every client of a test goes through it.
pub(crate) struct Net {
    pub(crate) proxy: FaultProxy,
}

impl Net {
    pub(crate) async fn start() -> Self {
        Self { proxy: FaultProxy::start(&homeserver_url()).await }
    }

    /// A new user with one device (redb store), through the proxy.
    pub(crate) async fn user(&self, prefix: &str, device: &str) -> TestClient {
        TestClient::new_user_via(prefix, device, StoreKind::Redb, &self.proxy.url()).await
    }

    /// Another device of `of`'s user, with a store of its own.
    pub(crate) async fn device(&self, of: &TestClient, device: &str) -> TestClient {
        let (name, password) = of.credentials.clone();
        let dir = std::sync::Arc::new(tempfile::TempDir::new().unwrap());
        TestClient::login_via(&name, &password, device, StoreKind::Redb, dir, &self.proxy.url()).await
    }

    /// The encrypted to-device messages `from` sent since the `since`th
    /// one: (user, device) of each recipient.
    pub(crate) fn encrypted_to_device(&self, from: &TestClient, since: usize) -> Vec<(String, String)> {
        let sent = self.proxy.seen(Some("PUT"), "/sendToDevice/m.room.encrypted/");
        let mine = sent.into_iter().filter(|s| s.token.as_deref() == Some(from.session.access_token.as_str()));
        let mut recipients = Vec::new();
        for request in mine.skip(since) {
            let Some(Value::Object(users)) = request.body.map(|b| b["messages"].clone()) else { continue };
            for (user, devices) in users {
                for device in devices.as_object().into_iter().flat_map(|d| d.keys()) {
                    recipients.push((user.clone(), device.clone()));
                }
            }
        }
        recipients
    }

    /// How many encrypted to-device requests `from` has sent.
    pub(crate) fn encrypted_to_device_requests(&self, from: &TestClient) -> usize {
        let sent = self.proxy.seen(Some("PUT"), "/sendToDevice/m.room.encrypted/");
        sent.iter().filter(|s| s.token.as_deref() == Some(from.session.access_token.as_str())).count()
    }
}

/// The HTTP client a test uses for raw API calls as `client`'s user.
pub(crate) fn api(client: &TestClient) -> HttpClient {
    HttpClient::new(&client.homeserver, Default::default()).unwrap()
}

/// Creates a room with complement-crypto's presets: `private_chat` or
/// `trusted_private_chat` (history shared, invite only), `public_chat`
/// (history shared, anyone may join); encrypted, with `rotation` fields
/// (e.g. `{"rotation_period_msgs": 5}`) added to `m.room.encryption`.
pub(crate) async fn create_room(
    by: &TestClient,
    preset: RoomPreset,
    rotation: Value,
    invite: &[&TestClient],
) -> OwnedRoomId {
    let mut content = json!({ "algorithm": "m.megolm.v1.aes-sha2" });
    if let (Some(content), Value::Object(extra)) = (content.as_object_mut(), rotation) {
        content.extend(extra);
    }
    let mut request = CreateRoom::new();
    request.preset = Some(preset);
    request.invite = invite.iter().map(|c| c.session.user_id.clone()).collect();
    let event = json!({ "type": "m.room.encryption", "state_key": "", "content": content });
    request.initial_state = vec![Raw::new(&event).unwrap().cast_unchecked()];
    let response = api(by).send(request, Some(&by.session.access_token), Duration::ZERO).await.expect("create room");
    let room = response.room_id;
    by.sync_until("the new room", |c| c.client.get_room(&room).is_some_and(|r| r.is_encrypted())).await;
    room
}

/// Invites `who` as `by` through the API.
pub(crate) async fn invite(by: &TestClient, room: &OwnedRoomId, who: &TestClient) {
    use ruma_client_api::membership::invite_user::v3::{InvitationRecipient, InviteUserId, Request};
    let recipient = InvitationRecipient::UserId(InviteUserId::new(who.session.user_id.clone()));
    let request = Request::new(room.clone(), recipient);
    api(by).send(request, Some(&by.session.access_token), Duration::ZERO).await.expect("invite");
}

/// Claims one of `device`'s one-time keys as `by` (the server then holds
/// one fewer), returning it if there was one.
pub(crate) async fn claim_key_of(
    by: &TestClient,
    user: &ruma_common::UserId,
    device: &ruma_common::DeviceId,
) -> Option<Value> {
    use ruma_client_api::keys::claim_keys::v3::Request;
    let devices =
        std::collections::BTreeMap::from([(device.to_owned(), ruma_common::OneTimeKeyAlgorithm::SignedCurve25519)]);
    let request = Request::new(std::collections::BTreeMap::from([(user.to_owned(), devices)]));
    let response = api(by).send(request, Some(&by.session.access_token), Duration::ZERO).await.expect("claim");
    let keys = response.one_time_keys.get(user)?.get(device)?;
    keys.values().next().map(|raw| serde_json::from_str(raw.json().get()).expect("key json"))
}

/// Logs the device out on the server (its keys and to-device queue go).
pub(crate) async fn logout(client: &TestClient) {
    let request = ruma_client_api::session::logout::v3::Request::new();
    api(client).send(request, Some(&client.session.access_token), Duration::ZERO).await.expect("logout");
}

/// Sends a text as `by` and returns the event id.
pub(crate) async fn send(by: &TestClient, room: &OwnedRoomId, text: &str) -> OwnedEventId {
    by.client.get_room(room).expect("a known room").send_text(text).await.expect("send").event_id
}

/// The event `id` as `client` received it (by sync or history).
/// A decrypted copy is preferred: an event delivered undecryptable and later
/// decrypted (its key arrived late) is received twice.
pub(crate) fn received(client: &TestClient, room: &OwnedRoomId, id: &OwnedEventId) -> Option<RoomEvent> {
    let events = client.events.lock().unwrap();
    let mut copies = events.iter().filter(|e| &e.room_id == room && e.event["event_id"].as_str() == Some(id.as_str()));
    let copies: Vec<&RoomEvent> = copies.by_ref().collect();
    copies.iter().find(|e| e.encryption.is_some()).or(copies.first()).map(|e| (*e).clone())
}

/// Syncs (and reads history) until `client` has the event `id`, and returns it.
pub(crate) async fn wait_for(client: &TestClient, room: &OwnedRoomId, id: &OwnedEventId) -> RoomEvent {
    client.sync_with_history_until(room, &format!("event {id}"), |c| received(c, room, id).is_some()).await;
    received(client, room, id).expect("received")
}

/// Syncs until `client` has decrypted the event `id` with body `text`, and
/// returns the Megolm session it used.
pub(crate) async fn decrypts(client: &TestClient, room: &OwnedRoomId, id: &OwnedEventId, text: &str) -> String {
    if let Some(event) = received(client, room, id).filter(|e| e.encryption.is_none()) {
        eprintln!("{}: {id} not decrypted yet: {:?}", client.session.device_id, event.unable_to_decrypt);
    }
    client
        .sync_with_history_until(room, &format!("{text:?} decrypted"), |c| {
            received(c, room, id).is_some_and(|e| e.text_body() == Some(text))
        })
        .await;
    let event = received(client, room, id).expect("received");
    event.encryption.expect("decrypted").session_id
}

/// Every copy of the event `id` `client` has, for a failure's message.
#[allow(dead_code)]
pub(crate) fn copies(client: &TestClient, room: &OwnedRoomId, id: &OwnedEventId) -> String {
    let events = client.events.lock().unwrap();
    let copies = events.iter().filter(|e| &e.room_id == room && e.event["event_id"].as_str() == Some(id.as_str()));
    copies
        .map(|e| format!("{:?}/{:?}/late {}", e.text_body(), e.unable_to_decrypt, e.late_decryption))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Asserts that `client` sees the event `id` and cannot decrypt it for
/// want of the room key.
pub(crate) async fn is_utd_for_missing_key(client: &TestClient, room: &OwnedRoomId, id: &OwnedEventId) {
    let event = wait_for(client, room, id).await;
    assert!(event.encryption.is_none() && event.text_body().is_none(), "{} decrypted {id}", client.session.device_id);
    assert!(
        matches!(event.unable_to_decrypt, Some(hush_crypto_core::MegolmError::MissingRoomKey { .. })),
        "{id}: {:?}",
        event.unable_to_decrypt
    );
}

/// Waits until `client`'s view of the room has exactly `n` key recipients.
pub(crate) async fn until_recipients(client: &TestClient, room: &OwnedRoomId, n: usize) {
    client
        .sync_until(&format!("{n} key recipients"), |c| {
            c.client.get_room(room).is_some_and(|r| r.key_recipients().len() == n)
        })
        .await;
}

/// Syncs `observer` until it knows (or, with `present` false, no longer
/// lists) `device` of `of`'s user: what a client syncing in the background
/// would have done by then.
pub(crate) async fn until_device_known(observer: &TestClient, of: &TestClient, device: &str, present: bool) {
    for _ in 0..100 {
        observer.sync().await;
        let devices = observer.client.encryption().get_user_devices(&of.session.user_id).await.unwrap();
        if devices.iter().any(|d| d.data().device_id() == device) == present {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{} never saw {device} of {} {}",
        observer.session.device_id,
        of.session.user_id,
        if present { "appear" } else { "go" }
    );
}
