//! `cargo xtask bench [group]`: runs the benchmarks in release mode.

use super::cargo;

/// The benchmark crate that runs hush beside matrix-sdk-crypto (a workspace of its own).
const BENCH_MANIFEST: &str = "testing/bench/Cargo.toml";

/// Benchmark groups: name, package (`None`: the side-by-side bench crate), bench target.
/// `workloads` (the engines side by side) runs first: its table is the one
/// `cargo xtask bench` is for; it also writes `target/hush-bench/workloads.json`.
const GROUPS: [(&str, Option<&str>, &str); 4] = [
    ("workloads", None, "workloads"),
    ("export", Some("hush-testing"), "export_memory"),
    ("stores", None, "stores"),
    ("attachments", Some("hush-testing"), "attachment_memory"),
];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let wanted = args.first().map(String::as_str);
    let mut ran = false;
    for (name, package, target) in GROUPS {
        if wanted.is_none_or(|w| w == name) {
            let mut bench = cargo();
            match package {
                Some(package) => bench.args(["bench", "-p", package, "--bench", target]),
                // matrix-sdk-crypto 0.19 declares rust-version 1.96 but builds on 1.95.
                None => {
                    bench.args(["bench", "--ignore-rust-version", "--manifest-path", BENCH_MANIFEST, "--bench", target])
                }
            };
            // The stores group measures PostgreSQL too: the test cluster.
            let mut started = crate::homeserver::Started::default();
            if name == "stores" {
                started.ensure(crate::homeserver::POSTGRES_SCRIPT, "the test PostgreSQL cluster")?;
            }
            // The attachments group sends a file through Synapse.
            if name == "attachments" {
                started.ensure(crate::homeserver::SCRIPT, "Synapse")?;
            }
            let result = super::run(bench, &format!("bench {name}"));
            started.stop()?;
            result?;
            ran = true;
        }
    }
    if ran {
        Ok(())
    } else {
        let names: Vec<_> = GROUPS.iter().map(|(n, _, _)| *n).collect();
        Err(format!("unknown benchmark group {wanted:?}; known: {names:?}"))
    }
}
