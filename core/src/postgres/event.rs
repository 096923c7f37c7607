//! What a [`PgConnection`](super::PgConnection) tells its driver: query ids, events,
//! notifications and the transaction status.

use super::cancel::CancelRequest;
use super::error::{DbError, PgError};
use super::row::ResultSet;

/// Names one query submitted on one connection; ids are never reused on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryId(pub u64);

/// The server's transaction status, from its latest `ReadyForQuery`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionStatus {
    /// Not in a transaction block.
    Idle,
    /// In a transaction block.
    InTransaction,
    /// In a failed transaction block: statements are refused until `ROLLBACK`.
    Failed,
}

/// A `NOTIFY` delivered to this connection (it ran `LISTEN channel`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The backend process that sent it.
    pub process_id: i32,
    /// The channel.
    pub channel: String,
    /// The payload (empty if none was given).
    pub payload: String,
}

/// Something the driver or the application must hear about.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// The server accepted TLS: run the TLS handshake over the socket now, then call
    /// [`handle_tls_ready`](super::PgConnection::handle_tls_ready) and from then on
    /// pass decrypted bytes.
    StartTls,
    /// The startup is done: authenticated, parameters known, ready for queries (any
    /// submitted earlier are now in the transmit buffer).
    Ready,
    /// A query finished: every statement's result in order (one for an extended
    /// query), or the error that ended it. Exactly one per submitted query.
    Done {
        /// The query.
        id: QueryId,
        /// Its results, or why it failed.
        result: Result<Vec<ResultSet>, PgError>,
    },
    /// The server sent a notice (a warning, a `RAISE NOTICE`).
    Notice(DbError),
    /// A `NOTIFY` arrived on a channel this connection listens on.
    Notification(Notification),
    /// The query `id` has been executing for the command timeout: send `cancel` on a
    /// new connection. Emitted at most once per query, and only while `id` is the
    /// query the server is working on.
    CancelDue {
        /// The query that ran too long.
        id: QueryId,
        /// What to send.
        cancel: CancelRequest,
    },
    /// The connection is finished: close the socket. Every query still in flight has
    /// had its `Done` with an error just before this.
    Closed(PgError),
}
