//! Crash safety: a child process saving batches in a loop is killed with
//! SIGKILL. Half the kills are exact: the child's write of a chosen batch
//! stalls inside the engine's transaction after a chosen number of ops, the
//! child says so, and the kill lands there. The other half land at a seeded
//! random moment after the first batch was saved, mostly inside commits.
//! After each kill the store opens, every batch the child reported as saved
//! is there in full, no batch is there in part, and a batch killed inside its
//! write is absent. Every run saved at least one batch before its kill, so no
//! run passes with nothing to check.
//! 50 kills per backend here; `cargo xtask stress` sets HUSH_CRASH_KILLS=1000.
//! On PostgreSQL the child is a client of the test cluster: a kill inside a
//! write leaves an open transaction, which the server rolls back when the
//! connection drops.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hush_crypto_core::CryptoStore;
use hush_store_postgres::{PgDatabase, PgSettings};
use hush_testing::{
    Seeded,
    conformance::owner,
    stores::{Encryption, drop_schema, postgres_url, unique_schema},
};

const KEYS_PER_BATCH: usize = 4;

fn kills() -> u32 {
    std::env::var("HUSH_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(50)
}

/// Where a run's kill lands.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// Inside the write of batch `.0`, after `.1` ops (the child stalls there).
    InsideWrite(u64, usize),
    /// `.0` microseconds after the child reported its first saved batch.
    After(u64),
}

/// What one run's child reported before it was killed.
#[derive(Debug, Default)]
struct Run {
    /// The last batch reported saved.
    last_saved: Option<u64>,
    /// The batch killed inside its write (it must be absent).
    killed_inside: Option<u64>,
    /// The child had begun a batch it had not reported saved.
    in_flight: bool,
}

/// Runs one child, kills it where `at` says, returns what it reported.
fn run_and_kill(backend: &str, location: &str, run: u32, at: KillAt) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crash-child"));
    command.args([backend, location, &run.to_string()]);
    if let KillAt::InsideWrite(batch, ops) = at {
        command.args(["stall", &batch.to_string(), &ops.to_string()]);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn the child");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |marker: &dyn Fn(&str) -> bool| loop {
        let line = lines.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("run {run}: no marker"));
        let found = marker(&line);
        seen.push(line);
        if found {
            break;
        }
    };
    match at {
        KillAt::InsideWrite(..) => wait_for(&|l| l.starts_with("stalled inside a write")),
        KillAt::After(micros) => {
            wait_for(&|l| l == "saved 0");
            std::thread::sleep(Duration::from_micros(micros));
        }
    }
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    child.wait().expect("reap the child");
    reader.join().expect("reader");
    seen.extend(lines.try_iter());
    let mut report = Run::default();
    for line in &seen {
        if let Some(n) = line.strip_prefix("saved ") {
            report.last_saved = n.parse().ok();
            report.in_flight = false;
        } else if line.starts_with("begin ") {
            report.in_flight = true;
        }
    }
    if let KillAt::InsideWrite(batch, _) = at {
        assert_eq!(report.last_saved.map(|l| l + 1), Some(batch), "run {run}: the stall was not in batch {batch}");
        report.killed_inside = Some(batch);
    }
    assert!(report.last_saved.is_some(), "run {run}: killed before its first batch was saved");
    report
}

async fn check<S: CryptoStore>(store: &S, reported: &BTreeMap<u32, Run>) {
    // Which batches are present (by their tracked user), per run.
    let mut present: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for user in store.load_tracked_users().await.expect("load tracked users") {
        let local = user.user_id.localpart();
        let (run, index) = local.trim_start_matches('r').split_once('b').expect("r<run>b<index>");
        present.entry(run.parse().unwrap()).or_default().push(index.parse().unwrap());
    }
    let keys = room_keys(store).await;
    for (run, report) in reported {
        let indices = present.get(run).cloned().unwrap_or_default();
        if let Some(killed) = report.killed_inside {
            assert!(!indices.contains(&killed), "run {run}: batch {killed}, killed inside its write, is present");
        }
        if let Some(last) = report.last_saved {
            for index in 0..=last {
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

/// Ops in one batch's write: its tracked user and its room keys.
const OPS_PER_BATCH: u64 = 1 + KEYS_PER_BATCH as u64;

async fn crash_test(backend: &str) {
    let dir = tempfile::TempDir::new().unwrap();
    // PostgreSQL: one schema per segment instead of one file.
    let schema = unique_schema("crash");
    let mut schemas = Vec::new();
    let (user, device) = owner();
    let mut seeded = Seeded(0x9E37_79B9_7F4A_7C15 ^ backend.len() as u64);
    let mut reported = BTreeMap::new();
    let (mut inside, mut in_flight, mut saved_total) = (0, 0, 0);
    for run in 0..kills() {
        if run % KILLS_PER_FILE == 0 {
            reported.clear();
        }
        let path = dir.path().join(format!("crash{}.{backend}", run / KILLS_PER_FILE));
        let location = if backend == "postgres" {
            let segment = format!("{schema}_{}", run / KILLS_PER_FILE);
            if schemas.last() != Some(&segment) {
                schemas.push(segment.clone());
            }
            segment
        } else {
            path.to_str().expect("utf-8 path").to_owned()
        };
        let at = if seeded.below(2) == 0 {
            // ops up to OPS_PER_BATCH: the last one is after every op, before the commit.
            KillAt::InsideWrite(1 + seeded.below(4), seeded.below(OPS_PER_BATCH + 1) as usize)
        } else {
            KillAt::After(seeded.below(20_000))
        };
        let report = run_and_kill(backend, &location, run, at);
        inside += u32::from(report.killed_inside.is_some());
        in_flight += u32::from(report.killed_inside.is_none() && report.in_flight);
        saved_total += report.last_saved.map_or(0, |l| l + 1);
        reported.insert(run, report);
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
            "sled" => match hush_store_sled::open(&path, &user, &device, options) {
                Ok(store) => check(&store, &reported).await,
                Err(error) => keep(error),
            },
            _ => {
                let settings = PgSettings { schema: location.clone(), connections: 1 };
                let database = PgDatabase::connect(&postgres_url(), settings).expect("connect to the test PostgreSQL");
                match database.open_store(&user, &device, options) {
                    Ok(store) => check(&store, &reported).await,
                    Err(error) => panic!("reopen after kill {run}: {error} (schema {location} kept)"),
                }
            }
        }
    }
    for schema in schemas {
        drop_schema(&schema);
    }
    // Figures for docs/reliability.md (the exact kills are asserted in run_and_kill).
    println!(
        "{backend}: {} kills, {inside} inside a write at a chosen op, {in_flight} of the others with a batch in flight, \
         {saved_total} batches saved, every store reopened and checked",
        kills()
    );
    assert!(inside > 0, "no kill landed inside a write");
}

#[tokio::test]
async fn redb_survives_sigkill() {
    crash_test("redb").await;
}

#[tokio::test]
async fn sled_survives_sigkill() {
    crash_test("sled").await;
}

#[tokio::test]
#[ignore = "needs the test PostgreSQL (cargo xtask test starts it)"]
async fn postgres_survives_sigkill() {
    crash_test("postgres").await;
}
