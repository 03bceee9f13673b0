//! Two [`Verifications`] talking to each other through a hostile network
//! on the virtual clock: messages delivered in any order, duplicated, or
//! late, and the users confirming at any point. Checked after every step:
//! a flow is done only after its user confirmed, its proof names exactly
//! the other side's keys, and nothing finishes after the deadline.

// The two sides are indexed 0 and 1 throughout, into several arrays.
#![allow(clippy::needless_range_loop)]

use std::time::Duration;

use proptest::prelude::*;
use ruma_common::{OwnedUserId, owned_user_id};

use super::*;
use crate::Timestamp;

fn key(seed: u8) -> vodozemac::Ed25519PublicKey {
    vodozemac::Ed25519SecretKey::from_slice(&[seed; 32]).public_key()
}

fn alice() -> Party {
    Party { user_id: owned_user_id!("@alice:example.org"), device_id: "A1".into() }
}

fn bob() -> Party {
    Party { user_id: owned_user_id!("@bob:example.org"), device_id: "B1".into() }
}

fn keys_of(party: &Party, seed: u8) -> SasKeys {
    SasKeys { device_id: party.device_id.clone(), device_key: key(seed), master_key: Some(key(seed + 1)) }
}

fn flow_keys(ours: SasKeys, theirs: SasKeys) -> FlowKeys {
    FlowKeys { ours, theirs: Some(theirs), expectations: None }
}

/// One side: its registry, who it is, its keys and the peer's.
struct Side {
    registry: Verifications,
    us: Party,
    peer: OwnedUserId,
    keys: FlowKeys,
    confirmed: bool,
}

/// A message in flight to `to` (0 = Alice, 1 = Bob).
#[derive(Clone, Debug)]
struct InFlight {
    to: usize,
    event_type: &'static str,
    content: serde_json::Value,
}

const FLOW: &str = "flow-p";

fn flow() -> FlowId {
    FlowId::ToDevice(FLOW.into())
}

fn start(now: Timestamp) -> ([Side; 2], Vec<InFlight>) {
    let (a, b) = (alice(), bob());
    let a_keys = flow_keys(keys_of(&a, 1), keys_of(&b, 3));
    let b_keys = flow_keys(keys_of(&b, 3), keys_of(&a, 1));
    let mut sides = [
        Side {
            registry: Verifications::new(a.clone()),
            us: a.clone(),
            peer: b.user_id.clone(),
            keys: a_keys,
            confirmed: false,
        },
        Side {
            registry: Verifications::new(b.clone()),
            us: b.clone(),
            peer: a.user_id.clone(),
            keys: b_keys,
            confirmed: false,
        },
    ];
    sides[0].registry.request(b.user_id.clone(), flow(), vec![b.device_id.clone()], now).unwrap();
    let content = VerificationRequest::to_device_content(&a, FLOW, now);
    (sides, vec![InFlight { to: 1, event_type: "m.key.verification.request", content }])
}

fn post(step: Step, from: usize, wire: &mut Vec<InFlight>) -> Option<VerificationProof> {
    for message in step.messages {
        wire.push(InFlight { to: 1 - from, event_type: message.event_type, content: message.content });
    }
    step.proof
}

/// What a user or the network does next.
#[derive(Clone, Debug)]
enum Action {
    /// Deliver the pending message at this index (modulo), keeping a copy
    /// if `duplicate`.
    Deliver { index: usize, duplicate: bool },
    /// The side's user acts: accept the request, start SAS, or confirm.
    User { side: usize },
    /// Time passes.
    Wait { seconds: u64 },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0usize..8, prop::bool::weighted(0.15)).prop_map(|(index, duplicate)| Action::Deliver { index, duplicate }),
        2 => (0usize..2).prop_map(|side| Action::User { side }),
        1 => (0u64..200).prop_map(|seconds| Action::Wait { seconds }),
    ]
}

fn user_acts(
    sides: &mut [Side; 2],
    side: usize,
    now: Timestamp,
    wire: &mut Vec<InFlight>,
) -> Option<VerificationProof> {
    let s = &mut sides[side];
    let state = s.registry.state(&s.peer, &flow())?;
    let step = match (&state.request, &state.method) {
        (RequestState::Requested, None) if side == 1 => s.registry.accept(&s.peer, &flow(), now).ok(),
        (RequestState::Ready { .. }, None) => s.registry.start_sas(&s.peer, &flow(), s.keys.clone(), now).ok(),
        (_, Some(MethodState::Sas(SasState::KeysExchanged))) => {
            s.confirmed = true;
            s.registry.confirm(&s.peer, &flow()).ok()
        }
        _ => None,
    }?;
    post(step, side, wire)
}

fn check_proof(sides: &[Side; 2], side: usize, proof: &VerificationProof) -> Result<(), TestCaseError> {
    let s = &sides[side];
    prop_assert!(s.confirmed, "side {side} verified before its user confirmed");
    let peer = &sides[1 - side].us;
    let theirs = s.keys.theirs.as_ref().unwrap();
    prop_assert!(proof.covers_device(&peer.user_id, &peer.device_id, theirs.device_key));
    prop_assert!(proof.covers_master_key(&peer.user_id, theirs.master_key.unwrap()));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every order, duplicate and delay of the messages, every moment of
    /// the users' confirmations: never a panic, never verified without the
    /// user's confirmation or with other keys, nothing finished after the
    /// ten-minute deadline, and a flow that finished stays as it ended.
    #[test]
    fn any_delivery_order_keeps_the_flow_sound(actions in prop::collection::vec(action(), 1..80)) {
        let t0 = Timestamp::from_millis(1_000_000_000);
        let mut now = t0;
        let (mut sides, mut wire) = start(now);
        let mut finished: [Option<FlowState>; 2] = [None, None];
        for action in actions {
            let mut proof = None;
            let mut actor = 0;
            match action {
                Action::Deliver { index, duplicate } if !wire.is_empty() => {
                    let message = match duplicate {
                        true => wire[index % wire.len()].clone(),
                        false => wire.remove(index % wire.len()),
                    };
                    actor = message.to;
                    let sender = sides[1 - actor].us.user_id.clone();
                    let s = &mut sides[actor];
                    let incoming = Incoming {
                        sender: &sender,
                        from_device: None,
                        flow: &flow(),
                        event_type: message.event_type,
                        content: &message.content,
                        sent_at: now,
                    };
                    let keys = (message.event_type == "m.key.verification.start").then(|| s.keys.clone());
                    let step = s.registry.receive(incoming, keys, now);
                    proof = post(step, actor, &mut wire);
                }
                Action::Deliver { .. } => {}
                Action::User { side } => {
                    actor = side;
                    proof = user_acts(&mut sides, side, now, &mut wire);
                }
                Action::Wait { seconds } => {
                    now = now.saturating_add(Duration::from_secs(seconds));
                    for side in 0..2 {
                        for step in sides[side].registry.handle_timeout(now) {
                            prop_assert!(post(step, side, &mut wire).is_none(), "a timeout proves nothing");
                        }
                    }
                }
            }
            if let Some(proof) = &proof {
                check_proof(&sides, actor, proof)?;
                prop_assert!(now < t0.saturating_add(Duration::from_secs(600)), "verified after the deadline");
            }
            for side in 0..2 {
                let state = sides[side].registry.state(&sides[side].peer, &flow());
                if let Some(done) = &finished[side] {
                    prop_assert_eq!(Some(done), state.as_ref(), "a finished flow changed");
                } else if state.as_ref().is_some_and(FlowState::is_finished) {
                    finished[side] = state;
                }
            }
        }
    }
}

/// Delivered in order with both users confirming, the flow ends verified
/// on both sides with proofs of each other's keys: the property above is
/// not vacuous.
#[test]
fn in_order_delivery_verifies_both_sides() {
    let now = Timestamp::from_millis(1_000_000_000);
    let (mut sides, mut wire) = start(now);
    let mut proofs = [None, None];
    for _ in 0..40 {
        while !wire.is_empty() {
            let message = wire.remove(0);
            let to = message.to;
            let sender = sides[1 - to].us.user_id.clone();
            let incoming = Incoming {
                sender: &sender,
                from_device: None,
                flow: &flow(),
                event_type: message.event_type,
                content: &message.content,
                sent_at: now,
            };
            let keys = Some(sides[to].keys.clone());
            let step = sides[to].registry.receive(incoming, keys, now);
            if let Some(proof) = post(step, to, &mut wire) {
                proofs[to] = Some(proof);
            }
        }
        for side in 0..2 {
            if let Some(proof) = user_acts(&mut sides, side, now, &mut wire) {
                proofs[side] = Some(proof);
            }
        }
    }
    for side in 0..2 {
        let proof = proofs[side].as_ref().expect("verified");
        check_proof(&sides, side, proof).unwrap();
    }
}

/// Attack: Carol sends a `ready` naming the flow Alice opened with Bob.
/// Carol is told `m.user_mismatch`; Alice's flow with Bob is untouched and
/// still completes.
#[test]
fn another_user_naming_our_flow_gets_user_mismatch_and_changes_nothing() {
    let now = Timestamp::from_millis(1_000_000_000);
    let (mut sides, _) = start(now);
    let carol = owned_user_id!("@carol:example.org");
    let content = serde_json::json!({"from_device": "C1", "methods": ["m.sas.v1"], "transaction_id": FLOW});
    let incoming = Incoming {
        sender: &carol,
        from_device: None,
        flow: &flow(),
        event_type: "m.key.verification.ready",
        content: &content,
        sent_at: now,
    };
    let step = sides[0].registry.receive(incoming, None, now);
    assert_eq!(step.messages.len(), 1);
    assert_eq!(step.messages[0].to, Recipient::Devices(carol.clone(), vec!["C1".into()]));
    assert_eq!(step.messages[0].content["code"], "m.user_mismatch");
    assert!(step.changed.is_none() && step.proof.is_none());
    let state = sides[0].registry.state(&bob().user_id, &flow()).unwrap();
    assert_eq!(state.request, RequestState::Requested, "Alice's flow with Bob is unchanged");
}
