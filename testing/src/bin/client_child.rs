//! Child process of the killed-client test: restores a session from its
//! store and syncs in a loop until it is killed.
//! Usage: `client-child <redb|sled> <store-path> <session-json>`.

use std::time::Duration;

use hush_client::{Client, Session, StoreConfig, SyncSettings};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, kind, store, session] = args.as_slice() else {
        eprintln!("usage: client-child <redb|sled> <store-path> <session-json>");
        std::process::exit(2);
    };
    let passphrase = Some("store secret".to_owned());
    let store = match kind.as_str() {
        "sled" => StoreConfig::Sled { path: store.into(), passphrase },
        _ => StoreConfig::Redb { path: store.into(), passphrase },
    };
    let session: Session = serde_json::from_str(session).expect("session json");
    let client = Client::builder()
        .homeserver_url(hush_testing::synapse::homeserver_url())
        .store_config(store)
        .build()
        .expect("client");
    client.restore_session(session).await.expect("restore");
    loop {
        client.sync_once(SyncSettings { timeout: Duration::from_millis(100) }).await.expect("sync");
        println!("synced");
    }
}
