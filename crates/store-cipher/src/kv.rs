//! [`KvBackend`]: the small interface a storage engine implements so that
//! [`KvCryptoStore`](crate::KvCryptoStore) can run on it.

use std::fmt;

use hush_crypto_core::StoreError;

/// The tables of a crypto store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Schema version, wrapped store key, owner (keys are not hashed).
    Meta,
    /// The Olm account.
    Account,
    /// Olm sessions by (sender key, session id).
    OlmSessions,
    /// Devices by (user, device).
    Devices,
    /// Tracked users by user.
    TrackedUsers,
    /// Room keys by (room, session).
    InboundGroupSessions,
    /// Our room key per room.
    OutboundGroupSessions,
    /// Withheld notices by (room, session).
    Withheld,
    /// `m.no_olm` notices by sender key.
    NoOlm,
    /// Decrypted Megolm indices by (room, session, index).
    MessageIndices,
    /// The sync token.
    Sync,
    /// Device index by (curve25519 key, user, device).
    DevicesByCurve,
    /// Decrypted Olm message hashes by (sender key, hash).
    OlmHashes,
    /// Named values ([`Changes::custom_values`](hush_crypto_core::Changes)).
    Custom,
    /// Acknowledged shares of our room keys by (room, session, user, device).
    RoomKeyShares,
    /// Cross-signing identities by user.
    Identities,
    /// Our cross-signing private keys (one record).
    PrivateIdentity,
    /// Room keys waiting for the key backup, by (room, session).
    BackupQueue,
    /// Secrets by name.
    Secrets,
}

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Self; 19] = [
        Self::Meta,
        Self::Account,
        Self::OlmSessions,
        Self::Devices,
        Self::TrackedUsers,
        Self::InboundGroupSessions,
        Self::OutboundGroupSessions,
        Self::Withheld,
        Self::NoOlm,
        Self::MessageIndices,
        Self::Sync,
        Self::DevicesByCurve,
        Self::OlmHashes,
        Self::Custom,
        Self::RoomKeyShares,
        Self::Identities,
        Self::PrivateIdentity,
        Self::BackupQueue,
        Self::Secrets,
    ];

    /// The table's name, as the engine stores it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Meta => "meta",
            Self::Account => "account",
            Self::OlmSessions => "olm_sessions",
            Self::Devices => "devices",
            Self::TrackedUsers => "tracked_users",
            Self::InboundGroupSessions => "inbound_group_sessions",
            Self::OutboundGroupSessions => "outbound_group_sessions",
            Self::Withheld => "withheld",
            Self::NoOlm => "no_olm",
            Self::MessageIndices => "message_indices",
            Self::Sync => "sync",
            Self::DevicesByCurve => "devices_by_curve",
            Self::OlmHashes => "olm_hashes",
            Self::Custom => "custom",
            Self::RoomKeyShares => "room_key_shares",
            Self::Identities => "identities",
            Self::PrivateIdentity => "private_identity",
            Self::BackupQueue => "backup_queue",
            Self::Secrets => "secrets",
        }
    }

    /// The table's position in [`Table::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// One change in an atomic batch.
#[derive(Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Insert or replace.
    Put(Table, Vec<u8>, Vec<u8>),
    /// Remove (no error if absent).
    Delete(Table, Vec<u8>),
}

impl fmt::Debug for WriteOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be plaintext secrets in an unencrypted store: show sizes only.
        match self {
            Self::Put(table, key, value) => {
                write!(f, "Put({table:?}, {} key bytes, {} value bytes)", key.len(), value.len())
            }
            Self::Delete(table, key) => write!(f, "Delete({table:?}, {} key bytes)", key.len()),
        }
    }
}

/// Key-value pairs read by a scan, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Given the value under a key, read inside a write, the ops that write
/// applies; an error aborts it with nothing written.
pub type Decide = Box<dyn FnOnce(Option<&[u8]>) -> Result<Vec<WriteOp>, StoreError> + Send>;

/// An ordered key-value engine with atomic, durable batches.
pub trait KvBackend: Send + Sync + fmt::Debug {
    /// The value under `key`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Entries whose key starts with `prefix`, in key order, strictly after
    /// `after` if given, at most `limit` of them.
    fn scan(&self, table: Table, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Entries, StoreError>;

    /// How many entries a table holds.
    fn count(&self, table: Table) -> Result<usize, StoreError>;

    /// Applies every op or none, and makes them durable before returning.
    fn write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError>;

    /// Reads `key`, lets `decide` choose the ops from its value, and applies
    /// them, as one atomic step against every other `update` and `write` of
    /// this store from any process or host sharing it (the store lock's
    /// compare-and-set).
    fn update(&self, table: Table, key: &[u8], decide: Decide) -> Result<(), StoreError>;
}

/// What a storage engine implements: the [`KvBackend`] calls, free to panic
/// where the engine panics (some assert on damaged pages). Every engine is a
/// [`KvBackend`] through a blanket impl that turns such panics into
/// [`StoreError::Corrupt`].
pub trait KvEngine: Send + Sync + fmt::Debug {
    /// See [`KvBackend::get`].
    fn engine_get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// See [`KvBackend::scan`].
    fn engine_scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError>;
    /// See [`KvBackend::count`].
    fn engine_count(&self, table: Table) -> Result<usize, StoreError>;
    /// See [`KvBackend::write`].
    fn engine_write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError>;
    /// See [`KvBackend::update`].
    fn engine_update(&self, table: Table, key: &[u8], decide: Decide) -> Result<(), StoreError>;
}

impl<E: KvEngine> KvBackend for E {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        guard_engine("read", || self.engine_get(table, key))
    }

    fn scan(&self, table: Table, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Entries, StoreError> {
        guard_engine("scan", || self.engine_scan(table, prefix, after, limit))
    }

    fn count(&self, table: Table) -> Result<usize, StoreError> {
        guard_engine("count", || self.engine_count(table))
    }

    fn write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        guard_engine("write", || self.engine_write(ops))
    }

    fn update(&self, table: Table, key: &[u8], decide: Decide) -> Result<(), StoreError> {
        guard_engine("update", || self.engine_update(table, key, decide))
    }
}

/// Runs an engine call, turning a panic inside the engine into
/// [`StoreError::Corrupt`]. Storage engines may assert on damaged pages;
/// hush reports a damaged file as an error instead of taking the caller down.
pub fn guard_engine<T>(what: &str, call: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(result) => result,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("the storage engine failed");
            tracing::error!(what, detail, "storage engine panicked: the store file is damaged");
            Err(StoreError::Corrupt(format!("{what}: {detail}")))
        }
    }
}

/// A write fault armed by a test: the backend's next write fails, or stalls
/// for good, after a given number of its ops, inside the engine's
/// transaction. Backends hold one (unarmed, it costs one atomic swap per
/// write); only their `fault-injection` feature exposes a way to arm it.
#[derive(Debug)]
pub struct WriteFault {
    ops: std::sync::atomic::AtomicUsize,
    stall: std::sync::atomic::AtomicBool,
}

impl Default for WriteFault {
    fn default() -> Self {
        Self { ops: std::sync::atomic::AtomicUsize::new(usize::MAX), stall: std::sync::atomic::AtomicBool::new(false) }
    }
}

impl WriteFault {
    /// Arms the fault: the next write fails after `ops` ops.
    pub fn arm(&self, ops: usize) {
        self.stall.store(false, std::sync::atomic::Ordering::SeqCst);
        self.ops.store(ops.min(usize::MAX - 1), std::sync::atomic::Ordering::SeqCst);
    }

    /// Arms a stall: the next write, after `ops` ops, prints
    /// `stalled inside a write after <n> ops` on stdout and blocks this
    /// thread for good, so that a crash test can SIGKILL the process at
    /// exactly that point.
    pub fn arm_stall(&self, ops: usize) {
        self.stall.store(true, std::sync::atomic::Ordering::SeqCst);
        self.ops.store(ops.min(usize::MAX - 1), std::sync::atomic::Ordering::SeqCst);
    }

    /// Disarms the fault, returning after how many ops the write in
    /// progress must fail, if it was armed.
    pub fn take(&self) -> Option<usize> {
        let ops = self.ops.swap(usize::MAX, std::sync::atomic::Ordering::SeqCst);
        (ops != usize::MAX).then_some(ops)
    }

    /// Applies `ops` in order with `apply`, inside the engine's write, and
    /// fails or stalls where the fault is armed: after that many ops, or
    /// after all of them (before the commit). Unarmed, it only applies them.
    pub fn apply_ops(
        &self,
        ops: Vec<WriteOp>,
        mut apply: impl FnMut(WriteOp) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let count = ops.len();
        let fail_after = self.take();
        for (applied, op) in ops.into_iter().enumerate() {
            if fail_after == Some(applied) {
                return Err(self.trigger(applied));
            }
            apply(op)?;
        }
        match fail_after {
            Some(applied) => Err(self.trigger(applied.min(count))),
            None => Ok(()),
        }
    }

    /// What the write does at the armed point, after `applied` ops: a stall
    /// never returns; a failure is the error the write returns.
    pub fn trigger(&self, applied: usize) -> StoreError {
        if self.stall.load(std::sync::atomic::Ordering::SeqCst) {
            use std::io::Write;
            let mut stdout = std::io::stdout();
            let _ = writeln!(stdout, "stalled inside a write after {applied} ops").and_then(|()| stdout.flush());
            loop {
                std::thread::park();
            }
        }
        StoreError::Backend(format!("injected write fault after {applied} ops"))
    }
}
