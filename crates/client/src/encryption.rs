//! [`Encryption`]: key export and import, and devices with their trust.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use hush_crypto_core::{DeviceData, LocalTrust, RoomKeyImportResult, export::ExportedRoomKey, identities::DeviceTrust};
use ruma_common::{DeviceId, UserId};

use crate::{Client, ClientError};

/// PBKDF2 rounds for exported key files (the spec asks for at least 100,000).
pub const EXPORT_ROUNDS: u32 = 200_000;

/// The encryption API of a client (`client.encryption()`).
#[derive(Clone, Debug)]
pub struct Encryption {
    pub(crate) client: Client,
}

/// A device's identity keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentityKeys {
    /// The ed25519 key: signs the device's keys; its fingerprint.
    pub ed25519: hush_crypto_core::deps::vodozemac::Ed25519PublicKey,
    /// The curve25519 identity key: Olm sessions are made with it.
    pub curve25519: hush_crypto_core::deps::vodozemac::Curve25519PublicKey,
}

/// A device of some user.
#[derive(Clone, Debug)]
pub struct Device {
    client: Client,
    data: DeviceData,
    trust: DeviceTrust,
}

impl Device {
    async fn new(client: &Client, data: DeviceData) -> Result<Self, ClientError> {
        let machine = client.olm_machine()?;
        let trust = machine.device_trust(data.user_id(), data.device_id()).await?.unwrap_or_default();
        Ok(Self { client: client.clone(), data, trust })
    }

    /// The device's keys and local trust.
    pub fn data(&self) -> &DeviceData {
        &self.data
    }

    /// Whether the device is verified: by hand, or cross-signed by its
    /// owner whose identity is verified (as of when it was read).
    pub fn is_verified(&self) -> bool {
        self.trust.is_verified()
    }

    /// Whether its owner's self-signing key signed it.
    pub fn is_cross_signed_by_owner(&self) -> bool {
        self.trust.cross_signed_by_owner
    }

    /// Cross-signs one of our own devices with our self-signing key (it then
    /// shows verified to everyone who verified us), and uploads the
    /// signature. Other users' devices are trusted through their owner.
    pub async fn verify(&self) -> Result<(), ClientError> {
        let machine = self.client.olm_machine()?;
        machine.verify_device(self.data.user_id(), self.data.device_id()).await?;
        self.client.send_outgoing_requests().await
    }

    /// Marks the device verified (after comparing its keys out of band).
    pub async fn set_local_trust(&self, trust: LocalTrust) -> Result<(), ClientError> {
        let machine = self.client.olm_machine()?;
        machine.set_local_trust(self.data.user_id(), self.data.device_id(), trust).await?;
        Ok(())
    }
}

impl Encryption {
    /// Writes the room keys that `predicate` accepts to an encrypted key file.
    /// Returns how many keys were written.
    pub async fn export_room_keys(
        &self,
        path: impl AsRef<Path>,
        passphrase: &str,
        predicate: impl FnMut(&ExportedRoomKey) -> bool,
    ) -> Result<usize, ClientError> {
        let machine = self.client.olm_machine()?;
        let file = File::create(path.as_ref()).map_err(|e| ClientError::Io(e.to_string()))?;
        Ok(machine.export_room_keys_to(BufWriter::new(file), passphrase, EXPORT_ROUNDS, predicate).await?)
    }

    /// Imports a key file; `progress` gets (imported so far, total).
    pub async fn import_room_keys(
        &self,
        path: impl AsRef<Path>,
        passphrase: &str,
        progress: impl FnMut(usize, usize),
    ) -> Result<RoomKeyImportResult, ClientError> {
        let machine = self.client.olm_machine()?;
        let file = File::open(path.as_ref()).map_err(|e| ClientError::Io(e.to_string()))?;
        Ok(machine.import_room_key_export(&mut BufReader::new(file), passphrase, progress).await?)
    }

    /// This device's identity keys (ed25519 fingerprint key and curve25519
    /// identity key), as other users see them when verifying it.
    pub fn identity_keys(&self) -> Result<IdentityKeys, ClientError> {
        let (ed25519, curve25519) = self.client.olm_machine()?.identity_keys();
        Ok(IdentityKeys { ed25519, curve25519 })
    }

    /// One device of a user, if known.
    pub async fn get_device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Option<Device>, ClientError> {
        let machine = self.client.olm_machine()?;
        match machine.get_device(user_id, device_id).await?.filter(|d| !d.is_deleted()) {
            Some(data) => Ok(Some(Device::new(&self.client, data).await?)),
            None => Ok(None),
        }
    }

    /// Every known device of a user.
    pub async fn get_user_devices(&self, user_id: &UserId) -> Result<Vec<Device>, ClientError> {
        let machine = self.client.olm_machine()?;
        machine.update_tracked_users([user_id]).await?;
        self.client.send_outgoing_requests().await?;
        let mut devices = Vec::new();
        for data in machine.get_user_devices(user_id).await?.into_values() {
            devices.push(Device::new(&self.client, data).await?);
        }
        Ok(devices)
    }
}
