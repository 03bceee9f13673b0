//! The store lock: a lease that lets several processes, or hosts, share
//! one store without two engines writing from stale state.
//!
//! A holder takes the lock for a lease (a duration from its `now`) and
//! renews it while it works. Whenever the lock passes to a different
//! holder its generation goes up, so a holder that took the lock back can
//! tell whether anyone wrote in between (its caches are then stale). Every
//! batch a holder saves carries a [`LockFence`]: the store applies it only
//! if the lock is still that holder's at that generation, checked in the
//! same atomic write. A holder whose lease ran out and was taken over can
//! therefore not write, whatever its clock says.
//!
//! Leases are compared with the `now` of whoever asks, so holders on
//! several hosts need clocks that agree to well within a lease.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::Timestamp;

/// The lock as a store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// Who holds (or last held) the lock.
    pub holder: String,
    /// Bumped each time the lock passes to a different holder.
    pub generation: u64,
    /// When the lease ends, unless renewed.
    pub expires_at: Timestamp,
    /// The holder let go before its lease ended.
    pub released: bool,
}

/// The lock, held: what [`CryptoStore::try_lock`](super::CryptoStore::try_lock) returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreLease {
    /// Who holds it.
    pub holder: String,
    /// Its generation: different from the one this holder saw last means
    /// someone else held the lock (and may have written) in between.
    pub generation: u64,
    /// When the lease ends, unless renewed.
    pub expires_at: Timestamp,
}

impl StoreLease {
    /// The fence every batch saved under this lease carries.
    pub fn fence(&self) -> LockFence {
        LockFence { holder: self.holder.clone(), generation: self.generation }
    }
}

/// A batch's claim to be written under a lease (see [`Changes::fence`](super::Changes::fence)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockFence {
    /// The holder the batch is written for.
    pub holder: String,
    /// The generation it holds.
    pub generation: u64,
}

/// Longest lease a holder may ask for: a lease is meant to be renewed.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);

impl LockRecord {
    /// The record after `holder` asks for the lock at `now` for `lease`:
    /// taken if free, released, expired or already its own (renewed, the
    /// generation kept if it never changed hands); otherwise
    /// [`StoreError::LockHeld`].
    pub fn take(current: Option<&Self>, holder: &str, now: Timestamp, lease: Duration) -> Result<Self, StoreError> {
        if holder.is_empty() || lease.is_zero() || lease > MAX_LEASE {
            return Err(StoreError::Backend(format!(
                "a store lock needs a holder id and a lease of up to {} s",
                MAX_LEASE.as_secs()
            )));
        }
        let expires_at = now.saturating_add(lease);
        match current {
            None => Ok(Self { holder: holder.to_owned(), generation: 1, expires_at, released: false }),
            Some(record) if record.holder == holder => {
                Ok(Self { holder: holder.to_owned(), generation: record.generation, expires_at, released: false })
            }
            Some(record) if record.released || record.expires_at <= now => Ok(Self {
                holder: holder.to_owned(),
                generation: record.generation.saturating_add(1),
                expires_at,
                released: false,
            }),
            Some(record) => Err(StoreError::LockHeld { holder: record.holder.clone(), expires_at: record.expires_at }),
        }
    }

    /// The record after `lease`'s holder lets go: released, if it still
    /// holds the lock at that generation (otherwise unchanged: `None`).
    pub fn release(current: Option<&Self>, lease: &StoreLease) -> Option<Self> {
        let record = current?;
        (record.holder == lease.holder && record.generation == lease.generation)
            .then(|| Self { released: true, ..record.clone() })
    }

    /// Whether a batch fenced with `fence` may be written:
    /// [`StoreError::LockLost`] unless the lock is still the fence's holder's
    /// at the fence's generation (released or not: a holder that let go
    /// and was not taken over still has nothing stale).
    pub fn check(current: Option<&Self>, fence: &LockFence) -> Result<(), StoreError> {
        match current {
            Some(record) if record.holder == fence.holder && record.generation == fence.generation => Ok(()),
            Some(record) => Err(StoreError::LockLost {
                holder: record.holder.clone(),
                generation: record.generation,
                fenced: fence.generation,
            }),
            None => Err(StoreError::LockLost { holder: String::new(), generation: 0, fenced: fence.generation }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    fn at(seconds: u64) -> Timestamp {
        Timestamp::from_millis(seconds * 1000)
    }

    #[test]
    fn the_generation_changes_only_when_the_holder_does() {
        let a = LockRecord::take(None, "a", at(0), LEASE).unwrap();
        assert_eq!(a.generation, 1);
        let renewed = LockRecord::take(Some(&a), "a", at(5), LEASE).unwrap();
        assert_eq!((renewed.generation, renewed.expires_at), (1, at(15)));
        let lease = StoreLease { holder: "a".into(), generation: 1, expires_at: at(15) };
        let released = LockRecord::release(Some(&renewed), &lease).unwrap();
        assert_eq!(LockRecord::take(Some(&released), "a", at(6), LEASE).unwrap().generation, 1);
        let b = LockRecord::take(Some(&released), "b", at(6), LEASE).unwrap();
        assert_eq!(b.generation, 2);
        assert_eq!(
            LockRecord::take(Some(&b), "a", at(7), LEASE).unwrap_err(),
            StoreError::LockHeld { holder: "b".into(), expires_at: at(16) }
        );
        assert_eq!(LockRecord::take(Some(&b), "a", at(16), LEASE).unwrap().generation, 3, "expired: taken over");
    }

    #[test]
    fn a_fence_of_a_taken_over_lease_is_refused() {
        let a = LockRecord::take(None, "a", at(0), LEASE).unwrap();
        let fence = LockFence { holder: "a".into(), generation: 1 };
        assert_eq!(LockRecord::check(Some(&a), &fence), Ok(()));
        let b = LockRecord::take(Some(&a), "b", at(11), LEASE).unwrap();
        assert!(matches!(LockRecord::check(Some(&b), &fence), Err(StoreError::LockLost { generation: 2, .. })));
        assert!(LockRecord::check(None, &fence).is_err());
        let stale = StoreLease { holder: "a".into(), generation: 1, expires_at: at(10) };
        assert_eq!(LockRecord::release(Some(&b), &stale), None, "a stale holder cannot release another's lock");
    }

    #[test]
    fn a_lease_must_be_named_and_bounded() {
        assert!(LockRecord::take(None, "", at(0), LEASE).is_err());
        assert!(LockRecord::take(None, "a", at(0), Duration::ZERO).is_err());
        assert!(LockRecord::take(None, "a", at(0), MAX_LEASE + Duration::from_secs(1)).is_err());
    }
}
