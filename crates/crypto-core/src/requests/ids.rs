//! [`IdSource`]: where the engine's request and transaction ids come from.
//!
//! An id is a per-machine seed followed by a counter. By default the seed is
//! random, so two processes of one device (a restart) never repeat a
//! transaction id: the server drops a to-device request whose id it saw
//! before from the same device, so a repeated id would lose messages. A
//! simulation seeds it (see `OlmMachine::set_id_seed`), so a replayed run
//! makes the same ids in the same order.

use std::sync::atomic::{AtomicU64, Ordering};

use ruma_common::OwnedTransactionId;

/// A source of unique ids: `hush` + 16 hex digits of seed + a counter.
#[derive(Debug)]
pub(crate) struct IdSource {
    seed: AtomicU64,
    counter: AtomicU64,
}

impl IdSource {
    /// A source with a random seed.
    pub(crate) fn random() -> Self {
        let mut bytes = [0u8; 8];
        // Without an operating-system RNG the engine could not make keys
        // either; a fixed seed then only risks repeating ids across restarts.
        if getrandom::fill(&mut bytes).is_err() {
            tracing::error!("no random source for request ids; using a fixed seed");
        }
        Self::seeded(u64::from_le_bytes(bytes))
    }

    /// A source whose ids are fixed by `seed`.
    pub(crate) fn seeded(seed: u64) -> Self {
        Self { seed: AtomicU64::new(seed), counter: AtomicU64::new(0) }
    }

    /// Starts again from `seed` with the counter at zero.
    pub(crate) fn reseed(&self, seed: u64) {
        self.seed.store(seed, Ordering::SeqCst);
        self.counter.store(0, Ordering::SeqCst);
    }

    /// The next id.
    pub(crate) fn next(&self) -> OwnedTransactionId {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let seed = self.seed.load(Ordering::SeqCst);
        OwnedTransactionId::from(format!("hush{seed:016x}{n:x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_fixes_the_sequence_and_ids_never_repeat() {
        let a = IdSource::seeded(7);
        let b = IdSource::seeded(7);
        let first: Vec<_> = (0..100).map(|_| a.next()).collect();
        let second: Vec<_> = (0..100).map(|_| b.next()).collect();
        assert_eq!(first, second);
        let unique: std::collections::HashSet<_> = first.iter().collect();
        assert_eq!(unique.len(), 100);
        let other = IdSource::seeded(8);
        assert_ne!(other.next(), first[0]);
        a.reseed(7);
        assert_eq!(a.next(), first[0]);
    }

    #[test]
    fn random_sources_differ() {
        assert_ne!(IdSource::random().next(), IdSource::random().next());
    }
}
