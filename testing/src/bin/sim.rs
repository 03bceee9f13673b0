//! `hush-sim`: runs the network simulator (`hush_testing::sim`) over many
//! seeds, or replays one. `cargo xtask sim` builds and runs it.
//!
//! * `--runs N` (default 1000): seeds `--first` (default 1) to first+N-1,
//!   spread over the cores; prints the tally of unable-to-decrypt causes.
//! * `--seed S`: one seed, with its schedule and what happened.
//! * `--table FILE`: also writes the tally as Markdown.
//! * `--shrink` (with `--seed`): also looks for a shorter failing schedule.
//! * `HUSH_SIM_TRACE=1`: prints what happens as it happens, with every
//!   to-device message each device takes and what the engine made of it.
//!
//! A failing seed prints its schedule, a shrunk schedule, and the command
//! that replays it; the exit code is then 1.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hush_testing::sim::{self, RunOutcome, Tally};

struct Args {
    runs: u64,
    first: u64,
    seed: Option<u64>,
    table: Option<String>,
    shrink: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args { runs: 1000, first: 1, seed: None, table: None, shrink: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => args.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--first" => args.first = value()?.parse().map_err(|e| format!("--first: {e}"))?,
            "--seed" => args.seed = Some(value()?.parse().map_err(|e| format!("--seed: {e}"))?),
            "--table" => args.table = Some(value()?),
            "--shrink" => args.shrink = true,
            other => {
                return Err(format!("unknown argument {other}; use --runs N [--first F] | --seed S, --table FILE"));
            }
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("hush-sim: {message}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        return replay(seed, args.shrink);
    }
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(args.first));
    let Some(end) = args.first.checked_add(args.runs) else {
        eprintln!("hush-sim: --first + --runs is too large");
        return ExitCode::from(2);
    };
    let tally = Arc::new(Mutex::new(Tally::default()));
    let failures = Arc::new(Mutex::new(Vec::<RunOutcome>::new()));
    let done = Arc::new(AtomicU64::new(0));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (next, tally, failures, done) = (next.clone(), tally.clone(), failures.clone(), done.clone());
            std::thread::spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= end {
                        return;
                    }
                    let outcome = sim::run_seed(seed);
                    let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
                    if finished % 500 == 0 {
                        eprintln!("hush-sim: {finished} runs done");
                    }
                    match outcome.failure {
                        Some(_) => failures.lock().unwrap_or_else(|e| e.into_inner()).push(outcome),
                        None => tally.lock().unwrap_or_else(|e| e.into_inner()).merge(&outcome.tally),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    let tally = tally.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut failures = std::mem::take(&mut *failures.lock().unwrap_or_else(|e| e.into_inner()));
    failures.sort_by_key(|f| f.seed);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "hush-sim: seeds {}..={} ({} runs) on {threads} threads in {seconds:.1} s: {} failed\n",
        args.first,
        end - 1,
        args.runs,
        failures.len()
    );
    println!("{}", tally.markdown());
    if let Some(path) = &args.table
        && let Err(e) = std::fs::write(path, tally.markdown())
    {
        eprintln!("hush-sim: writing {path}: {e}");
    }
    if let Some(first) = failures.first() {
        report(first, true);
        let seeds: Vec<String> = failures.iter().map(|f| f.seed.to_string()).collect();
        println!("failing seeds: {}", seeds.join(" "));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Runs one seed and prints everything about it.
fn replay(seed: u64, shrink: bool) -> ExitCode {
    let outcome = sim::run_seed(seed);
    match &outcome.failure {
        None => {
            println!("seed {seed}: every invariant held over {} ops", outcome.schedule.len());
            println!("{}", outcome.tally.markdown());
            ExitCode::SUCCESS
        }
        Some(_) => {
            report(&outcome, shrink);
            ExitCode::FAILURE
        }
    }
}

/// Prints a failing run: the schedule, the log, the failure, a shrunk schedule.
fn report(outcome: &RunOutcome, shrink: bool) {
    let Some(failure) = &outcome.failure else { return };
    println!("seed {} FAILED at op {}: {}", outcome.seed, failure.step, failure.message);
    match failure.op {
        Some(op) => println!("the op: {op}"),
        None => println!("the op: the final settle"),
    }
    println!("\nschedule:");
    for (n, op) in outcome.schedule.iter().enumerate().take(failure.step + 1) {
        println!("  {n:3}  {op}");
    }
    println!("\nwhat happened:");
    for line in &failure.log {
        println!("  {line}");
    }
    if shrink {
        let shrunk =
            sim::shrink(outcome.seed, outcome.schedule[..(failure.step + 1).min(outcome.schedule.len())].to_vec(), 300);
        println!("\nshrunk to {} ops (same seed):", shrunk.len());
        for op in &shrunk {
            println!("  {op}");
        }
    }
    println!("\nreplay: cargo xtask sim --seed {}", outcome.seed);
}
