//! The per-process pool: at most `max_connections` pipelined connections, each a task
//! on the pool's own IO thread that owns its socket and its [`RedisConnection`].
//!
//! A `rediss://` URL puts TLS under every connection from the first byte, through
//! [`TlsClient`]: the server's certificate must chain to a root and name the URL's
//! host. The roots are the bundled Mozilla roots, or the PEM file of
//! [`RedisTls::ca_file`]; skipping the check takes [`RedisTls::insecure_skip_verify`].
//! [`PoolConfig::from_url`] reads both from the URL's query under redis-py's names,
//! `ssl_ca_certs=/path/ca.pem` and `ssl_cert_reqs=none` (so `REDIS_URL` can say them).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use effectful::redis::{
    Command, CommandError, ConnectionError, Event, Reconnect, ReconnectAction, RedisConfig,
    RedisConnection, RedisUrl, RequestId, SendError, Value,
};
use effectful::{EffectError, EffectId, ErrorKind, Rng, Schedule, Time};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::deadline::DeadlineSleep;
use crate::outbox::{Outbox, Taker};
use crate::tls::{TlsClient, TlsStream, Verify};

/// The seed's default pool size (`REDIS_MAX_CONNECTIONS`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10;
/// The seed's default operation timeout.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// How a [`RedisPool`] connects. The password stays redacted in `Debug`.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Where, as whom, which database, which protocol.
    pub url: RedisUrl,
    /// At most this many connections (at least 1).
    pub max_connections: usize,
    /// How long a command (and connecting) may take before its effect fails with a
    /// retryable timeout.
    pub operation_timeout: Duration,
    /// The backoff between connection attempts after a failure.
    pub reconnect: Schedule,
    /// How a `rediss://` server's certificate is checked (unused for `redis://`).
    pub tls: RedisTls,
    /// The connections' name in `CLIENT LIST` (`CLIENT SETNAME`); `effectful` by
    /// default.
    pub client_name: String,
}

/// How a `rediss://` server's certificate is checked. The default: it must chain to
/// one of the bundled Mozilla roots and name the URL's host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// Roots from this PEM file instead of the bundled ones (a private CA);
    /// `ssl_ca_certs` in the URL.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate: encrypted, but anyone on the path can pose as the
    /// server. Only when asked for: `ssl_cert_reqs=none` in the URL.
    pub insecure_skip_verify: bool,
}

impl RedisTls {
    /// The TLS client these settings make (reads the CA file).
    fn client(&self) -> std::io::Result<TlsClient> {
        let verify = if self.insecure_skip_verify {
            Verify::Nothing
        } else {
            Verify::Full
        };
        TlsClient::new(verify, self.ca_file.as_deref()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("rediss:// (ssl_ca_certs): {e}"),
            )
        })
    }
}

impl PoolConfig {
    /// `url` with the defaults: 10 connections, 5 s, 100 ms doubling to 5 s; TLS (for
    /// `rediss://`) checked against the bundled roots.
    pub fn new(url: RedisUrl) -> PoolConfig {
        PoolConfig {
            url,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            reconnect: Reconnect::default_schedule(),
            tls: RedisTls::default(),
            client_name: "effectful".to_owned(),
        }
    }

    /// Reads a `redis://` or `rediss://` URL, with the TLS settings of its query
    /// under redis-py's names: `ssl_ca_certs` (a PEM file of roots) and
    /// `ssl_cert_reqs` (`required`, the default, or `none` to skip the check). The
    /// other parameters are [`RedisUrl::parse`]'s. Errors never quote the URL.
    pub fn from_url(url: &str) -> Result<PoolConfig, String> {
        let mut tls = RedisTls::default();
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "ssl_ca_certs" => {
                    let path = crate::tls::percent_decode(value)
                        .ok_or("ssl_ca_certs has a bad percent-escape or is not UTF-8")?;
                    tls.ca_file = Some(PathBuf::from(path));
                }
                "ssl_cert_reqs" => {
                    tls.insecure_skip_verify = match value {
                        "required" => false,
                        "none" => true,
                        _ => return Err("ssl_cert_reqs must be `required` or `none`".to_owned()),
                    }
                }
                _ => rest.push(pair),
            }
        }
        let url = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config = PoolConfig::new(RedisUrl::parse(&url).map_err(|e| e.to_string())?);
        config.tls = tls;
        Ok(config)
    }
}

/// Why a command got no reply value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolError {
    /// The connection it went on said why ([`CommandError`]).
    Command(CommandError),
    /// The connection closed (or could not be made) before the reply; `retryable`
    /// from [`ConnectionError::is_retryable`].
    Lost {
        /// Why, without secrets.
        reason: String,
        /// Whether trying again may help.
        retryable: bool,
    },
    /// The connection refused it ([`SendError`]).
    Send(SendError),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Command(e) => e.fmt(f),
            PoolError::Lost { reason, .. } => f.write_str(reason),
            PoolError::Send(e) => e.fmt(f),
        }
    }
}

impl PoolError {
    /// As the error of `effect`: a lost connection and a timeout are retryable.
    pub fn effect_error(&self, effect: &'static str) -> EffectError {
        match self {
            PoolError::Command(e) => effectful::redis::command_error(effect, e),
            PoolError::Lost { reason, retryable } => {
                EffectError::connection_lost(effect, reason.clone()).with_retryable(*retryable)
            }
            PoolError::Send(e @ SendError::TooManyPending { .. }) => {
                EffectError::new(effect, ErrorKind::Unavailable, e.to_string())
            }
            PoolError::Send(SendError::Closed) => {
                EffectError::connection_lost(effect, SendError::Closed.to_string())
            }
            PoolError::Send(e) => {
                EffectError::new(effect, ErrorKind::Protocol, e.to_string()).with_retryable(false)
            }
        }
    }
}

/// What a job's reply goes to.
pub type OnReply = Box<dyn FnOnce(Result<Value, PoolError>) + Send>;

/// One command for the pool.
pub struct Job {
    /// The command.
    pub command: Command,
    /// Set when nobody wants the reply any more: if the command has not been sent
    /// yet, it never is (and `reply` is dropped uncalled).
    pub cancelled: Option<Arc<AtomicBool>>,
    /// Called once with the reply, on the pool's thread.
    pub reply: OnReply,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

/// Where a shard's effects wait for their replies: its interpreter's table, on the
/// shard's thread. A command of an effect carries only the effect's id, so handing
/// one to a connection allocates nothing beyond the command.
pub(super) trait Awaiting {
    /// Whether the effect was cancelled: its command is then never sent.
    fn is_cancelled(&self, id: EffectId) -> bool;
    /// The reply to the effect's command.
    fn answer(&self, id: EffectId, reply: Result<Value, PoolError>);
    /// The effect's command gets no reply (it was dropped unsent).
    fn forget(&self, id: EffectId);
    /// Writes the command of an effect planned without one (a Cache read, whose
    /// `GET` goes straight into the connection's bytes); `None` if the effect was
    /// cancelled or is not awaited here (nothing is written).
    fn write(
        &self,
        id: EffectId,
        now: Time,
        conn: &mut RedisConnection,
    ) -> Option<Result<RequestId, SendError>>;
}

/// What a reply goes to, on the thread of the connection that got it. Answered
/// once: with the reply ([`call`](Self::call)); or, if dropped unanswered (its
/// connection's task panicked or was aborted, or work came after it ended), with a
/// retryable "connection lost" error ([`task_ended_error`]); only a command
/// cancelled before it was sent goes unanswered ([`discard`](Self::discard)).
pub(super) enum LocalReply {
    /// A [`Job`]'s closure.
    Call(CallReply),
    /// An effect waiting in its shard's table.
    Effect(EffectReply),
}

/// A [`Job`]'s closure, dropped uncalled only if `cancelled` is set before its
/// command is sent.
pub(super) struct CallReply {
    cancelled: Option<Arc<AtomicBool>>,
    /// `None` once called.
    reply: Option<CallFn>,
}

type CallFn = Box<dyn FnOnce(Result<Value, PoolError>)>;

impl Drop for CallReply {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            reply(Err(task_ended_error()));
        }
    }
}

/// An effect's place in its shard's [`Awaiting`] table. Weak, so queued commands
/// never keep the interpreter alive.
pub(super) struct EffectReply {
    table: Weak<dyn Awaiting>,
    id: EffectId,
    /// Answered, or discarded: nothing more to tell the table.
    answered: bool,
}

impl EffectReply {
    pub(super) fn new(table: Weak<dyn Awaiting>, id: EffectId) -> EffectReply {
        EffectReply {
            table,
            id,
            answered: false,
        }
    }
}

impl Drop for EffectReply {
    fn drop(&mut self) {
        if !self.answered {
            if let Some(table) = self.table.upgrade() {
                table.answer(self.id, Err(task_ended_error()));
            }
        }
    }
}

/// The error of a command whose connection's task ended without its reply (it
/// panicked or was aborted) or that came after the task ended: retryable, though a
/// command already written may have run.
pub(super) fn task_ended_error() -> PoolError {
    PoolError::Lost {
        reason: "the Redis connection's task ended before the reply (a command already \
                 sent may have run)"
            .to_owned(),
        retryable: true,
    }
}

impl LocalReply {
    fn is_cancelled(&self) -> bool {
        match self {
            LocalReply::Call(call) => call
                .cancelled
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed)),
            LocalReply::Effect(effect) => effect
                .table
                .upgrade()
                .is_some_and(|table| table.is_cancelled(effect.id)),
        }
    }

    /// Hands over the reply.
    pub(super) fn call(self, result: Result<Value, PoolError>) {
        match self {
            LocalReply::Call(mut call) => {
                if let Some(reply) = call.reply.take() {
                    reply(result);
                }
            }
            LocalReply::Effect(mut effect) => {
                effect.answered = true;
                if let Some(table) = effect.table.upgrade() {
                    table.answer(effect.id, result);
                }
            }
        }
    }

    /// Writes the command its effect's table keeps ([`Awaiting::write`]); `None` if
    /// the effect was cancelled.
    fn write(&self, now: Time, conn: &mut RedisConnection) -> Option<Result<RequestId, SendError>> {
        match self {
            LocalReply::Effect(effect) => effect.table.upgrade()?.write(effect.id, now, conn),
            LocalReply::Call(_) => Some(Err(SendError::Unsupported {
                command: "a job without a command",
            })),
        }
    }

    /// Drops it unanswered: its command was cancelled before it was sent.
    fn discard(self) {
        match self {
            LocalReply::Call(mut call) => drop(call.reply.take()),
            LocalReply::Effect(mut effect) => {
                effect.answered = true;
                if let Some(table) = effect.table.upgrade() {
                    table.forget(effect.id);
                }
            }
        }
    }
}

/// One command for a connection of this thread's share of the pool.
pub(super) struct LocalJob {
    /// `None`: an effect's, written by its table when it is sent (a Cache read's
    /// `GET`: no command is built for it).
    pub(super) command: Option<Command>,
    pub(super) reply: LocalReply,
}

impl From<Job> for LocalJob {
    fn from(job: Job) -> LocalJob {
        LocalJob {
            command: Some(job.command),
            reply: LocalReply::Call(CallReply {
                cancelled: job.cancelled,
                reply: Some(job.reply as CallFn),
            }),
        }
    }
}

/// A per-process pool of pipelined Redis connections (cheap to clone), split among
/// the shards that use it.
///
/// `max_connections` is for the whole process: shard `i` of `n` runs at most
/// `max / n` connections (the first `max % n` shards one more, every shard at least
/// one) as tasks on its own thread, and what a shard submits goes to its own
/// connections, its replies called on its thread: nothing crosses a thread. Work
/// submitted from any other thread (a health check, the Messaging consumers' thread)
/// goes to the shards in turn. Before any shard runs, the pool's IO thread serves it
/// with the whole `max_connections`; those connections close (after their replies)
/// once a shard starts, and open again if work comes while no shard runs. The IO
/// thread also keeps the wake subscription's connection; it ends when
/// the last clone is dropped.
#[derive(Clone)]
pub struct RedisPool {
    inner: Arc<Inner>,
}

/// What another thread hands a share: work, or (the IO thread's share) word that a
/// shard runs now.
enum Remote {
    Work(Vec<Job>),
    Retire,
    /// [`RedisPool::shutdown`]: close the connections, refuse later work.
    Shutdown,
}

struct Inner {
    /// How connections are made.
    slot: Arc<Slot>,
    /// The pool's IO thread: the handle's share before shards run, and subscriptions.
    io: tokio::runtime::Handle,
    /// The process's limit.
    max: usize,
    seed: u64,
    shares: Mutex<Shares>,
    target: String,
}

/// The shares of the pool running now.
struct Shares {
    /// The IO thread's share (for work from outside the shards while none runs).
    fallback: Entry,
    /// The running shards' shares.
    shards: Vec<Entry>,
    next_id: u64,
    /// The shard the next work from outside goes to.
    next: usize,
    shut_down: bool,
}

/// A share as other threads see it.
struct Entry {
    id: u64,
    remote: mpsc::UnboundedSender<Remote>,
    /// Commands handed to each of its connections and not answered yet.
    in_flight: Vec<Arc<AtomicUsize>>,
}

/// The pool's figures, for `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RedisPoolStatus {
    /// How many connections it may open.
    pub max_connections: usize,
    /// Connections with at least one command in flight.
    pub busy: usize,
    /// Commands in flight, over every connection.
    pub in_flight: usize,
    /// `busy / max_connections`, 0 to 1.
    pub utilisation: f64,
}

impl fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPool")
            .field("target", &self.inner.target)
            .field("max_connections", &self.inner.max)
            .finish()
    }
}

/// `total` split over `parts`: part `i`'s share (the first `total % parts` get one
/// more).
fn share(total: usize, parts: usize, i: usize) -> usize {
    let parts = parts.max(1);
    total / parts + usize::from(i < total % parts)
}

fn counters(n: usize) -> Vec<Arc<AtomicUsize>> {
    (0..n).map(|_| Arc::default()).collect()
}

/// The error of work that found no connection task to take it.
fn stopped_error() -> PoolError {
    PoolError::Lost {
        reason: "the Redis pool has stopped".to_owned(),
        retryable: false,
    }
}

/// The error of work that comes after [`RedisPool::shutdown`].
fn shut_down_error() -> PoolError {
    PoolError::Lost {
        reason: "the Redis pool has shut down".to_owned(),
        retryable: true,
    }
}

impl RedisPool {
    /// Starts the pool's IO thread. Connections open when the first command needs
    /// them; a connection that breaks reconnects with backoff.
    pub fn start(config: PoolConfig) -> std::io::Result<RedisPool> {
        let tls = if config.url.tls() {
            Some(config.tls.client()?)
        } else {
            None
        };
        let max = config.max_connections.max(1);
        let target = format!("{}:{}", config.url.host(), config.url.port());
        let mut redis = config.url.config();
        redis.operation_timeout = Some(config.operation_timeout);
        redis.client_name = Some(config.client_name.clone());
        let seed = crate::entropy::seed().unwrap_or(0x5eed);
        let slot = Arc::new(Slot {
            redis,
            tls,
            host: config.url.host().to_owned(),
            target: target.clone(),
            timeout: config.operation_timeout,
            schedule: config.reconnect,
        });
        let (remote, rx) = mpsc::unbounded_channel();
        let in_flight = counters(max);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let io = runtime.handle().clone();
        let (fallback_slot, fallback_in_flight) = (slot.clone(), in_flight.clone());
        std::thread::Builder::new()
            .name("effectful-redis".to_owned())
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(
                    &runtime,
                    serve_fallback(fallback_slot, fallback_in_flight, seed, rx),
                );
            })?;
        Ok(RedisPool {
            inner: Arc::new(Inner {
                slot,
                io,
                max,
                seed,
                shares: Mutex::new(Shares {
                    fallback: Entry {
                        id: 0,
                        remote,
                        in_flight,
                    },
                    shards: Vec::new(),
                    next_id: 0,
                    next: 0,
                    shut_down: false,
                }),
                target,
            }),
        })
    }

    /// `host:port` of the server.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// Keeps one connection of its own, outside the pool, subscribed to `channel`
    /// (RESP2 `SUBSCRIBE`, named `client_name` in `CLIENT LIST`) on the pool's IO
    /// thread, reconnecting with the pool's backoff; `on` hears what it hears. It
    /// ends when the [`Subscriber`] is dropped, or with the pool.
    pub(super) fn subscribe(
        &self,
        channel: String,
        client_name: String,
        on: Box<dyn FnMut(Heard) + Send>,
    ) -> Subscriber {
        let slot = self.inner.slot.clone();
        let task = self.inner.io.spawn(super::subscriber::run(
            slot,
            channel,
            client_name,
            Rng::from_seed(self.inner.seed),
            on,
        ));
        Subscriber(task.abort_handle())
    }

    /// How many connections it may open, over the whole process.
    pub fn max_connections(&self) -> usize {
        self.inner.max
    }

    /// The pool's figures now, over every share.
    pub fn status(&self) -> RedisPoolStatus {
        let (busy, in_flight) = {
            let shares = self.inner.shares();
            let counts = std::iter::once(&shares.fallback)
                .chain(&shares.shards)
                .flat_map(|entry| &entry.in_flight)
                .map(|n| n.load(Ordering::Relaxed));
            counts.fold((0, 0), |(busy, all), n| {
                (busy + usize::from(n > 0), all + n)
            })
        };
        let max_connections = self.inner.max;
        RedisPoolStatus {
            max_connections,
            busy,
            in_flight,
            utilisation: (busy as f64 / max_connections as f64).min(1.0),
        }
    }

    /// Hands `job` to a connection: on a shard's thread, one of the shard's own
    /// (round robin); elsewhere, a connection of the next shard.
    pub fn submit(&self, job: Job) {
        match self.local_share() {
            Some(share) => share.share.submit(std::iter::once(job.into())),
            None => self.inner.send_remote(vec![job]),
        }
    }

    /// Hands `jobs` to one connection (the next, round robin, of this shard's if on
    /// a shard's thread), which writes them pipelined, in one write when it can.
    pub fn submit_all(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        match self.local_share() {
            Some(share) => share.share.submit(jobs.into_iter().map(LocalJob::from)),
            None => self.inner.send_remote(jobs),
        }
    }

    /// Sends one command and waits for its reply (for health checks and tools).
    pub async fn call(&self, command: Command) -> Result<Value, PoolError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job {
            command,
            cancelled: None,
            reply: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        });
        rx.await.unwrap_or_else(|_| {
            Err(PoolError::Lost {
                reason: "the Redis pool dropped the command".to_owned(),
                retryable: true,
            })
        })
    }

    /// Closes every share's connections (each once the replies it waits for are
    /// in, or the operation timeout fails them); later work fails at once with a
    /// retryable error. A subscription (the wake connection) ends
    /// with its owner, not here.
    pub fn shutdown(&self) {
        let mut shares = self.inner.shares();
        shares.shut_down = true;
        for entry in std::iter::once(&shares.fallback).chain(&shares.shards) {
            let _ = entry.remote.send(Remote::Shutdown);
        }
    }

    /// This thread's share, if a shard of this thread has one.
    fn local_share(&self) -> Option<Rc<ShardShare>> {
        let key = Arc::as_ptr(&self.inner) as usize;
        SHARES.with_borrow(|shares| {
            shares
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, share)| share.upgrade())
        })
    }

    /// The share of shard `shard` of `shards`, run on this (the shard's) thread:
    /// made on first use, inside the shard's `LocalSet`; it closes its connections
    /// when the last of the shard's interpreters drops it.
    pub(super) fn shard_share(&self, shard: usize, shards: usize) -> Rc<ShardShare> {
        if let Some(share) = self.local_share() {
            return share;
        }
        let size = share(self.inner.max, shards, shard).max(1);
        let in_flight = counters(size);
        let (remote, rx) = mpsc::unbounded_channel();
        let seed = self.inner.seed.wrapping_add(1 + (shard as u64) * 1024);
        let local = Rc::new(LocalShare::start(&self.inner.slot, in_flight.clone(), seed));
        tokio::task::spawn_local(serve_remote(local.clone(), rx));
        let (id, shut_down) = self.inner.register(remote, in_flight);
        if shut_down {
            local.close();
        }
        let share = Rc::new(ShardShare {
            share: local,
            inner: self.inner.clone(),
            id,
        });
        let key = Arc::as_ptr(&self.inner) as usize;
        SHARES.with_borrow_mut(|shares| {
            shares.retain(|(_, s)| s.strong_count() > 0);
            shares.push((key, Rc::downgrade(&share)));
        });
        share
    }
}

thread_local! {
    /// Each pool's share on this thread, by the address of its `Inner`.
    static SHARES: RefCell<Vec<(usize, Weak<ShardShare>)>> = const { RefCell::new(Vec::new()) };
}

impl Inner {
    fn shares(&self) -> MutexGuard<'_, Shares> {
        self.shares.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands work from outside the shards to a shard's share (in turn), or while
    /// none runs, to the IO thread's.
    fn send_remote(&self, jobs: Vec<Job>) {
        let mut remote = Remote::Work(jobs);
        let mut shares = self.shares();
        if shares.shut_down {
            drop(shares);
            if let Remote::Work(jobs) = remote {
                jobs.into_iter()
                    .for_each(|job| (job.reply)(Err(shut_down_error())));
            }
            return;
        }
        while !shares.shards.is_empty() {
            let i = shares.next % shares.shards.len();
            shares.next = shares.next.wrapping_add(1);
            match shares.shards[i].remote.send(remote) {
                Ok(()) => return,
                Err(e) => {
                    remote = e.0;
                    shares.shards.remove(i);
                }
            }
        }
        if let Err(mpsc::error::SendError(Remote::Work(jobs))) = shares.fallback.remote.send(remote)
        {
            drop(shares);
            jobs.into_iter()
                .for_each(|job| (job.reply)(Err(stopped_error())));
        }
    }

    /// A shard's share started: the IO thread's closes its connections. Its id, and
    /// whether the pool has shut down.
    fn register(
        &self,
        remote: mpsc::UnboundedSender<Remote>,
        in_flight: Vec<Arc<AtomicUsize>>,
    ) -> (u64, bool) {
        let mut shares = self.shares();
        shares.next_id += 1;
        let id = shares.next_id;
        if shares.shards.is_empty() {
            let _ = shares.fallback.remote.send(Remote::Retire);
        }
        shares.shards.push(Entry {
            id,
            remote,
            in_flight,
        });
        (id, shares.shut_down)
    }

    fn deregister(&self, id: u64) {
        self.shares().shards.retain(|s| s.id != id);
    }
}

/// A shard's share while the shard's interpreters hold it: forgotten by the pool
/// when they drop it, and its connections close.
pub(super) struct ShardShare {
    pub(super) share: Rc<LocalShare>,
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for ShardShare {
    fn drop(&mut self) {
        self.inner.deregister(self.id);
    }
}

/// A connection's queue: the jobs handed to it and not taken yet, all taken at once
/// when its task runs (one write).
type Queue = Outbox<Vec<LocalJob>>;

/// Some of the pool's connections, as tasks on the thread that made it; they close
/// (after the replies they wait for) when it is dropped.
pub(super) struct LocalShare {
    /// Each connection's queue; empty once closed.
    slots: RefCell<Vec<Rc<Queue>>>,
    in_flight: Vec<Arc<AtomicUsize>>,
    /// The connection the last work went to.
    last: Cell<usize>,
}

impl LocalShare {
    /// One connection task per counter, on this thread (inside a `LocalSet`).
    fn start(slot: &Arc<Slot>, in_flight: Vec<Arc<AtomicUsize>>, seed: u64) -> LocalShare {
        let slots = in_flight
            .iter()
            .enumerate()
            .map(|(i, counter)| {
                let queue = Rc::new(Queue::default());
                let jobs = Jobs {
                    queue: Taker::new(queue.clone()),
                    in_flight: counter.clone(),
                };
                let rng = Rng::from_seed(seed.wrapping_add(i as u64));
                tokio::task::spawn_local(run_slot(slot.clone(), jobs, rng));
                queue
            })
            .collect();
        LocalShare {
            slots: RefCell::new(slots),
            in_flight,
            last: Cell::new(0),
        }
    }

    /// Hands `jobs` to the next connection (round robin), to be written together.
    pub(super) fn submit(&self, jobs: impl IntoIterator<Item = LocalJob>) {
        self.hand(jobs, false);
    }

    /// Hands one command of the shard's drain to the connection the last went to
    /// while it has not taken them yet, so what one drain submits goes out in one
    /// write; else to the next.
    pub(super) fn submit_in_drain(&self, job: LocalJob) {
        self.hand(std::iter::once(job), true);
    }

    fn hand(&self, jobs: impl IntoIterator<Item = LocalJob>, join_last: bool) {
        let slots = self.slots.borrow();
        if slots.is_empty() {
            drop(slots);
            return jobs
                .into_iter()
                .for_each(|job| job.reply.call(Err(shut_down_error())));
        }
        let mut i = self.last.get() % slots.len();
        if !join_last || slots[i].is_empty() {
            i = (i + 1) % slots.len();
            self.last.set(i);
        }
        // Without the borrow: if the connection's task has ended, the jobs are
        // answered as they are dropped, and an answer may hand in more work.
        let queue = slots[i].clone();
        drop(slots);
        queue.push_with(|queued| {
            let before = queued.len();
            queued.extend(jobs);
            // Counted in here, counted out by the connection just before each reply.
            self.in_flight[i].fetch_add(queued.len() - before, Ordering::Relaxed);
        });
    }

    /// Closes the connections (once their replies are in) and refuses later work.
    fn close(&self) {
        for queue in self.slots.borrow_mut().drain(..) {
            queue.close();
        }
    }
}

impl Drop for LocalShare {
    fn drop(&mut self) {
        self.close();
    }
}

/// A shard's share takes work from other threads until the shard is gone.
async fn serve_remote(share: Rc<LocalShare>, mut rx: mpsc::UnboundedReceiver<Remote>) {
    while let Some(remote) = rx.recv().await {
        match remote {
            Remote::Work(jobs) => share.submit(jobs.into_iter().map(LocalJob::from)),
            Remote::Retire => {}
            Remote::Shutdown => share.close(),
        }
    }
}

/// The IO thread's share: made when work comes, dropped (its connections closed)
/// when a shard starts, until the pool is dropped.
async fn serve_fallback(
    slot: Arc<Slot>,
    in_flight: Vec<Arc<AtomicUsize>>,
    seed: u64,
    mut rx: mpsc::UnboundedReceiver<Remote>,
) {
    let mut share: Option<LocalShare> = None;
    while let Some(remote) = rx.recv().await {
        match remote {
            Remote::Work(jobs) => share
                .get_or_insert_with(|| LocalShare::start(&slot, in_flight.clone(), seed))
                .submit(jobs.into_iter().map(LocalJob::from)),
            Remote::Retire => share = None,
            Remote::Shutdown => {
                let closed = LocalShare::start(&slot, Vec::new(), seed);
                share.replace(closed);
            }
        }
    }
}

/// A connection's queue (the taking end, held by its task), and its count of
/// commands handed to it and not answered.
struct Jobs {
    queue: Taker<Vec<LocalJob>>,
    in_flight: Arc<AtomicUsize>,
}

impl Jobs {
    /// Answers `job`, counting it out first (so whoever it wakes sees it answered).
    fn answer(&self, reply: LocalReply, result: Result<Value, PoolError>) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        reply.call(result);
    }

    /// Drops `job` unanswered (cancelled before it was sent).
    fn drop_job(&self, job: LocalJob) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        job.reply.discard();
    }
}

impl Drop for Jobs {
    /// The task has ended: nothing is in flight on its connection any more (what it
    /// still held answers as it is dropped, see [`LocalReply`]).
    fn drop(&mut self) {
        self.in_flight.store(0, Ordering::Relaxed);
    }
}

/// What every connection of the pool shares.
pub(super) struct Slot {
    pub(super) redis: RedisConfig,
    /// For `rediss://`: TLS under the connection, verified for `host`.
    tls: Option<TlsClient>,
    host: String,
    pub(super) target: String,
    timeout: Duration,
    pub(super) schedule: Schedule,
}

/// What a subscription connection ([`RedisPool::subscribe`]) hears.
#[derive(Debug)]
pub(super) enum Heard {
    /// The subscription is confirmed (`true`: after every reconnection too), or its
    /// connection is lost (`false`).
    Listening(bool),
    /// A message on the channel.
    Message(Vec<u8>),
}

/// A subscription connection's task: ends when dropped.
#[derive(Debug)]
pub(super) struct Subscriber(tokio::task::AbortHandle);

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection of the pool, for as long as the pool lives: connects when a job
/// comes, serves it pipelined, reconnects with backoff after a failure (answering
/// jobs that come meanwhile at once with a retryable error).
async fn run_slot(slot: Arc<Slot>, jobs: Jobs, rng: Rng) {
    // The connection's own clock: only differences matter to it.
    let clock = Clock::start();
    let mut reconnect = Reconnect::new(clock.now(), slot.schedule.clone(), rng);
    let mut queued: VecDeque<LocalJob> = VecDeque::new();
    let mut last_error = String::new();
    let mut batch = Vec::new();
    // Nothing to do until the first job.
    if !jobs.queue.next(&mut batch).await {
        return;
    }
    queued.extend(batch.drain(..));
    loop {
        match reconnect.poll_action() {
            Some(ReconnectAction::Connect) => {}
            Some(ReconnectAction::GiveUp) => {
                // Not retryable (a wrong password): every job gets that error.
                let lost = PoolError::Lost {
                    reason: last_error.clone(),
                    retryable: false,
                };
                for job in queued.drain(..) {
                    jobs.answer(job.reply, Err(lost.clone()));
                }
                while jobs.queue.next(&mut batch).await {
                    for job in batch.drain(..) {
                        jobs.answer(job.reply, Err(lost.clone()));
                    }
                }
                return;
            }
            None => {
                // Waiting out the backoff: fail what comes, fast and retryably.
                let lost = PoolError::Lost {
                    reason: last_error.clone(),
                    retryable: true,
                };
                for job in queued.drain(..) {
                    jobs.answer(job.reply, Err(lost.clone()));
                }
                let at = reconnect.poll_timeout().unwrap_or_else(|| clock.now());
                let sleep = tokio::time::sleep_until(clock.instant(at).into());
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = jobs.queue.ready() => {
                            if !jobs.queue.take(&mut batch) {
                                return;
                            }
                            for job in batch.drain(..) {
                                jobs.answer(job.reply, Err(lost.clone()));
                            }
                        }
                        () = &mut sleep => break,
                    }
                }
                reconnect.handle_timeout(clock.now());
                continue;
            }
        }
        let connected = match open(&slot).await {
            Ok(connected) => connected,
            Err(why) => {
                tracing::warn!(target = %slot.target, error = %why, "redis connect failed");
                last_error = format!("{why}; reconnecting in the background");
                reconnect.handle_failed(clock.now(), true);
                continue;
            }
        };
        let conn = RedisConnection::new(slot.redis.clone(), clock.now());
        let ended = match connected {
            Connected::Plain(s) => serve(&clock, s, conn, &mut queued, &jobs, &mut reconnect).await,
            Connected::Tls(s) => serve(&clock, s, conn, &mut queued, &jobs, &mut reconnect).await,
        };
        match ended {
            Ended::Dropped => return,
            Ended::Closed(e) => {
                last_error = format!("the connection to Redis at {} ended: {e}", slot.target);
                tracing::warn!(target = %slot.target, error = %e, "redis connection ended");
                reconnect.handle_failed(clock.now(), e.is_retryable());
            }
        }
    }
}

/// A connected socket, with TLS on it for `rediss://`.
pub(super) enum Connected {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Connects to the server (and runs the TLS handshake for `rediss://`) within the
/// operation timeout; why not, without secrets.
pub(super) async fn open(slot: &Slot) -> Result<Connected, String> {
    let work = async {
        let stream = TcpStream::connect(&slot.target)
            .await
            .map_err(|e| format!("cannot connect to Redis at {} ({e})", slot.target))?;
        let _ = stream.set_nodelay(true);
        match &slot.tls {
            None => Ok(Connected::Plain(stream)),
            Some(tls) => match tls.connect(&slot.host, stream).await {
                Ok(stream) => Ok(Connected::Tls(Box::new(stream))),
                Err(e) => Err(format!("cannot connect to Redis at {}: {e}", slot.target)),
            },
        }
    };
    tokio::time::timeout(slot.timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "connecting to Redis at {} took over {:?}",
                slot.target, slot.timeout
            ))
        })
}

enum Ended {
    /// The pool was dropped.
    Dropped,
    /// The connection closed.
    Closed(ConnectionError),
}

/// Writes `bytes` and flushes them out of the stream's own buffers.
pub(super) async fn write_flushed<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// The replies awaited on one connection, in the order their commands were sent
/// (which is the order replies come in: a connection answers in order).
#[derive(Default)]
struct Waiting(VecDeque<(RequestId, LocalReply)>);

impl Waiting {
    fn take(&mut self, id: RequestId) -> Option<LocalReply> {
        if self.0.front().is_some_and(|(first, _)| *first == id) {
            return self.0.pop_front().map(|(_, reply)| reply);
        }
        let at = self.0.iter().position(|(each, _)| *each == id)?;
        self.0.remove(at).map(|(_, reply)| reply)
    }
}

/// Serves jobs on one connection until it closes.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    clock: &Clock,
    mut stream: S,
    mut conn: RedisConnection,
    queued: &mut VecDeque<LocalJob>,
    jobs: &Jobs,
    reconnect: &mut Reconnect,
) -> Ended {
    let mut waiting = Waiting::default();
    // Replies that said "closed": answered with the reason once `Closed` says it.
    let mut orphans: Vec<(LocalReply, bool)> = Vec::new();
    let mut out = Vec::with_capacity(16 * 1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut open = true;
    let mut sleep = DeadlineSleep::new(*clock);
    let mut batch = Vec::new();
    let now = clock.now();
    for job in queued.drain(..) {
        send(now, &mut conn, &mut waiting, jobs, job);
    }
    loop {
        if !open && waiting.0.is_empty() && orphans.is_empty() {
            conn.close(clock.now());
        }
        out.clear();
        while conn.poll_transmit(&mut out).is_some() {}
        // Flushed too: a TLS stream may keep the tail of what it accepted.
        if !out.is_empty() && write_flushed(&mut stream, &out).await.is_err() {
            conn.handle_disconnect(clock.now());
        }
        while let Some(event) = conn.poll_event() {
            match event {
                Event::Ready { .. } => reconnect.handle_connected(clock.now()),
                Event::Reply { id, result } => {
                    let Some(reply) = waiting.take(id) else {
                        continue;
                    };
                    match result {
                        Err(CommandError::ConnectionClosed { sent }) => {
                            orphans.push((reply, sent));
                        }
                        Ok(value) => jobs.answer(reply, Ok(value)),
                        Err(e) => jobs.answer(reply, Err(PoolError::Command(e))),
                    }
                }
                Event::Closed(e) => {
                    for (reply, sent) in orphans.drain(..) {
                        let reason = format!(
                            "{e}; {}",
                            if sent {
                                "the command had been sent, so it may have run"
                            } else {
                                "the command was never sent"
                            }
                        );
                        jobs.answer(
                            reply,
                            Err(PoolError::Lost {
                                reason,
                                retryable: e.is_retryable() || !sent,
                            }),
                        );
                    }
                    return if open {
                        Ended::Closed(e)
                    } else {
                        Ended::Dropped
                    };
                }
                _ => {}
            }
        }
        // The timer moves only to an earlier deadline: each batch moves the
        // connection's deadline on (see `DeadlineSleep`). Early, it wakes once for
        // nothing.
        sleep.want(conn.poll_timeout());
        tokio::select! {
            () = jobs.queue.ready(), if open => {
                if jobs.queue.take(&mut batch) {
                    // One reading of the clock for the batch.
                    let now = clock.now();
                    for job in batch.drain(..) {
                        send(now, &mut conn, &mut waiting, jobs, job);
                    }
                } else {
                    // Closed: closes once the replies it waits for are in.
                    open = false;
                }
            }
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => conn.handle_disconnect(clock.now()),
                Ok(n) => conn.handle_input(clock.now(), &buf[..n]),
            },
            () = sleep.elapsed() => {
                conn.handle_timeout(clock.now());
            }
        }
    }
}

pub(super) async fn sleep_until(clock: &Clock, deadline: Option<Time>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(clock.instant(at).into()).await,
        None => std::future::pending().await,
    }
}

fn send(now: Time, conn: &mut RedisConnection, waiting: &mut Waiting, jobs: &Jobs, job: LocalJob) {
    let sent = match &job.command {
        Some(command) if !job.reply.is_cancelled() => conn.send(now, command),
        Some(_) => return jobs.drop_job(job),
        None => match job.reply.write(now, conn) {
            Some(sent) => sent,
            None => return jobs.drop_job(job),
        },
    };
    match sent {
        Ok(id) => waiting.0.push_back((id, job.reply)),
        Err(e) => jobs.answer(job.reply, Err(PoolError::Send(e))),
    }
}

#[cfg(test)]
mod tests {
    use std::task::Poll;

    use effectful::effect::GetCurrentTime;
    use effectful::{Cx, Engine, EngineConfig, Event as ProgramEvent, Output, Program};

    use super::*;

    /// One effect's place in a shard's table: what the connection told it.
    #[derive(Default)]
    struct Table {
        cancelled: Cell<bool>,
        answers: RefCell<Vec<Result<Value, PoolError>>>,
        forgotten: Cell<bool>,
    }

    impl Awaiting for Table {
        fn is_cancelled(&self, _id: EffectId) -> bool {
            self.cancelled.get()
        }

        fn answer(&self, _id: EffectId, reply: Result<Value, PoolError>) {
            self.answers.borrow_mut().push(reply);
        }

        fn forget(&self, _id: EffectId) {
            self.forgotten.set(true);
        }

        fn write(
            &self,
            _id: EffectId,
            _now: Time,
            _conn: &mut RedisConnection,
        ) -> Option<Result<RequestId, SendError>> {
            None
        }
    }

    /// Asks for one effect (only its id is used here).
    struct AskOnce;

    impl Program for AskOnce {
        type Output = ();
        fn resume(&mut self, cx: &mut Cx<'_>, _event: ProgramEvent) -> Poll<()> {
            cx.perform(GetCurrentTime {});
            Poll::Pending
        }
    }

    fn effect_id() -> EffectId {
        let mut engine: Engine<()> = Engine::new(EngineConfig::default());
        engine.spawn(Time::ZERO, AskOnce);
        loop {
            match engine.poll_output() {
                Some(Output::Request { id, .. }) => return id,
                Some(_) => {}
                None => panic!("the program asks for an effect"),
            }
        }
    }

    fn job(table: &Rc<Table>, key: &str) -> LocalJob {
        let table: Weak<dyn Awaiting> = Rc::downgrade(table) as Weak<dyn Awaiting>;
        LocalJob {
            command: Some(Command::new("GET").arg(key)),
            reply: LocalReply::Effect(EffectReply::new(table, effect_id())),
        }
    }

    #[test]
    fn an_effect_cancelled_while_queued_is_never_sent_and_one_in_flight_is_still_answered() {
        let clock = Clock::start();
        // RESP2, no password, name or database: no handshake before the commands.
        let mut config = RedisConfig::default();
        config.protocol = effectful::redis::Protocol::Resp2;
        let mut conn = RedisConnection::new(config, clock.now());
        let mut waiting = Waiting::default();
        let jobs = Jobs {
            queue: Taker::new(Rc::new(Queue::default())),
            in_flight: Arc::new(AtomicUsize::new(2)),
        };
        let (queued, in_flight) = (Rc::new(Table::default()), Rc::new(Table::default()));
        queued.cancelled.set(true);
        send(
            clock.now(),
            &mut conn,
            &mut waiting,
            &jobs,
            job(&queued, "dropped"),
        );
        send(
            clock.now(),
            &mut conn,
            &mut waiting,
            &jobs,
            job(&in_flight, "sent"),
        );
        let mut out = Vec::new();
        while conn.poll_transmit(&mut out).is_some() {}
        assert_eq!(
            out, b"*2\r\n$3\r\nGET\r\n$4\r\nsent\r\n",
            "only the live one is written"
        );
        assert!(queued.forgotten.get(), "the cancelled one leaves its table");
        assert!(queued.answers.borrow().is_empty());
        assert_eq!(jobs.in_flight.load(Ordering::Relaxed), 1);

        // Cancelled once written: its reply still comes (the engine drops it as stale).
        in_flight.cancelled.set(true);
        conn.handle_input(clock.now(), b"$1\r\nv\r\n");
        while let Some(event) = conn.poll_event() {
            if let Event::Reply { id, result } = event {
                let reply = waiting.take(id).expect("awaited");
                jobs.answer(reply, result.map_err(PoolError::Command));
            }
        }
        assert_eq!(
            *in_flight.answers.borrow(),
            [Ok(Value::Bulk(b"v".to_vec()))]
        );
        assert!(!in_flight.forgotten.get(), "answered, not forgotten");
        assert_eq!(jobs.in_flight.load(Ordering::Relaxed), 0);
    }

    /// A server that takes the connection and reads everything, answering nothing;
    /// `seen` hears once `want` bytes have come.
    async fn silent_server(want: usize, seen: oneshot::Sender<()>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let target = listener.local_addr().expect("its address").to_string();
        tokio::task::spawn_local(async move {
            let (mut socket, _) = listener.accept().await.expect("the pool connects");
            let (mut got, mut buf, mut seen) = (0, [0u8; 4096], Some(seen));
            while let Ok(n @ 1..) = socket.read(&mut buf).await {
                got += n;
                if got >= want {
                    seen.take().map(|s| s.send(()));
                }
            }
        });
        target
    }

    #[test]
    fn a_connection_task_that_is_aborted_answers_every_job_it_holds_once_retryably() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            let (seen, sent) = oneshot::channel();
            let wire = b"*2\r\n$3\r\nGET\r\n$4\r\nsent\r\n".len();
            let target = silent_server(2 * wire, seen).await;
            let mut redis = RedisConfig::default();
            redis.protocol = effectful::redis::Protocol::Resp2;
            // Long enough that no timeout can be what answers them.
            redis.operation_timeout = Some(Duration::from_secs(600));
            let slot = Arc::new(Slot {
                redis,
                tls: None,
                host: "127.0.0.1".to_owned(),
                target,
                timeout: Duration::from_secs(600),
                schedule: Reconnect::default_schedule(),
            });
            let queue = Rc::new(Queue::default());
            let counter = Arc::new(AtomicUsize::new(0));
            let share = LocalShare {
                slots: RefCell::new(vec![queue.clone()]),
                in_flight: vec![counter.clone()],
                last: Cell::new(0),
            };
            let jobs = Jobs {
                queue: Taker::new(queue),
                in_flight: counter.clone(),
            };
            let task = tokio::task::spawn_local(run_slot(slot, jobs, Rng::from_seed(1)));

            // Every kind of job: an effect's and a closure's, both written and
            // waiting for replies that never come...
            let (effect, called) = (Rc::new(Table::default()), Rc::new(RefCell::new(Vec::new())));
            let call = |key: &str| {
                let called = called.clone();
                LocalJob {
                    command: Some(Command::new("GET").arg(key)),
                    reply: LocalReply::Call(CallReply {
                        cancelled: None,
                        reply: Some(Box::new(move |r| called.borrow_mut().push(r))),
                    }),
                }
            };
            share.submit([job(&effect, "sent"), call("sent")]);
            sent.await.expect("both commands reached the server");
            // ...and one of each still queued when the task ends.
            let queued = Rc::new(Table::default());
            share.submit([job(&queued, "left"), call("left")]);
            task.abort();
            assert!(task.await.is_err_and(|e| e.is_cancelled()));

            let lost = |answers: &[Result<Value, PoolError>]| {
                assert_eq!(answers.len(), 1, "answered once: {answers:?}");
                let error = answers[0].clone().expect_err("no reply came");
                let error = error.effect_error("Cache.GetCachedValue");
                assert_eq!(error.kind, ErrorKind::ConnectionLost, "{error:?}");
                assert!(error.retryable, "{error:?}");
            };
            lost(&effect.answers.borrow());
            lost(&queued.answers.borrow());
            assert!(!effect.forgotten.get() && !queued.forgotten.get());
            assert_eq!(called.borrow().len(), 2, "each closure once");
            for answer in called.borrow().iter() {
                lost(std::slice::from_ref(answer));
            }
            assert_eq!(counter.load(Ordering::Relaxed), 0, "nothing in flight");

            // Work that comes after the task ended is answered at once, not held.
            let later = Rc::new(Table::default());
            share.submit([job(&later, "later")]);
            lost(&later.answers.borrow());
            assert_eq!(counter.load(Ordering::Relaxed), 0);
        });
    }
}
