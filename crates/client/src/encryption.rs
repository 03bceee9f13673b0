//! [`Encryption`]: key export and import, and devices with their trust.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use hush_crypto_core::{DeviceData, LocalTrust, RoomKeyImportResult, export::ExportedRoomKey};
use ruma_common::{DeviceId, UserId};

use crate::{Client, ClientError};

/// PBKDF2 rounds for exported key files (the spec asks for at least 100,000).
pub const EXPORT_ROUNDS: u32 = 200_000;

/// The encryption API of a client (`client.encryption()`).
#[derive(Clone, Debug)]
pub struct Encryption {
    pub(crate) client: Client,
}

/// A device of some user.
#[derive(Clone, Debug)]
pub struct Device {
    client: Client,
    data: DeviceData,
}

impl Device {
    /// The device's keys and local trust.
    pub fn data(&self) -> &DeviceData {
        &self.data
    }

    /// Whether the device is verified. Today: the user verified it locally
    /// (cross-signing trust comes later).
    pub fn is_verified(&self) -> bool {
        self.data.is_verified()
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

    /// One device of a user, if known.
    pub async fn get_device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Option<Device>, ClientError> {
        let machine = self.client.olm_machine()?;
        let data = machine.get_device(user_id, device_id).await?.filter(|d| !d.is_deleted());
        Ok(data.map(|data| Device { client: self.client.clone(), data }))
    }

    /// Every known device of a user.
    pub async fn get_user_devices(&self, user_id: &UserId) -> Result<Vec<Device>, ClientError> {
        let machine = self.client.olm_machine()?;
        machine.update_tracked_users([user_id]).await?;
        self.client.send_outgoing_requests().await?;
        let devices = machine.get_user_devices(user_id).await?;
        Ok(devices.into_values().map(|data| Device { client: self.client.clone(), data }).collect())
    }
}
