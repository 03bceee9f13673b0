//! The named engine workloads: the same work done by hush, by matrix-sdk-crypto
//! and by bare vodozemac (the floor), timed per phase.
//!
//! * `share/U=<users>,D=<devices>`: process the `/keys/query` answers for the
//!   users' devices (`keys_query`), find the devices without an Olm session
//!   (`claim_request`), verify the claimed one-time keys and create the
//!   sessions (`keys_claim`), then share a new room key with every device
//!   (`share_room_key`, including the acknowledgement of the to-device requests).
//! * `megolm/M=<messages>`: encrypt `m.room.message` events (~200-byte
//!   plaintext) and decrypt them on a second device that received the room
//!   key over Olm.
//! * `receive-keys/N=<senders>`: one sync delivering `m.room_key` to-device
//!   events from as many devices, each in a fresh Olm pre-key message.
//!
//! Peers are real devices (bare vodozemac accounts with correctly signed
//! device keys and one-time keys) on hush's in-process test server. Everything
//! a phase does not name (key generation, building the server's answers) is
//! set-up and not timed.

pub mod floor;
pub mod hush;
pub mod report;
pub mod sdk;

use std::time::{Duration, Instant};

use hush_testing::{RogueDevice, TestServer};
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::{Value, json};
use std::sync::Arc;

/// Which engine runs a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engine {
    /// hush, in-memory store.
    Hush,
    /// matrix-sdk-crypto, in-memory store.
    Sdk,
    /// hush on the encrypted redb store.
    HushRedb,
    /// matrix-sdk-crypto on the encrypted SQLite store.
    SdkSqlite,
    /// Bare vodozemac: the cryptography alone.
    Floor,
}

impl Engine {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hush => "hush",
            Self::Sdk => "matrix-sdk-crypto",
            Self::HushRedb => "hush+redb",
            Self::SdkSqlite => "matrix-sdk-crypto+sqlite",
            Self::Floor => "vodozemac (floor)",
        }
    }

    /// The engine this one is compared with (hush against matrix-sdk-crypto
    /// with the same kind of store).
    pub fn counterpart(self) -> Option<Self> {
        match self {
            Self::Hush => Some(Self::Sdk),
            Self::HushRedb => Some(Self::SdkSqlite),
            _ => None,
        }
    }

    /// Whether the engine is hush.
    pub fn is_hush(self) -> bool {
        matches!(self, Self::Hush | Self::HushRedb)
    }
}

/// One timed phase of one run.
#[derive(Clone, Debug)]
pub struct Phase {
    /// The phase's name (`keys_query`, `encrypt` ...).
    pub name: &'static str,
    /// How many items it processed (devices, events).
    pub items: usize,
    /// Wall-clock time.
    pub time: Duration,
}

/// Times one phase.
pub struct Stopwatch(Instant);

impl Stopwatch {
    /// Starts timing.
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// The phase, ended now.
    pub fn phase(self, name: &'static str, items: usize) -> Phase {
        Phase { name, items, time: self.0.elapsed() }
    }
}

/// The room every workload uses.
pub fn room_id() -> OwnedRoomId {
    "!bench:hush.example".try_into().expect("valid room id")
}

/// A workload's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Share a room key with `users` × `devices` devices.
    Share {
        /// Users.
        users: usize,
        /// Devices per user.
        devices: usize,
    },
    /// Encrypt and decrypt `messages` room events.
    Megolm {
        /// Messages.
        messages: usize,
    },
    /// Receive one room key from each of `senders` devices in one sync.
    ReceiveKeys {
        /// Sending devices.
        senders: usize,
    },
}

impl Workload {
    /// The workload's name in reports (`share/U=1000,D=2` ...).
    pub fn name(self) -> String {
        match self {
            Self::Share { users, devices } => format!("share/U={users},D={devices}"),
            Self::Megolm { messages } => format!("megolm/M={messages}"),
            Self::ReceiveKeys { senders } => format!("receive-keys/N={senders}"),
        }
    }

    /// The floor's name for the workload (`olm-raw/N=2000` ...).
    pub fn floor_name(self) -> String {
        match self {
            Self::Share { users, devices } => format!("olm-raw/N={}", users * devices),
            Self::Megolm { messages } => format!("megolm-raw/M={messages}"),
            Self::ReceiveKeys { senders } => format!("olm-raw-receive/N={senders}"),
        }
    }
}

/// The devices a `share` workload shares with, on their own server.
pub struct SharePeers {
    /// The server that holds their keys.
    pub server: Arc<TestServer>,
    /// The users.
    pub users: Vec<OwnedUserId>,
}

impl SharePeers {
    /// `users` users with `devices` devices each; every device uploads
    /// `one_time_keys` signed one-time keys (one is used per run).
    pub fn new(users: usize, devices: usize, one_time_keys: usize) -> Self {
        let server = Arc::new(TestServer::new());
        let user_ids: Vec<OwnedUserId> =
            (0..users).map(|u| format!("@peer{u}:hush.example").try_into().expect("valid user id")).collect();
        // Key generation is set-up; spread it over the cores.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::thread::scope(|scope| {
            for chunk in user_ids.chunks(users.div_ceil(threads).max(1)) {
                let server = &server;
                scope.spawn(move || {
                    for user_id in chunk {
                        for d in 0..devices {
                            RogueDevice::register_with_keys(
                                server,
                                user_id,
                                &format!("PEERDEV{d}"),
                                one_time_keys,
                                false,
                            );
                        }
                    }
                });
            }
        });
        Self { server, users: user_ids }
    }
}

/// How many devices `/keys/query` answers list for users other than `own`.
pub fn listed_devices<'a>(
    answers: impl Iterator<Item = &'a ruma::api::client::keys::get_keys::v3::Response>,
    own: &ruma::UserId,
) -> usize {
    answers.flat_map(|a| a.device_keys.iter()).filter(|(u, _)| u.as_str() != own.as_str()).map(|(_, d)| d.len()).sum()
}

/// The content of an `m.room.message` whose encrypted plaintext (type,
/// content and room id) is about 200 bytes.
pub fn message_content(n: usize) -> Value {
    json!({
        "msgtype": "m.text",
        "body": format!("Message {n:05}: the quick brown fox jumps over the lazy dog, twice over, for the benchmark's sake."),
    })
}

/// A room event as the server would deliver it, around encrypted `content`.
pub fn timeline_event(sender: &str, n: usize, content: Value) -> Value {
    json!({
        "type": "m.room.encrypted",
        "sender": sender,
        "event_id": format!("$event{n}"),
        "origin_server_ts": 1_700_000_000_000u64 + n as u64,
        "room_id": room_id(),
        "content": content,
    })
}

/// `senders` devices that will each send one room key, registered on `server`.
pub fn register_senders(server: &Arc<TestServer>, senders: usize) -> Vec<RogueDevice> {
    (0..senders)
        .map(|n| {
            let user_id: OwnedUserId = format!("@sender{n}:hush.example").try_into().expect("valid user id");
            RogueDevice::register_with_keys(server, &user_id, "SENDER", 0, false)
        })
        .collect()
}

/// Set-up of `receive-keys`: each sender claims a key of the receiving device
/// (a one-time key while there are any, then its fallback key), opens an Olm
/// session and sends an `m.room_key` for a new Megolm session of its own.
pub fn send_room_keys(
    server: &Arc<TestServer>,
    senders: &mut [RogueDevice],
    user_id: &ruma::UserId,
    device_id: &ruma::OwnedDeviceId,
    ed25519: vodozemac::Ed25519PublicKey,
    curve25519: vodozemac::Curve25519PublicKey,
) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = senders.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for chunk in senders.chunks_mut(chunk) {
            scope.spawn(move || {
                for sender in chunk {
                    sender.open_session(server, user_id, device_id);
                    let key = vodozemac::megolm::GroupSession::new(vodozemac::megolm::SessionConfig::version_1());
                    let content = json!({
                        "algorithm": "m.megolm.v1.aes-sha2",
                        "room_id": room_id(),
                        "session_id": key.session_id(),
                        "session_key": key.session_key().to_base64(),
                    });
                    let plaintext = sender.valid_plaintext(user_id, &ed25519, "m.room_key", content);
                    let event = sender.encrypt_raw(&curve25519, &plaintext);
                    server.inject_to_device(user_id, device_id, event);
                }
            });
        }
    });
}
