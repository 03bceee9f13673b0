//! [`RedbBackend`]: the [`KvBackend`] on a redb database, one redb table per
//! store table.

use std::path::Path;

use hush_crypto_core::StoreError;
use hush_store_cipher::{Decide, Entries, KvEngine, Table, WriteFault, WriteOp, guard_engine};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableError};

/// A redb table of byte keys and values.
type BytesTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

fn backend_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// Why an existing file could not be opened: held by another process, or
/// not a (healthy) redb database.
fn open_error(path: &Path, error: redb::DatabaseError) -> StoreError {
    match error {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Backend(format!(
            "{} is already open in another client or process; close it first",
            path.display()
        )),
        other => StoreError::Corrupt(format!("{}: {other}", path.display())),
    }
}

/// A redb database holding one crypto store.
pub struct RedbBackend {
    /// Always `Some` until the backend is dropped (see its `Drop`).
    db: Option<Handle>,
    /// An injected fault (tests only, feature `fault-injection`): the next
    /// write fails after this many ops, inside its transaction.
    fault: WriteFault,
}

/// Read-write, or read-only for checking a store before anything may write.
enum Handle {
    ReadWrite(Database),
    ReadOnly(redb::ReadOnlyDatabase),
}

impl Handle {
    fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        match self {
            Self::ReadWrite(db) => db.begin_read(),
            Self::ReadOnly(db) => db.begin_read(),
        }
        .map_err(backend_error)
    }

    /// Closes the database. A read-write one records its allocator state
    /// on the way out, reading pages a damaged file may have garbled.
    fn close(self) -> Result<(), StoreError> {
        match self {
            Self::ReadWrite(db) => db.close().map_err(backend_error),
            Self::ReadOnly(db) => db.close().map_err(backend_error),
        }
    }
}

/// redb closes a database when it is dropped, and on a damaged file the
/// close can panic (an allocator page or a b-tree page it reads is
/// garbage) after every call before it returned, since those pages were
/// never read until then. The close runs here, guarded like every other
/// engine call: the damage is logged as [`StoreError::Corrupt`], and the
/// caller (dropping a store, perhaps during an error path) goes on.
impl Drop for RedbBackend {
    fn drop(&mut self) {
        if let Some(db) = self.db.take()
            && let Err(error) = guard_engine("close", move || db.close())
        {
            tracing::error!(%error, "closing the redb store failed");
        }
    }
}

impl std::fmt::Debug for RedbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbBackend").finish_non_exhaustive()
    }
}

impl RedbBackend {
    /// Opens or creates the database file. A file that is not a redb
    /// database, or is damaged, is an error, and is left as it is.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        guard_engine("open", || {
            let db = if path.exists() {
                Database::open(path).map_err(|e| open_error(path, e))?
            } else {
                Database::create(path).map_err(backend_error)?
            };
            Ok(Self { db: Some(Handle::ReadWrite(db)), fault: WriteFault::default() })
        })
    }

    /// Opens an existing database file without the right to write: used to
    /// check a store (passphrase, owner, schema) so that a refused open
    /// leaves the file byte-identical. `None` if the file needs a repair
    /// first (a process was killed while writing), which only a read-write
    /// open can do.
    pub fn open_read_only(path: &Path) -> Result<Option<Self>, StoreError> {
        guard_engine("open", || match redb::ReadOnlyDatabase::open(path) {
            Ok(db) => Ok(Some(Self { db: Some(Handle::ReadOnly(db)), fault: WriteFault::default() })),
            Err(redb::DatabaseError::RepairAborted) => Ok(None),
            Err(other) => Err(open_error(path, other)),
        })
    }

    /// Makes the next write fail after `ops` of its ops were applied inside
    /// the redb transaction, which is then dropped uncommitted: what a
    /// failed disk write looks like to the store. For the conformance
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
}

impl RedbBackend {
    /// The open database.
    fn handle(&self) -> Result<&Handle, StoreError> {
        self.db.as_ref().ok_or_else(|| StoreError::Backend("the redb store is closed".into()))
    }
}

impl KvEngine for RedbBackend {
    fn engine_get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.handle()?.begin_read()?;
        let handle = match txn.open_table(definition(table)) {
            Ok(handle) => handle,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(backend_error(error)),
        };
        Ok(handle.get(key).map_err(backend_error)?.map(|value| value.value().to_vec()))
    }

    fn engine_scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let txn = self.handle()?.begin_read()?;
        let handle = match txn.open_table(definition(table)) {
            Ok(handle) => handle,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(backend_error(error)),
        };
        let start = match after {
            Some(after) if after > prefix => after,
            _ => prefix,
        };
        let mut entries = Vec::new();
        for entry in handle.range::<&[u8]>(start..).map_err(backend_error)? {
            let (key, value) = entry.map_err(backend_error)?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            if after.is_some_and(|after| key <= after) {
                continue;
            }
            entries.push((key.to_vec(), value.value().to_vec()));
            if entries.len() >= limit {
                break;
            }
        }
        Ok(entries)
    }

    fn engine_count(&self, table: Table) -> Result<usize, StoreError> {
        let txn = self.handle()?.begin_read()?;
        match txn.open_table(definition(table)) {
            Ok(handle) => Ok(usize::try_from(handle.len().map_err(backend_error)?).unwrap_or(usize::MAX)),
            Err(TableError::TableDoesNotExist(_)) => Ok(0),
            Err(error) => Err(backend_error(error)),
        }
    }

    fn engine_write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        self.write_with(None, ops)
    }

    fn engine_update(&self, table: Table, key: &[u8], decide: Decide) -> Result<(), StoreError> {
        self.write_with(Some((table, key, decide)), Vec::new())
    }
}

impl RedbBackend {
    /// One write transaction: the ops `decide` chooses from the value under
    /// its key (read inside the transaction, which redb runs one at a time)
    /// followed by `ops`, committed durably.
    fn write_with(&self, decide: Option<(Table, &[u8], Decide)>, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        let Handle::ReadWrite(db) = self.handle()? else {
            return Err(StoreError::Backend("the store was opened read-only".into()));
        };
        let txn = db.begin_write().map_err(backend_error)?;
        let mut ops = ops;
        if let Some((table, key, decide)) = decide {
            let current = {
                let handle = txn.open_table(definition(table)).map_err(backend_error)?;
                handle.get(key).map_err(backend_error)?.map(|value| value.value().to_vec())
            };
            let mut decided = decide(current.as_deref())?;
            decided.append(&mut ops);
            ops = decided;
        }
        {
            // Consecutive ops on one table share its handle. On a fault the
            // transaction is dropped uncommitted.
            let mut open: Option<(Table, BytesTable<'_>)> = None;
            self.fault.apply_ops(ops, |op| {
                let (WriteOp::Put(table, ..) | WriteOp::Delete(table, _)) = &op;
                if open.as_ref().is_none_or(|(current, _)| current != table) {
                    open = Some((*table, txn.open_table(definition(*table)).map_err(backend_error)?));
                }
                let Some((_, handle)) = open.as_mut() else { return Ok(()) };
                match op {
                    WriteOp::Put(_, key, value) => handle.insert(key.as_slice(), value.as_slice()).map(drop),
                    WriteOp::Delete(_, key) => handle.remove(key.as_slice()).map(drop),
                }
                .map_err(backend_error)
            })?;
        }
        // Durable on return (redb's default immediate durability).
        txn.commit().map_err(backend_error)
    }
}
