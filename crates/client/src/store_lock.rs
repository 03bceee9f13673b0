//! Sharing the device's store with other processes or hosts (an app and its
//! notification helper; a bridge's workers) through the store lock: every
//! sync and every send runs with the lock held, and lets go afterwards.
//! When the lock changed hands, the engine reloads its state from the store
//! (see `OlmMachine::lock_store`) and the client reloads its room state.
//! While an operation runs, a heartbeat renews the lease every quarter of
//! its length: the engine lets nothing leave under a lease with a third or
//! less to run, so only a process stalled for most of a lease fails its
//! operation (before anything of it is sent), and is then taken over.

use std::time::Duration;

use hush_crypto_core::{CryptoStore, StoreError};

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
}

/// One operation's use of the lock; dropped without [`LockUse::release`]
/// (the operation's future was dropped, or it panicked), it releases from
/// a task of its own.
struct LockUse {
    client: Option<Client>,
}

impl LockUse {
    async fn release(&mut self) -> Result<(), ClientError> {
        match self.client.take() {
            Some(client) => client.release().await,
            None => Ok(()),
        }
    }
}

impl Drop for LockUse {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(error) = client.release().await {
                    tracing::warn!(%error, "releasing the store lock after a cancelled operation failed");
                }
            });
        }
    }
}

/// How often a waiting client asks for the lock again.
const RETRY: Duration = Duration::from_millis(50);

/// The lock as this process holds it: how many of its operations hold it
/// now, and the heartbeat renewing its lease meanwhile.
#[derive(Debug, Default)]
pub(crate) struct LockUsers {
    count: usize,
    /// Bumped each time the lock is taken, so a heartbeat of an earlier
    /// holding stops rather than renew a later one.
    holding: u64,
    heartbeat: Option<tokio::task::AbortHandle>,
}

/// How often the heartbeat renews the lease, as a fraction of its length.
const HEARTBEATS_PER_LEASE: u32 = 4;

impl Client {
    /// Runs `operation` with the store lock held, if the client shares its
    /// store; releases it afterwards however the operation ended.
    pub(crate) async fn with_store_lock<T>(
        &self,
        operation: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let Some(settings) = self.inner.store_lock.clone() else { return operation.await };
        self.acquire(&settings).await?;
        // Released however the operation ends, even if its future is dropped.
        let mut guard = LockUse { client: Some(self.clone()) };
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

    async fn acquire(&self, settings: &StoreLockSettings) -> Result<(), ClientError> {
        let mut users = self.inner.store_lock_users.lock().await;
        let machine = self.olm_machine()?;
        if users.count > 0 {
            // Other operations of ours run under the lease: renew it, never
            // reload under them (if the lease was lost, this one fails).
            machine.renew_store_lock(&settings.holder, self.now(), settings.lease).await?;
            users.count += 1;
            return Ok(());
        }
        let outcome =
            wait_for_lock(settings, || machine.lock_store(&settings.holder, self.now(), settings.lease)).await?;
        if outcome.reloaded {
            // Another process synced in between: its room state is newer.
            if let Some(rooms) = crate::persist::load_rooms(&**machine.store()).await? {
                *lock(&self.inner.rooms) = rooms;
                self.inner.rooms_restored.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        users.count += 1;
        users.holding = users.holding.wrapping_add(1);
        users.heartbeat = Some(self.start_heartbeat(settings.clone(), users.holding));
        Ok(())
    }

    async fn release(&self) -> Result<(), ClientError> {
        let mut users = self.inner.store_lock_users.lock().await;
        users.count = users.count.saturating_sub(1);
        if users.count == 0 {
            if let Some(heartbeat) = users.heartbeat.take() {
                heartbeat.abort();
            }
            self.olm_machine()?.unlock_store().await?;
        }
        Ok(())
    }

    /// Renews the lease every quarter of its length while `holding` lasts.
    /// It renews under the users' mutex, so it never runs beside a release
    /// (a renewal after the release would take the lock back). A renewal
    /// that fails ends it: the engine then refuses to send, and the running
    /// operation fails.
    fn start_heartbeat(&self, settings: StoreLockSettings, holding: u64) -> tokio::task::AbortHandle {
        let client = self.clone();
        let every = settings.lease / HEARTBEATS_PER_LEASE;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let users = client.inner.store_lock_users.lock().await;
                if users.count == 0 || users.holding != holding {
                    return;
                }
                let Ok(machine) = client.olm_machine() else { return };
                if let Err(error) = machine.renew_store_lock(&settings.holder, client.now(), settings.lease).await {
                    tracing::warn!(%error, "renewing the store lock's lease failed; this process stops sending");
                    return;
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
    let started = tokio::time::Instant::now();
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
