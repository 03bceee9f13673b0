//! Routing for time: the earliest deadline of every concern's timers, and
//! running what is due. The timers themselves belong to their concerns:
//! claim back-off and deferred unwedging (`olm/claims`), keys-query retry
//! (`devices/tracker`), the room key's age limit (`megolm/rotation`),
//! verification flows' deadlines (`verification/`).

use super::{OlmMachine, lock};
use crate::{StoreError, Timestamp, events::EngineEvent, megolm::RotationReason, store::Changes};

impl OlmMachine {
    /// The earliest time at which [`handle_timeout`](Self::handle_timeout)
    /// has something to do, or `None`: the end of a claim back-off, a
    /// deferred unwedge (at most one new session per device and hour), a
    /// keys-query retry, a room key reaching its age limit, open room-key
    /// requests to send again to our other devices, healing (undecryptable
    /// events to decrypt again, keys to ask for or look up in the backup:
    /// `utd::pending`). The time may be
    /// in the past (e.g. after a restart, for state saved before it): call
    /// `handle_timeout` at once then. A caller's drive loop sleeps until the
    /// earlier of this and its next sync.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let handled = *lock(&self.inner.timers_handled_until);
        let claims = lock(&self.inner.claims).next_deadline(handled);
        let queries = lock(&self.inner.tracker).next_deadline(handled);
        let rooms = lock(&self.inner.rooms).next_deadline(handled);
        let verifications = self.verification_deadline();
        let gossip = self.gossip_deadline();
        let healing = self.healing_deadline();
        [claims, queries, rooms, verifications, gossip, healing].into_iter().flatten().min()
    }

    /// Runs what is due at `now`, saving what it changed: deferred unwedges
    /// become claims (listed by `outgoing_requests`), users whose query
    /// back-off ended are queried again, claims whose back-off ended may be
    /// retried, and a room key past its age limit is retired (its unanswered
    /// shares cancelled, an [`EngineEvent::RoomKeyExpired`] queued), and
    /// healing runs: waiting events whose key arrived decrypt (each an
    /// [`EngineEvent::LateDecryption`]), missing keys are asked of our
    /// other devices and looked up in the backup. Send the requests
    /// `outgoing_requests` lists afterwards.
    pub async fn handle_timeout(&self, now: Timestamp) -> Result<(), StoreError> {
        {
            // Serialized with syncs and claim answers, which change the same state.
            let _account = self.inner.account.lock().await;
            let mut changes = Changes::default();
            {
                let mut claims = lock(&self.inner.claims);
                if claims.handle_timeout(now) {
                    changes.custom_values.push(claims.record(now));
                }
            }
            self.save(None, None, changes).await?;
        }
        // Retiring an expired room key changes nothing stored (the limit is
        // enforced at the next use anyway): after the save, so a failed save
        // loses no event.
        let expired = lock(&self.inner.rooms).take_expired(now);
        let mut events = Vec::new();
        for (room_id, session_id) in expired {
            let current = lock(&self.inner.groups).outbound.get(&room_id).is_some_and(|s| s.session_id == session_id);
            if current {
                tracing::info!(%room_id, %session_id, "room key reached its age limit");
                lock(&self.inner.requests).cancel_room_key_shares(&room_id);
                events.push(EngineEvent::RoomKeyExpired { room_id, session_id, reason: RotationReason::AgeLimit });
            }
        }
        self.handle_verification_timeouts(now);
        if self.gossip_deadline().is_some_and(|at| at <= now) {
            self.resend_open_room_key_requests(now);
        }
        {
            let mut handled = lock(&self.inner.timers_handled_until);
            *handled = (*handled).max(now);
        }
        self.announce(events);
        // Last: it announces its late decryptions as it makes them, so a
        // store failure in a later step loses none.
        self.handle_healing(now).await
    }
}
