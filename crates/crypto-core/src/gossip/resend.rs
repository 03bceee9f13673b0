//! When our open room-key requests are sent again to all our devices:
//! [`RESEND_FIRST`] after the clock started (when a room-key request
//! opened while none was open), then after twice as long each time, up to
//! [`RESEND_MAX`]. A device of ours that could not answer, or answered
//! with a worse copy, keeps our request as long as that longest wait and
//! answers by itself once it holds a better copy (see `answers`); a device
//! that restarted, or kept more requests than it can, forgot ours, so the
//! request is sent again on this slow clock. A device of ours that appears,
//! or that we verify, gets the open requests at once (see the engine's
//! `note_announced`). Not persisted: after a restart every open request is
//! sent at once anyway.

use std::time::Duration;

use crate::Timestamp;

/// The first wait before open room-key requests are sent again.
pub const RESEND_FIRST: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest wait between two sendings of the open room-key requests.
pub const RESEND_MAX: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The resend clock of the open room-key requests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResendClock {
    /// When they are sent next (`None`: not started).
    at: Option<Timestamp>,
    /// The wait that led to `at`.
    wait: Option<Duration>,
}

impl ResendClock {
    /// Stops the clock: it starts again at the next look.
    pub(crate) fn restart(&mut self) {
        *self = Self::default();
    }

    /// Whether the clock runs.
    pub(crate) fn started(&self) -> bool {
        self.at.is_some()
    }

    /// When the requests are sent next, if the clock runs.
    pub(crate) fn deadline(&self) -> Option<Timestamp> {
        self.at
    }

    /// Looks at the clock at `now`: starts it if it was not running, and
    /// says whether the requests are due now (then the next wait doubles).
    pub(crate) fn tick(&mut self, now: Timestamp) -> bool {
        let wait = self.wait.unwrap_or(RESEND_FIRST);
        match self.at {
            None => {
                self.at = Some(now.saturating_add(wait));
                self.wait = Some(wait);
                false
            }
            Some(at) if at <= now => {
                let next = wait.saturating_mul(2).min(RESEND_MAX);
                self.at = Some(now.saturating_add(next));
                self.wait = Some(next);
                true
            }
            Some(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp::EPOCH.saturating_add(Duration::from_secs(secs))
    }

    #[test]
    fn the_first_look_starts_the_clock_and_sends_nothing() {
        let mut clock = ResendClock::default();
        assert!(!clock.started());
        assert!(!clock.tick(at(100)));
        assert_eq!(clock.deadline(), Some(at(100 + RESEND_FIRST.as_secs())));
    }

    #[test]
    fn the_wait_doubles_after_each_sending_up_to_the_maximum() {
        let mut clock = ResendClock::default();
        clock.tick(at(0));
        let mut waits = Vec::new();
        for _ in 0..8 {
            let due = clock.deadline().unwrap_or(at(0)).saturating_duration_since(at(0)).as_secs();
            assert!(!clock.tick(at(due - 1)), "not due a second early");
            assert!(clock.tick(at(due)), "due at its deadline");
            let next = clock.deadline().unwrap_or(at(0)).saturating_duration_since(at(0)).as_secs();
            waits.push(next - due);
        }
        let first = RESEND_FIRST.as_secs();
        let max = RESEND_MAX.as_secs();
        assert_eq!(waits, vec![2 * first, 4 * first, max, max, max, max, max, max]);
    }

    #[test]
    fn a_late_look_sends_once_and_waits_from_then() {
        let mut clock = ResendClock::default();
        clock.tick(at(0));
        let late = 3 * RESEND_FIRST.as_secs();
        assert!(clock.tick(at(late)));
        assert!(!clock.tick(at(late)), "one sending per deadline, however late");
        assert_eq!(clock.deadline(), Some(at(late + 2 * RESEND_FIRST.as_secs())));
    }

    #[test]
    fn a_restart_goes_back_to_the_first_wait() {
        let mut clock = ResendClock::default();
        clock.tick(at(0));
        assert!(clock.tick(at(RESEND_FIRST.as_secs())));
        clock.restart();
        assert!(!clock.started());
        assert!(!clock.tick(at(5000)));
        assert_eq!(clock.deadline(), Some(at(5000 + RESEND_FIRST.as_secs())));
    }
}
