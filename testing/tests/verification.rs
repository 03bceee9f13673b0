//! Interactive verification through the engine, on the in-process server
//! and the virtual clock: SAS between two users and between one user's
//! devices, to-device and in a room; QR codes in every mode; mismatches,
//! `m.accepted`, timeouts. After success the keys are verified and the
//! cross-signing signatures are on the server.

use std::sync::Arc;
use std::time::Duration;

use hush_crypto_core::{
    identities::IdentityState,
    verification::{CancelCode, FlowId, FlowState, MethodState, QrState, RequestState, SasState},
};
use hush_testing::{TestDevice, TestServer, VirtualClock};
use ruma_common::{OwnedUserId, UserId, owned_room_id, owned_user_id};

fn alice() -> OwnedUserId {
    owned_user_id!("@alice:example.org")
}

fn bob() -> OwnedUserId {
    owned_user_id!("@bob:example.org")
}

struct World {
    server: Arc<TestServer>,
    clock: VirtualClock,
}

impl World {
    fn new() -> Self {
        Self { server: Arc::new(TestServer::new()), clock: VirtualClock::default() }
    }

    async fn device(&self, user_id: &UserId, device_id: &str) -> TestDevice {
        TestDevice::new(&self.server, &self.clock, user_id, device_id).await
    }
}

/// A few rounds of syncing (to-device and rooms) on every device.
async fn exchange(devices: &mut [&mut TestDevice]) {
    for _ in 0..4 {
        for device in devices.iter_mut() {
            device.sync().await;
            device.sync_rooms().await;
        }
    }
}

fn state(device: &TestDevice, user_id: &UserId, flow: &FlowId) -> FlowState {
    device.machine.verification_state(user_id, flow).expect("the flow is known")
}

/// The flow the device received from `user_id` (its only one).
fn received_flow(device: &TestDevice, user_id: &UserId) -> FlowId {
    let flows = device.machine.verifications_with(user_id);
    assert_eq!(flows.len(), 1, "one flow with {user_id}: {flows:?}");
    flows[0].0.clone()
}

fn sas_state(device: &TestDevice, user_id: &UserId, flow: &FlowId) -> Option<SasState> {
    match state(device, user_id, flow).method {
        Some(MethodState::Sas(sas)) => Some(sas),
        _ => None,
    }
}

async fn bootstrapped(world: &World, user_id: &UserId, device_id: &str) -> TestDevice {
    let device = world.device(user_id, device_id).await;
    device.bootstrap_cross_signing(false).await;
    device
}

/// Alice and Bob run SAS over to-device messages to the end: the same
/// emoji and numbers on both sides, both confirm, and then each side's
/// identity is verified by the other and the other's device is verified.
async fn run_sas(world: &World, a: &mut TestDevice, b: &mut TestDevice, flow: FlowId) {
    let (a_user, b_user) = (a.user_id.clone(), b.user_id.clone());
    exchange(&mut [a, b]).await;
    let b_flow = received_flow(b, &a_user);
    assert_eq!(b_flow, flow);
    assert_eq!(state(b, &a_user, &flow).request, RequestState::Requested);
    assert_eq!(state(b, &a_user, &flow).other_device.as_ref(), Some(&a.device_id), "the request names its device");
    b.machine.accept_verification(&a_user, &flow, world.clock.now()).await.unwrap();
    exchange(&mut [a, b]).await;
    assert!(matches!(state(a, &b_user, &flow).request, RequestState::Ready { .. }));
    assert_eq!(state(a, &b_user, &flow).other_device.as_ref(), Some(&b.device_id), "the answer names its device");
    a.machine.start_sas(&b_user, &flow, world.clock.now()).await.unwrap();
    exchange(&mut [a, b]).await;
    assert_eq!(sas_state(a, &b_user, &flow), Some(SasState::KeysExchanged));
    assert_eq!(sas_state(b, &a_user, &flow), Some(SasState::KeysExchanged));
    let emoji = a.machine.sas_emoji(&b_user, &flow).expect("emoji offered");
    assert_eq!(Some(emoji), b.machine.sas_emoji(&a_user, &flow));
    assert_eq!(a.machine.sas_decimals(&b_user, &flow), b.machine.sas_decimals(&a_user, &flow));
    a.machine.confirm_verification(&b_user, &flow, world.clock.now()).await.unwrap();
    b.machine.confirm_verification(&a_user, &flow, world.clock.now()).await.unwrap();
    exchange(&mut [a, b]).await;
    // Done names the device it verified (and the master key when the
    // other side covered one we know, which a new login does not).
    let verified = |state: Option<SasState>, device_id: &ruma_common::DeviceId| matches!(state, Some(SasState::Done { device: Some(d), .. }) if d == device_id);
    assert!(verified(sas_state(a, &b_user, &flow), &b.device_id), "{:?}", state(a, &b_user, &flow));
    assert!(verified(sas_state(b, &a_user, &flow), &a.device_id), "{:?}", state(b, &a_user, &flow));
}

/// Alice and Bob, bootstrapped and knowing each other's keys, with a
/// to-device request from Alice that Bob accepted.
async fn ready_between_users(world: &World) -> (TestDevice, TestDevice, FlowId) {
    let mut a = bootstrapped(world, &alice(), "A1").await;
    let mut b = bootstrapped(world, &bob(), "B1").await;
    a.refresh_keys(&[&alice(), &bob()]).await;
    b.refresh_keys(&[&alice(), &bob()]).await;
    let flow = a.machine.request_verification(&bob(), None, world.clock.now()).await.unwrap();
    exchange(&mut [&mut a, &mut b]).await;
    b.machine.accept_verification(&alice(), &flow, world.clock.now()).await.unwrap();
    exchange(&mut [&mut a, &mut b]).await;
    assert!(matches!(state(&a, &bob(), &flow).request, RequestState::Ready { .. }));
    (a, b, flow)
}

async fn device_verified(device: &TestDevice, user_id: &UserId, device_id: &str) -> bool {
    device.machine.device_trust(user_id, device_id.into()).await.unwrap().expect("known device").is_verified()
}

async fn identity_state(device: &TestDevice, user_id: &UserId) -> Option<IdentityState> {
    device.machine.get_identity(user_id).await.unwrap().map(|identity| identity.state())
}

/// SAS between Alice and Bob to-device: afterwards each side sees the
/// other's identity verified (our user-signing key signed their master
/// key, and the signature is on the server) and the other's device
/// verified.
#[tokio::test]
async fn sas_between_two_users_verifies_both_identities() {
    let world = World::new();
    let mut a = bootstrapped(&world, &alice(), "A1").await;
    let mut b = bootstrapped(&world, &bob(), "B1").await;
    a.refresh_keys(&[&alice(), &bob()]).await;
    b.refresh_keys(&[&alice(), &bob()]).await;
    assert_eq!(identity_state(&a, &bob()).await, Some(IdentityState::Unverified));
    let flow = a.machine.request_verification(&bob(), None, world.clock.now()).await.unwrap();
    a.drain().await;
    run_sas(&world, &mut a, &mut b, flow.clone()).await;
    let master_verified = |state: Option<SasState>| matches!(state, Some(SasState::Done { master_key: Some(_), .. }));
    assert!(master_verified(sas_state(&a, &bob(), &flow)), "between users, the master key is verified too");
    assert_eq!(identity_state(&a, &bob()).await, Some(IdentityState::Verified));
    assert_eq!(identity_state(&b, &alice()).await, Some(IdentityState::Verified));
    assert!(device_verified(&a, &bob(), "B1").await && device_verified(&b, &alice(), "A1").await);
    // The signature is on the server: Bob's master key carries one by
    // Alice's user-signing key.
    let bob_master = world.server.master_key(&bob()).expect("Bob's master key");
    let (_, _, alice_usk) = world.server.signing_keys(&alice()).expect("Alice's keys");
    let usk_id = alice_usk.expect("a user-signing key")["keys"].as_object().unwrap().keys().next().unwrap().clone();
    assert!(bob_master["signatures"][alice().as_str()][&usk_id].is_string(), "{bob_master}");
}

/// Self-verification: Alice's new device (no cross-signing keys) and her
/// first device run SAS. The new device then trusts her master key, the
/// first device cross-signs the new one, and Bob (who verified Alice) sees
/// the new device verified through cross-signing.
#[tokio::test]
async fn self_verification_by_sas_cross_signs_the_new_device() {
    let world = World::new();
    let mut a1 = bootstrapped(&world, &alice(), "A1").await;
    let b = bootstrapped(&world, &bob(), "B1").await;
    b.refresh_keys(&[&alice(), &bob()]).await;
    b.machine.verify_identity(&alice()).await.unwrap();
    b.drain().await;
    let mut a2 = world.device(&alice(), "A2").await;
    a2.refresh_keys(&[&alice()]).await;
    a1.refresh_keys(&[&alice()]).await;
    assert_eq!(identity_state(&a2, &alice()).await, Some(IdentityState::Unverified), "A2 does not trust it yet");
    b.refresh_keys(&[&alice()]).await;
    assert!(!device_verified(&b, &alice(), "A2").await);

    let flow = a2.machine.request_verification(&alice(), None, world.clock.now()).await.unwrap();
    a2.drain().await;
    run_sas(&world, &mut a2, &mut a1, flow).await;
    assert_eq!(identity_state(&a2, &alice()).await, Some(IdentityState::Verified), "A2 trusts the master key");
    assert!(device_verified(&a2, &alice(), "A1").await);
    b.refresh_keys(&[&alice()]).await;
    assert!(device_verified(&b, &alice(), "A2").await, "A2 is cross-signed and Bob sees it verified");
}

/// In a room: the request is an `m.room.message`, every later event
/// relates to it, and the exchange ends verified as to-device does.
#[tokio::test]
async fn sas_in_a_room_verifies_both_identities() {
    let world = World::new();
    let mut a = bootstrapped(&world, &alice(), "A1").await;
    let mut b = bootstrapped(&world, &bob(), "B1").await;
    a.refresh_keys(&[&alice(), &bob()]).await;
    b.refresh_keys(&[&alice(), &bob()]).await;
    let room = owned_room_id!("!dm:example.org");
    a.machine.request_verification_in_room(&room, &bob()).await.unwrap();
    a.drain().await;
    let flow = received_flow(&a, &bob());
    assert!(matches!(&flow, FlowId::InRoom { room_id, .. } if *room_id == room));
    run_sas(&world, &mut a, &mut b, flow).await;
    assert_eq!(identity_state(&a, &bob()).await, Some(IdentityState::Verified));
    assert_eq!(identity_state(&b, &alice()).await, Some(IdentityState::Verified));
    let events = world.server.room_events(&room, 0);
    assert!(events.iter().skip(1).all(|e| e["content"]["m.relates_to"]["event_id"] == events[0]["event_id"]));
}

/// The short strings differ: the side that says so cancels with
/// `m.mismatched_sas`, the other side learns it, nothing is verified.
/// Both users press "start SAS" on a ready flow: Bob's start reaches
/// Alice first, her engine accepts it, and her own `start_sas` then joins
/// that SAS instead of failing, so the two still see the same emoji.
#[tokio::test]
async fn starting_sas_after_the_other_side_started_joins_its_sas() {
    let world = World::new();
    let (mut a, mut b, flow) = ready_between_users(&world).await;
    b.machine.start_sas(&alice(), &flow, world.clock.now()).await.unwrap();
    exchange(&mut [&mut a, &mut b]).await;
    assert!(sas_state(&a, &bob(), &flow).is_some(), "Bob's start was accepted");
    a.machine.start_sas(&bob(), &flow, world.clock.now()).await.expect("joins the started SAS");
    exchange(&mut [&mut a, &mut b]).await;
    assert_eq!(sas_state(&a, &bob(), &flow), Some(SasState::KeysExchanged));
    let emoji = a.machine.sas_emoji(&bob(), &flow).expect("emoji offered");
    assert_eq!(Some(emoji), b.machine.sas_emoji(&alice(), &flow));
    assert!(state(&a, &bob(), &flow).cancellation().is_none());
}

#[tokio::test]
async fn a_mismatched_sas_cancels_both_sides() {
    let world = World::new();
    let (mut a, mut b, flow) = ready_between_users(&world).await;
    b.machine.start_sas(&alice(), &flow, world.clock.now()).await.unwrap();
    exchange(&mut [&mut a, &mut b]).await;
    a.machine.mismatch_verification(&bob(), &flow, world.clock.now()).await.unwrap();
    exchange(&mut [&mut a, &mut b]).await;
    for (device, other) in [(&a, bob()), (&b, alice())] {
        let cancelled = state(device, &other, &flow);
        assert!(cancelled.is_finished());
        assert_eq!(cancelled.cancellation().map(|c| c.code.clone()), Some(CancelCode::MismatchedSas));
    }
    assert_eq!(identity_state(&a, &bob()).await, Some(IdentityState::Unverified));
    assert!(!device_verified(&b, &alice(), "A1").await);
}

/// A request to all of Alice's other devices: once A2 answers, A3 is told
/// `m.accepted` and its copy of the request ends.
#[tokio::test]
async fn a_request_answered_by_one_device_is_cancelled_on_the_others() {
    let world = World::new();
    let mut a1 = bootstrapped(&world, &alice(), "A1").await;
    let mut a2 = world.device(&alice(), "A2").await;
    let mut a3 = world.device(&alice(), "A3").await;
    a1.refresh_keys(&[&alice()]).await;
    let flow = a1.machine.request_verification(&alice(), None, world.clock.now()).await.unwrap();
    exchange(&mut [&mut a1, &mut a2, &mut a3]).await;
    a2.machine.accept_verification(&alice(), &flow, world.clock.now()).await.unwrap();
    exchange(&mut [&mut a1, &mut a2, &mut a3]).await;
    assert!(matches!(state(&a1, &alice(), &flow).request, RequestState::Ready { .. }));
    let other = state(&a3, &alice(), &flow);
    assert_eq!(other.cancellation().map(|c| c.code.clone()), Some(CancelCode::Accepted));
}

/// Time is input: an unanswered request is cancelled with `m.timeout` on
/// the requester 10 minutes after it was sent, and the other side's prompt
/// is dropped after 2 minutes without a message.
#[tokio::test]
async fn an_unanswered_request_times_out_on_the_virtual_clock() {
    let world = World::new();
    let mut a = bootstrapped(&world, &alice(), "A1").await;
    let mut b = bootstrapped(&world, &bob(), "B1").await;
    a.refresh_keys(&[&bob()]).await;
    let flow = a.machine.request_verification(&bob(), None, world.clock.now()).await.unwrap();
    exchange(&mut [&mut a, &mut b]).await;
    let deadline = a.machine.poll_timeout().expect("a deadline");
    assert_eq!(deadline, world.clock.now().saturating_add(Duration::from_secs(600)));
    world.clock.advance(Duration::from_secs(121));
    exchange(&mut [&mut a, &mut b]).await;
    assert_eq!(state(&b, &alice(), &flow).cancellation().map(|c| c.code.clone()), Some(CancelCode::Timeout));
    assert_eq!(state(&a, &bob(), &flow).request, RequestState::Requested, "the prompt's end sends nothing");
    world.clock.advance(Duration::from_secs(600));
    exchange(&mut [&mut a, &mut b]).await;
    assert_eq!(state(&a, &bob(), &flow).cancellation().map(|c| c.code.clone()), Some(CancelCode::Timeout));
}

/// QR, mode 0x01 / 0x02: Alice's first device (trusting her master key)
/// shows a code; her new device scans it, checks the keys and sends the
/// secret back; the first device confirms. The new device then trusts the
/// master key and the first device cross-signs it.
#[tokio::test]
async fn a_qr_code_shown_by_the_trusted_device_verifies_the_new_one() {
    let world = World::new();
    let mut a1 = bootstrapped(&world, &alice(), "A1").await;
    let mut a2 = world.device(&alice(), "A2").await;
    a2.refresh_keys(&[&alice()]).await;
    a1.refresh_keys(&[&alice()]).await;
    let flow = a2.machine.request_verification(&alice(), None, world.clock.now()).await.unwrap();
    exchange(&mut [&mut a1, &mut a2]).await;
    a1.machine.accept_verification(&alice(), &flow, world.clock.now()).await.unwrap();
    exchange(&mut [&mut a1, &mut a2]).await;
    let (code, image) = a1.machine.generate_qr_code(&alice(), &flow, world.clock.now()).await.unwrap();
    assert!(image.width() >= 21);
    a2.machine.scan_qr_code(&alice(), &flow, &code.to_bytes(), world.clock.now()).await.unwrap();
    exchange(&mut [&mut a1, &mut a2]).await;
    assert_eq!(state(&a1, &alice(), &flow).method, Some(MethodState::Qr(QrState::Scanned)));
    a1.machine.confirm_verification(&alice(), &flow, world.clock.now()).await.unwrap();
    exchange(&mut [&mut a1, &mut a2]).await;
    assert_eq!(state(&a2, &alice(), &flow).method, Some(MethodState::Qr(QrState::Done)));
    assert_eq!(identity_state(&a2, &alice()).await, Some(IdentityState::Verified));
    a2.refresh_keys(&[&alice()]).await;
    assert!(device_verified(&a1, &alice(), "A2").await, "A1 cross-signed A2");
}

/// QR, mode 0x00 between two users: Bob scans Alice's code; both end with
/// the other's identity verified.
#[tokio::test]
async fn a_qr_code_between_two_users_verifies_both() {
    let world = World::new();
    let (mut a, mut b, flow) = ready_between_users(&world).await;
    let (code, _) = a.machine.generate_qr_code(&bob(), &flow, world.clock.now()).await.unwrap();
    b.machine.scan_qr_code(&alice(), &flow, &code.to_bytes(), world.clock.now()).await.unwrap();
    exchange(&mut [&mut a, &mut b]).await;
    a.machine.confirm_verification(&bob(), &flow, world.clock.now()).await.unwrap();
    exchange(&mut [&mut a, &mut b]).await;
    assert_eq!(identity_state(&a, &bob()).await, Some(IdentityState::Verified));
    assert_eq!(identity_state(&b, &alice()).await, Some(IdentityState::Verified));
}

/// Attack: the server swaps Bob's master key after Alice made her code.
/// Bob's device scans a code naming a master key for him that is not the
/// one he has: the keys do not match, the flow is cancelled with
/// `m.key_mismatch`, and nothing is verified on either side.
#[tokio::test]
async fn a_qr_code_with_a_foreign_key_is_refused() {
    let world = World::new();
    let (mut a, mut b, flow) = ready_between_users(&world).await;
    let (code, _) = a.machine.generate_qr_code(&bob(), &flow, world.clock.now()).await.unwrap();
    let mut bytes = code.to_bytes().to_vec();
    // The second key (what Alice believes Bob's master key is) replaced.
    let fake = vodozemac::Ed25519SecretKey::new().public_key();
    // "MATRIX", version, mode, the flow id's length and the flow id, then
    // the first key: the second key follows.
    let at = 6 + 1 + 1 + 2 + code.flow_id().len() + 32;
    bytes[at..at + 32].copy_from_slice(fake.as_bytes());
    b.machine.scan_qr_code(&alice(), &flow, &bytes, world.clock.now()).await.unwrap();
    exchange(&mut [&mut a, &mut b]).await;
    assert_eq!(state(&b, &alice(), &flow).cancellation().map(|c| c.code.clone()), Some(CancelCode::KeyMismatch));
    assert_eq!(state(&a, &bob(), &flow).cancellation().map(|c| c.code.clone()), Some(CancelCode::KeyMismatch));
    assert_eq!(identity_state(&b, &alice()).await, Some(IdentityState::Unverified));
    assert_eq!(identity_state(&a, &bob()).await, Some(IdentityState::Unverified));
}
