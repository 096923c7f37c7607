//! The Database and Storage families on a real PostgreSQL server (cargo feature
//! `postgres`).
//!
//! [`PgDatabase`] is one pool per process (by default at least 5 and at most 20
//! connections, a 60 s command timeout): a thread of its own runs the core's
//! [`PgService`](effectful::postgres::PgService) (pool, pipelined connections, the
//! Database adapter) over tokio sockets (TCP, or a Unix socket when the host is a
//! directory), and every shard's [`PgInterpreter`] hands it requests. On its first
//! connection it applies the embedded migrations (`users`, `deleted_users`,
//! `chat_messages`, recorded in `effectful_migrations`) before any request runs.
//! [`PgDatabase::register_storage`] serves Storage from the same pool (objects in
//! `effectful_objects`, see `effectful::postgres::storage`).
//!
//! - **Cancellation contract**: a request still waiting for a connection when its
//!   program cancels it is dropped and never sent; one already sent runs to its end
//!   and its answer is dropped.
//! - **Command timeout**: a query that has been the one executing on its connection
//!   for the command timeout gets a real cancel request (on a new socket, with the
//!   connection's backend key), so the server stops it; a query still queued behind
//!   it in the pipeline is never the one cancelled.
//! - **Connection loss**: work in flight fails with retryable `ConnectionLost` errors
//!   and the pool opens new connections; while none can be opened, waiting work fails
//!   at once with a retryable error that says why.
//! - **Transactions**: `Database.Begin` pins a connection to the program until its
//!   `Commit` or `Rollback`; a program that ends first (returns, fails, is aborted,
//!   passes its deadline) has the transaction rolled back, and the connection goes
//!   back to the pool only once the server says it is out of any transaction.
//! - **Secrets**: the password is in no `Debug` output, error or log line.
//!
//! ```no_run
//! use effectful_tokio::Runtime;
//! use effectful_tokio::postgres::PgDatabase;
//!
//! let db = PgDatabase::connect("postgresql://app:secret@localhost:5432/app").expect("a valid URL");
//! let runtime = db.register(Runtime::builder()).build().expect("a runtime");
//! # drop(runtime);
//! ```

mod connect;
mod driver;
mod url;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use effectful::effect::{DatabaseRequest, Request};
use effectful::postgres::database::{self, Migration};
use effectful::postgres::{PoolConfig, PoolStatus, ServiceConfig, Work};
use effectful::{EffectError, EffectId, ProgramId, Std};
use tokio::sync::{mpsc, oneshot};

pub use connect::{ConnectError, PgConnector, PgStream};
pub use url::{Host, PgUrl, SslMode, UrlError};

use crate::interpreter::{Interpreter, ShardCx, SplitStd, misrouted};
use crate::runtime::RuntimeBuilder;
use driver::Command;

/// Why a [`PgDatabase`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgStartError {
    /// The URL is not valid (the message never quotes it).
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The PostgreSQL thread could not be started.
    #[error("the PostgreSQL client thread could not start: {0}")]
    Thread(String),
}

/// Settings of a [`PgDatabase`]: where to connect, the pool, the migrations.
#[derive(Clone, Debug)]
pub struct PgDatabaseConfig {
    url: PgUrl,
    pool: PoolConfig,
    migrations: &'static [Migration],
}

impl PgDatabaseConfig {
    /// Settings from a `postgres://` or `postgresql://` URL, with the default pool
    /// (min 5, max 20, command timeout 60 s) and the Database family's migrations.
    pub fn from_url(url: &str) -> Result<PgDatabaseConfig, UrlError> {
        let url = PgUrl::parse(url)?;
        // Refuses an unreadable `sslrootcert` now rather than on every connect.
        PgConnector::new(&url)?;
        Ok(PgDatabaseConfig {
            url,
            pool: PoolConfig::default(),
            migrations: database::MIGRATIONS,
        })
    }

    /// Sets the pool's settings.
    pub fn pool(mut self, pool: PoolConfig) -> PgDatabaseConfig {
        self.pool = pool;
        self
    }

    /// Sets the pool's size.
    pub fn pool_size(mut self, min: usize, max: usize) -> PgDatabaseConfig {
        self.pool = self.pool.size(min, max);
        self
    }

    /// Sets the command timeout: a query executing this long is cancelled on the
    /// server.
    pub fn command_timeout(mut self, timeout: std::time::Duration) -> PgDatabaseConfig {
        self.pool.command_timeout = timeout;
        self
    }

    /// Sets the migrations run before any request (`&[]`: none).
    pub fn migrations(mut self, migrations: &'static [Migration]) -> PgDatabaseConfig {
        self.migrations = migrations;
        self
    }

    /// The parsed URL (its `Debug` hides the password).
    pub fn url(&self) -> &PgUrl {
        &self.url
    }
}

/// One PostgreSQL pool for the whole process, shared by every shard (cheap to clone).
pub struct PgDatabase<F: SplitStd = Std>
where
    F::Response: Send,
{
    inner: Arc<Inner<F>>,
}

struct Inner<F: SplitStd> {
    tx: mpsc::UnboundedSender<Command<F>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl<F: SplitStd> Drop for Inner<F> {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
    }
}

impl<F: SplitStd> Clone for PgDatabase<F>
where
    F::Response: Send,
{
    fn clone(&self) -> Self {
        PgDatabase {
            inner: self.inner.clone(),
        }
    }
}

impl<F: SplitStd> std::fmt::Debug for PgDatabase<F>
where
    F::Response: Send,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgDatabase")
    }
}

impl PgDatabase<Std> {
    /// A pool for `url` with the default settings; it starts connecting at once.
    pub fn connect(url: &str) -> Result<PgDatabase<Std>, PgStartError> {
        PgDatabase::start(PgDatabaseConfig::from_url(url)?)
    }
}

impl<F: SplitStd> PgDatabase<F>
where
    F::Response: Send,
{
    /// Starts the process's PostgreSQL thread with `config`; it starts opening the
    /// pool's `min_size` connections at once.
    pub fn start(config: PgDatabaseConfig) -> Result<PgDatabase<F>, PgStartError> {
        let connection = config.url.config()?;
        let connector = PgConnector::new(&config.url)?;
        let service = ServiceConfig::new(connection)
            .pool(config.pool)
            .migrations(config.migrations);
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("effectful-postgres".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!("the PostgreSQL client's runtime could not start: {e}");
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, driver::run::<F>(service, connector, rx));
            })
            .map_err(|e| PgStartError::Thread(e.to_string()))?;
        Ok(PgDatabase {
            inner: Arc::new(Inner {
                tx,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Registers this pool's interpreter for the Database family on `builder`.
    pub fn register(&self, builder: RuntimeBuilder<F>) -> RuntimeBuilder<F> {
        let db = self.clone();
        builder.interpreter("Database", move |_| db.interpreter())
    }

    /// Registers this pool's interpreter for the Storage family on `builder` too:
    /// objects in `effectful_objects` (migration 3), each write's `last_modified`
    /// from the OS wall clock when the write is performed.
    pub fn register_storage(&self, builder: RuntimeBuilder<F>) -> RuntimeBuilder<F> {
        let db = self.clone();
        builder.interpreter(STORAGE_FAMILY, move |_| db.interpreter())
    }

    /// One shard's interpreter (they all share this pool).
    pub fn interpreter(&self) -> PgInterpreter<F> {
        PgInterpreter {
            db: self.clone(),
            begins: HashMap::new(),
        }
    }

    /// Runs `SELECT 1` on a pool connection.
    pub async fn ping(&self) -> Result<(), EffectError> {
        let (tx, rx) = oneshot::channel();
        let stopped =
            || EffectError::connection_lost("Database.Ping", "the PostgreSQL client has stopped");
        self.inner
            .tx
            .send(Command::Ping(tx))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// The pool's figures, or `None` if the client has stopped.
    pub async fn status(&self) -> Option<PoolStatus> {
        let (tx, rx) = oneshot::channel();
        self.inner.tx.send(Command::Status(tx)).ok()?;
        rx.await.ok()
    }

    /// Closes every connection and stops the thread once they are closed; waits at
    /// most `grace` for it. Work still waiting fails with a retryable error.
    pub fn shutdown(&self, grace: std::time::Duration) {
        let _ = self.inner.tx.send(Command::Shutdown);
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = thread {
            let deadline = std::time::Instant::now() + grace;
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// Serves the Database and Storage families on one shard from a [`PgDatabase`].
///
/// It remembers each program's `Database.Begin` effects and, when the program ends,
/// cancels them once more: the pool then rolls back any transaction one of them
/// opened that is still open, and the connection goes back clean.
pub struct PgInterpreter<F: SplitStd = Std>
where
    F::Response: Send,
{
    db: PgDatabase<F>,
    /// Each running program's `Begin` effects (one entry per `Begin` until the
    /// program ends).
    begins: HashMap<ProgramId, Vec<EffectId>>,
}

impl<F: SplitStd> Interpreter<F> for PgInterpreter<F>
where
    F::Response: Send,
{
    fn perform(&mut self, cx: &mut ShardCx<'_, F>, id: EffectId, request: F::Request) {
        let name = F::request_name(&request);
        let work = match F::split_request(request) {
            Ok(Request::Database(r)) => {
                if matches!(r, DatabaseRequest::Begin(_)) {
                    self.begins.entry(id.program()).or_default().push(id);
                }
                Work::database(&r)
            }
            // The wall clock of the write's `last_modified`, read when it is performed.
            Ok(Request::Storage(r)) => match Work::storage(&r, crate::entropy::wall_clock()) {
                Ok(work) => work,
                Err(refused) => return cx.answer(id, Err(refused)),
            },
            Ok(_) => {
                cx.answer(
                    id,
                    Err(EffectError::new(
                        name,
                        effectful::ErrorKind::Protocol,
                        "the PostgreSQL interpreter serves the Database and Storage families only",
                    )
                    .with_retryable(false)),
                );
                return;
            }
            Err(own) => {
                cx.answer(id, Err(misrouted::<F>("Database", &own)));
                return;
            }
        };
        let sent = self.db.inner.tx.send(Command::Perform {
            shard: cx.shard(),
            id,
            work,
            replier: cx.replier(),
        });
        if sent.is_err() {
            cx.answer(
                id,
                Err(EffectError::connection_lost(
                    name,
                    "the PostgreSQL client has stopped",
                )),
            );
        }
    }

    fn cancel(&mut self, cx: &mut ShardCx<'_, F>, id: EffectId) {
        let _ = self.db.inner.tx.send(Command::Cancel {
            shard: cx.shard(),
            id,
        });
    }

    fn program_finished(&mut self, cx: &mut ShardCx<'_, F>, program: ProgramId) {
        // The pool keeps a transaction under the key of the Begin that opened it:
        // cancelling that key rolls back whatever is still open.
        for id in self.begins.remove(&program).unwrap_or_default() {
            self.cancel(cx, id);
        }
    }
}

#[cfg(feature = "server")]
mod server_glue {
    use super::*;
    use crate::server::{CheckFuture, HealthCheck, Settings};

    /// `/health`'s `database` check: `SELECT 1` through the pool.
    #[derive(Debug)]
    pub struct PgHealthCheck<F: SplitStd = Std>(pub PgDatabase<F>)
    where
        F::Response: Send;

    impl<F: SplitStd> HealthCheck for PgHealthCheck<F>
    where
        F::Response: Send,
        F: Send + Sync,
    {
        fn name(&self) -> &str {
            "database"
        }

        fn check(&self) -> CheckFuture<'_> {
            Box::pin(async move { self.0.ping().await.map_err(|e| e.message) })
        }
    }

    impl PgDatabaseConfig {
        /// Settings from the server's: `DATABASE_URL` and the pool sizes
        /// (`DATABASE_POOL_MIN_SIZE`, `DATABASE_POOL_MAX_SIZE`). `None` when no
        /// `DATABASE_URL` is set.
        pub fn from_settings(settings: &Settings) -> Result<Option<PgDatabaseConfig>, UrlError> {
            let Some(url) = &settings.database_url else {
                return Ok(None);
            };
            let min = usize::try_from(settings.database_pool_min_size).unwrap_or(usize::MAX);
            let max = usize::try_from(settings.database_pool_max_size).unwrap_or(usize::MAX);
            Ok(Some(
                PgDatabaseConfig::from_url(url.expose())?.pool_size(min, max),
            ))
        }
    }

    impl<F: SplitStd> PgDatabase<F>
    where
        F::Response: Send,
        F: Send + Sync,
    {
        /// The `/health` check of this pool.
        pub fn health_check(&self) -> PgHealthCheck<F> {
            PgHealthCheck(self.clone())
        }
    }
}

#[cfg(feature = "server")]
pub use server_glue::PgHealthCheck;

/// The family the interpreter registers for.
pub const FAMILY: &str = "Database";

/// The family [`PgDatabase::register_storage`] registers the interpreter for too.
pub const STORAGE_FAMILY: &str = "Storage";

#[cfg(test)]
mod tests {
    #[test]
    fn one_pool_can_be_shared_by_every_shard() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::PgDatabase>();
    }
}
