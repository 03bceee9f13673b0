//! [`ShareTargets`]: whom one share request carries a room key, or a
//! withheld notice, to; recorded when the server acknowledges it.

use ruma_common::{OwnedDeviceId, OwnedRoomId, OwnedUserId};

use super::{SharedWith, WithheldCode};

/// Who a share request carries the key (or a withheld notice) to.
#[derive(Clone, Debug)]
pub(crate) struct ShareTargets {
    /// The room.
    pub(crate) room_id: OwnedRoomId,
    /// The room key's session id.
    pub(crate) session_id: String,
    /// Devices receiving the key, with what they receive.
    pub(crate) shared: Vec<(OwnedUserId, OwnedDeviceId, SharedWith)>,
    /// Devices told the key is withheld, and why.
    pub(crate) withheld: Vec<(OwnedUserId, OwnedDeviceId, WithheldCode)>,
}

impl ShareTargets {
    /// Every device the request addresses.
    pub(crate) fn devices(&self) -> impl Iterator<Item = (OwnedUserId, OwnedDeviceId)> + '_ {
        let shared = self.shared.iter().map(|(u, d, _)| (u.clone(), d.clone()));
        let withheld = self.withheld.iter().map(|(u, d, _)| (u.clone(), d.clone()));
        shared.chain(withheld)
    }
}
