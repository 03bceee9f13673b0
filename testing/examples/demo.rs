//! The hush demo: two users set up their cross-signing identities as
//! today's Matrix expects, talk in an encrypted room on a local Synapse,
//! check that each talks to the person they expect (SAS: the same seven
//! emoji on both sides), and then: one restarts from its store, a second
//! device recovers with the recovery key and is trusted with no new
//! verification, a device its owner never cross-signed gets no room key,
//! and keys are exported and imported on a new device. At each step it
//! prints what the server holds and what each client reads. Run it with
//! `cargo xtask demo` (which starts Synapse).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hush_client::hush_crypto_core::verification::{RequestState, SasEmoji};
use hush_client::{Client, IdentityOutcome, IdentitySetup, RoomEvent, Session, StoreConfig, SyncSettings};
use hush_testing::synapse::{homeserver_url, register, unique_name};
use ruma_client_api::room::get_room_event;
use ruma_common::{EventId, OwnedRoomId, RoomId};

type Inbox = Arc<Mutex<Vec<RoomEvent>>>;

struct Person {
    name: &'static str,
    client: Client,
    session: Session,
    inbox: Inbox,
}

fn client_with_store(path: std::path::PathBuf) -> Client {
    Client::builder()
        .homeserver_url(homeserver_url())
        .store_config(StoreConfig::Redb { path, passphrase: Some("demo store passphrase".into()) })
        // Spec v1.18's recommended behaviour (the default, said out loud):
        // room keys only for devices their owner cross-signed.
        .trust_settings(hush_client::TrustSettings::recommended())
        .build()
        .expect("build the client")
}

fn listen(client: &Client) -> Inbox {
    let inbox: Inbox = Arc::default();
    let sink = inbox.clone();
    client.add_event_handler(move |event| {
        let sink = sink.clone();
        async move { sink.lock().expect("inbox").push(event) }
    });
    inbox
}

impl Person {
    async fn sync(&self) {
        self.client.sync_once(SyncSettings::default().timeout(Duration::from_millis(300))).await.expect("sync");
    }

    async fn sync_until(&self, done: impl Fn(&Self) -> bool) {
        for _ in 0..100 {
            self.sync().await;
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} waited too long", self.name);
    }

    fn reads(&self, room: &OwnedRoomId) -> Vec<String> {
        let inbox = self.inbox.lock().expect("inbox");
        inbox
            .iter()
            .filter(|e| &e.room_id == room && e.encryption.is_some())
            .filter_map(|e| e.text_body().map(ToOwned::to_owned))
            .collect()
    }

    fn show_reads(&self, room: &OwnedRoomId) {
        for text in self.reads(room) {
            println!("    {} reads: {text:?}", self.name);
        }
    }
}

async fn show_server_copy(who: &Person, room: &RoomId, event_id: &EventId) {
    let request = get_room_event::v3::Request::new(room.to_owned(), event_id.to_owned());
    let http = hush_client::http::HttpClient::new(&homeserver_url(), Default::default()).expect("http");
    let response = http.send(request, Some(&who.session.access_token), Duration::ZERO).await.expect("fetch event");
    let event: serde_json::Value = response.event.deserialize_as_unchecked().expect("json");
    let ciphertext = event["content"]["ciphertext"].as_str().unwrap_or("");
    println!(
        "    the server holds: type {} / algorithm {} / ciphertext {}…",
        event["type"].as_str().unwrap_or("?"),
        event["content"]["algorithm"].as_str().unwrap_or("?"),
        &ciphertext[..ciphertext.len().min(48)]
    );
}

/// Logs `user` in on `device` with a store at `path`.
async fn log_in(name: &'static str, user: &str, device: &str, path: std::path::PathBuf) -> Person {
    let client = client_with_store(path);
    let inbox = listen(&client);
    let session = client
        .matrix_auth()
        .login_username(user, "demo password")
        .device_id(device)
        .initial_device_display_name(device)
        .send()
        .await
        .expect("login");
    Person { name, client, session, inbox }
}

/// Syncs both until `done` holds.
async fn both_until(a: &Person, b: &Person, done: impl Fn() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        a.sync().await;
        b.sync().await;
    }
    panic!("{} and {} waited too long", a.name, b.name);
}

/// Whether `who` counts `whose` device `device` as verified (`Device::is_verified`).
async fn is_verified(who: &Person, whose: &Person, device: &str) -> bool {
    let encryption = who.client.encryption();
    encryption.refresh_user_keys(&[&whose.session.user_id]).await.expect("keys");
    let found = encryption.get_device(&whose.session.user_id, device.into()).await.expect("device");
    found.expect("a known device").is_verified()
}

fn show_emoji(who: &Person, emoji: &[SasEmoji; 7]) -> String {
    let line: Vec<String> = emoji.iter().map(|e| format!("{} {}", e.emoji, e.description)).collect();
    println!("    {:<6} sees: {}", who.name, line.join("  "));
    line.join("  ")
}

/// Alice asks Bob to verify; he accepts; they compare the emoji; both confirm.
async fn verify_by_sas(alice: &Person, bob: &Person) {
    let request = alice.client.encryption().request_verification(&bob.session.user_id).await.expect("request");
    let flow = request.flow().clone();
    let alice_id = alice.session.user_id.clone();
    both_until(alice, bob, || bob.client.encryption().get_verification_request(&alice_id, &flow).is_some()).await;
    let bob_request = bob.client.encryption().get_verification_request(&alice_id, &flow).expect("bob's request");
    bob_request.accept().await.expect("bob accepts");
    both_until(alice, bob, || matches!(request.state().map(|s| s.request), Some(RequestState::Ready { .. }))).await;
    let alice_sas = request.start_sas().await.expect("start SAS");
    let bob_sas = bob_request.sas();
    both_until(alice, bob, || alice_sas.emoji().is_some() && bob_sas.emoji().is_some()).await;
    let on_alice = show_emoji(alice, &alice_sas.emoji().expect("emoji"));
    let on_bob = show_emoji(bob, &bob_sas.emoji().expect("emoji"));
    assert_eq!(on_alice, on_bob, "the emoji differ: not the person we expect");
    println!("    the same seven emoji on both screens: both confirm");
    alice_sas.confirm().await.expect("alice confirms");
    bob_sas.confirm().await.expect("bob confirms");
    both_until(alice, bob, || alice_sas.is_done() && bob_sas.is_done()).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    println!("hush demo against {}\n", homeserver_url());

    println!("1. Alice and Bob register and log in, each with an encrypted redb store,");
    println!("   and set up cross-signing without any prompt (Encryption::ensure_identity)");
    let mut people = Vec::new();
    let mut bob_recovery_key = String::new();
    for (name, device) in [("alice", "ALICEPHONE"), ("bob", "BOBLAPTOP")] {
        let user = unique_name(name);
        register(&user, "demo password").await.expect("register");
        let person = log_in(name, &user, device, dir.path().join(format!("{name}.redb"))).await;
        let setup = IdentitySetup::new().password("demo password");
        let IdentityOutcome::Created { recovery_key, backup } =
            person.client.encryption().ensure_identity(setup).await.expect("identity")
        else {
            panic!("a fresh account gets an identity")
        };
        println!(
            "    {} is {} on device {}: identity created, device cross-signed, key backup {}, recovery key {}…",
            name,
            person.session.user_id,
            person.session.device_id,
            if backup { "on" } else { "off" },
            &recovery_key[..9]
        );
        person.client.encryption().recovery_key_saved().await.expect("recovery key saved");
        if name == "bob" {
            bob_recovery_key = recovery_key.to_string();
        }
        people.push(person);
    }
    let bob = people.pop().expect("bob");
    let alice = people.pop().expect("alice");

    println!("\n2. Alice creates an encrypted room and invites Bob; Bob joins");
    let room = alice.client.create_room("hush demo", true, &[&bob.session.user_id]).await.expect("create room");
    bob.sync_until(|b| b.client.get_room(&room).is_some()).await;
    bob.client.join_room(&room).await.expect("join");
    alice.sync_until(|a| a.client.get_room(&room).is_some_and(|r| r.key_recipients().len() == 2)).await;
    bob.sync().await;
    println!("    room {room}: encrypted = {}", alice.client.get_room(&room).is_some_and(|r| r.is_encrypted()));

    println!("\n3. Alice says hello");
    let alice_room = alice.client.get_room(&room).expect("room");
    let event_id = alice_room.send_text("Hello Bob, this is end-to-end encrypted.").await.expect("send").event_id;
    show_server_copy(&alice, &room, &event_id).await;
    bob.sync_until(|b| !b.reads(&room).is_empty()).await;
    bob.show_reads(&room);

    println!("\n4. Bob answers");
    let event_id =
        bob.client.get_room(&room).expect("room").send_text("Hi Alice! Loud and clear.").await.expect("send").event_id;
    show_server_copy(&bob, &room, &event_id).await;
    alice.sync_until(|a| a.reads(&room).iter().any(|t| t.starts_with("Hi Alice"))).await;
    alice.show_reads(&room);

    println!("\n5. Is the other end the person each expects? They verify by comparing emoji (SAS)");
    let before = (is_verified(&alice, &bob, "BOBLAPTOP").await, is_verified(&bob, &alice, "ALICEPHONE").await);
    println!("    before: alice sees BOBLAPTOP verified = {}, bob sees ALICEPHONE verified = {}", before.0, before.1);
    assert_eq!(before, (false, false));
    verify_by_sas(&alice, &bob).await;
    let after = (is_verified(&alice, &bob, "BOBLAPTOP").await, is_verified(&bob, &alice, "ALICEPHONE").await);
    println!("    after:  alice sees BOBLAPTOP verified = {}, bob sees ALICEPHONE verified = {}", after.0, after.1);
    assert_eq!(after, (true, true));

    println!("\n6. Bob's app restarts: a new client restores the session from the store");
    let Person { session: bob_session, client: old_client, .. } = bob;
    drop(old_client);
    let client = client_with_store(dir.path().join("bob.redb"));
    let inbox = listen(&client);
    client.restore_session(bob_session.clone()).await.expect("restore");
    let bob = Person { name: "bob (restarted)", client, session: bob_session, inbox };
    alice_room.send_text("Welcome back, Bob.").await.expect("send");
    // The restarted client resumes from its stored sync token, so only the
    // new message arrives by sync; the earlier ones are read from the room's
    // history, decrypted with the keys kept in the store.
    bob.sync_until(|b| !b.reads(&room).is_empty()).await;
    let page = hush_client::MessagesOptions::backward().limit(20);
    let history = bob.client.get_room(&room).expect("room").messages(page).await.expect("history").chunk;
    for event in history.iter().rev().filter(|e| e.encryption.is_some()) {
        if let Some(text) = event.text_body() {
            println!("    {} reads from history: {text:?}", bob.name);
        }
    }
    assert!(history.iter().filter(|e| e.encryption.is_some()).count() >= 3, "the history did not decrypt");
    bob.show_reads(&room);

    println!("\n7. Bob logs in on a new phone and recovers with his recovery key");
    let bob_user = bob.session.user_id.to_string();
    let phone = log_in("bob (phone)", &bob_user, "BOBPHONE", dir.path().join("bob-phone.redb")).await;
    let setup = IdentitySetup::new().recovery_key(&bob_recovery_key);
    let outcome = phone.client.encryption().ensure_identity(setup).await.expect("recover");
    let IdentityOutcome::Recovered { restored_keys } = outcome else { panic!("the phone recovers: {outcome:?}") };
    println!("    BOBPHONE: identity recovered, cross-signed, {restored_keys} room keys restored from the backup");
    phone.sync_until(|p| !p.reads(&room).is_empty() || p.client.get_room(&room).is_some()).await;
    let page = hush_client::MessagesOptions::backward().limit(20);
    let history = phone.client.get_room(&room).expect("room").messages(page).await.expect("history").chunk;
    let old = history.iter().filter(|e| e.encryption.is_some()).count();
    println!("    BOBPHONE reads {old} messages sent before it existed, from the backup");
    let trusted = is_verified(&alice, &phone, "BOBPHONE").await;
    println!("    alice sees BOBPHONE verified = {trusted}, with no new verification (Bob's identity signed it)");
    assert!(trusted, "Alice trusts Bob's recovered device");

    println!("\n8. A device Bob never cross-signed (one the server could add) gets no room key");
    let unsigned = log_in("bob (unsigned)", &bob_user, "UNSIGNED", dir.path().join("bob-unsigned.redb")).await;
    unsigned.sync().await;
    alice.client.encryption().refresh_user_keys(&[&bob.session.user_id]).await.expect("keys");
    let event_id = alice_room.send_text("Only Bob's cross-signed devices can read this.").await.expect("send").event_id;
    unsigned
        .sync_until(|u| {
            u.inbox.lock().expect("inbox").iter().any(|e| e.event["event_id"].as_str() == Some(event_id.as_str()))
        })
        .await;
    let (read, why) = {
        let inbox = unsigned.inbox.lock().expect("inbox");
        let seen = inbox.iter().find(|e| e.event["event_id"].as_str() == Some(event_id.as_str())).expect("seen");
        (seen.encryption.is_some(), seen.unable_to_decrypt.as_ref().map(ToString::to_string).unwrap_or_default())
    };
    println!("    UNSIGNED cannot read it: {why}");
    assert!(!read && why.contains("m.unverified"), "the unsigned device read it: {why}");
    phone.sync_until(|p| p.reads(&room).iter().any(|t| t.starts_with("Only Bob's"))).await;
    println!("    BOBPHONE (cross-signed) reads it");

    println!("\n9. Alice exports her room keys; a new device of hers imports them");
    let file = dir.path().join("alice-keys.txt");
    let count = alice.client.encryption().export_room_keys(&file, "export passphrase", |_| true).await.expect("export");
    let text = std::fs::read_to_string(&file).expect("read the export");
    println!("    exported {count} room keys; the file starts: {}", text.lines().next().unwrap_or(""));
    let alice_user = alice.session.user_id.to_string();
    let laptop = log_in("alice (laptop)", &alice_user, "ALICELAPTOP", dir.path().join("alice-laptop.redb")).await;
    let result =
        laptop.client.encryption().import_room_keys(&file, "export passphrase", |_, _| {}).await.expect("import");
    println!("    imported {} of {} keys on {}", result.imported_count, result.total_count, laptop.session.device_id);
    laptop.sync_until(|l| l.reads(&room).len() >= 3).await;
    laptop.show_reads(&room);

    println!("\nDone: the server only ever held ciphertext; every client read the messages.");
}
