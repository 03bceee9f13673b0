//! Between our room keys and backed-up room keys.

use std::collections::BTreeMap;

use ruma_common::RoomId;
use zeroize::Zeroizing;

use super::{BackedUpRoomKey, BackupEncryptionKey, BackupKeyError, KeyBackupData};
use crate::megolm::{ExportedParts, InboundGroupSession, KeySource, MEGOLM_ALGORITHM};

/// How many forwards are recorded for a key we back up.
const NOT_FORWARDED: u64 = 0;

/// The backup entry for one of our room keys, encrypted to `key`.
pub(crate) fn backup_entry(
    session: &InboundGroupSession,
    key: &BackupEncryptionKey,
) -> Result<KeyBackupData, BackupKeyError> {
    let mut claimed = BTreeMap::new();
    if let Some(ed25519) = session.sender_ed25519 {
        claimed.insert("ed25519".to_owned(), ed25519.to_base64());
    }
    let plaintext = BackedUpRoomKey {
        algorithm: MEGOLM_ALGORITHM.to_owned(),
        forwarding_curve25519_key_chain: Vec::new(),
        sender_claimed_keys: claimed,
        sender_key: session.sender_key.to_base64(),
        session_key: Zeroizing::new(session.export().to_base64()),
        shared_history: session.shared_history,
    };
    Ok(KeyBackupData {
        first_message_index: u64::from(session.first_known_index()),
        forwarded_count: NOT_FORWARDED,
        is_verified: session.source.is_authenticated(),
        session_data: key.encrypt(&plaintext)?,
    })
}

/// A room key from a decrypted backup entry, if it is well-formed and its
/// session id matches the one the backup filed it under. Its source is
/// [`KeySource::Backup`]: the sender's keys are only claimed.
pub(crate) fn session_from_backup(
    room_id: &RoomId,
    session_id: &str,
    key: &BackedUpRoomKey,
) -> Option<InboundGroupSession> {
    if key.algorithm != MEGOLM_ALGORITHM {
        return None;
    }
    InboundGroupSession::from_exported_parts(ExportedParts {
        room_id,
        session_id,
        session_key: &key.session_key,
        sender_key: &key.sender_key,
        claimed_ed25519: key.sender_claimed_keys.get("ed25519").map(String::as_str),
        shared_history: key.shared_history,
        source: KeySource::Backup,
    })
    .ok()
}
