//! Between our room keys and backed-up room keys.

use std::collections::BTreeMap;

use ruma_common::RoomId;
use vodozemac::megolm::ExportedSessionKey;
use zeroize::Zeroizing;

use super::{BackedUpRoomKey, BackupEncryptionKey, BackupKeyError, KeyBackupData};
use crate::megolm::{InboundGroupSession, KeySource, MEGOLM_ALGORITHM, Origin};

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
    let session_key = ExportedSessionKey::from_base64(&key.session_key).ok()?;
    let origin = Origin {
        sender_key: crate::keys::curve25519_from_base64(&key.sender_key).ok()?,
        sender_ed25519: match key.sender_claimed_keys.get("ed25519") {
            Some(claimed) => Some(crate::keys::ed25519_from_base64(claimed).ok()?),
            None => None,
        },
        sender_user: None,
        source: KeySource::Backup,
        shared_history: key.shared_history,
    };
    let session = InboundGroupSession::from_export(room_id, &session_key, origin);
    (session.session_id == session_id).then_some(session)
}
