//! The one drive loop between crypto-core and the homeserver, like quinn's
//! `ConnectionDriver`: run due timers, send every queued request
//! (concurrently, each once even when several tasks drive), hand each
//! answer back, then act on the engine's events. Every place the client
//! needs the engine to make progress (after a sync, before a send, after
//! login) runs [`Client::drive`]; nothing else talks to the engine's queue.
//!
//! A request that fails fails alone: its error is logged and reported in
//! the [`DriveReport`], never turned into the error of the drive (a sync,
//! say). A caller whose operation needs a request (a send needs its room
//! key shared, a verification its messages) looks at the report. A
//! request refused for good, or answered with something the client cannot
//! read, waits before it is sent again (`request_backoff`).

use std::time::Duration;

use std::borrow::Cow;

use hush_crypto_core::{
    AnyIncomingResponse, AnyOutgoingRequest, EngineEvent, OlmMachine, OutgoingRequest, RequestRefusal, ResponseError,
};
use ruma_common::TransactionId;
use ruma_common::api::{
    OutgoingRequest as Endpoint, SupportedVersions,
    auth_scheme::{AuthScheme, SendAccessToken},
    path_builder::PathBuilder,
};

use crate::http::HttpError;

use crate::{Client, ClientError, client::lock};

/// Marks one request as being sent; dropping it (even in an aborted task)
/// clears the mark and wakes the tasks waiting for it.
struct InFlight {
    client: Client,
    id: ruma_common::OwnedTransactionId,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.client.inner.in_flight).remove(&self.id);
        self.client.inner.request_done.notify_waiters();
    }
}

/// How long a drive waits for requests another task is sending.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(30);

/// The most turns of one drive.
const DRIVE_TURNS: usize = 4;

/// What one turn of the drive loop could not send.
#[derive(Debug, Default)]
#[must_use = "a caller whose operation needs a request checks whether it failed"]
pub(crate) struct DriveReport {
    failures: Vec<RequestFailure>,
    /// Requests held back after failing for good before: how many, and
    /// the shortest wait left.
    deferred: Option<(usize, Duration)>,
}

/// One request that failed in a turn of the drive loop.
#[derive(Debug)]
struct RequestFailure {
    /// A verification message (to-device `m.key.verification.*`).
    verification: bool,
    error: ClientError,
}

impl DriveReport {
    /// The first failure as an error, for a caller that needed every
    /// request of the turn (an explicit `send_outgoing_requests`).
    pub(crate) fn into_result(self) -> Result<(), ClientError> {
        if let Some(failure) = self.failures.into_iter().next() {
            return Err(failure.error);
        }
        match self.deferred {
            Some((count, retry_in)) => Err(ClientError::RequestsDeferred { count, retry_in }),
            None => Ok(()),
        }
    }

    /// The first failure of a verification message, as an error: what a
    /// verification step needs. Other requests (a signature upload that
    /// follows a finished verification) fail alone.
    pub(crate) fn verification_result(self) -> Result<(), ClientError> {
        self.failures.into_iter().find(|f| f.verification).map_or(Ok(()), |f| Err(f.error))
    }

    /// The last failure, if any (for a send that could not get its room ready).
    pub(crate) fn into_last_failure(self) -> Option<ClientError> {
        self.failures.into_iter().last().map(|f| f.error)
    }
}

impl Client {
    /// The drive loop: turns until a turn sends nothing (or fails), at
    /// most [`DRIVE_TURNS`], so the requests an answer makes due (a backup
    /// read brings key lookups, a looked-up key a late decryption) go out
    /// in the same drive. Returns what could not be sent: see
    /// [`DriveReport`]. An error is the engine's (a timer, the request
    /// queue), never one request's.
    pub(crate) async fn drive(&self) -> Result<DriveReport, ClientError> {
        let mut report = DriveReport::default();
        for _ in 0..DRIVE_TURNS {
            let (turn, sent) = self.drive_turn().await?;
            let failed = !turn.failures.is_empty();
            report.failures.extend(turn.failures);
            report.deferred = turn.deferred;
            if sent == 0 || failed {
                break;
            }
        }
        Ok(report)
    }

    /// One turn of the drive loop: due timers run, every request queued
    /// then is sent (by this task or another) and answered, the engine's
    /// events handled. Returns the turn's report and how many requests this
    /// task sent.
    async fn drive_turn(&self) -> Result<(DriveReport, usize), ClientError> {
        let machine = self.olm_machine()?;
        if machine.poll_timeout().is_some_and(|at| at <= self.now()) {
            machine.handle_timeout(self.now()).await?;
        }
        let mut requests = machine.outgoing_requests(self.now()).await?;
        // The signing-keys upload needs user-interactive auth: it is sent by
        // `Encryption::bootstrap_cross_signing`, which has the auth.
        // Room events (in-room verification) are sent as the room's own
        // events are, encrypted, by `send_room_messages`.
        requests.retain(|r| {
            !matches!(r.request(), AnyOutgoingRequest::SigningKeysUpload(_) | AnyOutgoingRequest::RoomMessage(_))
        });
        let deferred = {
            // Requests waiting after a failure for good stay queued, unsent.
            // Verification messages never wait: their order must hold (a
            // held-back `key` must not let the `mac` after it go first),
            // and their flow times out on its own.
            let mut backoff = lock(&self.inner.request_backoff);
            backoff.retain(|id| requests.iter().any(|r| r.request_id() == id));
            let now = std::time::Instant::now();
            let waits: Vec<Duration> = requests
                .iter()
                .filter(|r| !is_verification_message(r))
                .filter_map(|r| backoff.wait_left(r.request_id(), now))
                .collect();
            requests.retain(|r| is_verification_message(r) || backoff.is_due(r.request_id(), now));
            waits.iter().min().map(|shortest| (waits.len(), *shortest))
        };
        let (mine, others): (Vec<OutgoingRequest>, Vec<OutgoingRequest>) = {
            let mut in_flight = lock(&self.inner.in_flight);
            requests.into_iter().partition(|r| in_flight.insert(r.request_id().to_owned()))
        };
        let sent = mine.len();
        let mut report = self.send_all(mine).await;
        report.deferred = deferred;
        if !others.is_empty() {
            self.wait_for_others(&others).await;
        }
        self.handle_engine_events().await;
        // The store failing while an answer was saved is the engine's
        // failure, not one request's.
        if let Some(index) = report.failures.iter().position(|f| matches!(f.error, ClientError::Store(_))) {
            return Err(report.failures.swap_remove(index).error);
        }
        Ok((report, sent))
    }

    /// Sends the engine's room events and logs a failure instead of
    /// returning it: a room we cannot post in must not stop the sync.
    pub(crate) async fn send_room_messages_logged(&self) {
        if let Err(error) = self.send_room_messages().await {
            tracing::warn!(%error, "an in-room verification message could not be sent");
        }
    }

    /// Sends the engine's room events (in-room verification messages) the
    /// way [`Room::send`](crate::Room::send) sends any event: encrypted in
    /// an encrypted room, after the room key is shared. Each once, even
    /// when several tasks call this.
    pub(crate) async fn send_room_messages(&self) -> Result<(), ClientError> {
        // One sender at a time, so a flow's events keep their order.
        let _one_at_a_time = self.inner.room_send_lock.lock().await;
        let machine = self.olm_machine()?;
        let requests = machine.outgoing_requests(self.now()).await?;
        for request in requests {
            let AnyOutgoingRequest::RoomMessage(r) = request.request() else { continue };
            if !lock(&self.inner.in_flight).insert(request.request_id().to_owned()) {
                continue;
            }
            let _in_flight = InFlight { client: self.clone(), id: request.request_id().to_owned() };
            let room = self.get_room(&r.room_id).ok_or_else(|| ClientError::UnknownRoom(r.room_id.to_string()))?;
            let event_id = room.send_verification_event(&r.event_type, r.content.clone()).await?.event_id;
            let response = ruma_client_api::message::send_message_event::v3::Response::new(event_id);
            machine.mark_request_as_sent(request.request_id(), &response, self.now()).await?;
        }
        Ok(())
    }

    /// Sends requests concurrently and reports those that failed, after
    /// all finished. Verification messages go out one after another in
    /// queue order, in one task (a `mac` must not overtake the `key`
    /// before it, nor a `done` the `mac`); the first that fails holds back
    /// the ones after it.
    async fn send_all(&self, requests: Vec<OutgoingRequest>) -> DriveReport {
        let mut tasks = tokio::task::JoinSet::new();
        let (ordered, requests): (Vec<OutgoingRequest>, Vec<OutgoingRequest>) =
            requests.into_iter().partition(is_verification_message);
        if !ordered.is_empty() {
            let client = self.clone();
            let guards: Vec<InFlight> =
                ordered.iter().map(|r| InFlight { client: self.clone(), id: r.request_id().to_owned() }).collect();
            tasks.spawn(async move {
                let _guards = guards;
                for request in &ordered {
                    if let Err(error) = client.send_crypto_request(request).await {
                        return vec![(request.request_id().to_owned(), true, Err(error))];
                    }
                }
                Vec::new()
            });
        }
        for request in requests {
            let client = self.clone();
            // The id leaves the in-flight set however the send ends: done,
            // failed, panicked, or aborted because this drive was cancelled.
            let guard = InFlight { client: self.clone(), id: request.request_id().to_owned() };
            tasks.spawn(async move {
                let _guard = guard;
                let result = client.send_crypto_request(&request).await;
                vec![(request.request_id().to_owned(), false, result)]
            });
        }
        let mut report = DriveReport::default();
        while let Some(joined) = tasks.join_next().await {
            let outcomes = joined.unwrap_or_else(|join| {
                tracing::error!(error = %join, "a request's task ended abnormally");
                Vec::new()
            });
            for (id, verification, result) in outcomes {
                match result {
                    Ok(()) => lock(&self.inner.request_backoff).succeeded(&id),
                    Err(error) => {
                        self.note_failure(&id, verification, &error);
                        report.failures.push(RequestFailure { verification, error });
                    }
                }
            }
        }
        report
    }

    /// Logs a request's failure; one refused for good, or answered with
    /// something unreadable, waits before its next attempt.
    fn note_failure(&self, id: &TransactionId, verification: bool, error: &ClientError) {
        let for_good = !verification && matches!(error, ClientError::Http(http) if !http.is_transient());
        if for_good {
            let wait = lock(&self.inner.request_backoff).failed(id, std::time::Instant::now());
            tracing::warn!(%error, request_id = %id, wait_s = wait.as_secs(), "a crypto request failed; it waits before it is sent again");
        } else {
            tracing::warn!(%error, request_id = %id, "a crypto request failed; it is sent again at the next drive");
        }
    }

    /// Waits (bounded) until requests another task sends are done.
    async fn wait_for_others(&self, others: &[OutgoingRequest]) {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHERS;
        loop {
            let notified = self.inner.request_done.notified();
            let pending = {
                let in_flight = lock(&self.inner.in_flight);
                others.iter().any(|r| in_flight.contains(r.request_id()))
            };
            if !pending || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Acts on the engine's events: late decryptions are delivered to the
    /// handlers, verification updates broadcast, a backup key that arrived
    /// noted (the whole backup is restored after the sync).
    async fn handle_engine_events(&self) {
        let Ok(machine) = self.olm_machine() else { return };
        for event in machine.drain_events() {
            match event {
                EngineEvent::LateDecryption(late) => self.deliver_late(late).await,
                EngineEvent::IdentityChanged { user_id, state } if state.is_violation() => {
                    tracing::warn!(%user_id, ?state, "a user's cross-signing identity changed; see Room::identity_violations");
                }
                EngineEvent::DevicesChanged(changes) => {
                    tracing::debug!(user_id = %changes.user_id, added = changes.added.len(), deleted = changes.deleted.len(), "devices changed");
                }
                EngineEvent::VerificationChanged { user_id, flow, state } => {
                    // No subscriber is fine: the state stays readable.
                    let _ = self.inner.verification_updates.send(crate::VerificationUpdate { user_id, flow, state });
                }
                EngineEvent::SecretReceived { name } => {
                    tracing::info!(%name, "a secret arrived from our verified device");
                    if name == hush_crypto_core::secret_storage::names::BACKUP {
                        self.inner.backup_key_arrived.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                EngineEvent::BackupDisabled { version, reason } => {
                    tracing::warn!(%version, ?reason, "the key backup version is gone; the engine stopped uploading to it");
                }
                other => tracing::debug!(?other, "engine event"),
            }
        }
    }

    /// Sends one of crypto-core's requests and hands its answer back.
    pub(crate) async fn send_crypto_request(&self, request: &OutgoingRequest) -> Result<(), ClientError> {
        let machine = self.olm_machine()?;
        let id = request.request_id();
        match request.request() {
            AnyOutgoingRequest::KeysUpload(r) => self.exchange(&machine, id, r).await,
            AnyOutgoingRequest::KeysQuery(r) => self.exchange(&machine, id, r).await,
            AnyOutgoingRequest::KeysClaim(r) => self.exchange(&machine, id, r).await,
            AnyOutgoingRequest::ToDevice(r) => self.exchange(&machine, id, r).await,
            AnyOutgoingRequest::SigningKeysUpload(r) => self.exchange(&machine, id, r).await,
            AnyOutgoingRequest::SignatureUpload(r) => self.exchange(&machine, id, r).await,
            AnyOutgoingRequest::KeysBackup(r) => self.exchange(&machine, id, r).await,
            AnyOutgoingRequest::BackupVersion(r) => self.exchange(&machine, id, r).await,
            AnyOutgoingRequest::BackupKeyLookup(r) => self.exchange(&machine, id, r).await,
            // Sent by `send_room_messages`, as the room's own events are.
            AnyOutgoingRequest::RoomMessage(_) => Ok(()),
        }
    }

    /// Sends `request` (checking the store lease before every attempt) and
    /// hands the answer to the engine. A refusal the engine acts on (a
    /// backup version or key not found, an upload to a version that is not
    /// current: see `RequestRefusal`) is handed back as one; the engine
    /// refuses it for the other kinds, and the error is the request's
    /// failure.
    async fn exchange<R>(&self, machine: &OlmMachine, id: &TransactionId, request: &R) -> Result<(), ClientError>
    where
        R: Endpoint + Clone,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
        for<'a> &'a R::IncomingResponse: Into<AnyIncomingResponse<'a>>,
    {
        let token = self.access_token()?;
        let lease = self.lease_check(machine);
        let error = match self.http().send_checked(request.clone(), Some(&token), Duration::ZERO, &lease).await {
            Ok(response) => return Ok(machine.mark_request_as_sent(id, &response, self.now()).await?),
            Err(error) => error,
        };
        let refusal = match &error {
            HttpError::Server { errcode, .. } => RequestRefusal::from_errcode(errcode),
            _ => None,
        };
        let Some(refusal) = refusal else { return Err(error.into()) };
        match machine.mark_request_as_refused(id, refusal, self.now()).await {
            Ok(()) => Ok(()),
            Err(ResponseError::RefusalNotExpected { .. }) => Err(error.into()),
            Err(other) => Err(other.into()),
        }
    }
}

impl Client {
    /// The check a send under the store lock makes before every attempt:
    /// the lease still has enough to run (always true when the store is
    /// not shared).
    pub(crate) fn lease_check(&self, machine: &OlmMachine) -> impl Fn() -> Result<(), String> + use<> {
        let (client, machine) = (self.clone(), machine.clone());
        move || machine.check_lease_for_sending(client.now()).map_err(|error| error.to_string())
    }
}

fn is_verification_message(request: &OutgoingRequest) -> bool {
    matches!(request.request(), AnyOutgoingRequest::ToDevice(r) if r.event_type.to_string().starts_with("m.key.verification."))
}
