//! Interactive verification in the client: requests to a user, one device
//! or a DM room; [`VerificationRequest`] and [`Sas`] handles around the
//! engine's flows; a stream of [`VerificationUpdate`]s. Every action runs
//! the drive loop, so its messages are on the server when it returns.

use hush_crypto_core::verification::{
    CancelCode, FlowId, FlowState, MethodState, QrCodeData, QrImage, RequestState, SasEmoji, SasState,
};
use ruma_common::{DeviceId, OwnedUserId, UserId};
use tokio::sync::broadcast;

use crate::{Client, ClientError, Encryption, Room};

/// How many updates a slow subscriber may fall behind before it misses some.
pub(crate) const UPDATE_CAPACITY: usize = 256;

/// A flow appeared or changed.
#[derive(Clone, Debug)]
pub struct VerificationUpdate {
    /// The other user.
    pub user_id: OwnedUserId,
    /// The flow.
    pub flow: FlowId,
    /// Where it stands.
    pub state: FlowState,
}

impl VerificationUpdate {
    /// Whether this is a new request from someone else, to show the user.
    pub fn is_incoming_request(&self) -> bool {
        !self.state.we_requested && self.state.request == RequestState::Requested && self.state.method.is_none()
    }
}

impl Encryption {
    /// Asks `user_id` to verify, on all their devices (our own other devices
    /// when `user_id` is us).
    pub async fn request_verification(&self, user_id: &UserId) -> Result<VerificationRequest, ClientError> {
        let machine = self.client.olm_machine()?;
        let flow = machine.request_verification(user_id, None, self.client.now()).await?;
        self.client.settle().await?;
        Ok(VerificationRequest { client: self.client.clone(), user_id: user_id.to_owned(), flow })
    }

    /// Asks one device to verify.
    pub async fn request_device_verification(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<VerificationRequest, ClientError> {
        let machine = self.client.olm_machine()?;
        let flow = machine.request_verification(user_id, Some(vec![device_id.to_owned()]), self.client.now()).await?;
        self.client.settle().await?;
        Ok(VerificationRequest { client: self.client.clone(), user_id: user_id.to_owned(), flow })
    }

    /// Asks `user_id` to verify in `room` (a DM): the request is a room
    /// message, encrypted if the room is.
    pub async fn request_verification_in_room(
        &self,
        room: &Room,
        user_id: &UserId,
    ) -> Result<VerificationRequest, ClientError> {
        let machine = self.client.olm_machine()?;
        let before = machine.verifications_with(user_id);
        machine.request_verification_in_room(room.room_id(), user_id).await?;
        self.client.settle().await?;
        let flow = machine
            .verifications_with(user_id)
            .into_iter()
            .map(|(flow, _)| flow)
            .find(|flow| flow.room_id() == Some(room.room_id().as_ref()) && !before.iter().any(|(f, _)| f == flow))
            .ok_or_else(|| ClientError::Internal("the in-room verification request was not queued".into()))?;
        Ok(VerificationRequest { client: self.client.clone(), user_id: user_id.to_owned(), flow })
    }

    /// A flow we know, by its other user and id (e.g. from an update).
    pub fn get_verification_request(&self, user_id: &UserId, flow: &FlowId) -> Option<VerificationRequest> {
        let machine = self.client.olm_machine().ok()?;
        machine.verification_state(user_id, flow)?;
        Some(VerificationRequest { client: self.client.clone(), user_id: user_id.to_owned(), flow: flow.clone() })
    }

    /// Every update of every flow from now on: incoming requests, and each
    /// change of state.
    pub fn verification_updates(&self) -> broadcast::Receiver<VerificationUpdate> {
        self.client.inner.verification_updates.subscribe()
    }
}

impl Client {
    /// Runs the drive loop and sends queued room events (under the store
    /// lock, if the store is shared).
    pub(crate) async fn settle(&self) -> Result<(), ClientError> {
        // A verification step needs its messages out; a request that only
        // follows one (a signature upload) fails alone.
        self.with_store_lock(async {
            self.drive().await?.verification_result()?;
            self.send_room_messages().await?;
            self.drive().await?.verification_result()
        })
        .await
    }
}

/// One verification flow with another user (or our own other device).
#[derive(Clone, Debug)]
pub struct VerificationRequest {
    client: Client,
    user_id: OwnedUserId,
    flow: FlowId,
}

impl VerificationRequest {
    /// The other user.
    pub fn other_user(&self) -> &UserId {
        &self.user_id
    }

    /// The flow.
    pub fn flow(&self) -> &FlowId {
        &self.flow
    }

    /// The other user's device in this flow, once known (`None` while a
    /// request to all of a user's devices is unanswered).
    pub fn other_device(&self) -> Option<ruma_common::OwnedDeviceId> {
        self.state()?.other_device
    }

    /// Where it stands (`None` if the engine forgot it, e.g. after a restart).
    pub fn state(&self) -> Option<FlowState> {
        self.client.olm_machine().ok()?.verification_state(&self.user_id, &self.flow)
    }

    /// Accepts an incoming request (`ready`). The requester's devices are
    /// fetched first: the keys of the device we verify must be known when
    /// its `start` comes (a requester we share no room with is not tracked).
    pub async fn accept(&self) -> Result<(), ClientError> {
        self.client.encryption().refresh_user_keys(&[&self.user_id]).await?;
        self.client.olm_machine()?.accept_verification(&self.user_id, &self.flow, self.client.now()).await?;
        self.client.settle().await
    }

    /// Starts SAS on a ready request.
    pub async fn start_sas(&self) -> Result<Sas, ClientError> {
        self.client.olm_machine()?.start_sas(&self.user_id, &self.flow, self.client.now()).await?;
        self.client.settle().await?;
        Ok(self.sas())
    }

    /// The SAS of this flow (started by either side).
    pub fn sas(&self) -> Sas {
        Sas { request: self.clone() }
    }

    /// A QR code for the other device to scan: its bytes and image.
    pub async fn generate_qr_code(&self) -> Result<(QrCodeData, QrImage), ClientError> {
        let code = self.client.olm_machine()?.generate_qr_code(&self.user_id, &self.flow, self.client.now()).await?;
        self.client.settle().await?;
        Ok(code)
    }

    /// The other device's QR code, as scanned bytes: checked, then the
    /// secret goes back (or the flow is cancelled with `m.key_mismatch`).
    pub async fn scan_qr_code(&self, bytes: &[u8]) -> Result<(), ClientError> {
        self.client.olm_machine()?.scan_qr_code(&self.user_id, &self.flow, bytes, self.client.now()).await?;
        self.client.settle().await
    }

    /// Showing side: the other device shows a success after scanning.
    pub async fn confirm_qr_scanned(&self) -> Result<(), ClientError> {
        self.client.olm_machine()?.confirm_verification(&self.user_id, &self.flow, self.client.now()).await?;
        self.client.settle().await
    }

    /// Showing side: the other device does not show a success after
    /// scanning (`m.key_mismatch`).
    pub async fn qr_mismatch(&self) -> Result<(), ClientError> {
        self.client.olm_machine()?.mismatch_verification(&self.user_id, &self.flow, self.client.now()).await?;
        self.client.settle().await
    }

    /// Cancels (`m.user`).
    pub async fn cancel(&self) -> Result<(), ClientError> {
        self.client
            .olm_machine()?
            .cancel_verification(&self.user_id, &self.flow, CancelCode::User, self.client.now())
            .await?;
        self.client.settle().await
    }

    /// Whether it ended verified.
    pub fn is_done(&self) -> bool {
        matches!(
            self.state().and_then(|s| s.method),
            Some(
                MethodState::Sas(SasState::Done { .. })
                    | MethodState::Qr(hush_crypto_core::verification::QrState::Done)
            )
        )
    }
}

/// The SAS exchange of a flow.
#[derive(Clone, Debug)]
pub struct Sas {
    request: VerificationRequest,
}

impl Sas {
    /// Where it stands.
    pub fn state(&self) -> Option<SasState> {
        match self.request.state()?.method? {
            MethodState::Sas(state) => Some(state),
            MethodState::Qr(_) => None,
        }
    }

    /// The seven emoji to compare, once keys are exchanged.
    pub fn emoji(&self) -> Option<[SasEmoji; 7]> {
        self.request.client.olm_machine().ok()?.sas_emoji(&self.request.user_id, &self.request.flow)
    }

    /// The three numbers to compare, once keys are exchanged.
    pub fn decimals(&self) -> Option<(u16, u16, u16)> {
        self.request.client.olm_machine().ok()?.sas_decimals(&self.request.user_id, &self.request.flow)
    }

    /// The user says they match.
    pub async fn confirm(&self) -> Result<(), ClientError> {
        let request = &self.request;
        request
            .client
            .olm_machine()?
            .confirm_verification(&request.user_id, &request.flow, request.client.now())
            .await?;
        request.client.settle().await
    }

    /// The user says they differ (`m.mismatched_sas`).
    pub async fn mismatch(&self) -> Result<(), ClientError> {
        let request = &self.request;
        request
            .client
            .olm_machine()?
            .mismatch_verification(&request.user_id, &request.flow, request.client.now())
            .await?;
        request.client.settle().await
    }

    /// Cancels (`m.user`).
    pub async fn cancel(&self) -> Result<(), ClientError> {
        self.request.cancel().await
    }

    /// Whether it ended verified.
    pub fn is_done(&self) -> bool {
        matches!(self.state(), Some(SasState::Done { .. }))
    }
}
