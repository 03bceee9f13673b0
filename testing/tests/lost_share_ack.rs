//! A share of the room key that the server took, but whose answer never
//! reached the engine (the process was killed in between), still counts
//! when a member leaves. Found by the network simulator (seed 5768).

use std::sync::Arc;

use hush_crypto_core::{
    AnyOutgoingRequest, MEGOLM_ALGORITHM, Membership, MemoryStore, RoomEncryption, RoomInfo, RoomReadiness,
};
use hush_testing::{TestDevice, TestServer, VirtualClock};
use ruma_common::{room_id, user_id};

fn room(carol: Membership) -> RoomInfo {
    let encryption =
        RoomEncryption { algorithm: MEGOLM_ALGORITHM.to_owned(), rotation_period_ms: None, rotation_period_msgs: None };
    let members =
        vec![(user_id!("@bob:e.org").to_owned(), Membership::Join), (user_id!("@carol:e.org").to_owned(), carol)];
    RoomInfo::new(room_id!("!r:e.org").to_owned(), members, Some(encryption))
}

/// Attack (or plain bad luck): Bob shares the room key with Carol; the
/// server delivers it, but Bob is killed before he hears the answer, so
/// no share is recorded. Carol leaves. Bob's next message used the same
/// room key (no recorded share with Carol, so no rotation), and Carol,
/// who holds it, read a message sent after she left. Now every device a
/// share was sent toward is saved before the request leaves, and counts.
#[tokio::test]
async fn a_member_whose_share_was_never_acknowledged_still_makes_the_key_rotate_when_leaving() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let store = Arc::new(MemoryStore::new());
    let bob = TestDevice::with_store(&server, &clock, user_id!("@bob:e.org"), "BOB", store.clone()).await;
    let mut carol = TestDevice::new(&server, &clock, user_id!("@carol:e.org"), "CAROL").await;

    // Bob prepares the room; the share goes to the server, its answer is lost.
    let mut shared = false;
    for _ in 0..8 {
        match bob.machine.prepare_room(&room(Membership::Join), clock.now()).await.unwrap() {
            RoomReadiness::Ready { .. } => panic!("ready before the share was answered"),
            RoomReadiness::Waiting { shares, .. } if shares > 0 => {
                for request in bob.machine.outgoing_requests(clock.now()).await.unwrap() {
                    if let AnyOutgoingRequest::ToDevice(r) = request.request() {
                        server.send_to_device(user_id!("@bob:e.org"), r);
                        shared = true;
                    }
                }
                break;
            }
            RoomReadiness::Waiting { .. } => bob.drain().await,
        }
    }
    assert!(shared, "the room key went to the server");
    let old_session = carol.sync().await.room_keys.first().expect("Carol got the room key").session_id.clone();

    // Bob is killed and reopened from his store; Carol leaves; Bob sends.
    drop(bob);
    let bob = TestDevice::with_store(&server, &clock, user_id!("@bob:e.org"), "BOB", store).await;
    let new_session = bob.prepare_room(&room(Membership::Leave)).await;
    assert_ne!(new_session, old_session, "the room key rotated away from the member who left");
    let event = bob.encrypt_text(room_id!("!r:e.org"), "after Carol left").await;
    carol.sync().await;
    assert!(carol.decrypt_text(room_id!("!r:e.org"), &event).await.is_err(), "Carol cannot read it");
}
