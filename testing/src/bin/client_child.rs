//! Child process of the kill tests: a client in a process of its own, to be
//! SIGKILLed. It prints where it is on stdout, one line per step, so the
//! test can tell where the kill landed. The homeserver is
//! `HUSH_HOMESERVER_URL` (a fault proxy, for most kill tests).
//!
//! * `client-child <redb|sled> <store-path> <session-json>`: restores the
//!   session from its store and syncs in a loop (`synced` after each sync).
//! * `client-child login <redb|sled> <store-path> <user> <password> <device>`:
//!   prints `logging in`, logs in (which uploads the device's keys), prints
//!   `logged in`, then syncs in a loop as above.
//! * `client-child stress <store-path> <session-json> <room> <site>`: the
//!   stress test's device (redb store). Prints `opened` once the store is
//!   open and the session restored, then loops: sync (`synced`), send a text
//!   (`sent <event id>`), and report each text it decrypted (`text <body>`).
//! * `client-child shared <store> <holder> <lease-ms> <session-json> <room> <rounds>`:
//!   one of several processes sharing the device's store through the store
//!   lock, as `holder`; `<store>` is `postgres` (the test cluster) or
//!   `redb:<path>`. Prints `opened`,
//!   then each round `round <n>`, syncs, sends a text (`sent <event id>`),
//!   reports each text it decrypted (`text <body>`) and each event it could
//!   not (`utd <event id>`); `done` after `rounds` rounds (0: forever).
//!   With site `write:K`, the first write after `opened` stalls after K ops
//!   (the backend prints `stalled inside a write ...`); with
//!   `write-late:K`, the first write of the second round (after its first
//!   send).

use std::time::Duration;

use hush_client::{Client, Session, StoreConfig, SyncSettings};

fn store(kind: &str, path: &str) -> StoreConfig {
    let passphrase = Some("store secret".to_owned());
    match kind {
        "sled" => StoreConfig::Sled { path: path.into(), passphrase },
        // The store is the device's own in the test cluster's database.
        "postgres" => StoreConfig::Postgres {
            database: hush_client::PostgresDatabase::Url(hush_testing::stores::postgres_url()),
            passphrase,
        },
        _ => StoreConfig::Redb { path: path.into(), passphrase },
    }
}

fn client(kind: &str, path: &str) -> Client {
    Client::builder()
        .trust_settings(hush_client::TrustSettings::legacy())
        .homeserver_url(hush_testing::synapse::homeserver_url())
        .store_config(store(kind, path))
        .build()
        .expect("client")
}

async fn sync_forever(client: &Client) -> ! {
    loop {
        client.sync_once(SyncSettings::default().timeout(Duration::from_millis(100))).await.expect("sync");
        println!("synced");
    }
}

/// The stress loop: see the module doc.
async fn stress(path: &str, session: &str, room: &str, site: &str) -> ! {
    let session: Session = serde_json::from_str(session).expect("session json");
    eprintln!("opening the store");
    let options = hush_store_redb::StoreOptions::passphrase("store secret");
    let store =
        std::sync::Arc::new(hush_store_redb::open(path, &session.user_id, &session.device_id, options).expect("open"));
    let client = Client::builder()
        .trust_settings(hush_client::TrustSettings::legacy())
        .homeserver_url(hush_testing::synapse::homeserver_url())
        .store_config(StoreConfig::Custom(store.clone()))
        .build()
        .expect("client");
    client.add_event_handler(|event: hush_client::RoomEvent| async move {
        if let Some(body) = event.text_body() {
            println!("text {body}");
        }
    });
    eprintln!("restoring the session");
    client.restore_session(session).await.expect("restore");
    eprintln!("restored");
    println!("opened");
    let room: ruma_common::OwnedRoomId = room.try_into().expect("room id");
    // `write:K` stalls the first write after K ops (at its end if it has
    // fewer); `write-late:K` the first write of the second round.
    let stall = site.split_once(':').and_then(|(when, ops)| Some((when == "write-late", ops.parse::<usize>().ok()?)));
    for n in 0u64.. {
        if let Some((late, ops)) = stall
            && n == u64::from(late)
        {
            store.backend().stall_next_write_after(ops);
        }
        client.sync_once(SyncSettings::default().timeout(Duration::from_millis(100))).await.expect("sync");
        println!("synced");
        if let Some(handle) = client.get_room(&room) {
            let id =
                handle.send_text(&format!("from the child {}-{n}", std::process::id())).await.expect("send").event_id;
            println!("sent {id}");
        }
    }
    unreachable!("the loop ends by SIGKILL")
}

/// The shared-store loop: see the module doc.
async fn shared(store_arg: &str, holder: &str, lease_ms: &str, session: &str, room: &str, rounds: &str) {
    let session: Session = serde_json::from_str(session).expect("session json");
    let lease = Duration::from_millis(lease_ms.parse().expect("lease in ms"));
    let rounds: u64 = rounds.parse().expect("rounds");
    let client = Client::builder()
        .trust_settings(hush_client::TrustSettings::legacy())
        .homeserver_url(hush_testing::synapse::homeserver_url())
        .store_config(match store_arg.strip_prefix("redb:") {
            Some(path) => store("redb", path),
            None => store("postgres", ""),
        })
        .store_lock(holder, lease)
        .build()
        .expect("client");
    client.add_event_handler(|event: hush_client::RoomEvent| async move {
        match event.text_body() {
            Some(body) => println!("text {body}"),
            None if event.unable_to_decrypt.is_some() => {
                println!("utd {}", event.event["event_id"].as_str().unwrap_or_default());
            }
            None => {}
        }
    });
    client.restore_session(session).await.expect("restore");
    println!("opened");
    let room: ruma_common::OwnedRoomId = room.try_into().expect("room id");
    for n in 0u64.. {
        if rounds > 0 && n == rounds {
            break;
        }
        println!("round {n}");
        client.sync_once(SyncSettings::default().timeout(Duration::from_millis(300))).await.expect("sync");
        if let Some(handle) = client.get_room(&room) {
            let id = handle.send_text(&format!("{holder} {n}")).await.expect("send").event_id;
            println!("sent {id}");
        }
    }
    println!("done");
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.as_slice() {
        [_, mode, path, session, room, site] if mode == "stress" => stress(path, session, room, site).await,
        [_, mode, store, holder, lease, session, room, rounds] if mode == "shared" => {
            shared(store, holder, lease, session, room, rounds).await;
        }
        [_, login, kind, path, user, password, device] if login == "login" => {
            let client = client(kind, path);
            println!("logging in");
            client.matrix_auth().login_username(user, password).device_id(device).send().await.expect("login");
            println!("logged in");
            sync_forever(&client).await
        }
        [_, kind, path, session] => {
            let session: Session = serde_json::from_str(session).expect("session json");
            let client = client(kind, path);
            client.restore_session(session).await.expect("restore");
            sync_forever(&client).await
        }
        _ => {
            eprintln!("usage: client-child <redb|sled> <store-path> <session-json>");
            eprintln!("       client-child login <redb|sled> <store-path> <user> <password> <device>");
            eprintln!("       client-child stress <store-path> <session-json> <room> <site>");
            eprintln!(
                "       client-child shared <postgres|redb:<path>> <holder> <lease-ms> <session-json> <room> <rounds>"
            );
            std::process::exit(2);
        }
    }
}
