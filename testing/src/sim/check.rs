//! The invariants, checked after every op ([`World::check`]) and, strictly,
//! after a settle ([`World::settle`]): faults paused, killed devices back,
//! held messages delivered, every device synced until the network is quiet.

use std::time::Duration;

use super::{
    Halt,
    oracle::{Truth, View, legitimate},
    world::World,
};

/// Settle rounds before the network must be quiet.
const SETTLE_ROUNDS: usize = 8;

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
        let mut quiet = false;
        for _ in 0..SETTLE_ROUNDS {
            let mut activity = 0;
            for d in self.live() {
                let n = self.sync(d, true).await?;
                if n > 0 {
                    self.note(format!(
                        "step {}: settle: {} took {n} messages or events",
                        self.step, self.devices[d].device_id
                    ));
                }
                activity += n;
            }
            if activity == 0 {
                quiet = true;
                break;
            }
        }
        if !quiet {
            return Err(Halt::Invariant(format!("the network was not quiet after {SETTLE_ROUNDS} settle rounds")));
        }
        self.check_all_read()?;
        self.check_device_lists().await?;
        self.check(true)
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
