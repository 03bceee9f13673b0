//! `cargo xtask fuzz`: the fuzz targets under cargo-fuzz (nightly).
//!
//! * `--seeds`: writes each target's seeds into `fuzz/corpus/<target>/`.
//! * `--seconds N [target ...]`: runs each target (all by default) for N
//!   seconds on its corpus, and prints the executions and crashes of each
//!   (also written to `target/hush-fuzz/summary.txt`).
//!
//! cargo-fuzz and a nightly toolchain are needed here, never in CI: CI
//! replays the corpora with plain `cargo test` (`tests/fuzz_corpora.rs`).

use std::process::Command;

use super::{cargo, root, run};

/// The targets, as `hush_testing::fuzz::TARGETS` names them.
const TARGETS: [&str; 10] = [
    "to_device",
    "olm_plaintext",
    "megolm_event",
    "keys_query",
    "keys_claim",
    "key_export",
    "store_values",
    "gossip_content",
    "backup_data",
    "secret_storage",
];

pub(crate) fn command(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("--seeds") => {
            let mut seeds = cargo();
            seeds.args(["run", "-p", "hush-testing", "--example", "fuzz_seeds"]);
            run(seeds, "write the fuzz seeds")
        }
        Some("--seconds") => {
            let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).ok_or("--seconds needs a number")?;
            let chosen: Vec<&str> =
                if args.len() > 2 { args[2..].iter().map(String::as_str).collect() } else { TARGETS.to_vec() };
            fuzz(seconds, &chosen)
        }
        _ => Err("usage: cargo xtask fuzz --seeds | --seconds N [target ...]".into()),
    }
}

fn fuzz(seconds: u64, targets: &[&str]) -> Result<(), String> {
    let fuzz_dir = root().join("fuzz");
    let mut lines = vec![format!("{:<16} {:>14} {:>8} {:>8}", "target", "executions", "exec/s", "crashes")];
    let mut failed = Vec::new();
    for target in targets {
        if !TARGETS.contains(target) {
            return Err(format!("no fuzz target {target}"));
        }
        eprintln!("\n== fuzz {target} for {seconds} s");
        let corpus = fuzz_dir.join("corpus").join(target);
        let output = Command::new("cargo")
            .current_dir(root())
            .args(["+nightly", "fuzz", "run", "--fuzz-dir", "fuzz", "--sanitizer", "none", target])
            .arg(&corpus)
            .args(["--", &format!("-max_total_time={seconds}"), "-timeout=10", "-rss_limit_mb=4096"])
            .args(["-print_final_stats=1"])
            .output()
            .map_err(|e| format!("cargo +nightly fuzz: {e} (install it with `cargo install cargo-fuzz`)"))?;
        let log = String::from_utf8_lossy(&output.stderr);
        let stat = |name: &str| {
            log.lines().find_map(|l| l.strip_prefix(&format!("stat::{name}:")).map(|v| v.trim().to_owned()))
        };
        let executions = stat("number_of_executed_units").unwrap_or_else(|| "?".into());
        let rate = stat("average_exec_per_sec").unwrap_or_else(|| "?".into());
        let crashed = !output.status.success();
        if crashed {
            failed.push(*target);
            eprintln!(
                "{}",
                log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        lines.push(format!("{target:<16} {executions:>14} {rate:>8} {:>8}", if crashed { "CRASH" } else { "0" }));
    }
    let summary = lines.join("\n");
    println!("{summary}");
    let out = root().join("target/hush-fuzz");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    std::fs::write(out.join("summary.txt"), format!("{summary}\n")).map_err(|e| e.to_string())?;
    if failed.is_empty() { Ok(()) } else { Err(format!("crashes in {failed:?}: see fuzz/artifacts/")) }
}
