//! Spreading independent CPU work over the cores: Olm session creation,
//! per-device encryption, per-event decryption in a batch. Work is split into
//! contiguous parts of about equal weight, one per worker thread (scoped, so
//! the parts may borrow); the calling thread takes the first part. Results
//! come back in the order of the parts, so callers stay deterministic.
//!
//! The engine stays sans-I/O: threads are only a way to use the CPU, nothing
//! here blocks on anything but the work itself. A machine without threads
//! (wasm) or set to one worker runs everything on the calling thread.

use std::num::NonZeroUsize;
use std::sync::{Mutex, OnceLock, PoisonError};

/// Below this much total weight a batch runs on the calling thread: starting
/// a thread costs about as much as a few cheap items.
pub(crate) const MIN_PARALLEL_WEIGHT: usize = 16;

/// The default number of workers: the cores this process may use (asked
/// once; the answer involves reading cgroup files).
pub(crate) fn default_workers() -> usize {
    static WORKERS: OnceLock<usize> = OnceLock::new();
    *WORKERS.get_or_init(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
}

/// How many parts [`run_split`] makes of `jobs` jobs of `total` weight.
pub(crate) fn parts(jobs: usize, total: usize, workers: usize) -> usize {
    workers.min(jobs).min(total / MIN_PARALLEL_WEIGHT).max(1)
}

/// Splits `jobs` into at most `workers` contiguous parts of about equal
/// `weight` and runs `work` on each, in parallel. Returns one result per part,
/// in order. With one worker (or too little weight) it is a plain call.
pub(crate) fn run_split<J, R>(
    jobs: Vec<J>,
    workers: usize,
    weight: impl Fn(&J) -> usize,
    work: impl Fn(Vec<J>) -> R + Sync,
) -> Vec<R>
where
    J: Send,
    R: Send,
{
    let total: usize = jobs.iter().map(&weight).sum();
    let workers = parts(jobs.len(), total, workers);
    if workers == 1 {
        return vec![work(jobs)];
    }
    let parts = split_by_weight(jobs, workers, total, &weight);
    // Each part sits in a slot its worker takes it from; a part whose thread
    // could not start is still in its slot afterwards and runs here.
    let slots: Vec<Mutex<Option<Vec<J>>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    let results: Vec<Mutex<Option<R>>> = slots.iter().map(|_| Mutex::new(None)).collect();
    let run = |i: usize| {
        let part = slots[i].lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(part) = part {
            let result = work(part);
            *results[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        }
    };
    std::thread::scope(|scope| {
        let run = &run;
        let handles: Vec<_> = (1..slots.len())
            .filter_map(|i| {
                std::thread::Builder::new()
                    .name("hush-worker".into())
                    .spawn_scoped(scope, move || run(i))
                    .inspect_err(|error| tracing::debug!(%error, "no worker thread; the part runs on the caller's"))
                    .ok()
            })
            .collect();
        run(0);
        for handle in handles {
            // A panic in a worker is a bug in the engine: pass it on.
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        (1..slots.len()).for_each(run);
    });
    results.into_iter().filter_map(|r| r.into_inner().unwrap_or_else(PoisonError::into_inner)).collect()
}

/// Contiguous parts of about `total / parts` weight each.
fn split_by_weight<J>(jobs: Vec<J>, parts: usize, total: usize, weight: &impl Fn(&J) -> usize) -> Vec<Vec<J>> {
    let target = total.div_ceil(parts).max(1);
    let mut out: Vec<Vec<J>> = Vec::with_capacity(parts);
    let mut current = Vec::new();
    let mut current_weight = 0;
    for job in jobs {
        current_weight += weight(&job);
        current.push(job);
        if current_weight >= target && out.len() + 1 < parts {
            out.push(std::mem::take(&mut current));
            current_weight = 0;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_keep_order_and_cover_every_job() {
        for workers in 1..5 {
            let jobs: Vec<usize> = (0..100).collect();
            let parts = run_split(jobs, workers, |_| 1, |part| part);
            assert!(parts.len() <= workers);
            assert_eq!(parts.concat(), (0..100).collect::<Vec<_>>());
        }
    }

    #[test]
    fn light_batches_stay_on_the_calling_thread() {
        let caller = std::thread::current().id();
        let parts = run_split(vec![1, 2, 3], 4, |_| 1, |part| (std::thread::current().id(), part));
        assert_eq!(parts, vec![(caller, vec![1, 2, 3])]);
    }

    #[test]
    fn heavy_jobs_are_balanced_by_weight() {
        // One heavy job and many light ones: the heavy one gets a part of its own.
        let mut jobs = vec![64];
        jobs.extend(std::iter::repeat_n(1, 64));
        let parts = run_split(jobs, 2, |w| *w, |part| part.iter().sum::<usize>());
        assert_eq!(parts, vec![64, 64]);
    }
}
