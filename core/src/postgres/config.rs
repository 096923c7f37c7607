//! What a [`PgConnection`](super::PgConnection) needs to know before it starts: who
//! to log in as, whether to ask for TLS, and the limits it holds the server to.

use std::fmt;
use std::time::Duration;

/// A password that never shows itself: `Debug` prints `Password(***)`, and no error
/// of this crate contains it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Password {
        Password(password.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Whether the connection asks the server for TLS first (`SSLRequest`).
///
/// The connection only negotiates; TLS itself is a layer the driver stacks under the
/// bytes (for example `rustls`), after [`Event::StartTls`](super::Event::StartTls).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TlsMode {
    /// Never ask: plain TCP or a Unix socket.
    #[default]
    Disable,
    /// Ask; go on in plain text if the server says no.
    Prefer,
    /// Ask; fail if the server says no.
    Require,
}

/// Settings for one connection.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PgConfig {
    /// The role to log in as.
    pub user: String,
    /// The database; the server defaults it to the user name when `None`.
    pub database: Option<String>,
    /// The password, for cleartext, MD5 and SCRAM-SHA-256 authentication.
    pub password: Option<Password>,
    /// Sent as `application_name` (visible in `pg_stat_activity`).
    pub application_name: Option<String>,
    /// Sent as the startup parameter `options`: command-line options for the
    /// server session, such as `-c search_path=app` (the URL's `options`).
    pub options: Option<String>,
    /// Whether to ask for TLS before the startup message.
    pub tls: TlsMode,
    /// The whole startup (TLS negotiation, authentication, first `ReadyForQuery`)
    /// must finish within this long.
    pub connect_timeout: Duration,
    /// When a query has been the one executing for this long, the connection emits
    /// [`Event::CancelDue`](super::Event::CancelDue) so the driver sends a cancel
    /// request. `None`: never.
    pub command_timeout: Option<Duration>,
    /// The longest message accepted from the server, checked on its header before
    /// anything is allocated for it.
    pub max_message_len: usize,
    /// The most bytes of rows one query may return; past it the query fails with
    /// [`PgError::ResultTooLarge`](super::PgError::ResultTooLarge) and the rest is
    /// discarded as it arrives.
    pub max_result_bytes: usize,
    /// The most queries in flight at once on this connection.
    pub max_in_flight: usize,
    /// The most prepared statements kept on the server per connection; the least
    /// recently used is closed to make room.
    pub statement_cache_size: usize,
    /// The highest SCRAM iteration count accepted from the server: each iteration is
    /// an HMAC the client must compute, so a hostile server could otherwise stall it.
    pub max_scram_iterations: u32,
}

impl PgConfig {
    /// Settings for `user` with the defaults: no database (the server uses the user
    /// name), no password, no TLS, a 10 s connect timeout, a 60 s command timeout,
    /// 16 MiB messages, 64 MiB results, 4096 queries in flight, 256 cached statements,
    /// and at most 100,000 SCRAM iterations.
    pub fn new(user: impl Into<String>) -> PgConfig {
        PgConfig {
            user: user.into(),
            database: None,
            password: None,
            application_name: None,
            options: None,
            tls: TlsMode::Disable,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Some(Duration::from_secs(60)),
            max_message_len: 16 << 20,
            max_result_bytes: 64 << 20,
            max_in_flight: 4096,
            statement_cache_size: 256,
            max_scram_iterations: 100_000,
        }
    }

    /// Sets the database.
    pub fn database(mut self, database: impl Into<String>) -> PgConfig {
        self.database = Some(database.into());
        self
    }

    /// Sets the password.
    pub fn password(mut self, password: impl Into<String>) -> PgConfig {
        self.password = Some(Password::new(password));
        self
    }

    /// Sets `application_name`.
    pub fn application_name(mut self, name: impl Into<String>) -> PgConfig {
        self.application_name = Some(name.into());
        self
    }

    /// Sets the startup `options` (for example `-c search_path=app`).
    pub fn options(mut self, options: impl Into<String>) -> PgConfig {
        self.options = Some(options.into());
        self
    }

    /// Sets the TLS mode.
    pub fn tls(mut self, tls: TlsMode) -> PgConfig {
        self.tls = tls;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> PgConfig {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the command timeout (`None`: never cancel).
    pub fn command_timeout(mut self, timeout: Option<Duration>) -> PgConfig {
        self.command_timeout = timeout;
        self
    }

    /// Sets the longest message accepted from the server.
    pub fn max_message_len(mut self, len: usize) -> PgConfig {
        self.max_message_len = len;
        self
    }

    /// Sets the most bytes of rows one query may return.
    pub fn max_result_bytes(mut self, len: usize) -> PgConfig {
        self.max_result_bytes = len;
        self
    }

    /// Sets the most queries in flight at once.
    pub fn max_in_flight(mut self, n: usize) -> PgConfig {
        self.max_in_flight = n;
        self
    }

    /// Sets the prepared-statement cache size (0: never prepare named statements).
    pub fn statement_cache_size(mut self, n: usize) -> PgConfig {
        self.statement_cache_size = n;
        self
    }

    /// Sets the highest SCRAM iteration count accepted.
    pub fn max_scram_iterations(mut self, n: u32) -> PgConfig {
        self.max_scram_iterations = n;
        self
    }
}
