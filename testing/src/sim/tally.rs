//! [`Tally`]: what runs saw, summed over runs: faults injected, and every
//! event a device could not read at first, by what kept its key away and
//! by its cause, with how it ended (healed, and how, or still unreadable).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::oracle::{HealPath, View};
use super::world::World;

/// How the unreadable events of one (fault, cause) row ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Device × event pairs first seen unreadable.
    pub seen: u64,
    /// Healed by a key that arrived late over Olm.
    pub late_key: u64,
    /// Healed from the key backup.
    pub backup: u64,
    /// Healed by a key forwarded from one of our own devices.
    pub own_device: u64,
    /// Still unreadable at the end of the run.
    pub unhealed: u64,
}

/// Counts over one or many runs.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Runs summed.
    pub runs: u64,
    /// Ops run.
    pub ops: u64,
    /// Messages sent.
    pub messages: u64,
    /// Device × event pairs read and decrypted the first time.
    pub decrypted_first_time: u64,
    /// Faults and other happenings, by name.
    pub faults: BTreeMap<String, u64>,
    /// Other counts, by name.
    pub counts: BTreeMap<String, u64>,
    /// (what kept the key away, first cause) → how it ended.
    pub utd: BTreeMap<(String, String), Outcomes>,
}

impl Tally {
    pub(super) fn count_fault(&mut self, name: &str) {
        *self.faults.entry(name.to_owned()).or_default() += 1;
    }

    pub(super) fn count(&mut self, name: &str) {
        *self.counts.entry(name.to_owned()).or_default() += 1;
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: &Self) {
        self.runs += other.runs;
        self.ops += other.ops;
        self.messages += other.messages;
        self.decrypted_first_time += other.decrypted_first_time;
        for (k, v) in &other.faults {
            *self.faults.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.counts {
            *self.counts.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.utd {
            let row = self.utd.entry(k.clone()).or_default();
            row.seen += v.seen;
            row.late_key += v.late_key;
            row.backup += v.backup;
            row.own_device += v.own_device;
            row.unhealed += v.unhealed;
        }
    }

    /// The tally as Markdown tables.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} runs, {} ops, {} messages; {} device × message pairs decrypted at first read.\n",
            self.runs, self.ops, self.messages, self.decrypted_first_time
        );
        let _ = writeln!(out, "| fault or event | times |\n|---|---:|");
        for (name, n) in self.faults.iter().chain(&self.counts) {
            let _ = writeln!(out, "| {name} | {n} |");
        }
        let _ = writeln!(
            out,
            "\n| what kept the key away | cause (as hush reports it) | unreadable at first | healed: late key | healed: backup | healed: own device | still unreadable |\n|---|---|---:|---:|---:|---:|---:|"
        );
        for ((fault, cause), o) in &self.utd {
            let _ = writeln!(
                out,
                "| {fault} | `{cause}` | {} | {} | {} | {} | {} |",
                o.seen, o.late_key, o.backup, o.own_device, o.unhealed
            );
        }
        out
    }
}

impl World {
    /// Adds the end of this run to its tally: every view that was ever
    /// unreadable, by what kept the key away and its first cause.
    pub(super) fn tally_views(&mut self) {
        let mut rows: Vec<((String, String), View)> = Vec::new();
        let mut first_time = 0;
        for d in self.live() {
            let dev = &self.devices[d];
            for (&e, view) in &dev.views {
                let ev = &self.events[e];
                let first = match view {
                    View::Decrypted { healed: None } => {
                        first_time += 1;
                        continue;
                    }
                    View::Decrypted { healed: Some(healed) } => healed.first.name(),
                    View::Utd { first, .. } => first.name(),
                };
                let blame = self.blames.of(d, e, ev);
                let fault = if !ev.entitled.contains(&dev.user) {
                    "not a member when sent".to_owned()
                } else if dev.created_step > ev.step {
                    "device newer than the message".to_owned()
                } else if let Some(b) = blame.iter().next() {
                    b.name().to_owned()
                } else {
                    "none (late delivery)".to_owned()
                };
                rows.push(((fault, first.to_owned()), view.clone()));
            }
        }
        self.tally.decrypted_first_time += first_time;
        for (key, view) in rows {
            let row = self.tally.utd.entry(key).or_default();
            row.seen += 1;
            match view {
                View::Decrypted { healed: Some(healed) } => match healed.path {
                    HealPath::LateKey => row.late_key += 1,
                    HealPath::Backup => row.backup += 1,
                    HealPath::OwnDevice => row.own_device += 1,
                },
                _ => row.unhealed += 1,
            }
        }
    }
}
