//! What only the PostgreSQL store has: many devices' stores in one schema,
//! each seeing only its own records; stores deleted with their records; a
//! layout from a newer hush refused; refused opens writing nothing; bad
//! schema names and unreachable servers as errors. Needs the test cluster
//! (`cargo xtask test` starts it), so a plain `cargo test` skips these.

use hush_crypto_core::{Changes, CryptoStore, StoreError, store::TrackedUser};
use hush_store_postgres::{LAYOUT_VERSION, PgDatabase, PgSettings};
use hush_testing::stores::{Encryption, drop_schema, postgres_url, unique_schema};
use ruma_common::{OwnedDeviceId, OwnedUserId};

fn device(n: usize) -> (OwnedUserId, OwnedDeviceId) {
    (format!("@bot{n}:example.org").try_into().expect("user id"), format!("BOT{n}").into())
}

/// A database in a fresh schema, dropped when the guard is.
struct Schema {
    name: String,
}

impl Schema {
    fn new() -> Self {
        Self { name: unique_schema("pgstore") }
    }

    fn connect(&self) -> Result<PgDatabase, StoreError> {
        PgDatabase::connect(&postgres_url(), PgSettings { schema: self.name.clone(), connections: 2 })
    }

    /// Runs SQL on the test database directly (off the async runtime).
    fn sql(&self, sql: String) -> Vec<String> {
        let url = postgres_url();
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            client
                .simple_query(&sql)
                .expect("sql")
                .into_iter()
                .filter_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("NULL").to_owned()),
                    _ => None,
                })
                .collect()
        })
        .join()
        .expect("sql thread")
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        drop_schema(&self.name);
    }
}

async fn track(store: &impl CryptoStore, user: &str) {
    let user_id: OwnedUserId = user.try_into().expect("user id");
    let changes = Changes { tracked_users: vec![TrackedUser { user_id, dirty: true }], ..Default::default() };
    store.save_changes(changes).await.expect("save");
}

async fn tracked(store: &impl CryptoStore) -> Vec<String> {
    store.load_tracked_users().await.expect("load").into_iter().map(|u| u.user_id.to_string()).collect()
}

/// A bridge keeps many devices in one schema: each store reads back its
/// own records only, whether the stores are encrypted or plain.
#[tokio::test]
#[ignore = "needs the test PostgreSQL (cargo xtask test starts it)"]
async fn many_devices_share_a_schema_and_see_only_their_own_records() {
    let schema = Schema::new();
    let database = schema.connect().expect("connect");
    let mut stores = Vec::new();
    for n in 0..20 {
        let (user, device) = device(n);
        let encryption = if n % 2 == 0 { Encryption::RawKey } else { Encryption::None };
        let store = database.open_store(&user, &device, encryption.options()).expect("open");
        track(&store, &format!("@peer{n}:example.org")).await;
        stores.push(store);
    }
    for (n, store) in stores.iter().enumerate() {
        assert_eq!(tracked(store).await, vec![format!("@peer{n}:example.org")], "store {n}");
    }
    assert_eq!(schema.sql(format!("SELECT count(*) FROM {}.hush_stores", schema.name)), vec!["20"]);
}

/// Deleting a device's store removes its records and leaves the others.
#[tokio::test]
#[ignore = "needs the test PostgreSQL (cargo xtask test starts it)"]
async fn a_deleted_store_is_gone_and_the_others_stay() {
    let schema = Schema::new();
    let database = schema.connect().expect("connect");
    let (gone_user, gone_device) = device(1);
    let (kept_user, kept_device) = device(2);
    let gone = database.open_store(&gone_user, &gone_device, Encryption::RawKey.options()).expect("open");
    let kept = database.open_store(&kept_user, &kept_device, Encryption::RawKey.options()).expect("open");
    track(&gone, "@a:example.org").await;
    track(&kept, "@b:example.org").await;
    drop(gone);
    assert!(database.delete_store(&gone_user, &gone_device).expect("delete"));
    assert!(!database.delete_store(&gone_user, &gone_device).expect("delete again"));
    let reopened = database.open_store(&gone_user, &gone_device, Encryption::RawKey.options()).expect("open");
    assert!(tracked(&reopened).await.is_empty(), "a deleted store's records survived");
    assert_eq!(tracked(&kept).await, vec!["@b:example.org"]);
}

/// Tables laid out by a newer hush are refused, not rewritten.
#[tokio::test]
#[ignore = "needs the test PostgreSQL (cargo xtask test starts it)"]
async fn a_newer_layout_is_refused_and_left_alone() {
    let schema = Schema::new();
    drop(schema.connect().expect("create the layout"));
    let newer = LAYOUT_VERSION + 1;
    schema.sql(format!("UPDATE {}.hush_layout SET version = {newer}", schema.name));
    let error = schema.connect().expect_err("a newer layout must be refused");
    assert!(matches!(error, StoreError::UnsupportedSchema { found, .. } if found == newer.unsigned_abs()), "{error}");
    assert_eq!(schema.sql(format!("SELECT version FROM {}.hush_layout", schema.name)), vec![newer.to_string()]);
}

/// A wrong passphrase, or another device's records under this owner, is
/// refused and changes nothing stored.
#[tokio::test]
#[ignore = "needs the test PostgreSQL (cargo xtask test starts it)"]
async fn a_refused_open_changes_nothing() {
    let schema = Schema::new();
    let database = schema.connect().expect("connect");
    let (user, device) = device(1);
    let store = database.open_store(&user, &device, Encryption::Passphrase.options()).expect("open");
    track(&store, "@a:example.org").await;
    drop(store);
    let snapshot = format!(
        "SELECT md5(string_agg(encode(key, 'hex') || encode(value, 'hex'), ',' ORDER BY tbl, key)) FROM {}.hush_kv",
        schema.name
    );
    let before = schema.sql(snapshot.clone());
    let wrong = hush_store_postgres::StoreOptions {
        kdf_rounds: hush_store_cipher::MIN_KDF_ROUNDS,
        ..hush_store_postgres::StoreOptions::passphrase("not the passphrase")
    };
    let error = database.open_store(&user, &device, wrong).expect_err("wrong passphrase");
    assert_eq!(error, StoreError::WrongPassphrase);
    let error = database.open_store(&user, &device, Encryption::None.options()).expect_err("no passphrase");
    assert_eq!(error, StoreError::PassphraseRequired);
    assert_eq!(schema.sql(snapshot), before, "a refused open wrote to the store");
}

/// A schema name that is not a plain identifier never reaches SQL.
#[test]
fn a_schema_name_that_is_not_a_plain_identifier_is_refused() {
    for name in ["", "Hush", "hush; DROP TABLE x", "1hush", "pg_catalog", "hush\"x", &"a".repeat(64)] {
        let settings = PgSettings { schema: name.to_owned(), connections: 1 };
        let error = PgDatabase::connect("postgres://nobody@127.0.0.1:1/none", settings).expect_err(name);
        assert!(error.to_string().contains("schema name"), "{name:?}: {error}");
    }
}

/// A server that is not there is an error, not a hang or a panic.
#[test]
fn an_unreachable_server_is_an_error() {
    // Port 1 on loopback: nothing listens there.
    let error = PgDatabase::connect("postgres://hush@127.0.0.1:1/hush", PgSettings::default()).expect_err("no server");
    assert!(matches!(error, StoreError::Backend(_)), "{error}");
}

/// Hosts racing for the lock: eight contenders, each with its own
/// connection pool (as separate processes would have), ask for the lock at
/// the same instant, round after round. Each round exactly one wins, and
/// only its fenced batch is written; a loser's batch, fenced with the
/// generation it saw last, is refused.
#[test]
#[ignore = "needs the test PostgreSQL (cargo xtask test starts it)"]
fn hosts_racing_for_the_lock_get_one_holder_per_round() {
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    const HOSTS: usize = 8;
    const ROUNDS: u64 = 60;
    let schema = Schema::new();
    let (user, device) = device(1);
    drop(schema.connect().expect("connect").open_store(&user, &device, Encryption::RawKey.options()).expect("create"));
    let barrier = Arc::new(Barrier::new(HOSTS));
    let hosts: Vec<_> = (0..HOSTS)
        .map(|host| {
            let (barrier, name, user, device) =
                (Arc::clone(&barrier), schema.name.clone(), user.clone(), device.clone());
            std::thread::spawn(move || {
                let settings = PgSettings { schema: name, connections: 1 };
                let database = PgDatabase::connect(&postgres_url(), settings).expect("connect");
                let store = database.open_store(&user, &device, Encryption::RawKey.options()).expect("open");
                let mut won = Vec::new();
                for round in 0..ROUNDS {
                    // Each round starts after the last round's lease ran out.
                    let now = hush_crypto_core::Timestamp::from_millis(1_000_000 + round * 60_000);
                    barrier.wait();
                    match futures_executor::block_on(store.try_lock(
                        &format!("host{host}"),
                        now,
                        Duration::from_secs(30),
                    )) {
                        Ok(lease) => {
                            let user_id: OwnedUserId = format!("@r{round}h{host}:example.org").try_into().unwrap();
                            let changes = Changes {
                                tracked_users: vec![TrackedUser { user_id, dirty: false }],
                                fence: Some(lease.fence()),
                                ..Default::default()
                            };
                            futures_executor::block_on(store.save_changes(changes)).expect("the winner writes");
                            won.push(round);
                        }
                        Err(StoreError::LockHeld { .. }) => {}
                        Err(other) => panic!("host {host}, round {round}: {other}"),
                    }
                    barrier.wait();
                }
                won
            })
        })
        .collect();
    let mut winners = vec![0; ROUNDS as usize];
    for host in hosts {
        for round in host.join().expect("a host thread") {
            winners[round as usize] += 1;
        }
    }
    assert!(winners.iter().all(|&w| w == 1), "winners per round: {winners:?}");
    let database = schema.connect().expect("connect");
    let store = database.open_store(&user, &device, Encryption::RawKey.options()).expect("open");
    assert_eq!(futures_executor::block_on(tracked(&store)).len(), ROUNDS as usize);
}

/// Four hosts open a new device's encrypted store at the same moment: only
/// one may create it (each would pick its own random store key, and the
/// records written under a losing key would be unreadable afterwards).
/// Each host writes a record; every record is there, readable, afterwards.
#[test]
#[ignore = "needs the test PostgreSQL (cargo xtask test starts it)"]
fn hosts_opening_a_new_store_at_once_share_one_store_key() {
    use std::sync::{Arc, Barrier};

    const HOSTS: usize = 4;
    let schema = Schema::new();
    drop(schema.connect().expect("create the layout"));
    let (user, device) = device(7);
    let barrier = Arc::new(Barrier::new(HOSTS));
    let hosts: Vec<_> = (0..HOSTS)
        .map(|host| {
            let (barrier, name, user, device) =
                (Arc::clone(&barrier), schema.name.clone(), user.clone(), device.clone());
            std::thread::spawn(move || {
                let database =
                    PgDatabase::connect(&postgres_url(), PgSettings { schema: name, connections: 1 }).expect("connect");
                barrier.wait();
                let store = database.open_store(&user, &device, Encryption::RawKey.options()).expect("open");
                futures_executor::block_on(track(&store, &format!("@host{host}:example.org")));
            })
        })
        .collect();
    for host in hosts {
        host.join().expect("a host thread");
    }
    let store =
        schema.connect().expect("connect").open_store(&user, &device, Encryption::RawKey.options()).expect("open");
    let mut users = futures_executor::block_on(tracked(&store));
    users.sort();
    let expected: Vec<String> = (0..HOSTS).map(|h| format!("@host{h}:example.org")).collect();
    assert_eq!(users, expected, "records written under a store key that lost the race");
}
