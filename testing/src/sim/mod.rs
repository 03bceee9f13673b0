//! A deterministic simulation of a whole Matrix network around hush's
//! engine: a homeserver model ([`TestServer`](crate::TestServer) plus room
//! membership and history visibility), the devices of three users, each an
//! `OlmMachine` on its own store (in memory, or a redb file for every
//! fourth device), driven by a schedule generated from a seed: messages,
//! invites, joins, leaves, new logins (verified or not, with or without
//! the recovery key), logouts, restarts from the store, kills between any
//! two engine calls, to-device messages lost, duplicated, reordered or
//! held back, failing requests, clock jumps, and settles.
//!
//! After every op the invariants are checked: no device reads an event
//! its user could not read when it was sent (checked as it is read), a
//! decrypted event has the body that was sent, an event once decrypted
//! stays decryptable (across kills too), no one-time key is claimed twice,
//! no Olm message key or Megolm index is used twice, and every unreadable
//! event has a cause (`OlmMachine::utd_cause`) that the truth accepts,
//! a decrypted event names its real sender device, and a forwarded key
//! reaches only a device that verified one of its own. A settle (faults
//! paused, killed devices reopened, held messages delivered, every device
//! synced until quiet in four phases, the last a week later) adds the strict
//! checks: only a recorded fault on the sender's path since its session
//! began excuses a key that never came; no event stays unreadable whose key
//! is in a backup the device can read, or held by an own device it and
//! that device verified each other; every device read everything; device
//! lists converged.
//!
//! A failing run reports its seed, the op and the schedule; [`shrink`]
//! finds a shorter failing schedule. `cargo xtask sim --seed S` replays.

mod check;
mod device;
mod ledger;
mod net;
mod oracle;
mod read;
pub mod schedule;
mod tally;
mod world;

pub use schedule::{Op, generate};
pub use tally::{Outcomes, Tally};

use world::World;

/// Why an op stopped.
#[derive(Debug)]
pub(crate) enum Halt {
    /// The device was killed by an armed crash: the op ends there.
    Killed,
    /// The device is down (killed earlier, not reopened yet).
    Down,
    /// An invariant failed.
    Invariant(String),
}

impl Halt {
    /// An engine error where none may happen.
    pub(crate) fn engine(error: impl std::fmt::Display) -> Self {
        Self::Invariant(format!("the engine failed: {error}"))
    }
}

/// A failed run.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The op (its position in the schedule) that broke an invariant.
    pub step: usize,
    /// That op.
    pub op: Option<Op>,
    /// What broke.
    pub message: String,
    /// What happened before, one line each.
    pub log: Vec<String>,
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// The seed.
    pub seed: u64,
    /// The schedule that ran.
    pub schedule: Vec<Op>,
    /// The first invariant that failed, if any.
    pub failure: Option<Failure>,
    /// What the run saw.
    pub tally: Tally,
}

/// Ops per generated schedule.
pub const DEFAULT_OPS: usize = 80;

/// Runs the schedule of `seed` ([`DEFAULT_OPS`] ops, then a final settle).
pub fn run_seed(seed: u64) -> RunOutcome {
    run_schedule(seed, generate(seed, DEFAULT_OPS))
}

/// Runs `schedule` (with `seed` for the world's ids), then a final settle.
pub fn run_schedule(seed: u64, schedule: Vec<Op>) -> RunOutcome {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let (failure, tally) = match runtime {
        Ok(runtime) => runtime.block_on(run(seed, &schedule)),
        Err(e) => {
            (Some(Failure { step: 0, op: None, message: format!("no runtime: {e}"), log: vec![] }), Tally::default())
        }
    };
    RunOutcome { seed, schedule, failure, tally }
}

async fn run(seed: u64, schedule: &[Op]) -> (Option<Failure>, Tally) {
    let mut world = match World::new(seed).await {
        Ok(world) => world,
        Err(halt) => {
            let failure = Failure { step: 0, op: None, message: format!("setup: {halt:?}"), log: vec![] };
            return (Some(failure), Tally::default());
        }
    };
    let ops = schedule.iter().copied().map(Some).chain([None]);
    for (step, op) in ops.enumerate() {
        world.step = step;
        let result = match op {
            Some(op) => world.apply(op).await,
            None => world.settle().await,
        };
        let result = match result {
            Ok(()) | Err(Halt::Down) => world.check(false),
            Err(Halt::Killed) => {
                let (device, call) = world
                    .devices
                    .iter_mut()
                    .find_map(|d| Some((d.device_id.to_string(), d.killed_before.take()?)))
                    .unwrap_or_default();
                let op = op.map(|o| o.to_string()).unwrap_or_default();
                world.note(format!("step {step}: {device} was killed during `{op}`, before `{call}`"));
                world.tally.count_fault("crash (killed mid-op)");
                world.check(false)
            }
            Err(halt) => Err(halt),
        };
        if let Err(halt) = result {
            let message = match halt {
                Halt::Invariant(message) => message,
                other => format!("{other:?}"),
            };
            let failure = Failure { step, op, message, log: std::mem::take(&mut world.log) };
            return (Some(failure), world.tally);
        }
    }
    world.tally.runs = 1;
    world.tally.ops = schedule.len() as u64;
    world.tally.messages = world.events.len() as u64;
    for device in &world.devices {
        *world.tally.counts.entry("Olm messages no session decrypted".into()).or_default() +=
            device.counts.undecryptable;
        *world.tally.counts.entry("m.dummy received (a wedged session replaced)".into()).or_default() +=
            device.counts.dummies;
    }
    world.tally_views();
    (None, world.tally)
}

/// A shorter schedule that still fails (any failure), found by dropping
/// chunks of ops while the run keeps failing; at most `attempts` runs.
pub fn shrink(seed: u64, schedule: Vec<Op>, attempts: usize) -> Vec<Op> {
    shrink_with(schedule, attempts, |candidate| run_schedule(seed, candidate.to_vec()).failure.is_some())
}

/// The shrinking of [`shrink`] with any failure test: halves, then
/// quarters... of the schedule are dropped while `fails` still holds.
pub fn shrink_with(schedule: Vec<Op>, attempts: usize, mut fails: impl FnMut(&[Op]) -> bool) -> Vec<Op> {
    let mut best = schedule;
    let mut chunk = best.len() / 2;
    let mut tries = 0;
    while chunk > 0 && tries < attempts {
        let mut start = 0;
        let mut shrunk = false;
        while start < best.len() && tries < attempts {
            let mut candidate = best.clone();
            candidate.drain(start..(start + chunk).min(best.len()));
            tries += 1;
            if fails(&candidate) {
                best = candidate;
                shrunk = true;
            } else {
                start += chunk;
            }
        }
        if !shrunk {
            chunk /= 2;
        }
    }
    best
}
