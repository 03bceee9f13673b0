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

use std::time::Duration;

use hush_client::{Client, Session, StoreConfig, SyncSettings};

fn store(kind: &str, path: &str) -> StoreConfig {
    let passphrase = Some("store secret".to_owned());
    match kind {
        "sled" => StoreConfig::Sled { path: path.into(), passphrase },
        _ => StoreConfig::Redb { path: path.into(), passphrase },
    }
}

fn client(kind: &str, path: &str) -> Client {
    Client::builder()
        .homeserver_url(hush_testing::synapse::homeserver_url())
        .store_config(store(kind, path))
        .build()
        .expect("client")
}

async fn sync_forever(client: &Client) -> ! {
    loop {
        client.sync_once(SyncSettings { timeout: Duration::from_millis(100) }).await.expect("sync");
        println!("synced");
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.as_slice() {
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
            std::process::exit(2);
        }
    }
}
