//! The tables hush keeps in a PostgreSQL schema (namespace), their layout
//! version and its migrations, and the rows that name each store's owner.
//!
//! Layout 1:
//! - `hush_layout`: one row, the layout version.
//! - `hush_stores`: one row per store, by owner (user id, device id).
//! - `hush_kv`: every store's records, by (store, table, key); the values
//!   (and, in an encrypted store, the keys) are what `hush-store-cipher`
//!   made of them.
//!
//! The store's own schema version (its records' format) lives in its
//! `meta` table, as in every backend; this is only the SQL around it.

use hush_crypto_core::StoreError;
use postgres::Transaction;

use crate::pool::{Connection, pg_error};

/// The layout this code writes.
pub const LAYOUT_VERSION: i32 = 1;

/// Advisory lock key taken while the layout is created or migrated, so two
/// processes opening a new database at once do not both create it.
const LAYOUT_LOCK: i64 = 0x6875_7368_5f6c_6179; // "hush_lay"

/// SQL bringing the layout from version `n - 1` to `n`, by `n`; `{ns}` is
/// the schema's name.
const MIGRATIONS: [(i32, &str); 1] = [(
    1,
    "CREATE TABLE {ns}.hush_stores (
         id bigserial PRIMARY KEY,
         user_id text NOT NULL,
         device_id text NOT NULL,
         UNIQUE (user_id, device_id)
     );
     CREATE TABLE {ns}.hush_kv (
         store_id bigint NOT NULL REFERENCES {ns}.hush_stores (id) ON DELETE CASCADE,
         tbl smallint NOT NULL,
         key bytea NOT NULL,
         value bytea NOT NULL,
         PRIMARY KEY (store_id, tbl, key)
     );",
)];

/// A checked schema name: lower-case letters, digits and `_`, not starting
/// with a digit, at most 63 bytes, so it can be written into SQL as it is.
pub(crate) fn checked_namespace(name: &str) -> Result<&str, StoreError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
        && !name.starts_with("pg_");
    if valid {
        Ok(name)
    } else {
        Err(StoreError::Backend(format!(
            "{name:?} is not a usable PostgreSQL schema name (lower-case letters, digits and _, not starting with a digit or pg_)"
        )))
    }
}

/// Creates the schema and its tables if absent and migrates an older
/// layout; a newer layout is [`StoreError::UnsupportedSchema`].
pub(crate) fn prepare(connection: &mut Connection, ns: &str) -> Result<(), StoreError> {
    let client = connection.client()?;
    let mut tx = client.transaction().map_err(|e| pg_error(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LAYOUT_LOCK]).map_err(|e| pg_error(&e))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {ns};
         CREATE TABLE IF NOT EXISTS {ns}.hush_layout (
             one boolean PRIMARY KEY DEFAULT true CHECK (one),
             version integer NOT NULL
         );"
    ))
    .map_err(|e| pg_error(&e))?;
    let found = layout_version(&mut tx, ns)?;
    if found > LAYOUT_VERSION {
        return Err(StoreError::UnsupportedSchema {
            found: u32::try_from(found).unwrap_or(u32::MAX),
            supported: LAYOUT_VERSION.unsigned_abs(),
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > found) {
        tx.batch_execute(&sql.replace("{ns}", ns)).map_err(|e| pg_error(&e))?;
        tx.execute(
            &format!(
                "INSERT INTO {ns}.hush_layout (one, version) VALUES (true, $1)
                 ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version"
            ),
            &[version],
        )
        .map_err(|e| pg_error(&e))?;
    }
    tx.commit().map_err(|e| pg_error(&e))
}

fn layout_version(tx: &mut Transaction<'_>, ns: &str) -> Result<i32, StoreError> {
    let row = tx.query_opt(&format!("SELECT version FROM {ns}.hush_layout"), &[]).map_err(|e| pg_error(&e))?;
    match row {
        None => Ok(0),
        Some(row) => row.try_get::<_, i32>(0).map_err(|e| pg_error(&e)),
    }
}

/// The id of the store of `user_id` / `device_id`, its row made if absent.
pub(crate) fn store_id(
    connection: &mut Connection,
    ns: &str,
    user_id: &str,
    device_id: &str,
) -> Result<i64, StoreError> {
    let client = connection.client()?;
    client
        .execute(
            &format!(
                "INSERT INTO {ns}.hush_stores (user_id, device_id) VALUES ($1, $2)
                 ON CONFLICT (user_id, device_id) DO NOTHING"
            ),
            &[&user_id, &device_id],
        )
        .map_err(|e| pg_error(&e))?;
    let row = client
        .query_one(
            &format!("SELECT id FROM {ns}.hush_stores WHERE user_id = $1 AND device_id = $2"),
            &[&user_id, &device_id],
        )
        .map_err(|e| pg_error(&e))?;
    row.try_get(0).map_err(|e| pg_error(&e))
}

/// Deletes the store of `user_id` / `device_id` and every record in it;
/// whether there was one.
pub(crate) fn delete_store(
    connection: &mut Connection,
    ns: &str,
    user_id: &str,
    device_id: &str,
) -> Result<bool, StoreError> {
    let client = connection.client()?;
    let deleted = client
        .execute(
            &format!("DELETE FROM {ns}.hush_stores WHERE user_id = $1 AND device_id = $2"),
            &[&user_id, &device_id],
        )
        .map_err(|e| pg_error(&e))?;
    Ok(deleted > 0)
}
