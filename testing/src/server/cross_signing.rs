//! The server's cross-signing endpoints: `/keys/device_signing/upload`
//! (replacing keys needs user-interactive auth, as on Synapse) and
//! `/keys/signatures/upload` (signatures merged into the stored objects),
//! and the keys listed in `/keys/query`. It does not verify signatures
//! (tests that need a lying server write keys directly), but it refuses
//! what Synapse refuses on the way: a signature of one's own master key
//! that is not by one of one's devices.

use ruma_client_api::keys::{get_keys, upload_signatures, upload_signing_keys};
use ruma_common::{OwnedUserId, UserId, serde::Raw};
use serde_json::{Map, Value};

use super::{ServerError, State, TestServer};

/// One user's keys, as JSON objects.
#[derive(Debug, Clone, Default)]
pub(super) struct Keys {
    master: Option<Value>,
    self_signing: Option<Value>,
    user_signing: Option<Value>,
}

fn json<T>(raw: &Option<Raw<T>>, user_id: &UserId) -> Result<Option<Value>, ServerError> {
    let Some(raw) = raw else { return Ok(None) };
    let value: Value = raw.deserialize_as_unchecked().map_err(|_| ServerError::BadSigningKey)?;
    if value["user_id"] != Value::String(user_id.to_string()) {
        return Err(ServerError::BadSigningKey);
    }
    Ok(Some(value))
}

/// The base64 public key of a stored cross-signing key object.
fn public_key(key: &Value) -> Option<&str> {
    key.get("keys")?.as_object()?.values().next()?.as_str()
}

/// Adds every signature in `from` to `into`.
fn merge_signatures(into: &mut Value, from: &Value) {
    let Some(from) = from.get("signatures").and_then(Value::as_object) else { return };
    let Some(object) = into.as_object_mut() else { return };
    let signatures = object.entry("signatures").or_insert_with(|| Value::Object(Map::new()));
    let Some(signatures) = signatures.as_object_mut() else { return };
    for (signer, by_key) in from {
        let Some(by_key) = by_key.as_object() else { continue };
        let entry = signatures.entry(signer.clone()).or_insert_with(|| Value::Object(Map::new()));
        if let Some(entry) = entry.as_object_mut() {
            entry.extend(by_key.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
}

/// Whether every signature `user_id` put on `object` names one of its
/// devices, by a key id that device lists (what Synapse checks of an own
/// master key's signatures).
fn signed_by_own_devices_only(state: &State, user_id: &UserId, object: &Value) -> bool {
    let Some(signatures) = object.get("signatures").and_then(|s| s.get(user_id.as_str())).and_then(Value::as_object)
    else {
        return false;
    };
    signatures.keys().all(|key_id| {
        let Some(device_id) = key_id.strip_prefix("ed25519:") else { return false };
        let keys = state.devices.get(user_id).and_then(|d| d.get(device_id)).and_then(|r| r.keys.as_ref());
        let keys: Option<Value> = keys.and_then(|k| k.deserialize_as_unchecked().ok());
        keys.is_some_and(|k| k.get("keys").and_then(|k| k.get(key_id)).is_some())
    })
}

/// Synapse's failure for a refused signature.
fn invalid_signature() -> upload_signatures::v3::Failure {
    serde_json::from_value(serde_json::json!({"errcode": "M_INVALID_SIGNATURE", "error": "Invalid signature"}))
        .expect("a well-formed failure")
}

/// Lists the cross-signing keys of the queried users (the user-signing key
/// only to `requester`, its owner).
pub(super) fn list(
    state: &State,
    requester: Option<&UserId>,
    request: &get_keys::v3::Request,
    response: &mut get_keys::v3::Response,
) {
    for user_id in request.device_keys.keys() {
        let Some(keys) = state.cross_signing.get(user_id) else { continue };
        let raw = |value: &Option<Value>| value.as_ref().and_then(|v| Raw::new(v).ok()).map(Raw::cast_unchecked);
        if let Some(master) = raw(&keys.master) {
            response.master_keys.insert(user_id.clone(), master);
        }
        if let Some(self_signing) = raw(&keys.self_signing) {
            response.self_signing_keys.insert(user_id.clone(), self_signing);
        }
        if requester == Some(user_id.as_ref())
            && let Some(user_signing) = raw(&keys.user_signing)
        {
            response.user_signing_keys.insert(user_id.clone(), user_signing);
        }
    }
}

impl TestServer {
    /// `POST /keys/device_signing/upload` by `user_id`. Replacing existing
    /// keys without `auth` is refused, as Synapse asks for the password.
    pub fn upload_signing_keys(
        &self,
        user_id: &UserId,
        request: &upload_signing_keys::v3::Request,
    ) -> Result<upload_signing_keys::v3::Response, ServerError> {
        let mut state = self.state();
        let has_keys = state.cross_signing.get(user_id).is_some_and(|k| k.master.is_some());
        if has_keys && request.auth.is_none() {
            return Err(ServerError::AuthRequired);
        }
        let master = json(&request.master_key, user_id)?;
        let self_signing = json(&request.self_signing_key, user_id)?;
        let user_signing = json(&request.user_signing_key, user_id)?;
        let keys = state.cross_signing.entry(user_id.to_owned()).or_default();
        if master.is_some() {
            keys.master = master;
        }
        if self_signing.is_some() {
            keys.self_signing = self_signing;
        }
        if user_signing.is_some() {
            keys.user_signing = user_signing;
        }
        Self::announce_change(&mut state, user_id);
        Ok(upload_signing_keys::v3::Response::new())
    }

    /// `POST /keys/signatures/upload` by `uploader`: each signed object's
    /// signatures are merged into the stored device keys or master key it
    /// names (by device id, or by the master key's base64). As on Synapse,
    /// every signature the uploader puts on its own master key is taken as
    /// a device's (`ed25519:DEVICE`): one that names no device of the
    /// uploader with that key (the master key's self-signature, another
    /// client's cross-signing key) fails that key with
    /// `M_INVALID_SIGNATURE`, and nothing of it is merged.
    pub fn upload_signatures(
        &self,
        uploader: &UserId,
        request: &upload_signatures::v3::Request,
    ) -> upload_signatures::v3::Response {
        let mut state = self.state();
        let mut changed: Vec<OwnedUserId> = Vec::new();
        let mut response = upload_signatures::v3::Response::new();
        for (user_id, signed) in &request.signed_keys {
            for (key_id, object) in signed.iter() {
                let Ok(object) = serde_json::from_str::<Value>(object.get()) else { continue };
                let is_master = state.cross_signing.get(user_id).and_then(|k| k.master.as_ref()).and_then(public_key)
                    == Some(key_id);
                if is_master && user_id == uploader && !signed_by_own_devices_only(&state, user_id, &object) {
                    response
                        .failures
                        .entry(user_id.clone())
                        .or_default()
                        .insert(key_id.to_owned(), invalid_signature());
                    continue;
                }
                let master = state.cross_signing.get_mut(user_id).and_then(|k| k.master.as_mut());
                if let Some(master) = master.filter(|m| public_key(m) == Some(key_id)) {
                    merge_signatures(master, &object);
                    changed.push(user_id.clone());
                    continue;
                }
                let record = state.devices.get_mut(user_id).and_then(|d| d.get_mut(key_id));
                if let Some(keys) = record.and_then(|r| r.keys.as_mut()) {
                    let mut value: Value = keys.deserialize_as_unchecked().unwrap_or_default();
                    merge_signatures(&mut value, &object);
                    if let Ok(raw) = Raw::new(&value) {
                        *keys = raw.cast_unchecked();
                        changed.push(user_id.clone());
                    }
                }
            }
        }
        for user_id in changed {
            Self::announce_change(&mut state, &user_id);
        }
        response
    }

    /// Replaces a user's cross-signing keys without any check, as a
    /// malicious server could.
    pub fn overwrite_signing_keys(
        &self,
        user_id: &UserId,
        master: Value,
        self_signing: Value,
        user_signing: Option<Value>,
    ) {
        let mut state = self.state();
        state
            .cross_signing
            .insert(user_id.to_owned(), Keys { master: Some(master), self_signing: Some(self_signing), user_signing });
        Self::announce_change(&mut state, user_id);
    }

    /// A user's (master, self-signing, user-signing) key objects as the
    /// server holds them, e.g. to replay them later as a malicious server.
    pub fn signing_keys(&self, user_id: &UserId) -> Option<(Value, Value, Option<Value>)> {
        let keys = self.state().cross_signing.get(user_id).cloned()?;
        Some((keys.master?, keys.self_signing?, keys.user_signing))
    }

    /// A user's master key object as the server holds it.
    pub fn master_key(&self, user_id: &UserId) -> Option<Value> {
        self.state().cross_signing.get(user_id).and_then(|k| k.master.clone())
    }
}
