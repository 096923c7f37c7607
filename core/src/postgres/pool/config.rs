//! The pool's settings, with the defaults of the seed's `asyncpg.create_pool`.

use std::time::Duration;

/// Settings for a [`Pool`](super::Pool).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Connections kept open even when idle (default 5).
    pub min_size: usize,
    /// Connections at most, opening ones included (default 20).
    pub max_size: usize,
    /// How long an acquire waits before it fails (default 30 s).
    pub acquire_timeout: Duration,
    /// An idle connection above `min_size` is closed after this long unused
    /// (`max_inactive_connection_lifetime`, default 300 s).
    pub max_inactive_lifetime: Duration,
    /// A connection is replaced once this old, when next idle (default 30 min;
    /// `None`: never).
    pub max_lifetime: Option<Duration>,
    /// The command timeout for the pool's connections (default 60 s): the driver puts
    /// it in each connection's `PgConfig::command_timeout`.
    pub command_timeout: Duration,
    /// A connection idle this long gets a health check before it is handed out
    /// (default 30 s).
    pub check_after_idle: Duration,
    /// How many shared holders one connection pipelines before the pool prefers to
    /// open another (default 64).
    pub max_shared_per_connection: usize,
    /// After a connection fails to open, wait this long before opening again
    /// (default 1 s).
    pub open_backoff: Duration,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            min_size: 5,
            max_size: 20,
            acquire_timeout: Duration::from_secs(30),
            max_inactive_lifetime: Duration::from_secs(300),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            command_timeout: Duration::from_secs(60),
            check_after_idle: Duration::from_secs(30),
            max_shared_per_connection: 64,
            open_backoff: Duration::from_secs(1),
        }
    }
}

impl PoolConfig {
    /// Sets `min_size` and `max_size` (`max` is raised to at least 1 and to `min`).
    pub fn size(mut self, min: usize, max: usize) -> PoolConfig {
        self.max_size = max.max(min).max(1);
        self.min_size = min;
        self
    }

    /// Sets the acquire timeout.
    pub fn acquire_timeout(mut self, timeout: Duration) -> PoolConfig {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets the inactive lifetime.
    pub fn max_inactive_lifetime(mut self, lifetime: Duration) -> PoolConfig {
        self.max_inactive_lifetime = lifetime;
        self
    }

    /// Sets the maximum lifetime.
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> PoolConfig {
        self.max_lifetime = lifetime;
        self
    }

    /// Sets the idle time after which a connection is checked before reuse.
    pub fn check_after_idle(mut self, idle: Duration) -> PoolConfig {
        self.check_after_idle = idle;
        self
    }

    /// Sets how many shared holders one connection takes before another is opened.
    pub fn max_shared_per_connection(mut self, n: usize) -> PoolConfig {
        self.max_shared_per_connection = n.max(1);
        self
    }
}
