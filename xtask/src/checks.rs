//! `cargo xtask ci` and its checks.

use super::{cargo, has_cargo_subcommand, root, run, tests};

/// Crates crypto-core must never depend on: it performs no I/O.
const FORBIDDEN_IN_CORE: [&str; 5] = ["tokio", "hyper", "sled", "redb", "reqwest"];

pub(crate) fn ci() -> Result<(), String> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run(fmt, "rustfmt")?;

    let mut clippy = cargo();
    clippy.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
    run(clippy, "clippy")?;

    // The client must also build without its default features (no e2e, no stores).
    let mut minimal_client = cargo();
    minimal_client.args(["clippy", "-p", "hush-client", "--no-default-features", "--", "-D", "warnings"]);
    run(minimal_client, "clippy (hush-client without default features)")?;

    let mut interop_clippy = cargo();
    interop_clippy.args([
        "clippy",
        "--all-targets",
        "--ignore-rust-version",
        "--manifest-path",
        "testing/interop/Cargo.toml",
        "--",
        "-D",
        "warnings",
    ]);
    run(interop_clippy, "clippy (interop crate)")?;

    let mut bench_clippy = cargo();
    bench_clippy.args([
        "clippy",
        "--all-targets",
        "--ignore-rust-version",
        "--manifest-path",
        "testing/bench/Cargo.toml",
        "--",
        "-D",
        "warnings",
    ]);
    run(bench_clippy, "clippy (benchmark crate: benchmarks compile)")?;

    purity()?;

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"]).env("RUSTDOCFLAGS", "-D warnings");
    run(doc, "rustdoc")?;

    tests::run_all(&[])?;

    deny()
}

/// crypto-core has no I/O dependency and reads no clock.
pub(crate) fn purity() -> Result<(), String> {
    eprintln!("\n== purity of hush-crypto-core");
    let output = cargo()
        .args(["tree", "-p", "hush-crypto-core", "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .output()
        .map_err(|e| format!("cargo tree: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo tree failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    let tree = String::from_utf8_lossy(&output.stdout);
    let offending: Vec<&str> = tree
        .lines()
        .filter(|line| {
            let name = line.split_whitespace().next().unwrap_or("");
            FORBIDDEN_IN_CORE.contains(&name)
        })
        .collect();
    if !offending.is_empty() {
        return Err(format!("crypto-core depends on I/O crates: {offending:?}"));
    }

    let mut clock_reads = Vec::new();
    scan_for_clock_reads(&root().join("crates/crypto-core/src"), &mut clock_reads)?;
    if !clock_reads.is_empty() {
        return Err(format!("crypto-core reads the clock (time is an input): {clock_reads:?}"));
    }
    let mut raw_key_decodes = Vec::new();
    scan_for_raw_key_decodes(&root().join("crates/crypto-core/src"), &mut raw_key_decodes)?;
    if !raw_key_decodes.is_empty() {
        return Err(format!(
            "crypto-core decodes public keys without the checked decoder (use crate::keys): {raw_key_decodes:?}"
        ));
    }
    eprintln!("crypto-core: no I/O dependency, no clock read, every key decoded by crate::keys");
    Ok(())
}

fn scan_for_clock_reads(dir: &std::path::Path, found: &mut Vec<String>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            scan_for_clock_reads(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            for (number, line) in text.lines().enumerate() {
                if line.contains("Instant::now") || line.contains("SystemTime::now") {
                    found.push(format!("{}:{}", path.display(), number + 1));
                }
            }
        }
    }
    Ok(())
}

/// vodozemac key types' own `from_base64` may panic on hostile input
/// (0.11: a 33-byte ed25519 key); only `keys.rs`, the checked decoder, may
/// touch them. Comments are not code and are skipped.
fn scan_for_raw_key_decodes(dir: &std::path::Path, found: &mut Vec<String>) -> Result<(), String> {
    const RAW: [&str; 3] =
        ["Curve25519PublicKey::from_base64", "Ed25519PublicKey::from_base64", "Ed25519SecretKey::from_base64"];
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            scan_for_raw_key_decodes(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("crypto-core/src/keys.rs") {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            for (number, line) in text.lines().enumerate() {
                let code = line.trim_start();
                if !code.starts_with("//") && RAW.iter().any(|raw| code.contains(raw)) {
                    found.push(format!("{}:{}", path.display(), number + 1));
                }
            }
        }
    }
    Ok(())
}

/// cargo-deny: licenses, bans, sources (advisories need GitHub, unreachable here).
fn deny() -> Result<(), String> {
    if !has_cargo_subcommand("deny") {
        let mut install = cargo();
        install.args(["install", "--locked", "cargo-deny"]);
        run(install, "install cargo-deny")?;
    }
    let mut deny = cargo();
    deny.args(["deny", "--all-features", "check", "--hide-inclusion-graph", "licenses", "bans", "sources"]);
    run(deny, "cargo-deny")
}
