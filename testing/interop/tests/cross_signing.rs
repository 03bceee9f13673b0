//! Cross-signing between hush and matrix-sdk-crypto, on the wire only (the
//! in-process server's keys-query bodies): keys and signatures made by
//! either side are accepted by the other, and both sides, looking at the
//! same user, agree on trust: verified identity and devices, a device the
//! server injected, a reset of a verified identity (verification
//! violation), a reset of an unverified one (pin violation); an identity
//! using one key in two roles is refused by hush and accepted by
//! matrix-sdk-crypto 0.19.1 (the test pins that difference).

use std::sync::Arc;

use hush_crypto_core::identities::IdentityState;
use hush_interop::SdkDevice;
use hush_testing::{RogueDevice, TestDevice, TestServer, VirtualClock};
use ruma::{OwnedUserId, UserId, owned_user_id};
use serde_json::json;
use vodozemac::Ed25519SecretKey;

fn alice() -> OwnedUserId {
    owned_user_id!("@alice:example.org")
}

fn bob() -> OwnedUserId {
    owned_user_id!("@bob:example.org")
}

fn carol() -> OwnedUserId {
    owned_user_id!("@carol:example.org")
}

async fn hush_state(device: &TestDevice, user_id: &UserId) -> Option<IdentityState> {
    device.machine.get_identity(user_id).await.unwrap().map(|i| i.state())
}

async fn hush_device_verified(device: &TestDevice, user_id: &UserId, device_id: &str) -> bool {
    device.machine.device_trust(user_id, device_id.into()).await.unwrap().expect("known").is_verified()
}

async fn sdk_device(sdk: &SdkDevice, user_id: &UserId, device_id: &str) -> matrix_sdk_crypto::Device {
    sdk.machine.get_device(user_id, device_id.into(), None).await.unwrap().expect("known device")
}

/// The same four cases hush's own scenario tests cover, each seen by a
/// hush observer and a matrix-sdk-crypto observer at once.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    verified: bool,
    verification_violation: bool,
    pin_violation: bool,
}

/// matrix-sdk-crypto queries every tracked user again (it learns of its
/// own signatures from the server, as after any verification).
async fn sdk_refresh(sdk: &SdkDevice) {
    sdk.machine.mark_all_tracked_users_as_dirty().await.unwrap();
    sdk.drain().await;
}

async fn seen_by_sdk(sdk: &SdkDevice, user_id: &UserId) -> Option<Seen> {
    let identity = sdk.machine.get_identity(user_id, None).await.unwrap()?;
    let other = identity.other().expect("another user's identity");
    Some(Seen {
        verified: other.is_verified(),
        verification_violation: other.has_verification_violation(),
        pin_violation: other.identity_needs_user_approval(),
    })
}

async fn seen_by_hush(hush: &TestDevice, user_id: &UserId) -> Option<Seen> {
    let identity = hush.machine.get_identity(user_id).await.unwrap()?;
    Some(Seen {
        verified: identity.is_verified(),
        verification_violation: identity.has_verification_violation(),
        pin_violation: identity.has_pin_violation(),
    })
}

/// hush's cross-signing (Alice, her second device signed by her first) is
/// accepted by matrix-sdk-crypto, whose verification of Alice makes both
/// her devices verified there; matrix-sdk-crypto's cross-signing (Bob) is
/// accepted by hush, whose verification of Bob makes Bob's device
/// verified here; and each side's signature on the other's master key
/// does not disturb the owner's view of its own identity.
#[tokio::test]
async fn keys_and_signatures_made_by_either_side_are_accepted_by_the_other() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice1 = TestDevice::new(&server, &clock, &alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    let _alice2 = TestDevice::new(&server, &clock, &alice(), "A2").await;
    alice1.refresh_keys(&[&alice()]).await;
    alice1.machine.verify_device(&alice(), "A2".into()).await.unwrap();
    alice1.drain().await;

    let bob1 = SdkDevice::new(&server, &bob(), "B1").await;
    bob1.bootstrap_cross_signing(false).await;
    bob1.machine.update_tracked_users([alice().as_ref()]).await.unwrap();
    bob1.drain().await;
    let identity = bob1.machine.get_identity(&alice(), None).await.unwrap().expect("sdk parsed hush's identity");
    assert!(!identity.is_verified());
    for device_id in ["A1", "A2"] {
        let device = sdk_device(&bob1, &alice(), device_id).await;
        assert!(device.is_cross_signed_by_owner(), "sdk accepts hush's device signature on {device_id}");
        assert!(!device.is_verified());
    }
    let request = identity.other().unwrap().verify().await.expect("sdk signs hush's master key");
    bob1.upload_signatures(&request);
    sdk_refresh(&bob1).await;
    for device_id in ["A1", "A2"] {
        assert!(sdk_device(&bob1, &alice(), device_id).await.is_verified(), "{device_id} verified in the sdk");
    }

    alice1.refresh_keys(&[&alice(), &bob()]).await;
    assert_eq!(hush_state(&alice1, &bob()).await, Some(IdentityState::Unverified), "hush parsed sdk's identity");
    let trust = alice1.machine.device_trust(&bob(), "B1".into()).await.unwrap().unwrap();
    assert!(trust.cross_signed_by_owner && !trust.is_verified(), "hush accepts sdk's device signature");
    alice1.machine.verify_identity(&bob()).await.unwrap();
    alice1.drain().await;
    assert!(hush_device_verified(&alice1, &bob(), "B1").await);
    assert_eq!(hush_state(&alice1, &alice()).await, Some(IdentityState::Verified), "sdk's signature on it is harmless");

    // Both sides query again: the other side's signatures are now part of
    // each master key, and nobody's view changed.
    sdk_refresh(&bob1).await;
    let own = bob1.machine.get_identity(&bob(), None).await.unwrap().unwrap();
    assert!(own.own().expect("own identity").is_verified(), "hush's signature on Bob's master key is harmless");
    assert!(sdk_device(&bob1, &alice(), "A2").await.is_verified());
}

/// Carol (hush) and Bob (matrix-sdk-crypto) both verified Alice, and
/// neither verified Dan. Then: the server injects an unsigned device into
/// Alice's list; Alice resets her identity; Dan resets his; the server
/// lists for Eve an identity whose self-signing key is her master key.
/// hush and matrix-sdk-crypto agree on every case but the last, where hush
/// is stricter (see the end of the test).
#[tokio::test]
async fn hush_and_matrix_sdk_crypto_agree_on_trust() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let dan = owned_user_id!("@dan:example.org");
    let alice1 = TestDevice::new(&server, &clock, &alice(), "A1").await;
    alice1.bootstrap_cross_signing(false).await;
    let dan1 = TestDevice::new(&server, &clock, &dan, "D1").await;
    dan1.bootstrap_cross_signing(false).await;
    let carol1 = TestDevice::new(&server, &clock, &carol(), "C1").await;
    carol1.bootstrap_cross_signing(false).await;
    carol1.refresh_keys(&[&alice(), &dan, &carol()]).await;
    carol1.machine.verify_identity(&alice()).await.unwrap();
    carol1.drain().await;
    let bob1 = SdkDevice::new(&server, &bob(), "B1").await;
    bob1.bootstrap_cross_signing(false).await;
    bob1.machine.update_tracked_users([alice().as_ref(), dan.as_ref()]).await.unwrap();
    bob1.drain().await;
    let identity = bob1.machine.get_identity(&alice(), None).await.unwrap().unwrap();
    bob1.upload_signatures(&identity.other().unwrap().verify().await.unwrap());
    sdk_refresh(&bob1).await;

    let verified = Seen { verified: true, verification_violation: false, pin_violation: false };
    let unverified = Seen { verified: false, verification_violation: false, pin_violation: false };
    assert_eq!(seen_by_hush(&carol1, &alice()).await, Some(verified));
    assert_eq!(seen_by_sdk(&bob1, &alice()).await, seen_by_hush(&carol1, &alice()).await);
    assert_eq!(seen_by_hush(&carol1, &dan).await, Some(unverified));
    assert_eq!(seen_by_sdk(&bob1, &dan).await, seen_by_hush(&carol1, &dan).await);

    // An unsigned device injected into Alice's list.
    let _evil = RogueDevice::register(&server, &alice(), "EVIL");
    carol1.refresh_keys(&[&alice()]).await;
    sdk_refresh(&bob1).await;
    let evil_sdk = sdk_device(&bob1, &alice(), "EVIL").await;
    let evil_hush = carol1.machine.device_trust(&alice(), "EVIL".into()).await.unwrap().unwrap();
    assert_eq!((evil_sdk.is_cross_signed_by_owner(), evil_sdk.is_verified()), (false, false));
    assert_eq!((evil_hush.cross_signed_by_owner, evil_hush.is_verified()), (false, false));
    assert!(sdk_device(&bob1, &alice(), "A1").await.is_verified());
    assert!(hush_device_verified(&carol1, &alice(), "A1").await);

    // Alice resets (a verified identity) and Dan resets (an unverified one).
    alice1.bootstrap_cross_signing(true).await;
    dan1.bootstrap_cross_signing(true).await;
    carol1.refresh_keys(&[&alice(), &dan]).await;
    sdk_refresh(&bob1).await;
    // The master key changed too: both report the pin as off as well.
    let violation = Seen { verified: false, verification_violation: true, pin_violation: true };
    assert_eq!(seen_by_hush(&carol1, &alice()).await, Some(violation));
    assert_eq!(seen_by_sdk(&bob1, &alice()).await, seen_by_hush(&carol1, &alice()).await);
    let pin = Seen { verified: false, verification_violation: false, pin_violation: true };
    assert_eq!(seen_by_hush(&carol1, &dan).await, Some(pin));
    assert_eq!(seen_by_sdk(&bob1, &dan).await, seen_by_hush(&carol1, &dan).await);

    // One key in two roles for Eve.
    let eve = owned_user_id!("@eve:example.org");
    let _eve1 = RogueDevice::register(&server, &eve, "E1");
    let key = Ed25519SecretKey::new();
    let public = key.public_key().to_base64();
    let master = json!({"user_id": eve, "usage": ["master"], "keys": {format!("ed25519:{public}"): public}});
    let mut self_signing =
        json!({"user_id": eve, "usage": ["self_signing"], "keys": {format!("ed25519:{public}"): public}});
    let canonical = ruma::canonical_json::to_canonical_value(&self_signing).unwrap().to_string();
    self_signing["signatures"] =
        json!({eve.as_str(): {format!("ed25519:{public}"): key.sign(canonical.as_bytes()).to_base64()}});
    server.overwrite_signing_keys(&eve, master, self_signing, None);
    carol1.refresh_keys(&[&eve]).await;
    bob1.machine.update_tracked_users([eve.as_ref()]).await.unwrap();
    bob1.drain().await;
    assert_eq!(seen_by_hush(&carol1, &eve).await, None, "hush refuses the identity");
    // The one known disagreement: matrix-sdk-crypto 0.19.1 accepts a
    // self-signing key equal to the master key (the key confusion Albrecht
    // et al. describe); hush refuses it. If this starts failing, the sdk
    // refuses it too and the two agree: assert `None` here then.
    assert!(seen_by_sdk(&bob1, &eve).await.is_some(), "matrix-sdk-crypto accepts one key in two roles");
}
