//! Routing for interactive verification: commands and incoming messages go
//! to the flows in `verification/` ([`Verifications`]); what a step
//! returns is queued (to-device messages in the clear, room events as
//! [`AnyOutgoingRequest::RoomMessage`]); a step's proof marks keys
//! verified and queues the cross-signing signatures; every change is an
//! [`EngineEvent::VerificationChanged`]. Flows live in memory: a restart
//! ends them (the other side times out).

use std::collections::BTreeMap;

use ruma_client_api::to_device::send_event_to_device;
use ruma_common::{
    DeviceId, OwnedDeviceId, OwnedEventId, OwnedUserId, RoomId, UserId, serde::Raw, to_device::DeviceIdOrAllDevices,
};
use ruma_events::ToDeviceEventType;
use serde_json::Value;

use super::{OlmMachine, lock};
use crate::{
    AnyOutgoingRequest, OutgoingRequest, Timestamp,
    events::EngineEvent,
    identities::identity_is_verified,
    requests::{Meta, RoomMessageRequest},
    store::Changes,
    verification::{
        CancelCode, FlowError, FlowId, FlowKeys, FlowState, Incoming, Party, QrCodeData, QrImage, Recipient, SasEmoji,
        SasKeys, ScanExpectations, Step, VerificationError, VerificationMessage, VerificationProof,
        VerificationRequest, request::IN_ROOM_REQUEST_MSGTYPE,
    },
};

/// The most devices one to-device request goes to.
const MAX_REQUEST_RECIPIENTS: usize = 100;

impl OlmMachine {
    pub(super) fn our_party(&self) -> Party {
        Party { user_id: self.user_id().to_owned(), device_id: self.device_id().to_owned() }
    }

    /// Asks `user_id` to verify, to-device: to `devices`, or to every
    /// device of theirs we know (ours: every other device of ours). The
    /// request is queued; the flow id is returned. Once one device answers,
    /// the others are told `m.accepted`.
    pub async fn request_verification(
        &self,
        user_id: &UserId,
        devices: Option<Vec<OwnedDeviceId>>,
        now: Timestamp,
    ) -> Result<FlowId, VerificationError> {
        let known = self.get_user_devices(user_id).await?;
        let mut recipients: Vec<OwnedDeviceId> = match devices {
            Some(devices) => devices.into_iter().filter(|d| known.contains_key(d)).collect(),
            None => known.keys().cloned().collect(),
        };
        recipients.retain(|d| !(user_id == self.user_id() && d == self.device_id()));
        recipients.truncate(MAX_REQUEST_RECIPIENTS);
        if recipients.is_empty() {
            return Err(FlowError::UnknownDevice.into());
        }
        let transaction_id = self.inner.ids.next().to_string();
        let flow = FlowId::ToDevice(transaction_id.clone());
        lock(&self.inner.verifications).request(user_id.to_owned(), flow.clone(), recipients.clone(), now)?;
        let content = VerificationRequest::to_device_content(&self.our_party(), &transaction_id, now);
        let message = VerificationMessage {
            to: Recipient::Devices(user_id.to_owned(), recipients),
            event_type: "m.key.verification.request",
            content,
        };
        self.send_verification_messages(vec![message]);
        self.announce_flow(user_id, &flow);
        Ok(flow)
    }

    /// Asks `user_id` to verify in `room_id` (a room we share, usually a
    /// DM): the request event is queued as a [`AnyOutgoingRequest::RoomMessage`];
    /// once its answer names the event id, the flow exists (its id is that
    /// event's, reported in an [`EngineEvent::VerificationChanged`]).
    /// Our own devices are verified to-device: `user_id` must be another user.
    pub async fn request_verification_in_room(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<OutgoingRequest, VerificationError> {
        if user_id == self.user_id() {
            return Err(FlowError::WrongState { action: "verify our own devices in a room" }.into());
        }
        let content = VerificationRequest::in_room_content(&self.our_party(), user_id);
        let request = RoomMessageRequest { room_id: room_id.to_owned(), event_type: "m.room.message".into(), content };
        Ok(self.queue(AnyOutgoingRequest::RoomMessage(request), Meta::RoomVerificationRequest(user_id.to_owned())))
    }

    /// The answer to our in-room request: the flow is named by its event.
    pub(super) fn receive_room_request_sent(
        &self,
        request: &RoomMessageRequest,
        user_id: &UserId,
        event_id: OwnedEventId,
        now: Timestamp,
    ) {
        let flow = FlowId::InRoom { room_id: request.room_id.clone(), event_id };
        let registered = lock(&self.inner.verifications).request(user_id.to_owned(), flow.clone(), Vec::new(), now);
        match registered {
            Ok(()) => self.announce_flow(user_id, &flow),
            Err(error) => tracing::warn!(%error, "dropped our in-room verification request"),
        }
    }

    /// A flow's state.
    pub fn verification_state(&self, user_id: &UserId, flow: &FlowId) -> Option<FlowState> {
        lock(&self.inner.verifications).state(user_id, flow)
    }

    /// Every flow with `user_id`, finished ones included (the most recent
    /// are kept).
    pub fn verifications_with(&self, user_id: &UserId) -> Vec<(FlowId, FlowState)> {
        lock(&self.inner.verifications).flows_with(user_id)
    }

    /// The seven SAS emoji of a flow, once keys are exchanged.
    pub fn sas_emoji(&self, user_id: &UserId, flow: &FlowId) -> Option<[SasEmoji; 7]> {
        lock(&self.inner.verifications).sas(user_id, flow)?.emoji()
    }

    /// The three SAS numbers of a flow, once keys are exchanged.
    pub fn sas_decimals(&self, user_id: &UserId, flow: &FlowId) -> Option<(u16, u16, u16)> {
        lock(&self.inner.verifications).sas(user_id, flow)?.decimals()
    }

    /// Our user accepts a request: `ready` is sent.
    pub async fn accept_verification(
        &self,
        user_id: &UserId,
        flow: &FlowId,
        now: Timestamp,
    ) -> Result<(), VerificationError> {
        let step = lock(&self.inner.verifications).accept(user_id, flow, now)?;
        self.finish_step(step, now);
        Ok(())
    }

    /// We start SAS on a ready flow.
    pub async fn start_sas(&self, user_id: &UserId, flow: &FlowId, now: Timestamp) -> Result<(), VerificationError> {
        let device = lock(&self.inner.verifications).other_device(user_id, flow);
        let keys = self.flow_keys(user_id, device.as_deref()).await?;
        let step = lock(&self.inner.verifications).start_sas(user_id, flow, keys, now)?;
        self.finish_step(step, now);
        Ok(())
    }

    /// Our user confirms: the short strings match, or (QR, showing side)
    /// the other device shows a success. A verification this finishes marks
    /// the keys verified and queues their signatures.
    pub async fn confirm_verification(
        &self,
        user_id: &UserId,
        flow: &FlowId,
        now: Timestamp,
    ) -> Result<(), VerificationError> {
        let step = lock(&self.inner.verifications).confirm(user_id, flow)?;
        self.apply_step(step, now).await?;
        Ok(())
    }

    /// Our user says the short strings (or the scanner's screen) differ:
    /// `m.mismatched_sas` / `m.key_mismatch`.
    pub async fn mismatch_verification(
        &self,
        user_id: &UserId,
        flow: &FlowId,
        now: Timestamp,
    ) -> Result<(), VerificationError> {
        let step = lock(&self.inner.verifications).mismatch(user_id, flow)?;
        self.finish_step(step, now);
        Ok(())
    }

    /// We cancel a flow (`m.user` when the user declines).
    pub async fn cancel_verification(
        &self,
        user_id: &UserId,
        flow: &FlowId,
        code: CancelCode,
        now: Timestamp,
    ) -> Result<(), VerificationError> {
        let step = lock(&self.inner.verifications).cancel(user_id, flow, code)?;
        self.finish_step(step, now);
        Ok(())
    }

    /// The QR code to show in a ready flow (the mode follows from who the
    /// other side is and whether we trust our master key), and its image.
    pub async fn generate_qr_code(
        &self,
        user_id: &UserId,
        flow: &FlowId,
        now: Timestamp,
    ) -> Result<(QrCodeData, QrImage), VerificationError> {
        let device = lock(&self.inner.verifications).other_device(user_id, flow);
        let keys = self.flow_keys(user_id, device.as_deref()).await?;
        let expected = keys.expectations.ok_or(FlowError::UnknownDevice)?;
        let missing = || FlowError::Qr("a cross-signing identity is needed to show a QR code".into());
        let data = if !expected.own_user {
            let ours = expected.our_master_key.filter(|_| expected.our_master_key_trusted).ok_or_else(missing)?;
            QrCodeData::verifying_other_user(flow, ours, expected.their_master_key.ok_or_else(missing)?)
        } else if expected.our_master_key_trusted {
            let ours = expected.our_master_key.ok_or_else(missing)?;
            QrCodeData::self_verifying_trusted(flow, ours, expected.their_device_key)
        } else {
            let master = expected.our_master_key.ok_or_else(missing)?;
            QrCodeData::self_verifying_untrusted(flow, expected.our_device_key, master)
        };
        let data = data.map_err(|e| FlowError::Qr(e.to_string()))?;
        let image = data.to_qr_code().map_err(|e| FlowError::Qr(e.to_string()))?;
        let step = lock(&self.inner.verifications).show_qr(user_id, flow, data.clone(), now)?;
        self.finish_step(step, now);
        Ok((data, image))
    }

    /// We scanned the other device's QR code (its bytes): checked against
    /// what we believe, then the secret goes back (`m.reciprocate.v1`), or
    /// the flow is cancelled with `m.key_mismatch`.
    pub async fn scan_qr_code(
        &self,
        user_id: &UserId,
        flow: &FlowId,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<(), VerificationError> {
        let data = QrCodeData::from_bytes(bytes).map_err(|e| FlowError::Qr(e.to_string()))?;
        let device = lock(&self.inner.verifications).other_device(user_id, flow);
        let keys = self.flow_keys(user_id, device.as_deref()).await?;
        let expected = keys.expectations.ok_or(FlowError::UnknownDevice)?;
        let step = lock(&self.inner.verifications).scan_qr(user_id, flow, data, expected, now)?;
        self.finish_step(step, now);
        Ok(())
    }

    /// A room event of an in-room verification (`m.room.message` with the
    /// request msgtype, or `m.key.verification.*` related to one), as the
    /// caller got it from the timeline, decrypted if it was encrypted:
    /// `{type, sender, event_id, origin_server_ts, content}`. Other events
    /// are ignored. What it changes is queued and announced.
    pub async fn receive_room_verification_event(
        &self,
        room_id: &RoomId,
        event: &Value,
        now: Timestamp,
    ) -> Result<(), VerificationError> {
        let Some((sender, flow, event_type)) = room_event_flow(room_id, event) else { return Ok(()) };
        let content = event.get("content").cloned().unwrap_or_default();
        let sent_at = Timestamp::from_millis(event.get("origin_server_ts").and_then(Value::as_u64).unwrap_or(0));
        // Our own echo belongs to the flow's user; anything else to its sender.
        let user = match sender == self.user_id() {
            true => lock(&self.inner.verifications).user_of_room_flow(&flow).unwrap_or_else(|| sender.clone()),
            false => sender.clone(),
        };
        let incoming =
            Incoming { sender: &sender, from_device: None, flow: &flow, event_type, content: &content, sent_at };
        self.receive_verification(&user, incoming, now).await
    }

    /// A to-device verification message (in the clear, or decrypted:
    /// `from_device` is then the Olm-authenticated sender device).
    pub(super) async fn receive_to_device_verification(
        &self,
        sender: &UserId,
        from_device: Option<&DeviceId>,
        event_type: &str,
        content: &Value,
        now: Timestamp,
    ) -> Result<(), VerificationError> {
        let Some(flow) = crate::verification::flow_of_to_device(content) else { return Ok(()) };
        let sent_at = Timestamp::from_millis(content.get("timestamp").and_then(Value::as_u64).unwrap_or(0));
        let incoming = Incoming { sender, from_device, flow: &flow, event_type, content, sent_at };
        self.receive_verification(sender, incoming, now).await
    }

    async fn receive_verification(
        &self,
        user: &UserId,
        incoming: Incoming<'_>,
        now: Timestamp,
    ) -> Result<(), VerificationError> {
        let known = lock(&self.inner.verifications).state(user, incoming.flow).is_some();
        let keys = if known && incoming.event_type == "m.key.verification.start" {
            let device = incoming.content.get("from_device").and_then(Value::as_str).map(OwnedDeviceId::from);
            Some(self.flow_keys(user, device.as_deref()).await?)
        } else {
            None
        };
        let step = lock(&self.inner.verifications).receive(incoming, keys, now);
        self.apply_step(step, now).await
    }

    /// The keys a step may need: ours, and those of `user`'s `device`.
    async fn flow_keys(&self, user_id: &UserId, device_id: Option<&DeviceId>) -> Result<FlowKeys, VerificationError> {
        let own = self.inner.store.get_user_identity(self.user_id()).await?;
        let own_trusted = own.as_ref().filter(|own| identity_is_verified(own, Some(own)));
        let our_master = own.as_ref().map(|own| own.master_key().key());
        let (our_device_key, _) = self.identity_keys();
        let ours = SasKeys {
            device_id: self.device_id().to_owned(),
            device_key: our_device_key,
            master_key: own_trusted.map(|own| own.master_key().key()),
        };
        let their_master = match user_id == self.user_id() {
            true => our_master,
            false => self.inner.store.get_user_identity(user_id).await?.map(|i| i.master_key().key()),
        };
        let device = match device_id {
            Some(device_id) => self.inner.store.get_device(user_id, device_id).await?.filter(|d| !d.is_deleted()),
            None => None,
        };
        let theirs = device.as_ref().map(|device| SasKeys {
            device_id: device.device_id().to_owned(),
            device_key: device.ed25519_key(),
            master_key: their_master,
        });
        let expectations = device.map(|device| ScanExpectations {
            our_master_key: our_master,
            our_master_key_trusted: own_trusted.is_some(),
            their_master_key: their_master,
            our_device_key,
            their_device_key: device.ed25519_key(),
            own_user: user_id == self.user_id(),
        });
        Ok(FlowKeys { ours, theirs, expectations })
    }

    /// Queues a step's messages and announces its change; applies its
    /// proof first, if any.
    async fn apply_step(&self, step: Step, now: Timestamp) -> Result<(), VerificationError> {
        if let Some(proof) = &step.proof {
            self.apply_proof(proof).await?;
        }
        self.finish_step(step, now);
        Ok(())
    }

    fn finish_step(&self, step: Step, _now: Timestamp) {
        self.send_verification_messages(step.messages);
        if let Some((user_id, flow)) = step.changed {
            self.announce_flow(&user_id, &flow);
        }
    }

    fn announce_flow(&self, user_id: &UserId, flow: &FlowId) {
        let state = lock(&self.inner.verifications).state(user_id, flow);
        if let Some(state) = state {
            self.announce([EngineEvent::VerificationChanged {
                user_id: user_id.to_owned(),
                flow: flow.clone(),
                state,
            }]);
        }
    }

    /// Marks what `proof` covers verified: our own master key (trusted and
    /// signed by this device), our own other device (cross-signed with our
    /// self-signing key if we hold it), another user's master key (signed
    /// with our user-signing key, if our identity is trusted and we hold
    /// it), and a device, locally verified in every case.
    async fn apply_proof(&self, proof: &VerificationProof) -> Result<(), VerificationError> {
        let user_id = proof.user_id();
        if proof.master_key().is_some() {
            match self.verify_identity_with(proof).await {
                Ok(_) => {}
                Err(error) => tracing::info!(%error, %user_id, "verified master key not signed"),
            }
        }
        if let Some((device_id, _)) = proof.device() {
            if let Some(mut device) = self.inner.store.get_device(user_id, device_id).await?
                && device.mark_verified(proof)
            {
                self.save(None, None, Changes { devices: vec![device], ..Default::default() }).await?;
                // Events refused for this sender's trust may decrypt now.
                lock(&self.inner.pending).sender_changed(&user_id.to_owned());
            }
            let holds_keys = lock(&self.inner.cross_signing).is_some();
            if user_id == self.user_id()
                && holds_keys
                && let Err(error) = self.verify_device_with(proof).await
            {
                tracing::info!(%error, %device_id, "verified device not cross-signed");
            }
        }
        Ok(())
    }

    /// Queues verification messages: to-device in the clear (one request
    /// per message), room events as room-message requests.
    fn send_verification_messages(&self, messages: Vec<VerificationMessage>) {
        for message in messages {
            match message.to {
                Recipient::Devices(user_id, devices) => {
                    let Ok(raw) = Raw::new(&message.content) else { continue };
                    let raw = raw.cast_unchecked();
                    let per_device: BTreeMap<DeviceIdOrAllDevices, _> =
                        devices.into_iter().map(|d| (DeviceIdOrAllDevices::DeviceId(d), raw.clone())).collect();
                    if per_device.is_empty() {
                        continue;
                    }
                    let messages: send_event_to_device::v3::Messages = BTreeMap::from([(user_id, per_device)]);
                    let mut requests = lock(&self.inner.requests);
                    let id = self.fresh_id(&requests);
                    let request = send_event_to_device::v3::Request::new_raw(
                        ToDeviceEventType::from(message.event_type),
                        id.clone(),
                        messages,
                    );
                    requests.push(OutgoingRequest::with_id(id, AnyOutgoingRequest::ToDevice(request)), Meta::None);
                }
                Recipient::Room(room_id) => {
                    let request =
                        RoomMessageRequest { room_id, event_type: message.event_type.into(), content: message.content };
                    self.queue(AnyOutgoingRequest::RoomMessage(request), Meta::None);
                }
            }
        }
    }

    /// The earliest deadline of a verification flow.
    pub(super) fn verification_deadline(&self) -> Option<Timestamp> {
        lock(&self.inner.verifications).next_deadline()
    }

    /// Cancels the flows whose time ran out.
    pub(super) fn handle_verification_timeouts(&self, now: Timestamp) {
        let steps = lock(&self.inner.verifications).handle_timeout(now);
        for step in steps {
            self.finish_step(step, now);
        }
    }
}

/// The sender, flow and verification type of an in-room event, if it is one.
fn room_event_flow<'a>(room_id: &RoomId, event: &'a Value) -> Option<(OwnedUserId, FlowId, &'a str)> {
    let sender = OwnedUserId::try_from(event.get("sender")?.as_str()?).ok()?;
    let event_type = event.get("type")?.as_str()?;
    let content = event.get("content")?;
    if event_type == "m.room.message" {
        if content.get("msgtype")?.as_str()? != IN_ROOM_REQUEST_MSGTYPE {
            return None;
        }
        let event_id = OwnedEventId::try_from(event.get("event_id")?.as_str()?).ok()?;
        return Some((sender, FlowId::InRoom { room_id: room_id.to_owned(), event_id }, "m.key.verification.request"));
    }
    if !event_type.starts_with("m.key.verification.") || event_type == "m.key.verification.request" {
        return None;
    }
    let related = crate::verification::related_event_of(content)?;
    let event_id = OwnedEventId::try_from(related).ok()?;
    Some((sender, FlowId::InRoom { room_id: room_id.to_owned(), event_id }, event_type))
}
