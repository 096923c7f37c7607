//! What can go wrong on a PostgreSQL connection: the server's own errors, typed
//! ([`DbError`]), and everything else ([`PgError`]).

use std::fmt;
use std::sync::Arc;

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::ErrorFields;

use crate::error::{EffectError, ErrorKind};

/// An error or notice the server sent (`ErrorResponse` or `NoticeResponse`), field by
/// field. See the PostgreSQL manual, "Error and Notice Message Fields".
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DbError {
    /// `ERROR`, `FATAL`, `PANIC`, `WARNING`, `NOTICE`, `DEBUG`, `INFO` or `LOG`
    /// (never localized: the `V` field when the server sends it).
    pub severity: String,
    /// The SQLSTATE code, five characters (for example `23505`, a unique violation).
    pub code: String,
    /// The primary message.
    pub message: String,
    /// An optional secondary message with more detail.
    pub detail: Option<String>,
    /// An optional suggestion what to do about it.
    pub hint: Option<String>,
    /// The 1-based character position of the error in the query text.
    pub position: Option<u32>,
    /// The call stack where the error happened (PL/pgSQL and the like).
    pub where_: Option<String>,
    /// The schema of the object the error is about.
    pub schema: Option<String>,
    /// The table the error is about.
    pub table: Option<String>,
    /// The column the error is about.
    pub column: Option<String>,
    /// The data type the error is about.
    pub datatype: Option<String>,
    /// The constraint the error is about (for example the unique index on an email).
    pub constraint: Option<String>,
}

/// SQLSTATE codes that callers commonly match on.
pub mod sqlstate {
    /// `unique_violation`: an insert or update hit a unique constraint.
    pub const UNIQUE_VIOLATION: &str = "23505";
    /// `foreign_key_violation`.
    pub const FOREIGN_KEY_VIOLATION: &str = "23503";
    /// `not_null_violation`.
    pub const NOT_NULL_VIOLATION: &str = "23502";
    /// `syntax_error`.
    pub const SYNTAX_ERROR: &str = "42601";
    /// `undefined_table`.
    pub const UNDEFINED_TABLE: &str = "42P01";
    /// `query_canceled`: a cancel request or `statement_timeout` stopped the query.
    pub const QUERY_CANCELED: &str = "57014";
    /// `admin_shutdown`: the backend was terminated (`pg_terminate_backend`, shutdown).
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// `serialization_failure`: retry the transaction.
    pub const SERIALIZATION_FAILURE: &str = "40001";
    /// `deadlock_detected`: retry the transaction.
    pub const DEADLOCK_DETECTED: &str = "40P01";
    /// `invalid_sql_statement_name`: a prepared statement the client named is gone.
    pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
    /// `invalid_password`.
    pub const INVALID_PASSWORD: &str = "28P01";
    /// `invalid_authorization_specification`.
    pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
}

impl DbError {
    /// Reads the fields of an `ErrorResponse` or `NoticeResponse` body.
    pub(crate) fn parse(mut fields: ErrorFields<'_>) -> Result<DbError, PgError> {
        let mut e = DbError::default();
        let mut localized_severity = None;
        while let Some(field) = fields
            .next()
            .map_err(|err| PgError::protocol(format!("malformed error fields: {err}")))?
        {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'S' => localized_severity = Some(value),
                b'V' => e.severity = value,
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                b'P' => e.position = value.parse().ok(),
                b'W' => e.where_ = Some(value),
                b's' => e.schema = Some(value),
                b't' => e.table = Some(value),
                b'c' => e.column = Some(value),
                b'd' => e.datatype = Some(value),
                b'n' => e.constraint = Some(value),
                _ => {} // file, line, routine, internal query: for the server's developers
            }
        }
        if e.severity.is_empty() {
            e.severity = localized_severity.unwrap_or_default();
        }
        Ok(e)
    }

    /// Whether the server ends the session after this error (`FATAL` or `PANIC`).
    pub fn is_fatal(&self) -> bool {
        matches!(self.severity.as_str(), "FATAL" | "PANIC")
    }

    /// Whether running the same work again may succeed: serialization failures,
    /// deadlocks, a cancelled query, a terminated backend, lost connections (class 08)
    /// and resource shortages (class 53).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code.as_str(),
            sqlstate::SERIALIZATION_FAILURE
                | sqlstate::DEADLOCK_DETECTED
                | sqlstate::ADMIN_SHUTDOWN
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now
        ) || self.code.starts_with("08")
            || self.code.starts_with("53")
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " (detail: {detail})")?;
        }
        if let Some(constraint) = &self.constraint {
            write!(f, " (constraint: {constraint})")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for DbError {}

/// A column value could not become the Rust type asked for, or a parameter could not
/// be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TypeError {
    /// The column's PostgreSQL type does not convert to the Rust type asked for.
    #[error(
        "column {column} has type {actual}, which does not convert to {rust}; read it as a type that accepts {actual} or cast it in the SQL"
    )]
    Mismatch {
        /// The column (name, or index when unnamed).
        column: String,
        /// The column's PostgreSQL type.
        actual: String,
        /// The Rust type asked for.
        rust: &'static str,
    },
    /// The value is NULL and the Rust type asked for cannot hold NULL.
    #[error("column {column} is NULL; read it as an Option to accept NULL")]
    UnexpectedNull {
        /// The column (name, or index when unnamed).
        column: String,
    },
    /// The row has no such column.
    #[error("the row has no column {column} (it has {count} columns)")]
    NoSuchColumn {
        /// The index or name asked for.
        column: String,
        /// How many columns the row has.
        count: usize,
    },
    /// The bytes of a value do not form a value of its declared type.
    #[error("column {column} holds a malformed {ty} value: {reason}")]
    Malformed {
        /// The column (name, or index when unnamed).
        column: String,
        /// The declared PostgreSQL type.
        ty: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The value cannot be sent as a parameter.
    #[error("parameter ${index} cannot be encoded: {reason}")]
    Encode {
        /// The 1-based parameter number.
        index: usize,
        /// Why not.
        reason: String,
    },
}

/// Everything that can fail on a PostgreSQL connection.
///
/// Cheap to clone: a connection that dies reports the same error to every query it
/// still had in flight.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The server reported an error (`ErrorResponse`): match on [`DbError::code`].
    #[error("PostgreSQL error: {0}")]
    Db(Arc<DbError>),
    /// The server sent something the protocol does not allow here.
    #[error("PostgreSQL protocol violation: {0}; the connection is closed, open a new one")]
    Protocol(String),
    /// A message from the server declared a length above the configured limit; the
    /// connection refused it before allocating.
    #[error(
        "the server sent a {len}-byte message, more than the {limit}-byte limit (PgConfig::max_message_len); the connection is closed"
    )]
    MessageTooLarge {
        /// The declared length.
        len: u64,
        /// The configured limit.
        limit: usize,
    },
    /// The server answered the startup with `NegotiateProtocolVersion`.
    #[error(
        "the server cannot speak protocol 3.0 as asked (it offered minor version {newest_minor}; unrecognised options: {unrecognized:?}); use PostgreSQL 9.3 or later and no protocol options"
    )]
    ProtocolVersion {
        /// The newest minor protocol version the server supports.
        newest_minor: i32,
        /// Protocol options it did not recognise.
        unrecognized: Vec<String>,
    },
    /// Authentication failed or cannot be done with this configuration.
    #[error("PostgreSQL authentication failed: {0}")]
    Auth(String),
    /// The TLS negotiation (`SSLRequest`) failed.
    #[error("PostgreSQL TLS negotiation failed: {0}")]
    Tls(String),
    /// The connection is closed (the server hung up, or [`close`] was called); work
    /// that was in flight may or may not have run.
    ///
    /// [`close`]: super::PgConnection::close
    #[error("the PostgreSQL connection is closed{0}; work in flight may or may not have run")]
    Closed(ClosedReason),
    /// The connection was not ready within the connect timeout.
    #[error(
        "PostgreSQL did not finish the connection startup within {0:?} (PgConfig::connect_timeout)"
    )]
    ConnectTimeout(std::time::Duration),
    /// A query's rows added up to more than the configured limit; the rest were
    /// discarded and the connection is still usable.
    #[error(
        "the query's result exceeded {limit} bytes (PgConfig::max_result_bytes); add a LIMIT or page through it"
    )]
    ResultTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The connection already has the configured number of queries in flight.
    #[error(
        "{limit} queries are already in flight on this connection (PgConfig::max_in_flight); wait for answers or use another connection"
    )]
    PipelineFull {
        /// The configured limit.
        limit: usize,
    },
    /// The query cannot be sent as asked (too many parameters, a NUL in the text).
    #[error("the query cannot be sent: {0}")]
    Query(String),
    /// A value could not be decoded or encoded.
    #[error(transparent)]
    Type(#[from] TypeError),
    /// COPY is not supported by this client.
    #[error(
        "COPY ... FROM STDIN / TO STDOUT is not supported by this client; use INSERT or SELECT"
    )]
    CopyUnsupported,
}

/// Why a connection closed, appended to [`PgError::Closed`]'s message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClosedReason {
    /// The server closed the socket (the driver said so with `handle_eof`).
    ServerHungUp,
    /// The application asked to close.
    ByClient,
    /// An earlier error ended the connection.
    After(Box<PgError>),
}

impl fmt::Display for ClosedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClosedReason::ServerHungUp => f.write_str(" (the server hung up)"),
            ClosedReason::ByClient => f.write_str(" (closed by the client)"),
            ClosedReason::After(e) => write!(f, " after: {e}"),
        }
    }
}

impl PgError {
    pub(crate) fn protocol(message: impl Into<String>) -> PgError {
        PgError::Protocol(message.into())
    }

    /// The server's error, when this is one.
    pub fn as_db(&self) -> Option<&DbError> {
        match self {
            PgError::Db(e) => Some(e),
            _ => None,
        }
    }

    /// The SQLSTATE, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        self.as_db().map(|e| e.code.as_str())
    }

    /// Whether doing the same work again (on this or another connection) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            PgError::Db(e) => e.is_retryable(),
            PgError::Closed(_) | PgError::ConnectTimeout(_) | PgError::PipelineFull { .. } => true,
            _ => false,
        }
    }

    /// This error as an [`EffectError`] for `effect` (for example `Database.GetUserById`).
    pub fn to_effect_error(&self, effect: &'static str) -> EffectError {
        let kind = match self {
            PgError::Db(e) => ErrorKind::Service {
                code: Some(e.code.clone()),
            },
            PgError::Closed(_) => ErrorKind::ConnectionLost,
            PgError::ConnectTimeout(_) => ErrorKind::Timeout,
            PgError::PipelineFull { .. } => ErrorKind::Unavailable,
            _ => ErrorKind::Protocol,
        };
        EffectError {
            effect: effect.into(),
            kind,
            message: self.to_string(),
            retryable: self.is_retryable(),
        }
    }
}

impl From<DbError> for PgError {
    fn from(e: DbError) -> PgError {
        PgError::Db(Arc::new(e))
    }
}
