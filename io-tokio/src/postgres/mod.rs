//! The Database and Storage families on a real PostgreSQL server (cargo feature
//! `postgres`).
//!
//! [`PgDatabase`] is one pool per process (by default at least 5 and at most 20
//! connections, a 60 s command timeout), split among the shards: each shard runs the
//! core's [`PgService`](effectful::postgres::PgService) (its share of the pool,
//! pipelined connections, the Database adapter) over tokio sockets (TCP, or a Unix
//! socket when the host is a directory) as tasks on its own thread, and its
//! [`PgInterpreter`] submits to it directly: no effect and no answer crosses a
//! thread. On its first connection each client applies the embedded migrations
//! (`users`, `deleted_users`, `chat_messages`, recorded in `effectful_migrations`,
//! once for the process under an advisory lock) before any request runs.
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

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex, MutexGuard};

use effectful::effect::{DatabaseRequest, Request};
use effectful::postgres::database::{self, Migration};
use effectful::postgres::{PoolConfig, PoolStatus, ServiceConfig, Work};
use effectful::{EffectError, EffectId, ProgramId, Std};
use tokio::sync::{mpsc, oneshot};

pub use connect::{ConnectError, PgConnector, PgStream};
pub use url::{Host, PgUrl, SslMode, UrlError};

use crate::clock::Clock;
use crate::interpreter::{Interpreter, ShardContext, ShardCx, SplitStd, misrouted};
use crate::runtime::RuntimeBuilder;
use driver::{Control, PgClient, stopped};

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

    /// Sets the pool's size (for the whole process: see [`PgDatabase`] for how the
    /// shards split it).
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

/// One PostgreSQL pool for the whole process, split among the shards (cheap to
/// clone).
///
/// Each shard runs its own client ([`PgService`](effectful::postgres::PgService) and
/// its sockets) as tasks on the shard's thread, so a program's effect and its
/// connection's IO never cross a thread. The pool's sizes are for the whole process:
/// shard `i` of `n` gets `max / n` connections at most (the first `max % n` shards
/// one more) and `min / n` at least, likewise. A shard needs at least one, so with
/// more shards than `max` each shard still holds up to one: the process then holds
/// up to one per shard. Room waits (`WaitRoomMessages`) hold one connection of their
/// shard alone while any is pending, so a shard serving them needs two. One
/// `PgDatabase` serves one runtime at a time.
///
/// Before any shard runs (a `ping` from `main` or an HTTP handler, which also runs
/// the migrations), a small thread of its own serves the handle with at most one
/// connection; it closes once a shard starts.
pub struct PgDatabase<F: SplitStd = Std>
where
    F::Response: Send,
{
    inner: Arc<Inner>,
    _family: PhantomData<fn() -> F>,
}

/// What every handle and every shard's client share.
struct Inner {
    /// The process's service settings (each shard's pool gets its share).
    config: ServiceConfig,
    connector: PgConnector,
    clients: Mutex<Clients>,
}

/// The clients running now, by where they run.
#[derive(Default)]
struct Clients {
    next_id: u64,
    shards: Vec<ShardEntry>,
    /// The fallback's thread for handle-only use while no shard runs.
    fallback: Option<(mpsc::UnboundedSender<Control>, std::thread::JoinHandle<()>)>,
    /// Fallback threads closing since a shard started.
    retired: Vec<std::thread::JoinHandle<()>>,
    /// The next shard a ping goes to.
    next_ping: usize,
    shut_down: bool,
}

struct ShardEntry {
    id: u64,
    control: mpsc::UnboundedSender<Control>,
    max_size: usize,
}

impl Inner {
    fn clients(&self) -> MutexGuard<'_, Clients> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `request` to a client: a shard's (in turn), or the fallback's, started
    /// if need be. Gives it back if the client has stopped.
    fn send(&self, mut request: Control) -> Result<(), Control> {
        let mut clients = self.clients();
        if clients.shut_down {
            return Err(request);
        }
        while !clients.shards.is_empty() {
            let i = clients.next_ping % clients.shards.len();
            clients.next_ping = clients.next_ping.wrapping_add(1);
            match clients.shards[i].control.send(request) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    request = e.0;
                    clients.shards.remove(i);
                }
            }
        }
        if clients.fallback.is_none() {
            match self.start_fallback() {
                Ok(fallback) => clients.fallback = Some(fallback),
                Err(e) => {
                    tracing::error!("the PostgreSQL client's fallback thread could not start: {e}");
                    return Err(request);
                }
            }
        }
        match &clients.fallback {
            Some((control, _)) => control.send(request).map_err(|e| e.0),
            None => Err(request),
        }
    }

    /// The thread that serves the handle while no shard runs: one connection at most.
    fn start_fallback(
        &self,
    ) -> std::io::Result<(mpsc::UnboundedSender<Control>, std::thread::JoinHandle<()>)> {
        let mut config = self.config.clone();
        config.pool = config.pool.size(0, 1);
        let connector = self.connector.clone();
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
                local.block_on(&runtime, async move {
                    let client =
                        PgClient::<Std>::start(config, connector, Clock::start(), None, rx);
                    client.stopped().await;
                });
            })?;
        Ok((tx, thread))
    }

    /// A shard's client started: the fallback, if any, closes once its pings are
    /// answered.
    fn register(&self, control: mpsc::UnboundedSender<Control>, max_size: usize) -> (u64, bool) {
        let mut clients = self.clients();
        clients.next_id += 1;
        let id = clients.next_id;
        clients.shards.push(ShardEntry {
            id,
            control,
            max_size,
        });
        if let Some((control, thread)) = clients.fallback.take() {
            let _ = control.send(Control::Retire);
            clients.retired.push(thread);
        }
        (id, clients.shut_down)
    }

    fn deregister(&self, id: u64) {
        self.clients().shards.retain(|s| s.id != id);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let clients = self.clients.get_mut().unwrap_or_else(|p| p.into_inner());
        for shard in &clients.shards {
            let _ = shard.control.send(Control::Shutdown(None));
        }
        if let Some((control, _)) = &clients.fallback {
            let _ = control.send(Control::Shutdown(None));
        }
    }
}

impl<F: SplitStd> Clone for PgDatabase<F>
where
    F::Response: Send,
{
    fn clone(&self) -> Self {
        PgDatabase {
            inner: self.inner.clone(),
            _family: PhantomData,
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
    /// A pool for `url` with the default settings.
    pub fn connect(url: &str) -> Result<PgDatabase<Std>, PgStartError> {
        PgDatabase::start(PgDatabaseConfig::from_url(url)?)
    }
}

/// `total` split over `parts`: part `i`'s share (the first `total % parts` get one
/// more).
fn share(total: usize, parts: usize, i: usize) -> usize {
    let parts = parts.max(1);
    total / parts + usize::from(i < total % parts)
}

impl<F: SplitStd> PgDatabase<F>
where
    F::Response: Send,
{
    /// A pool with `config`. Shards open their connections as they start; the
    /// handle's own work (`ping`, `status`) before that runs on a small thread.
    pub fn start(config: PgDatabaseConfig) -> Result<PgDatabase<F>, PgStartError> {
        let connection = config.url.config()?;
        let connector = PgConnector::new(&config.url)?;
        let service = ServiceConfig::new(connection)
            .pool(config.pool)
            .migrations(config.migrations);
        Ok(PgDatabase {
            inner: Arc::new(Inner {
                config: service,
                connector,
                clients: Mutex::new(Clients::default()),
            }),
            _family: PhantomData,
        })
    }

    /// Registers this pool's interpreter for the Database family on `builder`.
    pub fn register(&self, builder: RuntimeBuilder<F>) -> RuntimeBuilder<F> {
        let db = self.clone();
        builder.interpreter("Database", move |shard| db.interpreter(shard))
    }

    /// Registers this pool's interpreter for the Storage family on `builder` too:
    /// objects in `effectful_objects` (migration 3), each write's `last_modified`
    /// from the OS wall clock when the write is performed.
    pub fn register_storage(&self, builder: RuntimeBuilder<F>) -> RuntimeBuilder<F> {
        let db = self.clone();
        builder.interpreter(STORAGE_FAMILY, move |shard| db.interpreter(shard))
    }

    /// `shard`'s interpreter; call it on the shard's thread (from the factory given
    /// to [`RuntimeBuilder::interpreter`]). The Database and Storage interpreters of
    /// one shard share the shard's client.
    pub fn interpreter(&self, shard: &ShardContext<F>) -> PgInterpreter<F> {
        PgInterpreter {
            client: self.shard_client(shard),
            begins: HashMap::new(),
        }
    }

    /// This shard's client, started on first use.
    fn shard_client(&self, shard: &ShardContext<F>) -> Rc<ShardClient<F>> {
        thread_local! {
            /// Each `PgDatabase`'s client on this thread, by the address of its `Inner`
            /// (which the client keeps alive).
            static CLIENTS: RefCell<Vec<(usize, Weak<dyn Any>)>> = const { RefCell::new(Vec::new()) };
        }
        let key = Arc::as_ptr(&self.inner) as usize;
        let found = CLIENTS.with_borrow_mut(|clients| {
            clients.retain(|(_, c)| c.strong_count() > 0);
            clients
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, c)| c.upgrade()?.downcast::<ShardClient<F>>().ok())
        });
        if let Some(client) = found {
            return client;
        }
        let mut config = self.inner.config.clone();
        let (min, max) = (config.pool.min_size, config.pool.max_size);
        let shard_max = share(max, shard.shards(), shard.shard()).max(1);
        let shard_min = share(min, shard.shards(), shard.shard()).min(shard_max);
        config.pool = config.pool.size(shard_min, shard_max);
        let (tx, rx) = mpsc::unbounded_channel();
        let (id, shut_down) = self.inner.register(tx, shard_max);
        let client = Rc::new(ShardClient {
            client: PgClient::start(
                config,
                self.inner.connector.clone(),
                shard.clock(),
                Some(shard.local_replier()),
                rx,
            ),
            db: self.inner.clone(),
            id,
        });
        if shut_down {
            client.client.close();
        }
        let any: Rc<dyn Any> = client.clone();
        CLIENTS.with_borrow_mut(|clients| clients.push((key, Rc::downgrade(&any))));
        client
    }

    /// Runs `SELECT 1` on a pool connection (a shard's, or before any shard runs, the
    /// fallback thread's).
    pub async fn ping(&self) -> Result<(), EffectError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .send(Control::Ping(tx))
            .map_err(|_| stopped("Database.Ping"))?;
        rx.await.map_err(|_| stopped("Database.Ping"))?
    }

    /// The pool's figures summed over every shard (`utilisation`: connections in use
    /// of the process's maximum), or `None` once it has shut down.
    pub async fn status(&self) -> Option<PoolStatus> {
        let asked: Vec<(oneshot::Receiver<PoolStatus>, usize)> = {
            let clients = self.inner.clients();
            if clients.shut_down {
                return None;
            }
            clients
                .shards
                .iter()
                .filter_map(|shard| {
                    let (tx, rx) = oneshot::channel();
                    shard.control.send(Control::Status(tx)).ok()?;
                    Some((rx, shard.max_size))
                })
                .collect()
        };
        let mut total = PoolStatus {
            size: 0,
            idle: 0,
            in_use: 0,
            waiting: 0,
            opening: 0,
            resetting: 0,
            utilisation: 0.0,
        };
        let mut max = 0;
        for (rx, max_size) in asked {
            let Ok(status) = rx.await else { continue };
            total.size += status.size;
            total.idle += status.idle;
            total.in_use += status.in_use;
            total.waiting += status.waiting;
            total.opening += status.opening;
            total.resetting += status.resetting;
            max += max_size;
        }
        if max > 0 {
            total.utilisation = total.in_use as f64 / max as f64;
        }
        Some(total)
    }

    /// Closes every shard's connections (and the fallback thread's) and waits at
    /// most `grace` until they are closed. Work still waiting fails with a
    /// retryable error; later work fails at once.
    pub fn shutdown(&self, grace: std::time::Duration) {
        let deadline = std::time::Instant::now() + grace;
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        let mut expected = 0;
        {
            let mut clients = self.inner.clients();
            clients.shut_down = true;
            for shard in &clients.shards {
                if shard
                    .control
                    .send(Control::Shutdown(Some(done_tx.clone())))
                    .is_ok()
                {
                    expected += 1;
                }
            }
            if let Some((control, thread)) = clients.fallback.take() {
                let _ = control.send(Control::Shutdown(None));
                threads.push(thread);
            }
            threads.append(&mut clients.retired);
        }
        drop(done_tx);
        for _ in 0..expected {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if done_rx.recv_timeout(left).is_err() {
                break;
            }
        }
        for thread in threads {
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// A shard's client while the shard's interpreters hold it: closed and forgotten by
/// the handle when the shard stops.
struct ShardClient<F: SplitStd>
where
    F::Response: Send,
{
    client: Rc<PgClient<F>>,
    db: Arc<Inner>,
    id: u64,
}

impl<F: SplitStd> Drop for ShardClient<F>
where
    F::Response: Send,
{
    fn drop(&mut self) {
        self.db.deregister(self.id);
        self.client.close();
    }
}

/// Serves the Database and Storage families on one shard from the shard's own
/// client of a [`PgDatabase`].
///
/// It remembers each program's `Database.Begin` effects and, when the program ends,
/// cancels them once more: the pool then rolls back any transaction one of them
/// opened that is still open, and the connection goes back clean.
pub struct PgInterpreter<F: SplitStd = Std>
where
    F::Response: Send,
{
    client: Rc<ShardClient<F>>,
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
        if !self.client.client.perform(cx.now(), id, work) {
            cx.answer(id, Err(stopped(name)));
        }
    }

    fn cancel(&mut self, cx: &mut ShardCx<'_, F>, id: EffectId) {
        self.client.client.cancel(cx.now(), id);
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
    use super::share;

    #[test]
    fn one_pool_can_be_shared_by_every_shard() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::PgDatabase>();
    }

    #[test]
    fn the_shards_shares_add_up_to_the_whole_and_differ_by_one_at_most() {
        for total in 0..40 {
            for parts in 1..9 {
                let shares: Vec<usize> = (0..parts).map(|i| share(total, parts, i)).collect();
                assert_eq!(shares.iter().sum::<usize>(), total, "{total} over {parts}");
                let (lo, hi) = (shares.iter().min(), shares.iter().max());
                assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{shares:?}");
            }
        }
        assert_eq!(share(20, 2, 0), 10);
        assert_eq!(share(5, 2, 0), 3);
        assert_eq!(share(5, 2, 1), 2);
    }
}
