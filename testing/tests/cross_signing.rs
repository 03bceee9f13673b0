//! Cross-signing scenarios on the in-process server and the virtual clock:
//! bootstrapping, signing our own devices, verifying another user,
//! identity resets (verification and pin violations), devices the server
//! injects, importing private keys, and key confusion.

use std::sync::Arc;

use hush_crypto_core::{
    DecryptionSettings, EncryptionSettings, EngineEvent, MegolmError, ShareError, SharingStrategy, TrustRequirement,
    VerificationState,
    identities::{CrossSigningError, IdentityState, ImportKeyError, KeyRole, UserIdentity},
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

/// Alice and Bob, both bootstrapped; Bob verified Alice's identity.
async fn alice_verified_by_bob(world: &World) -> (TestDevice, TestDevice) {
    let alice1 = world.device(&alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    let bob1 = world.device(&bob(), "B1").await;
    bob1.bootstrap_cross_signing(false).await;
    bob1.refresh_keys(&[&alice(), &bob()]).await;
    bob1.machine.verify_identity(&alice()).await.unwrap();
    bob1.drain().await;
    (alice1, bob1)
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
    // The signature is on the server, under Bob's user-signing key.
    let master = world.server.master_key(&alice()).unwrap();
    let own = bob1.machine.get_identity(&bob()).await.unwrap().unwrap();
    let UserIdentity::Own(own) = own else { panic!("Bob's own identity") };
    let usk_id = format!("ed25519:{}", own.user_signing_key().unwrap().to_base64());
    assert!(master["signatures"][bob().as_str()][&usk_id].is_string(), "{master}");
}

/// Attack: the server adds a device to Alice's list that Alice never
/// signed (its own self-signature is valid). Bob, who verified Alice, must
/// not see it as verified.
#[tokio::test]
async fn a_device_the_server_injects_is_not_verified() {
    let world = World::new();
    let (_alice1, bob1) = alice_verified_by_bob(&world).await;

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
    let (alice1, bob1) = alice_verified_by_bob(&world).await;
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

/// The server lists a well-formed identity for `user_id` that nobody holds
/// the keys of (fresh master and self-signing keys, the second signed by
/// the first).
fn list_made_up_identity(world: &World, user_id: &UserId) {
    let (master, self_signing) = (Ed25519SecretKey::new(), Ed25519SecretKey::new());
    world.server.overwrite_signing_keys(
        user_id,
        cross_signing_key(user_id, &["master"], &master, None),
        cross_signing_key(user_id, &["self_signing"], &self_signing, Some(&master)),
        None,
    );
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

fn room() -> &'static ruma_common::RoomId {
    ruma_common::room_id!("!room:example.org")
}

fn strategy(sharing_strategy: SharingStrategy) -> EncryptionSettings {
    EncryptionSettings { sharing_strategy, ..Default::default() }
}

/// The to-device events waiting for a device, as JSON.
fn inbox(world: &World, user_id: &UserId, device_id: &str) -> Vec<Value> {
    let changes = world.server.sync(user_id, &device_id.into(), "inbox".into());
    changes.to_device_events.iter().map(|e| e.deserialize_as_unchecked().unwrap()).collect()
}

/// Alice with A1 signed by her identity, Bob who verified her, and a
/// device the server injected into Alice's list ("EVIL", unsigned).
async fn alice_bob_and_an_injected_device(world: &World) -> (TestDevice, TestDevice, RogueDevice) {
    let (alice1, bob1) = alice_verified_by_bob(world).await;
    let evil = RogueDevice::register(&world.server, &alice(), "EVIL");
    bob1.refresh_keys(&[&alice()]).await;
    (alice1, bob1, evil)
}

/// Attack: the server injects an unsigned device into Alice's list. Under
/// the identity-based strategy (MSC4153) Bob shares the room key with
/// Alice's cross-signed device only; the injected device is told
/// `m.unverified` and gets no key.
#[tokio::test]
async fn identity_based_sharing_withholds_from_unsigned_devices() {
    let world = World::new();
    let (mut alice1, bob1, _evil) = alice_bob_and_an_injected_device(&world).await;
    bob1.share_room_key(room(), &[&alice()], &strategy(SharingStrategy::IdentityBased)).await;
    let evil_inbox = inbox(&world, &alice(), "EVIL");
    assert_eq!(evil_inbox.len(), 1, "only a notice: {evil_inbox:?}");
    assert_eq!(evil_inbox[0]["type"], "m.room_key.withheld");
    assert_eq!(evil_inbox[0]["content"]["code"], "m.unverified");
    let event = bob1.encrypt_text(room(), "for signed devices").await;
    alice1.sync().await;
    assert_eq!(alice1.decrypt_text(room(), &event).await.unwrap(), "for signed devices");
}

/// Under error-on-verified-user-problem, Bob refuses to share while Alice,
/// whom he verified, has a device she did not sign, naming it; nothing is
/// sent. Once the server no longer lists the device, sharing works.
#[tokio::test]
async fn a_verified_users_unsigned_device_stops_sharing_under_error_on_problem() {
    let world = World::new();
    let (_alice1, bob1, _evil) = alice_bob_and_an_injected_device(&world).await;
    bob1.establish_sessions(&[&alice()]).await;
    let refused = bob1
        .machine
        .share_room_key(
            room(),
            [alice().as_ref()],
            &strategy(SharingStrategy::ErrorOnVerifiedUserProblem),
            world.clock.now(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        ShareError::VerifiedUserProblem { unsigned_devices: vec![(alice(), "EVIL".into())], violations: vec![] }
    );
    assert!(inbox(&world, &alice(), "A1").is_empty(), "nothing was sent");
    world.server.delete_device(&alice(), &"EVIL".into());
    bob1.refresh_keys(&[&alice()]).await;
    bob1.share_room_key(room(), &[&alice()], &strategy(SharingStrategy::ErrorOnVerifiedUserProblem)).await;
    assert_eq!(inbox(&world, &alice(), "A1").len(), 1, "the room key went to A1");
}

/// Alice resets her identity: Bob, who had verified her, refuses to send
/// under error-on-verified-user-problem (a verification violation), and
/// sends again once he acknowledges the change by withdrawing the old
/// verification.
#[tokio::test]
async fn a_verification_violation_stops_sharing_until_acknowledged() {
    let world = World::new();
    let (alice1, bob1) = alice_verified_by_bob(&world).await;
    alice1.bootstrap_cross_signing(true).await;
    bob1.refresh_keys(&[&alice()]).await;
    bob1.establish_sessions(&[&alice()]).await;
    let settings = strategy(SharingStrategy::ErrorOnVerifiedUserProblem);
    let refused =
        bob1.machine.share_room_key(room(), [alice().as_ref()], &settings, world.clock.now()).await.unwrap_err();
    assert_eq!(refused, ShareError::VerifiedUserProblem { unsigned_devices: vec![], violations: vec![alice()] });
    bob1.machine.withdraw_verification(&alice()).await.unwrap();
    bob1.share_room_key(room(), &[&alice()], &settings).await;
    assert_eq!(inbox(&world, &alice(), "A1").len(), 1);
}

async fn decrypt_with(
    device: &TestDevice,
    event: &Value,
    requirement: TrustRequirement,
) -> Result<hush_crypto_core::MegolmDecryptionInfo, MegolmError> {
    let raw: ruma_common::serde::Raw<Value> = ruma_common::serde::Raw::new(event).unwrap();
    let settings = DecryptionSettings { sender_device_trust_requirement: requirement };
    device.machine.decrypt_room_event(&raw, room(), &settings).await.map(|d| d.info)
}

/// The decryption trust requirements: a device its owner cross-signed
/// passes `CrossSigned`; an unsigned device of a cross-signing user fails
/// `CrossSigned` and `CrossSignedOrLegacy`; a user without cross-signing
/// passes `CrossSignedOrLegacy` only; the info says which.
#[tokio::test]
async fn decryption_trust_requirements_follow_cross_signing() {
    let world = World::new();
    let alice1 = world.device(&alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    let alice2 = world.device(&alice(), "A2").await; // never signed
    let carol = owned_user_id!("@carol:example.org");
    let carol1 = world.device(&carol, "C1").await; // no cross-signing at all
    let mut bob1 = world.device(&bob(), "B1").await;
    for sender in [&alice1, &alice2, &carol1] {
        sender.share_room_key(room(), &[&bob()], &EncryptionSettings::default()).await;
    }
    bob1.sync().await;
    bob1.refresh_keys(&[&alice(), &carol]).await;
    let signed = alice1.encrypt_text(room(), "signed").await;
    let unsigned = alice2.encrypt_text(room(), "unsigned").await;
    let legacy = carol1.encrypt_text(room(), "legacy").await;

    let info = decrypt_with(&bob1, &signed, TrustRequirement::CrossSigned).await.unwrap();
    assert!(info.sender_cross_signed);
    assert_eq!(info.sender_identity, Some(IdentityState::Unverified));
    assert_eq!(info.verification_state, VerificationState::Unverified, "cross-signed, but Bob did not verify Alice");
    for requirement in [TrustRequirement::CrossSigned, TrustRequirement::CrossSignedOrLegacy] {
        assert_eq!(
            decrypt_with(&bob1, &unsigned, requirement).await.unwrap_err(),
            MegolmError::InsufficientSenderTrust { requirement }
        );
    }
    let info = decrypt_with(&bob1, &unsigned, TrustRequirement::Untrusted).await.unwrap();
    assert!(!info.sender_cross_signed);
    let info = decrypt_with(&bob1, &legacy, TrustRequirement::CrossSignedOrLegacy).await.unwrap();
    assert_eq!(info.sender_identity, None);
    assert_eq!(
        decrypt_with(&bob1, &legacy, TrustRequirement::CrossSigned).await.unwrap_err(),
        MegolmError::InsufficientSenderTrust { requirement: TrustRequirement::CrossSigned }
    );
}

/// A reset whose upload never succeeds (a wrong password, an abandoned
/// dialog) changes nothing: this device keeps signing with the keys the
/// server has. Bootstrapping again without reset resumes that same upload.
#[tokio::test]
async fn an_abandoned_reset_keeps_the_current_keys() {
    let world = World::new();
    let alice1 = world.device(&alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    let before = alice1.machine.export_cross_signing_keys().unwrap();
    let master_before = world.server.master_key(&alice()).unwrap();
    let master_of = |request: &hush_crypto_core::OutgoingRequest| match request.request() {
        hush_crypto_core::AnyOutgoingRequest::SigningKeysUpload(upload) => {
            upload.master_key.as_ref().unwrap().deserialize_as_unchecked::<Value>().unwrap()["keys"].clone()
        }
        other => panic!("not a signing-keys upload: {other:?}"),
    };
    let reset = alice1.machine.bootstrap_cross_signing(true).await.unwrap();
    assert_ne!(master_of(&reset), master_before["keys"], "a reset uploads a new master key");
    assert_eq!(alice1.machine.export_cross_signing_keys().unwrap(), before, "still the current keys");
    let resumed = alice1.machine.bootstrap_cross_signing(false).await.unwrap();
    assert_eq!(master_of(&resumed), master_of(&reset), "the same new keys, not a third set");
    alice1.refresh_keys(&[&alice()]).await;
    assert_eq!(state_of(&alice1, &alice()).await, Some(IdentityState::Verified));
}

/// Attack: after Alice reset her identity, the server lists her old one
/// again (the old master, self-signing and user-signing keys, with every
/// signature they carried: Alice's device's on her old master, Bob's on it
/// too). Neither Alice's device nor Bob may trust it again, and Alice's
/// device keeps its current private keys.
#[tokio::test]
async fn a_replayed_old_identity_is_not_trusted_again() {
    let world = World::new();
    let (alice1, bob1) = alice_verified_by_bob(&world).await;
    alice1.refresh_keys(&[&alice()]).await;
    let (old_master, old_self_signing, old_user_signing) = world.server.signing_keys(&alice()).unwrap();

    alice1.bootstrap_cross_signing(true).await;
    alice1.refresh_keys(&[&alice()]).await;
    bob1.refresh_keys(&[&alice()]).await;
    let keys_after_reset = alice1.machine.export_cross_signing_keys().unwrap();
    let (new_master, new_self_signing, new_user_signing) = world.server.signing_keys(&alice()).unwrap();
    assert_eq!(state_of(&bob1, &alice()).await, Some(IdentityState::VerificationViolation));

    world.server.overwrite_signing_keys(&alice(), old_master, old_self_signing, old_user_signing);
    for _ in 0..2 {
        alice1.refresh_keys(&[&alice()]).await;
        bob1.refresh_keys(&[&alice()]).await;
        assert_ne!(state_of(&alice1, &alice()).await, Some(IdentityState::Verified), "Alice trusts her old key");
        assert_ne!(state_of(&bob1, &alice()).await, Some(IdentityState::Verified), "Bob trusts Alice's old key");
    }
    assert!(!is_verified(&bob1, &alice(), "A1").await);
    // Alice's current keys are set aside while the server lists the old
    // identity (not used, not exported), and come back when it lists hers.
    assert!(!alice1.machine.cross_signing_status().has_master);
    assert_eq!(alice1.machine.export_cross_signing_keys().unwrap(), Default::default());
    world.server.overwrite_signing_keys(&alice(), new_master, new_self_signing, new_user_signing);
    alice1.refresh_keys(&[&alice()]).await;
    assert_eq!(alice1.machine.export_cross_signing_keys().unwrap(), keys_after_reset, "the keys were kept");
    assert_eq!(state_of(&alice1, &alice()).await, Some(IdentityState::Verified));
}

/// Attack: Alice's identity is replaced (here by a reset; a server could
/// list one it made) and her device re-signed by the new self-signing key.
/// Bob had verified Alice: her device is cross-signed, but by keys nobody
/// verified. `CrossSigned` refuses its messages, the identity-based
/// strategy refuses to share, and a room key Bob shared under
/// `OnlyTrustedDevices` before is replaced (trust lost) with Alice's device
/// told `m.unverified`.
#[tokio::test]
async fn a_verification_violation_is_enforced_when_decrypting_and_sharing() {
    let world = World::new();
    let (alice1, mut bob1) = alice_verified_by_bob(&world).await;
    let trusted = strategy(SharingStrategy::OnlyTrustedDevices);
    bob1.share_room_key(room(), &[&alice()], &trusted).await;
    let before = bob1.encrypt_text(room(), "before").await;
    inbox(&world, &alice(), "A1");

    alice1.bootstrap_cross_signing(true).await;
    alice1.share_room_key(room(), &[&bob()], &EncryptionSettings::default()).await;
    let from_alice = alice1.encrypt_text(room(), "from the reset identity").await;
    bob1.sync().await;
    bob1.refresh_keys(&[&alice()]).await;
    let trust = bob1.machine.device_trust(&alice(), "A1".into()).await.unwrap().unwrap();
    assert!(trust.cross_signed_by_owner && !trust.is_verified(), "signed by the new, unverified key");
    assert_eq!(
        decrypt_with(&bob1, &from_alice, TrustRequirement::CrossSigned).await.unwrap_err(),
        MegolmError::InsufficientSenderTrust { requirement: TrustRequirement::CrossSigned }
    );
    assert!(decrypt_with(&bob1, &from_alice, TrustRequirement::Untrusted).await.is_ok());
    let refused = bob1
        .machine
        .share_room_key(room(), [alice().as_ref()], &strategy(SharingStrategy::IdentityBased), world.clock.now())
        .await
        .unwrap_err();
    assert_eq!(refused, ShareError::VerifiedUserProblem { unsigned_devices: vec![], violations: vec![alice()] });

    bob1.share_room_key(room(), &[&alice()], &trusted).await;
    let after = bob1.encrypt_text(room(), "after").await;
    assert_ne!(before["content"]["session_id"], after["content"]["session_id"], "the room key was replaced");
    let notices = inbox(&world, &alice(), "A1");
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["type"], "m.room_key.withheld");
    assert_eq!(notices[0]["content"]["code"], "m.unverified");
}

/// Commands that would mislead are refused: a device holding only the
/// self-signing and user-signing keys (our master key untrusted) cannot
/// verify another user; a device whose account already has an identity it
/// does not hold cannot bootstrap over it without `reset`.
#[tokio::test]
async fn verifying_without_a_trusted_identity_and_bootstrapping_over_one_are_refused() {
    let world = World::new();
    let alice1 = world.device(&alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    let bob1 = world.device(&bob(), "B1").await;
    bob1.bootstrap_cross_signing(false).await;
    let alice2 = world.device(&alice(), "A2").await;
    assert_eq!(alice2.machine.bootstrap_cross_signing(false).await.unwrap_err(), CrossSigningError::IdentityExists);
    let mut partial = alice1.machine.export_cross_signing_keys().unwrap();
    partial.master = None;
    alice2.refresh_keys(&[&alice(), &bob()]).await;
    alice2.machine.import_cross_signing_keys(&partial).await.unwrap();
    assert_eq!(alice2.machine.verify_identity(&bob()).await.unwrap_err(), CrossSigningError::OwnIdentityNotVerified);
    assert_eq!(state_of(&alice2, &bob()).await, Some(IdentityState::Unverified), "nothing changed");
}

/// Key confusion, the other way round: the server lists for Alice a
/// self-signing key that is one of her device's ed25519 key (signed by her
/// master key). The device is refused.
#[tokio::test]
async fn a_device_whose_key_is_a_cross_signing_key_is_refused() {
    let world = World::new();
    let bob1 = world.device(&bob(), "B1").await;
    let confused = RogueDevice::register(&world.server, &alice(), "CONFUSED");
    let _honest = RogueDevice::register(&world.server, &alice(), "HONEST");
    let master = Ed25519SecretKey::new();
    let device_key = confused.ed25519_key().to_base64();
    let mut self_signing = json!({
        "user_id": alice(),
        "usage": ["self_signing"],
        "keys": { format!("ed25519:{device_key}"): device_key },
    });
    let canonical = ruma_common::canonical_json::to_canonical_value(&self_signing).unwrap().to_string();
    let master_id = format!("ed25519:{}", master.public_key().to_base64());
    self_signing["signatures"] =
        json!({ alice().as_str(): { master_id: master.sign(canonical.as_bytes()).to_base64() } });
    world.server.overwrite_signing_keys(
        &alice(),
        cross_signing_key(&alice(), &["master"], &master, None),
        self_signing,
        None,
    );
    bob1.refresh_keys(&[&alice()]).await;
    assert_eq!(state_of(&bob1, &alice()).await, Some(IdentityState::Unverified), "the identity itself is well-formed");
    let devices = bob1.machine.get_user_devices(&alice()).await.unwrap();
    assert_eq!(devices.keys().map(|d| d.as_str()).collect::<Vec<_>>(), vec!["HONEST"]);
}

/// Attack: to get Alice's old, verified master key out of Bob's memory of
/// replaced keys, the server lists forty made-up identities for her, one
/// query after the other, then replays the old one. Made-up keys were never
/// verified, so they are not remembered, and the old key stays refused.
#[tokio::test]
async fn made_up_identities_cannot_flush_a_replaced_key() {
    let world = World::new();
    let (_alice1, bob1) = alice_verified_by_bob(&world).await;
    let (old_master, old_self_signing, _) = world.server.signing_keys(&alice()).unwrap();
    for _ in 0..40 {
        list_made_up_identity(&world, &alice());
        bob1.refresh_keys(&[&alice()]).await;
    }
    world.server.overwrite_signing_keys(&alice(), old_master, old_self_signing, None);
    bob1.refresh_keys(&[&alice()]).await;
    assert_ne!(state_of(&bob1, &alice()).await, Some(IdentityState::Verified));
    // The user may still decide to verify it again, explicitly.
    bob1.machine.verify_identity(&alice()).await.unwrap();
    bob1.drain().await;
    assert_eq!(state_of(&bob1, &alice()).await, Some(IdentityState::Verified));
}

/// Alice resets from her second device. Her first device's keys no longer
/// match: they are set aside (not reported, not used to sign), and Alice
/// verifying her new identity on the first device sticks across queries.
#[tokio::test]
async fn a_device_left_with_old_keys_can_verify_the_new_identity() {
    let world = World::new();
    let alice1 = world.device(&alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    let alice2 = world.device(&alice(), "A2").await;
    alice2.bootstrap_cross_signing(true).await;
    alice1.refresh_keys(&[&alice()]).await;
    assert_eq!(state_of(&alice1, &alice()).await, Some(IdentityState::VerificationViolation));
    assert_eq!(alice1.machine.cross_signing_status(), Default::default(), "the old keys are set aside");
    assert_eq!(
        alice1.machine.verify_device(&alice(), "A2".into()).await.unwrap_err(),
        CrossSigningError::MissingPrivateKey(KeyRole::SelfSigning)
    );
    alice1.machine.verify_identity(&alice()).await.unwrap();
    alice1.drain().await;
    alice1.refresh_keys(&[&alice()]).await;
    assert_eq!(state_of(&alice1, &alice()).await, Some(IdentityState::Verified));
    assert!(is_verified(&alice1, &alice(), "A2").await, "A2 is signed by the identity A1 now trusts");
}

/// An abandoned reset on one device, then another device replaces the
/// identity: the first device's bootstrap without reset refuses to upload
/// its pending keys over it. And a device holding only imported keys that
/// abandons a reset keeps them.
#[tokio::test]
async fn abandoned_resets_never_overwrite_or_lose_anything() {
    let world = World::new();
    let alice1 = world.device(&alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    alice1.machine.bootstrap_cross_signing(true).await.unwrap(); // never sent
    let alice2 = world.device(&alice(), "A2").await;
    alice2.bootstrap_cross_signing(true).await;
    alice1.refresh_keys(&[&alice()]).await;
    assert_eq!(alice1.machine.bootstrap_cross_signing(false).await.unwrap_err(), CrossSigningError::IdentityExists);

    let alice3 = world.device(&alice(), "A3").await;
    let mut partial = alice2.machine.export_cross_signing_keys().unwrap();
    partial.master = None;
    alice3.machine.import_cross_signing_keys(&partial).await.unwrap();
    alice3.machine.bootstrap_cross_signing(true).await.unwrap(); // never sent
    let status = alice3.machine.cross_signing_status();
    assert!(status.has_self_signing && status.has_user_signing && !status.has_master);
}

/// Attack: Bob verified Alice's first and second master keys in turn. The
/// server slips the first back in before Alice's real third key, then
/// replays the second, which carries Bob's signature. Every verified key
/// that was replaced stays refused, whatever came after it.
#[tokio::test]
async fn a_replaced_key_stays_refused_after_interleaved_listings() {
    let world = World::new();
    let (alice1, bob1) = alice_verified_by_bob(&world).await;
    let first = world.server.signing_keys(&alice()).unwrap();
    alice1.bootstrap_cross_signing(true).await;
    bob1.refresh_keys(&[&alice()]).await;
    bob1.machine.verify_identity(&alice()).await.unwrap();
    bob1.drain().await;
    let second = world.server.signing_keys(&alice()).unwrap();
    world.server.overwrite_signing_keys(&alice(), first.0, first.1, first.2);
    bob1.refresh_keys(&[&alice()]).await;
    alice1.bootstrap_cross_signing(true).await;
    bob1.refresh_keys(&[&alice()]).await;
    world.server.overwrite_signing_keys(&alice(), second.0, second.1, second.2);
    bob1.refresh_keys(&[&alice()]).await;
    assert_ne!(state_of(&bob1, &alice()).await, Some(IdentityState::Verified));
}

/// A new device of Bob's learns Alice's identity before it trusts its own
/// (keys imported later): Alice's key, verified by Bob's other device, is
/// still remembered when Alice replaces it, so a replay of it is refused.
#[tokio::test]
async fn a_key_verified_through_imported_keys_is_remembered_when_replaced() {
    let world = World::new();
    let (alice1, bob1) = alice_verified_by_bob(&world).await;
    let bob2 = world.device(&bob(), "B2").await;
    bob2.refresh_keys(&[&alice(), &bob()]).await;
    assert_eq!(state_of(&bob2, &alice()).await, Some(IdentityState::Unverified), "B2 trusts nothing yet");
    bob2.machine.import_cross_signing_keys(&bob1.machine.export_cross_signing_keys().unwrap()).await.unwrap();
    assert_eq!(state_of(&bob2, &alice()).await, Some(IdentityState::Verified), "through Bob's signature");
    let old = world.server.signing_keys(&alice()).unwrap();
    alice1.bootstrap_cross_signing(true).await;
    bob2.refresh_keys(&[&alice()]).await;
    world.server.overwrite_signing_keys(&alice(), old.0, old.1, old.2);
    bob2.refresh_keys(&[&alice()]).await;
    assert_ne!(state_of(&bob2, &alice()).await, Some(IdentityState::Verified));
}

/// A reset whose first attempt met an auth challenge is resumed (bootstrap
/// without reset, as the password helper does) on a device whose keys are
/// set aside and on a device with no keys at all: the same new keys.
#[tokio::test]
async fn a_challenged_reset_resumes_on_devices_without_usable_keys() {
    let world = World::new();
    let alice1 = world.device(&alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    let alice2 = world.device(&alice(), "A2").await;
    alice2.bootstrap_cross_signing(true).await;
    alice1.refresh_keys(&[&alice()]).await;
    let alice3 = world.device(&alice(), "A3").await;
    for device in [&alice1, &alice3] {
        let first = device.machine.bootstrap_cross_signing(true).await.unwrap();
        let resumed = device.machine.bootstrap_cross_signing(false).await.unwrap();
        let master = |r: &hush_crypto_core::OutgoingRequest| match r.request() {
            hush_crypto_core::AnyOutgoingRequest::SigningKeysUpload(u) => {
                u.master_key.as_ref().unwrap().json().get().to_owned()
            }
            _ => panic!("not a signing-keys upload"),
        };
        assert_eq!(master(&first), master(&resumed), "{}", device.device_id);
    }
}

/// Attack on a new login: Bob's new device learns Alice's key, then gets
/// Bob's keys imported (Alice now verified through Bob's signature). The
/// server lists a made-up identity for Bob, then Alice's real new key, then
/// replays Bob's and Alice's old keys. Alice's old key was verified by a
/// user-signing key this device trusted: its replacement is remembered, and
/// the replay is refused (the made-up identity also retires B2's keys until
/// the user imports them again: a denial of service, never a false
/// "verified").
#[tokio::test]
async fn a_made_up_own_identity_cannot_hide_a_replacement() {
    let world = World::new();
    let (alice1, bob1) = alice_verified_by_bob(&world).await;
    let bob2 = world.device(&bob(), "B2").await;
    bob2.refresh_keys(&[&alice(), &bob()]).await;
    bob2.machine.import_cross_signing_keys(&bob1.machine.export_cross_signing_keys().unwrap()).await.unwrap();
    assert_eq!(state_of(&bob2, &alice()).await, Some(IdentityState::Verified));
    let (alice_old, bob_old) =
        (world.server.signing_keys(&alice()).unwrap(), world.server.signing_keys(&bob()).unwrap());

    let (fake_master, fake_self, fake_user) =
        (Ed25519SecretKey::new(), Ed25519SecretKey::new(), Ed25519SecretKey::new());
    world.server.overwrite_signing_keys(
        &bob(),
        cross_signing_key(&bob(), &["master"], &fake_master, None),
        cross_signing_key(&bob(), &["self_signing"], &fake_self, Some(&fake_master)),
        Some(cross_signing_key(&bob(), &["user_signing"], &fake_user, Some(&fake_master))),
    );
    bob2.refresh_keys(&[&bob()]).await;
    alice1.bootstrap_cross_signing(true).await;
    bob2.refresh_keys(&[&alice()]).await;
    world.server.overwrite_signing_keys(&bob(), bob_old.0, bob_old.1, bob_old.2);
    world.server.overwrite_signing_keys(&alice(), alice_old.0, alice_old.1, alice_old.2);
    bob2.refresh_keys(&[&bob()]).await;
    bob2.refresh_keys(&[&alice()]).await;
    // The made-up identity retired B2's keys (a denial of service, undone
    // by the user importing them again)...
    assert_ne!(state_of(&bob2, &bob()).await, Some(IdentityState::Verified));
    bob2.machine.import_cross_signing_keys(&bob1.machine.export_cross_signing_keys().unwrap()).await.unwrap();
    assert_eq!(state_of(&bob2, &bob()).await, Some(IdentityState::Verified), "Bob's own keys are his again");
    // ...and with Bob's identity trusted again, Alice's old key stays refused.
    assert_ne!(state_of(&bob2, &alice()).await, Some(IdentityState::Verified), "Alice's old key stays refused");
}

/// Attack: Alice's second device resets; the server later replays the old
/// identity to her first device, which still holds its keys. Those keys
/// were retired when the new identity appeared: they are not trusted or
/// used again. Importing the new keys replaces them.
#[tokio::test]
async fn retired_keys_are_not_trusted_again_when_their_identity_is_replayed() {
    let world = World::new();
    let alice1 = world.device(&alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    alice1.refresh_keys(&[&alice()]).await;
    let old = world.server.signing_keys(&alice()).unwrap();
    let alice2 = world.device(&alice(), "A2").await;
    alice2.bootstrap_cross_signing(true).await;
    let new = world.server.signing_keys(&alice()).unwrap();
    alice1.refresh_keys(&[&alice()]).await;
    world.server.overwrite_signing_keys(&alice(), old.0, old.1, old.2);
    alice1.refresh_keys(&[&alice()]).await;
    assert_ne!(state_of(&alice1, &alice()).await, Some(IdentityState::Verified));
    assert_eq!(alice1.machine.cross_signing_status(), Default::default());
    world.server.overwrite_signing_keys(&alice(), new.0, new.1, new.2);
    alice1.refresh_keys(&[&alice()]).await;
    alice1.machine.import_cross_signing_keys(&alice2.machine.export_cross_signing_keys().unwrap()).await.unwrap();
    assert!(alice1.machine.cross_signing_status().is_complete());
    assert_eq!(state_of(&alice1, &alice()).await, Some(IdentityState::Verified));
}

/// An abandoned reset on a device without keys, then the user imports the
/// current keys: a later bootstrap without reset does not complete the old
/// reset (the keys are already uploaded: `AlreadyBootstrapped`).
#[tokio::test]
async fn importing_keys_drops_an_abandoned_reset() {
    let world = World::new();
    let alice1 = world.device(&alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    let alice2 = world.device(&alice(), "A2").await;
    alice2.machine.bootstrap_cross_signing(true).await.unwrap(); // never sent
    alice2.machine.import_cross_signing_keys(&alice1.machine.export_cross_signing_keys().unwrap()).await.unwrap();
    assert_eq!(
        alice2.machine.bootstrap_cross_signing(false).await.unwrap_err(),
        CrossSigningError::AlreadyBootstrapped
    );
}

/// Attack: between the user comparing Alice's master key and the call that
/// verifies it, the server swaps in another identity. Verifying the key the
/// user compared is refused and changes nothing; the compared key verifies.
#[tokio::test]
async fn verifying_a_compared_key_refuses_a_swapped_identity() {
    let world = World::new();
    let alice1 = world.device(&alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    let bob1 = world.device(&bob(), "B1").await;
    bob1.bootstrap_cross_signing(false).await;
    bob1.refresh_keys(&[&alice(), &bob()]).await;
    let compared = bob1.machine.get_identity(&alice()).await.unwrap().unwrap().master_key();
    let real = world.server.signing_keys(&alice()).unwrap();
    list_made_up_identity(&world, &alice());
    bob1.refresh_keys(&[&alice()]).await;
    assert_eq!(
        bob1.machine.verify_identity_key(&alice(), compared).await.unwrap_err(),
        CrossSigningError::MasterKeyChanged(alice())
    );
    assert_ne!(state_of(&bob1, &alice()).await, Some(IdentityState::Verified));
    world.server.overwrite_signing_keys(&alice(), real.0, real.1, real.2);
    bob1.refresh_keys(&[&alice()]).await;
    bob1.machine.verify_identity_key(&alice(), compared).await.unwrap();
    bob1.drain().await;
    assert_eq!(state_of(&bob1, &alice()).await, Some(IdentityState::Verified));
}

/// Bob verifies Alice, and the upload of his signature of her master key
/// is lost (the process stops before it is sent; the request queue lives
/// in memory). Before, Bob's next keys query took the server's copy,
/// without his signature: Alice showed as a verification violation (which
/// blocks sending under the identity-based strategy), and his signature
/// never reached the server. Now the copy keeps his signature (it is the
/// same key, and it verifies), Alice stays verified, and the signature is
/// uploaded again.
#[tokio::test]
async fn a_lost_signature_upload_is_made_again_and_the_user_stays_verified() {
    let world = World::new();
    let alice1 = world.device(&alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    let store: Arc<dyn hush_crypto_core::CryptoStore> = Arc::new(hush_crypto_core::MemoryStore::new());
    let bob1 = TestDevice::with_store(&world.server, &world.clock, &bob(), "B1", store.clone()).await;
    bob1.bootstrap_cross_signing(false).await;
    bob1.refresh_keys(&[&alice(), &bob()]).await;
    bob1.machine.verify_identity(&alice()).await.expect("bob verifies alice");
    assert_eq!(state_of(&bob1, &alice()).await, Some(IdentityState::Verified));
    drop(bob1);

    // Bob's process starts again; the queued upload is gone.
    let bob1 = TestDevice::with_store(&world.server, &world.clock, &bob(), "B1", store).await;
    bob1.refresh_keys(&[&alice()]).await;
    assert_eq!(state_of(&bob1, &alice()).await, Some(IdentityState::Verified), "no violation from a lost upload");
    let listed = world.server.query_keys_as(&bob(), &{
        let mut query = ruma_client_api::keys::get_keys::v3::Request::new();
        query.device_keys.insert(alice(), Vec::new());
        query
    });
    let master: Value =
        listed.master_keys.get(&alice()).expect("alice's master key").deserialize_as_unchecked().unwrap();
    let bob_signed = master["signatures"][bob().as_str()].as_object().is_some_and(|s| !s.is_empty());
    assert!(bob_signed, "bob's signature of alice's master key reached the server: {master}");
}
