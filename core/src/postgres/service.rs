//! [`PgService`]: the Database and Storage families over a [`Pool`] of pipelined
//! [`PgConnection`]s, as one sans-IO state machine a driver feeds with bytes and time.
//!
//! It owns the pool, every connection's state machine and the table of pending work:
//! each submitted request waits for a shared connection, runs as one extended query
//! (its own Sync, so it fails alone), and comes back as an [`Output::Answer`]. The
//! first connection to start runs the [migrations](super::database::MIGRATIONS)
//! before any work is handed out.

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap as HashMap;
use std::hash::Hash;

use bytes::Bytes;

use super::cancel::CancelRequest;
use super::config::PgConfig;
use super::connection::PgConnection;
use super::database::{self, DatabasePlan, Migration};
use super::error::{PgError, sqlstate::QUERY_CANCELED};
use super::event::{Event, QueryId};
use super::pool::{AcquireId, ConnId, Mode, Pool, PoolConfig, PoolEvent, PoolStatus, Release};
use super::room::{OwnBackends, Room};
use super::scram::NONCE_ENTROPY_LEN;
use super::sql::SqlPlan;
use super::storage::{self, StoragePlan};
use crate::effect::{
    DatabaseRequest, DatabaseResponse, SharedRoomMessage, StorageRequest, StorageResponse,
};
use crate::{EffectError, ErrorKind, Time, Timestamp};

mod pinned;

/// What a [`PgService`] runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Work {
    /// One Database effect.
    Database(DatabasePlan),
    /// One Storage effect.
    Storage(StoragePlan),
    /// `SELECT 1` on a pool connection (a health check).
    Ping,
    /// Users' own SQL (`Query`, `Execute`, `Batch`, transactions, `Migrate`).
    Sql(SqlPlan),
}

impl Work {
    /// The work for one Database request.
    pub fn database(request: &DatabaseRequest) -> Work {
        match SqlPlan::new(request) {
            Some(plan) => Work::Sql(plan),
            None => Work::Database(database::plan(request)),
        }
    }

    /// The work for one Storage request performed at wall-clock time `now`, or the
    /// error the request is refused with before reaching the server.
    pub fn storage(request: &StorageRequest, now: Timestamp) -> Result<Work, EffectError> {
        storage::plan(request, now).map(Work::Storage)
    }

    fn effect(&self) -> &'static str {
        match self {
            Work::Database(plan) => plan.effect(),
            Work::Storage(plan) => plan.effect(),
            Work::Ping => "Database.Ping",
            Work::Sql(plan) => plan.effect(),
        }
    }

    /// For a room wait, the `seq` it waits after and its page size.
    fn room_wait(&self) -> Option<(u64, u32)> {
        match self {
            Work::Database(plan) => plan.decode().room_wait(),
            Work::Storage(_) | Work::Ping | Work::Sql(_) => None,
        }
    }
}

/// What finished work gives.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Reply {
    /// The answer to a Database effect.
    Database(DatabaseResponse),
    /// The answer to a Storage effect.
    Storage(StorageResponse),
    /// The server answered `SELECT 1`.
    Pong,
}

/// What the service asks its driver to do.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Output<K> {
    /// Open a socket for `conn`; report with [`PgService::handle_connected`] or
    /// [`PgService::handle_connect_failed`].
    Connect {
        /// The connection.
        conn: ConnId,
    },
    /// `conn` has bytes to write: append them to what goes to its socket with
    /// [`PgService::transmit`] (a buffer of the driver's own, so a query's bytes are
    /// copied once and allocate nothing of their own).
    Transmit {
        /// The connection.
        conn: ConnId,
    },
    /// Write `bytes` to `conn`'s socket, in order: the last bytes of a connection
    /// that has ended (its `Terminate`), just before its [`Output::Disconnect`].
    TransmitLast {
        /// The connection.
        conn: ConnId,
        /// What to write.
        bytes: Bytes,
    },
    /// Close `conn`'s socket (after writing what was transmitted before).
    Disconnect {
        /// The connection.
        conn: ConnId,
    },
    /// Send `cancel` on a new socket to the same server (a command timeout).
    Cancel {
        /// The 16 bytes to send.
        cancel: CancelRequest,
    },
    /// Work finished (never for work cancelled before it started, nor for work
    /// cancelled while running).
    Answer {
        /// The key the work was submitted with.
        key: K,
        /// Its outcome.
        result: Result<Reply, EffectError>,
    },
}

/// Settings of a [`PgService`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// Each connection's settings (its command timeout is the pool's).
    pub connection: PgConfig,
    /// The pool's.
    pub pool: PoolConfig,
    /// Run before any work, on the first connection (default: the Database
    /// family's [`MIGRATIONS`](super::database::MIGRATIONS)); empty: none.
    pub migrations: &'static [Migration],
    /// The process ids of the connections of every service made from a clone of
    /// this config (a fresh set in [`new`](Self::new)): room notifications they send
    /// are trusted to carry the stored message.
    pub own_backends: OwnBackends,
}

impl ServiceConfig {
    /// `connection` with the default pool and the Database family's migrations.
    pub fn new(connection: PgConfig) -> ServiceConfig {
        ServiceConfig {
            connection,
            pool: PoolConfig::default(),
            migrations: database::MIGRATIONS,
            own_backends: OwnBackends::default(),
        }
    }

    /// Sets the pool's settings.
    pub fn pool(mut self, pool: PoolConfig) -> ServiceConfig {
        self.pool = pool;
        self
    }

    /// Sets the migrations (`&[]`: none).
    pub fn migrations(mut self, migrations: &'static [Migration]) -> ServiceConfig {
        self.migrations = migrations;
        self
    }
}

enum Job<K> {
    Waiting {
        acquire: AcquireId,
        work: Work,
    },
    /// A room wait that found nothing: parked until the room's channel notifies.
    Parked {
        work: Work,
    },
    /// A room wait answered by another's query (the leader's) for the same `seq`.
    Riding {
        leader: K,
        work: Work,
    },
    Running {
        hold: Hold,
        work: Work,
        cancelled: bool,
        /// [`PgService::epoch`] when it was sent.
        epoch: u64,
    },
}

/// What a running query holds its connection by.
#[derive(Clone, Copy)]
enum Hold {
    /// A pool acquire, released when the query is done.
    Pool(AcquireId),
    /// The room listener's connection, which a room wait's query borrows: it never
    /// queues behind other work (a post waiting on the room's lock) there.
    Listener,
}

enum Role<K> {
    Job(K),
    Reset,
    Migrate,
    Listen,
    /// A query of work that holds its connection alone.
    Pinned(pinned::Step<K>),
}

/// The connection that listens on the room's channel, held alone while any room
/// wait is pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listener {
    Idle,
    Acquiring(AcquireId),
    Starting { acquire: AcquireId, conn: ConnId },
    Listening { acquire: AcquireId, conn: ConnId },
}

/// Values under ids handed out in increasing order and mostly taken back in that
/// order (a connection's queries, which the server answers in the order sent; the
/// pool's acquires, granted first come, first served): the one taken is found at the
/// front without hashing, and one taken out of turn is searched for.
struct InOrder<I, V> {
    entries: VecDeque<(I, V)>,
}

impl<I, V> Default for InOrder<I, V> {
    fn default() -> Self {
        InOrder {
            entries: VecDeque::new(),
        }
    }
}

impl<I: PartialEq, V> InOrder<I, V> {
    /// Adds `value` under `id`, newer than every id held.
    fn push(&mut self, id: I, value: V) {
        self.entries.push_back((id, value));
    }

    fn get_mut(&mut self, id: &I) -> Option<&mut V> {
        let (_, value) = self.entries.iter_mut().find(|(held, _)| held == id)?;
        Some(value)
    }

    fn remove(&mut self, id: &I) -> Option<V> {
        let at = self.entries.iter().position(|(held, _)| held == id)?;
        self.entries.remove(at).map(|(_, value)| value)
    }
}

struct Conn<K> {
    /// `None` until the socket is connected.
    pg: Option<PgConnection>,
    /// The pool was told it opened.
    opened: bool,
    /// Started, waiting for another connection's migrations.
    parked: bool,
    queries: InOrder<QueryId, Role<K>>,
    /// Queries whose command timeout sent a cancel request.
    timed_out: Vec<QueryId>,
    /// The server process behind it, in [`ServiceConfig::own_backends`] while open.
    backend: Option<i32>,
}

/// The Database family over a pool of PostgreSQL connections, sans IO.
///
/// # Methods by kind
/// - **Inputs** (each takes `now`): [`submit`](Self::submit), [`cancel`](Self::cancel),
///   [`handle_connected`](Self::handle_connected),
///   [`handle_connect_failed`](Self::handle_connect_failed),
///   [`handle_input`](Self::handle_input), [`handle_eof`](Self::handle_eof),
///   [`handle_timeout`](Self::handle_timeout), [`close`](Self::close).
/// - **Outputs**: [`poll_output`](Self::poll_output), [`poll_timeout`](Self::poll_timeout).
/// - **Getters**: [`status`](Self::status), [`is_migrated`](Self::is_migrated).
///
/// # The drain rule
/// After every input drain [`poll_output`](Self::poll_output) until `None`, then call
/// [`handle_timeout`](Self::handle_timeout) no later than
/// [`poll_timeout`](Self::poll_timeout).
///
/// # Guarantees
/// - Work submitted gets exactly one [`Output::Answer`], unless cancelled; work
///   cancelled before it started never reaches the server.
/// - A connection that dies fails its work with retryable `ConnectionLost` errors and
///   the pool opens another; while no connection can be opened, waiting work fails at
///   once with a retryable error saying why, instead of waiting out the acquire
///   timeout.
/// - A command timeout cancels only the query that is executing on the server; that
///   query then fails with a retryable `Timeout` error.
/// - A room wait (`WaitRoomMessages`) that finds nothing is parked, not answered:
///   one pool connection listens on the room's channel while any wait is pending;
///   waits run only once it listens, every notification (and every return of the
///   listener after a loss) runs the parked waits again, one query per distinct
///   `seq`, so a post committed while nobody listened is caught up, not missed.
/// - With a busy room, one query per post serves every waiting session: the service
///   keeps the room's latest messages as its queries read them (stored messages never
///   change) and answers a wait they cover at once; while it listens it keeps a
///   *horizon*, a `seq` after which every message notifies, and a wait after the
///   horizon parks at once, without a query. The horizon is learnt from complete
///   answers of queries during which nothing notified, and forgotten at every
///   notification after it from a stranger and when the listener is lost; a wait
///   whose empty answer comes from before such a notification runs again.
/// - A post of this process needs no query at all: the post's answer, and the
///   notification its backend sends (one of [`ServiceConfig::own_backends`], so its
///   payload, the stored message, is believed), put the message in what the service
///   knows and raise the horizon to it.
pub struct PgService<K> {
    config: ServiceConfig,
    pool: Pool,
    conns: BTreeMap<ConnId, Conn<K>>,
    jobs: HashMap<K, Job<K>>,
    /// Room waits that found nothing, in the order they parked.
    parked: Vec<K>,
    /// Room waits riding on a leader's query, by leader.
    riders: HashMap<K, Vec<K>>,
    /// Room waits held until the listener is confirmed (a wait that ran before
    /// `LISTEN` could miss the notification of a post that commits in between).
    held: Vec<(K, Work)>,
    listener: Listener,
    /// What is known of the room: its latest messages and the horizon.
    room: Room,
    /// The room's channel, once `LISTEN` has answered it.
    room_channel: Option<String>,
    /// The room wait whose query answers every wait for the same `seq` and page size.
    room_leaders: HashMap<(u64, u32), K>,
    acquires: InOrder<AcquireId, K>,
    outputs: VecDeque<Output<K>>,
    migrated: bool,
    migrating: Option<ConnId>,
    /// Transactions, batches and users' migrations, each holding a connection.
    pinned: pinned::Pinned<K>,
    now: Time,
}

impl<K> Drop for PgService<K> {
    /// A service dropped without [`close`](PgService::close) (its thread ended
    /// otherwise) no longer vouches for its connections' backends.
    fn drop(&mut self) {
        for c in self.conns.values() {
            if let Some(pid) = c.backend {
                self.config.own_backends.remove(pid);
            }
        }
    }
}

impl<K> std::fmt::Debug for PgService<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgService")
            .field("connection", &self.config.connection)
            .field("pool", &self.pool.status())
            .field("jobs", &self.jobs.len())
            .field("migrated", &self.migrated)
            .finish_non_exhaustive()
    }
}

impl<K: Clone + Eq + Hash> PgService<K> {
    /// A service that starts opening the pool's `min_size` connections at once.
    pub fn new(mut config: ServiceConfig, now: Time) -> PgService<K> {
        config.connection.command_timeout = Some(config.pool.command_timeout);
        let pool = Pool::new(config.pool.clone(), now);
        let mut service = PgService {
            migrated: config.migrations.is_empty(),
            config,
            pool,
            conns: BTreeMap::new(),
            jobs: HashMap::default(),
            acquires: InOrder::default(),
            outputs: VecDeque::new(),
            migrating: None,
            parked: Vec::new(),
            riders: HashMap::default(),
            held: Vec::new(),
            listener: Listener::Idle,
            room: Room::default(),
            room_channel: None,
            room_leaders: HashMap::default(),
            pinned: pinned::Pinned::default(),
            now,
        };
        service.drain_pool();
        service
    }

    /// The pool's figures.
    pub fn status(&self) -> PoolStatus {
        self.pool.status()
    }

    /// Whether the migrations have run (or there are none).
    pub fn is_migrated(&self) -> bool {
        self.migrated
    }

    /// How much work is waiting or running.
    pub fn pending(&self) -> usize {
        self.jobs.len()
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output<K>> {
        self.outputs.pop_front()
    }

    /// Appends to `out` what `conn` has to write (after an [`Output::Transmit`]);
    /// nothing if it has nothing or is gone.
    pub fn transmit(&mut self, conn: ConnId, out: &mut bytes::BytesMut) {
        if let Some(pg) = self.conns.get_mut(&conn).and_then(|c| c.pg.as_mut()) {
            pg.transmit_into(out);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        let conns = self
            .conns
            .values()
            .filter_map(|c| c.pg.as_ref()?.poll_timeout());
        conns.chain(self.pool.poll_timeout()).min()
    }

    fn tick(&mut self, now: Time) {
        self.now = self.now.max(now);
    }

    /// Submits `work` under `key` (unique among pending work: a key in use is
    /// answered at once with an error).
    pub fn submit(&mut self, now: Time, key: K, work: Work) {
        self.tick(now);
        if self.jobs.contains_key(&key) || self.held.iter().any(|(k, _)| *k == key) {
            let effect = work.effect();
            self.outputs.push_back(Output::Answer {
                key,
                result: Err(EffectError::new(
                    effect,
                    ErrorKind::Protocol,
                    "this key already names pending work",
                )
                .with_retryable(false)),
            });
            return;
        }
        let work = match work {
            Work::Sql(plan) if plan.is_pinned() => {
                self.submit_pinned(key, plan);
                self.drain_pool();
                return;
            }
            work => work,
        };
        if work.room_wait().is_some() {
            if !self.is_listening() {
                self.held.push((key, work));
                self.ensure_listener();
                self.drain_pool();
                return;
            }
            self.serve_room_wait(key, work);
            self.drain_pool();
            return;
        }
        self.enqueue(key, work);
        self.drain_pool();
    }

    fn enqueue(&mut self, key: K, work: Work) {
        let acquire = self.pool.acquire(self.now, Mode::Shared);
        // Granted at once (a connection has room: the pipelined case): sent now,
        // never recorded as waiting, which spares two of the five lookups in `jobs`
        // a query costs otherwise.
        if let Some(conn) = self.pool.take_granted(acquire) {
            return self.send(conn, Hold::Pool(acquire), key, work);
        }
        self.acquires.push(acquire, key.clone());
        self.jobs.insert(key, Job::Waiting { acquire, work });
    }

    /// The submitter no longer wants the answer to `key`. Returns `true` if the work
    /// had not started (it is dropped and never runs); `false` if it is running (its
    /// answer will be dropped) or unknown.
    pub fn cancel(&mut self, now: Time, key: &K) -> bool {
        self.tick(now);
        if let Some(i) = self.held.iter().position(|(k, _)| k == key) {
            self.held.remove(i);
            return true;
        }
        match self.jobs.get_mut(key) {
            Some(Job::Waiting { acquire, .. }) => {
                let acquire = *acquire;
                let Some(Job::Waiting { work, .. }) = self.jobs.remove(key) else {
                    return false;
                };
                let leads = work
                    .room_wait()
                    .filter(|wait| self.room_leaders.get(wait) == Some(key));
                if let Some(wait) = leads {
                    self.room_leaders.remove(&wait);
                }
                // A leader's riders still want the query: the first takes its place.
                match self.riders.remove(key).filter(|r| !r.is_empty()) {
                    Some(mut riders) => {
                        let next = riders.remove(0);
                        if let Some(wait) = leads {
                            self.room_leaders.insert(wait, next.clone());
                        }
                        for rider in &riders {
                            if let Some(Job::Riding { leader, .. }) = self.jobs.get_mut(rider) {
                                *leader = next.clone();
                            }
                        }
                        self.jobs
                            .insert(next.clone(), Job::Waiting { acquire, work });
                        if let Some(waiting) = self.acquires.get_mut(&acquire) {
                            *waiting = next.clone();
                        }
                        if !riders.is_empty() {
                            self.riders.insert(next, riders);
                        }
                    }
                    None => {
                        self.pool.cancel_acquire(self.now, acquire);
                        self.acquires.remove(&acquire);
                    }
                }
                self.drain_pool();
                true
            }
            Some(Job::Running { cancelled, .. }) => {
                // Its riders are still answered from its result.
                *cancelled = true;
                false
            }
            Some(Job::Parked { .. }) => {
                self.jobs.remove(key);
                self.parked.retain(|k| k != key);
                true
            }
            Some(Job::Riding { leader, .. }) => {
                let leader = leader.clone();
                self.jobs.remove(key);
                if let Some(riders) = self.riders.get_mut(&leader) {
                    riders.retain(|k| k != key);
                }
                true
            }
            None => {
                let dropped = self.cancel_pinned(key);
                self.drain_pool();
                dropped
            }
        }
    }

    /// The socket asked for by [`Output::Connect`] is connected; `entropy` is fresh OS
    /// randomness for the SCRAM nonce.
    pub fn handle_connected(&mut self, now: Time, conn: ConnId, entropy: [u8; NONCE_ENTROPY_LEN]) {
        self.tick(now);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.pg.is_none() {
            c.pg = Some(PgConnection::new(
                self.config.connection.clone(),
                entropy,
                self.now,
            ));
            self.drive(conn);
        }
    }

    /// The socket asked for by [`Output::Connect`] could not be connected (`why`
    /// must hold no secret: it reaches the waiting programs).
    pub fn handle_connect_failed(&mut self, now: Time, conn: ConnId, why: &str) {
        self.tick(now);
        if self.conns.remove(&conn).is_some() {
            self.pool.handle_opened(self.now, conn, false);
            self.fail_waiting_if_nothing_opens(&format!("cannot connect to PostgreSQL: {why}"));
            self.drain_pool();
        }
    }

    /// Bytes `conn`'s socket read.
    pub fn handle_input(&mut self, now: Time, conn: ConnId, bytes: &[u8]) {
        self.tick(now);
        if let Some(pg) = self.conns.get_mut(&conn).and_then(|c| c.pg.as_mut()) {
            pg.handle_input(self.now, bytes);
            self.drive(conn);
        }
    }

    /// `conn`'s socket closed or failed.
    pub fn handle_eof(&mut self, now: Time, conn: ConnId) {
        self.tick(now);
        match self.conns.get_mut(&conn) {
            Some(Conn { pg: Some(pg), .. }) => {
                pg.handle_eof(self.now);
                self.drive(conn);
            }
            Some(Conn { pg: None, .. }) => {
                self.handle_connect_failed(now, conn, "the socket closed")
            }
            None => {}
        }
    }

    /// Time has passed.
    pub fn handle_timeout(&mut self, now: Time) {
        self.tick(now);
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in ids {
            if let Some(pg) = self.conns.get_mut(&conn).and_then(|c| c.pg.as_mut()) {
                pg.handle_timeout(self.now);
                self.drive(conn);
            }
        }
        self.pool.handle_timeout(self.now);
        self.drain_pool();
    }

    /// Closes every connection; pending work fails with a retryable error.
    pub fn close(&mut self, now: Time) {
        self.tick(now);
        self.fail_all_waiting(
            ErrorKind::Unavailable,
            "the database client is shutting down",
        );
        let room: Vec<(K, &'static str)> = self
            .held
            .drain(..)
            .map(|(k, w)| (k, w.effect()))
            .chain(self.jobs.iter().filter_map(|(k, j)| match j {
                Job::Parked { work } | Job::Riding { work, .. } => Some((k.clone(), work.effect())),
                _ => None,
            }))
            .collect();
        for (key, effect) in room {
            self.jobs.remove(&key);
            self.outputs.push_back(Output::Answer {
                key,
                result: Err(EffectError::new(
                    effect,
                    ErrorKind::Unavailable,
                    "the database client is shutting down",
                )),
            });
        }
        self.parked.clear();
        self.riders.clear();
        self.room_leaders.clear();
        self.close_pinned();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in ids {
            match self.conns.get_mut(&conn).and_then(|c| c.pg.as_mut()) {
                Some(pg) => {
                    pg.close(self.now);
                    self.drive(conn);
                }
                None => {
                    self.conns.remove(&conn);
                    self.outputs.push_back(Output::Disconnect { conn });
                }
            }
        }
    }

    // ---- internals ----

    fn fail_waiting(&mut self, key: &K, kind: ErrorKind, message: &str) {
        if let Some(Job::Waiting { acquire, work }) = self.jobs.remove(key) {
            self.pool.cancel_acquire(self.now, acquire);
            self.acquires.remove(&acquire);
            let result = Err(EffectError::new(work.effect(), kind, message));
            self.answer(key.clone(), result);
        }
    }

    /// When no connection is open and none is starting, waiting work would only wait
    /// out the acquire timeout: fail it now, saying why.
    fn fail_waiting_if_nothing_opens(&mut self, why: &str) {
        let alive = self
            .conns
            .values()
            .any(|c| c.opened || c.pg.as_ref().is_some_and(|pg| !pg.is_closed()));
        if !alive {
            self.fail_all_waiting(ErrorKind::ConnectionLost, why);
        }
    }

    fn drain_pool(&mut self) {
        while let Some(event) = self.pool.poll_event() {
            match event {
                PoolEvent::Open { conn } => {
                    self.conns.insert(
                        conn,
                        Conn {
                            pg: None,
                            opened: false,
                            parked: false,
                            queries: InOrder::default(),
                            timed_out: Vec::new(),
                            backend: None,
                        },
                    );
                    self.outputs.push_back(Output::Connect { conn });
                }
                PoolEvent::Reset { conn } => {
                    let started = self
                        .conns
                        .get_mut(&conn)
                        .and_then(|c| {
                            let id = c.pg.as_mut()?.query(self.now, "SELECT 1").ok()?;
                            c.queries.push(id, Role::Reset);
                            Some(())
                        })
                        .is_some();
                    if started {
                        self.drive(conn);
                    } else {
                        self.pool.handle_reset(self.now, conn, false);
                    }
                }
                PoolEvent::Close { conn } => {
                    if let Some(pg) = self.conns.get_mut(&conn).and_then(|c| c.pg.as_mut()) {
                        pg.close(self.now);
                        self.drive(conn);
                    } else if self.conns.remove(&conn).is_some() {
                        self.outputs.push_back(Output::Disconnect { conn });
                    }
                }
                PoolEvent::Acquired { acquire, conn } => self.start(acquire, conn),
                PoolEvent::TimedOut { acquire } => {
                    self.pinned_acquire_timed_out(acquire);
                    if self.listener == Listener::Acquiring(acquire) {
                        self.listener = Listener::Idle;
                        self.ensure_listener();
                    }
                    if let Some(key) = self.acquires.remove(&acquire) {
                        if let Some(Job::Waiting { work, .. }) = self.jobs.remove(&key) {
                            let result = Err(EffectError::timeout(
                                work.effect(),
                                format!(
                                    "no PostgreSQL connection was free within the pool's acquire timeout ({:?})",
                                    self.config.pool.acquire_timeout
                                ),
                            ));
                            self.answer(key, result);
                        }
                    }
                }
            }
        }
    }

    fn start(&mut self, acquire: AcquireId, conn: ConnId) {
        if self.listener == Listener::Acquiring(acquire) {
            self.start_listener(acquire, conn);
            return;
        }
        if self.is_pinned_acquire(acquire) {
            self.start_pinned(acquire, conn);
            return;
        }
        let Some(key) = self.acquires.remove(&acquire) else {
            self.pool.release(self.now, acquire, Release::Clean);
            return;
        };
        let Some(Job::Waiting { work, .. }) = self.jobs.remove(&key) else {
            self.pool.release(self.now, acquire, Release::Clean);
            return;
        };
        self.send(conn, Hold::Pool(acquire), key, work);
    }

    /// Sends `work` on `conn`, held by `hold`.
    fn send(&mut self, conn: ConnId, hold: Hold, key: K, work: Work) {
        let release = |pool: &mut Pool, now, how| {
            if let Hold::Pool(acquire) = hold {
                pool.release(now, acquire, how);
            }
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            release(&mut self.pool, self.now, Release::Broken);
            let result = Err(EffectError::connection_lost(
                work.effect(),
                "the PostgreSQL connection closed before the query was sent",
            ));
            self.answer(key, result);
            return;
        };
        let sent = match (&mut c.pg, &work) {
            (Some(pg), Work::Database(plan)) => pg.execute(self.now, plan.sql(), plan.params()),
            (Some(pg), Work::Storage(plan)) => pg.execute(self.now, plan.sql(), plan.params()),
            (Some(pg), Work::Ping) => pg.execute(self.now, "SELECT 1", &[]),
            (Some(pg), Work::Sql(SqlPlan::Statement { statement, .. })) => {
                pg.execute(self.now, &statement.sql, &statement.params)
            }
            (Some(_), Work::Sql(_)) => Err(PgError::protocol(
                "pinned work reached a shared connection".to_owned(),
            )),
            (None, _) => Err(PgError::Closed(super::error::ClosedReason::ServerHungUp)),
        };
        match sent {
            Ok(id) => {
                c.queries.push(id, Role::Job(key.clone()));
                self.jobs.insert(
                    key,
                    Job::Running {
                        hold,
                        work,
                        cancelled: false,
                        epoch: self.room.epoch(),
                    },
                );
                self.drive(conn);
            }
            Err(e) => {
                let how = if e.is_retryable() {
                    Release::Broken
                } else {
                    Release::Clean
                };
                release(&mut self.pool, self.now, how);
                let effect = work.effect();
                self.answer(key, Err(e.to_effect_error(effect)));
            }
        }
    }

    /// Drains `conn`'s events and bytes, then the pool's.
    fn drive(&mut self, conn: ConnId) {
        while let Some(c) = self.conns.get_mut(&conn) {
            let Some(pg) = c.pg.as_mut() else {
                break;
            };
            if pg.has_transmit()
                && !matches!(self.outputs.back(), Some(Output::Transmit { conn: last }) if *last == conn)
            {
                self.outputs.push_back(Output::Transmit { conn });
            }
            let Some(event) = pg.poll_event() else {
                break;
            };
            match event {
                Event::Ready => self.on_ready(conn),
                Event::Done { id, result } => {
                    let role = self
                        .conns
                        .get_mut(&conn)
                        .and_then(|c| c.queries.remove(&id));
                    match role {
                        Some(Role::Job(key)) => {
                            let timed_out = self.conns.get_mut(&conn).is_some_and(|c| {
                                let found = c.timed_out.contains(&id);
                                c.timed_out.retain(|t| *t != id);
                                found
                            });
                            self.on_done(key, result, timed_out);
                        }
                        Some(Role::Reset) => self.pool.handle_reset(self.now, conn, result.is_ok()),
                        Some(Role::Migrate) => self.on_migrated(conn, result),
                        Some(Role::Listen) => {
                            let channel = result.as_ref().ok().and_then(|sets| {
                                sets.first()?.rows.first()?.get::<String, _>(0).ok()
                            });
                            if channel.is_some() {
                                self.room_channel = channel;
                            }
                            self.on_listening(conn, result.is_ok())
                        }
                        Some(Role::Pinned(step)) => self.on_pinned_done(conn, step, result),
                        None => {}
                    }
                }
                Event::CancelDue { id, cancel } => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.timed_out.push(id);
                    }
                    self.outputs.push_back(Output::Cancel { cancel });
                }
                Event::Closed(error) => {
                    self.on_closed(conn, &error);
                    break;
                }
                Event::Notification(n) if self.is_room_channel(&n.channel) => {
                    self.on_room_notified(conn, n.process_id, &n.payload)
                }
                // No TLS here (the driver asks for none); notices and other
                // notifications carry nothing the Database family answers with.
                Event::StartTls | Event::Notice(_) | Event::Notification(_) => {}
            }
        }
        self.drain_pool();
    }

    /// Acquires a connection to listen on the room's channel, if room waits want one.
    fn ensure_listener(&mut self) {
        if self.listener == Listener::Idle && !(self.held.is_empty() && self.parked.is_empty()) {
            let acquire = self.pool.acquire(self.now, Mode::Exclusive);
            self.listener = Listener::Acquiring(acquire);
        }
    }

    fn start_listener(&mut self, acquire: AcquireId, conn: ConnId) {
        let sql = database::LISTEN_ROOM;
        let sent = self
            .conns
            .get_mut(&conn)
            .and_then(|c| {
                let id = c.pg.as_mut()?.query(self.now, sql).ok()?;
                c.queries.push(id, Role::Listen);
                Some(())
            })
            .is_some();
        if sent {
            self.listener = Listener::Starting { acquire, conn };
            self.drive(conn);
        } else {
            self.pool.release(self.now, acquire, Release::Broken);
            self.listener = Listener::Idle;
            self.ensure_listener();
        }
    }

    /// `LISTEN` answered: room waits may run now; parked ones run again, since posts
    /// may have committed while nobody listened.
    fn on_listening(&mut self, conn: ConnId, ok: bool) {
        let Listener::Starting { acquire, conn: l } = self.listener else {
            return;
        };
        if l != conn {
            return;
        }
        if !ok {
            self.pool.release(self.now, acquire, Release::Broken);
            self.listener = Listener::Idle;
            self.ensure_listener();
            return;
        }
        self.listener = Listener::Listening { acquire, conn };
        self.room.forget_horizon();
        for (key, work) in std::mem::take(&mut self.held) {
            self.serve_room_wait(key, work);
        }
        self.wake_room();
    }

    /// The channel the listener listens on (`effectful_listen_room()` answers it), or
    /// before that answer any room's.
    fn is_room_channel(&self, channel: &str) -> bool {
        match &self.room_channel {
            Some(ours) => ours == channel,
            None => channel.starts_with(database::ROOM_CHANNEL),
        }
    }

    fn is_listening(&self) -> bool {
        matches!(self.listener, Listener::Listening { .. })
    }

    /// Something was notified on the room's channel, on `conn`, by server process
    /// `sender`. From one of this process's own backends, on the listener, it is a
    /// post's stored message in commit order: the room learns it and the waits it
    /// answers are answered, with no query. From anyone else it says only that
    /// something changed (unless it names a `seq` the horizon covers): the horizon is
    /// forgotten and the parked waits run again.
    fn on_room_notified(&mut self, conn: ConnId, sender: i32, payload: &str) {
        let on_listener = matches!(self.listener, Listener::Listening { conn: l, .. } if l == conn);
        let seq = match database::room_notice(payload) {
            database::RoomNotice::Message(m)
                if on_listener
                    && self.room.follows(m.seq)
                    && self.config.own_backends.contains(sender) =>
            {
                if self.room.stored(&SharedRoomMessage::new(m), true) {
                    self.wake_room();
                }
                return;
            }
            database::RoomNotice::Message(m) => Some(m.seq),
            database::RoomNotice::Seq(seq) => Some(seq),
            database::RoomNotice::Unknown => None,
        };
        if seq.is_some_and(|seq| self.room.covers(seq)) {
            return;
        }
        self.room.forget_horizon();
        self.wake_room();
    }

    /// Runs again every parked wait (while listening; once listening otherwise).
    fn wake_room(&mut self) {
        if !self.is_listening() {
            return;
        }
        for key in std::mem::take(&mut self.parked) {
            if let Some(Job::Parked { work }) = self.jobs.remove(&key) {
                self.serve_room_wait(key, work);
            }
        }
    }

    /// A room wait, while listening: answered from what is known of the room if it
    /// can be; parked if nothing can be there yet; otherwise on the server, riding on
    /// the query of a wait for the same `seq` and page size if one is under way, or
    /// leading one on the listener's connection (never behind a post that waits for
    /// the room's lock).
    fn serve_room_wait(&mut self, key: K, work: Work) {
        let Some(wait @ (after, limit)) = work.room_wait() else {
            self.enqueue(key, work);
            return;
        };
        if let Some(found) = self.room.answer(after, limit) {
            let result = Ok(Reply::Database(DatabaseResponse::WaitRoomMessages(found)));
            self.outputs.push_back(Output::Answer { key, result });
        } else if self.room.must_park(after) {
            self.park(key, work);
        } else if let Some(leader) = self.room_leaders.get(&wait).cloned() {
            self.riders
                .entry(leader.clone())
                .or_default()
                .push(key.clone());
            self.jobs.insert(key, Job::Riding { leader, work });
        } else {
            self.room_leaders.insert(wait, key.clone());
            match self.listener {
                Listener::Listening { conn, .. } => self.send(conn, Hold::Listener, key, work),
                _ => self.enqueue(key, work),
            }
        }
    }

    /// Answers `key`, and the room waits riding on it with the same result.
    fn answer(&mut self, key: K, result: Result<Reply, EffectError>) {
        self.room_leaders.retain(|_, leader| *leader != key);
        if let Some(riders) = self.riders.remove(&key) {
            for rider in riders {
                if self.jobs.remove(&rider).is_some() {
                    self.outputs.push_back(Output::Answer {
                        key: rider,
                        result: result.clone(),
                    });
                }
            }
        }
        self.outputs.push_back(Output::Answer { key, result });
    }

    fn park(&mut self, key: K, work: Work) {
        self.parked.push(key.clone());
        self.jobs.insert(key, Job::Parked { work });
        self.ensure_listener();
    }

    fn on_ready(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            let backend =
                c.pg.as_ref()
                    .and_then(|pg| pg.cancel_request())
                    .map(|k| k.process_id());
            if let Some(pid) = backend {
                self.config.own_backends.insert(pid);
            }
            c.backend = backend;
        }
        if self.migrated {
            self.report_opened(conn);
            return;
        }
        if self.migrating.is_some() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.parked = true;
            }
            return;
        }
        let sql = database::migration_sql(self.config.migrations);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(pg) = c.pg.as_mut() else {
            return;
        };
        match pg.query(self.now, &sql) {
            Ok(id) => {
                c.queries.push(id, Role::Migrate);
                self.migrating = Some(conn);
            }
            Err(e) => {
                pg.close(self.now);
                let message = format!("the migrations could not be sent: {e}");
                self.fail_all_waiting(ErrorKind::Protocol, &message);
            }
        }
    }

    fn report_opened(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.opened {
                c.opened = true;
                c.parked = false;
                self.pool.handle_opened(self.now, conn, true);
            }
        }
    }

    fn on_migrated(&mut self, conn: ConnId, result: Result<Vec<super::row::ResultSet>, PgError>) {
        self.migrating = None;
        match result {
            Ok(_) => {
                self.migrated = true;
                let parked: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.parked)
                    .map(|(id, _)| *id)
                    .collect();
                self.report_opened(conn);
                for other in parked {
                    self.report_opened(other);
                }
            }
            Err(e) => {
                // Not retryable by waiting: the schema cannot be created as written
                // (permissions, a conflicting table). Say so to everyone waiting.
                let message = format!("the Database migrations failed: {e}");
                self.fail_all_waiting(ErrorKind::Protocol, &message);
                if let Some(pg) = self.conns.get_mut(&conn).and_then(|c| c.pg.as_mut()) {
                    pg.close(self.now);
                }
            }
        }
    }

    fn fail_all_waiting(&mut self, kind: ErrorKind, message: &str) {
        let waiting: Vec<K> = self
            .jobs
            .iter()
            .filter(|(_, j)| matches!(j, Job::Waiting { .. }))
            .map(|(k, _)| k.clone())
            .collect();
        for key in waiting {
            self.fail_waiting(&key, kind.clone(), message);
        }
    }

    /// `timed_out`: the driver sent a cancel for this query (its command timeout).
    fn on_done(
        &mut self,
        key: K,
        result: Result<Vec<super::row::ResultSet>, PgError>,
        timed_out: bool,
    ) {
        let Some(Job::Running {
            hold,
            work,
            cancelled,
            epoch,
        }) = self.jobs.remove(&key)
        else {
            return;
        };
        let how = match &result {
            Err(PgError::Closed(_)) => Release::Broken,
            Err(e) if e.as_db().is_some_and(|d| d.is_fatal()) => Release::Broken,
            _ => Release::Clean,
        };
        if let Hold::Pool(acquire) = hold {
            self.pool.release(self.now, acquire, how);
        }
        if let Some(wait @ (after, limit)) = work.room_wait() {
            if self.room_leaders.get(&wait) == Some(&key) {
                self.room_leaders.remove(&wait);
            }
            let riders = self.riders.remove(&key).unwrap_or_default();
            let leader_work = work.clone();
            let found = match work {
                Work::Database(plan) => plan.finish(result).map(Reply::Database),
                Work::Storage(_) | Work::Ping | Work::Sql(_) => return,
            };
            let mut nothing_yet = false;
            let mut rose = false;
            if let Ok(Reply::Database(DatabaseResponse::WaitRoomMessages(read))) = &found {
                let listening_held = epoch == self.room.epoch() && self.is_listening();
                rose = self.room.learn(after, limit, read, listening_held);
                nothing_yet = read.is_empty();
            }
            if rose {
                // Waits parked before the new horizon may be answered now (their
                // messages' notifications, at or before it, will be covered).
                self.wake_room();
            }
            if !nothing_yet {
                // The common case, once per room message: every member gets the
                // answer, in order, the leader first (its riders are hundreds of
                // sessions; their work is dropped as it is answered).
                if !cancelled {
                    self.outputs.push_back(Output::Answer {
                        key,
                        result: found.clone(),
                    });
                }
                for rider in riders {
                    if let Some(Job::Riding { .. }) = self.jobs.remove(&rider) {
                        self.outputs.push_back(Output::Answer {
                            key: rider,
                            result: found.clone(),
                        });
                    }
                }
                return;
            }
            let mut group: Vec<(K, Work)> = Vec::with_capacity(riders.len() + 1);
            if !cancelled {
                group.push((key, leader_work));
            }
            group.extend(
                riders
                    .into_iter()
                    .filter_map(|rider| match self.jobs.remove(&rider) {
                        Some(Job::Riding { work, .. }) => Some((rider, work)),
                        _ => None,
                    }),
            );
            for (member, member_work) in group {
                if self.is_listening() {
                    // Parks, unless a post notified while the query ran (or the answer
                    // is from before the listener came back): then it runs again.
                    self.serve_room_wait(member, member_work);
                } else {
                    self.park(member, member_work);
                }
            }
            return;
        }
        if cancelled {
            return;
        }
        let effect = work.effect();
        if timed_out && result.as_ref().err().and_then(PgError::code) == Some(QUERY_CANCELED) {
            self.outputs.push_back(Output::Answer {
                key,
                result: Err(EffectError::timeout(
                    effect,
                    format!(
                        "the query ran past the command timeout ({:?}) and was cancelled on the server",
                        self.config.pool.command_timeout
                    ),
                )),
            });
            return;
        }
        let result = match work {
            Work::Database(plan) => {
                let result = plan.finish(result);
                if let Ok(DatabaseResponse::PostRoomMessage(stored)) = &result {
                    // The posting shard's waits need not wait for the notification.
                    if self.room.stored(stored, false) {
                        self.wake_room();
                    }
                }
                result.map(Reply::Database)
            }
            Work::Storage(plan) => plan.finish(result).map(Reply::Storage),
            Work::Ping => result
                .map(|_| Reply::Pong)
                .map_err(|e| e.to_effect_error(effect)),
            Work::Sql(plan) => super::sql::finish(plan, result).map(Reply::Database),
        };
        self.outputs.push_back(Output::Answer { key, result });
    }

    fn on_closed(&mut self, conn: ConnId, error: &PgError) {
        let Some(mut c) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(pid) = c.backend {
            self.config.own_backends.remove(pid);
        }
        if let Some(pg) = c.pg.as_mut() {
            while let Some(bytes) = pg.poll_transmit() {
                self.outputs.push_back(Output::TransmitLast { conn, bytes });
            }
        }
        if self.migrating == Some(conn) {
            self.migrating = None;
        }
        if let Listener::Starting { conn: l, .. } | Listener::Listening { conn: l, .. } =
            self.listener
        {
            if l == conn {
                // Posts made while nobody listens are caught up once listening again.
                self.listener = Listener::Idle;
                self.room.forget_horizon();
                self.ensure_listener();
            }
        }
        self.outputs.push_back(Output::Disconnect { conn });
        self.pinned_conn_closed(conn);
        if c.opened {
            self.pool.handle_closed(self.now, conn);
        } else {
            self.pool.handle_opened(self.now, conn, false);
            self.fail_waiting_if_nothing_opens(&format!("cannot connect to PostgreSQL: {error}"));
        }
        // A parked connection may now run the migrations itself.
        if !self.migrated && self.migrating.is_none() {
            let parked = self.conns.iter().find(|(_, c)| c.parked).map(|(id, _)| *id);
            if let Some(next) = parked {
                if let Some(c) = self.conns.get_mut(&next) {
                    c.parked = false;
                }
                self.on_ready(next);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InOrder;

    #[test]
    fn in_order_finds_what_is_taken_in_turn_and_out_of_turn_and_updates_in_place() {
        let mut held: InOrder<u64, &str> = InOrder::default();
        for (id, value) in [(1, "a"), (2, "b"), (3, "c"), (4, "d")] {
            held.push(id, value);
        }
        assert_eq!(held.remove(&1), Some("a"), "the front, in turn");
        assert_eq!(held.remove(&3), Some("c"), "out of turn");
        assert_eq!(held.remove(&3), None, "taken already");
        assert_eq!(held.remove(&9), None, "never held");
        *held.get_mut(&4).expect("held") = "e";
        assert!(held.get_mut(&3).is_none());
        assert_eq!(held.remove(&2), Some("b"));
        assert_eq!(held.remove(&4), Some("e"), "the value put in its place");
        assert!(held.entries.is_empty());
    }
}
