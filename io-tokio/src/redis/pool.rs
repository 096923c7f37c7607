//! The per-process pool: at most `max_connections` pipelined connections, each a task
//! on the pool's own IO thread that owns its socket and its [`RedisConnection`].
//!
//! A `rediss://` URL puts TLS under every connection from the first byte, through
//! [`TlsClient`]: the server's certificate must chain to a root and name the URL's
//! host. The roots are the bundled Mozilla roots, or the PEM file of
//! [`RedisTls::ca_file`]; skipping the check takes [`RedisTls::insecure_skip_verify`].
//! [`PoolConfig::from_url`] reads both from the URL's query under redis-py's names,
//! `ssl_ca_certs=/path/ca.pem` and `ssl_cert_reqs=none` (so `REDIS_URL` can say them).

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use effectful::redis::{
    Command, CommandError, ConnectionError, Event, Reconnect, ReconnectAction, RedisConfig,
    RedisConnection, RedisUrl, RequestId, SendError, Value,
};
use effectful::{EffectError, ErrorKind, Rng, Schedule, Time};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

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

impl Job {
    fn is_cancelled(&self) -> bool {
        self.cancelled
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// A per-process pool of pipelined Redis connections, shared by every shard (cheap
/// to clone). Its connections run on one IO thread of its own, which ends when the
/// last clone is dropped.
#[derive(Clone)]
pub struct RedisPool {
    inner: Arc<Inner>,
}

/// What a connection's task is handed: one job, or a batch to write at once.
enum Work {
    One(Job),
    Many(Vec<Job>),
}

struct Inner {
    slots: Vec<mpsc::UnboundedSender<Work>>,
    /// How connections are made, for connections of the pool's users' own
    /// ([`subscribe`](RedisPool::subscribe)).
    slot: Arc<Slot>,
    /// The pool's IO thread, which runs those too.
    io: tokio::runtime::Handle,
    /// Commands handed to each connection and not answered (or dropped) yet.
    in_flight: Vec<Arc<AtomicUsize>>,
    next: AtomicUsize,
    target: String,
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
            .field("max_connections", &self.inner.slots.len())
            .finish()
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
        let n = config.max_connections.max(1);
        let target = format!("{}:{}", config.url.host(), config.url.port());
        let mut redis = config.url.config();
        redis.operation_timeout = Some(config.operation_timeout);
        redis.client_name = Some("effectful".to_owned());
        let seed = crate::entropy::seed().unwrap_or(0x5eed);
        let shared = Arc::new(Slot {
            redis,
            tls,
            host: config.url.host().to_owned(),
            target: target.clone(),
            timeout: config.operation_timeout,
            schedule: config.reconnect,
        });
        let mut slots = Vec::with_capacity(n);
        let mut receivers = Vec::with_capacity(n);
        let in_flight: Vec<Arc<AtomicUsize>> = (0..n).map(|_| Arc::default()).collect();
        for counter in &in_flight {
            let (tx, rx) = mpsc::unbounded_channel();
            slots.push(tx);
            receivers.push((rx, counter.clone()));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let io = runtime.handle().clone();
        let slot = shared.clone();
        std::thread::Builder::new()
            .name("effectful-redis".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let tasks: Vec<_> = receivers
                        .into_iter()
                        .enumerate()
                        .map(|(i, (rx, counter))| {
                            let rng = Rng::from_seed(seed.wrapping_add(i as u64));
                            let jobs = Jobs {
                                rx,
                                in_flight: counter,
                            };
                            tokio::spawn(run_slot(shared.clone(), jobs, rng))
                        })
                        .collect();
                    for task in tasks {
                        let _ = task.await;
                    }
                });
            })?;
        Ok(RedisPool {
            inner: Arc::new(Inner {
                in_flight,
                slots,
                slot,
                io,
                next: AtomicUsize::new(0),
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
        let seed = crate::entropy::seed().unwrap_or(0x5eed);
        let task = self.inner.io.spawn(super::subscriber::run(
            slot,
            channel,
            client_name,
            Rng::from_seed(seed),
            on,
        ));
        Subscriber(task.abort_handle())
    }

    /// How many connections it may open.
    pub fn max_connections(&self) -> usize {
        self.inner.slots.len()
    }

    /// The pool's figures now.
    pub fn status(&self) -> RedisPoolStatus {
        let counts = self
            .inner
            .in_flight
            .iter()
            .map(|n| n.load(Ordering::Relaxed));
        let (busy, in_flight) = counts.fold((0, 0), |(busy, all), n| {
            (busy + usize::from(n > 0), all + n)
        });
        let max_connections = self.inner.slots.len();
        RedisPoolStatus {
            max_connections,
            busy,
            in_flight,
            utilisation: busy as f64 / max_connections.max(1) as f64,
        }
    }

    /// Hands `job` to a connection (round robin).
    pub fn submit(&self, job: Job) {
        self.hand(1, Work::One(job));
    }

    /// Hands `jobs` to one connection (the next, round robin), which writes them
    /// pipelined, in one write when it can.
    pub fn submit_all(&self, mut jobs: Vec<Job>) {
        match jobs.len() {
            0 => {}
            1 => self.submit(jobs.remove(0)),
            n => self.hand(n, Work::Many(jobs)),
        }
    }

    fn hand(&self, n: usize, work: Work) {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.slots.len();
        // Counted in here, counted out by the connection just before each reply.
        self.inner.in_flight[i].fetch_add(n, Ordering::Relaxed);
        if let Err(mpsc::error::SendError(work)) = self.inner.slots[i].send(work) {
            self.inner.in_flight[i].fetch_sub(n, Ordering::Relaxed);
            let lost = PoolError::Lost {
                reason: "the Redis pool's thread has stopped".to_owned(),
                retryable: false,
            };
            work.for_each(|job| (job.reply)(Err(lost.clone())));
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
}

impl Work {
    fn for_each(self, mut f: impl FnMut(Job)) {
        match self {
            Work::One(job) => f(job),
            Work::Many(jobs) => jobs.into_iter().for_each(f),
        }
    }
}

/// A connection's queue, and its count of commands handed to it and not answered.
struct Jobs {
    rx: mpsc::UnboundedReceiver<Work>,
    in_flight: Arc<AtomicUsize>,
}

impl Jobs {
    /// Answers `job`, counting it out first (so whoever it wakes sees it answered).
    fn answer(&self, reply: OnReply, result: Result<Value, PoolError>) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        reply(result);
    }

    /// Drops `job` unanswered (cancelled before it was sent).
    fn drop_job(&self, job: Job) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        drop(job);
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

/// The pool's own clock: only differences matter to a connection.
pub(super) struct Clock(pub(super) Instant);

impl Clock {
    pub(super) fn now(&self) -> Time {
        Time::from_nanos(u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    pub(super) fn instant(&self, t: Time) -> tokio::time::Instant {
        (self.0 + t.since_epoch()).into()
    }
}

/// One connection of the pool, for as long as the pool lives: connects when a job
/// comes, serves it pipelined, reconnects with backoff after a failure (answering
/// jobs that come meanwhile at once with a retryable error).
async fn run_slot(slot: Arc<Slot>, mut jobs: Jobs, rng: Rng) {
    let clock = Clock(Instant::now());
    let mut reconnect = Reconnect::new(clock.now(), slot.schedule.clone(), rng);
    let mut queued: VecDeque<Job> = VecDeque::new();
    let mut last_error = String::new();
    // Nothing to do until the first job.
    match jobs.rx.recv().await {
        Some(work) => work.for_each(|job| queued.push_back(job)),
        None => return,
    }
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
                while let Some(work) = jobs.rx.recv().await {
                    work.for_each(|job| jobs.answer(job.reply, Err(lost.clone())));
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
                let sleep = tokio::time::sleep_until(clock.instant(at));
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        work = jobs.rx.recv() => match work {
                            Some(work) => {
                                work.for_each(|job| jobs.answer(job.reply, Err(lost.clone())));
                            }
                            None => return,
                        },
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
            Connected::Plain(s) => {
                serve(&clock, s, conn, &mut queued, &mut jobs, &mut reconnect).await
            }
            Connected::Tls(s) => {
                serve(&clock, s, conn, &mut queued, &mut jobs, &mut reconnect).await
            }
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
struct Waiting(VecDeque<(RequestId, OnReply)>);

impl Waiting {
    fn take(&mut self, id: RequestId) -> Option<OnReply> {
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
    queued: &mut VecDeque<Job>,
    jobs: &mut Jobs,
    reconnect: &mut Reconnect,
) -> Ended {
    let mut waiting = Waiting::default();
    // Replies that said "closed": answered with the reason once `Closed` says it.
    let mut orphans: Vec<(OnReply, bool)> = Vec::new();
    let mut out = Vec::with_capacity(16 * 1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut open = true;
    for job in queued.drain(..) {
        send(clock, &mut conn, &mut waiting, jobs, job);
    }
    loop {
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
        let deadline = conn.poll_timeout();
        tokio::select! {
            work = jobs.rx.recv(), if open => match work {
                Some(work) => {
                    work.for_each(|job| send(clock, &mut conn, &mut waiting, jobs, job));
                    // Take what else is queued now, so it goes in one write.
                    while let Ok(work) = jobs.rx.try_recv() {
                        work.for_each(|job| send(clock, &mut conn, &mut waiting, jobs, job));
                    }
                }
                None => {
                    open = false;
                    conn.close(clock.now());
                }
            },
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => conn.handle_disconnect(clock.now()),
                Ok(n) => conn.handle_input(clock.now(), &buf[..n]),
            },
            () = sleep_until(clock, deadline) => conn.handle_timeout(clock.now()),
        }
    }
}

pub(super) async fn sleep_until(clock: &Clock, deadline: Option<Time>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(clock.instant(at)).await,
        None => std::future::pending().await,
    }
}

fn send(clock: &Clock, conn: &mut RedisConnection, waiting: &mut Waiting, jobs: &Jobs, job: Job) {
    if job.is_cancelled() {
        return jobs.drop_job(job);
    }
    match conn.send(clock.now(), &job.command) {
        Ok(id) => waiting.0.push_back((id, job.reply)),
        Err(e) => jobs.answer(job.reply, Err(PoolError::Send(e))),
    }
}
