//! Gossip in the engine: our secret and room-key requests (opened, sent,
//! persisted, closed), the requests of our other devices (answered over Olm
//! if the rules in `gossip/` allow it), and the answers to ours (taken only
//! if those rules allow it). See `crate::gossip` for the rules.

use std::collections::{BTreeMap, HashMap};

use ruma_client_api::to_device::send_event_to_device;
use ruma_common::{DeviceId, OwnedDeviceId, OwnedUserId, RoomId, UserId, serde::Raw, to_device::DeviceIdOrAllDevices};
use ruma_events::ToDeviceEventType;
use serde_json::Value;
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey};

use super::{OlmMachine, lock, room_keys::KeyOffer};
use crate::{
    AnyOutgoingRequest, OutgoingRequest, StoreError, Timestamp,
    backup::{BackupDecryptionKey, BackupInfo},
    events::{EngineEvent, RoomKeyInfo},
    gossip::{
        Answer, Asked, Counterpart, ForwardedRoomKey, GossipAction, GossipError, GossipKind, GossipRequest,
        GossipRequests, IncomingKeyRequest, IncomingSecretRequest, KeptAnswers, ROOM_KEY_REQUEST, RequestBudget,
        ResendClock, SECRET_REQUEST, SECRET_SEND, SecretSend, forwarded_key_content, judge_own_device,
        key_request_content, secret_request_content, secret_send_content,
    },
    identities::CrossSigningKeyExport,
    olm::{OlmDecryptionInfo, OlmEncryptionError},
    requests::Meta,
    secret_storage::names,
    store::Changes,
};

/// The keys the Olm session (and the plaintext's checked `keys`) authenticated.
fn olm_keys(info: &OlmDecryptionInfo) -> (Curve25519PublicKey, Ed25519PublicKey) {
    (info.sender_curve25519_key, info.sender_ed25519_key)
}

/// What one sync learned of the devices asking us: our devices as stored
/// (read once), and the verdict on each known one that asked.
#[derive(Default)]
struct DevicesAsking {
    own: Option<std::collections::BTreeSet<OwnedDeviceId>>,
    judged: HashMap<OwnedDeviceId, bool>,
}
/// The most open requests sent again at start (the oldest first).
const RESENT_AT_START: usize = 64;

/// Gossip state in memory: the open requests (mirrored in the store), the
/// answers kept for later and the resend clock (not persisted: the asking
/// device asks again, and every open request is sent at start).
#[derive(Debug, Default)]
pub(super) struct GossipState {
    requests: GossipRequests,
    /// Whether the requests not sent before a restart were queued again.
    relisted: bool,
    /// Answers waiting for a session with their device, and room-key
    /// requests of our verified devices kept a week (or until the asker
    /// cancels, which it does once a key satisfied it): one we could not
    /// answer yet, or answered with a copy from some index, is answered
    /// (again) at a later sync once we hold the key, or a copy reaching
    /// further back (it may come over Olm, forwarded, from the backup or a
    /// file). A new login often asks before our device that will hold the
    /// key got it, or got its best copy.
    answers: KeptAnswers,
    /// When the open room-key requests are sent again.
    resend: ResendClock,
}

impl GossipState {
    /// The state saved in the store.
    pub(super) fn from_record(record: Option<&[u8]>) -> Self {
        Self { requests: GossipRequests::from_record(record), ..Default::default() }
    }
}

/// A request of one of our devices, or an answer to one of ours, read from
/// a sync and handled once the sync is saved.
pub(super) enum GossipInput {
    /// An `m.secret.request`.
    SecretRequest(OwnedUserId, IncomingSecretRequest),
    /// An `m.room_key_request`.
    KeyRequest(OwnedUserId, IncomingKeyRequest),
    /// An `m.secret.send` over Olm.
    Secret(Box<OlmDecryptionInfo>, Box<SecretSend>),
}

impl GossipInput {
    /// For a request (or its cancellation): who sent it, the device it
    /// names, its id, whether it is a cancellation, and its event type.
    fn request(&self) -> Option<(&UserId, &DeviceId, &str, bool, &'static str)> {
        match self {
            Self::SecretRequest(sender, r) => Some((
                sender,
                &r.requesting_device_id,
                &r.request_id,
                r.action != GossipAction::Request,
                SECRET_REQUEST,
            )),
            Self::KeyRequest(sender, r) => Some((
                sender,
                &r.requesting_device_id,
                &r.request_id,
                r.action != GossipAction::Request,
                ROOM_KEY_REQUEST,
            )),
            Self::Secret(..) => None,
        }
    }
}

impl OlmMachine {
    /// Asks our other devices for a secret (`m.cross_signing.*`); for the
    /// backup key use [`request_backup_key`](Self::request_backup_key).
    /// `None` if a request for it is already open. The request is kept
    /// open (across restarts) until a verified device of ours answers.
    pub async fn request_secret(&self, name: &str) -> Result<Option<OutgoingRequest>, StoreError> {
        self.open_request(GossipKind::Secret { name: name.to_owned() }, None).await
    }

    /// Asks our other devices for the private key of `backup` (the answer
    /// must match its public key).
    pub async fn request_backup_key(&self, backup: &BackupInfo) -> Result<Option<OutgoingRequest>, StoreError> {
        let Ok(public) = backup.public_key() else { return Ok(None) };
        let kind = GossipKind::Secret { name: names::BACKUP.to_owned() };
        self.open_request(kind, Some(public.to_base64())).await
    }

    /// Asks our other devices for a room key we miss. `None` if a request
    /// for it is already open (it stays open until a forwarded copy better
    /// than ours is stored).
    pub async fn request_room_key(
        &self,
        room_id: &RoomId,
        session_id: &str,
    ) -> Result<Option<OutgoingRequest>, StoreError> {
        let kind = GossipKind::RoomKey { room_id: room_id.to_owned(), session_id: session_id.to_owned() };
        self.open_request(kind, None).await
    }

    /// Our open secret and room-key requests.
    pub fn open_gossip_requests(&self) -> Vec<GossipRequest> {
        let gossip = lock(&self.inner.gossip);
        gossip.requests.unsent().into_iter().chain(gossip.requests.sent()).collect()
    }

    /// Sends every open request again (same ids), e.g. once this device and
    /// another of ours verified each other: a device that saw a request
    /// before it trusted us did not answer it then.
    pub fn resend_open_gossip_requests(&self) -> Vec<OutgoingRequest> {
        let open = self.open_gossip_requests();
        open.iter().map(|request| self.queue_gossip_request(request, GossipAction::Request)).collect()
    }

    async fn open_request(
        &self,
        kind: GossipKind,
        expected_public_key: Option<String>,
    ) -> Result<Option<OutgoingRequest>, StoreError> {
        let request_id = {
            let requests = lock(&self.inner.requests);
            self.fresh_id(&requests).to_string()
        };
        let (record, dropped, replaced) = {
            let mut gossip = lock(&self.inner.gossip);
            // A backup-key request for another backup gives way to this one
            // (a stale or server-made backup must not pin the expected key).
            let replaced = match gossip.requests.find(&kind).cloned() {
                Some(open) if open.expected_public_key == expected_public_key => return Ok(None),
                Some(open) => gossip.requests.close(&open.request_id),
                None => None,
            };
            let open = gossip.requests.sent().into_iter().chain(gossip.requests.unsent());
            let room_key_open = open.into_iter().any(|r| r.kind.is_room_key());
            if kind.is_room_key() && !room_key_open {
                // The first open room-key request: the resend clock starts.
                gossip.resend.restart();
            }
            let dropped = gossip.requests.open(request_id.clone(), kind, expected_public_key);
            (gossip.requests.record(), dropped, replaced)
        };
        let saved = self.save(None, None, Changes { custom_values: vec![record], ..Default::default() }).await;
        if let Err(error) = saved {
            // Memory follows the store: the request is not open.
            let mut gossip = lock(&self.inner.gossip);
            gossip.requests.close(&request_id);
            return Err(error);
        }
        if let Some(replaced) = replaced {
            self.queue_gossip_request(&replaced, GossipAction::Cancel);
        }
        if let Some(dropped) = dropped {
            tracing::info!(request_id = %dropped.request_id, "too many open requests: the oldest was dropped");
        }
        let request = lock(&self.inner.gossip).requests.get(&request_id).cloned();
        Ok(request.map(|request| self.queue_gossip_request(&request, GossipAction::Request)))
    }

    /// Queues a request (or its cancellation) to all our devices, in the
    /// clear as the spec has it: the answer is what is encrypted.
    fn queue_gossip_request(&self, request: &GossipRequest, action: GossipAction) -> OutgoingRequest {
        let device = self.device_id().as_str();
        let (event_type, content) = match (&request.kind, action) {
            (GossipKind::Secret { name }, GossipAction::Request) => {
                (SECRET_REQUEST, secret_request_content(Some(name), &request.request_id, device))
            }
            (GossipKind::Secret { .. }, GossipAction::Cancel) => {
                (SECRET_REQUEST, secret_request_content(None, &request.request_id, device))
            }
            (GossipKind::RoomKey { room_id, session_id }, GossipAction::Request) => {
                (ROOM_KEY_REQUEST, key_request_content(Some((room_id, session_id)), &request.request_id, device))
            }
            (GossipKind::RoomKey { .. }, GossipAction::Cancel) => {
                (ROOM_KEY_REQUEST, key_request_content(None, &request.request_id, device))
            }
        };
        let raw = Raw::new(&content).map(Raw::cast_unchecked).unwrap_or_else(|_| Raw::from_json(Default::default()));
        let messages: send_event_to_device::v3::Messages =
            BTreeMap::from([(self.user_id().to_owned(), BTreeMap::from([(DeviceIdOrAllDevices::AllDevices, raw)]))]);
        let mut requests = lock(&self.inner.requests);
        let id = self.fresh_id(&requests);
        let outgoing =
            send_event_to_device::v3::Request::new_raw(ToDeviceEventType::from(event_type), id.clone(), messages);
        let meta = match action {
            GossipAction::Request => Meta::GossipRequest(request.request_id.clone()),
            GossipAction::Cancel => Meta::None,
        };
        requests.push(OutgoingRequest::with_id(id, AnyOutgoingRequest::ToDevice(outgoing)), meta)
    }

    /// After a restart, the open requests are queued again;
    /// answers waiting for a session are tried (called by `outgoing_requests`).
    pub(super) async fn ensure_gossip_listed(&self, now: Timestamp) -> Result<(), StoreError> {
        // Every open request, sent or not: an answer that arrived just
        // before a crash may have been lost with it.
        let unsent = {
            let mut gossip = lock(&self.inner.gossip);
            match std::mem::replace(&mut gossip.relisted, true) {
                true => Vec::new(),
                false => {
                    let mut open: Vec<GossipRequest> =
                        gossip.requests.unsent().into_iter().chain(gossip.requests.sent()).collect();
                    open.sort_by_key(|r| r.sequence);
                    open.truncate(RESENT_AT_START);
                    open
                }
            }
        };
        for request in unsent {
            self.queue_gossip_request(&request, GossipAction::Request);
        }
        if !lock(&self.inner.gossip).resend.started() {
            self.resend_open_room_key_requests(now);
        }
        self.retry_waiting_answers(now).await
    }

    /// When the open room-key requests are sent again, if any is open.
    pub(super) fn gossip_deadline(&self) -> Option<Timestamp> {
        let gossip = lock(&self.inner.gossip);
        let open = gossip.requests.sent().iter().any(|r| matches!(r.kind, GossipKind::RoomKey { .. }));
        gossip.resend.deadline().filter(|_| open)
    }

    /// Starts the resend clock (at the first call after a request opened)
    /// and, once it is due, queues the open room-key requests again (same
    /// ids; the oldest [`RESENT_AT_START`]) and doubles the wait.
    pub(super) fn resend_open_room_key_requests(&self, now: Timestamp) {
        let due = {
            let mut gossip = lock(&self.inner.gossip);
            match gossip.resend.tick(now) {
                false => Vec::new(),
                true => {
                    let mut open: Vec<GossipRequest> = gossip
                        .requests
                        .sent()
                        .into_iter()
                        .filter(|r| matches!(r.kind, GossipKind::RoomKey { .. }))
                        .collect();
                    open.sort_by_key(|r| r.sequence);
                    open.truncate(RESENT_AT_START);
                    open
                }
            }
        };
        for request in due {
            self.queue_gossip_request(&request, GossipAction::Request);
        }
    }

    /// The server took our request: it is marked sent.
    pub(super) async fn receive_gossip_request_sent(&self, request_id: &str) -> Result<(), StoreError> {
        let record = {
            let mut gossip = lock(&self.inner.gossip);
            gossip.requests.mark_sent(request_id).then(|| gossip.requests.record())
        };
        match record {
            Some(record) => self.save(None, None, Changes { custom_values: vec![record], ..Default::default() }).await,
            None => Ok(()),
        }
    }

    /// Handles the gossip read from a saved sync. One message's failure is
    /// logged; the others are still handled.
    pub(super) async fn receive_gossip(&self, inputs: Vec<GossipInput>, now: Timestamp) {
        // Requests come in the clear: each is answered only for our own
        // verified device, which is checked before it counts against the
        // sync's budget (so another user, or a device id of ours nobody
        // verified, cannot use it up), and each device has a share of its
        // own (see `gossip::budget`).
        let mut budget = RequestBudget::default();
        let mut may_ask = DevicesAsking::default();
        for input in inputs {
            if let Some((sender, device, request_id, cancellation, event_type)) = input.request() {
                match self.may_ask_us(sender, device, event_type, &mut may_ask).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(error) => {
                        tracing::warn!(%error, "a gossip request could not be checked");
                        continue;
                    }
                }
                if let Err(skipped) = budget.admit(device, request_id, cancellation) {
                    tracing::info!(?skipped, %device, "a gossip request of our device was not handled in this sync");
                    continue;
                }
            }
            let result = match input {
                GossipInput::SecretRequest(sender, request) => self.receive_secret_request(&sender, request, now).await,
                GossipInput::KeyRequest(sender, request) => self.receive_key_request(&sender, request, now).await,
                GossipInput::Secret(info, secret) => self.receive_secret(&info, *secret).await,
            };
            if let Err(error) = result {
                tracing::warn!(%error, "a gossip message failed");
            }
        }
    }

    /// Whether `device` may ask us for secrets or keys: one of our own
    /// other devices, known, not deleted and verified. Our devices are read
    /// once per sync (`checked.own`), so a device id we do not know costs a
    /// lookup in memory, however many are named; each known device is
    /// judged once per sync.
    async fn may_ask_us(
        &self,
        sender: &UserId,
        device: &DeviceId,
        event_type: &'static str,
        checked: &mut DevicesAsking,
    ) -> Result<bool, StoreError> {
        if sender != self.user_id() || device == self.device_id() {
            tracing::debug!(%sender, %device, "a gossip request from another user, or from this device, was ignored");
            return Ok(false);
        }
        if let Some(known) = checked.judged.get(device) {
            return Ok(*known);
        }
        if checked.own.is_none() {
            checked.own = Some(self.inner.store.get_user_devices(sender).await?.into_keys().collect());
        }
        if checked.own.as_ref().is_some_and(|own| !own.contains(device)) {
            tracing::debug!(%device, "a gossip request names no device of ours");
            return Ok(false);
        }
        let allowed = match self.check_own_verified_device(sender, device, None, event_type).await? {
            Ok(()) => true,
            Err(refused) => {
                tracing::info!(%refused, "a gossip request was not answered");
                false
            }
        };
        checked.judged.insert(device.to_owned(), allowed);
        Ok(allowed)
    }

    /// Whether `device_id` is one of our other devices, known, not deleted
    /// and verified (and, with `olm_keys`, the device those keys belong
    /// to); otherwise why not. The facts are gathered here, the verdict is
    /// [`judge_own_device`]'s.
    async fn check_own_verified_device(
        &self,
        sender: &UserId,
        device_id: &DeviceId,
        olm_keys: Option<(Curve25519PublicKey, Ed25519PublicKey)>,
        event_type: &'static str,
    ) -> Result<Result<(), GossipError>, StoreError> {
        let stored = match sender == self.user_id() {
            true => self.inner.store.get_device(sender, device_id).await?,
            false => None,
        };
        let stored = stored.map(|d| ((d.curve25519_key(), d.ed25519_key()), d.is_deleted()));
        let verified = match stored {
            Some(_) => self.device_trust(sender, device_id).await?.is_some_and(|t| t.is_verified()),
            None => false,
        };
        let counterpart = Counterpart { sender, device_id, stored, olm_keys, verified };
        Ok(judge_own_device(self.user_id(), &counterpart, event_type))
    }

    async fn receive_secret_request(
        &self,
        sender: &UserId,
        request: IncomingSecretRequest,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if request.requesting_device_id == *self.device_id() && sender == self.user_id() {
            return Ok(());
        }
        let Some(name) = request.name.clone().filter(|_| request.action == GossipAction::Request) else {
            // Only the device that asked withdraws its request.
            if sender == self.user_id() {
                lock(&self.inner.gossip).answers.withdraw(&request.request_id, &request.requesting_device_id);
            }
            return Ok(());
        };
        let answer = Answer::new(request.requesting_device_id, request.request_id, Asked::Secret(name));
        self.send_answer(answer, now).await
    }

    async fn receive_key_request(
        &self,
        sender: &UserId,
        request: IncomingKeyRequest,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if request.requesting_device_id == *self.device_id() && sender == self.user_id() {
            return Ok(());
        }
        let Some((room_id, session_id)) = request.key.clone().filter(|_| request.action == GossipAction::Request)
        else {
            // Only the device that asked withdraws its request.
            if sender == self.user_id() {
                lock(&self.inner.gossip).answers.withdraw(&request.request_id, &request.requesting_device_id);
            }
            return Ok(());
        };
        // Asked again (our device sends its open requests again now and
        // then): answered again only with a better copy than the one sent.
        let sent = lock(&self.inner.gossip).answers.sent_copy_from(&request.request_id, &request.requesting_device_id);
        if let Some(sent) = sent {
            let held = self.load_inbound(&room_id, &session_id).await?.map(|s| s.first_known_index());
            if held.is_none_or(|held| held >= sent) {
                tracing::debug!(request_id = %request.request_id, "asked again for a key we sent, with no better copy");
                return Ok(());
            }
        }
        let answer = Answer::new(request.requesting_device_id, request.request_id, Asked::RoomKey(room_id, session_id));
        self.send_answer(answer, now).await
    }

    /// The content that answers `what`, if we hold it.
    async fn answer_content(
        &self,
        request_id: &str,
        what: &Asked,
    ) -> Result<Option<(&'static str, Value)>, StoreError> {
        Ok(match what {
            Asked::Secret(name) => {
                self.held_secret(name).await?.map(|secret| ("m.secret.send", secret_send_content(request_id, &secret)))
            }
            Asked::RoomKey(room_id, session_id) => self
                .load_inbound(room_id, session_id)
                .await?
                .and_then(|session| forwarded_key_content(&session))
                .map(|content| ("m.forwarded_room_key", content)),
        })
    }

    /// A secret we hold, by name.
    async fn held_secret(&self, name: &str) -> Result<Option<zeroize::Zeroizing<String>>, StoreError> {
        let cross_signing = || self.export_cross_signing_keys().unwrap_or_default();
        Ok(match name {
            names::MASTER => cross_signing().master,
            names::SELF_SIGNING => cross_signing().self_signing,
            names::USER_SIGNING => cross_signing().user_signing,
            names::BACKUP => self.inner.store.get_secret(names::BACKUP).await?,
            _ => None,
        })
    }

    /// Sends an answer over Olm; without a session with the device, the
    /// answer waits and a claim is queued.
    async fn send_answer(&self, answer: Answer, now: Timestamp) -> Result<(), StoreError> {
        // Checked at every attempt, not only when the request came: an
        // answer kept for later (a key we did not hold yet, a session to
        // claim) goes only to a device that is still ours and verified.
        let event_type = match answer.asked {
            Asked::Secret(_) => SECRET_REQUEST,
            Asked::RoomKey(..) => ROOM_KEY_REQUEST,
        };
        if let Err(refused) =
            self.check_own_verified_device(self.user_id(), &answer.device_id, None, event_type).await?
        {
            tracing::info!(%refused, "a kept answer was dropped");
            return Ok(());
        }
        let Some((event_type, content)) = self.answer_content(&answer.request_id, &answer.asked).await? else {
            tracing::info!(asked = ?answer.asked, "asked for something we do not hold");
            lock(&self.inner.gossip).answers.await_better_key(answer, now, None);
            return Ok(());
        };
        let own = self.user_id().to_owned();
        let result = self.encrypt_to_device(&[(&own, &answer.device_id)], event_type, &content, now).await?;
        if !result.failures.iter().any(|f| matches!(f, OlmEncryptionError::NoSession { .. })) {
            tracing::info!(device_id = %answer.device_id, event_type, "answered a request of our own device");
            if let Asked::RoomKey(room_id, session_id) = &answer.asked {
                let sent_from = self.load_inbound(room_id, session_id).await?.map(|s| s.first_known_index());
                lock(&self.inner.gossip).answers.await_better_key(answer, now, sent_from);
            }
            return Ok(());
        }
        let device = answer.device_id.clone();
        match lock(&self.inner.gossip).answers.wait_for_session(answer) {
            true => {
                self.claim_request(vec![(own, device)], now);
            }
            false => tracing::info!(device_id = %device, "no Olm session with the asking device; answer dropped"),
        }
        Ok(())
    }

    /// Tries the answers waiting for a session whose claim is not in flight.
    async fn retry_waiting_answers(&self, now: Timestamp) -> Result<(), StoreError> {
        let being_claimed = lock(&self.inner.requests).devices_being_claimed();
        let own = self.user_id().to_owned();
        let ready = lock(&self.inner.gossip)
            .answers
            .take_ready(|device| being_claimed.contains(&(own.clone(), device.to_owned())));
        for answer in ready {
            self.send_answer(answer, now).await?;
        }
        Ok(())
    }

    /// Answers the kept requests whose key we now hold, or hold from an
    /// earlier index than the copy we sent (checked in the store: however
    /// the key came); forgets those older than a week. Called after each
    /// sync is saved.
    pub(super) async fn answer_awaiting_keys(&self, now: Timestamp) -> Result<(), StoreError> {
        let awaiting = lock(&self.inner.gossip).answers.awaiting_keys(now);
        for kept in awaiting {
            let Asked::RoomKey(room_id, session_id) = &kept.answer.asked else { continue };
            let Some(held) = self.load_inbound(room_id, session_id).await? else { continue };
            if kept.better_than_sent(held.first_known_index()) {
                self.send_answer(kept.answer, now).await?;
            }
        }
        Ok(())
    }

    /// An `m.secret.send`: taken only over Olm from our own verified device,
    /// in answer to an open request of ours, and only if it matches its
    /// public part. Then the request is closed and cancelled on our other
    /// devices.
    async fn receive_secret(&self, info: &OlmDecryptionInfo, secret: SecretSend) -> Result<(), StoreError> {
        let refuse = |error: GossipError| {
            tracing::warn!(%error, "refused a secret");
            Ok(())
        };
        let Some(device_id) = &info.sender_device else { return refuse(GossipError::UnknownDevice(SECRET_SEND)) };
        if let Err(error) =
            self.check_own_verified_device(&info.sender, device_id, Some(olm_keys(info)), SECRET_SEND).await?
        {
            return refuse(error);
        }
        let Some(request) = lock(&self.inner.gossip).requests.get(&secret.request_id).cloned() else {
            return refuse(GossipError::Unrequested { event_type: SECRET_SEND, what: secret.request_id.clone() });
        };
        let GossipKind::Secret { name } = &request.kind else {
            return refuse(GossipError::Unrequested { event_type: SECRET_SEND, what: secret.request_id.clone() });
        };
        if !self.take_secret(name, &secret, request.expected_public_key.as_deref()).await? {
            return refuse(GossipError::SecretMismatch { name: name.clone() });
        }
        tracing::info!(secret = %name, %device_id, "a secret arrived from our verified device");
        self.close_request(&request, Changes::default()).await?;
        self.announce([EngineEvent::SecretReceived { name: name.clone() }]);
        Ok(())
    }

    /// Checks a secret against its public part and keeps it; `false` if it
    /// does not match.
    async fn take_secret(&self, name: &str, secret: &SecretSend, expected: Option<&str>) -> Result<bool, StoreError> {
        let value = secret.secret.clone();
        let export = match name {
            names::MASTER => CrossSigningKeyExport { master: Some(value), ..Default::default() },
            names::SELF_SIGNING => CrossSigningKeyExport { self_signing: Some(value), ..Default::default() },
            names::USER_SIGNING => CrossSigningKeyExport { user_signing: Some(value), ..Default::default() },
            names::BACKUP => {
                let key = BackupDecryptionKey::from_base64(&value)
                    .ok()
                    .filter(|key| expected.is_some_and(|expected| key.public_key().to_base64() == expected));
                if let Some(key) = &key {
                    self.save_backup_decryption_key(key).await?;
                }
                return Ok(key.is_some());
            }
            _ => return Ok(false),
        };
        // Checked against the keys the server lists for us; nothing is
        // imported on a mismatch.
        match self.import_cross_signing_keys(&export).await {
            Ok(_) => Ok(true),
            Err(crate::identities::CrossSigningError::Store(error)) => Err(error),
            Err(error) => {
                tracing::warn!(%error, secret = %name, "a gossiped cross-signing key does not match our identity");
                Ok(false)
            }
        }
    }

    /// Closes a request (saved with `changes`) and cancels it on our other devices.
    async fn close_request(&self, request: &GossipRequest, mut changes: Changes) -> Result<(), StoreError> {
        let record = {
            let mut gossip = lock(&self.inner.gossip);
            gossip.requests.close(&request.request_id);
            gossip.requests.record()
        };
        changes.custom_values.push(record);
        self.save(None, None, changes).await?;
        self.queue_gossip_request(request, GossipAction::Cancel);
        Ok(())
    }

    /// An `m.forwarded_room_key` from a sync (stored in the sync's batch):
    /// taken only over Olm from our own verified device, for an open
    /// request of ours, and never over a better or differently owned key.
    /// Returns the request to cancel on our other devices, if one closed:
    /// only a stored key closes it. A key no better than ours (or held for
    /// another owner) leaves it open for our other devices' answers, so a
    /// device that forwards a later copy first cannot shut out one with an
    /// earlier copy, and the request is not made again (each device answers
    /// a request once: no loop of requests and useless answers).
    pub(super) async fn receive_forwarded_key(
        &self,
        info: &OlmDecryptionInfo,
        key: ForwardedRoomKey,
        changes: &mut Changes,
    ) -> Result<Result<(Option<RoomKeyInfo>, Option<GossipRequest>), GossipError>, StoreError> {
        let event_type = crate::gossip::FORWARDED_ROOM_KEY;
        let Some(device_id) = &info.sender_device else { return Ok(Err(GossipError::UnknownDevice(event_type))) };
        if let Err(error) =
            self.check_own_verified_device(&info.sender, device_id, Some(olm_keys(info)), event_type).await?
        {
            return Ok(Err(error));
        }
        let Some(request) = lock(&self.inner.gossip).requests.for_room_key(&key.room_id, &key.session_id).cloned()
        else {
            let what = format!("{} / {}", key.room_id, key.session_id);
            return Ok(Err(GossipError::Unrequested { event_type, what }));
        };
        let room_key = RoomKeyInfo {
            room_id: key.room_id.clone(),
            session_id: key.session_id.clone(),
            sender_key: key.session.sender_key,
            sender: info.sender.clone(),
            source: crate::KeySource::Forwarded,
        };
        let stored = match self.offer_inbound(key.session, changes).await? {
            KeyOffer::Stored => Some(room_key),
            KeyOffer::KeptExisting => {
                tracing::info!(session_id = %key.session_id, "a forwarded key was no better than ours");
                None
            }
            KeyOffer::Conflict(mismatch) => {
                tracing::warn!(session_id = %key.session_id, ?mismatch, "refused a forwarded key held for another owner");
                None
            }
        };
        if stored.is_none() {
            return Ok(Ok((None, None)));
        }
        let record = {
            let mut gossip = lock(&self.inner.gossip);
            gossip.requests.close(&request.request_id);
            gossip.requests.record()
        };
        changes.custom_values.push(record);
        Ok(Ok((stored, Some(request))))
    }

    /// Cancels, on our other devices, requests a sync's forwarded keys closed.
    pub(super) fn cancel_answered(&self, answered: &[GossipRequest]) {
        for request in answered {
            self.queue_gossip_request(request, GossipAction::Cancel);
        }
    }
}
