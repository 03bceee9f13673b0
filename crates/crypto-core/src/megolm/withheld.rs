//! `m.room_key.withheld`: telling a device it will not get a key, and why;
//! remembering such notices to explain a missing key.

use ruma_common::{OwnedRoomId, OwnedUserId, RoomId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vodozemac::Curve25519PublicKey;

use super::MEGOLM_ALGORITHM;

/// Why a key was withheld, as the spec's `code` values.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WithheldCode {
    /// `m.blacklisted`: the device is blocked.
    Blacklisted,
    /// `m.unverified`: the sender shares only with verified devices.
    Unverified,
    /// `m.unauthorised`: the device may not have the key.
    Unauthorised,
    /// `m.unavailable`: the sender does not have the key.
    Unavailable,
    /// `m.no_olm`: no Olm session could be established.
    NoOlm,
    /// `m.history_not_shared`: the key is not shareable with new members.
    HistoryNotShared,
    /// Any other code.
    Other(String),
}

impl WithheldCode {
    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Blacklisted => "m.blacklisted",
            Self::Unverified => "m.unverified",
            Self::Unauthorised => "m.unauthorised",
            Self::Unavailable => "m.unavailable",
            Self::NoOlm => "m.no_olm",
            Self::HistoryNotShared => "m.history_not_shared",
            Self::Other(code) => code,
        }
    }

    /// Parses a wire code.
    pub fn from_wire(code: &str) -> Self {
        match code {
            "m.blacklisted" => Self::Blacklisted,
            "m.unverified" => Self::Unverified,
            "m.unauthorised" => Self::Unauthorised,
            "m.unavailable" => Self::Unavailable,
            "m.no_olm" => Self::NoOlm,
            "m.history_not_shared" => Self::HistoryNotShared,
            other => Self::Other(other.to_owned()),
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::Blacklisted => "You have been blocked by the sender.",
            Self::Unverified => "The sender only shares keys with verified devices.",
            Self::Unauthorised => "You are not authorised to read this message.",
            Self::Unavailable => "The requested key was not found.",
            Self::NoOlm => "Unable to establish a secure channel.",
            Self::HistoryNotShared => "The sender disabled sharing history.",
            Self::Other(_) => "The key was withheld.",
        }
    }
}

impl std::fmt::Display for WithheldCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A withheld notice we received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithheldInfo {
    /// Who sent the notice.
    pub sender: OwnedUserId,
    /// The sending device's curve25519 key.
    pub sender_key: Curve25519PublicKey,
    /// The room, absent for `m.no_olm` notices.
    pub room_id: Option<OwnedRoomId>,
    /// The session, absent for `m.no_olm` notices.
    pub session_id: Option<String>,
    /// Why.
    pub code: WithheldCode,
    /// The human-readable reason the sender gave.
    pub reason: Option<String>,
}

/// The to-device content telling a device that a key is withheld. For
/// `m.no_olm` the room and session are left out (one notice covers all).
pub(crate) fn withheld_content(
    code: &WithheldCode,
    room_id: &RoomId,
    session_id: &str,
    sender_key: Curve25519PublicKey,
) -> Value {
    let mut content = json!({
        "algorithm": MEGOLM_ALGORITHM,
        "sender_key": sender_key.to_base64(),
        "code": code.as_str(),
        "reason": code.reason(),
    });
    if *code != WithheldCode::NoOlm {
        content["room_id"] = json!(room_id);
        content["session_id"] = json!(session_id);
    }
    content
}

#[derive(Deserialize)]
struct RawWithheld {
    algorithm: String,
    sender_key: String,
    code: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    room_id: Option<OwnedRoomId>,
    #[serde(default)]
    session_id: Option<String>,
}

/// Parses a received `m.room_key.withheld` content.
pub(crate) fn parse_withheld(sender: OwnedUserId, content: &Value) -> Result<WithheldInfo, String> {
    let raw: RawWithheld = serde_json::from_value(content.clone()).map_err(|e| e.to_string())?;
    if raw.algorithm != MEGOLM_ALGORITHM {
        return Err(format!("unsupported algorithm {}", raw.algorithm));
    }
    let sender_key = crate::keys::curve25519_from_base64(&raw.sender_key).map_err(|e| e.to_string())?;
    let code = WithheldCode::from_wire(&raw.code);
    if code != WithheldCode::NoOlm && (raw.room_id.is_none() || raw.session_id.is_none()) {
        return Err("a withheld notice other than m.no_olm needs room_id and session_id".into());
    }
    Ok(WithheldInfo { sender, sender_key, room_id: raw.room_id, session_id: raw.session_id, code, reason: raw.reason })
}

#[cfg(test)]
mod tests {
    use ruma_common::{owned_user_id, room_id};

    use super::*;

    #[test]
    fn codes_round_trip_and_no_olm_names_no_session() {
        let key = Curve25519PublicKey::from_bytes([7; 32]);
        for code in [
            WithheldCode::Blacklisted,
            WithheldCode::Unverified,
            WithheldCode::Unauthorised,
            WithheldCode::Unavailable,
            WithheldCode::NoOlm,
            WithheldCode::HistoryNotShared,
            WithheldCode::Other("org.example".into()),
        ] {
            assert_eq!(WithheldCode::from_wire(code.as_str()), code);
            let content = withheld_content(&code, room_id!("!r:e.org"), "sid", key);
            let parsed = parse_withheld(owned_user_id!("@a:e.org"), &content).unwrap();
            assert_eq!(parsed.code, code);
            assert_eq!(parsed.session_id.is_none(), code == WithheldCode::NoOlm);
        }
        let bad = json!({"algorithm": MEGOLM_ALGORITHM, "sender_key": key.to_base64(), "code": "m.unverified"});
        assert!(parse_withheld(owned_user_id!("@a:e.org"), &bad).is_err());
    }
}
