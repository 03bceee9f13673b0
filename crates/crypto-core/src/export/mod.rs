//! Key export files: room keys encrypted with a passphrase, in the format the
//! spec's "Key exports" section lays out, readable by other Matrix clients.

mod convert;
mod file;
mod key;

pub(crate) use convert::session_from_export;
pub use file::{
    KeyExportError, KeyExportReader, KeyExportWriter, MAX_ROUNDS, decrypt_room_key_export, encrypt_room_key_export,
};
pub use key::ExportedRoomKey;
