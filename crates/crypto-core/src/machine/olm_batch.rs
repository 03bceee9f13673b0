//! Decrypting a sync's Olm to-device events as one batch: events are grouped
//! by sending device (their order matters only within a device's stream),
//! the groups are decrypted in parallel, and the results are merged back in
//! event order.
//!
//! Creating an inbound session consumes a one-time key of the account. Each
//! worker creates sessions on its own copy of the account; the merge then
//! removes the used one-time keys from the real account, in event order, and
//! rejects a second session made with the same one-time key in the batch.
//! A rejected event never changes the real account or a stored session.

use std::collections::{HashMap, HashSet};

use ruma_common::{OwnedUserId, serde::Raw};
use ruma_events::AnyToDeviceEvent;
use vodozemac::{Curve25519PublicKey, olm::OlmMessage};

use super::{OlmMachine, lock};
use crate::{
    StoreError, Timestamp, ToDeviceOutcome,
    devices::DeviceData,
    olm::{
        Account, BatchOutcome, CarriedRoomKey, Classified, Fate, OlmError, Pending, SenderDone, SenderJob,
        SessionCache, classify, decrypt_part, take,
    },
    parallel::run_split,
    store::{Changes, OlmMessageHash},
};

/// The gather phase's result: events sorted into per-sender jobs, and the
/// outcomes already known (plain, malformed, redelivered).
struct Gathered {
    outcomes: Vec<Option<BatchOutcome>>,
    raws: Vec<Option<Raw<AnyToDeviceEvent>>>,
    jobs: Vec<SenderJob>,
    devices_of: HashMap<OwnedUserId, Vec<DeviceData>>,
    hashes: Vec<Option<OlmMessageHash>>,
}

/// The merge phase's bookkeeping of one-time keys used in the batch.
#[derive(Default)]
struct KeyUse {
    used: HashSet<Curve25519PublicKey>,
    /// Sessions made from a key another session of the batch took first.
    dropped: HashSet<(Curve25519PublicKey, String)>,
    account_changed: bool,
    /// A wedge was noted: the claim state's record is saved once.
    claims_changed: bool,
}

impl OlmMachine {
    /// Decrypts every `m.room.encrypted` event of a sync; other events pass
    /// through. Phases: gather (parse, drop redeliveries, group by sender,
    /// load sessions), decrypt (per sender, on the workers), merge (in event
    /// order: one-time keys, wedges, unknown devices), apply (sessions and
    /// the account into `changes`). The outer `Result` is a store failure
    /// (the whole sync fails).
    pub(super) async fn receive_to_device_batch(
        &self,
        account: &mut Account,
        sessions: &mut SessionCache,
        events: Vec<Raw<AnyToDeviceEvent>>,
        now: Timestamp,
        changes: &mut Changes,
    ) -> Result<Vec<BatchOutcome>, StoreError> {
        let mut gathered = self.gather_olm_events(sessions, events).await?;
        if gathered.jobs.is_empty() {
            return Ok(gathered.outcomes.into_iter().flatten().collect());
        }
        let jobs = std::mem::take(&mut gathered.jobs);
        let needs_account =
            jobs.iter().flat_map(|j| &j.events).any(|e| matches!(e.incoming.message, OlmMessage::PreKey(_)));
        let source: Option<&Account> = needs_account.then_some(&*account);
        let own = &self.inner.own;
        let done: Vec<SenderDone> =
            run_split(jobs, self.workers(), |job| job.events.len(), |part| decrypt_part(part, own, source, now))
                .into_iter()
                .flatten()
                .collect();
        let (finished, keys) = self.merge_fates(account, &mut gathered, done, now, changes);
        apply_senders(sessions, finished, &keys, changes);
        if keys.account_changed {
            changes.account = Some(account.to_stored());
        }
        if keys.claims_changed {
            changes.custom_values.push(lock(&self.inner.claims).record(now));
        }
        Ok(gathered.outcomes.into_iter().flatten().collect())
    }

    /// Gather: parses each event, settles the ones that need no session
    /// (plain, malformed, redelivered) and groups the others by sender key
    /// with that sender's sessions taken out of the cache.
    async fn gather_olm_events(
        &self,
        sessions: &mut SessionCache,
        events: Vec<Raw<AnyToDeviceEvent>>,
    ) -> Result<Gathered, StoreError> {
        let own = &self.inner.own;
        let mut gathered = Gathered {
            outcomes: (0..events.len()).map(|_| None).collect(),
            hashes: vec![None; events.len()],
            // Each raw event is kept (moved, not copied) until its outcome needs it.
            raws: events.into_iter().map(Some).collect(),
            jobs: Vec::new(),
            devices_of: HashMap::new(),
        };
        let mut job_of_key: HashMap<Curve25519PublicKey, usize> = HashMap::new();
        let mut hashes_in_batch: HashSet<OlmMessageHash> = HashSet::new();
        for index in 0..gathered.raws.len() {
            let settled = |outcome| Some((outcome, CarriedRoomKey::None));
            let incoming = match classify(gathered.raws[index].as_ref(), own) {
                Classified::Encrypted(incoming) => *incoming,
                Classified::Plain => {
                    gathered.outcomes[index] = settled(ToDeviceOutcome::PlainText(take(&mut gathered.raws[index])));
                    continue;
                }
                Classified::Failed(error) => {
                    let event = take(&mut gathered.raws[index]);
                    gathered.outcomes[index] = settled(ToDeviceOutcome::Failed { event, error });
                    continue;
                }
            };
            // A message we decrypted before (in this batch or earlier) is a
            // redelivery: dropped before any session sees it.
            if !hashes_in_batch.insert(incoming.hash.clone())
                || self.inner.store.is_olm_message_known(&incoming.hash).await?
            {
                tracing::debug!(sender = %incoming.sender, "dropped a redelivered Olm message");
                let event = take(&mut gathered.raws[index]);
                gathered.outcomes[index] = settled(ToDeviceOutcome::Failed { event, error: OlmError::Redelivered });
                continue;
            }
            gathered.hashes[index] = Some(incoming.hash.clone());
            if !gathered.devices_of.contains_key(&incoming.sender) {
                let devices = self.inner.store.get_user_devices(&incoming.sender).await?.into_values().collect();
                gathered.devices_of.insert(incoming.sender.clone(), devices);
            }
            let known_device = gathered
                .devices_of
                .get(&incoming.sender)
                .and_then(|d| d.iter().find(|d| d.curve25519_key() == incoming.sender_key))
                .cloned();
            let job = match job_of_key.get(&incoming.sender_key) {
                Some(&job) => job,
                None => {
                    let sender_key = incoming.sender_key;
                    let sessions = sessions.take(&*self.inner.store, sender_key).await?;
                    gathered.jobs.push(SenderJob { sender_key, sessions, events: Vec::new() });
                    job_of_key.insert(sender_key, gathered.jobs.len() - 1);
                    gathered.jobs.len() - 1
                }
            };
            gathered.jobs[job].events.push(Pending { index, incoming, known_device });
        }
        Ok(gathered)
    }

    /// Merge: the workers' fates in event order. One-time keys used by new
    /// sessions leave the real account (a second session from the same key
    /// is rejected, as sequential processing would); wedges and unknown
    /// devices are noted.
    fn merge_fates(
        &self,
        account: &mut Account,
        gathered: &mut Gathered,
        done: Vec<SenderDone>,
        now: Timestamp,
        changes: &mut Changes,
    ) -> (Vec<SenderDone>, KeyUse) {
        let mut fates: Vec<(usize, Curve25519PublicKey, Fate)> =
            Vec::with_capacity(done.iter().map(|d| d.fates.len()).sum());
        let mut finished = Vec::with_capacity(done.len());
        for mut sender in done {
            fates.extend(sender.fates.drain(..).map(|(i, fate)| (i, sender.sender_key, fate)));
            finished.push(sender);
        }
        fates.sort_by_key(|(i, _, _)| *i);
        let mut keys = KeyUse::default();
        for (index, sender_key, fate) in fates {
            let raw = take(&mut gathered.raws[index]);
            let settled = match fate {
                Fate::Decrypted { info, .. } if keys.dropped.contains(&(sender_key, info.session_id.clone())) => {
                    Err(OlmError::SessionCreation("its session's one-time key was used twice".into()))
                }
                Fate::Decrypted { event, info, new_session_key, room_key } => {
                    match new_session_key.map(|key| keys.take(account, key, sender_key, &info.session_id)) {
                        Some(false) => Err(OlmError::SessionCreation("the one-time key was already used".into())),
                        _ => Ok((event, info, room_key)),
                    }
                }
                Fate::Rejected(error) => Err(error),
                Fate::Wedged { sender, known_device, tried } => {
                    keys.claims_changed |= self.note_wedged(&sender, sender_key, known_device.as_deref(), now, changes);
                    Err(OlmError::NoMatchingSession { sender_key: sender_key.to_base64(), sessions_tried: tried })
                }
            };
            gathered.outcomes[index] = Some(match settled {
                Ok((Ok(event), info, room_key)) => {
                    changes.olm_message_hashes.extend(gathered.hashes[index].take());
                    let known = gathered
                        .devices_of
                        .get(&info.sender)
                        .is_some_and(|devices| devices.iter().any(|d| d.curve25519_key() == sender_key));
                    if !known {
                        // A device we do not know: its owner's list is outdated.
                        self.note_unknown_device(&info.sender, sender_key, changes);
                    }
                    (ToDeviceOutcome::Decrypted { event, info }, room_key)
                }
                Ok((Err(e), _, _)) => {
                    (ToDeviceOutcome::Failed { event: raw, error: OlmError::Malformed(e) }, CarriedRoomKey::None)
                }
                Err(error) => {
                    tracing::warn!(%error, "rejected an encrypted to-device event");
                    (ToDeviceOutcome::Failed { event: raw, error }, CarriedRoomKey::None)
                }
            });
        }
        (finished, keys)
    }
}

impl KeyUse {
    /// Removes a new session's one-time key from the account; `false` if
    /// another session of the batch took it first (the session is dropped).
    fn take(
        &mut self,
        account: &mut Account,
        key: Curve25519PublicKey,
        sender_key: Curve25519PublicKey,
        session_id: &str,
    ) -> bool {
        if account.remove_one_time_key(key) {
            self.used.insert(key);
            self.account_changed = true;
            true
        } else if self.used.contains(&key) {
            self.dropped.insert((sender_key, session_id.to_owned()));
            false
        } else {
            // A fallback key (kept for reuse), or one removed before the batch.
            true
        }
    }
}

/// Apply: the senders' sessions go back to the cache and, where they
/// advanced or were created, into `changes`; a poisoned sender's are dropped.
fn apply_senders(sessions: &mut SessionCache, finished: Vec<SenderDone>, keys: &KeyUse, changes: &mut Changes) {
    for mut sender in finished {
        if sender.poisoned {
            // Reloaded from the store on next use; nothing of it is saved.
            continue;
        }
        sender.sessions.retain(|s| !keys.dropped.contains(&(sender.sender_key, s.session_id().to_owned())));
        for session in &sender.sessions {
            if sender.touched.contains(session.session_id()) {
                changes.sessions.push(session.to_stored());
            }
        }
        sessions.put_back(sender.sender_key, sender.sessions);
    }
}
