//! The store lock's checks: leases, take-overs, fences and release, as
//! every backend must implement them (see `hush_crypto_core::store::lock`).

use std::time::Duration;

use hush_crypto_core::{
    Changes, CryptoStore, StoreError, Timestamp,
    store::{StoreLease, TrackedUser},
};
use ruma_common::OwnedUserId;

use super::StoreFactory;

const LEASE: Duration = Duration::from_secs(10);

fn at(seconds: u64) -> Timestamp {
    Timestamp::from_millis(1_000_000 + seconds * 1000)
}

/// A batch tracking `user`, written under `lease`.
fn fenced(user: &str, lease: &StoreLease) -> Changes {
    let user_id: OwnedUserId = user.try_into().expect("user id");
    Changes {
        tracked_users: vec![TrackedUser { user_id, dirty: true }],
        fence: Some(lease.fence()),
        ..Default::default()
    }
}

async fn tracked<S: CryptoStore>(store: &S) -> Vec<String> {
    let users = store.load_tracked_users().await.expect("load tracked users");
    users.into_iter().map(|u| u.user_id.to_string()).collect()
}

/// One holder at a time; a renewal keeps the generation; an expired lease
/// is taken over with a new generation, after which the old holder's
/// batches are refused whole and its release does nothing; a release lets
/// the next holder in at once; the lock survives a reopen.
pub async fn store_lock_leases_and_fences<F: StoreFactory>(factory: &mut F) {
    let store = factory.create();
    let a = store.try_lock("host-a", at(0), LEASE).await.expect("a free lock is taken");
    let held = store.try_lock("host-b", at(1), LEASE).await.expect_err("a held lock is refused");
    assert_eq!(held, StoreError::LockHeld { holder: "host-a".into(), expires_at: a.expires_at });
    store.save_changes(fenced("@a1:example.org", &a)).await.expect("the holder writes");
    let renewed = store.try_lock("host-a", at(5), LEASE).await.expect("the holder renews");
    assert_eq!(renewed.generation, a.generation, "a renewal is not a change of hands");
    assert_eq!(renewed.expires_at, at(15));

    let b = store.try_lock("host-b", at(15), LEASE).await.expect("an expired lease is taken over");
    assert_eq!(b.generation, a.generation + 1);
    let lost = store.save_changes(fenced("@a2:example.org", &renewed)).await.expect_err("a stale holder's write");
    assert!(matches!(lost, StoreError::LockLost { ref holder, .. } if holder == "host-b"), "{lost:?}");
    assert_eq!(tracked(&store).await, vec!["@a1:example.org"], "a refused batch left something behind");
    store.save_changes(fenced("@b1:example.org", &b)).await.expect("the new holder writes");

    store.unlock(&renewed).await.expect("a stale release is no error");
    let still = store.try_lock("host-a", at(16), LEASE).await.expect_err("a stale release let go of b's lock");
    assert!(matches!(still, StoreError::LockHeld { ref holder, .. } if holder == "host-b"), "{still:?}");
    store.unlock(&b).await.expect("release");
    let again = store.try_lock("host-a", at(16), LEASE).await.expect("a released lock is free before its lease ends");
    assert_eq!(again.generation, b.generation + 1, "the lock changed hands");
    let unfenced = Changes { next_batch_token: Some("t".into()), ..Default::default() };
    store.save_changes(unfenced).await.expect("an unfenced batch is not checked");

    drop(store);
    if let Some(store) = factory.reopen() {
        let held = store.try_lock("host-b", at(17), LEASE).await.expect_err("the lock survives a reopen");
        assert!(matches!(held, StoreError::LockHeld { ref holder, .. } if holder == "host-a"), "{held:?}");
        store.save_changes(fenced("@a3:example.org", &again)).await.expect("the holder writes after a reopen");
        let mut users = tracked(&store).await;
        users.sort();
        assert_eq!(users, vec!["@a1:example.org", "@a3:example.org", "@b1:example.org"]);
    }
}
