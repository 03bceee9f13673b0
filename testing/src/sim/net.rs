//! The to-device path between the server's inbox and a device's engine,
//! where the simulator's delivery faults happen: a message lost,
//! duplicated, a batch reordered, a message held back for some syncs.
//! Delivered messages stay unacknowledged until the engine has taken the
//! sync that carried them (as a server keeps them until the next `since`),
//! so a device killed mid-sync is sent them again.

use std::collections::BTreeSet;

use ruma_common::{OwnedUserId, serde::Raw};
use ruma_events::AnyToDeviceEvent;
use serde_json::Value;

/// Faults armed for a device's next deliveries.
#[derive(Clone, Debug, Default)]
pub(super) struct Armed {
    pub(super) drop: u32,
    pub(super) corrupt: u32,
    pub(super) duplicate: u32,
    pub(super) reorder: u32,
    /// Hold the next message back for this many syncs.
    pub(super) delay: Option<u32>,
}

/// What happened to one message on its way, for blame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Delivery {
    /// Lost: `sender_key` is the sending device's curve25519 key.
    Dropped { sender_key: Option<String> },
    /// Replaced by a message no session decrypts.
    Corrupted { sender_key: Option<String> },
    /// Held back.
    Delayed { sender_key: Option<String> },
    /// Delivered twice.
    Duplicated,
    /// Its batch was reversed.
    Reordered,
}

/// One device's inbound to-device path.
#[derive(Debug, Default)]
pub(super) struct Inbound {
    pub(super) armed: Armed,
    /// Fetched, not yet taken by the engine.
    pub(super) unacked: Vec<Raw<AnyToDeviceEvent>>,
    /// Device list changes fetched, not yet taken.
    pub(super) unacked_changed: BTreeSet<OwnedUserId>,
    /// Held back: (syncs left, message).
    pub(super) held: Vec<(u32, Raw<AnyToDeviceEvent>)>,
    /// What the faults did, not yet collected by the world.
    pub(super) report: Vec<Delivery>,
}

/// An Olm message's stand-in that no session of the recipient decrypts
/// (same sender and keys, a normal message of another session); `None`
/// for a message that is not Olm.
fn wedge(event: &Raw<AnyToDeviceEvent>) -> Option<Raw<AnyToDeviceEvent>> {
    let value: Value = event.deserialize_as_unchecked().ok()?;
    let sender = ruma_common::UserId::parse(value["sender"].as_str()?).ok()?;
    let sender_key = vodozemac::Curve25519PublicKey::from_base64(value["content"]["sender_key"].as_str()?).ok()?;
    let recipient = value["content"]["ciphertext"].as_object()?.keys().next()?;
    let recipient = vodozemac::Curve25519PublicKey::from_base64(recipient).ok()?;
    Raw::new(&crate::wedged_message(&sender, sender_key, recipient)).ok().map(Raw::cast_unchecked)
}

/// The sending device's curve25519 key of an Olm to-device message.
pub(super) fn sender_key(event: &Raw<AnyToDeviceEvent>) -> Option<String> {
    let value: Value = event.deserialize_as_unchecked().ok()?;
    value["content"]["sender_key"].as_str().map(str::to_owned)
}

impl Inbound {
    /// Takes a batch from the server through the armed faults (unless
    /// `healthy`), releases held messages that are due, and returns what
    /// happened on the way (in `report`).
    pub(super) fn deliver(&mut self, fetched: Vec<Raw<AnyToDeviceEvent>>, healthy: bool) {
        let mut report = Vec::new();
        let mut batch = Vec::new();
        for (left, event) in std::mem::take(&mut self.held) {
            if left <= 1 || healthy {
                batch.push(event);
            } else {
                self.held.push((left - 1, event));
            }
        }
        for event in fetched {
            if healthy {
                batch.push(event);
            } else if self.armed.drop > 0 {
                self.armed.drop -= 1;
                report.push(Delivery::Dropped { sender_key: sender_key(&event) });
            } else if let Some(wedged) = (self.armed.corrupt > 0).then(|| wedge(&event)).flatten() {
                self.armed.corrupt -= 1;
                report.push(Delivery::Corrupted { sender_key: sender_key(&event) });
                batch.push(wedged);
            } else if let Some(syncs) = self.armed.delay.take() {
                report.push(Delivery::Delayed { sender_key: sender_key(&event) });
                self.held.push((syncs, event));
            } else if self.armed.duplicate > 0 {
                self.armed.duplicate -= 1;
                report.push(Delivery::Duplicated);
                batch.push(event.clone());
                batch.push(event);
            } else {
                batch.push(event);
            }
        }
        if !healthy && self.armed.reorder > 0 && batch.len() > 1 {
            self.armed.reorder -= 1;
            batch.reverse();
            report.push(Delivery::Reordered);
        }
        self.unacked.extend(batch);
        self.report.extend(report);
    }
}
