//! QR code verification as two state machines: each state and transition
//! of the showing and the scanning side, full shower–scanner round trips
//! in all three modes, and hostile messages. (The payload's and the
//! image's own tests are at the end of their files.)

use proptest::prelude::*;
use ruma_common::{owned_device_id, owned_event_id, owned_room_id, owned_user_id};
use serde_json::{Value, json};
use vodozemac::Ed25519PublicKey;
use zeroize::Zeroizing;

use super::{
    machine::{QR_TIMEOUT, QrState, QrVerification, ScanExpectations},
    payload::{QrCodeData, QrError, QrMode},
};
use crate::{
    Timestamp,
    verification::{CancelCode, Cancellation, FlowId, Party, ProofMethod, VerificationProof, sas::Outgoing},
};

const START: &str = "m.key.verification.start";
const DONE: &str = "m.key.verification.done";
const CANCEL: &str = "m.key.verification.cancel";

fn key(seed: u8) -> Ed25519PublicKey {
    vodozemac::Ed25519SecretKey::from_slice(&[seed; 32]).public_key()
}

/// Alice's master key, her devices' keys, Bob's.
fn alice_master() -> Ed25519PublicKey {
    key(10)
}
fn alice_key() -> Ed25519PublicKey {
    key(1)
}
fn alice2_key() -> Ed25519PublicKey {
    key(2)
}
fn bob_master() -> Ed25519PublicKey {
    key(20)
}
fn bob_key() -> Ed25519PublicKey {
    key(3)
}
/// A key nobody honest has: the server's or an attacker's.
fn made_up() -> Ed25519PublicKey {
    key(99)
}

/// Alice's device that trusts her master key.
fn alice() -> Party {
    Party { user_id: owned_user_id!("@alice:example.org"), device_id: owned_device_id!("ALICE") }
}

/// Alice's new device, which does not trust her master key yet.
fn alice2() -> Party {
    Party { user_id: owned_user_id!("@alice:example.org"), device_id: owned_device_id!("ALICE2") }
}

fn bob() -> Party {
    Party { user_id: owned_user_id!("@bob:example.org"), device_id: owned_device_id!("BOB") }
}

fn flow() -> FlowId {
    FlowId::ToDevice("flow-1".into())
}

fn in_room() -> FlowId {
    FlowId::InRoom { room_id: owned_room_id!("!dm:example.org"), event_id: owned_event_id!("$request") }
}

fn now() -> Timestamp {
    Timestamp::from_millis(1_000_000)
}

fn secret() -> Zeroizing<Vec<u8>> {
    Zeroizing::new((0x20..0x30).collect())
}

/// One mode's set-up: who shows what to whom, and what the scanner believes.
struct Case {
    shower: Party,
    scanner: Party,
    data: QrCodeData,
    expected: ScanExpectations,
}

/// Mode 0x00: Bob shows, Alice scans.
fn other_user(flow: &FlowId) -> Case {
    Case {
        shower: bob(),
        scanner: alice(),
        data: QrCodeData::verifying_other_user(flow, bob_master(), alice_master()).unwrap(),
        expected: ScanExpectations {
            our_master_key: Some(alice_master()),
            our_master_key_trusted: true,
            their_master_key: Some(bob_master()),
            our_device_key: alice_key(),
            their_device_key: bob_key(),
            own_user: false,
        },
    }
}

/// Mode 0x01: Alice's trusting device shows, her new device scans.
fn self_trusted(flow: &FlowId) -> Case {
    Case {
        shower: alice(),
        scanner: alice2(),
        data: QrCodeData::self_verifying_trusted(flow, alice_master(), alice2_key()).unwrap(),
        expected: ScanExpectations {
            our_master_key: Some(alice_master()),
            our_master_key_trusted: false,
            their_master_key: Some(alice_master()),
            our_device_key: alice2_key(),
            their_device_key: alice_key(),
            own_user: true,
        },
    }
}

/// Mode 0x02: Alice's new device shows, her trusting device scans.
fn self_untrusted(flow: &FlowId) -> Case {
    Case {
        shower: alice2(),
        scanner: alice(),
        data: QrCodeData::self_verifying_untrusted(flow, alice2_key(), alice_master()).unwrap(),
        expected: ScanExpectations {
            our_master_key: Some(alice_master()),
            our_master_key_trusted: true,
            their_master_key: Some(alice_master()),
            our_device_key: alice_key(),
            their_device_key: alice2_key(),
            own_user: true,
        },
    }
}

fn cases(flow: &FlowId) -> [Case; 3] {
    [other_user(flow), self_trusted(flow), self_untrusted(flow)]
}

fn show(case: &Case) -> QrVerification {
    QrVerification::show(case.shower.clone(), case.scanner.clone(), flow(), case.data.clone(), now()).unwrap()
}

fn scan(case: &Case, expected: ScanExpectations) -> Result<(QrVerification, Outgoing), Cancellation> {
    QrVerification::scan(case.scanner.clone(), case.shower.clone(), flow(), case.data.clone(), expected, now())
}

fn reciprocate(flow: &FlowId, device: &str, secret: &[u8]) -> Value {
    flow.wrap(
        json!({ "method": "m.reciprocate.v1", "from_device": device, "secret": vodozemac::base64_encode(secret) }),
    )
}

/// The scanner's honest `start` for `case`.
fn right_start(case: &Case) -> Value {
    reciprocate(&flow(), case.scanner.device_id.as_str(), case.data.secret())
}

fn single(mut outgoing: Vec<Outgoing>, event_type: &str) -> Outgoing {
    assert_eq!(outgoing.len(), 1, "{outgoing:?}");
    let message = outgoing.remove(0);
    assert_eq!(message.event_type, event_type);
    message
}

fn cancelled_with(verification: &QrVerification, code: CancelCode, by_us: bool) {
    match verification.state() {
        QrState::Cancelled(cancellation) => {
            assert_eq!((cancellation.code, cancellation.by_us), (code, by_us));
        }
        other => panic!("expected a cancellation, got {other:?}"),
    }
    assert!(verification.proof().is_none());
}

/// Our cancel with `code`, sent, and the state cancelled.
fn sends_cancel(verification: &QrVerification, outgoing: Vec<Outgoing>, code: CancelCode) {
    let cancel = single(outgoing, CANCEL);
    assert_eq!(cancel.content["code"], code.as_str());
    assert!(verification.flow().named_by(&cancel.content));
    cancelled_with(verification, code, true);
}

fn master_proof(proof: &VerificationProof, user: &Party, master: Ed25519PublicKey) {
    assert_eq!(proof.user_id(), user.user_id);
    assert_eq!((proof.master_key(), proof.device()), (Some(master), None));
    assert_eq!(proof.method(), ProofMethod::QrCode);
}

fn device_proof(proof: &VerificationProof, device: &Party, device_key: Ed25519PublicKey) {
    assert!(proof.covers_device(&device.user_id, &device.device_id, device_key));
    assert_eq!(proof.master_key(), None);
    assert_eq!(proof.method(), ProofMethod::QrCode);
}

/// Neither a code's nor an image's nor a verification's `Debug` shows the
/// secret, in any of the forms a log line could carry it.
#[test]
fn debug_never_prints_the_secret() {
    let data = QrCodeData::new(QrMode::VerifyingAnotherUser, "f".into(), key(1), key(2), secret()).unwrap();
    let verification = QrVerification::show(bob(), alice(), FlowId::ToDevice("f".into()), data.clone(), now()).unwrap();
    let image = data.to_qr_code().unwrap();
    let printed = format!("{data:?} {image:?} {verification:?}");
    let forms = [vodozemac::base64_encode(data.secret()), format!("{:?}", data.secret()), "32, 33, 34".into()];
    for form in forms {
        assert!(!printed.contains(&form), "{printed} contains {form}");
    }
    assert!(printed.contains("QrCodeData") && printed.contains("width"));
}

// ---------------------------------------------------------- showing side

/// Shown, scanned with the right secret, confirmed: done, the `done` is
/// sent, and the proof names the key the scanner vouched for.
#[test]
fn shown_scanned_confirmed_is_done_with_proof() {
    let case = other_user(&flow());
    let mut shower = show(&case);
    assert_eq!(
        (shower.state(), shower.poll_timeout()),
        (QrState::WaitingForScan, Some(now().saturating_add(QR_TIMEOUT)))
    );
    assert!(shower.confirm().is_empty(), "nothing to confirm before the scan");
    assert!(shower.receive(START, &right_start(&case), now()).is_empty());
    assert_eq!(shower.state(), QrState::Scanned);
    assert!(shower.proof().is_none(), "the secret alone proves nothing until our user confirms");
    let done = single(shower.confirm(), DONE);
    assert_eq!(done.content, json!({ "transaction_id": "flow-1" }));
    assert_eq!((shower.state(), shower.poll_timeout()), (QrState::Done, None));
    master_proof(&shower.proof().unwrap(), &alice(), alice_master());
    assert!(shower.confirm().is_empty(), "confirming twice sends nothing more");
}

/// The showing side's proof in each mode is the code's second key: the
/// other user's master key, the other device's key, our own master key.
#[test]
fn the_showers_proof_is_the_second_key_in_each_mode() {
    let [other, trusted, untrusted] = cases(&flow());
    let proof = |case: &Case| {
        let mut shower = show(case);
        shower.receive(START, &right_start(case), now());
        single(shower.confirm(), DONE);
        shower.proof().unwrap()
    };
    master_proof(&proof(&other), &alice(), alice_master());
    device_proof(&proof(&trusted), &alice2(), alice2_key());
    master_proof(&proof(&untrusted), &alice2(), alice_master());
}

/// `show` refuses a code made for another flow, and a mode that does not
/// fit the parties (a self-verification mode towards another user, or
/// the other way round).
#[test]
fn show_refuses_a_code_for_another_flow_or_the_wrong_parties() {
    let case = other_user(&FlowId::ToDevice("flow-2".into()));
    let shown = QrVerification::show(bob(), alice(), flow(), case.data, now());
    assert!(matches!(shown, Err(QrError::FlowMismatch { .. })));
    let trusted = self_trusted(&flow()).data;
    let shown = QrVerification::show(alice(), bob(), flow(), trusted, now());
    assert_eq!(
        shown.unwrap_err(),
        QrError::ModeDoesNotFit { mode: QrMode::SelfVerifyingMasterKeyTrusted, own_user: false }
    );
    let other = other_user(&flow()).data;
    let shown = QrVerification::show(alice(), alice2(), flow(), other, now());
    assert_eq!(shown.unwrap_err(), QrError::ModeDoesNotFit { mode: QrMode::VerifyingAnotherUser, own_user: true });
}

/// Attack: a device that never saw the code (a stale or guessed secret)
/// claims to have scanned it. The shower cancels with `m.key_mismatch`
/// and its user is never asked.
#[test]
fn a_wrong_secret_cancels_with_key_mismatch() {
    let case = other_user(&flow());
    for wrong in [Vec::new(), vec![0u8; 16], case.data.secret()[..15].to_vec(), [case.data.secret(), &[0]].concat()] {
        let mut shower = show(&case);
        let out = shower.receive(START, &reciprocate(&flow(), "ALICE", &wrong), now());
        sends_cancel(&shower, out, CancelCode::KeyMismatch);
        assert!(shower.confirm().is_empty());
    }
}

/// Malformed `start`s cancel with `m.invalid_message`; another method with
/// `m.unknown_method`.
#[test]
fn a_malformed_start_or_another_method_is_refused() {
    let case = other_user(&flow());
    let secret = vodozemac::base64_encode(case.data.secret());
    let invalid = [
        json!({ "from_device": "ALICE", "secret": secret }),
        json!({ "method": 7, "from_device": "ALICE", "secret": secret }),
        json!({ "method": "m.reciprocate.v1", "secret": secret }),
        json!({ "method": "m.reciprocate.v1", "from_device": "MALLORY", "secret": secret }),
        json!({ "method": "m.reciprocate.v1", "from_device": "ALICE" }),
        json!({ "method": "m.reciprocate.v1", "from_device": "ALICE", "secret": ["x"] }),
        json!({ "method": "m.reciprocate.v1", "from_device": "ALICE", "secret": "not base64!" }),
        json!({ "method": "m.reciprocate.v1", "from_device": "ALICE", "secret": "A".repeat(100_000) }),
    ];
    for content in invalid {
        let mut shower = show(&case);
        let out = shower.receive(START, &flow().wrap(content.clone()), now());
        sends_cancel(&shower, out, CancelCode::InvalidMessage);
    }
    let mut shower = show(&case);
    let sas = flow().wrap(json!({ "method": "m.sas.v1", "from_device": "ALICE", "secret": secret }));
    let out = shower.receive(START, &sas, now());
    sends_cancel(&shower, out, CancelCode::UnknownMethod);
}

/// Out-of-order messages cancel with `m.unexpected_message`: anything but a
/// `start` before the scan, a second `start` after it.
#[test]
fn unexpected_messages_cancel_the_shower() {
    let case = other_user(&flow());
    for event_type in [DONE, "m.key.verification.accept", "m.key.verification.key", "m.key.verification.mac", "x"] {
        let mut shower = show(&case);
        let out = shower.receive(event_type, &flow().wrap(json!({})), now());
        sends_cancel(&shower, out, CancelCode::UnexpectedMessage);
    }
    let mut shower = show(&case);
    shower.receive(START, &right_start(&case), now());
    let out = shower.receive(START, &right_start(&case), now());
    sends_cancel(&shower, out, CancelCode::UnexpectedMessage);
}

/// The spec lets either side send `done` first: the scanner's `done`
/// before our user confirmed is accepted and changes nothing.
#[test]
fn their_done_before_our_confirmation_is_accepted() {
    let case = other_user(&flow());
    let mut shower = show(&case);
    shower.receive(START, &right_start(&case), now());
    assert!(shower.receive(DONE, &flow().wrap(json!({})), now()).is_empty());
    assert_eq!(shower.state(), QrState::Scanned);
    assert!(shower.proof().is_none(), "their done proves nothing: our user has not confirmed");
    single(shower.confirm(), DONE);
    assert!(shower.proof().is_some());
}

/// In `Scanned`, our user's "no" cancels with `m.key_mismatch`, a plain
/// cancel with `m.user`; neither leaves a proof.
#[test]
fn mismatch_or_cancel_after_the_scan() {
    let case = other_user(&flow());
    for (code, mismatch) in [(CancelCode::KeyMismatch, true), (CancelCode::User, false)] {
        let mut shower = show(&case);
        shower.receive(START, &right_start(&case), now());
        let out = if mismatch { shower.mismatch() } else { shower.cancel(CancelCode::User) };
        sends_cancel(&shower, out, code);
        assert!(shower.confirm().is_empty());
    }
}

// --------------------------------------------------------- scanning side

/// A code whose keys match in each mode: the `start` to send is the spec's
/// `m.reciprocate.v1` content with the code's secret, wrapped for the flow.
#[test]
fn scanning_each_mode_with_matching_keys_reciprocates() {
    for case in cases(&flow()) {
        let (scanner, start) = scan(&case, case.expected.clone()).unwrap();
        assert_eq!(start.event_type, START);
        let expected = json!({
            "method": "m.reciprocate.v1",
            "from_device": case.scanner.device_id,
            "secret": vodozemac::base64_encode(case.data.secret()),
            "transaction_id": "flow-1",
        });
        assert_eq!(start.content, expected);
        assert_eq!(scanner.state(), QrState::Reciprocated);
        assert!(scanner.proof().is_none(), "nothing is proven before their done");
    }
}

/// Attack (mode 0x00): the server lists a made-up master key for the other
/// user, or for us, or we have none, or we do not trust ours (a made-up
/// one we would vouch for), or the code holds a made-up key. Each is
/// refused with `m.key_mismatch` before anything is sent.
#[test]
fn another_users_code_with_any_wrong_key_is_refused() {
    let case = other_user(&flow());
    let e = &case.expected;
    let variants = [
        ScanExpectations { their_master_key: Some(made_up()), ..e.clone() },
        ScanExpectations { their_master_key: None, ..e.clone() },
        ScanExpectations { our_master_key: Some(made_up()), ..e.clone() },
        ScanExpectations { our_master_key: None, ..e.clone() },
        ScanExpectations { our_master_key_trusted: false, ..e.clone() },
    ];
    refused(&case, &variants);
    refused_code_keys(&case);
}

/// Attack (mode 0x01): the code's master key is not the one the server
/// lists for us, or the shower believes another key is ours.
#[test]
fn a_trusting_devices_code_with_any_wrong_key_is_refused() {
    let case = self_trusted(&flow());
    let e = &case.expected;
    let variants = [
        ScanExpectations { our_master_key: Some(made_up()), ..e.clone() },
        ScanExpectations { our_master_key: None, ..e.clone() },
        ScanExpectations { our_device_key: made_up(), ..e.clone() },
    ];
    refused(&case, &variants);
    refused_code_keys(&case);
}

/// Attack (mode 0x02): the code's device key is not the one the server
/// lists for the shower, its master key is not ours, or we do not trust
/// our master key (then nobody does, and nothing can be vouched for).
#[test]
fn an_untrusting_devices_code_with_any_wrong_key_is_refused() {
    let case = self_untrusted(&flow());
    let e = &case.expected;
    let variants = [
        ScanExpectations { their_device_key: made_up(), ..e.clone() },
        ScanExpectations { our_master_key: Some(made_up()), ..e.clone() },
        ScanExpectations { our_master_key: None, ..e.clone() },
        ScanExpectations { our_master_key_trusted: false, ..e.clone() },
    ];
    refused(&case, &variants);
    refused_code_keys(&case);
}

fn refused(case: &Case, variants: &[ScanExpectations]) {
    for expected in variants {
        let refused = scan(case, expected.clone()).unwrap_err();
        assert_eq!((refused.code, refused.by_us), (CancelCode::KeyMismatch, true), "{expected:?}");
    }
}

/// The code with each of its keys replaced by a made-up one is refused.
fn refused_code_keys(case: &Case) {
    let d = &case.data;
    let secret = Zeroizing::new(d.secret().to_vec());
    let first = QrCodeData::new(d.mode(), d.flow_id().into(), made_up(), d.second_key(), secret.clone()).unwrap();
    let second = QrCodeData::new(d.mode(), d.flow_id().into(), d.first_key(), made_up(), secret).unwrap();
    for data in [first, second] {
        let scanned =
            QrVerification::scan(case.scanner.clone(), case.shower.clone(), flow(), data, case.expected.clone(), now());
        assert_eq!(scanned.unwrap_err().code, CancelCode::KeyMismatch);
    }
}

/// A code whose mode does not fit the parties is refused: a
/// self-verification code from another user (which would have us trust
/// their key as our master key), another-user mode from our own device,
/// or expectations whose `own_user` disagrees with the parties.
#[test]
fn a_mode_that_does_not_fit_the_parties_is_refused() {
    let trusted = self_trusted(&flow());
    let from_bob = QrVerification::scan(alice2(), bob(), flow(), trusted.data.clone(), trusted.expected.clone(), now());
    assert_eq!(from_bob.unwrap_err().code, CancelCode::KeyMismatch);
    let other = other_user(&flow());
    let own = ScanExpectations { own_user: true, ..other.expected.clone() };
    assert_eq!(
        QrVerification::scan(alice(), alice2(), flow(), other.data.clone(), own, now()).unwrap_err().code,
        CancelCode::KeyMismatch
    );
    let disagreeing = ScanExpectations { own_user: true, ..other.expected.clone() };
    assert_eq!(scan(&other, disagreeing).unwrap_err().code, CancelCode::KeyMismatch);
    let untrusted = self_untrusted(&flow());
    let disagreeing = ScanExpectations { own_user: false, ..untrusted.expected.clone() };
    assert_eq!(scan(&untrusted, disagreeing).unwrap_err().code, CancelCode::KeyMismatch);
}

/// Attack: a code shown for another flow (another verification, perhaps
/// with someone else) is refused.
#[test]
fn a_code_for_another_flow_is_refused() {
    for case in cases(&FlowId::ToDevice("flow-2".into())) {
        assert_eq!(scan(&case, case.expected.clone()).unwrap_err().code, CancelCode::KeyMismatch);
    }
}

/// Attack (mode 0x01): the server lists a made-up key for the showing
/// device. The code does not hold that key, so the scanner's proof names
/// the master key only, never the device.
#[test]
fn a_server_made_device_key_is_not_proven_in_mode_1() {
    let case = self_trusted(&flow());
    let expected = ScanExpectations { their_device_key: made_up(), ..case.expected.clone() };
    let (mut scanner, _) = scan(&case, expected).unwrap();
    single(scanner.receive(DONE, &flow().wrap(json!({})), now()), DONE);
    let proof = scanner.proof().unwrap();
    master_proof(&proof, &alice(), alice_master());
    assert!(!proof.covers_device(&alice().user_id, &alice().device_id, made_up()));
}

/// Out-of-order messages to the scanner cancel with `m.unexpected_message`.
#[test]
fn unexpected_messages_cancel_the_scanner() {
    let case = other_user(&flow());
    for event_type in [START, "m.key.verification.accept", "m.key.verification.mac", "x"] {
        let (mut scanner, _) = scan(&case, case.expected.clone()).unwrap();
        let out = scanner.receive(event_type, &right_start(&case), now());
        sends_cancel(&scanner, out, CancelCode::UnexpectedMessage);
    }
}

// ----------------------------------------------------------- both sides

/// A `cancel` from the other side ends the flow in every unfinished state,
/// with their code, and nothing is sent back.
#[test]
fn a_cancel_from_the_other_side_ends_it() {
    let case = other_user(&flow());
    let cancel = flow().wrap(json!({ "code": "m.user", "reason": "no" }));
    let waiting = show(&case);
    let mut scanned = show(&case);
    scanned.receive(START, &right_start(&case), now());
    let (reciprocated, _) = scan(&case, case.expected.clone()).unwrap();
    for mut verification in [waiting, scanned, reciprocated] {
        assert!(verification.receive(CANCEL, &cancel, now()).is_empty());
        cancelled_with(&verification, CancelCode::User, false);
    }
}

/// A message naming another flow: a `done` cancels with
/// `m.unknown_transaction`; a `start` or `cancel` is another flow's
/// business (the spec exempts both) and changes nothing.
#[test]
fn messages_for_another_flow() {
    let case = other_user(&flow());
    let other_flow = FlowId::ToDevice("flow-2".into());
    let mut shower = show(&case);
    assert!(shower.receive(START, &reciprocate(&other_flow, "ALICE", case.data.secret()), now()).is_empty());
    assert!(shower.receive(CANCEL, &other_flow.wrap(json!({ "code": "m.user" })), now()).is_empty());
    assert!(shower.receive(START, &reciprocate(&in_room(), "ALICE", case.data.secret()), now()).is_empty());
    assert_eq!(shower.state(), QrState::WaitingForScan);
    let out = shower.receive(DONE, &other_flow.wrap(json!({})), now());
    sends_cancel(&shower, out, CancelCode::UnknownTransaction);
    let (mut scanner, _) = scan(&case, case.expected.clone()).unwrap();
    let out = scanner.receive(DONE, &json!({}), now());
    sends_cancel(&scanner, out, CancelCode::UnknownTransaction);
}

/// Ten minutes after creation either side cancels with `m.timeout`, by
/// the timer or on the next message (even the right one), not before.
#[test]
fn each_side_times_out_after_ten_minutes() {
    let case = other_user(&flow());
    let deadline = now().saturating_add(QR_TIMEOUT);
    let just_before = Timestamp::from_millis(deadline.as_millis() - 1);
    let mut shower = show(&case);
    assert!(shower.handle_timeout(just_before).is_empty());
    let out = shower.handle_timeout(deadline);
    sends_cancel(&shower, out, CancelCode::Timeout);
    assert_eq!(shower.poll_timeout(), None);
    let mut late = show(&case);
    let out = late.receive(START, &right_start(&case), deadline);
    sends_cancel(&late, out, CancelCode::Timeout);
    let (mut scanner, _) = scan(&case, case.expected.clone()).unwrap();
    assert_eq!(scanner.poll_timeout(), Some(deadline));
    let out = scanner.receive(DONE, &flow().wrap(json!({})), deadline);
    sends_cancel(&scanner, out, CancelCode::Timeout);
}

/// Once done, nothing changes it: not their cancel, not ours, not a late
/// message; the proof stays.
#[test]
fn a_finished_verification_stays_finished() {
    let case = other_user(&flow());
    let mut shower = show(&case);
    shower.receive(START, &right_start(&case), now());
    single(shower.confirm(), DONE);
    assert!(shower.receive(CANCEL, &flow().wrap(json!({ "code": "m.user" })), now()).is_empty());
    assert!(shower.receive(START, &right_start(&case), now()).is_empty());
    assert!(shower.cancel(CancelCode::User).is_empty() && shower.mismatch().is_empty());
    assert!(shower.handle_timeout(Timestamp::from_millis(u64::MAX)).is_empty());
    assert_eq!(shower.state(), QrState::Done);
    assert!(shower.proof().is_some());
}

/// Shower and scanner talking to each other in all three modes, over both
/// channels, with the code passing through its bytes as a camera would
/// read them: both end done, each with the proof of exactly the keys the
/// spec says it checked.
#[test]
fn full_round_trip_in_all_three_modes() {
    for flow in [flow(), in_room()] {
        let proofs: Vec<(VerificationProof, VerificationProof)> = cases(&flow)
            .into_iter()
            .map(|case| {
                let mut shower =
                    QrVerification::show(case.shower.clone(), case.scanner.clone(), flow.clone(), case.data, now())
                        .unwrap();
                shower.data().to_qr_code().unwrap();
                let scanned = QrCodeData::from_bytes(&shower.data().to_bytes()).unwrap();
                let (mut scanner, start) =
                    QrVerification::scan(case.scanner, case.shower, flow.clone(), scanned, case.expected, now())
                        .unwrap();
                assert!(shower.receive(start.event_type, &start.content, now()).is_empty());
                assert_eq!(shower.state(), QrState::Scanned);
                let done = single(shower.confirm(), DONE);
                let their_done = single(scanner.receive(done.event_type, &done.content, now()), DONE);
                assert!(flow.named_by(&their_done.content));
                assert!(shower.receive(their_done.event_type, &their_done.content, now()).is_empty());
                assert_eq!((shower.state(), scanner.state()), (QrState::Done, QrState::Done));
                (shower.proof().unwrap(), scanner.proof().unwrap())
            })
            .collect();
        // 0x00: Bob proves Alice's master key, Alice proves Bob's.
        master_proof(&proofs[0].0, &alice(), alice_master());
        master_proof(&proofs[0].1, &bob(), bob_master());
        // 0x01: the trusting device proves the new device; the new device proves the master key.
        device_proof(&proofs[1].0, &alice2(), alice2_key());
        master_proof(&proofs[1].1, &alice(), alice_master());
        // 0x02: the new device proves the master key; the trusting device proves the new device.
        master_proof(&proofs[2].0, &alice2(), alice_master());
        device_proof(&proofs[2].1, &alice2(), alice2_key());
    }
}

// ------------------------------------------------------------ proptests

/// A hostile or honest message for the proptests.
fn message(case: &Case) -> impl Strategy<Value = (String, Value, bool)> {
    let right = right_start(case);
    let types = prop_oneof![Just(START), Just(DONE), Just(CANCEL), Just("m.key.verification.mac"), Just("x")];
    let secret = proptest::collection::vec(any::<u8>(), 0..70);
    prop_oneof![
        Just((START.to_owned(), right, true)),
        secret.prop_map(|s| (START.to_owned(), reciprocate(&flow(), "ALICE", &s), false)),
        (types.clone(), "[a-z.]{0,12}", ".{0,12}").prop_map(|(t, method, secret)| {
            let content = json!({ "method": method, "from_device": "ALICE", "secret": secret });
            (t.to_owned(), flow().wrap(content), false)
        }),
        types.clone().prop_map(|t| (t.to_owned(), flow().wrap(json!({ "code": "m.user" })), false)),
        types.prop_map(|t| (t.to_owned(), json!({ "transaction_id": 7 }), false)),
    ]
}

#[derive(Clone, Debug)]
enum Action {
    Receive(String, Value, bool),
    Confirm,
    Wait(u64),
}

fn actions(case: &Case) -> impl Strategy<Value = Vec<Action>> {
    let action = prop_oneof![
        4 => message(case).prop_map(|(t, c, right)| Action::Receive(t, c, right)),
        2 => Just(Action::Confirm),
        1 => (0u64..400_000).prop_map(Action::Wait),
    ];
    proptest::collection::vec(action, 0..12)
}

proptest! {
    /// Hostile message sequences to the shower never panic, and it is
    /// scanned (and then done) only after the right secret arrived in time,
    /// done only after our user confirmed.
    #[test]
    fn the_shower_is_done_only_after_the_right_secret(actions in actions(&other_user(&flow()))) {
        let case = other_user(&flow());
        let mut shower = show(&case);
        let (mut clock, mut right_seen, mut confirmed) = (now(), false, false);
        for action in actions {
            match action {
                Action::Receive(event_type, content, right) => {
                    let before = shower.state();
                    shower.receive(&event_type, &content, clock);
                    right_seen |= right && before == QrState::WaitingForScan && shower.state() == QrState::Scanned;
                }
                Action::Confirm => confirmed |= !shower.confirm().is_empty() && shower.state() == QrState::Done,
                Action::Wait(ms) => clock = Timestamp::from_millis(clock.as_millis() + ms),
            }
            let state = shower.state();
            prop_assert!(!matches!(state, QrState::Scanned | QrState::Done) || right_seen, "{state:?}");
            prop_assert_eq!(state == QrState::Done, confirmed);
            prop_assert_eq!(shower.proof().is_some(), confirmed);
        }
    }

    /// Hostile message sequences to the scanner never panic, and it is done
    /// only after a `done` that names the flow.
    #[test]
    fn the_scanner_is_done_only_after_their_done(actions in actions(&other_user(&flow()))) {
        let case = other_user(&flow());
        let (mut scanner, _) = scan(&case, case.expected.clone()).unwrap();
        let mut clock = now();
        for action in actions {
            match action {
                Action::Receive(event_type, content, _) => {
                    let before = scanner.state();
                    let out = scanner.receive(&event_type, &content, clock);
                    if before == QrState::Reciprocated && scanner.state() == QrState::Done {
                        prop_assert!(event_type == DONE && flow().named_by(&content));
                        prop_assert_eq!(out.len(), 1);
                    }
                }
                Action::Confirm => prop_assert!(scanner.confirm().is_empty()),
                Action::Wait(ms) => clock = Timestamp::from_millis(clock.as_millis() + ms),
            }
            prop_assert_eq!(scanner.proof().is_some(), scanner.state() == QrState::Done);
        }
    }
}
