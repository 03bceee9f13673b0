//! Cross-signing through the client against a real Synapse (ignored by a
//! plain `cargo test`; `cargo xtask test` starts Synapse and runs them):
//! bootstrapping with password auth, a reset that needs the password again,
//! signatures visible to another user, and a second device signed by the
//! first showing verified to someone who verified its owner.

use std::sync::Arc;

use hush_client::{ClientError, http::HttpError};
use hush_testing::synapse::{StoreKind, TestClient};

/// Alice bootstraps with her password; a reset without auth is refused by
/// the server, and with a wrong password too, and neither changes the keys
/// the server lists nor the ones her device holds; with the password the
/// reset goes through and the server lists the new master key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn bootstrap_with_password_and_a_reset_needs_it_again() {
    let alice = TestClient::new_user("alice", "A1", StoreKind::Redb).await;
    let encryption = alice.client.encryption();
    let (_, password) = alice.credentials.clone();
    encryption.bootstrap_cross_signing_with_password(false, &password).await.expect("bootstrap");
    assert!(encryption.cross_signing_status().unwrap().is_complete());
    let user_id = alice.session.user_id.clone();
    let master = |identity: Option<hush_client::UserIdentity>| identity.expect("identity").inner().master_key();
    encryption.refresh_user_keys(&[&user_id]).await.unwrap();
    let first = master(encryption.get_user_identity(&user_id).await.unwrap());
    assert!(encryption.get_user_identity(&user_id).await.unwrap().unwrap().is_verified());
    let keys_before = encryption.export_cross_signing_keys().unwrap();

    let refused = encryption.bootstrap_cross_signing(true, None).await.unwrap_err();
    assert!(matches!(refused, ClientError::Http(HttpError::AuthRequired { .. })), "{refused}");
    let wrong = encryption.bootstrap_cross_signing_with_password(true, "not the password").await.unwrap_err();
    assert!(
        matches!(&wrong, ClientError::Http(HttpError::AuthRequired { errcode: Some(code), .. }) if code == "M_FORBIDDEN"),
        "{wrong}"
    );
    encryption.refresh_user_keys(&[&user_id]).await.unwrap();
    assert_eq!(master(encryption.get_user_identity(&user_id).await.unwrap()), first, "the server kept the keys");
    assert_eq!(encryption.export_cross_signing_keys().unwrap(), keys_before, "so did the device");

    encryption.bootstrap_cross_signing_with_password(true, &password).await.expect("reset with the password");
    encryption.refresh_user_keys(&[&user_id]).await.unwrap();
    let identity = encryption.get_user_identity(&user_id).await.unwrap().unwrap();
    assert_ne!(identity.inner().master_key(), first, "a new master key");
    assert!(identity.is_verified());
}

/// Alice signs her second device from her first; Bob verifies Alice's
/// identity. The signatures are on the server: Bob's `/keys/query` shows
/// Alice's self-signing key's signature on A2 and his own on her master
/// key, and both of Alice's devices show verified to him.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn a_second_device_signed_by_the_first_shows_verified_to_bob() {
    let alice1 = TestClient::new_user("alice", "A1", StoreKind::Redb).await;
    let (name, password) = alice1.credentials.clone();
    let alice = alice1.session.user_id.clone();
    alice1.client.encryption().bootstrap_cross_signing_with_password(false, &password).await.expect("bootstrap");
    let alice2 =
        TestClient::login(&name, &password, "A2", StoreKind::Redb, Arc::new(tempfile::TempDir::new().unwrap())).await;
    alice2.sync().await;
    let a1 = alice1.client.encryption();
    a1.refresh_user_keys(&[&alice]).await.unwrap();
    let a2_seen_by_a1 = a1.get_device(&alice, "A2".into()).await.unwrap().expect("A1 knows A2");
    assert!(!a2_seen_by_a1.is_verified());
    a2_seen_by_a1.verify().await.expect("A1 signs A2");
    assert!(a1.get_device(&alice, "A2".into()).await.unwrap().unwrap().is_verified());

    let bob = TestClient::new_user("bob", "B1", StoreKind::Redb).await;
    let (_, bob_password) = bob.credentials.clone();
    let b = bob.client.encryption();
    b.bootstrap_cross_signing_with_password(false, &bob_password).await.expect("bob bootstraps");
    let identity = b.get_user_identity(&alice).await.unwrap().expect("Alice's identity");
    assert!(!identity.is_verified());
    let devices = b.get_user_devices(&alice).await.unwrap();
    assert_eq!(devices.len(), 2, "Bob sees both of Alice's devices");
    for device in devices {
        assert!(device.is_cross_signed_by_owner(), "{} is signed by Alice", device.data().device_id());
        assert!(!device.is_verified());
    }
    identity.verify().await.expect("bob verifies alice");
    b.refresh_user_keys(&[&alice]).await.unwrap();
    let identity = b.get_user_identity(&alice).await.unwrap().unwrap();
    assert!(identity.is_verified());
    let master = identity.inner().data().master_key().signed_json().clone();
    assert!(master["signatures"][bob.session.user_id.as_str()].as_object().is_some_and(|s| !s.is_empty()), "{master}");
    let ssk = format!("ed25519:{}", identity.inner().self_signing_key().to_base64());
    let devices = b.get_user_devices(&alice).await.unwrap();
    assert_eq!(devices.len(), 2);
    for device in devices {
        assert!(device.data().signed_keys()["signatures"][alice.as_str()][&ssk].is_string());
        assert!(device.is_verified(), "{} shows verified to Bob", device.data().device_id());
    }
}

/// Bob verified Alice, who shares a room with him; Alice resets her
/// identity (with her password). Bob's room now lists Alice as a
/// verification violation, until he withdraws the old verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn a_reset_shows_as_a_violation_in_a_shared_room() {
    let alice = TestClient::new_user("alice", "A1", StoreKind::Redb).await;
    let bob = TestClient::new_user("bob", "B1", StoreKind::Redb).await;
    let (_, alice_password) = alice.credentials.clone();
    let (_, bob_password) = bob.credentials.clone();
    alice.client.encryption().bootstrap_cross_signing_with_password(false, &alice_password).await.unwrap();
    bob.client.encryption().bootstrap_cross_signing_with_password(false, &bob_password).await.unwrap();
    let alice_id = alice.session.user_id.clone();
    let room = alice.client.create_room("cross-signing", true, &[bob.session.user_id.as_ref()]).await.unwrap();
    bob.join(&room).await;
    bob.sync_until("the room's members", |c| c.client.get_room(&room).is_some_and(|r| r.key_recipients().len() == 2))
        .await;
    let identity = bob.client.encryption().get_user_identity(&alice_id).await.unwrap().expect("identity");
    identity.verify().await.unwrap();
    let bob_room = bob.client.get_room(&room).unwrap();
    assert_eq!(bob_room.identity_violations().await.unwrap(), vec![]);

    alice.client.encryption().bootstrap_cross_signing_with_password(true, &alice_password).await.unwrap();
    bob.client.encryption().refresh_user_keys(&[&alice_id]).await.unwrap();
    assert_eq!(
        bob_room.identity_violations().await.unwrap(),
        vec![(alice_id.clone(), hush_crypto_core::identities::IdentityState::VerificationViolation)]
    );
    let identity = bob.client.encryption().get_user_identity(&alice_id).await.unwrap().unwrap();
    identity.withdraw_verification().await.unwrap();
    assert_eq!(bob_room.identity_violations().await.unwrap(), vec![]);
}
