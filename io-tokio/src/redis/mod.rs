//! Redis on tokio (cargo feature `redis`): the Cache family served by a real Redis
//! through the core's sans-IO [`CacheAdapter`] and a per-process [`RedisPool`], the
//! Messaging family on Redis Streams, and the Auth family (HS256 tokens with sessions and revocations in Redis, Argon2id
//! passwords; see the `auth` section below).
//!
//! # Shape
//! One [`RedisBackend`] per process holds the pool (at most `REDIS_MAX_CONNECTIONS`
//! pipelined connections for the whole process, default 10) and the adapter. The
//! pool is split among the shards: shard `i` of `n` runs at most `max / n`
//! connections (the first `max % n` shards one more, each at least one) as tasks on
//! its own thread. [`RedisBackend::register`] gives every shard a
//! [`RedisInterpreter`] on the shard's own connections: each effect becomes one
//! command (a Cache read: one `GET`, written straight into the connection's bytes
//! when the connection takes it, with no command built), the commands of one engine drain go to one of
//! the shard's connections together (round robin), in one write, and each reply is
//! answered on the shard's thread through its `LocalReplier`: no Cache, Auth or
//! own-command effect crosses a thread. Work from other threads (`ping` for health,
//! the Messaging consumers' thread) goes to the shards in turn, or, before any shard
//! runs, to the pool's IO thread, whose connections close once a shard starts.
//! [`RedisPool::shutdown`] closes every shard's connections.
//!
//! # Failures
//! - A command not answered within the operation timeout (default 5 s) fails its
//!   effect with a retryable `Timeout`; the connection stays usable.
//! - A lost connection fails the effects waiting on it with a retryable
//!   `ConnectionLost`; the connection reconnects with backoff (100 ms doubling to
//!   5 s, jittered), and while it waits, effects sent to it fail at once, retryably.
//! - A handshake the server refuses (a wrong password) is not retried: effects fail
//!   with a non-retryable `ConnectionLost` saying why. The password is never shown.
//! - `rediss://`: TLS from the first byte, the certificate checked against the
//!   bundled roots or `ssl_ca_certs` ([`PoolConfig::from_url`]); a refused
//!   certificate fails effects with a retryable `ConnectionLost` that says why
//!   (for example `UnknownIssuer`), and the pool keeps trying with backoff.
//!
//! # Auth
//! With a [`JwtSecret`] ([`RedisBackend::with_auth`]), the backend also serves Auth:
//! tokens are HS256 JWTs whose expiry is judged at the effect's time from the
//! runtime's clock (not the JWT crate's clock or leeway), so the fake and Redis agree;
//! revocations (`SET NX`) and sessions are Redis keys under the prefix; revocations
//! are remembered a day past the token's expiry. Password hashing and verification
//! (Argon2id) run on the CPU pool. `GetUserByEmail` is the database's: it fails with
//! a non-retryable `Unavailable` error saying so. The key never appears in `Debug`,
//! errors or logs.
//!
//! # Messaging
//! With a [`MessagingAdapter`] ([`RedisBackend::with_messaging`]), the backend also
//! serves Messaging on Redis Streams: publishes, acknowledgements and negative
//! acknowledgements are one pooled script each, on the shard's own connections;
//! waiting consumers hold no connection (they park on one thread per process, which
//! reads for them without `BLOCK` through the shards' connections, and answers
//! through each shard's [`Replier`], see `effectful::redis::Consumers`), and do not
//! poll: one pub/sub connection per process (outside the pool, on the pool's IO
//! thread, named `effectful-wake:{prefix}` in `CLIENT LIST`) listens on the
//! adapter's wake channel, where every process's publishes and negative
//! acknowledgements announce themselves; a message answered to a consumer whose
//! effect was cancelled meanwhile goes back to its group at once.
//!
//! # Commands of one's own
//! `Cache.RedisCommand` sends the program's own command through the pool as it is
//! and answers its reply as a `CommandReply` (an error reply is a value, except
//! those a retry may mend).
//!
//! # Cancellation
//! An effect cancelled before its command was written (it waited for its connection
//! to be made) is never sent; one already sent completes and its answer is dropped
//! by the engine as stale.
//!
//! ```no_run
//! use effectful::redis::RedisUrl;
//! use effectful_tokio::Runtime;
//! use effectful_tokio::redis::{PoolConfig, RedisBackend};
//!
//! let url = RedisUrl::parse("redis://127.0.0.1:6379/0").expect("a URL");
//! let backend = RedisBackend::start(PoolConfig::new(url), "myapp:").expect("a pool");
//! let runtime = backend.register(Runtime::builder()).build().expect("a runtime");
//! # drop(runtime);
//! ```

mod auth;
mod messaging;
mod pool;
mod subscriber;

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use effectful::effect::{
    AuthRequest, AuthResponse, MessagingRequest, MessagingResponse, Request, Response,
};
use effectful::redis::{
    CacheAdapter, CachePending, CacheStep, Command, MessagingAdapter, MessagingPlan,
    RedisConnection, RequestId, SendError,
};
use effectful::{EffectError, EffectId, Family, Std, Time, Timestamp};
use rustc_hash::FxHashMap;

pub use auth::JwtSecret;

pub use pool::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_OPERATION_TIMEOUT, Job, OnReply, PoolConfig, PoolError,
    RedisPool, RedisPoolStatus, RedisTls,
};

use crate::interpreter::{
    Interpreter, LocalReplier, Replier, ShardContext, ShardCx, SplitStd, misrouted,
};
use crate::runtime::RuntimeBuilder;
use pool::{Awaiting, EffectReply, LocalJob, LocalReply, ShardShare};

/// The families a [`RedisBackend`] serves (Auth only with a [`JwtSecret`], Messaging
/// only with [`RedisBackend::with_messaging`]).
pub const REDIS_FAMILIES: [&str; 3] = ["Cache", "Auth", "Messaging"];

/// One Redis backend for the whole process (cheap to clone).
#[derive(Clone, Debug)]
pub struct RedisBackend {
    pool: RedisPool,
    cache: Arc<CacheAdapter>,
    tokens: Option<auth::SharedTokens>,
    messaging: Option<messaging::ConsumerHub>,
    /// Numbers each interpreter, so waiting consumers of different shards differ.
    interpreters: Arc<AtomicU64>,
    /// The wall-clock instant of the runtime clock's epoch, set by the first shard.
    wall_epoch: Arc<OnceLock<Timestamp>>,
}

impl RedisBackend {
    /// Starts the pool; Cache keys go under `prefix`.
    pub fn start(config: PoolConfig, prefix: impl Into<String>) -> std::io::Result<RedisBackend> {
        Ok(RedisBackend::with_pool(
            RedisPool::start(config)?,
            CacheAdapter::new(prefix),
        ))
    }

    /// A backend on a pool already started, with `cache` as its adapter.
    pub fn with_pool(pool: RedisPool, cache: CacheAdapter) -> RedisBackend {
        RedisBackend {
            pool,
            cache: Arc::new(cache),
            tokens: None,
            messaging: None,
            interpreters: Arc::new(AtomicU64::new(0)),
            wall_epoch: Arc::new(OnceLock::new()),
        }
    }

    /// The same backend serving the Auth family too, signing tokens with `secret`.
    pub fn with_auth(mut self, secret: JwtSecret) -> RedisBackend {
        let prefix = self.cache.prefix().to_owned();
        self.tokens = Some(Arc::new(auth::TokenService::new(secret, prefix)));
        self
    }

    /// The same backend serving the Messaging family on Redis Streams through
    /// `adapter` (its keys under the adapter's own prefix); starts the thread where
    /// waiting consumers park.
    pub fn with_messaging(mut self, adapter: MessagingAdapter) -> std::io::Result<RedisBackend> {
        self.messaging = Some(messaging::ConsumerHub::start(self.pool.clone(), adapter)?);
        Ok(self)
    }

    /// How many reads the process's waiting consumers have sent so far (`None`
    /// without Messaging): they read when woken by a publish or a negative
    /// acknowledgement, or when a delay or an ack timeout comes due, never on a tick.
    pub fn messaging_reads(&self) -> Option<u64> {
        self.messaging.as_ref().map(messaging::ConsumerHub::reads)
    }

    /// The Messaging adapter, if the backend serves Messaging.
    pub fn messaging(&self) -> Option<&MessagingAdapter> {
        self.messaging.as_ref().map(|hub| &**hub.adapter())
    }

    /// From the server settings: `REDIS_URL` (required here; `rediss://` with its
    /// TLS settings, see [`PoolConfig::from_url`]) and
    /// `REDIS_MAX_CONNECTIONS`; keys under `prefix`.
    #[cfg(feature = "server")]
    pub fn from_settings(
        settings: &crate::server::Settings,
        prefix: impl Into<String>,
    ) -> std::io::Result<RedisBackend> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        let url = settings
            .redis_url
            .as_ref()
            .ok_or_else(|| invalid("REDIS_URL is not set".to_owned()))?;
        let mut config =
            PoolConfig::from_url(url.expose()).map_err(|e| invalid(format!("REDIS_URL: {e}")))?;
        config.max_connections = usize::try_from(settings.redis_max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS)
            .max(1);
        let backend = RedisBackend::start(config, prefix)?;
        Ok(match &settings.jwt_secret {
            Some(secret) => match JwtSecret::new(secret.expose().as_bytes()) {
                Some(secret) => backend.with_auth(secret),
                None => return Err(invalid("JWT_SECRET is shorter than 32 bytes".to_owned())),
            },
            None => backend,
        })
    }

    /// The pool (to send your own commands, or to `PING` for health).
    pub fn pool(&self) -> &RedisPool {
        &self.pool
    }

    /// The Cache adapter (its key prefix).
    pub fn cache(&self) -> &CacheAdapter {
        &self.cache
    }

    /// Registers the interpreter of every family it serves: Cache, Auth when it has
    /// a [`JwtSecret`], Messaging when it has a [`MessagingAdapter`].
    pub fn register<F: SplitStd>(&self, mut builder: RuntimeBuilder<F>) -> RuntimeBuilder<F>
    where
        F::Response: Send,
    {
        let served = [true, self.tokens.is_some(), self.messaging.is_some()];
        let families = REDIS_FAMILIES
            .iter()
            .zip(served)
            .filter_map(|(family, on)| on.then_some(family));
        for &family in families {
            let backend = self.clone();
            builder = builder.interpreter(family, move |shard| backend.interpreter(shard));
        }
        builder
    }

    /// One shard's interpreter.
    pub fn interpreter<F: SplitStd>(&self, shard: &ShardContext<F>) -> RedisInterpreter<F>
    where
        F::Response: Send,
    {
        let wall_epoch = *self.wall_epoch.get_or_init(|| {
            let since = shard.clock().now().since_epoch();
            let since = i64::try_from(since.as_micros()).unwrap_or(i64::MAX);
            Timestamp::from_unix_micros(
                crate::entropy::wall_clock()
                    .unix_micros()
                    .saturating_sub(since),
            )
        });
        RedisInterpreter {
            backend: self.clone(),
            awaited: Awaited::new(
                self.cache.clone(),
                shard.local_replier(),
                self.pool.shard_share(shard.shard(), shard.shards()),
            ),
            replier: shard.replier(),
            tasks: FxHashMap::default(),
            instance: self.interpreters.fetch_add(1, Ordering::Relaxed),
            consuming: FxHashMap::default(),
            prune_at: 64,
            wall_epoch,
        }
    }

    /// `PING`: `Ok` if the server answers `PONG` within the operation timeout.
    pub async fn ping(&self) -> Result<(), String> {
        match self.pool.call(Command::new("PING")).await {
            Ok(v) if v.as_str() == Some("PONG") => Ok(()),
            Ok(v) => Err(format!("Redis answered PING with {v:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// `/health`'s Redis check: `PING` through the pool, named `redis`. Its error says
/// why (unreachable, timed out) and never holds the password.
#[cfg(feature = "server")]
#[derive(Clone, Debug)]
pub struct RedisHealth {
    backend: RedisBackend,
}

#[cfg(feature = "server")]
impl RedisBackend {
    /// The `/health` check of this backend's server.
    pub fn health_check(&self) -> RedisHealth {
        RedisHealth {
            backend: self.clone(),
        }
    }
}

#[cfg(feature = "server")]
impl crate::server::HealthCheck for RedisHealth {
    fn name(&self) -> &str {
        "redis"
    }

    fn check(&self) -> crate::server::CheckFuture<'_> {
        Box::pin(self.backend.ping())
    }
}

/// Serves the Cache, Auth and Messaging families on one shard from a [`RedisBackend`].
pub struct RedisInterpreter<F: Family = Std> {
    backend: RedisBackend,
    /// The effects whose commands are on the shard's own connections.
    awaited: Rc<Awaited<F>>,
    /// Answers from other threads (waiting consumers).
    replier: Replier<F>,
    /// Auth work in flight (tasks, CPU-pool jobs), aborted on cancellation.
    tasks: FxHashMap<EffectId, Cancel>,
    /// Drop the finished of `tasks` when it grows to this.
    prune_at: usize,
    /// This interpreter's number among the backend's.
    instance: u64,
    /// Consumers waiting (or answered, not yet ended) through this interpreter.
    consuming: FxHashMap<EffectId, ()>,
    wall_epoch: Timestamp,
}

/// The shard's effects whose commands are on their way, by id, and what each reply
/// is read as. Their commands carry only the id ([`EffectReply`]): no closure, no
/// cancel flag and no clone of the adapter per command.
struct Awaited<F: Family> {
    /// Itself, for the commands it hands to the connections.
    me: Weak<Awaited<F>>,
    cache: Arc<CacheAdapter>,
    /// Answers on the shard's own thread.
    replier: LocalReplier<F>,
    /// The shard's own connections.
    share: Rc<ShardShare>,
    entries: RefCell<FxHashMap<EffectId, Entry<F>>>,
    /// How many entries are cancelled: while none is, the usual case, a command is
    /// sent without looking its effect up.
    cancelled: Cell<usize>,
}

struct Entry<F: Family> {
    read: Read<F>,
    /// Cancelled: not sent if it has not been yet (if it has, its answer is stale).
    cancelled: bool,
}

/// What an effect's reply is read as.
enum Read<F: Family> {
    /// A Cache effect's, by the adapter, a hit's time to live judged at `now` (the
    /// effect's time on the wall clock).
    Cache {
        pending: CachePending,
        now: Timestamp,
    },
    /// Any other's, by its own function.
    Other(ReadReply<F>),
}

type ReadReply<F> = Box<
    dyn FnOnce(
        Result<effectful::redis::Value, PoolError>,
    ) -> Result<<F as Family>::Response, EffectError>,
>;

impl<F: SplitStd> Awaited<F>
where
    F::Response: Send,
{
    fn new(cache: Arc<CacheAdapter>, replier: LocalReplier<F>, share: Rc<ShardShare>) -> Rc<Self> {
        Rc::new_cyclic(|me| Awaited {
            me: me.clone(),
            cache,
            replier,
            share,
            entries: RefCell::new(FxHashMap::default()),
            cancelled: Cell::new(0),
        })
    }

    /// Sends `command` for the effect `id` (never, if it is cancelled before it is
    /// written; `None`: a Cache read, whose `GET` [`Awaiting::write`] writes when
    /// its connection takes it); its reply is read as `read` says.
    fn send(&self, id: EffectId, command: Option<Command>, read: Read<F>) {
        let entry = Entry {
            read,
            cancelled: false,
        };
        self.entries.borrow_mut().insert(id, entry);
        let table: Weak<dyn Awaiting> = self.me.clone();
        let job = LocalJob {
            command,
            reply: LocalReply::Effect(EffectReply::new(table, id)),
        };
        self.share.share.submit_in_drain(job);
    }

    fn cancel(&self, id: EffectId) {
        if let Some(entry) = self.entries.borrow_mut().get_mut(&id) {
            if !entry.cancelled {
                entry.cancelled = true;
                self.cancelled.set(self.cancelled.get() + 1);
            }
        }
    }

    fn remove(&self, id: EffectId) -> Option<Entry<F>> {
        let entry = self.entries.borrow_mut().remove(&id)?;
        if entry.cancelled {
            self.cancelled.set(self.cancelled.get() - 1);
        }
        Some(entry)
    }
}

impl<F: SplitStd> Awaiting for Awaited<F>
where
    F::Response: Send,
{
    fn is_cancelled(&self, id: EffectId) -> bool {
        self.cancelled.get() > 0 && self.entries.borrow().get(&id).is_some_and(|e| e.cancelled)
    }

    fn answer(&self, id: EffectId, reply: Result<effectful::redis::Value, PoolError>) {
        let Some(entry) = self.remove(id) else {
            return;
        };
        let (pending, now) = match entry.read {
            Read::Other(read) => {
                self.replier.answer(id, read(reply));
                return;
            }
            Read::Cache { pending, now } => (pending, now),
        };
        let reply = match reply {
            Ok(value) => Ok(value),
            Err(PoolError::Command(e)) => Err(e),
            Err(e) => {
                self.replier
                    .answer(id, Err(e.effect_error(pending.effect())));
                return;
            }
        };
        match self.cache.response(pending, reply, now) {
            CacheStep::Answer(answer) => {
                let answer = answer.map(|r| F::embed_response(Response::Cache(r)));
                self.replier.answer(id, answer);
            }
            // A read that found nothing asks why, for the same effect (not sent
            // if it was cancelled meanwhile).
            CacheStep::Send(command, pending) => {
                let cancelled = entry.cancelled;
                self.send(id, Some(command), Read::Cache { pending, now });
                if cancelled {
                    self.cancel(id);
                }
            }
        }
    }

    fn forget(&self, id: EffectId) {
        self.remove(id);
    }

    fn write(
        &self,
        id: EffectId,
        now: Time,
        conn: &mut RedisConnection,
    ) -> Option<Result<RequestId, SendError>> {
        let entries = self.entries.borrow();
        let entry = entries.get(&id).filter(|entry| !entry.cancelled)?;
        Some(match &entry.read {
            Read::Cache { pending, .. } => self.cache.send_read(pending, now, conn),
            Read::Other(_) => Err(SendError::Unsupported {
                command: "an effect planned without a command",
            }),
        })
    }
}

enum Cancel {
    Task(tokio::task::AbortHandle),
    Offloaded(crate::Offloaded),
}

impl<F: SplitStd> RedisInterpreter<F>
where
    F::Response: Send,
{
    fn prune(&mut self) {
        if self.tasks.len() >= self.prune_at {
            self.tasks.retain(|_, c| match c {
                Cancel::Task(t) => !t.is_finished(),
                Cancel::Offloaded(_) => true,
            });
            self.prune_at = (self.tasks.len() * 2).max(64);
        }
    }

    fn perform_auth(&mut self, cx: &mut ShardCx<'_, F>, id: EffectId, request: AuthRequest) {
        let effect = request.name();
        let embed = |r: AuthResponse| F::embed_response(Response::Auth(r));
        match request {
            AuthRequest::HashPassword(r) => {
                let job = cx.offload(id, effect, move || {
                    auth::hash_password(&r.password)
                        .map(|h| embed(AuthResponse::HashPassword(h)))
                        .map_err(|e| {
                            EffectError::new(effect, effectful::ErrorKind::Protocol, e)
                                .with_retryable(false)
                        })
                });
                self.tasks.insert(id, Cancel::Offloaded(job));
            }
            AuthRequest::ValidatePassword(r) => {
                let job = cx.offload(id, effect, move || {
                    let ok = auth::password_matches(&r.password, &r.password_hash);
                    Ok(embed(AuthResponse::ValidatePassword(ok)))
                });
                self.tasks.insert(id, Cancel::Offloaded(job));
            }
            AuthRequest::GetUserByEmail(_) => {
                cx.answer(id, Err(auth::user_lookup_unserved(effect)));
            }
            request => {
                let Some(tokens) = self.backend.tokens.clone() else {
                    let e = EffectError::new(
                        effect,
                        effectful::ErrorKind::Unavailable,
                        "the Redis backend has no JWT_SECRET, so it does not serve tokens",
                    )
                    .with_retryable(false);
                    return cx.answer(id, Err(e));
                };
                let now = self.wall_epoch.saturating_add(cx.now().since_epoch());
                let (pool, replier) = (self.backend.pool.clone(), self.replier.clone());
                let task = tokio::task::spawn_local(async move {
                    let answer = tokens.handle(&pool, now, request).await;
                    replier.answer(id, answer.map(embed));
                });
                self.tasks.insert(id, Cancel::Task(task.abort_handle()));
            }
        }
    }
}

impl<F: SplitStd> RedisInterpreter<F>
where
    F::Response: Send,
{
    fn perform_messaging(
        &mut self,
        cx: &mut ShardCx<'_, F>,
        id: EffectId,
        request: MessagingRequest,
    ) {
        let embed = |r: MessagingResponse| F::embed_response(Response::Messaging(r));
        let Some(hub) = self.backend.messaging.clone() else {
            let e = EffectError::new(
                request.name(),
                effectful::ErrorKind::Unavailable,
                "the Redis backend was not started with Messaging",
            )
            .with_retryable(false);
            return cx.answer(id, Err(e));
        };
        if let MessagingRequest::ConsumeMessage(request) = request {
            self.consuming.insert(id, ());
            let replier = self.replier.clone();
            let answer: messaging::AnswerFn = Box::new(move |outcome| {
                replier.answer(
                    id,
                    outcome.map(|o| embed(MessagingResponse::ConsumeMessage(o))),
                );
            });
            return hub.consume((self.instance, id), request, answer);
        }
        // A publish or a negative acknowledgement may wake consumers of its topic.
        let topic = match &request {
            MessagingRequest::PublishMessage(r) => Some(r.topic.clone()),
            MessagingRequest::NegativeAcknowledge(r) => messaging::topic_of_delivery(&r.message_id),
            _ => None,
        };
        let adapter = hub.adapter().clone();
        let (command, pending) = match adapter.plan(&request) {
            Ok(MessagingPlan::Send(command, pending)) => (command, pending),
            Ok(MessagingPlan::Answered(response)) => return cx.answer(id, Ok(embed(response))),
            Err(e) => return cx.answer(id, Err(e)),
        };
        self.submit(id, command, move |reply| {
            let effect = pending.effect();
            let answer = match reply {
                Ok(value) => adapter.response(pending, Ok(value)),
                Err(PoolError::Command(e)) => adapter.response(pending, Err(e)),
                Err(e) => Err(e.effect_error(effect)),
            };
            if let Ok(response) = &answer {
                hub.after(response, topic);
            }
            answer.map(embed)
        });
    }

    /// Sends `command` for the effect `id` (never, if it is cancelled before it is
    /// written) and answers it with what `answer` makes of the reply.
    fn submit(
        &mut self,
        id: EffectId,
        command: Command,
        answer: impl FnOnce(
            Result<effectful::redis::Value, PoolError>,
        ) -> Result<F::Response, EffectError>
        + 'static,
    ) {
        self.awaited
            .send(id, Some(command), Read::Other(Box::new(answer)));
    }
}

impl<F: SplitStd> Interpreter<F> for RedisInterpreter<F>
where
    F::Response: Send,
{
    fn perform(&mut self, cx: &mut ShardCx<'_, F>, id: EffectId, request: F::Request) {
        self.prune();
        let request = match F::split_request(request) {
            Ok(Request::Cache(request)) => request,
            Ok(Request::Auth(request)) => return self.perform_auth(cx, id, request),
            Ok(Request::Messaging(request)) => return self.perform_messaging(cx, id, request),
            Ok(other) => {
                return cx.answer(id, Err(misrouted::<F>("Redis", &F::embed_request(other))));
            }
            Err(own) => return cx.answer(id, Err(misrouted::<F>("Redis", &own))),
        };
        let (command, pending) = match self.backend.cache.plan(request) {
            Ok(planned) => planned,
            Err(e) => return cx.answer(id, Err(e)),
        };
        let now = self.wall_epoch.saturating_add(cx.now().since_epoch());
        self.awaited.send(id, command, Read::Cache { pending, now });
    }

    fn program_finished(&mut self, _cx: &mut ShardCx<'_, F>, program: effectful::ProgramId) {
        if let Some(hub) = &self.backend.messaging {
            let before = self.consuming.len();
            self.consuming.retain(|id, _| id.program() != program);
            if self.consuming.len() != before {
                hub.program_ended(self.instance, program);
            }
        }
        if !self.tasks.is_empty() {
            self.tasks.retain(|id, _| id.program() != program);
        }
    }

    fn cancel(&mut self, _cx: &mut ShardCx<'_, F>, id: EffectId) {
        if let (Some(hub), Some(())) = (&self.backend.messaging, self.consuming.remove(&id)) {
            hub.cancel((self.instance, id));
        }
        self.awaited.cancel(id);
        match self.tasks.remove(&id) {
            Some(Cancel::Task(task)) => task.abort(),
            Some(Cancel::Offloaded(job)) => job.cancel(),
            None => {}
        }
    }
}
