//! [`Victim`]: the usual cast of hostile-input tests: Bob, an engine under
//! test, and Mallory, a bare vodozemac device with an Olm session to him.

use std::sync::Arc;

use ruma_common::user_id;
use serde_json::Value;

use crate::{RogueDevice, TestDevice, TestServer, VirtualClock};

/// Bob (an engine under test) and Mallory (a bare vodozemac device with an
/// Olm session to Bob), on one in-process server.
#[derive(Debug)]
pub struct Victim {
    /// The in-process server.
    pub server: Arc<TestServer>,
    /// The clock every call takes.
    pub clock: VirtualClock,
    /// The engine under test.
    pub bob: TestDevice,
    /// The attacker's device.
    pub mallory: RogueDevice,
}

impl Victim {
    /// Bob with Mallory tracked, and Mallory's outbound session to Bob.
    pub async fn new() -> Self {
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
    pub fn deliver(&mut self, plaintext: &Value) {
        let (_, curve) = self.bob.machine.identity_keys();
        let event = self.mallory.encrypt_raw(&curve, plaintext);
        self.server.inject_to_device(&self.bob.user_id, &self.bob.device_id, event);
    }

    /// A plaintext from Mallory to Bob that follows every rule.
    pub fn plaintext(&self, event_type: &str, content: Value) -> Value {
        let (ed, _) = self.bob.machine.identity_keys();
        self.mallory.valid_plaintext(&self.bob.user_id, &ed, event_type, content)
    }
}
