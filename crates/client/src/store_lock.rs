//! Sharing the device's store with other processes or hosts (an app and its
//! notification helper; a bridge's workers) through the store lock: every
//! sync and every send runs with the lock held, and lets go afterwards.
//! When the lock changed hands, the engine reloads its state from the store
//! (see `OlmMachine::lock_store`) and the client reloads its room state.
//!
//! While operations run, a heartbeat renews the lease every quarter of its
//! length. The engine lets nothing leave under a lease with a third or less
//! to run, and every attempt to send a crypto request or an encrypted event
//! checks it again, so a process stalled for most of a lease sends nothing
//! of what it was doing and is taken over. A process that is alive but
//! stuck (an operation running longer than [`StoreLockSettings::max_hold`])
//! stops renewing, so it cannot keep the others out for good either.

use std::collections::BTreeMap;
use std::time::Duration;

use hush_crypto_core::{CryptoStore, StoreError};
use tokio::time::Instant;

use crate::{Client, ClientError, client::lock};

/// How a client shares its store (see [`ClientBuilder::store_lock`](crate::ClientBuilder::store_lock)).
#[derive(Clone, Debug)]
pub struct StoreLockSettings {
    /// This process's name for the lock, unique among those sharing the
    /// store (e.g. `"app"`, `"notifications"`, or a host name).
    pub holder: String,
    /// How long the lock is held without renewal. A holder killed with the
    /// lock is taken over after this; it must be longer than a sync's long
    /// poll (the client keeps the poll under half of it).
    pub lease: Duration,
    /// How long a sync or send waits for another holder before failing
    /// with [`ClientError::StoreLocked`].
    pub wait: Duration,
    /// How long one operation may keep the lock: past it the lease is no
    /// longer renewed for this process, the operation fails before it sends
    /// anything more, and the others can take the lock (default: eight
    /// leases).
    pub max_hold: Duration,
}

/// One operation's use of the lock; dropped without [`LockUse::release`]
/// (the operation's future was dropped, or it panicked), it releases from
/// a task of its own.
struct LockUse {
    client: Option<Client>,
    operation: u64,
}

impl LockUse {
    async fn release(&mut self) -> Result<(), ClientError> {
        match self.client.take() {
            Some(client) => client.release(self.operation).await,
            None => Ok(()),
        }
    }
}

impl Drop for LockUse {
    fn drop(&mut self) {
        let operation = self.operation;
        if let Some(client) = self.client.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(error) = client.release(operation).await {
                    tracing::warn!(%error, "releasing the store lock after a cancelled operation failed");
                }
            });
        }
    }
}

/// How often a waiting client asks for the lock again.
const RETRY: Duration = Duration::from_millis(50);

/// How often the heartbeat renews the lease, as a fraction of its length.
const HEARTBEATS_PER_LEASE: u32 = 4;

/// The lock as this process holds it: its operations running under it
/// (by number, with when each started), and the heartbeat renewing it.
#[derive(Debug, Default)]
pub(crate) struct LockUsers {
    running: BTreeMap<u64, Instant>,
    next_operation: u64,
    /// Bumped each time the lock is taken, so a heartbeat of an earlier
    /// holding stops rather than renew a later one.
    holding: u64,
    heartbeat: Option<tokio::task::AbortHandle>,
}

impl LockUsers {
    /// Whether an operation has held the lock longer than `max_hold`.
    fn overstayed(&self, max_hold: Duration) -> bool {
        self.running.values().min().is_some_and(|started| started.elapsed() > max_hold)
    }

    fn start(&mut self) -> u64 {
        let operation = self.next_operation;
        self.next_operation = self.next_operation.wrapping_add(1);
        self.running.insert(operation, Instant::now());
        operation
    }
}

impl Client {
    /// Runs `operation` with the store lock held, if the client shares its
    /// store; releases it afterwards however the operation ended.
    pub(crate) async fn with_store_lock<T>(
        &self,
        operation: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let Some(settings) = self.inner.store_lock.clone() else { return operation.await };
        let number = self.acquire(&settings).await?;
        // Released however the operation ends, even if its future is dropped.
        let mut guard = LockUse { client: Some(self.clone()), operation: number };
        let result = operation.await;
        let released = guard.release().await;
        let value = result?;
        released?;
        Ok(value)
    }

    /// The long poll a sync may use under the lock.
    pub(crate) fn poll_under_lock(&self, poll: Duration) -> Duration {
        self.inner.store_lock.as_ref().map_or(poll, |settings| poll.min(settings.lease / 2))
    }

    /// Takes the lock on `store` before the engine is opened (opening reads
    /// the store, which a redb or sled file allows only under the lock).
    /// The engine takes the same lease over when it first locks.
    pub(crate) async fn lock_store_to_open(
        &self,
        store: &dyn CryptoStore,
    ) -> Result<Option<hush_crypto_core::store::StoreLease>, ClientError> {
        let Some(settings) = self.inner.store_lock.clone() else { return Ok(None) };
        wait_for_lock(&settings, || store.try_lock(&settings.holder, self.now(), settings.lease)).await.map(Some)
    }

    /// Takes the lock (or joins this process's holding of it) for one
    /// operation; returns the operation's number.
    async fn acquire(&self, settings: &StoreLockSettings) -> Result<u64, ClientError> {
        let mut users = self.inner.store_lock_users.lock().await;
        let machine = self.olm_machine()?;
        if !users.running.is_empty() {
            // Other operations of ours run under the lease: renew it, never
            // reload under them (if the lease was lost, this one fails).
            if users.overstayed(settings.max_hold) {
                return Err(StoreError::LockNotHeld { expires_at: None, now: self.now() }.into());
            }
            machine.renew_store_lock(&settings.holder, self.now(), settings.lease).await?;
            if users.heartbeat.as_ref().is_none_or(tokio::task::AbortHandle::is_finished) {
                users.heartbeat = Some(self.start_heartbeat(settings.clone(), users.holding));
            }
            return Ok(users.start());
        }
        let outcome =
            wait_for_lock(settings, || machine.lock_store(&settings.holder, self.now(), settings.lease)).await?;
        if outcome.reloaded {
            // Another process synced in between: its room state is newer.
            if let Some(rooms) = crate::persist::load_rooms(&**machine.store()).await? {
                *lock(&self.inner.rooms) = rooms;
                self.inner.rooms_restored.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            self.load_trust(&**machine.store()).await?;
        }
        users.holding = users.holding.wrapping_add(1);
        let heartbeat = self.start_heartbeat(settings.clone(), users.holding);
        if let Some(old) = users.heartbeat.replace(heartbeat) {
            old.abort();
        }
        Ok(users.start())
    }

    async fn release(&self, operation: u64) -> Result<(), ClientError> {
        let mut users = self.inner.store_lock_users.lock().await;
        users.running.remove(&operation);
        if users.running.is_empty() {
            if let Some(heartbeat) = users.heartbeat.take() {
                heartbeat.abort();
            }
            self.olm_machine()?.unlock_store().await?;
        }
        Ok(())
    }

    /// Renews the lease every quarter of its length while `holding` lasts.
    /// It renews under the users' mutex, so it never runs beside a release
    /// (a renewal after the release would take the lock back). It ends when
    /// another holder has the lock (the running operations then fail before
    /// they send anything more) or when an operation overstayed
    /// `max_hold`; a store that fails for a moment is tried again at the
    /// next beat.
    fn start_heartbeat(&self, settings: StoreLockSettings, holding: u64) -> tokio::task::AbortHandle {
        let client = self.clone();
        let every = settings.lease / HEARTBEATS_PER_LEASE;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let users = client.inner.store_lock_users.lock().await;
                if users.running.is_empty() || users.holding != holding {
                    return;
                }
                if users.overstayed(settings.max_hold) {
                    tracing::warn!(
                        max_hold_s = settings.max_hold.as_secs(),
                        "an operation held the store lock too long; its lease is no longer renewed"
                    );
                    return;
                }
                let Ok(machine) = client.olm_machine() else { return };
                match machine.renew_store_lock(&settings.holder, client.now(), settings.lease).await {
                    Ok(_) => {}
                    Err(error @ (StoreError::LockHeld { .. } | StoreError::LockLost { .. })) => {
                        tracing::warn!(%error, "the store lock went to another holder; this process stops sending");
                        return;
                    }
                    Err(error) => tracing::warn!(%error, "renewing the store lock's lease failed; trying again"),
                }
            }
        })
        .abort_handle()
    }
}

/// Asks for the lock until it is given or `settings.wait` has passed.
async fn wait_for_lock<T, F: Future<Output = Result<T, StoreError>>>(
    settings: &StoreLockSettings,
    mut attempt: impl FnMut() -> F,
) -> Result<T, ClientError> {
    let started = Instant::now();
    loop {
        match attempt().await {
            Ok(taken) => return Ok(taken),
            Err(StoreError::LockHeld { holder, .. }) => {
                if started.elapsed() >= settings.wait {
                    return Err(ClientError::StoreLocked { holder, waited: started.elapsed() });
                }
                tokio::time::sleep(RETRY).await;
            }
            Err(other) => return Err(other.into()),
        }
    }
}
