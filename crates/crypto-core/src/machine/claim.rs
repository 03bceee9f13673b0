//! Routing for Olm session creation: which devices lack a session, the
//! `/keys/claim` request, and its answer (signature checks and 3DH on the
//! workers, then one batch). Back-off and unwedging rules: `olm/claims`.

use std::collections::BTreeMap;

use ruma_client_api::keys::claim_keys;
use ruma_common::{OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, OwnedUserId, UserId, serde::Raw};
use serde::Deserialize;
use serde_json::Value;

use super::{OlmMachine, lock};
use crate::parallel::run_split;
use crate::{
    AnyOutgoingRequest, OutgoingRequest, StoreError, Timestamp,
    devices::DeviceData,
    olm::{Account, DeviceKey, Session, SessionOwner},
    requests::Meta,
    signing::verify_json,
    store::{Changes, StoredSession},
};

type ClaimedKeys = BTreeMap<OwnedOneTimeKeyId, Raw<ruma_common::encryption::OneTimeKey>>;

/// Why no session could be made from a claimed key.
#[derive(Debug, thiserror::Error)]
enum ClaimError {
    #[error("the server returned no one-time key")]
    NoKey,
    #[error("unexpected one-time key algorithm {0}")]
    Algorithm(String),
    #[error("malformed one-time key: {0}")]
    Malformed(String),
    #[error("one-time key signature: {0}")]
    Signature(crate::SignatureError),
    #[error("invalid one-time key: {0}")]
    InvalidKey(crate::keys::KeyDecodeError),
    #[error("session creation: {0}")]
    Session(String),
}

/// A session made on a worker, already pickled for the store.
struct Created {
    device: DeviceData,
    session: Session,
    stored: StoredSession,
}

#[derive(Deserialize)]
struct ClaimedKey {
    key: String,
}

impl OlmMachine {
    /// A `/keys/claim` request for every known device of `users` we have no
    /// Olm session with, or `None` if there is nothing to claim. Devices whose
    /// last claim failed wait (15 s, doubling, at most 30 min) before retrying;
    /// `poll_timeout` names when. The request is queued: it is listed by
    /// `outgoing_requests` too.
    pub async fn get_missing_sessions<'a>(
        &self,
        users: impl IntoIterator<Item = &'a UserId>,
        now: Timestamp,
    ) -> Result<Option<OutgoingRequest>, StoreError> {
        let missing = self.devices_without_session(users).await?;
        Ok(self.claim_request(missing, now))
    }

    /// Known devices of `users` (not ours) that have no Olm session, or whose
    /// session is wedged.
    pub(super) async fn devices_without_session<'a>(
        &self,
        users: impl IntoIterator<Item = &'a UserId>,
    ) -> Result<Vec<DeviceKey>, StoreError> {
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
            let key = device_key(&device);
            let wedged = lock(&self.inner.claims).is_wedged(&key);
            let list = sessions.get_or_load(&*self.inner.store, device.curve25519_key()).await?;
            if wedged || !list.iter().any(|s| s.belongs_to(&device)) {
                missing.push(key);
            }
        }
        Ok(missing)
    }

    /// Lists a claim for wedged devices, so their sessions get replaced
    /// without the caller asking.
    pub(super) fn ensure_unwedging_claim_listed(&self, now: Timestamp) {
        let wedged = lock(&self.inner.claims).wedged();
        self.claim_request(wedged, now);
    }

    /// Queues a claim for the devices not already being claimed and not in
    /// back-off.
    pub(super) fn claim_request(&self, devices: Vec<DeviceKey>, now: Timestamp) -> Option<OutgoingRequest> {
        let in_flight = lock(&self.inner.requests).devices_being_claimed();
        let devices: Vec<_> = {
            let claims = lock(&self.inner.claims);
            devices.into_iter().filter(|d| !in_flight.contains(d) && claims.may_claim(d, now)).collect()
        };
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
        Some(self.queue(AnyOutgoingRequest::KeysClaim(request), Meta::KeysClaim(devices)))
    }

    /// Creates an outbound session per claimed key that carries a valid
    /// signature of its device; devices without one back off. Wedged
    /// devices get an `m.dummy` over their new session, so they learn of it.
    pub(super) async fn receive_keys_claim_response(
        &self,
        devices: &[DeviceKey],
        response: &claim_keys::v3::Response,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let account = self.inner.account.lock().await;
        let mut claimed = Vec::with_capacity(devices.len());
        for (user_id, device_id) in devices {
            let device = self.inner.store.get_device(user_id, device_id).await?;
            let keys = response.one_time_keys.get(user_id).and_then(|d| d.get(device_id));
            claimed.push((user_id, device_id, device, keys));
        }
        // The account lock is kept to the end: claim state changes here
        // and in syncs are serialized, so the saved record is never stale.
        let results = self.create_sessions(&account, claimed, now);

        let mut changes = Changes::default();
        let mut created = Vec::with_capacity(results.len());
        let mut failed = Vec::new();
        for (user_id, device_id, result) in results {
            match result {
                Ok(made) => created.push(made),
                Err(reason) => {
                    tracing::warn!(%user_id, %device_id, %reason, "no Olm session could be created");
                    failed.push((user_id.clone(), device_id.clone()));
                }
            }
        }
        let mut sessions = self.inner.sessions.lock().await;
        // The new claim state is saved first, then it replaces the old one.
        // Most answers change none of it (no failure, no device in back-off
        // or wedged): then nothing is cloned, looked up or saved.
        let mut claims = lock(&self.inner.claims).clone();
        let dummies = self.unwedge_with_dummies(&claims, &mut created, now);
        let mut claims_changed = !failed.is_empty();
        for key in failed {
            claims.record_failure(key, now);
        }
        if !claims.is_idle() {
            for made in &created {
                claims_changed |= claims.record_success(&device_key(&made.device));
            }
        }
        for Created { device, session, stored } in created {
            changes.sessions.push(stored);
            sessions.get_or_load(&*self.inner.store, device.curve25519_key()).await?.push(session);
        }
        if claims_changed {
            changes.custom_values.push(claims.record(now));
        }
        self.save(None, Some(&mut sessions), changes).await?;
        if claims_changed {
            *lock(&self.inner.claims) = claims;
        }
        drop(sessions);
        drop(account);
        if !dummies.is_empty() {
            self.queue_to_device("m.room.encrypted", dummies);
        }
        Ok(())
    }

    /// Checks each claimed key's signature and makes the session, on the workers.
    fn create_sessions<'a>(
        &self,
        account: &Account,
        claimed: Vec<(&'a OwnedUserId, &'a OwnedDeviceId, Option<DeviceData>, Option<&ClaimedKeys>)>,
        now: Timestamp,
    ) -> Vec<(&'a OwnedUserId, &'a OwnedDeviceId, Result<Created, ClaimError>)> {
        run_split(
            claimed,
            self.workers(),
            |_| 1,
            |part| {
                part.into_iter()
                    .map(|(user_id, device_id, device, keys)| {
                        let made = match (device, keys) {
                            (Some(device), Some(keys)) => session_from_claim(account, device, keys, now),
                            _ => Err(ClaimError::NoKey),
                        };
                        (user_id, device_id, made)
                    })
                    .collect::<Vec<_>>()
            },
        )
        .into_iter()
        .flatten()
        .collect()
    }

    /// For each new session with a wedged device, an `m.dummy` over it (the
    /// advanced session replaces the pickle to save).
    fn unwedge_with_dummies(
        &self,
        claims: &crate::olm::ClaimState,
        created: &mut [Created],
        now: Timestamp,
    ) -> Vec<(DeviceData, crate::olm::ToDeviceContent)> {
        let mut dummies = Vec::new();
        if claims.wedged().is_empty() {
            return dummies;
        }
        for made in created.iter_mut() {
            if !claims.is_wedged(&device_key(&made.device)) {
                continue;
            }
            let empty = Value::Object(Default::default());
            match crate::olm::encrypt_for(&self.inner.own, &mut made.session, &made.device, "m.dummy", &empty, now) {
                Ok(content) => {
                    made.stored = made.session.to_stored();
                    dummies.push((made.device.clone(), content));
                }
                Err(error) => tracing::warn!(%error, "could not encrypt m.dummy for a wedged session"),
            }
        }
        dummies
    }
}

fn device_key(device: &DeviceData) -> DeviceKey {
    (device.user_id().to_owned(), device.device_id().to_owned())
}

/// Checks the claimed key's signature by its device and makes the session.
fn session_from_claim(
    account: &Account,
    device: DeviceData,
    keys: &ClaimedKeys,
    now: Timestamp,
) -> Result<Created, ClaimError> {
    let (key_id, raw) = keys.iter().next().ok_or(ClaimError::NoKey)?;
    if key_id.algorithm() != OneTimeKeyAlgorithm::SignedCurve25519 {
        return Err(ClaimError::Algorithm(key_id.algorithm().to_string()));
    }
    let value: Value = raw.deserialize_as_unchecked().map_err(|e| ClaimError::Malformed(e.to_string()))?;
    verify_json(&value, device.user_id(), &format!("ed25519:{}", device.device_id()), &device.ed25519_key())
        .map_err(ClaimError::Signature)?;
    let claimed: ClaimedKey = serde_json::from_value(value).map_err(|e| ClaimError::Malformed(e.to_string()))?;
    let one_time_key = crate::keys::curve25519_from_base64(&claimed.key).map_err(ClaimError::InvalidKey)?;
    let session = account
        .create_outbound_session(device.curve25519_key(), one_time_key)
        .map_err(|e| ClaimError::Session(e.to_string()))?;
    let session = Session::new(session, device.curve25519_key(), SessionOwner::of(&device), now);
    let stored = session.to_stored();
    Ok(Created { device, session, stored })
}
