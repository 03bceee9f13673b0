//! `cargo xtask bench [group]`: runs the benchmarks in release mode.

use super::cargo;

/// Benchmark groups: name, package, bench target.
const GROUPS: [(&str, &str, &str); 1] = [("export", "hush-testing", "export_memory")];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let wanted = args.first().map(String::as_str);
    let mut ran = false;
    for (name, package, target) in GROUPS {
        if wanted.is_none_or(|w| w == name) {
            let mut bench = cargo();
            bench.args(["bench", "-p", package, "--bench", target]);
            super::run(bench, &format!("bench {name}"))?;
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
