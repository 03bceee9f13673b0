//! Two SAS state machines talking to each other, honest and tampered with.

use proptest::prelude::*;
use ruma_common::{owned_device_id, owned_user_id};
use serde_json::{Value, json};

use super::*;
use crate::{
    Timestamp,
    verification::{CancelCode, FlowId, ProofMethod},
};

const FLOW: &str = "flow-1";

fn alice() -> Party {
    Party { user_id: owned_user_id!("@alice:example.org"), device_id: owned_device_id!("ALICE") }
}

fn bob() -> Party {
    Party { user_id: owned_user_id!("@bob:example.org"), device_id: owned_device_id!("BOB") }
}

fn now() -> Timestamp {
    Timestamp::from_millis(1_000_000)
}

fn key(seed: u8) -> vodozemac::Ed25519PublicKey {
    vodozemac::Ed25519SecretKey::from_slice(&[seed; 32]).public_key()
}

/// A party's keys: its device key and a master key.
fn keys_of(device: &str, device_seed: u8, master_seed: u8) -> SasKeys {
    SasKeys { device_id: device.into(), device_key: key(device_seed), master_key: Some(key(master_seed)) }
}

fn alice_keys() -> SasKeys {
    keys_of("ALICE", 1, 2)
}

fn bob_keys() -> SasKeys {
    keys_of("BOB", 3, 4)
}

fn flow() -> FlowId {
    FlowId::ToDevice(FLOW.into())
}

fn single(mut outgoing: Vec<Outgoing>, event_type: &str) -> Outgoing {
    assert_eq!(outgoing.len(), 1, "{outgoing:?}");
    let message = outgoing.remove(0);
    assert_eq!(message.event_type, event_type);
    message
}

/// Alice starts, Bob accepts, keys are exchanged: both show short strings.
fn exchanged() -> (SasVerification, SasVerification) {
    let (mut a, start) = SasVerification::start(alice(), bob(), flow(), &alice_keys(), bob_keys(), now());
    let (mut b, accept) =
        SasVerification::accept(bob(), alice(), flow(), &start.content, &bob_keys(), alice_keys(), now()).unwrap();
    let a_key = single(a.receive(accept.event_type, &accept.content, now()), "m.key.verification.key");
    let b_key = single(b.receive(a_key.event_type, &a_key.content, now()), "m.key.verification.key");
    assert!(a.receive(b_key.event_type, &b_key.content, now()).is_empty());
    (a, b)
}

fn deliver(to: &mut SasVerification, messages: &[Outgoing]) -> Vec<Outgoing> {
    messages.iter().flat_map(|m| to.receive(m.event_type, &m.content, now())).collect()
}

/// Done, with `keys`' device and master key verified.
fn done_with(keys: &SasKeys) -> SasState {
    SasState::Done { device: Some(keys.device_id.clone()), master_key: keys.master_key }
}

/// The honest exchange: both sides show the same seven emoji and three
/// numbers, both confirm, and each verifies exactly the other's keys.
#[test]
fn the_short_strings_agree_and_both_sides_verify_the_other() {
    let (mut a, mut b) = exchanged();
    assert_eq!(a.state(), SasState::KeysExchanged);
    let emoji = a.emoji().expect("emoji offered by both");
    assert_eq!(emoji, b.emoji().unwrap());
    assert_eq!(a.decimals(), b.decimals());
    let (first, second, third) = a.decimals().unwrap();
    assert!([first, second, third].iter().all(|n| (1000..=9191).contains(n)));

    let a_mac = a.confirm();
    assert_eq!(a.state(), SasState::Confirmed);
    let b_mac = b.confirm();
    let b_done = deliver(&mut b, &a_mac);
    assert_eq!(single(b_done, "m.key.verification.done").content["transaction_id"], FLOW);
    let a_done = deliver(&mut a, &b_mac);
    assert_eq!(a_done.len(), 1);
    assert_eq!(a.state(), done_with(&bob_keys()));
    assert_eq!(b.state(), done_with(&alice_keys()));
    assert!(deliver(&mut a, &a_done).is_empty(), "their done changes nothing");
    assert_eq!(a.poll_timeout(), None);
    let proof = a.proof().expect("done");
    assert!(proof.covers_device(&bob().user_id, &bob().device_id, key(3)));
    assert!(proof.covers_master_key(&bob().user_id, key(4)));
    assert!(!proof.covers_device(&bob().user_id, &bob().device_id, key(1)));
    assert_eq!(proof.method(), ProofMethod::Sas);
    assert!(b.proof().unwrap().covers_master_key(&alice().user_id, key(2)));
}

/// No proof exists before the end, and none after a cancellation.
#[test]
fn there_is_no_proof_before_done_or_after_a_cancel() {
    let (mut a, mut b) = exchanged();
    assert!(a.proof().is_none());
    let b_mac = b.confirm();
    deliver(&mut a, &b_mac);
    assert!(a.proof().is_none(), "their MAC alone proves nothing until our user confirms");
    a.mismatch();
    assert!(a.proof().is_none());
}

/// In a room, every message relates to the request event instead of
/// naming a transaction, the info strings use the event id, and the
/// exchange completes the same way.
#[test]
fn an_in_room_exchange_relates_every_message_to_the_request() {
    let flow = FlowId::InRoom {
        room_id: ruma_common::owned_room_id!("!dm:example.org"),
        event_id: ruma_common::owned_event_id!("$request"),
    };
    let (mut a, start) = SasVerification::start(alice(), bob(), flow.clone(), &alice_keys(), bob_keys(), now());
    assert_eq!(start.content["m.relates_to"]["event_id"], "$request");
    assert!(start.content.get("transaction_id").is_none());
    let (mut b, accept) =
        SasVerification::accept(bob(), alice(), flow, &start.content, &bob_keys(), alice_keys(), now()).unwrap();
    let a_key = single(a.receive(accept.event_type, &accept.content, now()), "m.key.verification.key");
    let b_key = single(b.receive(a_key.event_type, &a_key.content, now()), "m.key.verification.key");
    assert!(a.receive(b_key.event_type, &b_key.content, now()).is_empty());
    assert_eq!(a.emoji(), b.emoji());
    let a_mac = a.confirm();
    let b_mac = b.confirm();
    deliver(&mut b, &a_mac);
    deliver(&mut a, &b_mac);
    assert!(a.proof().is_some() && b.proof().is_some());
}

/// The other side's MAC may arrive before our user confirmed: it is held,
/// and nothing is verified until the user confirms.
#[test]
fn a_mac_before_our_confirmation_is_held_until_we_confirm() {
    let (mut a, mut b) = exchanged();
    let b_mac = b.confirm();
    assert!(deliver(&mut a, &b_mac).is_empty());
    assert_eq!(a.state(), SasState::KeysExchanged, "not verified before the user confirms");
    let sent = a.confirm();
    assert_eq!(
        sent.iter().map(|m| m.event_type).collect::<Vec<_>>(),
        ["m.key.verification.mac", "m.key.verification.done"]
    );
    assert_eq!(a.state(), done_with(&bob_keys()));
}

/// Attack: a man in the middle replaces Bob's ephemeral key on its way to
/// Alice. It no longer matches Bob's commitment: Alice cancels with
/// `m.mismatched_commitment` and shows no short string.
#[test]
fn a_replaced_ephemeral_key_breaks_the_commitment() {
    let (mut a, start) = SasVerification::start(alice(), bob(), flow(), &alice_keys(), bob_keys(), now());
    let (mut b, accept) =
        SasVerification::accept(bob(), alice(), flow(), &start.content, &bob_keys(), alice_keys(), now()).unwrap();
    let a_key = single(a.receive(accept.event_type, &accept.content, now()), "m.key.verification.key");
    let mut b_key = single(b.receive(a_key.event_type, &a_key.content, now()), "m.key.verification.key");
    b_key.content["key"] = json!(vodozemac::sas::Sas::new().public_key().to_base64());
    let cancel = single(a.receive(b_key.event_type, &b_key.content, now()), "m.key.verification.cancel");
    assert_eq!(cancel.content["code"], "m.mismatched_commitment");
    assert!(a.emoji().is_none() && a.decimals().is_none());
}

/// Attack: Bob was shown another key for Alice's device than the one she
/// has (the server swapped it before the verification started). Alice's
/// MAC of her real key does not verify: Bob cancels with `m.key_mismatch`.
#[test]
fn a_mac_over_another_key_than_the_one_we_hold_is_a_key_mismatch() {
    let (mut a, start) = SasVerification::start(alice(), bob(), flow(), &alice_keys(), bob_keys(), now());
    let swapped = keys_of("ALICE", 9, 2);
    let (mut b, accept) =
        SasVerification::accept(bob(), alice(), flow(), &start.content, &bob_keys(), swapped, now()).unwrap();
    let a_key = single(a.receive(accept.event_type, &accept.content, now()), "m.key.verification.key");
    let b_key = single(b.receive(a_key.event_type, &a_key.content, now()), "m.key.verification.key");
    a.receive(b_key.event_type, &b_key.content, now());
    b.confirm();
    let cancel = single(deliver(&mut b, &a.confirm()), "m.key.verification.cancel");
    assert_eq!(cancel.content["code"], "m.key_mismatch");
    assert!(matches!(b.state(), SasState::Cancelled(c) if c.code == CancelCode::KeyMismatch));
}

/// Attack: the MAC message loses one of its keys on the way (or gains
/// one). The key-list MAC no longer matches: `m.key_mismatch`.
#[test]
fn a_mac_message_with_a_key_removed_fails_the_key_list() {
    let (mut a, mut b) = exchanged();
    let mut a_mac = a.confirm();
    a_mac[0].content["mac"].as_object_mut().unwrap().remove("ed25519:ALICE");
    b.confirm();
    let cancel = single(deliver(&mut b, &a_mac), "m.key.verification.cancel");
    assert_eq!(cancel.content["code"], "m.key_mismatch");
}

/// The user says the strings differ: `m.mismatched_sas`, and nothing after
/// it changes the outcome.
#[test]
fn different_short_strings_cancel_with_mismatched_sas() {
    let (mut a, mut b) = exchanged();
    let cancel = single(a.mismatch(), "m.key.verification.cancel");
    assert_eq!(cancel.content["code"], "m.mismatched_sas");
    assert!(deliver(&mut b, &[cancel]).is_empty(), "a cancel is not answered");
    assert!(matches!(b.state(), SasState::Cancelled(c) if c.code == CancelCode::MismatchedSas && !c.by_us));
    assert!(deliver(&mut a, &b.confirm()).is_empty(), "a cancelled side ignores what follows");
}

/// An older client offering only libolm's MAC gets it; its MACs use the
/// legacy encoding, which differs from `.v2`'s.
#[test]
fn a_legacy_only_peer_gets_the_legacy_mac() {
    let mut start = methods::start_offer();
    start["message_authentication_codes"] = json!(["hkdf-hmac-sha256"]);
    start["transaction_id"] = json!(FLOW);
    start["from_device"] = json!("ALICE");
    let (_, accept) =
        SasVerification::accept(bob(), alice(), flow(), &start, &bob_keys(), alice_keys(), now()).unwrap();
    assert_eq!(accept.content["message_authentication_code"], "hkdf-hmac-sha256");
    let sas = vodozemac::sas::Sas::new();
    let other = vodozemac::sas::Sas::new();
    let established = sas.diffie_hellman(other.public_key()).unwrap();
    let legacy = crypto::mac(&established, MacMethod::Legacy, "input", "info");
    let v2 = crypto::mac(&established, MacMethod::V2, "input", "info");
    assert_ne!(legacy, v2);
    assert!(crypto::mac_matches(&established, MacMethod::Legacy, "input", "info", &legacy));
    assert!(!crypto::mac_matches(&established, MacMethod::Legacy, "input", "info", &v2));
    assert!(crypto::mac_matches(&established, MacMethod::V2, "input", "info", &v2));
}

/// Time is input: nothing happens before the deadline; at it, `m.timeout`.
#[test]
fn the_exchange_times_out_after_ten_minutes() {
    let (mut a, _) = exchanged();
    let deadline = a.poll_timeout().unwrap();
    assert_eq!(deadline, now().saturating_add(SAS_TIMEOUT));
    assert!(a.handle_timeout(Timestamp::from_millis(deadline.as_millis() - 1)).is_empty());
    let cancel = single(a.handle_timeout(deadline), "m.key.verification.cancel");
    assert_eq!(cancel.content["code"], "m.timeout");
    assert_eq!(a.poll_timeout(), None);
}

/// Out of order and foreign messages: a MAC before the keys is
/// `m.unexpected_message`; another flow's message is `m.unknown_transaction`.
#[test]
fn messages_out_of_order_or_of_another_flow_cancel() {
    let (mut a, _) = SasVerification::start(alice(), bob(), flow(), &alice_keys(), bob_keys(), now());
    let mac = json!({"transaction_id": FLOW, "mac": {"ed25519:BOB": "x"}, "keys": "y"});
    let cancel = single(a.receive("m.key.verification.mac", &mac, now()), "m.key.verification.cancel");
    assert_eq!(cancel.content["code"], "m.unexpected_message");
    let (mut a, _) = SasVerification::start(alice(), bob(), flow(), &alice_keys(), bob_keys(), now());
    let other = json!({"transaction_id": "other-flow", "key": "abc"});
    let cancel = single(a.receive("m.key.verification.key", &other, now()), "m.key.verification.cancel");
    assert_eq!(cancel.content["code"], "m.unknown_transaction");
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9+/=:._-]{0,60}".prop_map(Value::String),
        Just(json!(FLOW)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("transaction_id".to_owned()),
                    Just("key".to_owned()),
                    Just("mac".to_owned()),
                    Just("keys".to_owned()),
                    Just("commitment".to_owned()),
                    Just("hash".to_owned()),
                    "[a-z_:.0-9A-Z]{1,12}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Hostile contents at every step never panic; an exchange hit by one
    /// ends cancelled or keeps going, never verified without both MACs.
    #[test]
    fn hostile_messages_never_panic_or_verify(
        messages in prop::collection::vec((0usize..6, any_json()), 1..8),
    ) {
        let types = [
            "m.key.verification.accept", "m.key.verification.key", "m.key.verification.mac",
            "m.key.verification.done", "m.key.verification.cancel", "m.key.verification.start",
        ];
        let (mut a, _) = exchanged();
        let (mut fresh, _) = SasVerification::start(alice(), bob(), flow(), &alice_keys(), bob_keys(), now());
        for (kind, content) in &messages {
            a.receive(types[*kind], content, now());
            fresh.receive(types[*kind], content, now());
        }
        let done = |state: SasState| matches!(state, SasState::Done { .. });
        prop_assert!(!done(a.state()), "verified without our confirmation");
        prop_assert!(!done(fresh.state()), "verified from nothing");
    }
}
