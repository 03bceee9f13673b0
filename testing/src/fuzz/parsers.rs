//! Stateless targets: files, store values, gossip contents, backup data and
//! secret storage, each through the decoder hush uses for it.

use hush_crypto_core::{
    backup::{BackupDecryptionKey, BackupInfo, EncryptedSessionData},
    export::{KeyExportReader, decrypt_room_key_export},
    gossip::{ForwardedRoomKey, IncomingKeyRequest, IncomingSecretRequest, SecretSend},
    megolm::{StoredInboundGroupSession, StoredOutboundGroupSession, WithheldInfo},
    secret_storage::{KeyDescription, SecretContent, SecretStorageKey, decode_recovery_key, decrypt_secret},
    store::{StoredAccount, StoredSecret, StoredSession, TrackedUser},
};

use super::json;

/// The passphrase of the seed files.
pub(super) const EXPORT_PASSPHRASE: &str = "fuzz";

/// A key export file: the whole-file decoder and the streaming reader, on
/// the input (unless deriving its keys would take a PBKDF2 benchmark's
/// time) and on a copy whose MAC the harness made valid (see
/// [`super::export_file`]).
pub(super) fn key_export(data: &[u8]) {
    if super::export_file::cheap_to_decode(data) {
        decode_key_export(data);
    }
    if let Some(repaired) = super::export_file::repaired(data, EXPORT_PASSPHRASE) {
        decode_key_export(repaired.as_bytes());
    }
}

/// Both key export decoders on one file.
fn decode_key_export(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = decrypt_room_key_export(&text, EXPORT_PASSPHRASE);
    let mut cursor = std::io::Cursor::new(data);
    if let Ok(mut reader) = KeyExportReader::open(&mut cursor, EXPORT_PASSPHRASE) {
        let _ = reader.total();
        // Bounded: a file holds at most as many keys as it has bytes.
        for _ in 0..=data.len() {
            match reader.next_key() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// A value read back from a store file (after decryption): every record
/// type's decoder. The first byte picks the type, so each is reached.
pub(super) fn store_values(data: &[u8]) {
    let Some((kind, bytes)) = data.split_first() else { return };
    match kind % 8 {
        0 => drop(hush_crypto_core::store::decode_value::<StoredAccount>(bytes)),
        1 => drop(hush_crypto_core::store::decode_value::<StoredSession>(bytes)),
        2 => drop(hush_crypto_core::store::decode_value::<StoredInboundGroupSession>(bytes)),
        3 => drop(hush_crypto_core::store::decode_value::<StoredOutboundGroupSession>(bytes)),
        4 => drop(hush_crypto_core::store::decode_value::<hush_crypto_core::DeviceData>(bytes)),
        5 => drop(hush_crypto_core::store::decode_value::<TrackedUser>(bytes)),
        6 => drop(hush_crypto_core::store::decode_value::<WithheldInfo>(bytes)),
        _ => drop(hush_crypto_core::store::decode_value::<StoredSecret>(bytes)),
    }
}

/// The contents of `m.secret.request`, `m.room_key_request`,
/// `m.secret.send` and `m.forwarded_room_key`.
pub(super) fn gossip_content(data: &[u8]) {
    let Some(content) = json(data) else { return };
    let _ = IncomingSecretRequest::parse(&content);
    let _ = IncomingKeyRequest::parse(&content);
    let _ = SecretSend::parse(&content);
    if let Ok(forwarded) = ForwardedRoomKey::parse(&content) {
        drop(forwarded);
    }
}

/// The backup decryption key of the seeds (a fixed test key).
pub(super) fn backup_key() -> BackupDecryptionKey {
    BackupDecryptionKey::from_base64(&vodozemac::base64_encode([9u8; 32])).expect("a 32-byte key")
}

/// A backup's `session_data` decrypted with our key, and a backup version's
/// info (its `auth_data` and signatures).
pub(super) fn backup_data(data: &[u8]) {
    let Some(value) = json(data) else { return };
    if let Ok(encrypted) = serde_json::from_value::<EncryptedSessionData>(value.clone()) {
        let _ = backup_key().decrypt(&encrypted);
    }
    if let Ok(info) = serde_json::from_value::<BackupInfo>(value) {
        super::engines::backup_info(&info);
    }
}

/// Recovery keys as typed; secret storage key descriptions opened with the
/// input's recovery key (or a fixed one), and encrypted secrets decrypted
/// with the key.
pub(super) fn secret_storage(data: &[u8]) {
    let _ = decode_recovery_key(&String::from_utf8_lossy(data));
    let Some(value) = json(data) else { return };
    let description = value.get("description").cloned().and_then(|d| serde_json::from_value::<KeyDescription>(d).ok());
    let Some(description) = description else { return };
    let key_id = value["key_id"].as_str().unwrap_or("key");
    let bytes = value["recovery_key"]
        .as_str()
        .and_then(|k| decode_recovery_key(k).ok())
        .unwrap_or_else(|| zeroize::Zeroizing::new([7; 32]));
    let Ok(key) = SecretStorageKey::open(key_id, &description, bytes) else { return };
    if let Some(secret) = value.get("secret").cloned().and_then(|s| serde_json::from_value::<SecretContent>(s).ok()) {
        let name = value["name"].as_str().unwrap_or("m.cross_signing.master");
        let _ = decrypt_secret(&key, name, &secret);
    }
}
