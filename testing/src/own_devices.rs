//! Two devices of one user, for the tests of sharing secrets and room keys
//! between one's own devices: the first with cross-signing and a backup,
//! the second a new login, verified by the first (and trusting it) or not.

use std::sync::Arc;

use hush_crypto_core::{
    LocalTrust,
    backup::{BACKUP_ALGORITHM, BackupDecryptionKey},
};
use ruma_common::{UserId, user_id};

use crate::{TestDevice, TestServer, VirtualClock};
use hush_crypto_core::secret_storage::names;

/// The user of [`first_device`] and [`second_device`].
pub fn alice() -> &'static UserId {
    user_id!("@alice:example.org")
}

/// ALICE1, with cross-signing and a backup whose key it holds.
pub async fn first_device() -> (Arc<TestServer>, VirtualClock, TestDevice, BackupDecryptionKey) {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let first = TestDevice::new(&server, &clock, alice(), "ALICE1").await;
    first.bootstrap_cross_signing(false).await;
    let backup_key = BackupDecryptionKey::generate().expect("a backup key");
    let auth_data = first.machine.backup_auth_data(&backup_key.public_key()).await.expect("auth data");
    server.create_backup_version(alice(), BACKUP_ALGORITHM, auth_data);
    first.machine.save_backup_decryption_key(&backup_key).await.expect("key saved");
    (server, clock, first, backup_key)
}

/// ALICE2, a new login. With `verified`, each has verified the other
/// (ALICE1 cross-signs ALICE2; ALICE2 trusts ALICE1 by hand, as after a SAS).
pub async fn second_device(
    server: &Arc<TestServer>,
    clock: &VirtualClock,
    first: &TestDevice,
    verified: bool,
) -> TestDevice {
    let second = TestDevice::new(server, clock, alice(), "ALICE2").await;
    first.refresh_keys(&[alice()]).await;
    second.refresh_keys(&[alice()]).await;
    if verified {
        first.machine.verify_device(alice(), "ALICE2".into()).await.expect("ALICE2 cross-signed");
        first.drain().await;
        second.machine.set_local_trust(alice(), "ALICE1".into(), LocalTrust::Verified).await.expect("trust set");
    }
    second
}

/// Both devices (see [`first_device`] and [`second_device`]).
pub async fn two_devices(
    verified: bool,
) -> (Arc<TestServer>, VirtualClock, TestDevice, TestDevice, BackupDecryptionKey) {
    let (server, clock, first, backup_key) = first_device().await;
    let second = second_device(&server, &clock, &first, verified).await;
    (server, clock, first, second, backup_key)
}

/// ALICE2 asks for every secret; ALICE1 syncs and answers (claiming a
/// session with ALICE2 first); ALICE2 syncs.
pub async fn ask_for_all_secrets(server: &TestServer, first: &mut TestDevice, second: &mut TestDevice) {
    for name in [names::MASTER, names::SELF_SIGNING, names::USER_SIGNING] {
        second.machine.request_secret(name).await.expect("request opened");
    }
    let info = server.latest_backup(alice()).expect("a backup");
    second.machine.request_backup_key(&info).await.expect("request opened");
    second.drain().await;
    first.sync().await;
    first.drain().await;
    second.sync().await;
    second.drain().await;
}
