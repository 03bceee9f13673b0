//! # hush-store-sled
//!
//! hush's crypto store on [sled](https://docs.rs/sled). Every table lives in
//! one sled tree under a one-byte table prefix; every `save_changes` is one
//! atomic sled batch followed by a flush, so a batch is on disk entirely or
//! not at all when the call returns. Reads are by key.
//!
//! Without a passphrase or key the store is **plain**; with one, values are
//! encrypted and table keys hashed (see `hush-store-cipher`).

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::path::Path;

use hush_crypto_core::StoreError;
use hush_store_cipher::{Decide, Entries, KvCryptoStore, KvEngine, Table, WriteFault, WriteOp, guard_engine};
pub use hush_store_cipher::{SCHEMA_VERSION, StoreOptions, StoreSecret};
use ruma_common::{DeviceId, UserId};

/// The crypto store of one device in a sled database.
pub type SledStore = KvCryptoStore<SledBackend>;

/// Opens the store in the directory `path` (creating it if absent) for
/// `user_id` / `device_id`, with the same checks and errors as the redb store.
pub fn open(
    path: impl AsRef<Path>,
    user_id: &UserId,
    device_id: &DeviceId,
    options: StoreOptions,
) -> Result<SledStore, StoreError> {
    KvCryptoStore::open(SledBackend::open(path.as_ref())?, user_id, device_id, options)
}

/// A sled store shared by several processes through the store lock: see
/// [`open_shared`].
pub type SharedSledStore = hush_store_cipher::SharedStore<SledBackend>;

/// Opens the store in `path` for several processes to share: sled lets one
/// process at a time open a directory, so the store is open only while this
/// process holds the store lock, whose lease lives in `<path>.lock` (see
/// [`hush_store_cipher::SharedStore`]). Errors as [`open`]'s.
pub fn open_shared(
    path: impl AsRef<Path>,
    user_id: &UserId,
    device_id: &DeviceId,
    options: StoreOptions,
) -> Result<SharedSledStore, StoreError> {
    let path = path.as_ref().to_owned();
    let mut lock_path = path.clone().into_os_string();
    lock_path.push(".lock");
    let open_backend: hush_store_cipher::OpenBackend<SledBackend> = Box::new(move || SledBackend::open(&path));
    hush_store_cipher::SharedStore::new(lock_path.into(), user_id, device_id, options, open_backend)
}

/// Opens the database, waiting up to 2 s for its lock: sled releases the
/// lock of a dropped handle only when its background flusher next wakes, so
/// a store reopened right after it was closed would otherwise fail.
fn open_waiting_for_lock(path: &Path) -> Result<sled::Db, sled::Error> {
    let mut attempts = 0;
    loop {
        match sled::open(path) {
            Err(sled::Error::Io(error)) if is_lock_contention(&error) && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Whether opening failed because another handle holds the lock. sled 0.34
/// reports it as an `Other` I/O error whose message names the lock (the
/// `WouldBlock` of the lock call is only in the text).
fn is_lock_contention(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::WouldBlock || error.to_string().starts_with("could not acquire lock")
}

fn open_error(path: &Path, error: sled::Error) -> StoreError {
    match error {
        sled::Error::Corruption { .. } => StoreError::Corrupt(format!("{}: {error}", path.display())),
        other => backend_error(other),
    }
}

/// Removes `snap.*.generating` files (snapshots a crash left unfinished);
/// returns how many it removed.
fn remove_unfinished_snapshots(path: &Path) -> Result<usize, StoreError> {
    let mut removed = 0;
    let entries = std::fs::read_dir(path).map_err(backend_error)?;
    for entry in entries {
        let entry = entry.map_err(backend_error)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(entry.path()).map_err(backend_error)?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn backend_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// A sled database holding one crypto store.
pub struct SledBackend {
    db: sled::Db,
    tree: sled::Tree,
    /// An injected fault (tests only, feature `fault-injection`).
    fault: WriteFault,
    /// Held by every write, so an update's read and its batch are one step.
    updates: std::sync::Mutex<()>,
}

impl std::fmt::Debug for SledBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledBackend").finish_non_exhaustive()
    }
}

impl SledBackend {
    /// Opens or creates the database directory.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        guard_engine("open", || {
            let db = match open_waiting_for_lock(path) {
                Ok(db) => db,
                // sled 0.34 writes each snapshot to `snap.<lsn>.generating`
                // and renames it when complete. A process killed mid-way
                // leaves that file behind, and the next open fails with
                // `Corruption { at: None }` (upstream sled issues #1527,
                // #1533). The file is an unfinished temporary by
                // construction: remove it and open again, once. (Another
                // process holding the store would fail the lock, not this.)
                Err(sled::Error::Corruption { at: None, .. }) if remove_unfinished_snapshots(path)? > 0 => {
                    tracing::warn!(path = %path.display(), "removed an unfinished sled snapshot left by a crash");
                    open_waiting_for_lock(path).map_err(|e| open_error(path, e))?
                }
                Err(error) => return Err(open_error(path, error)),
            };
            let tree = db.open_tree("hush-crypto").map_err(backend_error)?;
            Ok(Self { db, tree, fault: WriteFault::default(), updates: std::sync::Mutex::new(()) })
        })
    }

    /// Makes the next write fail after `ops` of its ops were added to the
    /// sled batch, which is then dropped unapplied. For the conformance
    /// check that a failed batch leaves nothing visible.
    #[cfg(feature = "fault-injection")]
    pub fn fail_next_write_after(&self, ops: usize) {
        self.fault.arm(ops);
    }

    /// Makes the next write stall for good after `ops` of its ops (see
    /// [`WriteFault::arm_stall`]): the crash test kills the process there.
    #[cfg(feature = "fault-injection")]
    pub fn stall_next_write_after(&self, ops: usize) {
        self.fault.arm_stall(ops);
    }

    fn key(table: Table, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(1 + key.len());
        full.push(table.index() as u8);
        full.extend_from_slice(key);
        full
    }
}

impl KvEngine for SledBackend {
    fn engine_get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(Self::key(table, key)).map_err(backend_error)?.map(|v| v.to_vec()))
    }

    fn engine_scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let full_prefix = Self::key(table, prefix);
        let start = match after {
            Some(after) if after > prefix => Self::key(table, after),
            _ => full_prefix.clone(),
        };
        let mut entries = Vec::new();
        for entry in self.tree.range(start..) {
            let (key, value) = entry.map_err(backend_error)?;
            if !key.starts_with(&full_prefix) {
                break;
            }
            let key = &key[1..];
            if after.is_some_and(|after| key <= after) {
                continue;
            }
            entries.push((key.to_vec(), value.to_vec()));
            if entries.len() >= limit {
                break;
            }
        }
        Ok(entries)
    }

    fn engine_count(&self, table: Table) -> Result<usize, StoreError> {
        let mut count = 0;
        for entry in self.tree.scan_prefix([table.index() as u8]).keys() {
            entry.map_err(backend_error)?;
            count += 1;
        }
        Ok(count)
    }

    fn engine_write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        let _serialized = self.updates.lock().map_err(|_| StoreError::Backend("a write panicked".into()))?;
        self.apply(ops)
    }

    fn engine_update(&self, table: Table, key: &[u8], decide: Decide) -> Result<(), StoreError> {
        // sled holds its directory for one process, so serializing this
        // process's writes makes the read and the batch one atomic step.
        let _serialized = self.updates.lock().map_err(|_| StoreError::Backend("a write panicked".into()))?;
        let current = self.tree.get(Self::key(table, key)).map_err(backend_error)?;
        let ops = decide(current.as_deref())?;
        self.apply(ops)
    }
}

impl SledBackend {
    /// Applies `ops` as one sled batch and flushes it.
    fn apply(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        // On a fault the batch is dropped unapplied (sled applies a batch whole).
        self.fault.apply_ops(ops, |op| {
            match op {
                WriteOp::Put(table, key, value) => batch.insert(Self::key(table, &key), value),
                WriteOp::Delete(table, key) => batch.remove(Self::key(table, &key)),
            }
            Ok(())
        })?;
        self.tree.apply_batch(batch).map_err(backend_error)?;
        self.db.flush().map_err(backend_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_waits_for_a_lock_released_soon_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let first = sled::open(&path).unwrap();
        // The lock is held now: the error is recognised as contention.
        match sled::open(&path) {
            Err(sled::Error::Io(error)) => assert!(is_lock_contention(&error), "{error}"),
            other => panic!("expected lock contention, got {:?}", other.map(|_| ())),
        }
        let holder = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(first);
        });
        let second = open_waiting_for_lock(&path);
        holder.join().unwrap();
        assert!(second.is_ok(), "the second open waited for the lock");
    }
}
