//! Devices of other users (and our own other devices): their checked keys,
//! which users we track, and processing of `/keys/query` answers.

mod device;
mod query;

pub use device::{DeviceData, DeviceKeysError, LocalTrust};
pub(crate) use query::process_user_devices;
