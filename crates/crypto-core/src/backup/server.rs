//! What the server says about its current backup, and what that means for
//! the backup we upload to: the one checked decoder of `GET
//! /room_keys/version`, and the rule that turns its answer (or a refusal)
//! into "keep uploading" or "this backup is gone".
//!
//! A backup is disabled only on the server's word about the current
//! version, never on one refused upload: a 404 may come from a proxy or a
//! server bug, so a refused upload makes the engine read the current
//! version first (`OlmMachine`'s backup routing).

use ruma_client_api::backup::get_latest_backup_info;
use serde_json::Value;

use super::{BackupInfo, BackupKeyError};

/// The longest backup version or etag taken (both are short opaque strings;
/// the engine keeps one per looked-up key).
pub const MAX_VERSION_OR_ETAG_BYTES: usize = 256;

/// The server's current backup, as read from `GET /room_keys/version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerBackup {
    /// The version, its algorithm and `auth_data`.
    pub info: BackupInfo,
    /// Changes whenever a key is added to or replaced in this version.
    pub etag: String,
    /// How many keys the version holds.
    pub count: u64,
}

impl ServerBackup {
    /// Decodes the server's answer; the algorithm must be a JSON object
    /// naming its algorithm (its key is checked where it is used), and the
    /// version and etag at most [`MAX_VERSION_OR_ETAG_BYTES`] long.
    pub fn from_response(response: &get_latest_backup_info::v3::Response) -> Result<Self, BackupKeyError> {
        if response.version.len() > MAX_VERSION_OR_ETAG_BYTES || response.etag.len() > MAX_VERSION_OR_ETAG_BYTES {
            return Err(BackupKeyError::MalformedPublicKey("the backup version or etag is too long".to_owned()));
        }
        let algorithm: Value = serde_json::from_str(response.algorithm.json().get())
            .map_err(|e| BackupKeyError::MalformedPublicKey(format!("backup algorithm: {e}")))?;
        let name = algorithm
            .get("algorithm")
            .and_then(Value::as_str)
            .ok_or_else(|| BackupKeyError::MalformedPublicKey("the backup version names no algorithm".to_owned()))?;
        let info = BackupInfo {
            algorithm: name.to_owned(),
            auth_data: algorithm.get("auth_data").cloned().unwrap_or(Value::Null),
            version: response.version.clone(),
        };
        Ok(Self { info, etag: response.etag.clone(), count: response.count.into() })
    }
}

/// Why the engine stopped uploading to a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackupDisabledReason {
    /// The server has no backup version any more (deleted).
    Deleted,
    /// The server's current version is another one.
    Replaced {
        /// The version the server now lists.
        current: String,
    },
}

/// What the server's current version (`None`: it has none) means for the
/// backup we upload to (`active`): `Some` if we must stop uploading to it.
pub(crate) fn judge(active: Option<&str>, current: Option<&str>) -> Option<BackupDisabledReason> {
    let active = active?;
    match current {
        None => Some(BackupDisabledReason::Deleted),
        Some(current) if current != active => Some(BackupDisabledReason::Replaced { current: current.to_owned() }),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma_common::serde::Raw;

    #[test]
    fn a_backup_is_disabled_only_when_the_server_lists_no_version_or_another_one() {
        let cases: [(Option<&str>, Option<&str>, Option<BackupDisabledReason>); 5] = [
            (None, None, None),
            (None, Some("2"), None),
            (Some("1"), Some("1"), None),
            (Some("1"), None, Some(BackupDisabledReason::Deleted)),
            (Some("1"), Some("2"), Some(BackupDisabledReason::Replaced { current: "2".to_owned() })),
        ];
        for (active, current, expected) in cases {
            assert_eq!(judge(active, current), expected, "active {active:?}, server {current:?}");
        }
    }

    fn response(algorithm: Value) -> get_latest_backup_info::v3::Response {
        let raw = Raw::new(&algorithm).unwrap().cast_unchecked();
        get_latest_backup_info::v3::Response::new(raw, js_int::uint!(3), "e1".to_owned(), "7".to_owned())
    }

    #[test]
    fn the_current_version_is_decoded_with_its_etag_and_one_without_an_algorithm_is_refused() {
        let good = response(
            serde_json::json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "x"}}),
        );
        let decoded = ServerBackup::from_response(&good).unwrap();
        assert_eq!((decoded.info.version.as_str(), decoded.etag.as_str()), ("7", "e1"));
        assert_eq!(decoded.info.auth_data["public_key"], "x");
        assert!(ServerBackup::from_response(&response(serde_json::json!({"auth_data": {}}))).is_err());
        assert!(ServerBackup::from_response(&response(serde_json::json!(["not", "an", "object"]))).is_err());
    }

    /// Attack: a hostile server answers with a multi-megabyte etag, which
    /// the engine would keep once per looked-up key (10,000 of them).
    #[test]
    fn an_oversized_etag_or_version_is_refused() {
        let algorithm = serde_json::json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {}});
        let mut long = response(algorithm);
        long.etag = "e".repeat(MAX_VERSION_OR_ETAG_BYTES + 1);
        assert!(ServerBackup::from_response(&long).is_err());
        long.etag = "e".repeat(MAX_VERSION_OR_ETAG_BYTES);
        assert!(ServerBackup::from_response(&long).is_ok(), "the limit itself is taken");
        long.version = "7".repeat(MAX_VERSION_OR_ETAG_BYTES + 1);
        assert!(ServerBackup::from_response(&long).is_err());
    }
}
