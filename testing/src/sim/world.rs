//! [`World`]: the simulated network: the server, the clock, the devices of
//! [`USERS`] users, [`ROOMS`] rooms and the truth about them; one method
//! per schedule op.

use std::sync::Arc;
use std::time::Duration;

use hush_crypto_core::{
    LocalTrust, MEGOLM_ALGORITHM, Membership, MemoryStore, RoomEncryption, RoomInfo, RoomReadiness,
    backup::{BACKUP_ALGORITHM, BackupDecryptionKey},
};
use ruma_common::{OwnedRoomId, OwnedUserId};
use ruma_events::room::history_visibility::HistoryVisibility;
use serde_json::{Value, json};
use tempfile::TempDir;

use super::{
    Halt,
    device::{Net, SimDevice, StoreHandle},
    ledger::Ledger,
    net::Delivery,
    oracle::{Blame, Blames, SimEvent, SimRoom},
    schedule::{Op, ROOMS, USERS},
    tally::Tally,
};
use crate::{TestServer, VirtualClock};

/// Users with a key backup (the others have none).
const USERS_WITH_BACKUP: usize = 2;
/// At most this many live devices per user.
const MAX_DEVICES_PER_USER: usize = 3;

/// The whole simulated network.
pub(super) struct World {
    pub(super) seed: u64,
    pub(super) server: Arc<TestServer>,
    pub(super) clock: VirtualClock,
    pub(super) ledger: Ledger,
    pub(super) devices: Vec<SimDevice>,
    pub(super) rooms: Vec<SimRoom>,
    pub(super) events: Vec<SimEvent>,
    pub(super) blames: Blames,
    pub(super) tally: Tally,
    pub(super) backup_keys: Vec<Option<BackupDecryptionKey>>,
    pub(super) step: usize,
    pub(super) opens: u64,
    /// Pairs of devices of one user that verified each other (both orders).
    pub(super) verified: std::collections::BTreeSet<(usize, usize)>,
    /// What happened, one line per notable thing (printed with a failure).
    pub(super) log: Vec<String>,
    dir: TempDir,
}

fn user_id(user: usize) -> OwnedUserId {
    let name = ["alice", "bob", "carol"].get(user).copied().unwrap_or("dave");
    OwnedUserId::try_from(format!("@{name}:sim.test")).unwrap_or_else(|_| unreachable!("a valid user id"))
}

impl World {
    /// A world for `seed`: one device per user, backups for the first
    /// users, everyone in room 0, alice and bob in room 1, alice in room 2.
    pub(super) async fn new(seed: u64) -> Result<Self, Halt> {
        let dir = TempDir::new().map_err(|e| Halt::Invariant(format!("temp dir: {e}")))?;
        let visibilities = [HistoryVisibility::Shared, HistoryVisibility::Joined, HistoryVisibility::Invited];
        let rooms = visibilities
            .into_iter()
            .enumerate()
            .map(|(n, visibility)| {
                let membership = std::array::from_fn(|u| match (n, u) {
                    (0, _) | (1, 0 | 1) | (2, 0) => Membership::Join,
                    _ => Membership::Leave,
                });
                SimRoom {
                    room_id: OwnedRoomId::try_from(format!("!room{n}:sim.test"))
                        .unwrap_or_else(|_| unreachable!("a valid room id")),
                    visibility,
                    ever_joined: membership.map(|m| m == Membership::Join),
                    membership,
                }
            })
            .collect();
        let mut world = Self {
            seed,
            server: Arc::new(TestServer::new()),
            clock: VirtualClock::default(),
            ledger: Ledger::default(),
            devices: Vec::new(),
            rooms,
            events: Vec::new(),
            blames: Blames::default(),
            tally: Tally::default(),
            backup_keys: (0..USERS).map(|_| None).collect(),
            step: 0,
            opens: 0,
            verified: Default::default(),
            log: Vec::new(),
            dir,
        };
        for user in 0..USERS {
            let device = world.new_device(user).await?;
            if user < USERS_WITH_BACKUP {
                let key = BackupDecryptionKey::generate().map_err(|e| Halt::Invariant(format!("backup key: {e}")))?;
                let machine = world.devices[device].machine()?;
                let auth = machine.backup_auth_data(&key.public_key()).await.map_err(Halt::engine)?;
                world.server.create_backup_version(&user_id(user), BACKUP_ALGORITHM, auth);
                world.backup_keys[user] = Some(key);
                world.enter_recovery_key(device).await?;
            }
        }
        Ok(world)
    }

    /// Notes what happened (printed at once with `HUSH_SIM_TRACE`).
    pub(super) fn note(&mut self, line: String) {
        if std::env::var_os("HUSH_SIM_TRACE").is_some() {
            eprintln!("{line}");
        }
        self.log.push(line);
    }

    /// The network view a device call needs.
    pub(super) fn net(&mut self) -> (Net<'_>, &mut Vec<SimDevice>) {
        (Net { server: &self.server, clock: &self.clock, ledger: &mut self.ledger }, &mut self.devices)
    }

    /// Devices that are logged in (up or down), in creation order.
    pub(super) fn live(&self) -> Vec<usize> {
        (0..self.devices.len()).filter(|&d| !self.devices[d].logged_out).collect()
    }

    /// The `n`th live device (modulo their count).
    fn pick(&self, n: u8) -> Option<usize> {
        let live = self.live();
        live.get(usize::from(n) % live.len().max(1)).copied()
    }

    /// The user's live devices.
    pub(super) fn devices_of(&self, user: usize) -> Vec<usize> {
        self.live().into_iter().filter(|&d| self.devices[d].user == user).collect()
    }

    /// Creates, opens and uploads a new device of `user`.
    async fn new_device(&mut self, user: usize) -> Result<usize, Halt> {
        let n = self.devices.len();
        let device_id = format!("DEV{n}");
        let store = if n % 4 == 3 {
            StoreHandle::Redb(self.dir.path().join(format!("{device_id}.redb")))
        } else {
            StoreHandle::Memory(Arc::new(MemoryStore::new()))
        };
        self.devices.push(SimDevice {
            user,
            user_id: user_id(user),
            device_id: device_id.as_str().into(),
            store,
            machine: None,
            created_step: self.step,
            logged_out: false,
            curve_key: String::new(),
            inbound: Default::default(),
            crash_after: None,
            killed_before: None,
            fail_requests: 0,
            request_failed: false,
            clean_sync_step: None,
            positions: Default::default(),
            views: Default::default(),
            arrived: Default::default(),
            late: Vec::new(),
            syncs: 0,
            counts: Default::default(),
        });
        self.open(n).await?;
        let (mut net, devices) = self.net();
        devices[n].drive(&mut net).await?;
        self.note(format!("step {}: {device_id} of {} logged in", self.step, user_id(user)));
        Ok(n)
    }

    /// Opens (or reopens) a device's engine from its store.
    pub(super) async fn open(&mut self, device: usize) -> Result<(), Halt> {
        self.opens += 1;
        let dev = &mut self.devices[device];
        dev.open(&self.clock).await?;
        // Request ids from a fixed sequence per open, so a seed replays.
        dev.machine()?.set_id_seed(self.seed.rotate_left(17) ^ self.opens.wrapping_mul(0x2545_F491_4F6C_DD1D));
        Ok(())
    }

    /// The user enters the backup's recovery key on `device`: the key is
    /// saved and the backup enabled.
    async fn enter_recovery_key(&mut self, device: usize) -> Result<(), Halt> {
        let user = self.devices[device].user;
        let (Some(key), Some(info)) = (self.backup_keys[user].as_ref(), self.server.latest_backup(&user_id(user)))
        else {
            return Ok(());
        };
        let machine = self.devices[device].machine()?;
        machine.save_backup_decryption_key(key).await.map_err(Halt::engine)?;
        machine.enable_backup(&info).await.map_err(Halt::engine)?;
        Ok(())
    }

    /// Runs one op.
    pub(super) async fn apply(&mut self, op: Op) -> Result<(), Halt> {
        self.clock.advance(Duration::from_secs(1));
        match op {
            Op::Send { user, device, room } => {
                self.send(usize::from(user) % USERS, device, usize::from(room) % ROOMS).await
            }
            Op::Sync { device } => match self.pick(device) {
                Some(d) => self.sync(d, false).await.map(|_| ()),
                None => Ok(()),
            },
            Op::Invite { user, room } => self.membership(user, room, Membership::Leave, Membership::Invite),
            Op::Join { user, room } => self.membership(user, room, Membership::Invite, Membership::Join),
            Op::Leave { user, room } => self.leave(user, room),
            Op::Login { user, verified, recovery } => self.login(usize::from(user) % USERS, verified, recovery).await,
            Op::Logout { device } => self.logout(device),
            Op::Restart { device } => match self.pick(device) {
                Some(d) => self.restart(d).await,
                None => Ok(()),
            },
            Op::Crash { device, after } => {
                if let Some(d) = self.pick(device).filter(|&d| self.devices[d].machine.is_some()) {
                    self.devices[d].crash_after = Some(u32::from(after));
                }
                Ok(())
            }
            Op::Drop { device } => self.arm(device, |a| a.drop += 1),
            Op::Corrupt { device } => self.arm(device, |a| a.corrupt += 1),
            Op::Duplicate { device } => self.arm(device, |a| a.duplicate += 1),
            Op::Reorder { device } => self.arm(device, |a| a.reorder += 1),
            Op::Delay { device, syncs } => self.arm(device, |a| a.delay = Some(u32::from(syncs))),
            Op::FailRequests { device, count } => {
                if let Some(d) = self.pick(device) {
                    self.devices[d].fail_requests += u32::from(count);
                }
                Ok(())
            }
            Op::ClockJump { hours } => {
                self.clock.advance(Duration::from_secs(3600 * u64::from(hours)));
                Ok(())
            }
            Op::Settle => self.settle().await,
        }
    }

    fn arm(&mut self, device: u8, f: impl FnOnce(&mut super::net::Armed)) -> Result<(), Halt> {
        if let Some(d) = self.pick(device) {
            f(&mut self.devices[d].inbound.armed);
        }
        Ok(())
    }

    /// A membership change from `from` to `to` (nothing if the user is not in `from`).
    fn membership(&mut self, user: u8, room: u8, from: Membership, to: Membership) -> Result<(), Halt> {
        let (user, room) = (usize::from(user) % USERS, usize::from(room) % ROOMS);
        let sim_room = &mut self.rooms[room];
        if sim_room.membership[user] == from {
            sim_room.membership[user] = to;
            sim_room.ever_joined[user] |= to == Membership::Join;
            self.note(format!("step {}: {} is {to:?} in room {room}", self.step, user_id(user)));
        }
        Ok(())
    }

    /// A member leaves, unless it is the room's last joined member.
    fn leave(&mut self, user: u8, room: u8) -> Result<(), Halt> {
        let (user, room) = (usize::from(user) % USERS, usize::from(room) % ROOMS);
        let sim_room = &mut self.rooms[room];
        let joined = sim_room.membership.iter().filter(|m| **m == Membership::Join).count();
        let last = joined == 1 && sim_room.membership[user] == Membership::Join;
        if sim_room.membership[user] != Membership::Leave && !last {
            sim_room.membership[user] = Membership::Leave;
            self.note(format!("step {}: {} left room {room}", self.step, user_id(user)));
        }
        Ok(())
    }

    /// A new login of `user`, verified by (and trusting) its other devices
    /// if `verified`, with the recovery key entered if `recovery`.
    async fn login(&mut self, user: usize, verified: bool, recovery: bool) -> Result<(), Halt> {
        let others = self.devices_of(user);
        if others.len() >= MAX_DEVICES_PER_USER {
            return Ok(());
        }
        let new = self.new_device(user).await?;
        self.tally.count_fault("new login");
        if recovery {
            self.enter_recovery_key(new).await?;
        }
        if !verified {
            return Ok(());
        }
        let own = user_id(user);
        let up: Vec<usize> = others.into_iter().filter(|&d| self.devices[d].machine.is_some()).collect();
        for other in up {
            for (a, b) in [(new, other), (other, new)] {
                let (mut net, devices) = self.net();
                devices[a].machine()?.mark_users_outdated([own.as_ref()]).await.map_err(Halt::engine)?;
                devices[a].drive(&mut net).await?;
                let b_id = devices[b].device_id.clone();
                let machine = devices[a].machine()?;
                // A device not known yet (its keys query failed) cannot be
                // verified, as no SAS could start with it.
                if !machine.set_local_trust(&own, &b_id, LocalTrust::Verified).await.map_err(Halt::engine)? {
                    continue;
                }
                // The engine sends our open requests to it again itself.
                self.verified.insert((a, b));
                let (mut net, devices) = self.net();
                devices[a].drive(&mut net).await?;
            }
        }
        self.note(format!("step {}: the new login was verified", self.step));
        Ok(())
    }

    /// A device logs out (unless it is its user's last).
    fn logout(&mut self, device: u8) -> Result<(), Halt> {
        let Some(d) = self.pick(device) else { return Ok(()) };
        let user = self.devices[d].user;
        if self.devices_of(user).len() < 2 {
            return Ok(());
        }
        let dev = &mut self.devices[d];
        self.server.delete_device(&dev.user_id, &dev.device_id);
        dev.logged_out = true;
        dev.machine = None;
        let line = format!("step {}: {} logged out", self.step, dev.device_id);
        self.note(line);
        self.tally.count_fault("logout");
        Ok(())
    }

    /// A device sends a message into a room its user joined: the room is
    /// prepared (keys queried, sessions claimed, the room key shared),
    /// the message encrypted and put in the timeline with who may read it.
    async fn send(&mut self, user: usize, device: u8, room: usize) -> Result<(), Halt> {
        if self.rooms[room].membership[user] != Membership::Join {
            return Ok(());
        }
        let mine = self.devices_of(user);
        let Some(&d) = mine.get(usize::from(device) % mine.len().max(1)) else { return Ok(()) };
        if self.devices[d].machine.is_none() {
            return Ok(());
        }
        let sim_room = &self.rooms[room];
        let members = (0..USERS).map(|u| (user_id(u), sim_room.membership[u])).collect();
        let encryption = RoomEncryption {
            algorithm: MEGOLM_ALGORITHM.to_owned(),
            rotation_period_ms: None,
            rotation_period_msgs: None,
        };
        let mut info = RoomInfo::new(sim_room.room_id.clone(), members, Some(encryption));
        info.history_visibility = sim_room.visibility.clone();
        let room_id = sim_room.room_id.clone();
        let entitled = sim_room.entitled_now();
        let mut ready = false;
        for _ in 0..8 {
            let (mut net, devices) = self.net();
            devices[d].gate("prepare_room")?;
            let now = net.clock.now();
            match devices[d].machine()?.prepare_room(&info, now).await.map_err(Halt::engine)? {
                RoomReadiness::Ready { .. } => {
                    ready = true;
                    break;
                }
                RoomReadiness::Waiting { .. } => devices[d].drive(&mut net).await?,
            }
        }
        if !ready {
            self.tally.count("sends abandoned (requests kept failing)");
            return Ok(());
        }
        self.post(d, room, room_id, entitled).await
    }

    /// Encrypts the message and puts it in the room's timeline.
    async fn post(
        &mut self,
        d: usize,
        room: usize,
        room_id: OwnedRoomId,
        entitled: std::collections::BTreeSet<usize>,
    ) -> Result<(), Halt> {
        let n = self.events.len();
        let body = format!("message {n} of seed {}", self.seed);
        self.devices[d].gate("encrypt_room_event")?;
        let now = self.clock.now();
        let content = json!({"msgtype": "m.text", "body": body});
        let encrypted = self.devices[d]
            .machine()?
            .encrypt_room_event(&room_id, "m.room.message", &content, now)
            .await
            .map_err(|e| Halt::Invariant(format!("encrypting after the room was ready failed: {e}")))?;
        let content: Value = encrypted.deserialize_as_unchecked().map_err(|e| Halt::Invariant(e.to_string()))?;
        let event_id = format!("$e{n}");
        let (session_id, index) = self.ledger.megolm_sent(&event_id, &content).map_err(Halt::Invariant)?;
        let sender = &self.devices[d];
        let raw = json!({
            "type": "m.room.encrypted", "event_id": event_id, "sender": sender.user_id,
            "origin_server_ts": now.as_millis(), "room_id": room_id, "content": content,
        });
        self.blame_unknown_recipients(d, n, &entitled).await?;
        self.note(format!(
            "step {}: {} sent {event_id} in room {room} (session {session_id} index {index}, readers {entitled:?})",
            self.step, self.devices[d].device_id
        ));
        // The session was made after this device's previous event in the
        // room if that one used another session (the op that made it may
        // have been killed before its first message), else with it.
        let previous = self.events.iter().rev().find(|e| e.room == room && e.sender_device == d);
        let session_start = match previous {
            Some(previous) if previous.session_id == session_id => previous.session_start,
            Some(previous) => previous.step,
            None => 0,
        };
        self.events.push(SimEvent {
            room,
            raw,
            event_id,
            body,
            sender_device: d,
            session_id,
            step: self.step,
            session_start,
            index,
            entitled,
        });
        Ok(())
    }

    /// Entitled devices the sender does not know yet (it has not synced
    /// since they appeared) could not get the key: noted as blame.
    async fn blame_unknown_recipients(
        &mut self,
        sender: usize,
        event: usize,
        entitled: &std::collections::BTreeSet<usize>,
    ) -> Result<(), Halt> {
        for r in self.live() {
            let recipient = &self.devices[r];
            if r == sender || !entitled.contains(&recipient.user) {
                continue;
            }
            let known = self.devices[sender]
                .machine()?
                .get_device(&recipient.user_id, &recipient.device_id)
                .await
                .map_err(Halt::engine)?
                .is_some_and(|device| !device.is_deleted());
            if !known {
                self.blames.events.entry((r, event)).or_default().insert(Blame::UnknownToSender);
            }
        }
        Ok(())
    }

    /// Records what the delivery faults did to `device`'s messages.
    pub(super) fn note_deliveries(&mut self, device: usize, deliveries: Vec<Delivery>) {
        for delivery in deliveries {
            let (name, sender_key, blame) = match delivery {
                Delivery::Dropped { sender_key } => ("to-device lost", sender_key, Some(Blame::Lost)),
                Delivery::Corrupted { sender_key } => ("to-device corrupted", sender_key, Some(Blame::Corrupted)),
                Delivery::Delayed { sender_key } => ("to-device delayed", sender_key, None),
                Delivery::Duplicated => ("to-device duplicated", None, None),
                Delivery::Reordered => ("to-device reordered", None, None),
            };
            self.tally.count_fault(name);
            self.note(format!("step {}: {name} for {}", self.step, self.devices[device].device_id));
            let sender = sender_key.and_then(|key| self.devices.iter().position(|d| d.curve_key == key));
            if let (Some(blame), Some(sender)) = (blame, sender) {
                self.blames.pairs.entry((device, sender)).or_default().push((self.step, blame));
            }
        }
    }

    /// One sync of a device, then its timeline read and its waiting events
    /// healed. Returns how much happened: to-device messages taken and
    /// sent, events read.
    pub(super) async fn sync(&mut self, d: usize, healthy: bool) -> Result<usize, Halt> {
        if self.devices[d].machine.is_none() {
            return Ok(0);
        }
        let sent_before = self.devices[d].counts.to_device_sent;
        let step = self.step;
        let (mut net, devices) = self.net();
        let result = devices[d].sync(&mut net, healthy, step).await;
        let deliveries = std::mem::take(&mut self.devices[d].inbound.report);
        self.note_deliveries(d, deliveries);
        let taken = result?;
        // Handled before the next call into the engine (see `heal`).
        self.check_drained(d).await?;
        let read = self.read_rooms(d).await?;
        self.heal(d).await?;
        let sent = usize::try_from(self.devices[d].counts.to_device_sent - sent_before).unwrap_or(usize::MAX);
        Ok(taken + read + sent)
    }

    /// A clean shutdown and reopen (or the reopen after a kill), then the
    /// check that no key was lost: everything it decrypted before still
    /// decrypts.
    pub(super) async fn restart(&mut self, d: usize) -> Result<(), Halt> {
        let killed = self.devices[d].machine.is_none();
        let dev = &mut self.devices[d];
        dev.machine = None;
        dev.crash_after = None;
        // The client's memory is gone with its process (its timeline, kept
        // in `views` and `positions`, is the application's, on disk).
        dev.arrived.clear();
        dev.late.clear();
        self.open(d).await?;
        self.tally.count_fault(if killed { "crash (reopened)" } else { "restart" });
        self.note(format!(
            "step {}: {} reopened from its store (killed: {killed})",
            self.step, self.devices[d].device_id
        ));
        self.check_keys_kept(d).await?;
        // The engine decrypts its waiting events again after a reopen (a
        // key that arrived just before a kill left no other trace).
        self.heal(d).await
    }
}
