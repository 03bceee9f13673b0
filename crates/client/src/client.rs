//! [`Client`] and [`ClientBuilder`]: the session, the crypto engine, the
//! rooms, and moving crypto-core's requests over HTTP.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hush_crypto_core::{OlmMachine, OpenError, StoreError, Timestamp};
use ruma_client_api::{account::whoami, membership::join_room_by_id, membership::leave_room};
use ruma_common::{OwnedRoomId, OwnedTransactionId, RoomId, UserId};

use crate::{
    ClientError, Encryption, MatrixAuth, Room, RoomEvent, Session, StoreConfig,
    events::{Handler, boxed},
    http::{HttpClient, HttpSettings},
    rooms::RoomState,
};

/// The wall clock, as crypto-core's `now`.
pub(crate) fn wall_clock() -> Timestamp {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Timestamp::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Builds a [`Client`].
#[derive(Debug, Default)]
pub struct ClientBuilder {
    homeserver: Option<String>,
    store: Option<StoreConfig>,
    http: HttpSettings,
    clock: Option<Clock>,
    store_lock: Option<crate::store_lock::StoreLockSettings>,
    trust: Option<crate::TrustSettings>,
}

/// The time the client gives the engine as `now`.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl Clock {
    /// A clock reading `now` (e.g. the wall clock moved forward, or a
    /// simulation's time).
    pub fn new(now: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock(..)")
    }
}

impl ClientBuilder {
    /// The homeserver's base URL, e.g. `https://matrix.example.org`.
    pub fn homeserver_url(mut self, url: impl Into<String>) -> Self {
        self.homeserver = Some(url.into());
        self
    }

    /// The crypto store; memory by default.
    pub fn store_config(mut self, store: StoreConfig) -> Self {
        self.store = Some(store);
        self
    }

    /// A redb store at `path`, encrypted if a passphrase is given.
    #[cfg(feature = "redb")]
    pub fn redb_store(self, path: impl Into<std::path::PathBuf>, passphrase: Option<&str>) -> Self {
        self.store_config(StoreConfig::Redb { path: path.into(), passphrase: passphrase.map(ToOwned::to_owned) })
    }

    /// A sled store in the directory `path`, encrypted if a passphrase is given.
    #[cfg(feature = "sled")]
    pub fn sled_store(self, path: impl Into<std::path::PathBuf>, passphrase: Option<&str>) -> Self {
        self.store_config(StoreConfig::Sled { path: path.into(), passphrase: passphrase.map(ToOwned::to_owned) })
    }

    /// A PostgreSQL store in the database at `url` (schema `hush`), encrypted
    /// if a passphrase is given. The store belongs to the device this client
    /// logs in as (or restores): many devices share one database, each in a
    /// store of its own, and a store is never opened for another device.
    #[cfg(feature = "postgres")]
    pub fn postgres_store(self, url: &str, passphrase: Option<&str>) -> Self {
        self.store_config(StoreConfig::Postgres {
            database: crate::store::PostgresDatabase::Url(url.to_owned()),
            passphrase: passphrase.map(ToOwned::to_owned),
        })
    }

    /// A PostgreSQL store in a database already connected, sharing its
    /// connections with the other clients given it (a bridge's devices).
    #[cfg(feature = "postgres")]
    pub fn postgres_database(self, database: crate::store::PgDatabase, passphrase: Option<&str>) -> Self {
        self.store_config(StoreConfig::Postgres {
            database: crate::store::PostgresDatabase::Shared(database),
            passphrase: passphrase.map(ToOwned::to_owned),
        })
    }

    /// Shares the device's store with other processes or hosts (an app and
    /// its notification helper; several workers of a bridge on one
    /// PostgreSQL store): every sync and send takes the store lock as
    /// `holder` for `lease`, waiting up to a minute for another holder, and
    /// lets go afterwards; whoever takes it after someone else reloads its
    /// state first. Every process sharing the store must set this, each
    /// with its own `holder`. A redb or sled file (which one process at a
    /// time may open) is then opened only while the lock is held, with the
    /// lease in a lock file beside it.
    pub fn store_lock(mut self, holder: &str, lease: Duration) -> Self {
        self.store_lock = Some(crate::store_lock::StoreLockSettings {
            holder: holder.to_owned(),
            lease,
            wait: Duration::from_secs(60),
            max_hold: lease.saturating_mul(8),
        });
        self
    }

    /// The client-wide trust settings (which devices get room keys, whose
    /// messages are shown). Saved in the store when it is opened, in place
    /// of settings saved before; without this, the saved ones apply, and
    /// failing those [`TrustSettings::recommended`](crate::TrustSettings::recommended)
    /// (spec v1.18). Rooms may override them (`Room::set_trust_settings`).
    pub fn trust_settings(mut self, settings: crate::TrustSettings) -> Self {
        self.trust = Some(settings);
        self
    }

    /// Timeout of one HTTP request attempt (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.http.request_timeout = timeout;
        self
    }

    /// How HTTP requests are sent: timeout, retries, back-off.
    pub fn http_settings(mut self, settings: HttpSettings) -> Self {
        self.http = settings;
        self
    }

    /// The engine's clock: the wall clock by default. Time is an input of
    /// hush's engine (rotation periods, timeouts, retries), so a test or a
    /// simulation can run the client on a clock of its own.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Builds the client (no network traffic yet).
    pub fn build(self) -> Result<Client, ClientError> {
        let homeserver = self.homeserver.ok_or_else(|| ClientError::Config("no homeserver URL".into()))?;
        let http = HttpClient::new(&homeserver, self.http)?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                clock: self.clock.unwrap_or_else(|| Clock::new(wall_clock)),
                store: self.store.unwrap_or(StoreConfig::Memory),
                session: RwLock::new(None),
                machine: RwLock::new(None),
                rooms: Mutex::new(BTreeMap::new()),
                trust: Mutex::new(crate::trust::TrustState::with_builder(self.trust)),
                trust_writes: tokio::sync::Mutex::new(()),
                room_encrypt_locks: Mutex::new(BTreeMap::new()),
                handlers: Mutex::new(Vec::new()),
                backup_key_arrived: AtomicBool::new(false),
                warned_unencrypted_build: AtomicBool::new(false),
                sync_lock: tokio::sync::Mutex::new(()),
                rooms_restored: AtomicBool::new(false),
                in_flight: Mutex::new(HashSet::new()),
                request_backoff: Mutex::new(Default::default()),
                request_done: tokio::sync::Notify::new(),
                room_send_lock: tokio::sync::Mutex::new(()),
                store_lock: self.store_lock,
                store_lock_users: tokio::sync::Mutex::new(Default::default()),
                verification_updates: tokio::sync::broadcast::channel(crate::verification::UPDATE_CAPACITY).0,
            }),
        })
    }
}

pub(crate) struct Inner {
    pub(crate) http: HttpClient,
    clock: Clock,
    store: StoreConfig,
    session: RwLock<Option<Session>>,
    machine: RwLock<Option<OlmMachine>>,
    pub(crate) rooms: Mutex<BTreeMap<OwnedRoomId, RoomState>>,
    /// The trust settings in force, client-wide and per room.
    pub(crate) trust: Mutex<crate::trust::TrustState>,
    /// One change of the saved trust settings at a time.
    pub(crate) trust_writes: tokio::sync::Mutex<()>,
    /// Per room: one send at a time from getting the room key ready to
    /// encrypting, so the key a send prepared (under its sharing strategy)
    /// is the key it encrypts with.
    pub(crate) room_encrypt_locks: Mutex<BTreeMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) handlers: Mutex<Vec<Handler>>,
    /// A backup key arrived by gossip: the next sync enables and restores the backup.
    pub(crate) backup_key_arrived: AtomicBool,
    pub(crate) warned_unencrypted_build: AtomicBool,
    pub(crate) sync_lock: tokio::sync::Mutex<()>,
    /// The room state was loaded from the store (or rebuilt by a sync).
    pub(crate) rooms_restored: AtomicBool,
    /// How the store is shared with other processes, if it is.
    pub(crate) store_lock: Option<crate::store_lock::StoreLockSettings>,
    /// This process's operations holding the store lock now.
    pub(crate) store_lock_users: tokio::sync::Mutex<crate::store_lock::LockUsers>,
    /// Ids of the engine's requests being sent now (by any task).
    pub(crate) in_flight: Mutex<HashSet<OwnedTransactionId>>,
    /// Requests waiting after a failure for good.
    pub(crate) request_backoff: Mutex<crate::request_backoff::RequestBackoff>,
    /// Signalled whenever a request being sent is done.
    pub(crate) request_done: tokio::sync::Notify,
    /// Held while the engine's room events are sent (their order matters).
    pub(crate) room_send_lock: tokio::sync::Mutex<()>,
    /// Verification flows' updates, to subscribers.
    pub(crate) verification_updates: tokio::sync::broadcast::Sender<crate::VerificationUpdate>,
}

/// A Matrix client driving hush's crypto engine. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("homeserver", &self.inner.http.homeserver()).finish_non_exhaustive()
    }
}

impl Client {
    /// The engine's `now`, from the builder's clock.
    pub(crate) fn now(&self) -> Timestamp {
        (self.inner.clock.0)()
    }

    /// A builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub(crate) fn http(&self) -> &HttpClient {
        &self.inner.http
    }

    /// Password login.
    pub fn matrix_auth(&self) -> MatrixAuth<'_> {
        MatrixAuth { client: self }
    }

    /// The current session, if logged in.
    pub fn session(&self) -> Option<Session> {
        self.inner.session.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn access_token(&self) -> Result<String, ClientError> {
        self.session().map(|s| s.access_token).ok_or(ClientError::NotLoggedIn)
    }

    /// The crypto engine, once logged in or restored.
    pub fn olm_machine(&self) -> Result<OlmMachine, ClientError> {
        self.inner.machine.read().unwrap_or_else(PoisonError::into_inner).clone().ok_or(ClientError::NotLoggedIn)
    }

    /// Restores a session saved after login. The access token is checked
    /// against the store: a token of another device than the store's is an
    /// error naming both. With a memory store, a warning says that keys will
    /// not survive a restart.
    pub async fn restore_session(&self, session: Session) -> Result<(), ClientError> {
        if !self.inner.store.is_persistent() {
            tracing::warn!(
                "restore_session with a memory store: the restored device has no keys from before, and \
                 messages it could decrypt before a restart will not decrypt; use a persistent store"
            );
        }
        let whoami = self.http().send(whoami::v3::Request::new(), Some(&session.access_token), Duration::ZERO).await?;
        if let Some(token_device) = whoami.device_id
            && token_device != session.device_id
        {
            return Err(ClientError::DeviceMismatch {
                token_device: token_device.to_string(),
                store_device: session.device_id.to_string(),
            });
        }
        self.activate(session).await
    }

    /// Opens the store and the engine for `session`.
    pub(crate) async fn activate(&self, session: Session) -> Result<(), ClientError> {
        let shared = self.inner.store_lock.is_some();
        let store =
            self.inner.store.open(&session.user_id, &session.device_id, shared).map_err(|error| match error {
                StoreError::AccountMismatch { store_device_id, device_id, .. } => ClientError::DeviceMismatch {
                    token_device: device_id.to_string(),
                    store_device: store_device_id.to_string(),
                },
                other => ClientError::Store(other),
            })?;
        let lease = self.lock_store_to_open(&*store).await?;
        let opened = OlmMachine::open(&session.user_id, &session.device_id, store.clone(), self.now()).await;
        if let (Err(_), Some(lease)) = (&opened, &lease) {
            // Let go at once: the next process need not wait for the lease.
            let _ = store.unlock(lease).await;
        }
        let machine = opened.map_err(|error| match error {
            OpenError::Store(StoreError::AccountMismatch { store_device_id, device_id, .. }) => {
                ClientError::DeviceMismatch {
                    token_device: device_id.to_string(),
                    store_device: store_device_id.to_string(),
                }
            }
            other => ClientError::Open(other),
        })?;
        if let Some(rooms) = crate::persist::load_rooms(&**machine.store()).await? {
            *lock(&self.inner.rooms) = rooms;
            self.inner.rooms_restored.store(true, Ordering::Relaxed);
        }
        self.load_trust(&**machine.store()).await?;
        *self.inner.machine.write().unwrap_or_else(PoisonError::into_inner) = Some(machine);
        *self.inner.session.write().unwrap_or_else(PoisonError::into_inner) = Some(session);
        self.send_outgoing_requests().await
    }

    /// Registers a handler called for every timeline event (decrypted when
    /// possible; undecryptable ones carry the reason; late decryptions are
    /// delivered again, marked as such).
    pub fn add_event_handler<F, Fut>(&self, handler: F)
    where
        F: Fn(RoomEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        lock(&self.inner.handlers).push(boxed(handler));
    }

    /// The encryption API.
    pub fn encryption(&self) -> Encryption {
        Encryption { client: self.clone() }
    }

    /// The logged-in user, if any.
    pub fn user_id(&self) -> Option<ruma_common::OwnedUserId> {
        self.session().map(|s| s.user_id)
    }

    /// The logged-in device, if any.
    pub fn device_id(&self) -> Option<ruma_common::OwnedDeviceId> {
        self.session().map(|s| s.device_id)
    }

    /// Every room this client knows of (joined, invited, or left since it
    /// started following it), in room-id order.
    pub fn rooms(&self) -> Vec<Room> {
        self.rooms_where(|_| true)
    }

    /// The rooms we are joined to.
    pub fn joined_rooms(&self) -> Vec<Room> {
        self.rooms_where(|m| m == crate::rooms::Membership::Join)
    }

    /// The rooms we are invited to.
    pub fn invited_rooms(&self) -> Vec<Room> {
        self.rooms_where(|m| m == crate::rooms::Membership::Invite)
    }

    fn rooms_where(&self, keep: impl Fn(crate::rooms::Membership) -> bool) -> Vec<Room> {
        lock(&self.inner.rooms)
            .values()
            .filter(|room| keep(room.own_membership))
            .map(|room| Room { client: self.clone(), room_id: room.room_id.clone() })
            .collect()
    }

    /// A room the client knows from sync.
    pub fn get_room(&self, room_id: &RoomId) -> Option<Room> {
        lock(&self.inner.rooms)
            .contains_key(room_id)
            .then(|| Room { client: self.clone(), room_id: room_id.to_owned() })
    }

    /// Creates a private room named `name`, encrypted (default rotation)
    /// if asked, inviting `invite`. Returns its id. See
    /// [`create_room_with`](Self::create_room_with) for every option.
    pub async fn create_room(
        &self,
        name: &str,
        encrypted: bool,
        invite: &[&UserId],
    ) -> Result<OwnedRoomId, ClientError> {
        let options = crate::CreateRoomOptions {
            name: Some(name.to_owned()),
            invite: invite.iter().map(|u| (*u).to_owned()).collect(),
            encryption: encrypted.then(Default::default),
            ..Default::default()
        };
        self.create_room_with(options).await
    }

    /// Sends any Matrix request with this client's access token (and its
    /// timeouts and retries): the way to reach an endpoint this API does
    /// not wrap, typed with ruma's request and response.
    pub async fn send<R>(&self, request: R) -> Result<R::IncomingResponse, ClientError>
    where
        R: ruma_common::api::OutgoingRequest,
        for<'a> R::Authentication:
            ruma_common::api::auth_scheme::AuthScheme<Input<'a> = ruma_common::api::auth_scheme::SendAccessToken<'a>>,
        for<'a> R::PathBuilder: ruma_common::api::path_builder::PathBuilder<
                Input<'a> = std::borrow::Cow<'a, ruma_common::api::SupportedVersions>,
            >,
    {
        let token = self.access_token().ok();
        Ok(self.http().send(request, token.as_deref(), Duration::ZERO).await?)
    }

    /// Joins a room we are invited to.
    pub async fn join_room(&self, room_id: &RoomId) -> Result<(), ClientError> {
        let request = join_room_by_id::v3::Request::new(room_id.to_owned());
        self.http().send(request, Some(&self.access_token()?), Duration::ZERO).await?;
        if let Some(room) = lock(&self.inner.rooms).get_mut(room_id) {
            room.own_membership = crate::rooms::Membership::Join;
        }
        Ok(())
    }

    /// Leaves a room.
    pub async fn leave_room(&self, room_id: &RoomId) -> Result<(), ClientError> {
        let request = leave_room::v3::Request::new(room_id.to_owned());
        self.http().send(request, Some(&self.access_token()?), Duration::ZERO).await?;
        Ok(())
    }

    /// Sends every request the crypto engine has queued, concurrently,
    /// hands the answers back and acts on the engine's events (one turn of
    /// the client's drive loop). A client sharing its store does this under
    /// the store lock. The first request that failed is the error; the
    /// others were sent all the same.
    pub async fn send_outgoing_requests(&self) -> Result<(), ClientError> {
        self.with_store_lock(async { self.drive().await?.into_result() }).await
    }

    pub(crate) fn warn_unencrypted_build_once(&self, room_id: &RoomId) {
        if !self.inner.warned_unencrypted_build.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %room_id,
                "this client was built without the e2e-encryption feature: encrypted rooms can be neither \
                 read nor written"
            );
        }
    }
}
