//! The attacks suite: one test per defect found by hostile and cross-client
//! testing (issue 10). Each test's doc comment states the attack; its
//! assertions show the attack fails. Synapse versions of the restart and
//! redelivery attacks are in `client_synapse.rs`.

mod limits_and_leaks;
mod malformed_keys;
mod rejected_events;
mod room_key_takeover;
mod to_device;

use std::sync::Arc;

use hush_testing::{RogueDevice, TestDevice, TestServer, VirtualClock};
use ruma_common::user_id;
use serde_json::Value;

/// Bob (an engine under test) and Mallory (a bare vodozemac device with an
/// Olm session to Bob), on one in-process server.
pub(crate) struct Victim {
    pub(crate) server: Arc<TestServer>,
    pub(crate) clock: VirtualClock,
    pub(crate) bob: TestDevice,
    pub(crate) mallory: RogueDevice,
}

impl Victim {
    pub(crate) async fn new() -> Self {
        let server = Arc::new(TestServer::new());
        let clock = VirtualClock::default();
        let mut bob = TestDevice::new(&server, &clock, user_id!("@bob:example.org"), "BOB1").await;
        let mut mallory = RogueDevice::register(&server, user_id!("@mallory:example.org"), "MALLORY");
        bob.machine.update_tracked_users([mallory.user_id.as_ref()]).await.unwrap();
        bob.sync().await;
        mallory.open_session(&server, &bob.user_id, &bob.device_id);
        bob.sync().await;
        Self { server, clock, bob, mallory }
    }

    /// Mallory Olm-encrypts `plaintext` for Bob; the server delivers it.
    pub(crate) fn deliver(&mut self, plaintext: &Value) {
        let (_, curve) = self.bob.machine.identity_keys();
        let event = self.mallory.encrypt_raw(&curve, plaintext);
        self.server.inject_to_device(&self.bob.user_id, &self.bob.device_id, event);
    }

    /// A plaintext from Mallory to Bob that follows every rule.
    pub(crate) fn plaintext(&self, event_type: &str, content: Value) -> Value {
        let (ed, _) = self.bob.machine.identity_keys();
        self.mallory.valid_plaintext(&self.bob.user_id, &ed, event_type, content)
    }
}

/// 33 bytes in 44 unpadded base64 characters: the length vodozemac 0.11
/// accepted before panicking.
pub(crate) fn key_of_33_bytes() -> String {
    let encoded = vodozemac::base64_encode([7u8; 33]);
    assert_eq!(encoded.len(), 44);
    encoded
}
