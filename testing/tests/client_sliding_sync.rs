//! The two-user scenario over simplified sliding sync (MSC4186) against a
//! real Synapse (started by `cargo xtask test`): every client talks
//! through a proxy that refuses `/v3/sync`, so only sliding sync feeds
//! them.

use std::sync::Arc;

use hush_client::Membership;
use hush_testing::proxy::{Calls, Fault, FaultProxy, Rewrite, Rule};
use hush_testing::synapse::{ClientOptions, StoreKind, TestClient, homeserver_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn two_users_talk_over_sliding_sync_through_invites_restarts_and_new_devices() {
    let proxy = FaultProxy::start(&homeserver_url()).await;
    let classic = proxy.add(Rule::path("/v3/sync").fault(Fault::Status(500)));
    let options = ClientOptions { sliding_sync: true, ..ClientOptions::at(&proxy.url()) };
    let kind = StoreKind::Redb;
    let alice = TestClient::new_user_with("alice", "ALICE", kind, options.clone()).await;
    assert!(alice.client.supports_sliding_sync().await.expect("versions"), "Synapse offers MSC4186");
    let bob1 = TestClient::new_user_with("bob", "BOB1", kind, options.clone()).await;
    let (bob_name, password) = bob1.credentials.clone();
    let bob2 = TestClient::login_with(
        &bob_name,
        &password,
        "BOB2",
        kind,
        Arc::new(tempfile::TempDir::new().unwrap()),
        options.clone(),
    )
    .await;

    let room = alice.client.create_room("sliding", true, &[&bob1.session.user_id]).await.expect("create");
    alice.sync_until("the new room, encrypted", |c| c.client.get_room(&room).is_some_and(|r| r.is_encrypted())).await;
    // Attack: the inviter's stripped state claims Bob already joined (so
    // that his client would treat the room as joined and its members as
    // recipients of his keys). The invite stays an invite.
    let bob_id = bob1.session.user_id.to_string();
    let forged = proxy.add(Rule::path("simplified_msc3575/sync").token(&bob1.session.access_token).fault(
        Fault::Rewrite(Rewrite(Arc::new(move |body: &mut serde_json::Value| {
            let Some(rooms) = body["rooms"].as_object_mut() else { return };
            for room in rooms.values_mut() {
                if let Some(state) = room["invite_state"].as_array_mut() {
                    state.push(serde_json::json!({"type": "m.room.member", "state_key": bob_id, "sender": bob_id,
                        "content": {"membership": "join"}}));
                }
            }
        }))),
    ));
    bob1.sync_until("the invite", |c| c.client.get_room(&room).is_some_and(|r| r.membership().is_some())).await;
    assert_eq!(bob1.client.get_room(&room).unwrap().membership(), Some(Membership::Invite), "a forged join is ignored");
    assert!(forged.caught() > 0, "the forged state was served");
    forged.remove();
    assert!(bob1.client.get_room(&room).unwrap().is_encrypted(), "the invite's stripped state says encrypted");
    bob1.join(&room).await;
    bob2.sync().await;
    alice.sync_until("bob's join", |c| c.client.get_room(&room).is_some_and(|r| r.key_recipients().len() == 2)).await;

    let first = alice.client.get_room(&room).unwrap().send_text("hello bob").await.expect("alice sends").event_id;
    for bob in [&bob1, &bob2] {
        bob.sync_until("alice's message", |c| c.texts(&room).contains(&"hello bob".to_owned())).await;
    }
    let reply = bob1.client.get_room(&room).unwrap().send_text("hello alice").await.expect("bob sends").event_id;
    alice.sync_until("bob's reply", |c| c.texts(&room).contains(&"hello alice".to_owned())).await;

    // Alice restarts from her store (the connection position and the
    // to-device token are in it); Bob logs in on a third device, which she
    // learns of from the e2ee extension's device list changes.
    {
        let machine = alice.client.olm_machine().unwrap();
        let pos = machine.store().get_custom_value("hush.sliding_sync.pos").await.unwrap();
        assert!(pos.is_some(), "the connection position is saved");
    }
    let alice = alice.restart().await;
    let bob3 = TestClient::login_with(
        &bob_name,
        &password,
        "BOB3",
        kind,
        Arc::new(tempfile::TempDir::new().unwrap()),
        options.clone(),
    )
    .await;
    bob3.sync().await;
    alice.sync().await;
    alice.client.get_room(&room).unwrap().send_text("after the restart").await.expect("alice sends again");
    for bob in [&bob1, &bob3] {
        bob.sync_until("the message after the restart", |c| c.texts(&room).contains(&"after the restart".to_owned()))
            .await;
    }
    alice.sync_until("her own message", |c| c.texts(&room).contains(&"after the restart".to_owned())).await;
    // The server forgets Alice's connection: she starts a new one, keeps
    // reading, and is not handed the rooms' old events again.
    let reset = proxy.add(
        Rule::path("simplified_msc3575/sync")
            .token(&alice.session.access_token)
            .calls(Calls::First(1))
            .fault(Fault::Errcode { status: 400, errcode: "M_UNKNOWN_POS".into() }),
    );
    alice.sync().await;
    assert_eq!(reset.caught(), 1, "the reset happened");
    bob1.client.get_room(&room).unwrap().send_text("after the reset").await.expect("bob sends again");
    alice.sync_until("the message after the reset", |c| c.texts(&room).contains(&"after the reset".to_owned())).await;
    let mut ids: Vec<String> = alice
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| !e.late_decryption)
        .filter_map(|e| e.event["event_id"].as_str().map(str::to_owned))
        .collect();
    let delivered = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), delivered, "no event is delivered twice, across the restart and the reset");
    assert!(alice.texts(&room).contains(&"after the reset".to_owned()), "and none is lost");

    for client in [&alice, &bob1, &bob2] {
        assert_eq!(client.undecryptable(&room), 0, "{} could read everything", client.session.device_id);
    }
    // Bob's third device cannot read what was sent before it existed, and
    // nothing else.
    for event in bob3.events.lock().unwrap().iter().filter(|e| e.unable_to_decrypt.is_some()) {
        let id = event.event["event_id"].as_str().unwrap_or_default();
        assert!(
            id == first.as_str() || id == reply.as_str(),
            "BOB3 could not read {id}: {:?}",
            event.unable_to_decrypt
        );
        // Older than BOB3: no key at all, or the room key only from a later
        // message (shared with BOB3 once Alice learnt of it).
        assert!(
            matches!(
                event.utd_cause,
                Some(
                    hush_crypto_core::UtdCause::HistoricalMessage { .. }
                        | hush_crypto_core::UtdCause::PartialKey { .. }
                )
            ),
            "older than BOB3, and explained so: {:?}",
            event.utd_cause
        );
    }
    assert_eq!(classic.matched(), 0, "no client used /v3/sync");
}
