//! Crash safety: a child process saving batches in a loop is killed with
//! SIGKILL at random moments. After each kill the store opens, every batch the
//! child reported as saved is there in full, and no batch is there in part.
//! 50 kills per backend here; `cargo xtask stress` sets HUSH_CRASH_KILLS=1000.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hush_crypto_core::CryptoStore;
use hush_testing::{conformance::owner, stores::Encryption};

const KEYS_PER_BATCH: usize = 4;

fn kills() -> u32 {
    std::env::var("HUSH_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(50)
}

/// A small deterministic generator for kill delays (no test randomness we cannot replay).
struct Delays(u64);

impl Delays {
    fn next_ms(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        2 + self.0 % 40
    }
}

/// Runs one child, kills it after `delay`, returns the last batch it reported.
fn run_and_kill(backend: &str, path: &Path, run: u32, delay: Duration) -> Option<u64> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-child"))
        .args([backend, path.to_str().expect("utf-8 path"), &run.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    let stdout = child.stdout.take().expect("stdout");
    child.wait().expect("reap the child");
    BufReader::new(stdout).lines().map_while(Result::ok).filter_map(|l| l.parse().ok()).last()
}

async fn check<S: CryptoStore>(store: &S, reported: &BTreeMap<u32, Option<u64>>) {
    // Which batches are present (by their tracked user), per run.
    let mut present: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for user in store.load_tracked_users().await.expect("load tracked users") {
        let local = user.user_id.localpart();
        let (run, index) = local.trim_start_matches('r').split_once('b').expect("r<run>b<index>");
        present.entry(run.parse().unwrap()).or_default().push(index.parse().unwrap());
    }
    let keys = room_keys(store).await;
    for (run, last) in reported {
        let indices = present.get(run).cloned().unwrap_or_default();
        if let Some(last) = last {
            for index in 0..=*last {
                assert!(indices.contains(&index), "run {run}: batch {index} was reported saved but is missing");
            }
        }
        // Every present batch (reported or in flight when killed) is whole.
        for index in indices {
            let room = format!("!r{run}b{index}:crash.test");
            assert_eq!(keys.get(&room).copied().unwrap_or(0), KEYS_PER_BATCH, "run {run}: batch {index} is partial");
        }
    }
    // And no room keys exist without their batch's tracked user.
    let batches: usize = present.values().map(Vec::len).sum();
    assert_eq!(keys.values().sum::<usize>(), batches * KEYS_PER_BATCH, "room keys of a batch without its user");
}

/// Room keys per room, in one pass over the store.
async fn room_keys<S: CryptoStore>(store: &S) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let mut after: Option<(ruma_common::OwnedRoomId, String)> = None;
    loop {
        let cursor = after.as_ref().map(|(r, s)| (r.as_ref(), s.as_str()));
        let page = store.get_inbound_group_sessions(cursor, 1000).await.unwrap();
        let Some(last) = page.last() else { return counts };
        after = Some((last.room_id.clone(), last.session_id.clone()));
        for session in &page {
            *counts.entry(session.room_id.to_string()).or_insert(0) += 1;
        }
    }
}

/// Kills per store file: a long stress run starts new files, so each check
/// stays proportional to one segment rather than growing without bound.
const KILLS_PER_FILE: u32 = 50;

async fn crash_test(backend: &str) {
    let dir = tempfile::TempDir::new().unwrap();
    let (user, device) = owner();
    let mut delays = Delays(0x9E37_79B9_7F4A_7C15 ^ backend.len() as u64);
    let mut reported = BTreeMap::new();
    let mut saved_total = 0;
    for run in 0..kills() {
        if run % KILLS_PER_FILE == 0 {
            reported.clear();
        }
        let path = dir.path().join(format!("crash{}.{backend}", run / KILLS_PER_FILE));
        let last = run_and_kill(backend, &path, run, Duration::from_millis(delays.next_ms()));
        saved_total += last.map_or(0, |l| l + 1);
        reported.insert(run, last);
        let options = Encryption::RawKey.options();
        let keep = |error: hush_crypto_core::StoreError| {
            // Keep a copy of the damaged store for inspection.
            let kept = std::env::temp_dir().join(format!("hush-crash-failure-{backend}-{}", std::process::id()));
            let _ = Command::new("cp").arg("-r").arg(dir.path()).arg(&kept).status();
            panic!("reopen after kill {run}: {error}; a copy of the store is at {}", kept.display())
        };
        match backend {
            "redb" => match hush_store_redb::open(&path, &user, &device, options) {
                Ok(store) => check(&store, &reported).await,
                Err(error) => keep(error),
            },
            _ => match hush_store_sled::open(&path, &user, &device, options) {
                Ok(store) => check(&store, &reported).await,
                Err(error) => keep(error),
            },
        }
    }
    assert!(saved_total > 0, "the children never got to save anything");
}

#[tokio::test]
async fn redb_survives_sigkill() {
    crash_test("redb").await;
}

#[tokio::test]
async fn sled_survives_sigkill() {
    crash_test("sled").await;
}
