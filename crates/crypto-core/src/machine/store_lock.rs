//! Sharing the store with other processes or hosts through its lock (see
//! [`crate::store::lock`]): taking and renewing the lease, reloading what
//! this engine holds in memory when someone else held the lock since,
//! letting go, and the rule that nothing leaves (an encrypted event, a
//! queued request) unless the lease still has a third of its length to run.

use std::time::Duration;

use super::{OlmMachine, lock};
use crate::{
    Timestamp,
    devices::DeviceTracker,
    megolm::GroupCache,
    olm::{Account, ClaimState, SessionCache},
    requests::RequestQueue,
    store::{StoreError, StoreLease},
};

/// The lease this engine holds, and the length it was taken or renewed for.
#[derive(Clone, Debug)]
pub(super) struct HeldLease {
    lease: StoreLease,
    length: Duration,
}

/// Something may leave only while more than `1 / SEND_MARGIN` of the
/// lease's length is left to run: what leaves must reach the server before
/// another holder can take the lock over (and rotate a room key, say). A
/// driver renews the lease while work runs, well before that point.
const SEND_MARGIN: u32 = 3;

/// The store lock, taken by [`OlmMachine::lock_store`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreLockOutcome {
    /// The lease: renew it (call `lock_store` again) before it ends.
    pub lease: StoreLease,
    /// Someone else held the lock since this engine last did (or this
    /// engine never held it): everything it kept in memory was reloaded
    /// from the store first.
    pub reloaded: bool,
}

impl OlmMachine {
    /// Takes the store lock for `holder` until `now + lease`, or renews it:
    /// what every process or host sharing this device's store does before
    /// it handles an input, and again before the lease ends. If the lock
    /// changed hands since this engine last held it, the account, Olm
    /// sessions, room keys, tracked users and the engine's other stored
    /// state are reloaded before this returns, and requests not yet sent are
    /// dropped (they are made again from the reloaded state). From then on
    /// every batch the engine saves is fenced with the lease: if another
    /// holder takes the lock over (this lease ran out), the batch fails with
    /// [`StoreError::LockLost`] and nothing of it is written.
    ///
    /// [`StoreError::LockHeld`] while another holder's lease runs.
    pub async fn lock_store(
        &self,
        holder: &str,
        now: Timestamp,
        lease: Duration,
    ) -> Result<StoreLockOutcome, StoreError> {
        // Held across the reload, so no input runs on half-reloaded state.
        let mut account = self.inner.account.lock().await;
        let mut sessions = self.inner.sessions.lock().await;
        let taken = self.inner.store.try_lock(holder, now, lease).await?;
        let reloaded = self.inner.fenced.generation() != Some(taken.generation);
        if reloaded && let Err(error) = self.reload(&mut account, &mut sessions).await {
            // Not usable: let go at once rather than keep the store until the lease ends.
            let _ = self.inner.store.unlock(&taken).await;
            return Err(error);
        }
        self.inner.fenced.set_lease(&taken);
        *lock(&self.inner.lease) = Some(HeldLease { lease: taken.clone(), length: lease });
        Ok(StoreLockOutcome { lease: taken, reloaded })
    }

    /// Renews the lease this engine holds, for work already running under
    /// it: unlike [`lock_store`](Self::lock_store) it never reloads (state
    /// that running work holds would not be reloaded with it). If someone
    /// else held the lock since this engine's lease, the lock is let go again
    /// and the answer is [`StoreError::LockLost`]: the running work must
    /// fail, and its batches do (they carry the old fence).
    pub async fn renew_store_lock(
        &self,
        holder: &str,
        now: Timestamp,
        lease: Duration,
    ) -> Result<StoreLease, StoreError> {
        let ours = self.inner.fenced.generation();
        let taken = self.inner.store.try_lock(holder, now, lease).await.inspect_err(|error| {
            // Held by someone else: ours ended, and nothing may leave under
            // it. (A failing store keeps the lease as it was: it may pass.)
            if matches!(error, StoreError::LockHeld { .. }) {
                lock(&self.inner.lease).take();
            }
        })?;
        if ours != Some(taken.generation) {
            lock(&self.inner.lease).take();
            let _ = self.inner.store.unlock(&taken).await;
            return Err(StoreError::LockLost {
                holder: taken.holder,
                generation: taken.generation,
                fenced: ours.unwrap_or_default(),
            });
        }
        *lock(&self.inner.lease) = Some(HeldLease { lease: taken.clone(), length: lease });
        Ok(taken)
    }

    /// Whether something may leave now: always, if this engine never shared
    /// its store; otherwise only under a held lease with more than a third
    /// of its length left ([`StoreError::LockNotHeld`]). Checked before an
    /// event is encrypted and before requests are handed out, so work that
    /// outlived its lease fails before anything of it reaches the server.
    /// A driver checks it again before each attempt to send a request
    /// (retries included), so a send that waited past the lease never
    /// reaches the server.
    pub fn check_lease_for_sending(&self, now: Timestamp) -> Result<(), StoreError> {
        if self.inner.fenced.generation().is_none() {
            return Ok(());
        }
        let held = lock(&self.inner.lease).clone();
        match held {
            Some(held) if now.saturating_add(held.length / SEND_MARGIN) < held.lease.expires_at => Ok(()),
            held => Err(StoreError::LockNotHeld { expires_at: held.map(|h| h.lease.expires_at), now }),
        }
    }

    /// Lets go of the store lock, so another holder need not wait for the
    /// lease to end. Batches saved afterwards still carry the lease's fence:
    /// they are written only if nobody took the lock in between.
    pub async fn unlock_store(&self) -> Result<(), StoreError> {
        let held = lock(&self.inner.lease).take();
        match held {
            Some(held) => self.inner.store.unlock(&held.lease).await,
            None => Ok(()),
        }
    }

    /// Replaces every piece of stored state held in memory with what the
    /// store holds now.
    async fn reload(&self, account: &mut Account, sessions: &mut SessionCache) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let stored = store.load_account().await?.ok_or_else(|| StoreError::Corrupt("the account is gone".into()))?;
        if stored.user_id != self.inner.own.user_id || stored.device_id != self.inner.own.device_id {
            return Err(StoreError::Corrupt("the store now holds another device's account".into()));
        }
        let fresh_account = Account::from_stored(stored);
        if fresh_account.curve25519_key() != self.inner.own.curve25519 {
            return Err(StoreError::Corrupt("the store's account has other identity keys".into()));
        }
        let retry = store.get_custom_value(super::QUERY_RETRY_RECORD).await?;
        let tracker = DeviceTracker::from_stored(store.load_tracked_users().await?, retry.as_deref());
        let claims_record = store.get_custom_value(super::CLAIMS_RECORD).await?;
        let claims = ClaimState::from_records(claims_record.as_deref(), None);
        let cross_signing = store.load_private_identity().await?;
        let backup = super::backup::BackupState::load(store.as_ref()).await?;
        let gossip_record = store.get_custom_value(crate::gossip::GOSSIP_RECORD).await?;
        let pending_record = store.get_custom_value(crate::utd::pending::PENDING_RECORD).await?;
        // Everything read: swap it in.
        *account = fresh_account;
        sessions.clear();
        *lock(&self.inner.tracker) = tracker;
        *lock(&self.inner.claims) = claims;
        *lock(&self.inner.groups) = GroupCache::default();
        *lock(&self.inner.requests) = RequestQueue::default();
        *lock(&self.inner.cross_signing) = cross_signing;
        *lock(&self.inner.backup) = backup;
        *lock(&self.inner.gossip) = super::gossip::GossipState::from_record(gossip_record.as_deref());
        lock(&self.inner.pending).merge_stored(pending_record.as_deref());
        tracing::info!("the store lock changed hands: reloaded the engine's state from the store");
        Ok(())
    }
}
