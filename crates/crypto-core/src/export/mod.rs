//! Key export files: room keys encrypted with a passphrase, in the format the
//! spec's "Key exports" section lays out, readable by other Matrix clients.

mod file;
mod key;

pub use file::{
    KeyExportError, KeyExportReader, KeyExportWriter, MAX_ROUNDS, decrypt_room_key_export, encrypt_room_key_export,
};
pub use key::ExportedRoomKey;
