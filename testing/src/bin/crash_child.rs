//! Child process of the crash test: saves numbered batches into a store in a
//! loop, printing `begin <n>` before each `save_changes` and `saved <n>` after
//! it returned, until it is killed. With `stall <n> <ops>`, the write of
//! batch `n` stalls for good after `ops` of its ops, inside the engine's
//! transaction, and the backend prints `stalled ...`: the test kills it there.
//! Usage: `crash-child <redb|sled|postgres> <path or schema> <run> [stall <n> <ops>]`.

use std::io::Write;

use hush_crypto_core::{Changes, CryptoStore, store::TrackedUser};
use hush_testing::{
    conformance::{inbound_fixture, owner},
    stores::Encryption,
};
use ruma_common::{OwnedRoomId, OwnedUserId};

/// Room keys per batch: a batch is present whole or not at all.
pub const KEYS_PER_BATCH: usize = 4;

fn batch(run: u32, index: u64) -> Changes {
    let user: OwnedUserId = format!("@r{run}b{index}:crash.test").try_into().expect("user id");
    let room: OwnedRoomId = format!("!r{run}b{index}:crash.test").try_into().expect("room id");
    Changes {
        tracked_users: vec![TrackedUser { user_id: user, dirty: false }],
        inbound_group_sessions: (0..KEYS_PER_BATCH).map(|_| inbound_fixture(&room)).collect(),
        ..Default::default()
    }
}

/// Where to stall: batch number and ops into its write.
type Stall = Option<(u64, usize)>;

async fn save_forever<S: CryptoStore>(store: S, run: u32, stall: Stall, arm: impl Fn(&S, usize)) {
    let mut stdout = std::io::stdout();
    for index in 0.. {
        if let Some((at, ops)) = stall
            && at == index
        {
            arm(&store, ops);
        }
        writeln!(stdout, "begin {index}").and_then(|()| stdout.flush()).expect("report");
        store.save_changes(batch(run, index)).await.expect("save");
        writeln!(stdout, "saved {index}").and_then(|()| stdout.flush()).expect("report");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (backend, path, run, stall) = match args.as_slice() {
        [_, backend, path, run] => (backend, path, run, None),
        [_, backend, path, run, stall, at, ops] if stall == "stall" => {
            (backend, path, run, Some((at.parse().expect("batch"), ops.parse().expect("ops"))))
        }
        _ => {
            eprintln!("usage: crash-child <redb|sled|postgres> <path or schema> <run> [stall <n> <ops>]");
            std::process::exit(2);
        }
    };
    let run: u32 = run.parse().expect("run number");
    let (user, device) = owner();
    let options = Encryption::RawKey.options();
    futures_executor::block_on(async {
        match backend.as_str() {
            "redb" => {
                let store = hush_store_redb::open(path, &user, &device, options).expect("open");
                save_forever(store, run, stall, |s, ops| s.backend().stall_next_write_after(ops)).await;
            }
            "sled" => {
                let store = hush_store_sled::open(path, &user, &device, options).expect("open");
                save_forever(store, run, stall, |s, ops| s.backend().stall_next_write_after(ops)).await;
            }
            "postgres" => {
                // The "path" is the schema; the server is the test cluster's.
                let settings = hush_store_postgres::PgSettings { schema: path.to_owned(), connections: 1 };
                let url = hush_testing::stores::postgres_url();
                let database = hush_store_postgres::PgDatabase::connect(&url, settings).expect("connect");
                let store = database.open_store(&user, &device, options).expect("open");
                save_forever(store, run, stall, |s, ops| s.backend().stall_next_write_after(ops)).await;
            }
            other => panic!("unknown backend {other}"),
        }
    });
}
