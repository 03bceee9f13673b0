//! Requests of the engine that failed for good on one attempt: the server
//! refused them (4xx), or answered something the client cannot read (an
//! answer that does not parse, or is too large). Sending such a request
//! again at once gets the same answer, so it waits before its next attempt
//! (a minute, doubled after each failure, up to an hour), while the rest of
//! the drive loop goes on. The engine keeps the request queued until it is
//! answered; a request the engine no longer lists is forgotten here.
//! Transient failures (the server unreachable, 5xx, 429) were already
//! retried by the HTTP layer and are tried again at the next drive.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ruma_common::{OwnedTransactionId, TransactionId};

/// The first wait after a failure.
const FIRST_WAIT: Duration = Duration::from_secs(60);
/// The longest wait.
const MAX_WAIT: Duration = Duration::from_secs(60 * 60);

/// The requests waiting after a failure.
#[derive(Debug, Default)]
pub(crate) struct RequestBackoff {
    waiting: HashMap<OwnedTransactionId, Waiting>,
}

#[derive(Debug)]
struct Waiting {
    failures: u32,
    until: Instant,
}

impl RequestBackoff {
    /// Whether `id` may be sent at `now`.
    pub(crate) fn is_due(&self, id: &TransactionId, now: Instant) -> bool {
        self.waiting.get(id).is_none_or(|w| now >= w.until)
    }

    /// How long until `id` may be sent, if it waits.
    pub(crate) fn wait_left(&self, id: &TransactionId, now: Instant) -> Option<Duration> {
        self.waiting.get(id).map(|w| w.until.saturating_duration_since(now)).filter(|left| !left.is_zero())
    }

    /// `id` failed for good at `now`: how long it waits now.
    pub(crate) fn failed(&mut self, id: &TransactionId, now: Instant) -> Duration {
        let entry = self.waiting.entry(id.to_owned()).or_insert(Waiting { failures: 0, until: now });
        let doublings = entry.failures.min(16);
        entry.failures = entry.failures.saturating_add(1);
        let wait = FIRST_WAIT.saturating_mul(1 << doublings).min(MAX_WAIT);
        entry.until = now + wait;
        wait
    }

    /// `id` was answered.
    pub(crate) fn succeeded(&mut self, id: &TransactionId) {
        self.waiting.remove(id);
    }

    /// Forgets the requests the engine no longer lists.
    pub(crate) fn retain(&mut self, listed: impl Fn(&TransactionId) -> bool) {
        self.waiting.retain(|id, _| listed(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_request_waits_longer_after_each_failure_up_to_an_hour() {
        let mut backoff = RequestBackoff::default();
        let id = TransactionId::new();
        let start = Instant::now();
        assert!(backoff.is_due(&id, start));
        assert_eq!(backoff.failed(&id, start), FIRST_WAIT);
        assert!(!backoff.is_due(&id, start + FIRST_WAIT - Duration::from_secs(1)));
        assert!(backoff.is_due(&id, start + FIRST_WAIT));
        assert_eq!(backoff.failed(&id, start), FIRST_WAIT * 2);
        for _ in 0..40 {
            backoff.failed(&id, start);
        }
        assert_eq!(backoff.failed(&id, start), MAX_WAIT);
        let other = TransactionId::new();
        assert!(backoff.is_due(&other, start), "one request's failures hold back no other");
        backoff.succeeded(&id);
        assert!(backoff.is_due(&id, start));
    }

    #[test]
    fn requests_the_engine_no_longer_lists_are_forgotten() {
        let mut backoff = RequestBackoff::default();
        let (kept, gone) = (TransactionId::new(), TransactionId::new());
        let now = Instant::now();
        backoff.failed(&kept, now);
        backoff.failed(&gone, now);
        backoff.retain(|id| id == kept);
        assert!(!backoff.is_due(&kept, now));
        assert!(backoff.is_due(&gone, now));
        assert_eq!(backoff.waiting.len(), 1);
    }
}
