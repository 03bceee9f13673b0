//! [`SimDevice`]: one simulated device: an [`OlmMachine`] on its own store
//! (memory or redb), the drive loop a client runs around it, and the
//! faults armed against it (a kill after N engine calls, failing requests).
//! The machine is `None` while the device is down after a kill.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use hush_crypto_core::{
    AnyOutgoingRequest, CryptoStore, DeviceListChanges, EngineEvent, KeySource, MemoryStore, OlmMachine,
    OutgoingRequest, SyncChanges,
};
use ruma_client_api::to_device::send_event_to_device;
use ruma_common::{OwnedDeviceId, OwnedUserId};
use serde_json::Value;

use super::{
    Halt,
    ledger::Ledger,
    net::Inbound,
    oracle::{HealPath, View},
};
use crate::{TestServer, VirtualClock};

/// Where a device keeps its state.
#[derive(Debug)]
pub(super) enum StoreHandle {
    /// In memory: the same store is reopened after a kill.
    Memory(Arc<MemoryStore>),
    /// A redb file.
    Redb(PathBuf),
}

/// What the world hands a device for one call.
pub(super) struct Net<'a> {
    pub(super) server: &'a Arc<TestServer>,
    pub(super) clock: &'a VirtualClock,
    pub(super) ledger: &'a mut Ledger,
}

/// One simulated device.
#[derive(Debug)]
pub(super) struct SimDevice {
    pub(super) user: usize,
    pub(super) user_id: OwnedUserId,
    pub(super) device_id: OwnedDeviceId,
    pub(super) store: StoreHandle,
    pub(super) machine: Option<OlmMachine>,
    /// The op at which it was created.
    pub(super) created_step: usize,
    pub(super) logged_out: bool,
    pub(super) curve_key: String,
    pub(super) inbound: Inbound,
    /// Engine calls left before the armed kill.
    pub(super) crash_after: Option<u32>,
    /// The engine call an armed kill landed before (taken by the world's log).
    pub(super) killed_before: Option<&'static str>,
    /// Requests left to fail.
    pub(super) fail_requests: u32,
    /// Whether a request failed in the current op.
    pub(super) request_failed: bool,
    /// The last op at which a sync and its drive loop ran through cleanly.
    pub(super) clean_sync_step: Option<usize>,
    /// How many events of each room it has read.
    pub(super) positions: BTreeMap<usize, usize>,
    /// What it made of each event it read (the application's timeline).
    pub(super) views: BTreeMap<usize, View>,
    /// Sessions whose keys arrived (the latest copy of each), and how: from
    /// the engine's events, and the backup lookups this driver answered.
    pub(super) arrived: BTreeMap<String, HealPath>,
    /// Late decryptions the engine announced, not yet checked.
    pub(super) late: Vec<hush_crypto_core::LateDecryption>,
    pub(super) syncs: u64,
    /// Olm outcomes counted for the tally.
    pub(super) counts: OlmCounts,
}

/// Olm outcomes of a device's syncs, for the tally.
#[derive(Debug, Default)]
pub(super) struct OlmCounts {
    /// Olm messages no session decrypted.
    pub(super) undecryptable: u64,
    /// `m.dummy` messages received: a session the sender replaced.
    pub(super) dummies: u64,
    /// To-device requests sent (a settle is quiet only when none is).
    pub(super) to_device_sent: u64,
}

impl SimDevice {
    /// Opens the engine on the device's store.
    pub(super) async fn open(&mut self, clock: &VirtualClock) -> Result<(), Halt> {
        let store: Arc<dyn CryptoStore> = match &self.store {
            StoreHandle::Memory(store) => store.clone(),
            StoreHandle::Redb(path) => Arc::new(
                hush_store_redb::open(path, &self.user_id, &self.device_id, Default::default())
                    .map_err(|e| Halt::Invariant(format!("{}: redb store does not reopen: {e}", self.device_id)))?,
            ),
        };
        let machine = OlmMachine::open(&self.user_id, &self.device_id, store, clock.now())
            .await
            .map_err(|e| Halt::Invariant(format!("{}: the engine does not reopen: {e}", self.device_id)))?;
        self.curve_key = machine.identity_keys().1.to_base64();
        self.machine = Some(machine);
        Ok(())
    }

    /// The machine, if the device is up.
    pub(super) fn machine(&self) -> Result<&OlmMachine, Halt> {
        self.machine.as_ref().ok_or(Halt::Down)
    }

    /// Counts one engine call (`call`, about to be made) toward an armed
    /// kill; at zero the machine is dropped (nothing in memory survives),
    /// the call is not made, and the op stops here.
    pub(super) fn gate(&mut self, call: &'static str) -> Result<(), Halt> {
        if self.machine.is_none() {
            return Err(Halt::Down);
        }
        match self.crash_after {
            Some(0) => {
                self.crash_after = None;
                self.machine = None;
                self.killed_before = Some(call);
                Err(Halt::Killed)
            }
            Some(n) => {
                self.crash_after = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The drive loop: due timers, then every queued request sent and
    /// answered until none is left (at most ten rounds).
    pub(super) async fn drive(&mut self, net: &mut Net<'_>) -> Result<(), Halt> {
        let now = net.clock.now();
        for _ in 0..10 {
            self.gate("handle_timeout")?;
            let machine = self.machine()?;
            if machine.poll_timeout().is_some_and(|at| at <= now) {
                machine.handle_timeout(now).await.map_err(|e| self.engine_error("timers", e))?;
            }
            self.gate("outgoing_requests")?;
            let mut requests =
                self.machine()?.outgoing_requests(now).await.map_err(|e| self.engine_error("outgoing", e))?;
            requests.retain(|r| !matches!(r.request(), AnyOutgoingRequest::SigningKeysUpload(_)));
            if requests.is_empty() {
                return Ok(());
            }
            for request in &requests {
                self.send(request, net).await?;
            }
        }
        Ok(())
    }

    fn engine_error(&self, what: &str, error: impl std::fmt::Display) -> Halt {
        Halt::Invariant(format!("{}: the engine failed ({what}): {error}", self.device_id))
    }

    /// Sends one request: it fails if failures are armed; otherwise the
    /// server acts on it, and then (unless the kill lands in between, the
    /// lost-answer case) the engine gets the answer.
    async fn send(&mut self, request: &OutgoingRequest, net: &mut Net<'_>) -> Result<(), Halt> {
        if self.fail_requests > 0 {
            self.fail_requests -= 1;
            self.request_failed = true;
            return Ok(());
        }
        let now = net.clock.now();
        let (user, device) = (self.user_id.clone(), self.device_id.clone());
        let server = net.server;
        let response: hush_crypto_core::AnyIncomingResponse<'_>;
        let upload;
        let query;
        let claim;
        let to_device = send_event_to_device::v3::Response::new();
        let signatures;
        let room;
        match request.request() {
            AnyOutgoingRequest::KeysUpload(r) => {
                upload = server
                    .upload_keys(&user, &device, r)
                    .map_err(|e| Halt::Invariant(format!("{device}: the server refused its keys upload: {e:?}")))?;
                response = (&upload).into();
            }
            AnyOutgoingRequest::KeysQuery(r) => {
                query = server.query_keys_as(&user, r);
                response = (&query).into();
            }
            AnyOutgoingRequest::KeysClaim(r) => {
                claim = server.claim_keys(r);
                let value = serde_json::to_value(&claim.one_time_keys).unwrap_or(Value::Null);
                net.ledger.claimed(&serde_json::json!({ "one_time_keys": value })).map_err(Halt::Invariant)?;
                response = (&claim).into();
            }
            AnyOutgoingRequest::ToDevice(r) => {
                for messages in r.messages.values() {
                    for content in messages.values() {
                        let content: Value = content.deserialize_as_unchecked().unwrap_or(Value::Null);
                        net.ledger.olm_sent(&content).map_err(Halt::Invariant)?;
                    }
                }
                server.send_to_device(&user, r);
                self.counts.to_device_sent += 1;
                response = (&to_device).into();
            }
            AnyOutgoingRequest::SignatureUpload(r) => {
                signatures = server.upload_signatures(&user, r);
                response = (&signatures).into();
            }
            AnyOutgoingRequest::KeysBackup(_)
            | AnyOutgoingRequest::BackupVersion(_)
            | AnyOutgoingRequest::BackupKeyLookup(_) => return self.send_backup(request, net).await,
            AnyOutgoingRequest::RoomMessage(r) => {
                room = server.send_room_event(&user, &r.room_id, &r.event_type, &r.content, now.as_millis());
                response = (&room).into();
            }
            AnyOutgoingRequest::SigningKeysUpload(_) => return Ok(()),
        }
        self.gate("mark_request_as_sent")?;
        self.machine()?
            .mark_request_as_sent(request.request_id(), response, now)
            .await
            .map_err(|e| self.engine_error("answer", e))
    }

    /// Sends one backup request (an upload, a read of the version, a key
    /// lookup) and hands back the answer, or the server's refusal.
    async fn send_backup(&mut self, request: &OutgoingRequest, net: &mut Net<'_>) -> Result<(), Halt> {
        let now = net.clock.now();
        let (user, server) = (self.user_id.clone(), net.server);
        let (upload, version, key);
        let response: hush_crypto_core::AnyIncomingResponse<'_> = match request.request() {
            AnyOutgoingRequest::KeysBackup(r) => match server.add_backup_keys(&user, r) {
                Ok(answer) => {
                    upload = answer;
                    (&upload).into()
                }
                Err(errcode) => return self.refused(request, &errcode, now).await,
            },
            AnyOutgoingRequest::BackupVersion(_) => match server.latest_backup_response(&user) {
                Ok(answer) => {
                    version = answer;
                    (&version).into()
                }
                Err(errcode) => return self.refused(request, &errcode, now).await,
            },
            AnyOutgoingRequest::BackupKeyLookup(r) => match server.backup_key_response(&user, r) {
                Ok(answer) => {
                    self.arrived.insert(r.session_id.clone(), HealPath::Backup);
                    key = answer;
                    (&key).into()
                }
                Err(errcode) => return self.refused(request, &errcode, now).await,
            },
            _ => return Ok(()),
        };
        self.gate("mark_request_as_sent")?;
        self.machine()?
            .mark_request_as_sent(request.request_id(), response, now)
            .await
            .map_err(|e| self.engine_error("answer", e))
    }

    /// Hands back a backup request's refusal (a 404 from the server).
    async fn refused(
        &mut self,
        request: &OutgoingRequest,
        errcode: &str,
        now: hush_crypto_core::Timestamp,
    ) -> Result<(), Halt> {
        let refusal = hush_crypto_core::RequestRefusal::from_errcode(errcode)
            .ok_or_else(|| Halt::Invariant(format!("{}: an unexpected refusal {errcode}", self.device_id)))?;
        self.gate("mark_request_as_refused")?;
        self.machine()?
            .mark_request_as_refused(request.request_id(), refusal, now)
            .await
            .map_err(|e| self.engine_error("refusal", e))
    }

    /// One sync: the server's batch through the delivery faults (none if
    /// `healthy`), into the engine, then the drive loop. Returns what the
    /// faults did (in `inbound.report`) and how many to-device messages
    /// the engine took.
    pub(super) async fn sync(&mut self, net: &mut Net<'_>, healthy: bool, step: usize) -> Result<usize, Halt> {
        self.machine()?;
        self.syncs += 1;
        let fetched = net.server.sync(&self.user_id, &self.device_id, format!("s{}", self.syncs));
        self.inbound.deliver(fetched.to_device_events, healthy);
        self.inbound.unacked_changed.extend(fetched.device_lists.changed);
        let taken = self.inbound.unacked.len();
        self.trace_to_device();
        let changes = SyncChanges {
            to_device_events: self.inbound.unacked.clone(),
            device_lists: DeviceListChanges {
                changed: self.inbound.unacked_changed.iter().cloned().collect(),
                left: Vec::new(),
                is_initial: false,
            },
            one_time_keys_counts: fetched.one_time_keys_counts,
            unused_fallback_keys: fetched.unused_fallback_keys,
            next_batch_token: fetched.next_batch_token,
            custom_values: Vec::new(),
        };
        self.request_failed = false;
        self.gate("receive_sync_changes")?;
        let now = net.clock.now();
        let output =
            self.machine()?.receive_sync_changes(changes, now).await.map_err(|e| self.engine_error("sync", e))?;
        self.note_outcomes(&output.to_device);
        // Taken and saved: the server may forget them (the next `since`).
        self.inbound.unacked.clear();
        self.inbound.unacked_changed.clear();
        self.take_events()?;
        self.drive(net).await?;
        self.take_events()?;
        if !self.request_failed {
            self.clean_sync_step = Some(step);
        }
        Ok(taken)
    }

    /// Counts Olm messages no session decrypted and `m.dummy` messages
    /// (the other side replacing a wedged session); with `HUSH_SIM_TRACE`,
    /// prints what the engine made of each message.
    fn note_outcomes(&mut self, outcomes: &[hush_crypto_core::ToDeviceOutcome]) {
        let trace = std::env::var_os("HUSH_SIM_TRACE").is_some();
        for outcome in outcomes {
            match outcome {
                hush_crypto_core::ToDeviceOutcome::Decrypted { event, .. } => {
                    let value: Value = event.deserialize_as_unchecked().unwrap_or(Value::Null);
                    if value["type"] == "m.dummy" {
                        self.counts.dummies += 1;
                    }
                    if trace {
                        eprintln!("{}: decrypted {} {}", self.device_id, value["type"], value["content"]["session_id"]);
                    }
                }
                hush_crypto_core::ToDeviceOutcome::Failed { .. } => {
                    self.counts.undecryptable += 1;
                    if trace {
                        eprintln!("{}: {outcome:?}", self.device_id);
                    }
                }
                other if trace => eprintln!("{}: {other:?}", self.device_id),
                _ => {}
            }
        }
    }

    /// With `HUSH_SIM_TRACE` set, prints each to-device message the device
    /// is about to take (type and sender; the content of those in the clear).
    fn trace_to_device(&self) {
        if std::env::var_os("HUSH_SIM_TRACE").is_none() {
            return;
        }
        for event in &self.inbound.unacked {
            let value: Value = event.deserialize_as_unchecked().unwrap_or(Value::Null);
            let clear = if value["type"] == "m.room.encrypted" { String::new() } else { value["content"].to_string() };
            eprintln!("{} <- {} {} {clear}", self.device_id, value["sender"], value["type"]);
        }
    }

    /// Drains the engine's events: room keys that arrived are noted (how
    /// each came, for the late decryptions they bring), late decryptions
    /// are kept for the world to check.
    pub(super) fn take_events(&mut self) -> Result<(), Halt> {
        for event in self.machine()?.drain_events() {
            match event {
                EngineEvent::RoomKeyReceived(info) => {
                    let path = match info.source {
                        KeySource::Forwarded => HealPath::OwnDevice,
                        _ => HealPath::LateKey,
                    };
                    self.arrived.insert(info.session_id, path);
                }
                EngineEvent::LateDecryption(late) => self.late.push(late),
                _ => {}
            }
        }
        Ok(())
    }
}
