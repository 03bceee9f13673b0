//! Trust settings: which devices get this client's room keys (the sharing
//! strategy) and whose messages it shows (the decryption trust
//! requirement), client-wide and per room, kept in the crypto store.
//!
//! The default is spec v1.18's recommended client behaviour (MSC4153, what
//! Element enforces): room keys only for devices their owner cross-signed
//! (the others, our own unsigned devices included, get `m.room_key.withheld`
//! with `m.unverified`), sending refused while a user we verified has a
//! new identity we did not verify, and messages from devices we know are
//! not cross-signed not shown. [`TrustSettings::legacy`] is the choice
//! before v1.18: every device gets keys and every message is shown.

use std::collections::BTreeMap;

use hush_crypto_core::{Changes, CryptoStore, SharingStrategy, TrustRequirement};
use ruma_common::{OwnedRoomId, RoomId};
use serde::{Deserialize, Serialize};

use crate::{Client, ClientError, Room, client::lock};

/// Which devices get our room keys, and whose messages are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustSettings {
    /// Which devices receive room keys.
    pub sharing: SharingStrategy,
    /// What a sender's device must be for its messages to be shown.
    pub decryption: TrustRequirement,
}

impl TrustSettings {
    /// Spec v1.18's recommended behaviour, the default:
    /// [`SharingStrategy::IdentityBased`] and
    /// [`TrustRequirement::ExcludeInsecureDevices`].
    pub const fn recommended() -> Self {
        Self { sharing: SharingStrategy::recommended(), decryption: TrustRequirement::recommended() }
    }

    /// The choice before spec v1.18: every device of every member gets the
    /// room key ([`SharingStrategy::LegacyAllDevices`]) and every message
    /// is shown ([`TrustRequirement::Untrusted`]), with its trust in the
    /// event's encryption info.
    pub const fn legacy() -> Self {
        Self { sharing: SharingStrategy::LegacyAllDevices, decryption: TrustRequirement::Untrusted }
    }
}

impl Default for TrustSettings {
    fn default() -> Self {
        Self::recommended()
    }
}

/// The custom value holding the client-wide settings.
const CLIENT_KEY: &str = "hush.client.trust";
/// The custom value holding the per-room overrides.
const ROOMS_KEY: &str = "hush.client.trust.rooms";

/// The settings in force: the client-wide ones and the rooms' overrides.
#[derive(Debug, Default)]
pub(crate) struct TrustState {
    client: TrustSettings,
    rooms: BTreeMap<OwnedRoomId, TrustSettings>,
    /// Set on the builder: saved at the first open, in place of the stored ones.
    from_builder: Option<TrustSettings>,
}

impl TrustState {
    /// The builder's settings, if it was given some.
    pub(crate) fn with_builder(from_builder: Option<TrustSettings>) -> Self {
        Self { client: from_builder.unwrap_or_default(), rooms: BTreeMap::new(), from_builder }
    }
}

fn decode<T: serde::de::DeserializeOwned>(record: Option<Vec<u8>>, what: &str) -> Option<T> {
    let record = record?;
    match serde_json::from_slice(&record) {
        Ok(value) => Some(value),
        Err(error) => {
            // A damaged record is not a reason to stop: the default (the
            // strict one) applies, and the application is told in the log.
            tracing::warn!(%error, what, "a stored trust setting could not be read; the default applies");
            None
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(value).map_err(|e| ClientError::Serialization(e.to_string()))
}

impl Client {
    /// The client-wide trust settings (rooms without an override use them).
    pub fn trust_settings(&self) -> TrustSettings {
        lock(&self.inner.trust).client
    }

    /// Changes the client-wide trust settings, saved in the store (they
    /// hold across restarts). A room whose sharing strategy changes gets a
    /// new room key at its next message.
    pub async fn set_trust_settings(&self, settings: TrustSettings) -> Result<(), ClientError> {
        let _one_write = self.inner.trust_writes.lock().await;
        self.save_trust(CLIENT_KEY, encode(&settings)?).await?;
        lock(&self.inner.trust).client = settings;
        Ok(())
    }

    /// The settings in force in `room_id`: its override, or the client's.
    pub(crate) fn room_trust(&self, room_id: &RoomId) -> TrustSettings {
        let trust = lock(&self.inner.trust);
        trust.rooms.get(room_id).copied().unwrap_or(trust.client)
    }

    /// Loads the stored settings when the store is opened (and after another
    /// process sharing the store held it). Settings given on the builder
    /// replace the stored client-wide ones, and are saved.
    pub(crate) async fn load_trust(&self, store: &dyn CryptoStore) -> Result<(), ClientError> {
        let from_builder = lock(&self.inner.trust).from_builder.take();
        let stored: Option<TrustSettings> = decode(store.get_custom_value(CLIENT_KEY).await?, "client-wide");
        let rooms: BTreeMap<OwnedRoomId, TrustSettings> =
            decode(store.get_custom_value(ROOMS_KEY).await?, "per-room").unwrap_or_default();
        let client = match from_builder {
            Some(settings) => {
                if stored != Some(settings) {
                    let custom_values = vec![(CLIENT_KEY.to_owned(), encode(&settings)?)];
                    store.save_changes(Changes { custom_values, ..Default::default() }).await?;
                }
                settings
            }
            None => stored.unwrap_or_default(),
        };
        let mut trust = lock(&self.inner.trust);
        trust.client = client;
        trust.rooms = rooms;
        Ok(())
    }

    async fn save_trust(&self, key: &str, value: Vec<u8>) -> Result<(), ClientError> {
        let machine = self.olm_machine()?;
        let custom_values = vec![(key.to_owned(), value)];
        machine.store().save_changes(Changes { custom_values, ..Default::default() }).await?;
        Ok(())
    }
}

impl Room {
    /// The trust settings in force in this room: its override, or the
    /// client's.
    pub fn trust_settings(&self) -> TrustSettings {
        self.client.room_trust(self.room_id())
    }

    /// This room's own settings, if it has some.
    pub fn trust_override(&self) -> Option<TrustSettings> {
        lock(&self.client.inner.trust).rooms.get(self.room_id()).copied()
    }

    /// Gives this room settings of its own (`None`: the client's apply
    /// again), saved in the store.
    pub async fn set_trust_settings(&self, settings: Option<TrustSettings>) -> Result<(), ClientError> {
        // Read, change and save under one lock: two rooms set at once keep both.
        let _one_write = self.client.inner.trust_writes.lock().await;
        let mut rooms = lock(&self.client.inner.trust).rooms.clone();
        match settings {
            Some(settings) => rooms.insert(self.room_id().to_owned(), settings),
            None => rooms.remove(self.room_id()),
        };
        self.client.save_trust(ROOMS_KEY, encode(&rooms)?).await?;
        lock(&self.client.inner.trust).rooms = rooms;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_spec_v1_18_recommendation_and_legacy_is_named() {
        let default = TrustSettings::default();
        assert_eq!(default.sharing, SharingStrategy::IdentityBased);
        assert_eq!(default.decryption, TrustRequirement::ExcludeInsecureDevices);
        assert_eq!(TrustSettings::legacy().sharing, SharingStrategy::LegacyAllDevices);
        assert_eq!(TrustSettings::legacy().decryption, TrustRequirement::Untrusted);
    }

    #[test]
    fn settings_round_trip_and_an_old_strategy_name_still_reads() {
        let settings =
            TrustSettings { sharing: SharingStrategy::OnlyTrustedDevices, decryption: TrustRequirement::CrossSigned };
        let bytes = encode(&settings).unwrap();
        assert_eq!(decode::<TrustSettings>(Some(bytes), "test"), Some(settings));
        let old = br#"{"sharing":"AllDevices","decryption":"Untrusted"}"#.to_vec();
        assert_eq!(decode::<TrustSettings>(Some(old), "test"), Some(TrustSettings::legacy()));
        assert_eq!(decode::<TrustSettings>(Some(b"{garbage".to_vec()), "test"), None, "a damaged record reads as none");
    }
}
