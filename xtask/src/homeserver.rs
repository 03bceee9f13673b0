//! `cargo xtask homeserver start|stop|status`: the local Synapse that the
//! integration tests and the demo use (testing/synapse/synapse.sh does the work).

use std::process::Command;

use super::root;

pub(crate) const SCRIPT: &str = "testing/synapse/synapse.sh";

/// The two federating Synapses of the federation tests.
pub(crate) const FEDERATION_SCRIPT: &str = "testing/synapse/federation.sh";

/// The private PostgreSQL cluster of the store tests and benchmarks.
pub(crate) const POSTGRES_SCRIPT: &str = "testing/postgres/postgres.sh";

pub(crate) fn run_script(action: &str) -> Result<(), String> {
    run_named(SCRIPT, action)
}

pub(crate) fn run_named(script: &str, action: &str) -> Result<(), String> {
    let status = Command::new("bash")
        .arg(root().join(script))
        .arg(action)
        .status()
        .map_err(|e| format!("could not run {script}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{script} {action} failed ({status})")) }
}

fn is_running(script: &str) -> bool {
    Command::new("bash").arg(root().join(script)).arg("status").output().is_ok_and(|o| o.status.success())
}

/// Starts Synapse unless it already runs; returns whether this call started it.
pub(crate) fn ensure_running() -> Result<bool, String> {
    ensure_named(SCRIPT, "the local Synapse")
}

/// Starts the test PostgreSQL cluster (installing Debian's postgresql
/// package if no server is installed) unless it runs; returns whether this
/// call started it.
pub(crate) fn ensure_postgres_running() -> Result<bool, String> {
    ensure_named(POSTGRES_SCRIPT, "the test PostgreSQL cluster")
}

/// The services a task started, stopped (last started first) when it ends.
#[derive(Default)]
pub(crate) struct Started(Vec<&'static str>);

impl Started {
    /// Starts `script`'s service unless it runs, remembering it if this did.
    pub(crate) fn ensure(&mut self, script: &'static str, what: &str) -> Result<(), String> {
        if ensure_named(script, what)? {
            self.0.push(script);
        }
        Ok(())
    }

    /// Stops what was started; the first failure, after trying them all.
    pub(crate) fn stop(mut self) -> Result<(), String> {
        let mut result = Ok(());
        while let Some(script) = self.0.pop() {
            if let Err(error) = run_named(script, "stop") {
                result = result.and(Err(error));
            }
        }
        result
    }
}

fn ensure_named(script: &str, what: &str) -> Result<bool, String> {
    if is_running(script) {
        return Ok(false);
    }
    eprintln!("\n== starting {what}");
    run_named(script, "start")?;
    Ok(true)
}

pub(crate) fn command(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some(action @ ("start" | "stop" | "status" | "install")) => run_script(action),
        _ => Err("usage: cargo xtask homeserver start|stop|status|install".to_owned()),
    }
}

/// `cargo xtask demo`: Synapse up (installed if needed), then the demo
/// example, built with cargo's progress shown (the first build takes a few
/// minutes). A Synapse this started is stopped afterwards; one that was
/// already running is left running, and the demo says so.
pub(crate) fn demo() -> Result<(), String> {
    let mut started = Started::default();
    started.ensure(SCRIPT, "the local Synapse")?;
    let already_running = started.0.is_empty();
    eprintln!("\n== building the demo (the first build compiles the whole SDK: a few minutes on 2 cores)");
    let mut example = super::cargo();
    example.args(["run", "-p", "hush-testing", "--example", "demo"]);
    let result = super::run(example, "the hush demo");
    let stopped = started.stop();
    if already_running {
        eprintln!(
            "\nSynapse was already running before the demo and still runs: stop it with `cargo xtask homeserver stop`."
        );
    }
    result.and(stopped)
}
