//! Establishing Olm sessions: which devices lack one, `/keys/claim`, checking
//! the claimed one-time keys, retry back-off, and replacing wedged sessions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use ruma_client_api::keys::claim_keys;
use ruma_common::{OneTimeKeyAlgorithm, OwnedDeviceId, OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::Value;
use vodozemac::Curve25519PublicKey;

use super::{OlmMachine, lock, pending::Meta};
use crate::parallel::run_split;
use crate::{
    AnyOutgoingRequest, OutgoingRequest, StoreError, Timestamp,
    devices::DeviceData,
    olm::{Session, SessionOwner},
    signing::verify_json,
    store::Changes,
};

/// First retry delay after a failed claim; doubles per failure.
const CLAIM_BACKOFF_BASE: Duration = Duration::from_secs(15);
/// Longest retry delay after failed claims.
const CLAIM_BACKOFF_MAX: Duration = Duration::from_secs(30 * 60);
/// A wedged session with one device is replaced at most this often.
pub(super) const UNWEDGE_INTERVAL: Duration = Duration::from_secs(60 * 60);

type DeviceKey = (OwnedUserId, OwnedDeviceId);

#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    retry_at: Timestamp,
}

/// The custom value under which the unwedging budget is persisted.
pub(super) const UNWEDGE_RECORD: &str = "hush.core.unwedge";

/// Claim bookkeeping. The unwedging budget is persisted (a restart must
/// not let a peer's session be replaced again at once); claim back-off is
/// kept in memory (a restart retries at once, which is fine).
#[derive(Debug, Default)]
pub(super) struct ClaimState {
    backoff: HashMap<DeviceKey, Backoff>,
    /// Devices whose session no longer decrypts: claim a new one even though a session exists.
    wedged: HashSet<DeviceKey>,
    /// When each sender key last triggered a new session.
    last_unwedge: HashMap<Curve25519PublicKey, Timestamp>,
}

impl ClaimState {
    fn may_claim(&self, device: &DeviceKey, now: Timestamp) -> bool {
        self.backoff.get(device).is_none_or(|b| now >= b.retry_at)
    }

    fn record_failure(&mut self, device: DeviceKey, now: Timestamp) {
        let failures = self.backoff.get(&device).map_or(1, |b| b.failures.saturating_add(1));
        let factor = 1u32.checked_shl(failures.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
        let delay = CLAIM_BACKOFF_BASE.saturating_mul(factor).min(CLAIM_BACKOFF_MAX);
        self.backoff.insert(device, Backoff { failures, retry_at: now.saturating_add(delay) });
    }

    /// Whether a wedged session with `sender_key` may be replaced now; if so, records it.
    pub(super) fn should_unwedge(&mut self, sender_key: Curve25519PublicKey, now: Timestamp) -> bool {
        let due = self
            .last_unwedge
            .get(&sender_key)
            .is_none_or(|last| now.saturating_duration_since(*last) >= UNWEDGE_INTERVAL);
        if due {
            self.last_unwedge.insert(sender_key, now);
        }
        due
    }

    pub(super) fn mark_wedged(&mut self, device: DeviceKey) {
        self.wedged.insert(device);
    }

    /// The persisted unwedging budget, as a custom value: entries older than
    /// the interval are dropped, so the record stays small.
    pub(super) fn unwedge_record(&mut self, now: Timestamp) -> (String, Vec<u8>) {
        self.last_unwedge.retain(|_, last| now.saturating_duration_since(*last) < UNWEDGE_INTERVAL);
        let entries: Vec<(String, Timestamp)> =
            self.last_unwedge.iter().map(|(key, at)| (key.to_base64(), *at)).collect();
        (UNWEDGE_RECORD.to_owned(), serde_json::to_vec(&entries).unwrap_or_default())
    }

    /// Claim state with the unwedging budget read back from the store (a
    /// damaged record is ignored: the budget is a rate limit, not a secret).
    pub(super) fn from_unwedge_record(bytes: Option<&[u8]>) -> Self {
        let entries: Vec<(String, Timestamp)> = bytes.and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default();
        let last_unwedge = entries
            .into_iter()
            .filter_map(|(key, at)| crate::keys::curve25519_from_base64(&key).ok().map(|key| (key, at)))
            .collect();
        Self { last_unwedge, ..Self::default() }
    }
}

#[derive(Deserialize)]
struct ClaimedKey {
    key: String,
}

impl OlmMachine {
    /// A `/keys/claim` request for every known device of `users` we have no
    /// Olm session with, or `None` if there is nothing to claim. Devices whose
    /// last claim failed wait (15 s, doubling, at most 30 min) before retrying.
    pub async fn get_missing_sessions<'a>(
        &self,
        users: impl IntoIterator<Item = &'a UserId>,
        now: Timestamp,
    ) -> Result<Option<OutgoingRequest>, StoreError> {
        let mut candidates = Vec::new();
        for user_id in users {
            candidates.extend(self.get_user_devices(user_id).await?.into_values());
        }
        let mut sessions = self.inner.sessions.lock().await;
        let mut missing = Vec::new();
        for device in candidates {
            if device.user_id() == self.inner.own.user_id && device.device_id() == self.inner.own.device_id {
                continue;
            }
            let wedged = lock(&self.inner.claims).wedged.contains(&device_key(&device));
            let list = sessions.get_or_load(&*self.inner.store, device.curve25519_key()).await?;
            if wedged || !list.iter().any(|s| s.belongs_to(&device)) {
                missing.push(device_key(&device));
            }
        }
        drop(sessions);
        Ok(self.claim_request(missing, now, false))
    }

    /// Lists a claim for wedged devices, so their sessions get replaced
    /// without the caller asking.
    pub(super) async fn ensure_unwedging_claim_listed(&self, now: Timestamp) -> Result<(), StoreError> {
        let wedged: Vec<_> = lock(&self.inner.claims).wedged.iter().cloned().collect();
        self.claim_request(wedged, now, true);
        Ok(())
    }

    fn claim_request(&self, devices: Vec<DeviceKey>, now: Timestamp, listed: bool) -> Option<OutgoingRequest> {
        let in_flight: HashSet<DeviceKey> = lock(&self.inner.pending).devices_being_claimed().cloned().collect();
        let claims = lock(&self.inner.claims);
        let devices: Vec<_> =
            devices.into_iter().filter(|d| !in_flight.contains(d) && claims.may_claim(d, now)).collect();
        drop(claims);
        if devices.is_empty() {
            return None;
        }
        let mut one_time_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>> = BTreeMap::new();
        for (user_id, device_id) in &devices {
            one_time_keys
                .entry(user_id.clone())
                .or_default()
                .insert(device_id.clone(), OneTimeKeyAlgorithm::SignedCurve25519);
        }
        let request = claim_keys::v3::Request::new(one_time_keys);
        Some(self.register(AnyOutgoingRequest::KeysClaim(request), Meta::KeysClaim(devices), listed))
    }

    /// Creates an outbound session per claimed key that carries a valid
    /// signature of its device; devices without one back off.
    pub(super) async fn receive_keys_claim_response(
        &self,
        meta: &Meta,
        response: &claim_keys::v3::Response,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let Meta::KeysClaim(devices) = meta else { return Ok(()) };
        let account = self.inner.account.lock().await;
        let mut sessions = self.inner.sessions.lock().await;
        let mut changes = Changes::default();
        let mut created = Vec::new();
        let mut failed = Vec::new();
        let mut claimed = Vec::with_capacity(devices.len());
        for (user_id, device_id) in devices {
            let device = self.inner.store.get_device(user_id, device_id).await?;
            let keys = response.one_time_keys.get(user_id).and_then(|d| d.get(device_id));
            claimed.push((user_id, device_id, device, keys));
        }
        // Checking the signatures and the 3DH are independent per device.
        let results = run_split(
            claimed,
            self.workers(),
            |_| 1,
            |part| {
                part.into_iter()
                    .map(|(user_id, device_id, device, keys)| {
                        let session = match (device, keys) {
                            (Some(device), Some(keys)) => session_from_claim(&account, &device, keys, now),
                            _ => Err("the server returned no one-time key".to_owned()),
                        };
                        // Pickled here too, on the worker.
                        let session = session.map(|(device, session)| {
                            let stored = session.to_stored();
                            (device, session, stored)
                        });
                        (user_id, device_id, session)
                    })
                    .collect::<Vec<_>>()
            },
        );
        for (user_id, device_id, session) in results.into_iter().flatten() {
            match session {
                Ok((device, session, stored)) => {
                    changes.sessions.push(stored);
                    created.push((device, session));
                }
                Err(reason) => {
                    tracing::warn!(%user_id, %device_id, %reason, "no Olm session could be created");
                    failed.push((user_id.clone(), device_id.clone()));
                }
            }
        }
        drop(account);
        // Wedged devices get an `m.dummy` over their new session, so the
        // other side learns of it.
        let mut dummies = Vec::new();
        for (device, mut session) in created {
            let key = device_key(&device);
            let was_wedged = lock(&self.inner.claims).wedged.contains(&key);
            if was_wedged {
                match super::to_device::encrypt_for(
                    &self.inner.own,
                    &mut session,
                    &device,
                    "m.dummy",
                    &Value::Object(Default::default()),
                    now,
                ) {
                    Ok(content) => {
                        changes.sessions.push(session.to_stored());
                        dummies.push((device.clone(), content));
                    }
                    Err(error) => tracing::warn!(%error, "could not encrypt m.dummy for a wedged session"),
                }
            }
            sessions.get_or_load(&*self.inner.store, device.curve25519_key()).await?.push(session);
        }
        self.save(None, Some(&mut sessions), changes).await?;
        drop(sessions);

        let mut claims = lock(&self.inner.claims);
        for key in failed {
            claims.record_failure(key, now);
        }
        for (device, _) in &dummies {
            let key = device_key(device);
            claims.backoff.remove(&key);
            claims.wedged.remove(&key);
        }
        drop(claims);
        if !dummies.is_empty() {
            self.queue_to_device("m.room.encrypted", dummies);
        }
        Ok(())
    }
}

fn device_key(device: &DeviceData) -> DeviceKey {
    (device.user_id().to_owned(), device.device_id().to_owned())
}

/// Checks the claimed key's signature by its device and makes the session.
fn session_from_claim(
    account: &crate::olm::Account,
    device: &DeviceData,
    keys: &BTreeMap<ruma_common::OwnedOneTimeKeyId, ruma_common::serde::Raw<ruma_common::encryption::OneTimeKey>>,
    now: Timestamp,
) -> Result<(DeviceData, Session), String> {
    let (key_id, raw) = keys.iter().next().ok_or("the server returned no one-time key")?;
    if key_id.algorithm() != OneTimeKeyAlgorithm::SignedCurve25519 {
        return Err(format!("unexpected one-time key algorithm {}", key_id.algorithm()));
    }
    let value: Value = raw.deserialize_as_unchecked().map_err(|e| format!("malformed one-time key: {e}"))?;
    verify_json(&value, device.user_id(), &format!("ed25519:{}", device.device_id()), &device.ed25519_key())
        .map_err(|e| format!("one-time key signature: {e}"))?;
    let claimed: ClaimedKey = serde_json::from_value(value).map_err(|e| format!("malformed one-time key: {e}"))?;
    let one_time_key =
        crate::keys::curve25519_from_base64(&claimed.key).map_err(|e| format!("invalid one-time key: {e}"))?;
    let session = account
        .create_outbound_session(device.curve25519_key(), one_time_key)
        .map_err(|e| format!("session creation: {e}"))?;
    Ok((device.clone(), Session::new(session, device.curve25519_key(), SessionOwner::of(device), now)))
}
