//! Collects the runs' phase timings and peak memory, and prints them side by
//! side: per phase the median, the time per item, hush ÷ matrix-sdk-crypto and
//! hush ÷ floor.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Engine, Phase};

/// Every measurement of one benchmark run.
#[derive(Default)]
pub struct Report {
    /// (workload, phase, engine) → (items, times of the repetitions).
    phases: BTreeMap<(String, &'static str, Engine), (usize, Vec<Duration>)>,
    /// (workload, engine) → peak RSS growth of each repetition, in KiB.
    peaks: BTreeMap<(String, Engine), Vec<u64>>,
    /// Workloads in the order they ran.
    order: Vec<String>,
    /// Workload → the name of its floor workload.
    floor_names: BTreeMap<String, String>,
}

fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

fn median_u64(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

fn per_item_us(time: Duration, items: usize) -> f64 {
    time.as_secs_f64() * 1e6 / items.max(1) as f64
}

const PHASE_ORDER: [&str; 8] =
    ["keys_query", "claim_request", "keys_claim", "share_room_key", "total", "encrypt", "decrypt", "receive"];

impl Report {
    /// Records the peak RSS growth of one run of `workload` on `engine`.
    pub fn record_peak(&mut self, workload: &str, engine: Engine, peak_kib: u64) {
        self.peaks.entry((workload.to_owned(), engine)).or_default().push(peak_kib);
    }

    /// Names the floor workload measured alongside `workload`.
    pub fn name_floor(&mut self, workload: &str, floor: &str) {
        self.floor_names.insert(workload.to_owned(), floor.to_owned());
    }

    /// Records one repetition of `workload` on `engine`. A `total` phase is
    /// added when there is more than one phase.
    pub fn record(&mut self, workload: &str, engine: Engine, phases: &[Phase]) {
        if !self.order.iter().any(|w| w == workload) {
            self.order.push(workload.to_owned());
        }
        let mut all = phases.to_vec();
        if phases.len() > 1 && phases.iter().any(|p| p.name == "keys_claim") {
            let time = phases.iter().map(|p| p.time).sum();
            all.push(Phase { name: "total", items: phases[0].items, time });
        }
        for phase in all {
            let entry =
                self.phases.entry((workload.to_owned(), phase.name, engine)).or_insert((phase.items, Vec::new()));
            entry.1.push(phase.time);
        }
    }

    fn per_item(&self, workload: &str, phase: &str, engine: Engine) -> Option<(f64, Duration, usize)> {
        let (items, times) = self.phases.get(&(workload.to_owned(), phase_key(phase)?, engine))?;
        let median = median(times);
        Some((per_item_us(median, *items), median, times.len()))
    }

    /// The floor row for a workload's phase, if the floor measured it.
    fn floor(&self, workload: &str, phase: &str) -> Option<f64> {
        if phase == "total" {
            let claim = self.per_item(workload, "keys_claim", Engine::Floor)?.0;
            let share = self.per_item(workload, "share_room_key", Engine::Floor)?.0;
            return Some(claim + share);
        }
        self.per_item(workload, phase, Engine::Floor).map(|f| f.0)
    }

    /// The side-by-side table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<22} {:<15} {:<10} {:>10} {:>11} {:>10} {:>11} {:>9} {:>9}\n",
            "workload", "phase", "hush on", "hush ms", "hush µs/it", "sdk ms", "sdk µs/it", "hush÷sdk", "÷floor"
        ));
        for workload in &self.order {
            for (hush, store) in [(Engine::Hush, "memory"), (Engine::HushRedb, "redb")] {
                let Some(sdk) = hush.counterpart() else { continue };
                for phase in PHASE_ORDER {
                    let Some((h_us, h_med, _)) = self.per_item(workload, phase, hush) else { continue };
                    let sdk_row = self.per_item(workload, phase, sdk);
                    let floor = self.floor(workload, phase);
                    let fmt_ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
                    out.push_str(&format!(
                        "{:<22} {:<15} {:<10} {:>10} {:>11.1} {:>10} {:>11} {:>9} {:>9}\n",
                        workload,
                        phase,
                        store,
                        fmt_ms(h_med),
                        h_us,
                        sdk_row.map_or("-".into(), |s| fmt_ms(s.1)),
                        sdk_row.map_or("-".into(), |s| format!("{:.1}", s.0)),
                        sdk_row.map_or("-".into(), |s| format!("{:.2}", h_us / s.0)),
                        floor.filter(|_| hush == Engine::Hush).map_or("-".into(), |f| format!("{:.2}", h_us / f)),
                    ));
                }
            }
        }
        out.push_str("\nfloor (bare vodozemac, one core):\n");
        for workload in &self.order {
            for phase in PHASE_ORDER {
                if let Some(us) = self.floor(workload, phase) {
                    let name = self.floor_names.get(workload).unwrap_or(workload);
                    out.push_str(&format!("{:<22} {:<15} {:>10.1} µs/item\n", name, phase, us));
                }
            }
        }
        out.push_str("\npeak RSS growth (median MiB):\n");
        for workload in &self.order {
            let row: Vec<String> = [Engine::Hush, Engine::Sdk, Engine::HushRedb, Engine::SdkSqlite, Engine::Floor]
                .into_iter()
                .filter_map(|e| {
                    let peaks = self.peaks.get(&(workload.clone(), e))?;
                    Some(format!("{} {:.1}", e.name(), median_u64(peaks) as f64 / 1024.0))
                })
                .collect();
            if !row.is_empty() {
                out.push_str(&format!("{:<22} {}\n", workload, row.join(" | ")));
            }
        }
        out
    }

    /// Every measurement as JSON: per workload, phase and engine the
    /// repetitions, median and per-item time; peaks per workload and engine.
    pub fn to_json(&self, machine: &str) -> Value {
        let phases: Vec<Value> = self
            .phases
            .iter()
            .map(|((workload, phase, engine), (items, times))| {
                let median = median(times);
                json!({
                    "workload": workload,
                    "phase": phase,
                    "engine": engine.name(),
                    "items": items,
                    "repetitions_ms": times.iter().map(|t| t.as_secs_f64() * 1e3).collect::<Vec<_>>(),
                    "median_ms": median.as_secs_f64() * 1e3,
                    "per_item_us": per_item_us(median, *items),
                })
            })
            .collect();
        let peaks: Vec<Value> = self
            .peaks
            .iter()
            .map(|((workload, engine), kib)| {
                json!({ "workload": workload, "engine": engine.name(), "peak_rss_growth_kib": kib, "median_kib": median_u64(kib) })
            })
            .collect();
        json!({ "machine": machine, "phases": phases, "peak_rss": peaks })
    }
}

fn phase_key(phase: &str) -> Option<&'static str> {
    PHASE_ORDER.into_iter().find(|p| *p == phase)
}
