//! Key backups and account data on the [`TestServer`]: backup versions per
//! user (writes go to the latest only, as the spec says), the stored room
//! keys with the spec's rule for which of two copies to keep, and global
//! account data (where secret storage lives).

use std::collections::BTreeMap;

use hush_crypto_core::backup::{BackupInfo, KeyBackupData};
use ruma_client_api::backup::{RoomKeyBackup, add_backup_keys, get_backup_keys_for_session, get_latest_backup_info};
use ruma_common::{OwnedRoomId, UserId, serde::Raw};
use serde_json::Value;

use super::TestServer;

/// One user's backups.
#[derive(Debug, Default)]
pub(super) struct Backups {
    /// (version, algorithm, auth_data) in creation order; the last is current.
    versions: Vec<(String, String, Value)>,
    /// Keys by version, room and session.
    keys: BTreeMap<String, BTreeMap<OwnedRoomId, BTreeMap<String, Value>>>,
    next_version: u64,
    /// Keys added or replaced, by version (the etag).
    writes: BTreeMap<String, u64>,
}

/// The spec's rule: keep the verified copy, then the lower first index,
/// then the lower forwarded count.
fn keeps_existing(existing: &Value, offered: &Value) -> bool {
    let parse = |v: &Value| serde_json::from_value::<KeyBackupData>(v.clone()).ok();
    let (Some(old), Some(new)) = (parse(existing), parse(offered)) else { return false };
    if old.is_verified != new.is_verified {
        return old.is_verified;
    }
    if old.first_message_index != new.first_message_index {
        return old.first_message_index < new.first_message_index;
    }
    old.forwarded_count <= new.forwarded_count
}

impl TestServer {
    /// `POST /room_keys/version`: a new backup version, now the current one.
    pub fn create_backup_version(&self, user_id: &UserId, algorithm: &str, auth_data: Value) -> String {
        let mut state = self.state();
        let backups = state.backups.entry(user_id.to_owned()).or_default();
        backups.next_version += 1;
        let version = backups.next_version.to_string();
        backups.versions.push((version.clone(), algorithm.to_owned(), auth_data));
        version
    }

    /// `GET /room_keys/version`: the current backup, if any.
    pub fn latest_backup(&self, user_id: &UserId) -> Option<BackupInfo> {
        let state = self.state();
        let (version, algorithm, auth_data) = state.backups.get(user_id)?.versions.last()?.clone();
        Some(BackupInfo { algorithm, auth_data, version })
    }

    /// `GET /room_keys/version` as the endpoint answers it: the current
    /// version with its key count and etag, or `Err("M_NOT_FOUND")`.
    pub fn latest_backup_response(&self, user_id: &UserId) -> Result<get_latest_backup_info::v3::Response, String> {
        let info = self.latest_backup(user_id).ok_or_else(|| "M_NOT_FOUND".to_owned())?;
        let etag = self.backup_etag(user_id, &info.version);
        let count: usize = self.backup_keys(user_id, &info.version).values().map(|r| r.sessions.len()).sum();
        let algorithm = serde_json::json!({ "algorithm": info.algorithm, "auth_data": info.auth_data });
        let raw = Raw::new(&algorithm).map_err(|_| "M_UNKNOWN".to_owned())?.cast_unchecked();
        let count = js_int::UInt::try_from(count).unwrap_or_default();
        Ok(get_latest_backup_info::v3::Response::new(raw, count, etag, info.version))
    }

    /// `GET /room_keys/keys/{roomId}/{sessionId}?version=`: one stored key,
    /// or `Err("M_NOT_FOUND")`.
    pub fn backup_key_response(
        &self,
        user_id: &UserId,
        request: &get_backup_keys_for_session::v3::Request,
    ) -> Result<get_backup_keys_for_session::v3::Response, String> {
        let rooms = self.backup_keys(user_id, &request.version);
        let key = rooms.get(&request.room_id).and_then(|room| room.sessions.get(&request.session_id));
        key.map(|key| get_backup_keys_for_session::v3::Response::new(key.clone()))
            .ok_or_else(|| "M_NOT_FOUND".to_owned())
    }

    /// `DELETE /room_keys/version/{version}`.
    pub fn delete_backup_version(&self, user_id: &UserId, version: &str) {
        let mut state = self.state();
        if let Some(backups) = state.backups.get_mut(user_id) {
            backups.versions.retain(|(v, _, _)| v != version);
            backups.keys.remove(version);
        }
    }

    /// `PUT /room_keys/keys?version=`: `Err(errcode)` unless `version` is
    /// the current one.
    pub fn add_backup_keys(
        &self,
        user_id: &UserId,
        request: &add_backup_keys::v3::Request,
    ) -> Result<add_backup_keys::v3::Response, String> {
        let mut state = self.state();
        let backups = state.backups.entry(user_id.to_owned()).or_default();
        if backups.versions.last().map(|(v, _, _)| v.as_str()) != Some(request.version.as_str()) {
            return Err("M_WRONG_ROOM_KEYS_VERSION".into());
        }
        let written = backups.writes.entry(request.version.clone()).or_default();
        let stored = backups.keys.entry(request.version.clone()).or_default();
        for (room_id, room) in &request.rooms {
            for (session_id, raw) in &room.sessions {
                let offered: Value = raw.deserialize_as_unchecked().map_err(|_| "M_BAD_JSON".to_owned())?;
                let sessions = stored.entry(room_id.clone()).or_default();
                match sessions.get(session_id) {
                    Some(existing) if keeps_existing(existing, &offered) => {}
                    _ => {
                        sessions.insert(session_id.clone(), offered);
                        *written += 1;
                    }
                }
            }
        }
        let count: usize = stored.values().map(BTreeMap::len).sum();
        Ok(add_backup_keys::v3::Response::new(
            format!("etag{count}"),
            js_int::UInt::try_from(count).unwrap_or_default(),
        ))
    }

    /// The `etag` of a backup version (`GET /room_keys/version`): it
    /// changes whenever a key is added or replaced.
    pub fn backup_etag(&self, user_id: &UserId, version: &str) -> String {
        let state = self.state();
        let backups = state.backups.get(user_id);
        let writes = backups.map_or(0, |b| b.writes.get(version).copied().unwrap_or(0));
        format!("etag{writes}")
    }

    /// `GET /room_keys/keys?version=`: every stored key of a version.
    pub fn backup_keys(&self, user_id: &UserId, version: &str) -> BTreeMap<OwnedRoomId, RoomKeyBackup> {
        let state = self.state();
        let Some(rooms) = state.backups.get(user_id).and_then(|b| b.keys.get(version)) else {
            return BTreeMap::new();
        };
        rooms
            .iter()
            .map(|(room_id, sessions)| {
                let sessions = sessions
                    .iter()
                    .filter_map(|(id, value)| Some((id.clone(), Raw::new(value).ok()?.cast_unchecked())))
                    .collect();
                (room_id.clone(), RoomKeyBackup::new(sessions))
            })
            .collect()
    }

    /// Replaces one stored backup entry (an attacker with the server writes
    /// whatever it likes).
    pub fn overwrite_backup_key(
        &self,
        user_id: &UserId,
        version: &str,
        room_id: &OwnedRoomId,
        session_id: &str,
        data: Value,
    ) {
        let mut state = self.state();
        let backups = state.backups.entry(user_id.to_owned()).or_default();
        backups
            .keys
            .entry(version.to_owned())
            .or_default()
            .entry(room_id.clone())
            .or_default()
            .insert(session_id.to_owned(), data);
    }

    /// `PUT /user/{user}/account_data/{type}`.
    pub fn set_account_data(&self, user_id: &UserId, event_type: &str, content: Value) {
        self.state().account_data.entry(user_id.to_owned()).or_default().insert(event_type.to_owned(), content);
    }

    /// `GET /user/{user}/account_data/{type}`.
    pub fn account_data(&self, user_id: &UserId, event_type: &str) -> Option<Value> {
        self.state().account_data.get(user_id)?.get(event_type).cloned()
    }
}
