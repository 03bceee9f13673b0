//! `OlmMachine::utd_cause` on hostile events: a cause, never a panic, and
//! nothing stored changes (the event and its claims come from outside).

use std::sync::Arc;

use hush_crypto_core::{MegolmError, MembershipAtEvent, UtdCause};
use hush_testing::{TestDevice, TestServer, VirtualClock};
use ruma_common::{room_id, serde::Raw, user_id};
use serde_json::{Value, json};

/// Attack: a server or sender hands us events whose fields have the wrong
/// types, a `sender_key` that is no key, a huge device id, no timestamp,
/// or no content at all. Explaining them must not panic, must not read
/// them as someone else's history, and must not write anything.
#[tokio::test]
async fn hostile_events_get_a_cause_and_change_nothing() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let device = TestDevice::new(&server, &clock, user_id!("@alice:e.org"), "ALICE").await;
    let missing = MegolmError::MissingRoomKey { session_id: "s".into(), withheld: None };
    let events = [
        json!(null),
        json!({"content": 5}),
        json!({"content": {"sender_key": "not a key", "session_id": 7}, "origin_server_ts": "yesterday", "sender": "nobody"}),
        json!({"content": {"device_id": ["x"], "sender_key": 1}, "sender": "@a:b"}),
        json!({"content": {"device_id": "D".repeat(100_000)}, "sender": "@a:e.org", "origin_server_ts": -1}),
    ];
    let before = device.machine.store().inbound_group_session_count().await.unwrap();
    for event in events {
        let raw: Raw<Value> = Raw::new(&event).unwrap();
        let cause = device.machine.utd_cause(&raw, room_id!("!r:e.org"), &missing, MembershipAtEvent::Unknown).await;
        assert_eq!(cause, UtdCause::NoSessionWithSender, "{event}");
        let other = MegolmError::Malformed("x".into());
        let rejected = device.machine.utd_cause(&raw, room_id!("!r:e.org"), &other, MembershipAtEvent::Member).await;
        assert_eq!(rejected, UtdCause::Rejected);
    }
    assert_eq!(device.machine.store().inbound_group_session_count().await.unwrap(), before);
    assert!(device.machine.outgoing_requests(clock.now()).await.unwrap().is_empty(), "nothing queued");
}
