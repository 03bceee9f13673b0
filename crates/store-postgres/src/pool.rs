//! [`Pool`]: a few worker threads, each owning one PostgreSQL connection,
//! that run the store's calls.
//!
//! The store's key-value layer ([`KvEngine`](hush_store_cipher::KvEngine))
//! is synchronous, and is called from async code. The synchronous
//! `postgres` client must not run on an async runtime's thread (it drives
//! its own), so every call is handed to a worker as a job and the caller
//! waits for the answer: a loopback round trip, where redb and sled wait for
//! the disk. A connection that broke is made again for the next job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use hush_crypto_core::StoreError;
use postgres::{Client, NoTls, Statement};

/// How long connecting may take before the job fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Set on every connection: a transaction left idle for a minute is ended
/// by the server, and a statement waits at most 30 s for a lock.
const SESSION_SETTINGS: &str = "SET idle_in_transaction_session_timeout = '60s'; SET lock_timeout = '30s'";

/// A PostgreSQL error as a store error, with the server's message when
/// there is one (the driver's own text is only "db error").
pub(crate) fn pg_error(error: &postgres::Error) -> StoreError {
    match error.as_db_error() {
        Some(db) => StoreError::Backend(format!("PostgreSQL: {} ({})", db.message(), db.code().code())),
        None => StoreError::Backend(format!("PostgreSQL: {error}")),
    }
}

/// One worker's connection, made on first use and again after it broke,
/// with the statements it prepared.
pub(crate) struct Connection {
    config: postgres::Config,
    client: Option<Client>,
    statements: HashMap<String, Statement>,
}

impl Connection {
    /// The connected client.
    pub(crate) fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.statements.clear();
            self.client = None;
            let mut client = self.config.connect(NoTls).map_err(|e| pg_error(&e))?;
            // A host that stops mid-transaction must not hold a store's
            // advisory lock (and so every other host) for long: the server
            // ends such a session, and a wait for a lock gives up.
            client.batch_execute(SESSION_SETTINGS).map_err(|e| pg_error(&e))?;
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| StoreError::Backend("PostgreSQL: no connection".into()))
    }

    /// `sql`, prepared once per connection.
    pub(crate) fn prepare(&mut self, sql: &str) -> Result<Statement, StoreError> {
        self.client()?;
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client()?.prepare(sql).map_err(|e| pg_error(&e))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Worker threads with a connection each, sharing one queue of jobs.
pub(crate) struct Pool {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("workers", &self.workers.len()).finish()
    }
}

impl Pool {
    /// Starts `size` workers (at least one) connecting with `config`.
    /// Nothing connects until the first job.
    pub(crate) fn new(mut config: postgres::Config, size: usize) -> Result<Self, StoreError> {
        config.connect_timeout(CONNECT_TIMEOUT);
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut workers = Vec::new();
        for n in 0..size.max(1) {
            let receiver = Arc::clone(&receiver);
            let config = config.clone();
            let worker = std::thread::Builder::new()
                .name(format!("hush-postgres-{n}"))
                .spawn(move || work(&receiver, Connection { config, client: None, statements: HashMap::new() }))
                .map_err(|e| StoreError::Backend(format!("could not start a PostgreSQL worker: {e}")))?;
            workers.push(worker);
        }
        Ok(Self { sender: Mutex::new(Some(sender)), workers })
    }

    /// Runs `job` on a worker's connection and waits for its result.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |connection| {
            let _ = answer.send(job(connection));
        });
        {
            let sender =
                self.sender.lock().map_err(|_| StoreError::Backend("the PostgreSQL pool is poisoned".into()))?;
            let sender = sender.as_ref().ok_or_else(|| StoreError::Backend("the PostgreSQL pool is closed".into()))?;
            sender.send(job).map_err(|_| StoreError::Backend("the PostgreSQL workers stopped".into()))?;
        }
        answered.recv().map_err(|_| StoreError::Backend("a PostgreSQL worker stopped during a call".into()))?
    }
}

/// A worker: jobs until the pool is dropped. A job that panics fails its
/// caller (its answer is never sent) and the worker goes on with a new
/// connection.
fn work(receiver: &Mutex<mpsc::Receiver<Job>>, mut connection: Connection) {
    loop {
        let job = match receiver.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut connection))).is_err() {
            connection.client = None;
            connection.statements.clear();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}
