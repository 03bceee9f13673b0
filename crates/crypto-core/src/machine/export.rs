//! Exporting room keys to, and importing them from, key export files.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, Write};

use ruma_common::OwnedRoomId;

use super::{OlmMachine, room_keys::KeyOffer};
use crate::export::session_from_export;
use crate::{
    StoreError,
    contain::contain,
    export::{ExportedRoomKey, KeyExportError, KeyExportReader, KeyExportWriter},
    megolm::InboundGroupSession,
    store::Changes,
};

/// Keys are read from the store, and saved on import, this many at a time.
const PAGE: usize = 1000;

/// The outcome of an import of room keys, from a key file, a list of
/// exported keys or the key backup (the one result of every import).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomKeyImportResult {
    /// Keys stored (new, or better than the copy we had).
    pub imported_count: usize,
    /// Keys in the input.
    pub total_count: usize,
    /// The stored keys, by room.
    pub keys: BTreeMap<OwnedRoomId, BTreeSet<String>>,
    /// Keys refused because their session id is held for another owner
    /// (another sender key, claimed ed25519 key or user).
    pub conflicting_count: usize,
    /// Entries skipped, logged: malformed (a key that is not a valid
    /// session), or, from a backup, failing their MAC (another backup's
    /// key, or data not made for this backup).
    pub invalid_count: usize,
}

/// Why a key file could not be imported.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The file is unreadable, damaged, or the passphrase is wrong.
    #[error(transparent)]
    File(#[from] KeyExportError),
    /// Saving the keys failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OlmMachine {
    /// Visits every stored room key a page at a time, in (room, session) order.
    async fn for_each_room_key(
        &self,
        mut visit: impl FnMut(ExportedRoomKey) -> Result<(), KeyExportError>,
    ) -> Result<(), ImportError> {
        let mut after: Option<(OwnedRoomId, String)> = None;
        loop {
            let cursor = after.as_ref().map(|(r, s)| (r.as_ref(), s.as_str()));
            let page = self.inner.store.get_inbound_group_sessions(cursor, PAGE).await?;
            let Some(last) = page.last() else { return Ok(()) };
            after = Some((last.room_id.clone(), last.session_id.clone()));
            let full = page.len() == PAGE;
            for stored in page {
                visit(ExportedRoomKey::from(&InboundGroupSession::from_stored(stored)))?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Every stored room key that `predicate` accepts, ready for a key file.
    pub async fn export_room_keys(
        &self,
        mut predicate: impl FnMut(&ExportedRoomKey) -> bool,
    ) -> Result<Vec<ExportedRoomKey>, StoreError> {
        let mut keys = Vec::new();
        let result = self
            .for_each_room_key(|key| {
                if predicate(&key) {
                    keys.push(key);
                }
                Ok(())
            })
            .await;
        match result {
            Ok(()) => Ok(keys),
            Err(ImportError::Store(error)) => Err(error),
            Err(ImportError::File(error)) => Err(StoreError::Backend(error.to_string())),
        }
    }

    /// Streams the room keys `predicate` accepts into an encrypted key file
    /// on `out`, holding one page of keys in memory at a time. Returns how
    /// many keys were written.
    pub async fn export_room_keys_to<W: Write>(
        &self,
        out: W,
        passphrase: &str,
        rounds: u32,
        mut predicate: impl FnMut(&ExportedRoomKey) -> bool,
    ) -> Result<usize, ImportError> {
        let mut writer = KeyExportWriter::new(out, passphrase, rounds)?;
        let mut count = 0;
        self.for_each_room_key(|key| {
            if predicate(&key) {
                writer.write_key(&key)?;
                count += 1;
            }
            Ok(())
        })
        .await?;
        writer.finish()?;
        Ok(count)
    }

    /// Imports exported room keys, saving them in batches. A key never
    /// replaces a better copy (one reaching further back, or one received
    /// over Olm); imported keys are marked as imported. `progress` gets
    /// (processed, total).
    pub async fn import_room_keys(
        &self,
        keys: Vec<ExportedRoomKey>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<RoomKeyImportResult, StoreError> {
        let total = keys.len();
        let mut result = RoomKeyImportResult { total_count: total, ..Default::default() };
        for (i, batch) in keys.chunks(PAGE).enumerate() {
            self.import_batch(batch, &mut result).await?;
            progress((i * PAGE + batch.len()).min(total), total);
        }
        Ok(result)
    }

    /// Imports a key export file, streaming: the file is checked whole
    /// (passphrase, MAC, JSON) before any key is stored, then imported in
    /// batches, with one batch of keys in memory at a time. `progress` gets
    /// (processed, total).
    pub async fn import_room_key_export<R: Read + Seek>(
        &self,
        input: &mut R,
        passphrase: &str,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<RoomKeyImportResult, ImportError> {
        let mut reader: KeyExportReader<'_, R> = KeyExportReader::open(input, passphrase)?;
        let total = reader.total();
        let mut result = RoomKeyImportResult { total_count: total, ..Default::default() };
        let mut done = 0;
        loop {
            let mut batch = Vec::with_capacity(PAGE);
            while batch.len() < PAGE {
                match reader.next_key()? {
                    Some(key) => batch.push(key),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            self.import_batch(&batch, &mut result).await?;
            done += batch.len();
            progress(done, total);
        }
        Ok(result)
    }

    async fn import_batch(&self, keys: &[ExportedRoomKey], result: &mut RoomKeyImportResult) -> Result<(), StoreError> {
        let mut sessions = Vec::with_capacity(keys.len());
        for key in keys {
            match contain("an imported room key", || session_from_export(key)).ok().flatten() {
                Some(session) => sessions.push(session),
                None => {
                    result.invalid_count += 1;
                    tracing::warn!(room_id = %key.room_id, session_id = %key.session_id, "skipped an invalid exported key")
                }
            }
        }
        let tally = self.store_unauthenticated_keys(sessions).await?;
        result.conflicting_count += tally.conflicting;
        for (room_id, session_id) in tally.stored {
            result.imported_count += 1;
            result.keys.entry(room_id).or_default().insert(session_id);
        }
        Ok(())
    }
}

/// What [`OlmMachine::store_unauthenticated_keys`] did with a batch.
pub(super) struct StoredKeys {
    /// The keys stored, by room and session id.
    pub(super) stored: Vec<(OwnedRoomId, String)>,
    /// How many were refused because the session id is held for another owner.
    pub(super) conflicting: usize,
}

impl OlmMachine {
    /// Offers a batch of keys from a file or a backup to the store (each tied
    /// to the known device its claimed keys name, never replacing a better or
    /// differently owned key) and saves it in one batch.
    pub(super) async fn store_unauthenticated_keys(
        &self,
        sessions: Vec<InboundGroupSession>,
    ) -> Result<StoredKeys, StoreError> {
        let mut changes = Changes::default();
        let mut tally = StoredKeys { stored: Vec::new(), conflicting: 0 };
        for mut session in sessions {
            session.sender_user = self.owner_of_claimed_keys(&session).await?;
            let (room_id, session_id) = (session.room_id.clone(), session.session_id.clone());
            match self.offer_inbound(session, &mut changes).await? {
                KeyOffer::Stored => tally.stored.push((room_id, session_id)),
                KeyOffer::KeptExisting => {}
                KeyOffer::Conflict(_) => tally.conflicting += 1,
            }
        }
        self.save(None, None, changes).await?;
        Ok(tally)
    }
}

impl OlmMachine {
    /// The user whose known device has the key's curve25519 key and claimed
    /// ed25519 key: the key is tied to that user, so an event from anyone
    /// else decrypted with it is a sender mismatch.
    pub(super) async fn owner_of_claimed_keys(
        &self,
        session: &InboundGroupSession,
    ) -> Result<Option<ruma_common::OwnedUserId>, StoreError> {
        let Some(claimed) = session.sender_ed25519 else { return Ok(None) };
        if session.sender_key == self.inner.own.curve25519 && claimed == self.inner.own.ed25519 {
            return Ok(Some(self.inner.own.user_id.clone()));
        }
        let devices = self.inner.store.get_devices_by_curve25519(&session.sender_key).await?;
        Ok(devices.into_iter().find(|d| d.ed25519_key() == claimed).map(|d| d.user_id().to_owned()))
    }
}
