//! Key-use invariants, checked on everything that crosses the simulated
//! network: no one-time key claimed twice, no Olm message key (sending
//! chain and index) used for two different ciphertexts, no Megolm message
//! index used by two events of one session.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use vodozemac::{megolm::MegolmMessage, olm::OlmMessage};

/// Every key use seen so far in one run.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// (claimed device, key id) of every one-time key handed out.
    one_time_keys: BTreeSet<(String, String)>,
    /// (sender key, ratchet key, chain index) → the ciphertext sent under it.
    olm_message_keys: BTreeMap<(String, String, u64), Vec<u8>>,
    /// (Megolm session, message index) → the event that used it.
    megolm_indices: BTreeMap<(String, u32), String>,
}

impl Ledger {
    /// A `/keys/claim` answer: every non-fallback one-time key must be new.
    pub(super) fn claimed(&mut self, response: &Value) -> Result<(), String> {
        let Some(users) = response["one_time_keys"].as_object() else { return Ok(()) };
        for (user, devices) in users {
            for (device, keys) in devices.as_object().into_iter().flatten() {
                for (key_id, key) in keys.as_object().into_iter().flatten() {
                    if key["fallback"].as_bool() == Some(true) {
                        continue;
                    }
                    if !self.one_time_keys.insert((format!("{user}/{device}"), key_id.clone())) {
                        return Err(format!("one-time key {key_id} of {user}/{device} was claimed twice"));
                    }
                }
            }
        }
        Ok(())
    }

    /// An `m.room.encrypted` to-device content with Olm ciphertexts.
    pub(super) fn olm_sent(&mut self, content: &Value) -> Result<(), String> {
        let Some(sender_key) = content["sender_key"].as_str() else { return Ok(()) };
        for message in content["ciphertext"].as_object().into_iter().flatten().map(|(_, m)| m) {
            let Ok(message) = serde_json::from_value::<OlmMessage>(message.clone()) else {
                return Err(format!("an Olm message from {sender_key} does not decode"));
            };
            let inner = match &message {
                OlmMessage::Normal(m) => m,
                OlmMessage::PreKey(m) => m.message(),
            };
            let key = (sender_key.to_owned(), inner.ratchet_key().to_base64(), inner.chain_index());
            let ciphertext = inner.ciphertext().to_vec();
            match self.olm_message_keys.get(&key) {
                Some(previous) if *previous != ciphertext => {
                    return Err(format!(
                        "Olm message key reused by {sender_key}: ratchet {} index {} encrypted two messages",
                        key.1, key.2
                    ));
                }
                Some(_) => {}
                None => {
                    self.olm_message_keys.insert(key, ciphertext);
                }
            }
        }
        Ok(())
    }

    /// A room event's Megolm session and index, from its content.
    pub(super) fn megolm_sent(&mut self, event_id: &str, content: &Value) -> Result<(String, u32), String> {
        let session_id = content["session_id"].as_str().unwrap_or_default().to_owned();
        let ciphertext = content["ciphertext"].as_str().unwrap_or_default();
        let index = MegolmMessage::from_base64(ciphertext)
            .map_err(|e| format!("event {event_id}: Megolm ciphertext does not decode: {e}"))?
            .message_index();
        if let Some(first) = self.megolm_indices.insert((session_id.clone(), index), event_id.to_owned()) {
            return Err(format!("Megolm index {index} of session {session_id} used by {first} and {event_id}"));
        }
        Ok((session_id, index))
    }
}
