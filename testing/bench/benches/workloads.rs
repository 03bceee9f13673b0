//! The named engine workloads, hush beside matrix-sdk-crypto 0.19 and bare
//! vodozemac, in one process, interleaved: `share/U=100,D=2`,
//! `share/U=1000,D=2`, `megolm/M=10000` and `receive-keys/N=2000`, each on
//! the memory stores and on the persistent ones (hush's encrypted redb store,
//! matrix-sdk-crypto's encrypted SQLite store), with the floors
//! `olm-raw/N=...`, `megolm-raw/M=10000` and `olm-raw-receive/N=2000`.
//!
//! Each repetition runs every engine once, in an order that rotates; the first
//! repetition warms up and is not recorded. Peak memory is measured after the
//! timings, one engine per child process (the binary re-run with
//! `HUSH_BENCH_MEMORY_CHILD`), as the growth of peak RSS over the run. Prints the side-by-side table and
//! writes every measurement as JSON to `target/hush-bench/workloads.json`.
//!
//! Run with `cargo xtask bench workloads`. Environment:
//! `HUSH_BENCH_REPS` (recorded repetitions, default 5),
//! `HUSH_BENCH_WORKLOADS` (comma-separated name prefixes, e.g. `share,megolm`),
//! `HUSH_BENCH_ENGINES` (comma-separated engine names as printed, e.g. `hush,hush+redb`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use hush_bench::workloads::{
    Engine, Phase, SharePeers, Workload, floor,
    hush::{self, HushStore},
    register_senders,
    report::Report,
    sdk::{self, SdkStore},
};
use hush_testing::{
    TestServer,
    memory::{reset_peak_rss, status_kib},
};

const WORKLOADS: [Workload; 4] = [
    Workload::Share { users: 100, devices: 2 },
    Workload::Share { users: 1000, devices: 2 },
    Workload::Megolm { messages: 10_000 },
    Workload::ReceiveKeys { senders: 2000 },
];

const ENGINES: [Engine; 5] = [Engine::Hush, Engine::Sdk, Engine::Floor, Engine::HushRedb, Engine::SdkSqlite];

type Run<'a> = Pin<Box<dyn Future<Output = Vec<Phase>> + 'a>>;

/// Runs one engine once, measuring the peak RSS growth over the run.
async fn measure(run: Run<'_>) -> (Vec<Phase>, u64) {
    reset_peak_rss();
    let before = status_kib("VmRSS:");
    let phases = run.await;
    let peak = status_kib("VmHWM:").saturating_sub(before);
    (phases, peak)
}

/// Fixtures a workload's runs share, built once (not timed).
struct Fixtures {
    share_peers: Option<SharePeers>,
    receive_server: Arc<TestServer>,
    senders: Vec<hush_testing::RogueDevice>,
}

impl Fixtures {
    /// `runs`: how many runs will claim a one-time key of each share peer.
    fn new(workload: Workload, runs: usize) -> Self {
        let share_peers = match workload {
            Workload::Share { users, devices } => Some(SharePeers::new(users, devices, runs)),
            _ => None,
        };
        let receive_server = Arc::new(TestServer::new());
        let senders = match workload {
            Workload::ReceiveKeys { senders } => register_senders(&receive_server, senders),
            _ => Vec::new(),
        };
        Self { share_peers, receive_server, senders }
    }

    /// One run of `workload` on `engine`.
    fn run<'a>(&'a mut self, workload: Workload, engine: Engine, dir: &'a Path, run_id: usize) -> Run<'a> {
        match workload {
            Workload::Share { devices, .. } => {
                let peers = self.share_peers.as_ref().expect("share fixtures");
                match engine {
                    Engine::Hush => Box::pin(hush::share(peers, HushStore::Memory, dir, run_id)),
                    Engine::HushRedb => Box::pin(hush::share(peers, HushStore::Redb, dir, run_id)),
                    Engine::Sdk => Box::pin(sdk::share(peers, SdkStore::Memory, dir, run_id)),
                    Engine::SdkSqlite => Box::pin(sdk::share(peers, SdkStore::Sqlite, dir, run_id)),
                    Engine::Floor => Box::pin(async move { floor::olm(peers, devices) }),
                }
            }
            Workload::Megolm { messages } => match engine {
                Engine::Hush => Box::pin(hush::megolm(messages, HushStore::Memory, dir, run_id)),
                Engine::HushRedb => Box::pin(hush::megolm(messages, HushStore::Redb, dir, run_id)),
                Engine::Sdk => Box::pin(sdk::megolm(messages, SdkStore::Memory, dir, run_id)),
                Engine::SdkSqlite => Box::pin(sdk::megolm(messages, SdkStore::Sqlite, dir, run_id)),
                Engine::Floor => Box::pin(async move { floor::megolm(messages) }),
            },
            Workload::ReceiveKeys { .. } => {
                let (server, senders) = (&self.receive_server, &mut self.senders[..]);
                match engine {
                    Engine::Hush => Box::pin(hush::receive_keys(server, senders, HushStore::Memory, dir, run_id)),
                    Engine::HushRedb => Box::pin(hush::receive_keys(server, senders, HushStore::Redb, dir, run_id)),
                    Engine::Sdk => Box::pin(sdk::receive_keys(server, senders, SdkStore::Memory, dir, run_id)),
                    Engine::SdkSqlite => Box::pin(sdk::receive_keys(server, senders, SdkStore::Sqlite, dir, run_id)),
                    Engine::Floor => Box::pin(async move { floor::receive_keys(server, senders, run_id) }),
                }
            }
        }
    }
}

/// The environment variable that makes the binary a memory-measuring child.
const CHILD: &str = "HUSH_BENCH_MEMORY_CHILD";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Child mode: set up `workload`, run `engine` once, print the peak RSS
/// growth of the run in KiB. A fresh process, so no engine reuses memory
/// another one freed.
fn child(spec: &str) {
    let (workload, engine) = spec.split_once('|').unwrap();
    let workload = WORKLOADS.into_iter().find(|w| w.name() == workload).unwrap();
    let engine = ENGINES.into_iter().find(|e| e.name() == engine).unwrap();
    let runtime = runtime();
    let _context = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let mut fixtures = Fixtures::new(workload, 1);
    let (_, peak) = runtime.block_on(measure(fixtures.run(workload, engine, dir.path(), 0)));
    println!("{peak}");
}

/// Runs the child for `workload` and `engine`; its peak RSS growth in KiB.
fn peak_in_child(workload: Workload, engine: Engine) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let output = std::process::Command::new(exe)
        .env(CHILD, format!("{}|{}", workload.name(), engine.name()))
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let reps: usize = std::env::var("HUSH_BENCH_REPS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let wanted: Option<Vec<String>> = std::env::var("HUSH_BENCH_WORKLOADS")
        .ok()
        .map(|w| w.split(',').filter(|p| !p.is_empty()).map(str::to_owned).collect());
    let engines: Vec<Engine> = match std::env::var("HUSH_BENCH_ENGINES") {
        Ok(list) => ENGINES.into_iter().filter(|e| list.split(',').any(|n| n == e.name())).collect(),
        Err(_) => ENGINES.to_vec(),
    };
    let runtime = runtime();
    let _context = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let mut report = Report::default();
    let mut run_id = 0;

    for workload in WORKLOADS {
        let name = workload.name();
        if wanted.as_ref().is_some_and(|w| !w.iter().any(|p| name.starts_with(p.as_str()))) {
            continue;
        }
        report.name_floor(&name, &workload.floor_name());
        eprintln!("{name}: setting up");
        let mut fixtures = Fixtures::new(workload, engines.len() * (reps + 1));
        for rep in 0..=reps {
            for k in 0..engines.len() {
                let engine = engines[(k + rep) % engines.len()];
                run_id += 1;
                let phases = runtime.block_on(fixtures.run(workload, engine, dir.path(), run_id));
                let summary: Vec<String> =
                    phases.iter().map(|p| format!("{} {:.1} ms", p.name, p.time.as_secs_f64() * 1e3)).collect();
                eprintln!("  rep {rep} {:<26} {}", engine.name(), summary.join(", "));
                if rep > 0 {
                    report.record(&name, engine, &phases);
                }
            }
        }
        drop(fixtures);
        for &engine in &engines {
            eprintln!("  peak memory of {} (own process)", engine.name());
            if let Some(peak) = peak_in_child(workload, engine) {
                report.record_peak(&name, engine, peak);
            }
        }
    }

    let table = report.table();
    println!("\n{table}");
    let machine = machine_description();
    let out = output_path();
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let out = std::fs::canonicalize(out.parent().unwrap()).unwrap().join("workloads.json");
    let json = report.to_json(&machine);
    std::fs::write(&out, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("machine: {machine}\nwritten to {}", out.display());
}

/// `target/hush-bench/workloads.json` in the repository (or under `CARGO_TARGET_DIR`).
fn output_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("hush-bench").join("workloads.json")
}

/// CPU model and count, from /proc/cpuinfo.
fn machine_description() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{} × {}", cores, model.unwrap_or("unknown CPU"))
}
