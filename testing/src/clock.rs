//! A virtual clock shared by every engine in a scenario.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hush_crypto_core::Timestamp;

/// Time for scenario tests: starts at a fixed instant and moves only when told.
#[derive(Clone, Debug)]
pub struct VirtualClock {
    millis: Arc<AtomicU64>,
}

impl Default for VirtualClock {
    fn default() -> Self {
        // 2026-01-01T00:00:00Z: a realistic, fixed start.
        Self { millis: Arc::new(AtomicU64::new(1_767_225_600_000)) }
    }
}

impl VirtualClock {
    /// The current virtual time.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.millis.load(Ordering::SeqCst))
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        let millis = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.millis.fetch_add(millis, Ordering::SeqCst);
    }
}
