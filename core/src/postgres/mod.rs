//! A sans-IO PostgreSQL client (cargo feature `postgres`): the [`PgConnection`] wire
//! state machine and the connection [`Pool`], on `postgres-protocol`'s message codecs.
//!
//! Nothing here opens a socket, reads a clock or draws OS randomness: a driver moves
//! bytes, hands in the time and the entropy for SCRAM nonces, and performs what the
//! state machines ask for. Every type here follows the one contract of the crate's
//! state machines: `handle_*` inputs that take `now`, `poll_*` outputs, one
//! `poll_timeout`, and the drain rule written on the type.
//!
//! # Driving a connection
//! ```
//! use effectful::Time;
//! use effectful::postgres::{Event, PgConfig, PgConnection, Value};
//!
//! let mut conn = PgConnection::new(PgConfig::new("app").database("test"), [0; 18], Time::ZERO);
//! let startup = conn.poll_transmit().expect("the startup message");
//! assert_eq!(&startup[4..8], &[0, 3, 0, 0]); // protocol 3.0
//! // A driver writes `startup` to the socket, then loops: read bytes, hand them in,
//! // drain the outputs.
//! let server_says = b"R\0\0\0\x08\0\0\0\0Z\0\0\0\x05I"; // AuthenticationOk, ReadyForQuery
//! conn.handle_input(Time::ZERO, server_says);
//! assert!(matches!(conn.poll_event(), Some(Event::Ready)));
//! let id = conn.execute(Time::ZERO, "SELECT $1::int4 + 1", &[Value::Int4(41)]).unwrap();
//! let bytes_to_write = conn.poll_transmit().expect("Parse, Describe, Bind, Execute, Sync");
//! # let _ = (id, bytes_to_write);
//! ```

mod cache;
mod cancel;
mod config;
mod connection;
pub mod database;
mod date;
mod error;
mod event;
mod numeric;
mod pool;
mod room;
mod row;
mod scram;
mod service;
pub mod sql;
pub mod storage;
mod types;
mod value;

pub use cancel::CancelRequest;
pub use config::{Password, PgConfig, TlsMode};
pub use connection::PgConnection;
pub use date::Date;
pub use error::{ClosedReason, DbError, PgError, TypeError, sqlstate};
pub use event::{Event, Notification, QueryId, TransactionStatus};
pub use pool::{AcquireId, ConnId, Mode, Pool, PoolConfig, PoolEvent, PoolStatus, Release};
pub use room::OwnBackends;
pub use row::{Column, ColumnIndex, CommandTag, Format, ResultSet, Row};
pub use scram::NONCE_ENTROPY_LEN;
pub use service::{Output, PgService, Reply, ServiceConfig, Work};
pub use types::Type;
pub use value::{DecodeError, FromSql, Value};
