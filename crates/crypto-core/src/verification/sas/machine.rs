//! [`SasVerification`]: one `m.sas.v1` exchange between two devices, as a
//! state machine over message contents. Pure: it sends nothing and reads
//! no clock; each input returns the messages to send, time is an input
//! (the whole exchange must end within ten minutes of its start).
//!
//! The keys to verify are fixed when it is made (ours to MAC, theirs to
//! check), as the spec requires. A MAC from the other side may arrive
//! before our user confirmed the short strings: it is checked and held, and
//! nothing is verified until both happened.

use std::collections::BTreeMap;
use std::time::Duration;

use ruma_common::OwnedDeviceId;
use serde_json::{Map, Value, json};
use vodozemac::{
    Curve25519PublicKey, Ed25519PublicKey,
    sas::{EstablishedSas, Sas},
};

use super::{
    crypto::{Party, commitment, commitment_matches, mac, mac_info, mac_matches, sas_info},
    methods::{self, Agreed, SasMethod},
};
use crate::{
    Timestamp,
    verification::{CancelCode, Cancellation, FlowId, ProofMethod, SasEmoji, VerificationProof, emoji::emoji_for},
};

/// How long a verification may take, from its start.
pub const SAS_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The most keys a MAC message may name (a device key and a master key
/// are what clients send).
const MAX_MAC_KEYS: usize = 16;

/// The keys one side of a SAS verification has its MAC cover: its device
/// key and, if known (and for our own side, trusted), its user's master
/// key. Fixed when the verification is made, as the spec requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SasKeys {
    /// The device.
    pub device_id: OwnedDeviceId,
    /// Its ed25519 key.
    pub device_key: Ed25519PublicKey,
    /// The user's master key.
    pub master_key: Option<Ed25519PublicKey>,
}

impl SasKeys {
    /// Key id and base64 key, as the MAC message names them.
    pub(crate) fn entries(&self) -> Vec<(String, String)> {
        let mut entries = vec![(format!("ed25519:{}", self.device_id), self.device_key.to_base64())];
        if let Some(master) = self.master_key {
            entries.push((format!("ed25519:{}", master.to_base64()), master.to_base64()));
        }
        entries
    }
}

/// A message to send to the other device.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    /// `m.key.verification.*`.
    pub event_type: &'static str,
    /// Its content.
    pub content: Value,
}

/// Where a SAS verification stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SasState {
    /// We started and wait for the other side's `accept`.
    WaitingForAccept,
    /// Waiting for the other side's ephemeral key.
    WaitingForKey,
    /// Keys exchanged: show the short strings and ask the user.
    KeysExchanged,
    /// Our user confirmed; waiting for the other side's MAC.
    Confirmed,
    /// Verified: the other side's keys whose MACs matched.
    Done {
        /// The other device, whose device key matched (the user is the
        /// flow's other user).
        device: Option<OwnedDeviceId>,
        /// The other user's master key, if we knew it and it matched.
        master_key: Option<Ed25519PublicKey>,
    },
    /// Ended without success.
    Cancelled(Cancellation),
}

enum State {
    Started { sas: Sas },
    Accepted { sas: Sas, agreed: Agreed },
    KeySent { sas: Sas, agreed: Agreed, commitment: String },
    Established { sas: Box<EstablishedSas>, agreed: Agreed, their_mac: Option<Vec<String>>, confirmed: bool },
    Done { verified: Vec<String> },
    Cancelled(Cancellation),
}

/// One SAS verification.
pub struct SasVerification {
    flow: FlowId,
    us: Party,
    them: Party,
    we_started: bool,
    /// The `start` content, ours or theirs: the commitment covers it.
    start: Value,
    /// Our keys the other side verifies: key id and the key in base64.
    our_keys: Vec<(String, String)>,
    /// Their keys, fixed at the beginning.
    their_keys: SasKeys,
    /// The same as key id to base64.
    their_entries: BTreeMap<String, String>,
    deadline: Timestamp,
    state: State,
}

impl std::fmt::Debug for SasVerification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SasVerification")
            .field("flow", &self.flow)
            .field("them", &self.them)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl SasVerification {
    /// Starts a verification with `them`: the `start` to send.
    pub fn start(
        us: Party,
        them: Party,
        flow: FlowId,
        our_keys: &SasKeys,
        their_keys: SasKeys,
        now: Timestamp,
    ) -> (Self, Outgoing) {
        let mut start = methods::start_offer();
        if let Some(object) = start.as_object_mut() {
            object.insert("from_device".into(), json!(us.device_id));
        }
        let start = flow.wrap(start);
        let outgoing = Outgoing { event_type: "m.key.verification.start", content: start.clone() };
        let verification = Self {
            flow,
            us,
            them,
            we_started: true,
            start,
            our_keys: our_keys.entries(),
            their_entries: their_keys.entries().into_iter().collect(),
            their_keys,
            deadline: now.saturating_add(SAS_TIMEOUT),
            state: State::Started { sas: Sas::new() },
        };
        (verification, outgoing)
    }

    /// Accepts the other side's `start` (of `flow_id`): the `accept` to
    /// send, or the cancellation if nothing can be agreed.
    pub fn accept(
        us: Party,
        them: Party,
        flow: FlowId,
        start: &Value,
        our_keys: &SasKeys,
        their_keys: SasKeys,
        now: Timestamp,
    ) -> Result<(Self, Outgoing), Cancellation> {
        let agreed = methods::choose(start)?;
        let sas = Sas::new();
        let commitment =
            commitment(&sas.public_key(), start).ok_or_else(|| Cancellation::ours(CancelCode::InvalidMessage))?;
        let short: Vec<&str> = agreed
            .short_strings
            .iter()
            .map(|m| match m {
                SasMethod::Decimal => "decimal",
                SasMethod::Emoji => "emoji",
            })
            .collect();
        let content = flow.wrap(json!({
            "method": "m.sas.v1",
            "key_agreement_protocol": methods::KEY_AGREEMENT,
            "hash": methods::HASH,
            "message_authentication_code": agreed.mac.as_str(),
            "short_authentication_string": short,
            "commitment": commitment,
        }));
        let verification = Self {
            flow,
            us,
            them,
            we_started: false,
            start: start.clone(),
            our_keys: our_keys.entries(),
            their_entries: their_keys.entries().into_iter().collect(),
            their_keys,
            deadline: now.saturating_add(SAS_TIMEOUT),
            state: State::Accepted { sas, agreed },
        };
        Ok((verification, Outgoing { event_type: "m.key.verification.accept", content }))
    }

    /// The flow.
    pub fn flow(&self) -> &FlowId {
        &self.flow
    }

    /// The other side.
    pub fn other(&self) -> &Party {
        &self.them
    }

    /// Where it stands.
    pub fn state(&self) -> SasState {
        match &self.state {
            State::Started { .. } => SasState::WaitingForAccept,
            State::Accepted { .. } | State::KeySent { .. } => SasState::WaitingForKey,
            State::Established { confirmed: false, .. } => SasState::KeysExchanged,
            State::Established { confirmed: true, .. } => SasState::Confirmed,
            State::Done { verified } => {
                let (device, master_key) = self.matched(verified);
                SasState::Done { device: device.map(|(device_id, _)| device_id), master_key }
            }
            State::Cancelled(cancellation) => SasState::Cancelled(cancellation.clone()),
        }
    }

    /// The deadline, while it is not finished.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        (!matches!(self.state, State::Done { .. } | State::Cancelled(_))).then_some(self.deadline)
    }

    /// Cancels with `m.timeout` if the deadline passed.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Vec<Outgoing> {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => self.cancel(CancelCode::Timeout),
            _ => Vec::new(),
        }
    }

    /// The user (or the application) cancels.
    pub fn cancel(&mut self, code: CancelCode) -> Vec<Outgoing> {
        if matches!(self.state, State::Done { .. } | State::Cancelled(_)) {
            return Vec::new();
        }
        self.fail(Cancellation::ours(code))
    }

    fn fail(&mut self, cancellation: Cancellation) -> Vec<Outgoing> {
        let outgoing = cancellation
            .by_us
            .then(|| Outgoing { event_type: "m.key.verification.cancel", content: cancellation.content(&self.flow) });
        self.state = State::Cancelled(cancellation);
        outgoing.into_iter().collect()
    }

    /// A message from the other side of this flow (`event_type` is the
    /// `m.key.verification.*` type). Returns what to send.
    pub fn receive(&mut self, event_type: &str, content: &Value, now: Timestamp) -> Vec<Outgoing> {
        if now >= self.deadline && self.poll_timeout().is_some() {
            return self.cancel(CancelCode::Timeout);
        }
        // A finished exchange stays as it ended: its keys may already be
        // marked verified.
        if matches!(self.state, State::Cancelled(_) | State::Done { .. }) {
            return Vec::new();
        }
        if event_type == "m.key.verification.cancel" {
            return self.fail(Cancellation::theirs(content));
        }
        if !self.flow.named_by(content) {
            return self.fail(Cancellation::ours(CancelCode::UnknownTransaction));
        }
        match self.step(event_type, content) {
            Ok(outgoing) => outgoing,
            Err(cancellation) => self.fail(cancellation),
        }
    }

    fn step(&mut self, event_type: &str, content: &Value) -> Result<Vec<Outgoing>, Cancellation> {
        let state =
            std::mem::replace(&mut self.state, State::Cancelled(Cancellation::ours(CancelCode::UnexpectedMessage)));
        match (state, event_type) {
            (State::Started { sas }, "m.key.verification.accept") => {
                let agreed = methods::check_accept(content)?;
                let commitment = content.get("commitment").and_then(Value::as_str).ok_or_else(invalid)?.to_owned();
                let key = self.key_message(&sas.public_key());
                self.state = State::KeySent { sas, agreed, commitment };
                Ok(vec![key])
            }
            (State::Accepted { sas, agreed }, "m.key.verification.key") => {
                let their_key = their_ephemeral_key(content)?;
                let key = self.key_message(&sas.public_key());
                self.establish(sas, agreed, their_key)?;
                Ok(vec![key])
            }
            (State::KeySent { sas, agreed, commitment: expected }, "m.key.verification.key") => {
                let their_key = their_ephemeral_key(content)?;
                let computed = commitment(&their_key, &self.start).ok_or_else(invalid)?;
                if !commitment_matches(&computed, &expected) {
                    return Err(Cancellation::ours(CancelCode::MismatchedCommitment));
                }
                self.establish(sas, agreed, their_key)?;
                Ok(Vec::new())
            }
            (State::Established { sas, agreed, their_mac: None, confirmed }, "m.key.verification.mac") => {
                let verified = self.check_mac(&sas, &agreed, content)?;
                self.state = State::Established { sas, agreed, their_mac: Some(verified), confirmed };
                Ok(self.finish_if_ready())
            }
            (state @ State::Done { .. }, "m.key.verification.done") => {
                self.state = state;
                Ok(Vec::new())
            }
            (state @ State::Established { confirmed: true, .. }, "m.key.verification.done") => {
                // Their `done` may overtake their MAC's processing order; it
                // changes nothing until the MAC arrives.
                self.state = state;
                Ok(Vec::new())
            }
            _ => Err(Cancellation::ours(CancelCode::UnexpectedMessage)),
        }
    }

    fn key_message(&self, key: &Curve25519PublicKey) -> Outgoing {
        Outgoing { event_type: "m.key.verification.key", content: self.flow.wrap(json!({ "key": key.to_base64() })) }
    }

    fn establish(&mut self, sas: Sas, agreed: Agreed, their_key: Curve25519PublicKey) -> Result<(), Cancellation> {
        let established = sas.diffie_hellman(their_key).map_err(|_| Cancellation::ours(CancelCode::KeyMismatch))?;
        self.state = State::Established { sas: Box::new(established), agreed, their_mac: None, confirmed: false };
        Ok(())
    }

    fn info(&self, sas: &EstablishedSas) -> String {
        let (ours, theirs) = (sas.our_public_key(), sas.their_public_key());
        match self.we_started {
            true => sas_info(&self.us, &ours, &self.them, &theirs, self.flow.as_str()),
            false => sas_info(&self.them, &theirs, &self.us, &ours, self.flow.as_str()),
        }
    }

    /// The seven emoji, once keys are exchanged (if both sides offered emoji).
    pub fn emoji(&self) -> Option<[SasEmoji; 7]> {
        let State::Established { sas, agreed, .. } = &self.state else { return None };
        if !agreed.short_strings.contains(&SasMethod::Emoji) {
            return None;
        }
        emoji_for(super::short_strings::emoji_indices(sas.bytes(&self.info(sas)).as_bytes()))
    }

    /// The three numbers (1000–9191), once keys are exchanged.
    pub fn decimals(&self) -> Option<(u16, u16, u16)> {
        let State::Established { sas, .. } = &self.state else { return None };
        Some(super::short_strings::decimals(sas.bytes(&self.info(sas)).as_bytes()))
    }

    /// Our user says the short strings match: our MAC is sent, and if the
    /// other side's MAC already verified, the verification is done.
    pub fn confirm(&mut self) -> Vec<Outgoing> {
        let State::Established { sas, agreed, confirmed, .. } = &mut self.state else { return Vec::new() };
        if *confirmed {
            return Vec::new();
        }
        *confirmed = true;
        let info = mac_info(&self.us, &self.them, self.flow.as_str());
        let mut macs = Map::new();
        for (key_id, key) in &self.our_keys {
            macs.insert(key_id.clone(), Value::String(mac(sas, agreed.mac, key, &format!("{info}{key_id}"))));
        }
        let mut ids: Vec<&str> = self.our_keys.iter().map(|(id, _)| id.as_str()).collect();
        ids.sort_unstable();
        let keys = mac(sas, agreed.mac, &ids.join(","), &format!("{info}KEY_IDS"));
        let content = self.flow.wrap(json!({ "mac": macs, "keys": keys }));
        let mut outgoing = vec![Outgoing { event_type: "m.key.verification.mac", content }];
        outgoing.extend(self.finish_if_ready());
        outgoing
    }

    /// Once done, the proof of the other side's keys whose MACs matched
    /// (its device key, its master key if we knew it and it was covered).
    pub fn proof(&self) -> Option<VerificationProof> {
        let State::Done { verified } = &self.state else { return None };
        let (device, master) = self.matched(verified);
        VerificationProof::new(self.them.user_id.clone(), device, master, ProofMethod::Sas)
    }

    /// The other side's device key and master key among the key ids whose
    /// MACs verified.
    fn matched(&self, verified: &[String]) -> (Option<(OwnedDeviceId, Ed25519PublicKey)>, Option<Ed25519PublicKey>) {
        let keys = &self.their_keys;
        let device_id = format!("ed25519:{}", keys.device_id);
        let device = verified.contains(&device_id).then(|| (keys.device_id.clone(), keys.device_key));
        let master = keys.master_key.filter(|m| verified.contains(&format!("ed25519:{}", m.to_base64())));
        (device, master)
    }

    /// Our user says the short strings differ.
    pub fn mismatch(&mut self) -> Vec<Outgoing> {
        self.cancel(CancelCode::MismatchedSas)
    }

    fn finish_if_ready(&mut self) -> Vec<Outgoing> {
        let State::Established { their_mac: Some(verified), confirmed: true, .. } = &self.state else {
            return Vec::new();
        };
        self.state = State::Done { verified: verified.clone() };
        vec![Outgoing { event_type: "m.key.verification.done", content: self.flow.wrap(json!({})) }]
    }

    /// Checks the other side's MACs: the key list first (so a list with
    /// keys added or removed fails before any key), then each key we know.
    fn check_mac(&self, sas: &EstablishedSas, agreed: &Agreed, content: &Value) -> Result<Vec<String>, Cancellation> {
        let macs = content.get("mac").and_then(Value::as_object).ok_or_else(invalid)?;
        let keys_mac = content.get("keys").and_then(Value::as_str).ok_or_else(invalid)?;
        if macs.is_empty() || macs.len() > MAX_MAC_KEYS {
            return Err(invalid());
        }
        let info = mac_info(&self.them, &self.us, self.flow.as_str());
        let ids: Vec<&str> = macs.keys().map(String::as_str).collect(); // a JSON object's keys are sorted
        let mismatch = || Cancellation::ours(CancelCode::KeyMismatch);
        if !mac_matches(sas, agreed.mac, &ids.join(","), &format!("{info}KEY_IDS"), keys_mac) {
            return Err(mismatch());
        }
        let mut verified = Vec::new();
        for (key_id, given) in macs {
            let Some(key) = self.their_entries.get(key_id) else { continue };
            let given = given.as_str().ok_or_else(invalid)?;
            if !mac_matches(sas, agreed.mac, key, &format!("{info}{key_id}"), given) {
                return Err(mismatch());
            }
            verified.push(key_id.clone());
        }
        if verified.is_empty() {
            return Err(mismatch());
        }
        Ok(verified)
    }
}

fn invalid() -> Cancellation {
    Cancellation::ours(CancelCode::InvalidMessage)
}

fn their_ephemeral_key(content: &Value) -> Result<Curve25519PublicKey, Cancellation> {
    let key = content.get("key").and_then(Value::as_str).ok_or_else(invalid)?;
    crate::keys::curve25519_from_base64(key).map_err(|_| invalid())
}
