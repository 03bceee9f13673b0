//! hush's project tasks, run as `cargo xtask <task>`.
//!
//! * `ci`: everything CI checks: formatting, clippy (warnings denied), the
//!   purity of crypto-core, docs, the whole test suite, cargo-deny.
//! * `test`: the whole test suite (workspace, doc tests, interop crate), with
//!   a local Synapse, two federating ones and a private PostgreSQL cluster
//!   started for the integration and store tests.
//! * `homeserver start|stop|status`: that Synapse.
//! * `demo`: the end-to-end demo against it.
//! * `bench`: benchmarks, all or one named workload group.
//! * `fuzz`: the fuzz targets under cargo-fuzz, and their seeds.
//! * `sim`: the deterministic network simulator over many seeds
//!   (`--runs N`), or one seed replayed (`--seed S`).
//! * `stress`: the store crash test with 1,000 kills per backend (redb, sled,
//!   PostgreSQL), and the
//!   client kill stress with 1,000 kills against Synapse.
//!
//! Only the standard library is used, so the tasks build in seconds.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod bench;
mod checks;
mod fuzz;
mod homeserver;
mod tests;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => checks::ci(),
        Some("test") => tests::from_args(&args[1..]),
        Some("purity") => checks::purity(),
        Some("bench") => bench::run(&args[1..]),
        Some("stress") => tests::stress(),
        Some("sim") => tests::sim(&args[1..]),
        Some("fuzz") => fuzz::command(&args[1..]),
        Some("homeserver") => homeserver::command(&args[1..]),
        Some("demo") => homeserver::demo(),
        _ => Err(usage()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> String {
    "usage: cargo xtask <task>\n\
     \n  ci      fmt check, clippy -D warnings, crypto-core purity, docs, tests, cargo-deny\
     \n  test    the whole test suite (add -- <filter> to pass a nextest filter)\
     \n  purity  check that crypto-core has no I/O dependency and reads no clock\
     \n  stress  1,000 SIGKILLs per store backend, then 1,000 of a client against Synapse\
     \n  sim [--runs N] [--first F] [--seed S [--shrink]] [--table FILE]\
     \n          the network simulator: N seeded runs (default 1000) with every invariant checked\
     \n          after every op, and the table of unable-to-decrypt causes; or one seed replayed\
     \n  fuzz --seeds | --seconds N [target ...]  write the fuzz seeds, or run the fuzz targets (nightly, cargo-fuzz)\
     \n  demo    start the local Synapse (installing it if needed) and run the end-to-end demo\
     \n  homeserver start|stop|status  the local Synapse for tests and the demo\
     \n  bench [workloads|export|stores]  benchmarks (workloads: hush beside matrix-sdk-crypto and bare\
     \n                         vodozemac on the named workloads, table + target/hush-bench/workloads.json;\
     \n                         export: peak memory of exporting/importing 100,000 room keys;\
     \n                         stores: hush's stores, PostgreSQL included, beside matrix-sdk-crypto's SQLite store)"
        .to_owned()
}

/// The workspace root (the parent of this crate's directory).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// `cargo` as the one that runs us, in the workspace root.
fn cargo() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root());
    command
}

/// Runs a command, failing with its description if it does not succeed.
fn run(mut command: Command, what: &str) -> Result<(), String> {
    eprintln!("\n== {what}");
    let status = command.status().map_err(|e| format!("{what}: could not start: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{what}: failed ({status})")) }
}

/// Whether a cargo subcommand is installed.
fn has_cargo_subcommand(name: &str) -> bool {
    cargo().args([name, "--version"]).output().is_ok_and(|o| o.status.success())
}
