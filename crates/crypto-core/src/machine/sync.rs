//! One sync as one input: [`SyncChanges`] in, [`SyncOutput`] out, everything
//! it changed saved in one batch before the call returns.

use ruma_common::{OneTimeKeyAlgorithm, OwnedUserId, serde::Raw};
use ruma_events::AnyToDeviceEvent;
use serde_json::Value;

use super::{OlmMachine, gossip::GossipInput, lock};
use crate::olm::OneTimeKeyCounts;
use crate::{
    StoreError, Timestamp,
    events::{EngineEvent, RoomKeyInfo},
    gossip::{
        ForwardedRoomKey, GossipError, GossipRequest, IncomingKeyRequest, IncomingSecretRequest, ROOM_KEY_REQUEST,
        SECRET_REQUEST, SecretSend,
    },
    megolm::WithheldInfo,
    olm::{CarriedRoomKey, OlmError, ToDeviceOutcome},
    store::Changes,
};

/// Users whose device lists changed, from a sync's `device_lists`.
#[derive(Clone, Debug, Default)]
pub struct DeviceListChanges {
    /// Users whose devices changed: their lists are queried again.
    pub changed: Vec<OwnedUserId>,
    /// Users we no longer share an encrypted room with: no longer tracked.
    pub left: Vec<OwnedUserId>,
    /// The sync had no `since` token (a first sync, or a full resync).
    /// Device-list changes are only reported between two tokens, so after
    /// such a sync every tracked user is queried again: a device added
    /// while we were away would otherwise never receive our room keys.
    pub is_initial: bool,
}

/// The crypto-relevant parts of one `/sync` response.
#[derive(Clone, Debug, Default)]
pub struct SyncChanges {
    /// `to_device.events`.
    pub to_device_events: Vec<Raw<AnyToDeviceEvent>>,
    /// `device_lists`.
    pub device_lists: DeviceListChanges,
    /// `device_one_time_keys_count`, read by the rule of the transport
    /// (see [`OneTimeKeyCounts`]).
    pub one_time_keys_counts: OneTimeKeyCounts,
    /// `device_unused_fallback_key_types` (`None` if the server does not support fallback keys).
    pub unused_fallback_keys: Option<Vec<OneTimeKeyAlgorithm>>,
    /// `next_batch`, saved with the rest so sync and crypto state agree.
    pub next_batch_token: Option<String>,
    /// The embedder's own state to save atomically with this sync (e.g.
    /// hush-client's room list), as [`Changes::custom_values`].
    pub custom_values: Vec<(String, Vec<u8>)>,
}

/// What a sync produced: what it decrypted. The same room keys and
/// withheld notices are also queued as [`EngineEvent`]s, with the other
/// state changes.
#[derive(Clone, Debug, Default)]
pub struct SyncOutput {
    /// One outcome per to-device event, in order.
    pub to_device: Vec<ToDeviceOutcome>,
    /// Room keys that arrived and were stored.
    pub room_keys: Vec<RoomKeyInfo>,
    /// Withheld notices that arrived.
    pub withheld: Vec<WithheldInfo>,
}

impl OlmMachine {
    /// Processes one sync: device-list changes, key counts (generating keys
    /// to upload if needed), and every to-device event, decrypting Olm ones.
    /// Everything it changed is saved in one batch, with `next_batch_token`,
    /// before it returns; only then should the caller store its sync token.
    /// A bad event fails alone (see [`ToDeviceOutcome::Failed`]); a store
    /// failure fails the call and nothing of the sync is acknowledged. After
    /// the save, the room keys and withheld notices are queued as events.
    pub async fn receive_sync_changes(&self, sync: SyncChanges, now: Timestamp) -> Result<SyncOutput, StoreError> {
        let SyncChanges {
            to_device_events,
            device_lists,
            one_time_keys_counts,
            unused_fallback_keys,
            next_batch_token,
            custom_values,
        } = sync;
        let mut account = self.inner.account.lock().await;
        let mut sessions = self.inner.sessions.lock().await;
        let mut changes = Changes { next_batch_token, custom_values, ..Default::default() };

        self.apply_device_list_changes(&device_lists, &mut changes);

        // While an upload is unanswered its keys are not yet published; the
        // counts are applied after the answer, never by generating more now.
        if !lock(&self.inner.requests).has_keys_upload() {
            let count = one_time_keys_counts.signed_curve25519();
            if account.update_key_counts(count, unused_fallback_keys.as_deref()) {
                changes.account = Some(account.to_stored());
            }
        }

        let mut output = SyncOutput::default();
        let mut verification = Vec::new();
        let mut gossip = Vec::new();
        let mut answered = Vec::new();
        let outcomes =
            self.receive_to_device_batch(&mut account, &mut sessions, to_device_events, now, &mut changes).await?;
        for (outcome, room_key) in outcomes {
            let (outcome, carried) = match room_key {
                CarriedRoomKey::Secret(secret) => (outcome, Some(secret)),
                CarriedRoomKey::Forwarded(forwarded) => {
                    (self.apply_forwarded(outcome, forwarded, &mut changes, &mut output, &mut answered).await?, None)
                }
                room_key => (self.apply_to_device(outcome, room_key, &mut changes, &mut output).await?, None),
            };
            gossip.extend(gossip_message(&outcome, carried));
            verification.extend(verification_message(&outcome));
            output.to_device.push(outcome);
        }
        if changes.account.is_some() {
            // Key counts or consumed one-time keys: save the final account.
            changes.account = Some(account.to_stored());
        }
        self.save(Some(&mut account), Some(&mut sessions), changes).await?;
        drop(sessions);
        drop(account);
        let keys = output.room_keys.iter().cloned().map(EngineEvent::RoomKeyReceived);
        let withheld = output.withheld.iter().cloned().map(EngineEvent::RoomKeyWithheld);
        self.announce(keys.chain(withheld));
        self.cancel_answered(&answered);
        if let Err(error) = self.answer_awaiting_keys(now).await {
            tracing::warn!(%error, "answering our devices' requests for keys that arrived failed");
        }
        // After the save and with the locks released: a verification that
        // finishes signs keys, which takes the account lock. Before the
        // gossip: a device of ours that finished verifying us sends its
        // open requests again right after its `mac` and `done`, often in
        // the same sync, and they must meet the trust the `mac` gives.
        for (sender, device, event_type, content) in verification {
            // The sync is saved: one message's failure (even the store's)
            // is logged, and the others are still handled.
            if let Err(error) =
                self.receive_to_device_verification(&sender, device.as_deref(), &event_type, &content, now).await
            {
                tracing::warn!(%error, "a verification message failed");
            }
        }
        self.receive_gossip(gossip, now).await;
        Ok(output)
    }

    /// Acts on what a to-device event carries: room keys and withheld notices.
    async fn apply_to_device(
        &self,
        outcome: ToDeviceOutcome,
        room_key: CarriedRoomKey,
        changes: &mut Changes,
        output: &mut SyncOutput,
    ) -> Result<ToDeviceOutcome, StoreError> {
        match outcome {
            ToDeviceOutcome::Decrypted { event, info } if info.event_type == "m.room_key" => {
                let stored = match room_key {
                    CarriedRoomKey::Checked(prepared) => match self.receive_room_key(prepared, changes).await? {
                        Ok(stored) => Ok(stored),
                        Err(mismatch) => {
                            Err(OlmError::RoomKeyConflict { session_id: room_key_session_id(&event), mismatch })
                        }
                    },
                    CarriedRoomKey::Refused(error) => Err(error),
                    CarriedRoomKey::None | CarriedRoomKey::Forwarded(_) | CarriedRoomKey::Secret(_) => {
                        Err(OlmError::InvalidPayload("the room key was not checked".into()))
                    }
                };
                match stored {
                    // The event's session key was blanked when it was decrypted.
                    Ok(stored) => {
                        output.room_keys.extend(stored);
                        Ok(ToDeviceOutcome::Decrypted { event, info })
                    }
                    Err(error) => {
                        tracing::warn!(%error, sender = %info.sender, "rejected a room key");
                        Ok(ToDeviceOutcome::PayloadRejected { event, info, error })
                    }
                }
            }
            ToDeviceOutcome::Decrypted { event, info } if info.event_type == "m.room_key.withheld" => {
                let value: Value = event.deserialize_as_unchecked().unwrap_or_default();
                match self.receive_withheld(&info.sender, &value["content"], changes) {
                    Ok(withheld) => output.withheld.push(withheld),
                    Err(reason) => tracing::warn!(%reason, "ignored a malformed withheld notice"),
                }
                Ok(ToDeviceOutcome::Decrypted { event, info })
            }
            ToDeviceOutcome::PlainText(event) => {
                let value: Value = event.deserialize_as_unchecked().unwrap_or_default();
                if value["type"] == "m.room_key.withheld"
                    && let Some(sender) = value["sender"].as_str().and_then(|s| ruma_common::UserId::parse(s).ok())
                {
                    match self.receive_withheld(&sender, &value["content"], changes) {
                        Ok(withheld) => output.withheld.push(withheld),
                        Err(reason) => tracing::warn!(%reason, "ignored a malformed withheld notice"),
                    }
                }
                Ok(ToDeviceOutcome::PlainText(event))
            }
            other => Ok(other),
        }
    }
}

impl OlmMachine {
    /// An `m.forwarded_room_key`: stored in this sync's batch if the rules
    /// take it (see `machine/gossip.rs`); otherwise the outcome says why not.
    async fn apply_forwarded(
        &self,
        outcome: ToDeviceOutcome,
        forwarded: Result<Box<ForwardedRoomKey>, GossipError>,
        changes: &mut Changes,
        output: &mut SyncOutput,
        answered: &mut Vec<GossipRequest>,
    ) -> Result<ToDeviceOutcome, StoreError> {
        let ToDeviceOutcome::Decrypted { event, info } = outcome else { return Ok(outcome) };
        let taken = match forwarded {
            Ok(key) => self.receive_forwarded_key(&info, *key, changes).await?,
            Err(error) => Err(error),
        };
        match taken {
            Ok((stored, request)) => {
                output.room_keys.extend(stored);
                answered.extend(request);
                Ok(ToDeviceOutcome::Decrypted { event, info })
            }
            Err(error) => {
                tracing::warn!(%error, sender = %info.sender, "refused a forwarded room key");
                Ok(ToDeviceOutcome::PayloadRejected { event, info, error: OlmError::Gossip(error) })
            }
        }
    }
}

/// A gossip request (in the clear or decrypted) or a secret (decrypted only).
fn gossip_message(
    outcome: &ToDeviceOutcome,
    secret: Option<Result<Box<SecretSend>, GossipError>>,
) -> Option<GossipInput> {
    if let (Some(secret), ToDeviceOutcome::Decrypted { info, .. }) = (secret, outcome) {
        return match secret {
            Ok(secret) => Some(GossipInput::Secret(info.clone(), secret)),
            Err(error) => {
                tracing::warn!(%error, "ignored a malformed secret");
                None
            }
        };
    }
    let event = match outcome {
        ToDeviceOutcome::Decrypted { event, .. } | ToDeviceOutcome::PlainText(event) => event,
        _ => return None,
    };
    let value: Value = event.deserialize_as_unchecked().ok()?;
    let event_type = value.get("type")?.as_str()?;
    if event_type != SECRET_REQUEST && event_type != ROOM_KEY_REQUEST {
        return None;
    }
    let sender = OwnedUserId::try_from(value.get("sender")?.as_str()?).ok()?;
    let content = value.get("content")?;
    let parsed = match event_type {
        SECRET_REQUEST => IncomingSecretRequest::parse(content).map(|r| GossipInput::SecretRequest(sender, r)),
        _ => IncomingKeyRequest::parse(content).map(|r| GossipInput::KeyRequest(sender, r)),
    };
    parsed.map_err(|error| tracing::info!(%error, "ignored a malformed gossip request")).ok()
}

/// A verification message, in the clear or decrypted: sender, the
/// Olm-authenticated device (if decrypted), type, content.
type VerificationInput = (OwnedUserId, Option<ruma_common::OwnedDeviceId>, String, Value);

fn verification_message(outcome: &ToDeviceOutcome) -> Option<VerificationInput> {
    let (event, device) = match outcome {
        ToDeviceOutcome::Decrypted { event, info } => (event, Some(info.sender_device.clone()?)),
        ToDeviceOutcome::PlainText(event) => (event, None),
        _ => return None,
    };
    let value: Value = event.deserialize_as_unchecked().ok()?;
    let event_type = value.get("type")?.as_str()?;
    if !event_type.starts_with("m.key.verification.") {
        return None;
    }
    let sender = OwnedUserId::try_from(value.get("sender")?.as_str()?).ok()?;
    Some((sender, device, event_type.to_owned(), value.get("content")?.clone()))
}

/// The session id an `m.room_key` event names (for error reports).
fn room_key_session_id(event: &Raw<AnyToDeviceEvent>) -> String {
    let value: Value = event.deserialize_as_unchecked().unwrap_or_default();
    value["content"]["session_id"].as_str().unwrap_or_default().to_owned()
}
