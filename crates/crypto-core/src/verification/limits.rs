//! How many verification flows this device holds, and which one gives way
//! when a new one comes. Requests arrive in the clear from anyone who can
//! reach us (a to-device message, a room event from a co-member), so the
//! limits are per sender and per room, and the flows we start ourselves
//! are counted apart: a flood from one user never blocks another user's
//! request, nor our own.
//!
//! * An incoming request that our user has not accepted yet is the only
//!   kind that gives way. When its sender already has
//!   [`MAX_INCOMING_PER_USER`] open incoming requests, the oldest of them
//!   that nobody accepted is dropped for the new one (a flooder only
//!   displaces their own requests); when all are in progress, the new one
//!   is ignored. Per room ([`MAX_INCOMING_PER_ROOM`]) and over all incoming
//!   flows ([`MAX_INCOMING`]), the sender with the most unaccepted requests
//!   there gives way first (its oldest), so one user's flood costs only
//!   that user. Requests of our own other devices give way only to our own.
//!   (Many accounts each sending one request can still crowd a room or the
//!   whole: nothing here tells a stranger from a genuine requester.)
//! * Our own requests: at most [`MAX_OUTGOING`] unfinished at once.
//! * Finished flows (their end stays readable) are kept up to
//!   [`MAX_FINISHED`], the oldest dropped first.
//!
//! Pure: the registry describes its flows (`FlowSummary`) and applies
//! the answer.

use std::collections::HashMap;

use ruma_common::{RoomId, UserId};

/// Open incoming requests kept per other user.
pub const MAX_INCOMING_PER_USER: usize = 4;
/// Open incoming in-room requests kept per room.
pub const MAX_INCOMING_PER_ROOM: usize = 8;
/// Open incoming flows kept in all.
pub const MAX_INCOMING: usize = 256;
/// Unfinished flows of our own making.
pub const MAX_OUTGOING: usize = 16;
/// Finished flows kept so their end can still be read.
pub const MAX_FINISHED: usize = 64;

/// What the limits need to know of one flow.
#[derive(Clone, Copy, Debug)]
pub(super) struct FlowSummary<'a> {
    /// The other user.
    pub(super) user: &'a UserId,
    /// The room, for an in-room flow.
    pub(super) room: Option<&'a RoomId>,
    /// We sent the request.
    pub(super) we_requested: bool,
    /// Verified or cancelled.
    pub(super) finished: bool,
    /// Our user accepted the request (or a method started): in progress.
    pub(super) accepted: bool,
    /// Insertion order.
    pub(super) serial: u64,
}

impl FlowSummary<'_> {
    /// An incoming request nobody acted on yet: the only kind that gives way.
    fn yields(&self) -> bool {
        !self.we_requested && !self.finished && !self.accepted
    }

    fn open_incoming(&self) -> bool {
        !self.we_requested && !self.finished
    }
}

/// What to do with a new incoming request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admission<K> {
    /// Keep it, after dropping these flows.
    Admit(Vec<K>),
    /// Ignore it: the flows it would displace are all in progress.
    Refuse,
}

/// Whether a request from `user` (in `room`, for an in-room one) is kept,
/// and which flows make room for it. `own_user` is ours: requests of our
/// own other devices give way only to requests of our own user.
pub(super) fn admit_incoming<K: Clone + PartialEq>(
    flows: &[(K, FlowSummary<'_>)],
    user: &UserId,
    room: Option<&RoomId>,
    own_user: &UserId,
) -> Admission<K> {
    let mut evicted: Vec<K> = Vec::new();
    // Per sender (its own oldest gives way), then per room and over all
    // (the sender with the most unaccepted requests there gives way).
    let same_user = |f: &FlowSummary<'_>| f.user == user;
    if !make_room(flows, &mut evicted, MAX_INCOMING_PER_USER, &same_user, &same_user) {
        return Admission::Refuse;
    }
    let may_yield = |f: &FlowSummary<'_>| f.user != own_user || user == own_user;
    if let Some(room) = room {
        let in_room = |f: &FlowSummary<'_>| f.room == Some(room);
        let candidates = |f: &FlowSummary<'_>| in_room(f) && may_yield(f);
        if !make_room(flows, &mut evicted, MAX_INCOMING_PER_ROOM, &in_room, &candidates) {
            return Admission::Refuse;
        }
    }
    if !make_room(flows, &mut evicted, MAX_INCOMING, &|_| true, &may_yield) {
        return Admission::Refuse;
    }
    Admission::Admit(evicted)
}

/// Below `limit` open incoming flows in `scope`, nothing to do; otherwise
/// one unaccepted flow among `candidates` is evicted: of the sender with
/// the most of them, its oldest. False if none can be.
fn make_room<K: Clone + PartialEq>(
    flows: &[(K, FlowSummary<'_>)],
    evicted: &mut Vec<K>,
    limit: usize,
    scope: &dyn Fn(&FlowSummary<'_>) -> bool,
    candidates: &dyn Fn(&FlowSummary<'_>) -> bool,
) -> bool {
    let live = |(key, _): &&(K, FlowSummary<'_>)| !evicted.contains(key);
    if flows.iter().filter(live).filter(|(_, f)| scope(f) && f.open_incoming()).count() < limit {
        return true;
    }
    let yielding: Vec<&(K, FlowSummary<'_>)> =
        flows.iter().filter(live).filter(|(_, f)| candidates(f) && f.yields()).collect();
    let mut per_sender: HashMap<&UserId, usize> = HashMap::new();
    for (_, flow) in &yielding {
        *per_sender.entry(flow.user).or_default() += 1;
    }
    let loudest = yielding.iter().max_by(|(_, a), (_, b)| {
        let (count_a, count_b) = (per_sender.get(a.user), per_sender.get(b.user));
        count_a.cmp(&count_b).then(b.serial.cmp(&a.serial))
    });
    match loudest.map(|(key, _)| key.clone()) {
        Some(key) => {
            evicted.push(key);
            true
        }
        None => false,
    }
}

/// Whether we may start another flow of our own.
pub(super) fn admit_outgoing<K>(flows: &[(K, FlowSummary<'_>)]) -> bool {
    flows.iter().filter(|(_, f)| f.we_requested && !f.finished).count() < MAX_OUTGOING
}

/// The finished flows to drop so that at most [`MAX_FINISHED`] stay, oldest first.
pub(super) fn finished_to_drop<K: Clone>(flows: &[(K, FlowSummary<'_>)]) -> Vec<K> {
    let mut finished: Vec<&(K, FlowSummary<'_>)> = flows.iter().filter(|(_, f)| f.finished).collect();
    finished.sort_by_key(|(_, f)| f.serial);
    let excess = finished.len().saturating_sub(MAX_FINISHED);
    finished.into_iter().take(excess).map(|(key, _)| key.clone()).collect()
}

#[cfg(test)]
mod tests {
    use ruma_common::{OwnedRoomId, OwnedUserId, room_id, user_id};

    use super::*;

    fn us() -> &'static UserId {
        user_id!("@us:x.org")
    }

    fn flow(user: &UserId, serial: u64) -> FlowSummary<'_> {
        FlowSummary { user, room: None, we_requested: false, finished: false, accepted: false, serial }
    }

    #[test]
    fn a_sender_at_its_limit_displaces_only_its_own_oldest_unaccepted_request() {
        let (mallory, alice) = (user_id!("@mallory:x.org"), user_id!("@alice:x.org"));
        let mut flows: Vec<(u64, FlowSummary<'_>)> = (0..4).map(|n| (n, flow(mallory, n))).collect();
        flows.push((9, flow(alice, 9)));
        flows[0].1.accepted = true;
        assert_eq!(admit_incoming(&flows, mallory, None, us()), Admission::Admit(vec![1]), "the oldest unaccepted");
        assert_eq!(admit_incoming(&flows, alice, None, us()), Admission::Admit(vec![]), "alice is under her limit");
        for (_, f) in &mut flows {
            f.accepted = true;
        }
        assert_eq!(admit_incoming(&flows, mallory, None, us()), Admission::Refuse, "all in progress");
    }

    #[test]
    fn a_room_at_its_limit_displaces_its_oldest_unaccepted_request() {
        let room: OwnedRoomId = room_id!("!r:x.org").to_owned();
        let users: Vec<OwnedUserId> = (0..8).map(|n| format!("@u{n}:x.org").try_into().unwrap()).collect();
        let flows: Vec<(u64, FlowSummary<'_>)> = users
            .iter()
            .enumerate()
            .map(|(n, u)| (n as u64, FlowSummary { room: Some(&room), ..flow(u, n as u64 + 10) }))
            .collect();
        let newcomer = user_id!("@new:x.org");
        assert_eq!(admit_incoming(&flows, newcomer, Some(&room), us()), Admission::Admit(vec![0]));
        assert_eq!(admit_incoming(&flows, newcomer, None, us()), Admission::Admit(vec![]), "to-device: no room limit");
    }

    #[test]
    fn over_all_the_sender_with_the_most_requests_gives_way_first() {
        let users: Vec<OwnedUserId> = (0..MAX_INCOMING).map(|n| format!("@u{n}:x.org").try_into().unwrap()).collect();
        let mut flows: Vec<(u64, FlowSummary<'_>)> =
            users.iter().take(MAX_INCOMING - 3).enumerate().map(|(n, u)| (n as u64, flow(u, n as u64))).collect();
        let loud = user_id!("@loud:x.org");
        flows.extend((0..3).map(|n| (1000 + n, flow(loud, 1000 + n))));
        assert_eq!(flows.len(), MAX_INCOMING);
        let newcomer = user_id!("@new:x.org");
        assert_eq!(admit_incoming(&flows, newcomer, None, us()), Admission::Admit(vec![1000]));
    }

    #[test]
    fn in_a_full_room_the_loudest_member_gives_way_even_after_a_genuine_request() {
        let room: OwnedRoomId = room_id!("!r:x.org").to_owned();
        let (alice, loud) = (user_id!("@alice:x.org"), user_id!("@loud:x.org"));
        let others: Vec<OwnedUserId> = (0..3).map(|n| format!("@o{n}:x.org").try_into().unwrap()).collect();
        // Alice asked first; then a loud member (4) and three others fill the room.
        let mut flows = vec![(0u64, FlowSummary { room: Some(&room), ..flow(alice, 0) })];
        flows.extend((1..5).map(|n| (n, FlowSummary { room: Some(&room), ..flow(loud, n) })));
        flows.extend(
            others
                .iter()
                .enumerate()
                .map(|(n, u)| (10 + n as u64, FlowSummary { room: Some(&room), ..flow(u, 10 + n as u64) })),
        );
        let newcomer = user_id!("@new:x.org");
        assert_eq!(
            admit_incoming(&flows, newcomer, Some(&room), us()),
            Admission::Admit(vec![1]),
            "the loud member's oldest"
        );
    }

    #[test]
    fn our_own_devices_requests_never_give_way_to_others() {
        let users: Vec<OwnedUserId> = (0..MAX_INCOMING).map(|n| format!("@u{n}:x.org").try_into().unwrap()).collect();
        let mut flows = vec![(0u64, flow(us(), 0))];
        flows.extend(
            users.iter().take(MAX_INCOMING - 1).enumerate().map(|(n, u)| (1 + n as u64, flow(u, 1 + n as u64))),
        );
        let newcomer = user_id!("@new:x.org");
        let Admission::Admit(evicted) = admit_incoming(&flows, newcomer, None, us()) else { panic!("refused") };
        assert_eq!(evicted, vec![1], "the oldest stranger gives way, not our own device");
    }

    #[test]
    fn our_own_requests_are_counted_apart_and_finished_flows_are_pruned_oldest_first() {
        let us = user_id!("@us:x.org");
        let ours = |serial| FlowSummary { we_requested: true, ..flow(us, serial) };
        let mut flows: Vec<(u64, FlowSummary<'_>)> = (0..MAX_OUTGOING as u64 - 1).map(|n| (n, ours(n))).collect();
        flows.extend((100..400).map(|n| (n, flow(user_id!("@m:x.org"), n))));
        assert!(admit_outgoing(&flows), "incoming flows never count against ours");
        flows.push((99, ours(99)));
        assert!(!admit_outgoing(&flows));
        let mut done: Vec<(u64, FlowSummary<'_>)> =
            (0..MAX_FINISHED as u64 + 2).map(|n| (n, FlowSummary { finished: true, ..flow(us, n) })).collect();
        done.reverse();
        assert_eq!(finished_to_drop(&done), vec![0, 1]);
    }
}
