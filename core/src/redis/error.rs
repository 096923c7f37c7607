//! What can go wrong on a Redis connection, typed: the server's error replies, bytes we
//! cannot read, the connection's end, and one command's failure.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An error reply from the server (`-ERR ...`, `-WRONGTYPE ...`, a RESP3 blob error).
///
/// The first word of the reply is its code; [`ServerError::kind`] sorts the codes a
/// client acts on, and [`ServerError::message`] keeps the whole text as the server sent it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerError {
    kind: ServerErrorKind,
    message: String,
}

/// The codes of [`ServerError`] a client acts on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ServerErrorKind {
    /// `ERR`: the generic error (wrong arguments, unknown command, ...).
    Err,
    /// `WRONGTYPE`: the key holds another kind of value.
    WrongType,
    /// `NOAUTH`: the server wants a password first.
    NoAuth,
    /// `WRONGPASS`: the user name or password is wrong, or the user is disabled.
    WrongPass,
    /// `NOPERM`: the ACL user may not run this command or touch this key or channel.
    NoPerm,
    /// `NOPROTO`: the server does not speak the protocol version asked for in `HELLO`.
    NoProto,
    /// `MOVED slot host:port`: the key's slot lives on another cluster node.
    Moved(Redirect),
    /// `ASK slot host:port`: the key's slot is migrating; ask the other node once.
    Ask(Redirect),
    /// `LOADING`: the server is still loading its dataset.
    Loading,
    /// `BUSY`: a script or function is running.
    Busy,
    /// `TRYAGAIN`: a multi-key command met a slot being resharded.
    TryAgain,
    /// `CLUSTERDOWN`: the cluster cannot serve the slot.
    ClusterDown,
    /// `MASTERDOWN`: the replica lost its master and refuses stale reads.
    MasterDown,
    /// `READONLY`: a write was sent to a read-only replica.
    ReadOnly,
    /// `NOSCRIPT`: `EVALSHA` named a script the server does not have.
    NoScript,
    /// `EXECABORT`: a transaction was discarded because a queued command was refused.
    ExecAbort,
    /// `OOM`: the server is out of memory (`maxmemory` reached).
    Oom,
    /// Any other code ([`ServerError::code`] gives it).
    Other,
}

/// Where a cluster redirect (`MOVED` or `ASK`) points.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// The hash slot of the key.
    pub slot: u16,
    /// The node to ask, as `host:port`.
    pub address: String,
}

impl ServerError {
    /// Sorts an error reply's text (without its leading `-`) by its first word.
    pub fn parse(text: &str) -> ServerError {
        let code = text.split(' ').next().unwrap_or("");
        let kind = match code {
            "ERR" => ServerErrorKind::Err,
            "WRONGTYPE" => ServerErrorKind::WrongType,
            "NOAUTH" => ServerErrorKind::NoAuth,
            "WRONGPASS" => ServerErrorKind::WrongPass,
            "NOPERM" => ServerErrorKind::NoPerm,
            "NOPROTO" => ServerErrorKind::NoProto,
            "MOVED" => redirect(text).map_or(ServerErrorKind::Other, ServerErrorKind::Moved),
            "ASK" => redirect(text).map_or(ServerErrorKind::Other, ServerErrorKind::Ask),
            "LOADING" => ServerErrorKind::Loading,
            "BUSY" => ServerErrorKind::Busy,
            "TRYAGAIN" => ServerErrorKind::TryAgain,
            "CLUSTERDOWN" => ServerErrorKind::ClusterDown,
            "MASTERDOWN" => ServerErrorKind::MasterDown,
            "READONLY" => ServerErrorKind::ReadOnly,
            "NOSCRIPT" => ServerErrorKind::NoScript,
            "EXECABORT" => ServerErrorKind::ExecAbort,
            "OOM" => ServerErrorKind::Oom,
            _ => ServerErrorKind::Other,
        };
        ServerError {
            kind,
            message: text.to_owned(),
        }
    }

    /// What kind of error this is.
    pub fn kind(&self) -> &ServerErrorKind {
        &self.kind
    }

    /// The error's code: the first word of its text (`ERR`, `WRONGTYPE`, ...).
    pub fn code(&self) -> &str {
        self.message.split(' ').next().unwrap_or("")
    }

    /// The whole text as the server sent it, code included.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the same command may succeed if sent again a little later, unchanged,
    /// to the same server (`LOADING`, `BUSY`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ServerErrorKind::Loading
                | ServerErrorKind::Busy
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
        )
    }

    fn hint(&self) -> &'static str {
        match self.kind {
            ServerErrorKind::NoAuth => {
                " (the server wants a password: put it in the URL, redis://:PASSWORD@host)"
            }
            ServerErrorKind::WrongPass => {
                " (check the user name and password in the Redis URL, and that the user is enabled)"
            }
            ServerErrorKind::NoPerm => " (grant the ACL user this command, key or channel)",
            ServerErrorKind::NoProto => {
                " (the server has no RESP3, which needs Redis 6 or newer: connect with protocol=2)"
            }
            ServerErrorKind::Moved(_) | ServerErrorKind::Ask(_) => {
                " (the key lives on another cluster node; this connection talks to one node)"
            }
            ServerErrorKind::Loading => " (the server is loading its data; retry shortly)",
            _ => "",
        }
    }
}

fn redirect(text: &str) -> Option<Redirect> {
    let mut words = text.split(' ');
    let _code = words.next();
    let slot = words.next()?.parse().ok()?;
    let address = words.next()?.to_owned();
    Some(Redirect { slot, address })
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redis answered {}{}", self.message, self.hint())
    }
}

impl std::error::Error for ServerError {}

/// The server sent bytes this connection cannot read, or a frame past a [`Limits`]
/// bound. The connection is unusable after one: close it and connect again.
///
/// [`Limits`]: super::Limits
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A bulk string, blob error or verbatim string declared more bytes than allowed.
    #[error(
        "Redis sent a {len}-byte string, more than the {max} bytes allowed; \
         raise Limits::max_bulk_len if such values are expected"
    )]
    BulkTooLong {
        /// The declared length.
        len: u64,
        /// [`Limits::max_bulk_len`](super::Limits::max_bulk_len).
        max: usize,
    },
    /// An array, set, push, map or attribute declared more elements than allowed.
    #[error(
        "Redis sent an aggregate of {len} elements, more than the {max} allowed; \
         raise Limits::max_aggregate_len if such replies are expected"
    )]
    AggregateTooLong {
        /// The declared count (pairs, for maps and attributes).
        len: u64,
        /// [`Limits::max_aggregate_len`](super::Limits::max_aggregate_len).
        max: usize,
    },
    /// Aggregates nested deeper than allowed.
    #[error(
        "Redis sent aggregates nested more than {max} deep; \
         raise Limits::max_depth (up to Limits::MAX_DEPTH) if such replies are expected"
    )]
    TooDeep {
        /// The depth limit in force.
        max: usize,
    },
    /// One frame, with everything nested in it, is longer than allowed.
    #[error(
        "Redis sent a frame of at least {len} bytes, more than the {max} allowed; \
         raise Limits::max_frame_len if such replies are expected"
    )]
    FrameTooLong {
        /// How long the frame is known to be so far.
        len: u64,
        /// [`Limits::max_frame_len`](super::Limits::max_frame_len).
        max: usize,
    },
    /// A simple string, error or number line ran past the limit without its `\r\n`.
    #[error(
        "Redis sent a line longer than {max} bytes without its CRLF; \
         raise Limits::max_line_len if such replies are expected"
    )]
    LineTooLong {
        /// The line limit in force.
        max: usize,
    },
    /// A length or count that is not a number in range.
    #[error("Redis sent a malformed length after `{}` (not a count in range)", char::from(*.tag))]
    BadLength {
        /// The type byte whose length was bad.
        tag: u8,
    },
    /// A string's bytes were not followed by `\r\n`.
    #[error("Redis sent a string whose declared length does not end at a CRLF")]
    MissingCrlf,
    /// A type byte that is not RESP2 or RESP3.
    #[error("Redis sent an unknown RESP type byte 0x{byte:02x}; is this a Redis server?")]
    UnknownType {
        /// The byte.
        byte: u8,
    },
    /// A RESP3 streamed string or aggregate (length `?`), which Redis does not send.
    #[error("Redis sent a streamed RESP3 frame (type `{}`), which this client does not read", char::from(*.tag))]
    Streamed {
        /// The type byte.
        tag: u8,
    },
    /// A frame that mixes RESP2 nulls (`$-1`, `*-1`) with RESP3 types.
    #[error("Redis sent a frame that mixes RESP2 nulls with RESP3 types")]
    MixedNulls,
    /// The decoder refused a frame the scanner found complete.
    #[error("Redis sent a frame that does not decode: {0}")]
    Decode(String),
    /// A well-formed frame that makes no sense here (a reply with no command waiting).
    #[error("Redis sent {0}")]
    Unexpected(&'static str),
}

/// A step of the connection's handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HandshakeStep {
    /// `HELLO 3` (with `AUTH` and `SETNAME` when configured).
    Hello,
    /// `AUTH` (RESP2 connections).
    Auth,
    /// `CLIENT SETNAME` (RESP2 connections).
    SetName,
    /// `SELECT` of the configured database.
    Select,
}

impl fmt::Display for HandshakeStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeStep::Hello => "HELLO",
            HandshakeStep::Auth => "AUTH",
            HandshakeStep::SetName => "CLIENT SETNAME",
            HandshakeStep::Select => "SELECT",
        })
    }
}

/// Why a connection closed. It is told once, as the last event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The server sent bytes that cannot be read.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A handshake step was refused (a wrong password, a database out of range).
    #[error("connecting to Redis failed at {step}: {error}{}", if *.step == HandshakeStep::Hello && *.error.kind() == ServerErrorKind::Err {
        " (RESP3 needs Redis 6 or newer; connect with protocol=2 to an older server)"
    } else {
        ""
    })]
    Handshake {
        /// The step that failed.
        step: HandshakeStep,
        /// The server's answer.
        error: ServerError,
    },
    /// A handshake step was not answered within the operation timeout.
    #[error("Redis did not answer {step} within {after:?}; is the server up and reachable?")]
    HandshakeTimedOut {
        /// The step that went unanswered.
        step: HandshakeStep,
        /// The operation timeout.
        after: Duration,
    },
    /// The driver reported that the server closed the connection (or it broke).
    #[error("the connection to Redis was lost; connect again")]
    Lost,
    /// The connection's owner closed it.
    #[error("the Redis connection was closed by its owner")]
    Closed,
}

impl ConnectionError {
    /// Whether connecting again, unchanged, may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectionError::Protocol(_) | ConnectionError::Closed => false,
            ConnectionError::Handshake { error, .. } => error.is_retryable(),
            ConnectionError::HandshakeTimedOut { .. } | ConnectionError::Lost => true,
        }
    }
}

/// Why one command has no reply value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The server answered with an error.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// No answer within the operation timeout. The connection stays usable: the late
    /// answer, when it comes, is read and dropped.
    #[error(
        "Redis did not answer within {after:?}; the command may still run \
         (for blocking commands, use a connection with a longer operation timeout)"
    )]
    TimedOut {
        /// The operation timeout.
        after: Duration,
    },
    /// The connection closed before the answer came ([`super::Event::Closed`] says why).
    #[error("the Redis connection closed before the answer came; {}", if *.sent {
        "the command had been handed to the driver, so it may have run"
    } else {
        "the command was never sent, so it did not run"
    })]
    ConnectionClosed {
        /// Whether the command's bytes had been handed to the driver
        /// ([`super::RedisConnection::poll_transmit`]); `false` means it surely did not run.
        sent: bool,
    },
}

impl CommandError {
    /// Whether sending the command again (on this or a new connection) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            CommandError::Server(e) => e.is_retryable(),
            CommandError::TimedOut { .. } | CommandError::ConnectionClosed { .. } => true,
        }
    }
}

/// Why [`super::RedisConnection::send`] refused a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closed; use another.
    #[error("the Redis connection is closed; send on another connection")]
    Closed,
    /// Too many commands await their answers.
    #[error(
        "{max} commands already await their answers on this Redis connection; \
         wait for some, or raise RedisConfig::max_pending"
    )]
    TooManyPending {
        /// [`RedisConfig::max_pending`](super::RedisConfig::max_pending).
        max: usize,
    },
    /// A command that would break in-order reply matching (`MONITOR`, `SYNC`, `PSYNC`,
    /// `CLIENT REPLY`).
    #[error(
        "{command} changes how Redis answers and would break reply matching on this \
         connection; it is not supported"
    )]
    Unsupported {
        /// The command's name.
        command: &'static str,
    },
}
