//! Cross-signing scenarios on the in-process server and the virtual clock:
//! bootstrapping, signing our own devices, verifying another user,
//! identity resets (verification and pin violations), devices the server
//! injects, importing private keys, and key confusion.

use std::sync::Arc;

use hush_crypto_core::{
    EngineEvent,
    identities::{CrossSigningError, IdentityState, ImportKeyError, KeyRole},
};
use hush_testing::{RogueDevice, TestDevice, TestServer, VirtualClock};
use ruma_common::{OwnedUserId, UserId, owned_user_id};
use serde_json::{Value, json};
use vodozemac::Ed25519SecretKey;

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

async fn state_of(device: &TestDevice, user_id: &UserId) -> Option<IdentityState> {
    device.machine.get_identity(user_id).await.unwrap().map(|identity| identity.state())
}

async fn is_verified(device: &TestDevice, user_id: &UserId, device_id: &str) -> bool {
    device.machine.device_trust(user_id, device_id.into()).await.unwrap().expect("known device").is_verified()
}

/// Alice's first device bootstraps: she holds all three keys, the server
/// lists them, her own identity is verified on the device, and the
/// device's keys carry the self-signing key's signature on the server.
#[tokio::test]
async fn bootstrapping_makes_a_verified_own_identity_and_signs_this_device() {
    let world = World::new();
    let alice1 = world.device(&alice(), "A1").await;
    assert!(!alice1.machine.cross_signing_status().has_master);
    alice1.bootstrap_cross_signing(false).await;
    assert!(alice1.machine.cross_signing_status().is_complete());
    assert!(world.server.master_key(&alice()).is_some());
    alice1.refresh_keys(&[&alice()]).await;
    assert_eq!(state_of(&alice1, &alice()).await, Some(IdentityState::Verified));
    let identity = alice1.machine.get_identity(&alice()).await.unwrap().unwrap();
    let keys = world.server.device_keys(&alice(), &"A1".into()).expect("A1's keys");
    let ssk_id = format!("ed25519:{}", identity.self_signing_key().to_base64());
    assert!(keys["signatures"][alice().as_str()][&ssk_id].is_string(), "A1 signed by the self-signing key: {keys}");
    // A second bootstrap without reset is refused.
    assert_eq!(
        alice1.machine.bootstrap_cross_signing(false).await.unwrap_err(),
        CrossSigningError::AlreadyBootstrapped
    );
}

/// Alice's second device is unverified to her first until the first signs
/// it with the self-signing key; then it shows verified, also after the
/// server's copy (with the signature) is queried again.
#[tokio::test]
async fn a_second_device_signed_by_the_first_shows_verified_to_it() {
    let world = World::new();
    let alice1 = world.device(&alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    let _alice2 = world.device(&alice(), "A2").await;
    alice1.refresh_keys(&[&alice()]).await;
    assert!(!is_verified(&alice1, &alice(), "A2").await);
    alice1.machine.verify_device(&alice(), "A2".into()).await.unwrap();
    alice1.drain().await;
    assert!(is_verified(&alice1, &alice(), "A2").await);
    alice1.refresh_keys(&[&alice()]).await;
    let trust = alice1.machine.device_trust(&alice(), "A2".into()).await.unwrap().unwrap();
    assert!(trust.cross_signed_by_owner && trust.owner_verified && !trust.locally_verified);
}

/// Alice signs both her devices; Bob verifies Alice's identity (his
/// user-signing key signs her master key) and both her devices show
/// verified to him, without verifying either one.
#[tokio::test]
async fn bob_verifies_alice_and_both_her_devices_show_verified() {
    let world = World::new();
    let alice1 = world.device(&alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    let _alice2 = world.device(&alice(), "A2").await;
    alice1.refresh_keys(&[&alice()]).await;
    alice1.machine.verify_device(&alice(), "A2".into()).await.unwrap();
    alice1.drain().await;

    let bob1 = world.device(&bob(), "B1").await;
    bob1.bootstrap_cross_signing(false).await;
    bob1.refresh_keys(&[&alice(), &bob()]).await;
    assert_eq!(state_of(&bob1, &alice()).await, Some(IdentityState::Unverified));
    assert!(!is_verified(&bob1, &alice(), "A1").await);
    assert!(!is_verified(&bob1, &alice(), "A2").await);

    bob1.machine.verify_identity(&alice()).await.unwrap();
    bob1.drain().await;
    assert_eq!(state_of(&bob1, &alice()).await, Some(IdentityState::Verified));
    assert!(is_verified(&bob1, &alice(), "A1").await);
    assert!(is_verified(&bob1, &alice(), "A2").await);
    // The signature is on the server: another of Bob's devices sees it too
    // once it trusts Bob's identity.
    let master = world.server.master_key(&alice()).unwrap();
    assert!(master["signatures"][bob().as_str()].as_object().is_some_and(|s| !s.is_empty()), "{master}");
}

/// Attack: the server adds a device to Alice's list that Alice never
/// signed (its own self-signature is valid). Bob, who verified Alice, must
/// not see it as verified.
#[tokio::test]
async fn a_device_the_server_injects_is_not_verified() {
    let world = World::new();
    let alice1 = world.device(&alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    let bob1 = world.device(&bob(), "B1").await;
    bob1.bootstrap_cross_signing(false).await;
    bob1.refresh_keys(&[&alice(), &bob()]).await;
    bob1.machine.verify_identity(&alice()).await.unwrap();
    bob1.drain().await;

    let _evil = RogueDevice::register(&world.server, &alice(), "EVIL");
    bob1.refresh_keys(&[&alice()]).await;
    let trust = bob1.machine.device_trust(&alice(), "EVIL".into()).await.unwrap().expect("listed");
    assert!(!trust.cross_signed_by_owner);
    assert!(!trust.is_verified());
    assert!(is_verified(&bob1, &alice(), "A1").await, "Alice's real device stays verified");
}

/// Alice resets her identity. Bob had verified her: a verification
/// violation, announced as an event and listed for a room with Alice; it
/// ends when Bob withdraws the verification (or verifies again).
#[tokio::test]
async fn a_reset_of_a_verified_identity_is_a_verification_violation() {
    let world = World::new();
    let alice1 = world.device(&alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    let bob1 = world.device(&bob(), "B1").await;
    bob1.bootstrap_cross_signing(false).await;
    bob1.refresh_keys(&[&alice(), &bob()]).await;
    bob1.machine.verify_identity(&alice()).await.unwrap();
    bob1.drain().await;
    bob1.machine.drain_events();

    alice1.bootstrap_cross_signing(true).await;
    bob1.refresh_keys(&[&alice()]).await;
    assert_eq!(state_of(&bob1, &alice()).await, Some(IdentityState::VerificationViolation));
    let events = bob1.machine.drain_events();
    assert!(events.iter().any(|e| matches!(e,
        EngineEvent::IdentityChanged { user_id, state: IdentityState::VerificationViolation } if *user_id == alice())));
    let violations = bob1.machine.identity_violations([alice().as_ref(), bob().as_ref()]).await.unwrap();
    assert_eq!(violations, vec![(alice(), IdentityState::VerificationViolation)]);
    assert!(!is_verified(&bob1, &alice(), "A1").await, "A1 is signed by the new key, which Bob has not verified");

    bob1.machine.withdraw_verification(&alice()).await.unwrap();
    assert_eq!(state_of(&bob1, &alice()).await, Some(IdentityState::Unverified));
    bob1.machine.verify_identity(&alice()).await.unwrap();
    bob1.drain().await;
    assert_eq!(state_of(&bob1, &alice()).await, Some(IdentityState::Verified));
}

/// A user Bob never verified changes master key: a pin violation until Bob
/// acknowledges the new key.
#[tokio::test]
async fn a_master_key_change_of_an_unverified_user_is_a_pin_violation() {
    let world = World::new();
    let alice1 = world.device(&alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    let bob1 = world.device(&bob(), "B1").await;
    bob1.refresh_keys(&[&alice()]).await;
    assert_eq!(state_of(&bob1, &alice()).await, Some(IdentityState::Unverified));
    alice1.bootstrap_cross_signing(true).await;
    bob1.refresh_keys(&[&alice()]).await;
    assert_eq!(state_of(&bob1, &alice()).await, Some(IdentityState::PinViolation));
    bob1.machine.pin_current_master_key(&alice()).await.unwrap();
    assert_eq!(state_of(&bob1, &alice()).await, Some(IdentityState::Unverified));
}

/// The private keys exported from one device import on another of Alice's
/// devices (checked against the server's public keys), which then trusts
/// her identity; keys that do not match the server import nothing, and
/// a device that knows no public keys for us imports nothing either.
#[tokio::test]
async fn imported_private_keys_are_checked_against_the_server() {
    let world = World::new();
    let alice1 = world.device(&alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    let alice2 = world.device(&alice(), "A2").await;
    let export = alice1.machine.export_cross_signing_keys().unwrap();
    alice2.refresh_keys(&[&alice()]).await;
    let mut wrong = export.clone();
    wrong.self_signing = Some(Ed25519SecretKey::new().to_base64().into());
    assert_eq!(
        alice2.machine.import_cross_signing_keys(&wrong).await.unwrap_err(),
        CrossSigningError::Import(ImportKeyError::Mismatch { role: KeyRole::SelfSigning })
    );
    assert!(!alice2.machine.cross_signing_status().has_master, "a refused import imports nothing");
    assert_eq!(state_of(&alice2, &alice()).await, Some(IdentityState::Unverified));
    let status = alice2.machine.import_cross_signing_keys(&export).await.unwrap();
    assert!(status.is_complete());
    assert_eq!(state_of(&alice2, &alice()).await, Some(IdentityState::Verified));
    alice2.drain().await;
    alice1.refresh_keys(&[&alice()]).await;
    assert!(is_verified(&alice1, &alice(), "A2").await, "A2 signed itself with the imported self-signing key");

    // Bob's server lists no identity for Bob: nothing to check against.
    let bob1 = world.device(&bob(), "B1").await;
    assert_eq!(
        bob1.machine.import_cross_signing_keys(&export).await.unwrap_err(),
        CrossSigningError::Import(ImportKeyError::NoPublicIdentity)
    );
    assert!(!bob1.machine.cross_signing_status().has_master);
}

/// A cross-signing key object signed (or not) by `signer`, as a hostile
/// server could list it.
fn cross_signing_key(
    user_id: &UserId,
    usage: &[&str],
    key: &Ed25519SecretKey,
    signer: Option<&Ed25519SecretKey>,
) -> Value {
    let public = key.public_key().to_base64();
    let mut value = json!({
        "user_id": user_id,
        "usage": usage,
        "keys": { format!("ed25519:{public}"): public },
    });
    if let Some(signer) = signer {
        let canonical = ruma_common::canonical_json::to_canonical_value(&value).unwrap().to_string();
        let signature = signer.sign(canonical.as_bytes()).to_base64();
        let signer_id = format!("ed25519:{}", signer.public_key().to_base64());
        value["signatures"] = json!({ user_id.as_str(): { signer_id: signature } });
    }
    value
}

/// Key confusion (Albrecht et al., IEEE S&P 2023). Attacks: the server
/// lists for Alice (a) a self-signing key equal to the master key, (b) a
/// master key that claims two usages, (c) a self-signing key the master
/// never signed, (d) a device whose device id is the master key. Each is
/// refused: no identity is learnt from (a)–(c), and the device of (d) is
/// not stored.
#[tokio::test]
async fn key_confusion_is_rejected() {
    let world = World::new();
    let bob1 = world.device(&bob(), "B1").await;
    let master = Ed25519SecretKey::new();
    let other = Ed25519SecretKey::new();
    let cases = [
        (
            "one key in two roles",
            cross_signing_key(&alice(), &["master"], &master, None),
            cross_signing_key(&alice(), &["self_signing"], &master, Some(&master)),
        ),
        (
            "two usages",
            cross_signing_key(&alice(), &["master", "self_signing"], &master, None),
            cross_signing_key(&alice(), &["self_signing"], &other, Some(&master)),
        ),
        (
            "not signed by the master",
            cross_signing_key(&alice(), &["master"], &master, None),
            cross_signing_key(&alice(), &["self_signing"], &other, Some(&other)),
        ),
    ];
    for (case, master_json, self_signing_json) in cases {
        world.server.overwrite_signing_keys(&alice(), master_json, self_signing_json, None);
        bob1.refresh_keys(&[&alice()]).await;
        assert_eq!(state_of(&bob1, &alice()).await, None, "{case}: refused");
    }

    // A valid identity, then a device named after its master key.
    world.server.overwrite_signing_keys(
        &alice(),
        cross_signing_key(&alice(), &["master"], &master, None),
        cross_signing_key(&alice(), &["self_signing"], &other, Some(&master)),
        None,
    );
    let _confused = RogueDevice::register(&world.server, &alice(), &master.public_key().to_base64());
    let _honest = RogueDevice::register(&world.server, &alice(), "HONEST");
    bob1.refresh_keys(&[&alice()]).await;
    assert_eq!(state_of(&bob1, &alice()).await, Some(IdentityState::Unverified));
    let devices = bob1.machine.get_user_devices(&alice()).await.unwrap();
    assert!(devices.contains_key("HONEST"));
    assert_eq!(devices.len(), 1, "the device named after the master key is refused: {:?}", devices.keys());
}
