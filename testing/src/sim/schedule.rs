//! The simulator's schedule: a list of [`Op`]s generated from a seed before
//! the run starts. Ops name users, devices and rooms by small indexes that
//! are resolved against the world when the op runs (modulo what exists),
//! so any sub-list of a schedule is itself a valid schedule: that is what
//! lets a failing schedule be shrunk by dropping ops.

use std::fmt;

use crate::Seeded;

/// The users of a simulated world.
pub const USERS: usize = 3;
/// The rooms of a simulated world (one per history visibility:
/// `shared`, `joined`, `invited`).
pub const ROOMS: usize = 3;

/// One step of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A device of `user` sends a message into `room` (if it is joined).
    Send {
        /// The user (modulo [`USERS`]).
        user: u8,
        /// Which of the user's live devices (modulo their count).
        device: u8,
        /// The room.
        room: u8,
    },
    /// A device syncs: to-device messages, device lists, new room events.
    Sync {
        /// The device (modulo the live devices).
        device: u8,
    },
    /// A member invites `user` to `room` (if the user is not in it).
    Invite {
        /// The user.
        user: u8,
        /// The room.
        room: u8,
    },
    /// `user` joins `room` (if invited).
    Join {
        /// The user.
        user: u8,
        /// The room.
        room: u8,
    },
    /// `user` leaves `room` (if a member, and not its last joined member).
    Leave {
        /// The user.
        user: u8,
        /// The room.
        room: u8,
    },
    /// `user` logs in on a new device (at most three live devices each).
    /// With `verified`, the user verifies it from an existing device (each
    /// trusts the other); with `recovery`, the user enters the backup's
    /// recovery key on it.
    Login {
        /// The user.
        user: u8,
        /// Whether the new device and the old ones verify each other.
        verified: bool,
        /// Whether the recovery key is entered on the new device.
        recovery: bool,
    },
    /// A device logs out (the server deletes it), unless it is its user's last.
    Logout {
        /// The device.
        device: u8,
    },
    /// A device shuts down cleanly and reopens from its store.
    Restart {
        /// The device.
        device: u8,
    },
    /// A device is killed after `after` more engine calls (in whatever op
    /// it is then running), and reopened from its store at the next
    /// settle or restart: a SIGKILL between any two engine steps.
    Crash {
        /// The device.
        device: u8,
        /// How many engine calls it still makes.
        after: u8,
    },
    /// The next to-device message delivered to a device is lost.
    Drop {
        /// The device.
        device: u8,
    },
    /// The next Olm message to a device arrives replaced by a well-formed
    /// one no session of the device decrypts (as when two devices' sessions
    /// went out of step): its content is lost, and the device should
    /// replace the wedged session.
    Corrupt {
        /// The device.
        device: u8,
    },
    /// The next to-device message delivered to a device arrives twice.
    Duplicate {
        /// The device.
        device: u8,
    },
    /// The next batch of to-device messages to a device arrives reversed.
    Reorder {
        /// The device.
        device: u8,
    },
    /// The next to-device message to a device is held back for `syncs`
    /// of its syncs.
    Delay {
        /// The device.
        device: u8,
        /// For how many syncs.
        syncs: u8,
    },
    /// The device's next `count` requests to the server fail (nothing
    /// reaches the server, the engine gets no answer).
    FailRequests {
        /// The device.
        device: u8,
        /// How many.
        count: u8,
    },
    /// The clock jumps forward.
    ClockJump {
        /// By this many hours.
        hours: u8,
    },
    /// Faults pause: crashed devices come back, held messages are
    /// delivered, and every device syncs until the network is quiet; then
    /// the strict invariants are checked.
    Settle,
}

impl Op {
    /// A short name of the op's kind, for tallies.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Send { .. } => "send",
            Self::Sync { .. } => "sync",
            Self::Invite { .. } => "invite",
            Self::Join { .. } => "join",
            Self::Leave { .. } => "leave",
            Self::Login { .. } => "login",
            Self::Logout { .. } => "logout",
            Self::Restart { .. } => "restart",
            Self::Crash { .. } => "crash",
            Self::Drop { .. } => "drop",
            Self::Corrupt { .. } => "corrupt",
            Self::Duplicate { .. } => "duplicate",
            Self::Reorder { .. } => "reorder",
            Self::Delay { .. } => "delay",
            Self::FailRequests { .. } => "fail_requests",
            Self::ClockJump { .. } => "clock_jump",
            Self::Settle => "settle",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Send { user, device, room } => write!(f, "send user={user} device={device} room={room}"),
            Self::Sync { device } => write!(f, "sync device={device}"),
            Self::Invite { user, room } => write!(f, "invite user={user} room={room}"),
            Self::Join { user, room } => write!(f, "join user={user} room={room}"),
            Self::Leave { user, room } => write!(f, "leave user={user} room={room}"),
            Self::Login { user, verified, recovery } => {
                write!(f, "login user={user} verified={verified} recovery={recovery}")
            }
            Self::Logout { device } => write!(f, "logout device={device}"),
            Self::Restart { device } => write!(f, "restart device={device}"),
            Self::Crash { device, after } => write!(f, "crash device={device} after={after}"),
            Self::Drop { device } => write!(f, "drop device={device}"),
            Self::Corrupt { device } => write!(f, "corrupt device={device}"),
            Self::Duplicate { device } => write!(f, "duplicate device={device}"),
            Self::Reorder { device } => write!(f, "reorder device={device}"),
            Self::Delay { device, syncs } => write!(f, "delay device={device} syncs={syncs}"),
            Self::FailRequests { device, count } => write!(f, "fail_requests device={device} count={count}"),
            Self::ClockJump { hours } => write!(f, "clock_jump hours={hours}"),
            Self::Settle => write!(f, "settle"),
        }
    }
}

/// The schedule of `seed`: `len` ops, weighted toward messages and syncs.
pub fn generate(seed: u64, len: usize) -> Vec<Op> {
    // xorshift must not start at 0; mixing spreads nearby seeds apart.
    let mut rng = Seeded(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..len).map(|_| one(&mut rng)).collect()
}

fn one(rng: &mut Seeded) -> Op {
    let small = |rng: &mut Seeded, n: u64| u8::try_from(rng.below(n)).unwrap_or(0);
    let user = small(rng, USERS as u64);
    let room = small(rng, ROOMS as u64);
    let device = small(rng, 16);
    match rng.below(100) {
        0..=24 => Op::Send { user, device, room },
        25..=49 => Op::Sync { device },
        50..=53 => Op::Invite { user, room },
        54..=57 => Op::Join { user, room },
        58..=59 => Op::Leave { user, room },
        60..=63 => Op::Login { user, verified: rng.below(3) > 0, recovery: rng.below(2) == 0 },
        64 => Op::Logout { device },
        65..=67 => Op::Restart { device },
        68..=72 => Op::Crash { device, after: small(rng, 12) },
        73..=75 => Op::Drop { device },
        76 => Op::Corrupt { device },
        77..=79 => Op::Duplicate { device },
        80..=82 => Op::Reorder { device },
        83..=86 => Op::Delay { device, syncs: 1 + small(rng, 3) },
        87..=89 => Op::FailRequests { device, count: 1 + small(rng, 4) },
        90..=91 => Op::ClockJump { hours: 1 + small(rng, 48) },
        _ => Op::Settle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule_every_time() {
        assert_eq!(generate(42, 200), generate(42, 200));
        assert_ne!(generate(42, 200), generate(43, 200));
    }

    #[test]
    fn schedules_use_every_kind_of_op() {
        let kinds: std::collections::BTreeSet<&str> =
            (1..20).flat_map(|s| generate(s, 200)).map(|o| o.kind()).collect();
        assert_eq!(kinds.len(), 17, "{kinds:?}");
    }
}
