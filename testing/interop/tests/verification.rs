//! Interactive verification between hush and matrix-sdk-crypto 0.19.1, on
//! the wire only (to-device messages and room events through the
//! in-process server): SAS started by either side, to-device and in a
//! room; a QR code shown by either side and scanned by the other; a
//! mismatched SAS cancelled on both sides with `m.mismatched_sas`. After
//! success each side sees the other's identity verified (hush at once,
//! matrix-sdk-crypto once it queried the signatures it uploaded).
//!
//! matrix-sdk-crypto checks request timestamps against the wall clock, so
//! the virtual clock starts at the real time here.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hush_crypto_core::{
    identities::IdentityState,
    verification::{CancelCode, FlowId, FlowState, MethodState, QrState, RequestState, SasState},
};
use hush_interop::SdkDevice;
use hush_testing::{TestDevice, TestServer, VirtualClock};
use matrix_sdk_crypto::{Sas, VerificationRequest, matrix_sdk_qrcode::QrVerificationData};
use ruma::{
    OwnedUserId,
    events::key::verification::{VerificationMethod, cancel::CancelCode as SdkCancelCode},
    owned_room_id, owned_user_id,
};

fn alice() -> OwnedUserId {
    owned_user_id!("@alice:example.org")
}

fn bob() -> OwnedUserId {
    owned_user_id!("@bob:example.org")
}

fn all_methods() -> Vec<VerificationMethod> {
    vec![
        VerificationMethod::SasV1,
        VerificationMethod::QrCodeShowV1,
        VerificationMethod::QrCodeScanV1,
        VerificationMethod::ReciprocateV1,
    ]
}

/// Alice on hush and Bob on matrix-sdk-crypto, both cross-signing
/// bootstrapped and knowing each other's keys, the clock at real time.
struct Pair {
    clock: VirtualClock,
    hush: TestDevice,
    sdk: SdkDevice,
}

impl Pair {
    async fn new() -> Self {
        let server = Arc::new(TestServer::new());
        let clock = VirtualClock::default();
        let real = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970");
        clock.advance(real.saturating_sub(Duration::from_millis(clock.now().as_millis())));
        let hush = TestDevice::new(&server, &clock, &alice(), "ALICE1").await;
        hush.bootstrap_cross_signing(false).await;
        let sdk = SdkDevice::new(&server, &bob(), "BOB1").await;
        sdk.bootstrap_cross_signing(false).await;
        hush.refresh_keys(&[&alice(), &bob()]).await;
        sdk.machine.update_tracked_users([alice().as_ref(), bob().as_ref()]).await.unwrap();
        sdk.drain().await;
        Self { clock, hush, sdk }
    }

    /// A few rounds of both sides reading to-device messages and rooms.
    async fn exchange(&mut self) {
        for _ in 0..3 {
            self.hush.sync().await;
            self.hush.sync_rooms().await;
            self.sdk.sync().await;
            self.sdk.sync_rooms().await;
        }
    }

    fn hush_state(&self, flow: &FlowId) -> FlowState {
        self.hush.machine.verification_state(&bob(), flow).expect("hush knows the flow")
    }

    fn sdk_request(&self, flow: &FlowId) -> VerificationRequest {
        self.sdk.machine.get_verification_request(&alice(), flow.as_str()).expect("the sdk knows the flow")
    }

    fn sdk_sas(&self, flow: &FlowId) -> Box<Sas> {
        let found = self.sdk.machine.get_verification(&alice(), flow.as_str()).and_then(|v| v.sas_v1());
        found.unwrap_or_else(|| {
            let request = self.sdk.machine.get_verification_request(&alice(), flow.as_str()).map(|r| r.state());
            panic!("no sdk SAS; sdk request: {request:?}; hush: {:?}", self.hush_state(flow))
        })
    }

    /// Both sides agree the other is verified: hush's identity of Bob is
    /// verified, and the sdk's of Alice (after querying the signatures).
    async fn assert_verified_both_ways(&self) {
        let hush_sees = self.hush.machine.get_identity(&bob()).await.unwrap().map(|i| i.state());
        assert_eq!(hush_sees, Some(IdentityState::Verified), "hush verified Bob");
        assert!(
            self.hush.machine.device_trust(&bob(), "BOB1".into()).await.unwrap().unwrap().is_verified(),
            "hush verified Bob's device"
        );
        self.sdk.machine.mark_all_tracked_users_as_dirty().await.unwrap();
        self.sdk.drain().await;
        let sdk_sees = self.sdk.machine.get_identity(&alice(), None).await.unwrap().expect("Alice's identity");
        assert!(sdk_sees.is_verified(), "the sdk verified Alice");
        let device = self.sdk.machine.get_device(&alice(), "ALICE1".into(), None).await.unwrap().unwrap();
        assert!(device.is_verified(), "the sdk verified Alice's device");
    }

    /// Keys exchanged: the same seven emoji (by index) and numbers on both.
    fn assert_same_short_strings(&self, flow: &FlowId) {
        let sas = self.sdk_sas(flow);
        let hush_emoji = self.hush.machine.sas_emoji(&bob(), flow).expect("hush shows emoji");
        let indices: Vec<u8> = hush_emoji.iter().map(|e| e.number).collect();
        assert_eq!(Some(indices), sas.emoji_index().map(|i| i.to_vec()), "the same emoji");
        assert_eq!(self.hush.machine.sas_decimals(&bob(), flow), sas.decimals(), "the same numbers");
    }

    /// Both confirm; both end done. (The sdk forgets finished flows at its
    /// next sync: its SAS handle is kept.)
    async fn confirm_both(&mut self, flow: &FlowId) {
        let sas = self.sdk_sas(flow);
        self.hush.machine.confirm_verification(&bob(), flow, self.clock.now()).await.unwrap();
        self.hush.drain().await;
        let (requests, _) = sas.confirm().await.unwrap();
        for request in requests {
            self.sdk.send_verification(request).await;
        }
        self.exchange().await;
        assert!(matches!(self.hush_state(flow).method, Some(MethodState::Sas(SasState::Done { .. }))));
        assert!(sas.is_done(), "sdk: {:?}", sas.state());
    }
}

/// hush requests and starts SAS to-device; the sdk accepts both.
async fn hush_starts_sas(pair: &mut Pair) -> FlowId {
    let flow = ready_flow(pair).await;
    assert!(matches!(pair.hush_state(&flow).request, RequestState::Ready { .. }));
    pair.hush.machine.start_sas(&bob(), &flow, pair.clock.now()).await.unwrap();
    pair.exchange().await;
    let accept = pair.sdk_sas(&flow).accept().expect("the sdk accepts hush's start");
    pair.sdk.send_verification(accept).await;
    pair.exchange().await;
    flow
}

/// hush starts SAS over to-device messages and the sdk accepts: the same
/// short strings, both confirm, both verified.
#[tokio::test]
async fn hush_starts_sas_and_the_sdk_accepts() {
    let mut pair = Pair::new().await;
    let flow = hush_starts_sas(&mut pair).await;
    pair.assert_same_short_strings(&flow);
    pair.confirm_both(&flow).await;
    pair.assert_verified_both_ways().await;
}

/// The sdk requests and starts SAS; hush accepts the request (and, its
/// user having accepted, the start at once).
#[tokio::test]
async fn the_sdk_starts_sas_and_hush_accepts() {
    let mut pair = Pair::new().await;
    let device = pair.sdk.machine.get_device(&alice(), "ALICE1".into(), None).await.unwrap().unwrap();
    let (request, outgoing) = device.request_verification_with_methods(all_methods());
    pair.sdk.send_verification(outgoing).await;
    pair.exchange().await;
    let flow = FlowId::ToDevice(request.flow_id().as_str().to_owned());
    assert_eq!(pair.hush_state(&flow).request, RequestState::Requested);
    pair.hush.machine.accept_verification(&bob(), &flow, pair.clock.now()).await.unwrap();
    pair.exchange().await;
    assert!(request.is_ready());
    let (_, start) = request.start_sas().await.unwrap().expect("the sdk starts SAS");
    pair.sdk.send_verification(start).await;
    pair.exchange().await;
    pair.assert_same_short_strings(&flow);
    pair.confirm_both(&flow).await;
    pair.assert_verified_both_ways().await;
}

/// In a room: hush sends the request as a room message, the sdk answers
/// with related room events, SAS runs to the end.
#[tokio::test]
async fn sas_in_a_room_between_hush_and_the_sdk() {
    let mut pair = Pair::new().await;
    let room = owned_room_id!("!dm:example.org");
    pair.hush.machine.request_verification_in_room(&room, &bob()).await.unwrap();
    pair.hush.drain().await;
    pair.exchange().await;
    let flows = pair.hush.machine.verifications_with(&bob());
    let flow = flows.first().map(|(flow, _)| flow.clone()).expect("the in-room flow");
    assert!(matches!(&flow, FlowId::InRoom { .. }));
    let ready = pair.sdk_request(&flow).accept_with_methods(all_methods()).expect("a request to accept");
    pair.sdk.send_verification(ready).await;
    pair.exchange().await;
    let (_, start) = pair.sdk_request(&flow).start_sas().await.unwrap().expect("the sdk starts SAS");
    pair.sdk.send_verification(start).await;
    pair.exchange().await;
    pair.assert_same_short_strings(&flow);
    pair.confirm_both(&flow).await;
    pair.assert_verified_both_ways().await;
}

/// hush's user says the strings differ: hush cancels with
/// `m.mismatched_sas`, the sdk sees that code; nothing is verified.
#[tokio::test]
async fn a_mismatch_on_hush_cancels_the_sdk_with_mismatched_sas() {
    let mut pair = Pair::new().await;
    let flow = hush_starts_sas(&mut pair).await;
    let sas = pair.sdk_sas(&flow);
    pair.hush.machine.mismatch_verification(&bob(), &flow, pair.clock.now()).await.unwrap();
    pair.exchange().await;
    let info = sas.cancel_info().expect("the sdk's SAS is cancelled");
    assert_eq!(info.cancel_code(), &SdkCancelCode::MismatchedSas);
    assert!(!info.cancelled_by_us());
    let hush_sees = pair.hush.machine.get_identity(&bob()).await.unwrap().map(|i| i.state());
    assert_eq!(hush_sees, Some(IdentityState::Unverified));
}

/// The sdk's user says the strings differ: hush learns `m.mismatched_sas`.
#[tokio::test]
async fn a_mismatch_on_the_sdk_cancels_hush_with_mismatched_sas() {
    let mut pair = Pair::new().await;
    let flow = hush_starts_sas(&mut pair).await;
    let cancel = pair.sdk_sas(&flow).cancel_with_code(SdkCancelCode::MismatchedSas).expect("a cancel");
    pair.sdk.send_verification(cancel).await;
    pair.exchange().await;
    let cancelled = pair.hush_state(&flow).cancellation().cloned().expect("hush's flow is cancelled");
    assert_eq!(cancelled.code, CancelCode::MismatchedSas);
    assert!(!cancelled.by_us);
}

/// A ready to-device flow, requested by hush and accepted by the sdk.
async fn ready_flow(pair: &mut Pair) -> FlowId {
    let flow = pair.hush.machine.request_verification(&bob(), None, pair.clock.now()).await.unwrap();
    pair.exchange().await;
    let ready = pair.sdk_request(&flow).accept_with_methods(all_methods()).expect("a request to accept");
    pair.sdk.send_verification(ready).await;
    pair.exchange().await;
    flow
}

/// hush shows a QR code (mode 0x00); the sdk scans its bytes and sends the
/// secret back; hush's user confirms; both verified.
#[tokio::test]
async fn a_qr_code_shown_by_hush_is_scanned_by_the_sdk() {
    let mut pair = Pair::new().await;
    let flow = ready_flow(&mut pair).await;
    let (code, _) = pair.hush.machine.generate_qr_code(&bob(), &flow, pair.clock.now()).await.unwrap();
    let data = QrVerificationData::from_bytes(code.to_bytes().as_slice()).expect("the sdk decodes hush's code");
    let qr = pair.sdk_request(&flow).scan_qr_code(data).await.expect("keys match").expect("ready");
    pair.sdk.send_verification(qr.reciprocate().expect("reciprocated")).await;
    pair.exchange().await;
    assert_eq!(pair.hush_state(&flow).method, Some(MethodState::Qr(QrState::Scanned)));
    pair.hush.machine.confirm_verification(&bob(), &flow, pair.clock.now()).await.unwrap();
    pair.exchange().await;
    assert!(qr.is_done(), "sdk: {:?}", qr.state());
    pair.assert_verified_both_ways().await;
}

/// The sdk shows a QR code; hush scans its bytes, sends the secret back;
/// the sdk's user confirms the scan; both verified.
#[tokio::test]
async fn a_qr_code_shown_by_the_sdk_is_scanned_by_hush() {
    let mut pair = Pair::new().await;
    let flow = ready_flow(&mut pair).await;
    let qr = pair.sdk_request(&flow).generate_qr_code().await.unwrap().expect("the sdk shows a code");
    let bytes = qr.to_bytes().expect("bytes");
    pair.hush.machine.scan_qr_code(&bob(), &flow, &bytes, pair.clock.now()).await.unwrap();
    pair.exchange().await;
    assert!(qr.has_been_scanned(), "sdk: {:?}", qr.state());
    pair.sdk.send_verification(qr.confirm_scanning().expect("scanned")).await;
    pair.exchange().await;
    assert_eq!(pair.hush_state(&flow).method, Some(MethodState::Qr(QrState::Done)));
    assert!(qr.is_done(), "sdk: {:?}", qr.state());
    pair.assert_verified_both_ways().await;
}
