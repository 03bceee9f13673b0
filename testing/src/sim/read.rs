//! Reading: a device reads the new events of the rooms its user ever
//! joined (the server serves the whole timeline, readable or not), each
//! result checked against the truth; and healing, as hush-client does it:
//! waiting events are retried when their key arrives, their keys are
//! looked up in the backup, and asked of our own devices.

use std::collections::BTreeSet;

use hush_crypto_core::{DecryptedRoomEvent, KeySource, MegolmError, MembershipAtEvent};
use ruma_common::serde::Raw;
use serde_json::Value;

use super::{
    Halt,
    oracle::{HealPath, Healed, View},
    schedule::ROOMS,
    world::World,
};

/// Room-key requests and backup lookups per sync (hush-client's bound).
const HEAL_PER_SYNC: usize = 20;
/// How often the backup is checked again for keys not found in it
/// (hush-client's `BACKUP_RECHECK`).
const BACKUP_RECHECK_MS: u64 = 10 * 60 * 1000;

impl World {
    /// Reads every room's new events on device `d`; returns how many.
    pub(super) async fn read_rooms(&mut self, d: usize) -> Result<usize, Halt> {
        let mut read = 0;
        for room in 0..ROOMS {
            let user = self.devices[d].user;
            if !self.rooms[room].ever_joined[user] {
                continue;
            }
            let from = self.devices[d].positions.get(&room).copied().unwrap_or(0);
            let new: Vec<usize> = (0..self.events.len()).filter(|&e| self.events[e].room == room).skip(from).collect();
            if new.is_empty() {
                continue;
            }
            self.decrypt(d, &new).await?;
            *self.devices[d].positions.entry(room).or_default() += new.len();
            read += new.len();
        }
        Ok(read)
    }

    /// Decrypts events of one room as one batch and records each result.
    async fn decrypt(&mut self, d: usize, events: &[usize]) -> Result<(), Halt> {
        self.decrypt_healed(d, events, &Default::default()).await
    }

    /// Decrypts `events` (of any rooms) one batch per room.
    async fn decrypt_by_room(
        &mut self,
        d: usize,
        events: &[usize],
        arrived: &std::collections::BTreeMap<String, HealPath>,
    ) -> Result<(), Halt> {
        for room in 0..ROOMS {
            let in_room: Vec<usize> = events.iter().copied().filter(|&e| self.events[e].room == room).collect();
            self.decrypt_healed(d, &in_room, arrived).await?;
        }
        Ok(())
    }

    /// [`decrypt`](Self::decrypt), with how each session's key arrived.
    async fn decrypt_healed(
        &mut self,
        d: usize,
        events: &[usize],
        arrived: &std::collections::BTreeMap<String, HealPath>,
    ) -> Result<(), Halt> {
        let Some(&first) = events.first() else { return Ok(()) };
        let room_id = self.rooms[self.events[first].room].room_id.clone();
        let raws: Vec<Raw<Value>> = events.iter().filter_map(|&e| Raw::new(&self.events[e].raw).ok()).collect();
        self.devices[d].gate("decrypt_room_events")?;
        let results = self.devices[d].machine()?.decrypt_room_events(&raws, &room_id, &Default::default()).await;
        for ((&event, raw), result) in events.iter().zip(&raws).zip(results) {
            let healed_by = arrived.get(&self.events[event].session_id).copied();
            self.record(d, event, raw, result, healed_by).await?;
        }
        Ok(())
    }

    /// Checks one result against the truth and keeps it as the device's view.
    async fn record(
        &mut self,
        d: usize,
        event: usize,
        raw: &Raw<Value>,
        result: Result<DecryptedRoomEvent, MegolmError>,
        healed_by: Option<HealPath>,
    ) -> Result<(), Halt> {
        let ev = &self.events[event];
        let dev = &self.devices[d];
        let entitled = ev.entitled.contains(&dev.user);
        let before = dev.views.get(&event).cloned();
        let view = match result {
            Ok(decrypted) => self.accept_decrypted(d, event, &decrypted, before, healed_by)?,
            Err(error) => {
                if let Some(View::Decrypted { .. }) = before {
                    return Err(Halt::Invariant(format!(
                        "{} could decrypt {} before, and now cannot: {error}",
                        dev.device_id, ev.event_id
                    )));
                }
                let membership = if entitled { MembershipAtEvent::Member } else { MembershipAtEvent::NotMember };
                let room_id = &self.rooms[ev.room].room_id;
                let cause = dev.machine()?.utd_cause(raw, room_id, &error, membership).await;
                let first = match before {
                    Some(View::Utd { first, .. }) => first,
                    _ => cause.clone(),
                };
                View::Utd { cause, first }
            }
        };
        self.devices[d].views.insert(event, view);
        Ok(())
    }

    /// Checks a decryption against the truth (the user could read it, the
    /// body and the sending device are the ones sent, a forwarded key came
    /// to a device that verified one of its own) and says how it healed.
    fn accept_decrypted(
        &self,
        d: usize,
        event: usize,
        decrypted: &DecryptedRoomEvent,
        before: Option<View>,
        healed_by: Option<HealPath>,
    ) -> Result<View, Halt> {
        let (ev, dev) = (&self.events[event], &self.devices[d]);
        let fail = |what: String| Err(Halt::Invariant(format!("{} {what}", dev.device_id)));
        if !ev.entitled.contains(&dev.user) {
            return fail(format!("read {} in room {}, sent when its user could not read it", ev.event_id, ev.room));
        }
        let value: Value = decrypted.event.deserialize_as_unchecked().unwrap_or(Value::Null);
        if value["content"]["body"].as_str() != Some(ev.body.as_str()) {
            return fail(format!("decrypted {} to another body", ev.event_id));
        }
        let (sender, info) = (&self.devices[ev.sender_device], &decrypted.info);
        if info.sender != sender.user_id || info.sender_curve25519_key.to_base64() != sender.curve_key {
            return fail(format!("decrypted {} as sent by {}, not by {}", ev.event_id, info.sender, sender.device_id));
        }
        let healed = match before {
            Some(View::Utd { first, .. }) => {
                let path = healed_by.unwrap_or(match info.key_source {
                    KeySource::Backup | KeySource::Imported => HealPath::Backup,
                    KeySource::Forwarded => HealPath::OwnDevice,
                    KeySource::Olm | KeySource::Own => HealPath::LateKey,
                });
                if path == HealPath::OwnDevice && !self.verified.iter().any(|(a, _)| *a == d) {
                    return fail(format!("took a forwarded key for {} though it verified no device", ev.event_id));
                }
                Some(Healed { path, first })
            }
            Some(View::Decrypted { healed }) => healed,
            None => None,
        };
        Ok(View::Decrypted { healed })
    }

    /// The events device `d` cannot read yet, with their sessions.
    fn waiting(&self, d: usize) -> Vec<usize> {
        let dev = &self.devices[d];
        dev.views.iter().filter(|(_, v)| matches!(v, View::Utd { .. })).map(|(&e, _)| e).collect()
    }

    /// Retries the waiting events whose keys arrived.
    async fn retry_arrived(&mut self, d: usize) -> Result<(), Halt> {
        let arrived = std::mem::take(&mut self.devices[d].arrived);
        let retry: Vec<usize> =
            self.waiting(d).into_iter().filter(|&e| arrived.contains_key(&self.events[e].session_id)).collect();
        self.decrypt_by_room(d, &retry, &arrived).await
    }

    /// Healing after a sync: retry what arrived; look missing keys up in
    /// the backup (once each); ask our other devices for the rest.
    pub(super) async fn heal(&mut self, d: usize) -> Result<(), Halt> {
        self.retry_arrived(d).await?;
        self.restore_from_backup(d).await?;
        self.retry_arrived(d).await?;
        self.request_from_own_devices(d).await
    }

    async fn restore_from_backup(&mut self, d: usize) -> Result<(), Halt> {
        let dev = &self.devices[d];
        let machine = dev.machine()?;
        let (Some(version), Some(key)) =
            (machine.backup_version(), machine.backup_decryption_key().await.map_err(Halt::engine)?)
        else {
            return Ok(());
        };
        // hush-client's rule: a key is looked up once per state of the
        // backup (its etag), and the etag of keys looked up before is
        // checked at most every ten minutes (our other devices upload what
        // they receive; the sender never writes to our backup).
        let now = self.clock.now();
        let recheck = dev.backup_checked_at.is_none_or(|at| now.as_millis() >= at.as_millis() + BACKUP_RECHECK_MS);
        let etag = self.server.backup_etag(&dev.user_id, &version);
        let mut wanted = BTreeSet::new();
        let mut rechecked = false;
        for e in self.waiting(d) {
            let session = &self.events[e].session_id;
            let due = match dev.backup_looked.get(session) {
                None => true,
                Some((seen_version, seen_etag)) => {
                    rechecked |= recheck;
                    *seen_version != version || (recheck && *seen_etag != etag)
                }
            };
            if wanted.len() < HEAL_PER_SYNC && due {
                wanted.insert(session.clone());
            }
        }
        if rechecked {
            self.devices[d].backup_checked_at = Some(now);
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let mut all = self.server.backup_keys(&self.devices[d].user_id, &version);
        self.devices[d].backup_looked.extend(wanted.iter().map(|s| (s.clone(), (version.clone(), etag.clone()))));
        for room in all.values_mut() {
            room.sessions.retain(|id, _| wanted.contains(id.as_str()));
        }
        all.retain(|_, room| !room.sessions.is_empty());
        if all.is_empty() {
            return Ok(());
        }
        self.devices[d].gate("import_backed_up_room_keys")?;
        let result =
            self.devices[d].machine()?.import_backed_up_room_keys(&key, &all, |_, _| {}).await.map_err(Halt::engine)?;
        self.devices[d].arrived.extend(result.keys.into_values().flatten().map(|s| (s, HealPath::Backup)));
        Ok(())
    }

    async fn request_from_own_devices(&mut self, d: usize) -> Result<(), Halt> {
        let dev = &self.devices[d];
        let machine = dev.machine()?;
        let own = machine.get_user_devices(&dev.user_id).await.map_err(Halt::engine)?;
        if !own.values().any(|device| *device.device_id() != dev.device_id && !device.is_deleted()) {
            return Ok(());
        }
        let mut asked = BTreeSet::new();
        for e in self.waiting(d) {
            let event = &self.events[e];
            if asked.len() < HEAL_PER_SYNC && asked.insert(event.session_id.clone()) {
                let room_id = self.rooms[event.room].room_id.clone();
                self.devices[d].gate("request_room_key")?;
                self.devices[d].machine()?.request_room_key(&room_id, &event.session_id).await.map_err(Halt::engine)?;
            }
        }
        if asked.is_empty() {
            return Ok(());
        }
        let (mut net, devices) = self.net();
        devices[d].drive(&mut net).await
    }

    /// After a reopen: every event shown as unreadable is retried (a key
    /// that arrived just before a kill left no other trace in memory), as
    /// hush-client does with the waiting events it saves.
    pub(super) async fn retry_all_waiting(&mut self, d: usize) -> Result<(), Halt> {
        let waiting = self.waiting(d);
        self.decrypt_by_room(d, &waiting, &Default::default()).await
    }

    /// After a reopen: everything the device decrypted before still decrypts.
    pub(super) async fn check_keys_kept(&mut self, d: usize) -> Result<(), Halt> {
        let decrypted: Vec<usize> = self.devices[d]
            .views
            .iter()
            .filter(|(_, v)| matches!(v, View::Decrypted { .. }))
            .map(|(&e, _)| e)
            .collect();
        self.decrypt_by_room(d, &decrypted, &Default::default()).await
    }
}
