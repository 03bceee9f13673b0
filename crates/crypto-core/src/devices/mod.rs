//! Devices of other users (and our own other devices): their checked keys,
//! which users we track and when their lists are queried (`tracker`), and processing of `/keys/query` answers.

mod device;
mod query;
mod tracker;

pub use device::{DeviceData, DeviceKeysError, LocalTrust};
pub(crate) use query::{device_changes, process_user_devices};
pub(crate) use tracker::{DeviceTracker, KEYS_QUERY_BATCH, QUERY_RETRY_RECORD};
