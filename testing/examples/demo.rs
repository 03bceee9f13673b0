//! The hush demo: two users talk in an encrypted room on a local Synapse;
//! one restarts from its store; keys are exported and imported on a new
//! device. At each step it prints what the server holds and what each
//! client reads. Run it with `cargo xtask demo` (which starts Synapse).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hush_client::{Client, RoomEvent, Session, StoreConfig, SyncSettings};
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
        .trust_settings(hush_client::TrustSettings::legacy())
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    println!("hush demo against {}\n", homeserver_url());

    println!("1. Alice and Bob register and log in, each with an encrypted redb store");
    let mut people = Vec::new();
    for (name, device) in [("alice", "ALICEPHONE"), ("bob", "BOBLAPTOP")] {
        let user = unique_name(name);
        register(&user, "demo password").await.expect("register");
        let client = client_with_store(dir.path().join(format!("{name}.redb")));
        let inbox = listen(&client);
        let session = client
            .matrix_auth()
            .login_username(&user, "demo password")
            .device_id(device)
            .initial_device_display_name(device)
            .send()
            .await
            .expect("login");
        println!("    {} is {} on device {}", name, session.user_id, session.device_id);
        people.push(Person { name, client, session, inbox });
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

    println!("\n5. Bob's app restarts: a new client restores the session from the store");
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

    println!("\n6. Alice exports her room keys; a new device of hers imports them");
    let file = dir.path().join("alice-keys.txt");
    let count = alice.client.encryption().export_room_keys(&file, "export passphrase", |_| true).await.expect("export");
    let text = std::fs::read_to_string(&file).expect("read the export");
    println!("    exported {count} room keys; the file starts: {}", text.lines().next().unwrap_or(""));
    let laptop = client_with_store(dir.path().join("alice-laptop.redb"));
    let inbox = listen(&laptop);
    let session = laptop
        .matrix_auth()
        .login_username(alice.session.user_id.as_str(), "demo password")
        .device_id("ALICELAPTOP")
        .send()
        .await
        .expect("login");
    let result = laptop.encryption().import_room_keys(&file, "export passphrase", |_, _| {}).await.expect("import");
    println!("    imported {} of {} keys on {}", result.imported_count, result.total_count, session.device_id);
    let laptop = Person { name: "alice (laptop)", client: laptop, session, inbox };
    laptop.sync_until(|l| l.reads(&room).len() >= 3).await;
    laptop.show_reads(&room);

    println!("\nDone: the server only ever held ciphertext; every client read the messages.");
}
