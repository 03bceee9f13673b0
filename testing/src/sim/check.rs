//! The invariants, checked after every op ([`World::check`]) and, strictly,
//! after a settle ([`World::settle`]): faults paused, killed devices back,
//! held messages delivered, every device synced until the network is quiet.

use std::time::Duration;

use serde_json::Value;

use super::{
    Halt,
    oracle::{Truth, View, legitimate},
    world::World,
};

/// Settle rounds (ten minutes apart) before the network must be quiet.
const SETTLE_ROUNDS: usize = 12;
/// The pauses between a settle's phases, in hours (the last longer than
/// the longest wait between two sendings of open room-key requests and
/// than a device keeps a request it could not answer better: a week).
const SETTLE_PAUSES_HOURS: [u64; 3] = [2, 2, 7 * 24 + 1];

impl World {
    /// Every unreadable event a device holds has a cause the truth
    /// accepts (with `settled`, only a recorded fault excuses a key that
    /// did not arrive). Decrypted events were checked when read.
    pub(super) fn check(&self, settled: bool) -> Result<(), Halt> {
        for d in self.live() {
            let dev = &self.devices[d];
            for (&e, view) in &dev.views {
                let View::Utd { cause, .. } = view else { continue };
                let ev = &self.events[e];
                let truth = Truth {
                    entitled: ev.entitled.contains(&dev.user),
                    newer_than_event: dev.created_step > ev.step,
                    blame: self.blames.of(d, e, ev),
                };
                legitimate(cause, &truth, settled).map_err(|why| {
                    Halt::Invariant(format!(
                        "{} cannot read {} (room {}, sent by {} at step {}): {why}; truth {truth:?}",
                        dev.device_id, ev.event_id, ev.room, self.devices[ev.sender_device].device_id, ev.step
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// Pauses the faults and lets the network settle, then checks strictly:
    /// every device read every event of its rooms, and every event it may
    /// read is decrypted unless a recorded fault kept its key away.
    pub(super) async fn settle(&mut self) -> Result<(), Halt> {
        // Time passes (back-offs expire), nothing is armed any more.
        self.clock.advance(Duration::from_secs(3600));
        for d in self.live() {
            let dev = &mut self.devices[d];
            dev.inbound.armed = Default::default();
            dev.crash_after = None;
            dev.fail_requests = 0;
            if dev.machine.is_none() {
                self.restart(d).await?;
            }
        }
        // Phases until quiet, with time passing between them so that
        // timers that wait (the resend of open room-key requests, whose
        // wait doubles up to a week) get to run.
        for pause_hours in SETTLE_PAUSES_HOURS {
            self.settle_until_quiet().await?;
            self.clock.advance(Duration::from_secs(pause_hours * 3600));
        }
        self.settle_until_quiet().await?;
        self.check_all_read()?;
        self.check_device_lists().await?;
        self.check(true)?;
        self.check_healed().await
    }

    /// After settling, no event stays unreadable that healing could have
    /// fixed: its key is in a backup the device can read (from an index
    /// at or before the event's), or a device of the same user that the
    /// device verified (and that verified it) decrypted it.
    async fn check_healed(&self) -> Result<(), Halt> {
        for d in self.live() {
            let dev = &self.devices[d];
            let machine = dev.machine()?;
            let key = machine.backup_decryption_key().await.map_err(Halt::engine)?;
            let backup = match (machine.backup_version(), key) {
                (Some(version), Some(_)) => self.server.backup_keys(&dev.user_id, &version),
                _ => Default::default(),
            };
            for (&e, view) in &dev.views {
                let ev = &self.events[e];
                if !matches!(view, View::Utd { .. }) || !ev.entitled.contains(&dev.user) {
                    continue;
                }
                let entry = backup.get(&self.rooms[ev.room].room_id).and_then(|r| r.sessions.get(&ev.session_id));
                let first_index = entry
                    .and_then(|raw| raw.deserialize_as_unchecked::<Value>().ok())
                    .and_then(|value| value["first_message_index"].as_u64());
                let in_backup = first_index.is_some_and(|first| first <= u64::from(ev.index));
                let mutual = |b: usize| self.verified.contains(&(d, b)) && self.verified.contains(&(b, d));
                let holder = (0..self.devices.len()).filter(|&b| mutual(b)).find(|&b| {
                    let other = &self.devices[b];
                    !other.logged_out && matches!(other.views.get(&e), Some(View::Decrypted { .. }))
                });
                if in_backup || holder.is_some() {
                    let from = holder.map_or("the backup".to_owned(), |b| self.devices[b].device_id.to_string());
                    return Err(Halt::Invariant(format!(
                        "{} still cannot read {} after settling, though {from} holds its key",
                        dev.device_id, ev.event_id
                    )));
                }
            }
        }
        Ok(())
    }

    /// Sync rounds, ten minutes apart, until one in which nothing is sent,
    /// taken or read.
    async fn settle_until_quiet(&mut self) -> Result<(), Halt> {
        for _ in 0..SETTLE_ROUNDS {
            // Time passes while the network settles (rate limits such as
            // the backup's ten-minute recheck run out).
            self.clock.advance(Duration::from_secs(600));
            let mut activity = 0;
            for d in self.live() {
                let n = self.sync(d, true).await?;
                if n > 0 {
                    let line = format!(
                        "step {}: settle: {} took {n} messages or events",
                        self.step, self.devices[d].device_id
                    );
                    self.note(line);
                }
                activity += n;
            }
            if activity == 0 {
                return Ok(());
            }
        }
        Err(Halt::Invariant(format!("the network was not quiet after {SETTLE_ROUNDS} settle rounds")))
    }

    /// Every device has a view of every event of the rooms its user joined.
    fn check_all_read(&self) -> Result<(), Halt> {
        for d in self.live() {
            let dev = &self.devices[d];
            for (e, ev) in self.events.iter().enumerate() {
                if self.rooms[ev.room].ever_joined[dev.user] && !dev.views.contains_key(&e) {
                    return Err(Halt::Invariant(format!(
                        "{} never read {} after settling",
                        dev.device_id, ev.event_id
                    )));
                }
            }
        }
        Ok(())
    }

    /// After settling, every device knows every live device of the users
    /// it tracks (device lists converge).
    async fn check_device_lists(&self) -> Result<(), Halt> {
        for a in self.live() {
            let machine = self.devices[a].machine()?;
            let tracked = machine.tracked_users();
            for b in self.live() {
                let other = &self.devices[b];
                if a == b || !tracked.contains(&other.user_id) {
                    continue;
                }
                let known = machine
                    .get_device(&other.user_id, &other.device_id)
                    .await
                    .map_err(Halt::engine)?
                    .is_some_and(|device| !device.is_deleted());
                if !known {
                    return Err(Halt::Invariant(format!(
                        "{} tracks {} but does not know its device {} after settling",
                        self.devices[a].device_id, other.user_id, other.device_id
                    )));
                }
            }
        }
        Ok(())
    }
}
