//! `cargo xtask homeserver start|stop|status`: the local Synapse that the
//! integration tests and the demo use (testing/synapse/synapse.sh does the work).

use std::process::Command;

use super::root;

const SCRIPT: &str = "testing/synapse/synapse.sh";

pub(crate) fn run_script(action: &str) -> Result<(), String> {
    let status = Command::new("bash")
        .arg(root().join(SCRIPT))
        .arg(action)
        .status()
        .map_err(|e| format!("could not run {SCRIPT}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("synapse {action} failed ({status})")) }
}

fn is_running() -> bool {
    Command::new("bash").arg(root().join(SCRIPT)).arg("status").output().is_ok_and(|o| o.status.success())
}

/// Starts Synapse unless it already runs; returns whether this call started it.
pub(crate) fn ensure_running() -> Result<bool, String> {
    if is_running() {
        return Ok(false);
    }
    eprintln!("\n== starting the local Synapse");
    run_script("start")?;
    Ok(true)
}

pub(crate) fn command(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some(action @ ("start" | "stop" | "status" | "install")) => run_script(action),
        _ => Err("usage: cargo xtask homeserver start|stop|status|install".to_owned()),
    }
}

/// `cargo xtask demo`: Synapse up (installed if needed), then the demo example.
pub(crate) fn demo() -> Result<(), String> {
    ensure_running()?;
    let mut example = super::cargo();
    example.args(["run", "--quiet", "-p", "hush-testing", "--example", "demo"]);
    super::run(example, "the hush demo")
}
