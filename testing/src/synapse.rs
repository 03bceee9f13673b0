//! Helpers for tests against the local Synapse that `testing/synapse/synapse.sh`
//! runs (`cargo xtask homeserver start`, or `cargo xtask test` which starts it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hush_client::{Client, ClientError, RoomEvent, Session, StoreConfig, SyncSettings, http::HttpClient};
use ruma_client_api::{account::register, uiaa};
use ruma_common::OwnedRoomId;
use tempfile::TempDir;

/// The homeserver the tests talk to.
pub fn homeserver_url() -> String {
    std::env::var("HUSH_HOMESERVER_URL").unwrap_or_else(|_| "http://127.0.0.1:8008".to_owned())
}

/// A user name no other test run used.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{prefix}{}x{}x{}", std::process::id(), millis % 100_000_000, COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// Registers a user with a password (open registration, dummy auth).
pub async fn register(name: &str, password: &str) -> Result<(), ClientError> {
    register_at(&homeserver_url(), name, password).await
}

/// Registers a user with a password at `homeserver` (open registration,
/// dummy auth).
pub async fn register_at(homeserver: &str, name: &str, password: &str) -> Result<(), ClientError> {
    let http = HttpClient::new(homeserver, Default::default())?;
    let mut request = register::v3::Request::new();
    request.username = Some(name.to_owned());
    request.password = Some(password.to_owned());
    request.inhibit_login = true;
    request.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
    http.send(request, None, Duration::ZERO).await?;
    Ok(())
}

/// A device with no client: a registered user's login and keys uploaded
/// from a bare vodozemac account, cheap enough to make by the hundred.
#[derive(Debug)]
pub struct BareDevice {
    /// The device's keys.
    pub device: crate::RogueDevice,
    /// Its access token.
    pub access_token: String,
}

impl BareDevice {
    /// Registers a new user logged in on one device, with its keys and one
    /// one-time key uploaded.
    pub async fn register(prefix: &str) -> Result<Self, ClientError> {
        let http = HttpClient::new(&homeserver_url(), Default::default())?;
        let mut request = register::v3::Request::new();
        request.username = Some(unique_name(prefix));
        request.password = Some("password".to_owned());
        request.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
        let response = http.send(request, None, Duration::ZERO).await?;
        let (Some(access_token), Some(device_id)) = (response.access_token, response.device_id) else {
            return Err(ClientError::Config("registration returned no login".into()));
        };
        let mut device = crate::RogueDevice::new(&response.user_id, device_id.as_str());
        let upload = device.keys_upload(1, false);
        http.send(upload, Some(&access_token), Duration::ZERO).await?;
        Ok(Self { device, access_token })
    }

    /// Joins a room (public, or one it is invited to).
    pub async fn join(&self, room: &OwnedRoomId) -> Result<(), ClientError> {
        let http = HttpClient::new(&homeserver_url(), Default::default())?;
        let request = ruma_client_api::membership::join_room_by_id::v3::Request::new(room.clone());
        http.send(request, Some(&self.access_token), Duration::ZERO).await?;
        Ok(())
    }
}

/// Which persistent store the test clients use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// redb.
    Redb,
    /// sled.
    Sled,
    /// PostgreSQL: the test cluster's database, schema `hush`, shared by
    /// every test client (each user's device has its own store there).
    Postgres,
}

/// A test user's device: a client with a persistent store, and the events
/// its handler received.
pub struct TestClient {
    /// The client.
    pub client: Client,
    /// The session, as an application would save it.
    pub session: Session,
    /// Every event the handler received.
    pub events: Arc<std::sync::Mutex<Vec<RoomEvent>>>,
    /// The store's directory (kept alive with the client).
    pub dir: Arc<TempDir>,
    /// The user's name and password.
    pub credentials: (String, String),
    /// The store kind.
    pub kind: StoreKind,
    /// The homeserver URL this client talks to (Synapse, or a fault proxy before it).
    pub homeserver: String,
    /// How the client was built (kept for restarts).
    pub options: ClientOptions,
}

/// How a [`TestClient`]'s client is built.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The homeserver URL (Synapse, or a fault proxy before it).
    pub homeserver: String,
    /// HTTP timeout, retries and back-off.
    pub http: hush_client::http::HttpSettings,
    /// The engine's clock, if not the wall clock.
    pub clock: Option<hush_client::Clock>,
    /// Syncs with simplified sliding sync (MSC4186) instead of `/sync`.
    pub sliding_sync: bool,
    /// The client's trust settings. Tests of other features use the
    /// legacy ones (their users set no cross-signing up); tests of today's
    /// defaults set `TrustSettings::recommended()` and give their users an
    /// identity.
    pub trust: hush_client::TrustSettings,
}

impl ClientOptions {
    /// Defaults (20 s request timeout, the client's retries) for `homeserver`.
    pub fn at(homeserver: &str) -> Self {
        let http = hush_client::http::HttpSettings { request_timeout: Duration::from_secs(20), ..Default::default() };
        let trust = hush_client::TrustSettings::legacy();
        Self { homeserver: homeserver.to_owned(), http, clock: None, sliding_sync: false, trust }
    }
}

impl std::fmt::Debug for TestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClient").field("session", &self.session).finish_non_exhaustive()
    }
}

fn store_config(kind: StoreKind, dir: &TempDir) -> StoreConfig {
    match kind {
        StoreKind::Redb => {
            StoreConfig::Redb { path: dir.path().join("crypto.redb"), passphrase: Some("store secret".into()) }
        }
        StoreKind::Sled => {
            StoreConfig::Sled { path: dir.path().join("crypto.sled"), passphrase: Some("store secret".into()) }
        }
        StoreKind::Postgres => StoreConfig::Postgres {
            database: hush_client::PostgresDatabase::Url(crate::stores::postgres_url()),
            passphrase: Some("store secret".into()),
        },
    }
}

impl TestClient {
    /// Registers a new user and logs in as `device_id`.
    pub async fn new_user(prefix: &str, device_id: &str, kind: StoreKind) -> Self {
        Self::new_user_via(prefix, device_id, kind, &homeserver_url()).await
    }

    /// Registers a new user (directly with Synapse) and logs in as
    /// `device_id` through `homeserver` (e.g. a fault proxy's URL).
    pub async fn new_user_via(prefix: &str, device_id: &str, kind: StoreKind, homeserver: &str) -> Self {
        let name = unique_name(prefix);
        register(&name, "password").await.expect("register");
        let dir = Arc::new(TempDir::new().expect("temp dir"));
        Self::login_via(&name, "password", device_id, kind, dir, homeserver).await
    }

    /// Registers a new user at `homeserver` (e.g. one of two federating
    /// Synapses) and logs in there as `device_id`.
    pub async fn new_user_at(prefix: &str, device_id: &str, kind: StoreKind, homeserver: &str) -> Self {
        Self::new_user_with(prefix, device_id, kind, ClientOptions::at(homeserver)).await
    }

    /// [`TestClient::new_user_at`] `options.homeserver`, with a client built
    /// from `options`.
    pub async fn new_user_with(prefix: &str, device_id: &str, kind: StoreKind, options: ClientOptions) -> Self {
        let name = unique_name(prefix);
        register_at(&options.homeserver, &name, "password").await.expect("register");
        let dir = Arc::new(TempDir::new().expect("temp dir"));
        Self::login_with(&name, "password", device_id, kind, dir, options).await
    }

    /// Logs in (a new device, or the same device again) with a store in `dir`.
    pub async fn login(name: &str, password: &str, device_id: &str, kind: StoreKind, dir: Arc<TempDir>) -> Self {
        Self::login_via(name, password, device_id, kind, dir, &homeserver_url()).await
    }

    /// [`TestClient::login`] through `homeserver`.
    pub async fn login_via(
        name: &str,
        password: &str,
        device_id: &str,
        kind: StoreKind,
        dir: Arc<TempDir>,
        homeserver: &str,
    ) -> Self {
        Self::login_with(name, password, device_id, kind, dir, ClientOptions::at(homeserver)).await
    }

    /// [`TestClient::login`] with a client built from `options`.
    pub async fn login_with(
        name: &str,
        password: &str,
        device_id: &str,
        kind: StoreKind,
        dir: Arc<TempDir>,
        options: ClientOptions,
    ) -> Self {
        let client = Self::build(kind, &dir, &options);
        let session = client
            .matrix_auth()
            .login_username(name, password)
            .device_id(device_id)
            .initial_device_display_name(device_id)
            .send()
            .await
            .expect("login");
        Self::with_handler(client, session, dir, (name.to_owned(), password.to_owned()), kind, options)
    }

    /// Ends this client (as its process would end) and restores the device
    /// from its store in a new client.
    pub async fn restart(self) -> Self {
        let Self { client, session, dir, credentials, kind, options, .. } = self;
        drop(client);
        let client = Self::build(kind, &dir, &options);
        client.restore_session(session.clone()).await.expect("restore session");
        Self::with_handler(client, session, dir, credentials, kind, options)
    }

    /// A new process restoring a saved session from the store in `dir`.
    pub async fn login_restore(
        kind: StoreKind,
        dir: &Arc<TempDir>,
        credentials: &(String, String),
        session_json: &str,
    ) -> Self {
        Self::login_restore_via(kind, dir, credentials, session_json, &homeserver_url()).await
    }

    /// [`TestClient::login_restore`] through `homeserver` (e.g. a fault proxy).
    pub async fn login_restore_via(
        kind: StoreKind,
        dir: &Arc<TempDir>,
        credentials: &(String, String),
        session_json: &str,
        homeserver: &str,
    ) -> Self {
        let session: Session = serde_json::from_str(session_json).expect("session json");
        let options = ClientOptions::at(homeserver);
        let client = Self::build(kind, dir, &options);
        client.restore_session(session.clone()).await.expect("restore session");
        Self::with_handler(client, session, dir.clone(), credentials.clone(), kind, options)
    }

    /// The path of the store (file or directory) of a device in `dir`.
    pub fn store_path(kind: StoreKind, dir: &TempDir) -> std::path::PathBuf {
        match store_config(kind, dir) {
            StoreConfig::Redb { path, .. } | StoreConfig::Sled { path, .. } => path,
            _ => dir.path().to_owned(),
        }
    }

    /// Ends this client, keeping its store directory for a later login.
    pub fn close(self) -> (Arc<TempDir>, (String, String)) {
        (self.dir, self.credentials)
    }

    fn build(kind: StoreKind, dir: &TempDir, options: &ClientOptions) -> Client {
        let mut builder = Client::builder()
            .homeserver_url(&options.homeserver)
            .store_config(store_config(kind, dir))
            .http_settings(options.http.clone())
            .trust_settings(options.trust);
        if let Some(clock) = &options.clock {
            builder = builder.clock(clock.clone());
        }
        builder.build().expect("build client")
    }

    fn with_handler(
        client: Client,
        session: Session,
        dir: Arc<TempDir>,
        credentials: (String, String),
        kind: StoreKind,
        options: ClientOptions,
    ) -> Self {
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = events.clone();
        client.add_event_handler(move |event| {
            let sink = sink.clone();
            async move { sink.lock().expect("events").push(event) }
        });
        Self { client, session, events, dir, credentials, kind, homeserver: options.homeserver.clone(), options }
    }

    /// One short sync.
    pub async fn sync(&self) {
        let settings =
            SyncSettings::default().timeout(Duration::from_millis(200)).sliding_sync(self.options.sliding_sync);
        self.client.sync_once(settings).await.expect("sync");
    }

    /// Syncs until the server has no to-device message waiting for this
    /// device: a sync carries at most 100 (Synapse's page), so a device
    /// that was away while more than that piled up (room keys of many
    /// rotations, say) needs several syncs before it holds every key sent
    /// to it. Returns how many syncs carried messages.
    pub async fn catch_up(&self) -> usize {
        let settings = SyncSettings::default().timeout(Duration::ZERO).sliding_sync(self.options.sliding_sync);
        for syncs in 0..1000 {
            let summary = self.client.sync_once(settings.clone()).await.expect("sync");
            eprintln!(
                "{}: a catch-up sync carried {} to-device messages",
                self.session.device_id, summary.to_device_events
            );
            if summary.to_device_events == 0 {
                return syncs;
            }
        }
        panic!("{}: still receiving to-device messages after 1000 syncs", self.session.user_id);
    }

    /// Syncs until `done` holds (at most ~20 s).
    pub async fn sync_until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        for _ in 0..100 {
            self.sync().await;
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{}: gave up waiting for {what}", self.session.user_id);
    }

    /// Reads the room's latest messages with `Room::messages` (a restarted
    /// client resumes with an incremental sync and gets no old timeline),
    /// adding those not seen yet to the received events.
    pub async fn load_history(&self, room: &OwnedRoomId) {
        let Some(handle) = self.client.get_room(room) else { return };
        let options = hush_client::MessagesOptions::backward().limit(100);
        let history = handle.messages(options).await.expect("room messages");
        let mut events = self.events.lock().expect("events");
        // Oldest first, as sync delivers them.
        for event in history.chunk.into_iter().rev() {
            let id = event.event["event_id"].clone();
            if !events.iter().any(|e| e.room_id == *room && e.event["event_id"] == id) {
                events.push(event);
            }
        }
    }

    /// Syncs and reads the room's history until `done` holds (at most ~20 s).
    pub async fn sync_with_history_until(&self, room: &OwnedRoomId, what: &str, done: impl Fn(&Self) -> bool) {
        for _ in 0..100 {
            self.sync().await;
            self.load_history(room).await;
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{}: gave up waiting for {what}", self.session.user_id);
    }

    /// The decrypted text bodies received in `room`, in order.
    pub fn texts(&self, room: &OwnedRoomId) -> Vec<String> {
        let events = self.events.lock().expect("events");
        events
            .iter()
            .filter(|e| &e.room_id == room && e.encryption.is_some())
            .filter_map(|e| e.text_body().map(ToOwned::to_owned))
            .collect()
    }

    /// Events in `room` that stayed encrypted.
    pub fn undecryptable(&self, room: &OwnedRoomId) -> usize {
        let events = self.events.lock().expect("events");
        events.iter().filter(|e| &e.room_id == room && e.unable_to_decrypt.is_some()).count()
    }

    /// Waits until the room is known and our membership there is `join`.
    pub async fn join(&self, room: &OwnedRoomId) {
        self.sync_until("the invite", |c| c.client.get_room(room).is_some()).await;
        self.client.join_room(room).await.expect("join");
        self.sync_until("the join", |c| {
            c.client.get_room(room).is_some_and(|r| r.key_recipients().contains(&c.session.user_id))
        })
        .await;
    }
}
