//! Child process of the crash test: saves numbered batches into a store in a
//! loop and reports each one on stdout after `save_changes` returned, until
//! it is killed. Usage: `crash-child <redb|sled> <path> <run>`.

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

async fn save_forever(store: impl CryptoStore, run: u32) {
    let mut stdout = std::io::stdout();
    for index in 0.. {
        store.save_changes(batch(run, index)).await.expect("save");
        writeln!(stdout, "{index}").and_then(|()| stdout.flush()).expect("report");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, backend, path, run] = args.as_slice() else {
        eprintln!("usage: crash-child <redb|sled> <path> <run>");
        std::process::exit(2);
    };
    let run: u32 = run.parse().expect("run number");
    let (user, device) = owner();
    let options = Encryption::RawKey.options();
    futures_executor::block_on(async {
        match backend.as_str() {
            "redb" => save_forever(hush_store_redb::open(path, &user, &device, options).expect("open"), run).await,
            "sled" => save_forever(hush_store_sled::open(path, &user, &device, options).expect("open"), run).await,
            other => panic!("unknown backend {other}"),
        }
    });
}
