//! `cargo xtask test`: the workspace tests with nextest (cargo test if it is
//! missing), the doc tests, and the interop crate against matrix-sdk-crypto.

use super::{cargo, has_cargo_subcommand, root, run};

/// The interop crate's manifest, a workspace of its own (see its Cargo.toml).
const INTEROP_MANIFEST: &str = "testing/interop/Cargo.toml";

/// The whole suite, the Synapse and PostgreSQL tests included: Synapse,
/// the two federating Synapses of the federation tests and the test
/// PostgreSQL cluster are started first (installed if needed) and stopped
/// afterwards if this run started them.
pub(crate) fn run_all(filter: &[String]) -> Result<(), String> {
    use crate::homeserver::{FEDERATION_SCRIPT, POSTGRES_SCRIPT, SCRIPT};
    let mut started = crate::homeserver::Started::default();
    let result = started
        .ensure(SCRIPT, "the local Synapse")
        .and_then(|()| started.ensure(FEDERATION_SCRIPT, "two federating Synapses (hs1, hs2)"))
        .and_then(|()| started.ensure(POSTGRES_SCRIPT, "the test PostgreSQL cluster"))
        .and_then(|()| run_suites(filter));
    let stopped = started.stop();
    result.and(stopped)
}

fn run_suites(filter: &[String]) -> Result<(), String> {
    let nextest = has_cargo_subcommand("nextest");
    let mut workspace = cargo();
    // Tests that need Synapse are #[ignore]d for a plain `cargo test`; run them here.
    if nextest {
        workspace.args(["nextest", "run", "--workspace", "--no-fail-fast", "--run-ignored", "all"]);
    } else {
        workspace.args(["test", "--workspace", "--no-fail-fast", "--", "--include-ignored"]);
    }
    workspace.args(filter);
    run(workspace, "workspace tests (with the Synapse integration tests)")?;

    if filter.is_empty() {
        let mut doc = cargo();
        doc.args(["test", "--workspace", "--doc"]);
        run(doc, "doc tests")?;
    }

    if root().join(INTEROP_MANIFEST).exists() {
        let mut interop = cargo();
        // matrix-sdk-crypto 0.19 declares rust-version 1.96 but builds on 1.95.
        if nextest {
            interop.args(["nextest", "run", "--no-fail-fast", "--ignore-rust-version"]);
        } else {
            interop.args(["test", "--no-fail-fast", "--ignore-rust-version"]);
        }
        interop.args(["--manifest-path", INTEROP_MANIFEST]);
        interop.args(filter);
        run(interop, "interop tests (matrix-sdk-crypto)")?;
    }
    Ok(())
}

pub(crate) fn from_args(args: &[String]) -> Result<(), String> {
    let filter: Vec<String> = args.iter().skip_while(|a| *a == "--").cloned().collect();
    run_all(&filter)
}

/// The network simulator (`testing/src/sim`), built in release: its
/// arguments are passed on (`--runs N`, `--seed S`, ...).
pub(crate) fn sim(args: &[String]) -> Result<(), String> {
    let mut command = cargo();
    command.args(["run", "--release", "-p", "hush-testing", "--bin", "hush-sim", "--"]).args(args);
    run(command, "the network simulator (release build; the first build takes a few minutes)")
}

/// The kill stresses, in release mode: the store crash test at 1,000 kills
/// per backend (redb, sled, PostgreSQL), then the client kill stress (a
/// client SIGKILLed at 1,000 seeded points across its kill sites, against
/// Synapse). The servers are started if needed and stopped afterwards if
/// this run started them.
pub(crate) fn stress() -> Result<(), String> {
    let postgres = crate::homeserver::ensure_postgres_running()?;
    let mut crash = cargo();
    crash
        .args(["test", "--release", "-p", "hush-testing", "--test", "store_crash", "--", "--include-ignored"])
        .env("HUSH_CRASH_KILLS", "1000");
    let crashed = run(crash, "store crash test, 1,000 kills per backend");
    if postgres {
        crate::homeserver::run_named(crate::homeserver::POSTGRES_SCRIPT, "stop")?;
    }
    crashed?;

    let started = crate::homeserver::ensure_running()?;
    let mut clients = cargo();
    clients
        .args(["test", "--release", "-p", "hush-testing", "--test", "complement", "--"])
        .args(["--ignored", "--exact", "--nocapture", "kills::a_client_killed_at_seeded_points_loses_no_room_key"])
        .env("HUSH_CLIENT_KILLS", "1000");
    let result = run(clients, "client kill stress, 1,000 kills against Synapse");
    if started {
        crate::homeserver::run_script("stop")?;
    }
    result
}
