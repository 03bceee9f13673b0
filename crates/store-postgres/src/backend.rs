//! [`PgBackend`]: the [`KvEngine`] on PostgreSQL, one store's rows of the
//! shared `hush_kv` table (see [`crate::schema`]).

use std::sync::Arc;

use hush_crypto_core::StoreError;
use hush_store_cipher::{Decide, Entries, KvEngine, Table, WriteFault, WriteOp};

use crate::pool::{Pool, pg_error};

/// The statements of one schema.
#[derive(Debug)]
struct Sql {
    get: String,
    scan: String,
    count: String,
    put: String,
    delete: String,
}

impl Sql {
    fn new(ns: &str) -> Self {
        Self {
            get: format!("SELECT value FROM {ns}.hush_kv WHERE store_id = $1 AND tbl = $2 AND key = $3"),
            scan: format!(
                "SELECT key, value FROM {ns}.hush_kv
                 WHERE store_id = $1 AND tbl = $2 AND key >= $3
                   AND ($4::bytea IS NULL OR key < $4) AND ($5::bytea IS NULL OR key > $5)
                 ORDER BY key LIMIT $6"
            ),
            count: format!("SELECT count(*) FROM {ns}.hush_kv WHERE store_id = $1 AND tbl = $2"),
            put: format!(
                "INSERT INTO {ns}.hush_kv (store_id, tbl, key, value) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (store_id, tbl, key) DO UPDATE SET value = EXCLUDED.value"
            ),
            delete: format!("DELETE FROM {ns}.hush_kv WHERE store_id = $1 AND tbl = $2 AND key = $3"),
        }
    }
}

/// The smallest key greater than every key starting with `prefix`; `None`
/// if there is none (an empty prefix, or one of `0xff` bytes only).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn table_id(table: Table) -> i16 {
    i16::try_from(table.index()).unwrap_or(i16::MAX)
}

/// One device's crypto store in a PostgreSQL database.
pub struct PgBackend {
    pool: Arc<Pool>,
    store_id: i64,
    sql: Arc<Sql>,
    /// An injected fault (tests only, feature `fault-injection`).
    fault: Arc<WriteFault>,
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend").field("store_id", &self.store_id).finish_non_exhaustive()
    }
}

impl PgBackend {
    pub(crate) fn new(pool: Arc<Pool>, ns: &str, store_id: i64) -> Self {
        Self { pool, store_id, sql: Arc::new(Sql::new(ns)), fault: Arc::new(WriteFault::default()) }
    }

    /// Makes the next write fail after `ops` of its ops were applied inside
    /// its transaction, which is then rolled back: a failed write as the
    /// store sees it. For the conformance check that a failed batch leaves
    /// nothing visible.
    #[cfg(feature = "fault-injection")]
    pub fn fail_next_write_after(&self, ops: usize) {
        self.fault.arm(ops);
    }

    /// Makes the next write stall for good after `ops` of its ops, inside
    /// its open transaction (see [`WriteFault::arm_stall`]): the crash test
    /// kills the process there.
    #[cfg(feature = "fault-injection")]
    pub fn stall_next_write_after(&self, ops: usize) {
        self.fault.arm_stall(ops);
    }
}

impl KvEngine for PgBackend {
    fn engine_get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let (sql, store_id, key) = (Arc::clone(&self.sql), self.store_id, key.to_vec());
        self.pool.run(move |connection| {
            let statement = connection.prepare(&sql.get)?;
            let row = connection
                .client()?
                .query_opt(&statement, &[&store_id, &table_id(table), &key])
                .map_err(|e| pg_error(&e))?;
            row.map(|row| row.try_get::<_, Vec<u8>>(0).map_err(|e| pg_error(&e))).transpose()
        })
    }

    fn engine_scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let (sql, store_id) = (Arc::clone(&self.sql), self.store_id);
        let (start, end, after) = (prefix.to_vec(), prefix_end(prefix), after.map(<[u8]>::to_vec));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.pool.run(move |connection| {
            let statement = connection.prepare(&sql.scan)?;
            let rows = connection
                .client()?
                .query(&statement, &[&store_id, &table_id(table), &start, &end, &after, &limit])
                .map_err(|e| pg_error(&e))?;
            rows.iter()
                .map(|row| Ok((row.try_get(0).map_err(|e| pg_error(&e))?, row.try_get(1).map_err(|e| pg_error(&e))?)))
                .collect()
        })
    }

    fn engine_count(&self, table: Table) -> Result<usize, StoreError> {
        let (sql, store_id) = (Arc::clone(&self.sql), self.store_id);
        self.pool.run(move |connection| {
            let statement = connection.prepare(&sql.count)?;
            let row =
                connection.client()?.query_one(&statement, &[&store_id, &table_id(table)]).map_err(|e| pg_error(&e))?;
            let count: i64 = row.try_get(0).map_err(|e| pg_error(&e))?;
            Ok(usize::try_from(count).unwrap_or(usize::MAX))
        })
    }

    fn engine_write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        self.write_with(None, ops)
    }

    fn engine_update(&self, table: Table, key: &[u8], decide: Decide) -> Result<(), StoreError> {
        self.write_with(Some((table, key.to_vec(), decide)), Vec::new())
    }
}

impl PgBackend {
    /// One transaction: the ops `decide` chooses from the value under its
    /// key, then `ops`. A transaction with a `decide` first takes this
    /// store's advisory lock, so updates from every connection, process and
    /// host run one at a time (a read of a missing row locks nothing).
    fn write_with(&self, decide: Option<(Table, Vec<u8>, Decide)>, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        let (sql, store_id, fault) = (Arc::clone(&self.sql), self.store_id, Arc::clone(&self.fault));
        self.pool.run(move |connection| {
            let get = connection.prepare(&sql.get)?;
            let put = connection.prepare(&sql.put)?;
            let delete = connection.prepare(&sql.delete)?;
            // READ COMMITTED whatever the server's default: after waiting for
            // the advisory lock, the lock record must be read as committed
            // by whoever held it (a REPEATABLE READ snapshot would predate it).
            let mut tx = connection
                .client()?
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::ReadCommitted)
                .start()
                .map_err(|e| pg_error(&e))?;
            let mut ops = ops;
            if let Some((table, key, decide)) = decide {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&store_id]).map_err(|e| pg_error(&e))?;
                let row = tx.query_opt(&get, &[&store_id, &table_id(table), &key]).map_err(|e| pg_error(&e))?;
                let current: Option<Vec<u8>> = row.map(|row| row.try_get(0)).transpose().map_err(|e| pg_error(&e))?;
                let mut decided = decide(current.as_deref())?;
                decided.append(&mut ops);
                ops = decided;
            }
            // On a fault, dropping the transaction rolls it back.
            fault.apply_ops(ops, |op| {
                match op {
                    WriteOp::Put(table, key, value) => tx.execute(&put, &[&store_id, &table_id(table), &key, &value]),
                    WriteOp::Delete(table, key) => tx.execute(&delete, &[&store_id, &table_id(table), &key]),
                }
                .map(drop)
                .map_err(|e| pg_error(&e))
            })?;
            tx.commit().map_err(|e| pg_error(&e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
