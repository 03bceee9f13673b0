//! [`ExportedRoomKey`]: one room key in the spec's `ExportedSessionData` form.

use std::collections::BTreeMap;
use std::fmt;

use ruma_common::OwnedRoomId;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// One exported room key, as the spec's "Key export format" describes it.
/// `session_key` is secret: it is zeroized on drop and never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct ExportedRoomKey {
    /// The algorithm, `m.megolm.v1.aes-sha2`.
    #[zeroize(skip)]
    pub algorithm: String,
    /// The room the key is for.
    #[zeroize(skip)]
    pub room_id: OwnedRoomId,
    /// The curve25519 key of the device that created the session.
    #[zeroize(skip)]
    pub sender_key: String,
    /// The Megolm session id.
    #[zeroize(skip)]
    pub session_id: String,
    /// The session key, exported at its first known index (secret).
    pub session_key: String,
    /// Keys the creating device claimed, e.g. `{"ed25519": ...}`.
    #[serde(default)]
    #[zeroize(skip)]
    pub sender_claimed_keys: BTreeMap<String, String>,
    /// Curve25519 keys of devices the key was forwarded through.
    #[serde(default)]
    #[zeroize(skip)]
    pub forwarding_curve25519_key_chain: Vec<String>,
    /// Whether the key may be shared with later room members. Written under
    /// the spec's name; older exporters' names are accepted.
    #[serde(default, alias = "m.shared_history", alias = "org.matrix.msc3061.shared_history")]
    #[zeroize(skip)]
    pub shared_history: bool,
}

impl fmt::Debug for ExportedRoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportedRoomKey")
            .field("room_id", &self.room_id)
            .field("session_id", &self.session_id)
            .field("sender_key", &self.sender_key)
            .finish_non_exhaustive()
    }
}
