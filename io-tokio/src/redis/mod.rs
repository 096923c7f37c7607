//! Redis on tokio (cargo feature `redis`): the Cache family served by a real Redis
//! through the core's sans-IO [`CacheAdapter`] and a per-process [`RedisPool`].
//!
//! # Shape
//! One [`RedisBackend`] per process holds the pool (at most `REDIS_MAX_CONNECTIONS`
//! pipelined connections, default 10, on an IO thread of their own) and the adapter.
//! [`RedisBackend::register`] gives every shard a [`RedisInterpreter`] sharing them:
//! each effect becomes one command, handed to a connection round robin; its reply
//! comes back to the effect's shard through the shard's [`Replier`].
//!
//! # Failures
//! - A command not answered within the operation timeout (default 5 s) fails its
//!   effect with a retryable `Timeout`; the connection stays usable.
//! - A lost connection fails the effects waiting on it with a retryable
//!   `ConnectionLost`; the connection reconnects with backoff (100 ms doubling to
//!   5 s, jittered), and while it waits, effects sent to it fail at once, retryably.
//! - A handshake the server refuses (a wrong password) is not retried: effects fail
//!   with a non-retryable `ConnectionLost` saying why. The password is never shown.
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

mod pool;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use effectful::effect::{Request, Response};
use effectful::redis::{CacheAdapter, Command};
use effectful::{EffectId, Family, Std};
use rustc_hash::FxHashMap;

pub use pool::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_OPERATION_TIMEOUT, Job, OnReply, PoolConfig, PoolError,
    RedisPool,
};

use crate::interpreter::{Interpreter, Replier, ShardContext, ShardCx, SplitStd, misrouted};
use crate::runtime::RuntimeBuilder;

/// The families a [`RedisBackend`] serves.
pub const REDIS_FAMILIES: [&str; 1] = ["Cache"];

/// One Redis backend for the whole process (cheap to clone).
#[derive(Clone, Debug)]
pub struct RedisBackend {
    pool: RedisPool,
    cache: Arc<CacheAdapter>,
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
        }
    }

    /// From the server settings: `REDIS_URL` (required here) and
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
        let url = effectful::redis::RedisUrl::parse(url.expose())
            .map_err(|e| invalid(format!("REDIS_URL: {e}")))?;
        let mut config = PoolConfig::new(url);
        config.max_connections = usize::try_from(settings.redis_max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS)
            .max(1);
        RedisBackend::start(config, prefix)
    }

    /// The pool (to send your own commands, or to `PING` for health).
    pub fn pool(&self) -> &RedisPool {
        &self.pool
    }

    /// The Cache adapter (its key prefix).
    pub fn cache(&self) -> &CacheAdapter {
        &self.cache
    }

    /// Registers the interpreter of every family it serves ([`REDIS_FAMILIES`]).
    pub fn register<F: SplitStd>(&self, mut builder: RuntimeBuilder<F>) -> RuntimeBuilder<F>
    where
        F::Response: Send,
    {
        for family in REDIS_FAMILIES {
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
        RedisInterpreter {
            backend: self.clone(),
            replier: shard.replier(),
            unsent: FxHashMap::default(),
            prune_at: 64,
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

/// Serves the Cache family on one shard from a [`RedisBackend`].
pub struct RedisInterpreter<F: Family = Std> {
    backend: RedisBackend,
    replier: Replier<F>,
    /// The cancel flags of effects that may not be sent yet.
    unsent: FxHashMap<EffectId, Arc<AtomicBool>>,
    /// Drop flags of finished jobs when `unsent` grows to this.
    prune_at: usize,
}

impl<F: SplitStd> Interpreter<F> for RedisInterpreter<F>
where
    F::Response: Send,
{
    fn perform(&mut self, cx: &mut ShardCx<'_, F>, id: EffectId, request: F::Request) {
        let request = match F::split_request(request) {
            Ok(Request::Cache(request)) => request,
            Ok(other) => {
                return cx.answer(id, Err(misrouted::<F>("Redis", &F::embed_request(other))));
            }
            Err(own) => return cx.answer(id, Err(misrouted::<F>("Redis", &own))),
        };
        let cache = self.backend.cache.clone();
        let (command, pending) = match cache.command(&request) {
            Ok(planned) => planned,
            Err(e) => return cx.answer(id, Err(e)),
        };
        if self.unsent.len() >= self.prune_at {
            // A job that finished dropped its clone of the flag.
            self.unsent.retain(|_, flag| Arc::strong_count(flag) > 1);
            self.prune_at = (self.unsent.len() * 2).max(64);
        }
        let flag = Arc::new(AtomicBool::new(false));
        self.unsent.insert(id, flag.clone());
        let replier = self.replier.clone();
        self.backend.pool.submit(Job {
            command,
            cancelled: Some(flag),
            reply: Box::new(move |reply| {
                let effect = pending.effect();
                let answer = match reply {
                    Ok(value) => cache.response(pending, Ok(value)),
                    Err(PoolError::Command(e)) => cache.response(pending, Err(e)),
                    Err(e) => Err(e.effect_error(effect)),
                };
                replier.answer(id, answer.map(|r| F::embed_response(Response::Cache(r))));
            }),
        });
    }

    fn cancel(&mut self, _cx: &mut ShardCx<'_, F>, id: EffectId) {
        if let Some(flag) = self.unsent.remove(&id) {
            flag.store(true, Ordering::Relaxed);
        }
    }
}
