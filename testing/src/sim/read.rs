//! Reading: a device reads the new events of the rooms its user ever
//! joined (the server serves the whole timeline, readable or not), each
//! result checked against the truth; and healing, driven as hush-client
//! drives it: the engine keeps the waiting events, asks our own devices,
//! looks keys up in the backup and announces late decryptions; this
//! driver only moves requests and answers and checks what it is told.

use hush_crypto_core::{DecryptedRoomEvent, KeySource, MegolmError, MembershipAtEvent};
use ruma_common::serde::Raw;
use serde_json::Value;

use super::{
    Halt,
    oracle::{HealPath, Healed, View},
    schedule::ROOMS,
    world::World,
};

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

    /// Healing, as hush-client drives it: the drive loop runs the engine's
    /// healing (its timers decrypt waiting events again, ask our other
    /// devices, look keys up in the backup); the late decryptions it
    /// announces are checked against the truth. A drain acknowledges them
    /// (the next save of the engine makes that durable), so they are
    /// handled before the next call into the engine, as hush-client does.
    /// A few rounds, so a backup lookup's answer is decrypted in the same
    /// heal.
    pub(super) async fn heal(&mut self, d: usize) -> Result<(), Halt> {
        for _ in 0..3 {
            self.check_drained(d).await?;
            let (mut net, devices) = self.net();
            devices[d].drive(&mut net).await?;
            self.devices[d].take_events()?;
            if self.devices[d].late.is_empty() {
                return Ok(());
            }
        }
        self.check_drained(d).await
    }

    /// Checks the late decryptions drained so far.
    pub(super) async fn check_drained(&mut self, d: usize) -> Result<(), Halt> {
        for late in std::mem::take(&mut self.devices[d].late) {
            self.check_late(d, late).await?;
        }
        Ok(())
    }

    /// Checks one late decryption: an event the device read and could not
    /// decrypt, decrypted to the truth.
    async fn check_late(&mut self, d: usize, late: hush_crypto_core::LateDecryption) -> Result<(), Halt> {
        let Some(event) = (0..self.events.len()).find(|&e| self.events[e].event_id == late.event_id) else {
            return Err(Halt::Invariant(format!(
                "{} announced a late decryption of {}, an event no one sent",
                self.devices[d].device_id, late.event_id
            )));
        };
        if !self.devices[d].views.contains_key(&event) {
            return Err(Halt::Invariant(format!(
                "{} announced a late decryption of {}, which it never read",
                self.devices[d].device_id, late.event_id
            )));
        }
        // A view already decrypted is a repeat after a kill between the
        // drain and the save of the registry (announced at least once):
        // still checked against the truth.
        let raw = Raw::new(&self.events[event].raw).map_err(|e| Halt::Invariant(e.to_string()))?;
        // How the key that healed it came (the latest copy of its session).
        let healed_by = self.devices[d].arrived.get(&self.events[event].session_id).copied();
        self.record(d, event, &raw, Ok(late.decrypted), healed_by).await
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
