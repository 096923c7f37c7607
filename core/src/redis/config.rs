//! `RedisConfig`: how a connection introduces itself, and the secrets it carries.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::limits::Limits;

/// The RESP version a connection speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// RESP2: every Redis; pub/sub messages are arrays on a connection that only
    /// subscribes.
    Resp2,
    /// RESP3, asked for with `HELLO 3` (Redis 6 and newer): typed replies, and pub/sub
    /// messages as pushes beside ordinary replies.
    #[default]
    Resp3,
}

/// A password. It never appears in `Debug` output, and has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Password {
        Password(password.into())
    }

    /// The password itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// How a [`RedisConnection`](super::RedisConnection) introduces itself and what it
/// bounds. `Default` is RESP3, no password, database 0, a 5 s operation timeout.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// RESP2 or RESP3.
    pub protocol: Protocol,
    /// The ACL user; `None` authenticates as `default` when there is a password.
    pub username: Option<String>,
    /// The password; `None` sends no `AUTH`.
    pub password: Option<Password>,
    /// The database to `SELECT` (0 sends nothing).
    pub db: i64,
    /// A name for `CLIENT LIST`, set during the handshake.
    pub client_name: Option<String>,
    /// How long a command may wait for its reply (and a handshake step for its own);
    /// `None` waits forever. Blocking commands (`BLPOP`, `XREAD ... BLOCK`) want a
    /// connection with a longer timeout than their own.
    pub operation_timeout: Option<Duration>,
    /// Bounds on what the server may send.
    pub limits: Limits,
    /// Most commands awaiting replies at once; `send` refuses more.
    pub max_pending: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            protocol: Protocol::Resp3,
            username: None,
            password: None,
            db: 0,
            client_name: None,
            operation_timeout: Some(Duration::from_secs(5)),
            limits: Limits::default(),
            max_pending: 16 * 1024,
        }
    }
}
