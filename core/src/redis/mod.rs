//! Redis, sans IO: the RESP2/RESP3 client connection as a state machine, with no
//! socket, no clock and no TLS of its own (cargo feature `redis`).
//!
//! A driver owns the socket. It feeds what it reads to
//! [`RedisConnection::handle_input`], writes what [`RedisConnection::poll_transmit`]
//! gives, says the time, and reads [`Event`]s: each command's one reply, pub/sub
//! messages, the connection's end. Frames are decoded by `redis-protocol` (without its
//! tokio codec) after our scanner has found them whole and within [`Limits`].
//!
//! ```
//! use effectful::Time;
//! use effectful::redis::{Command, Event, Protocol, RedisConfig, RedisConnection, Value};
//!
//! let mut config = RedisConfig::default();
//! config.protocol = Protocol::Resp2;
//! let mut conn = RedisConnection::new(config, Time::ZERO);
//! assert!(matches!(conn.poll_event(), Some(Event::Ready { .. })));
//!
//! let id = conn.send(Time::ZERO, &Command::new("GET").arg("greeting")).unwrap();
//! let mut wire = Vec::new();
//! conn.poll_transmit(&mut wire);
//! assert_eq!(wire, b"*2\r\n$3\r\nGET\r\n$8\r\ngreeting\r\n");
//!
//! // The reply may arrive in any pieces.
//! conn.handle_input(Time::from_millis(1), b"$5\r\nhel");
//! assert_eq!(conn.poll_event(), None);
//! conn.handle_input(Time::from_millis(2), b"lo\r\n");
//! assert_eq!(
//!     conn.poll_event(),
//!     Some(Event::Reply { id, result: Ok(Value::Bulk(b"hello".to_vec())) })
//! );
//! ```
//!
//! Also here: [`RedisUrl`] reads `redis://` and `rediss://` URLs, and [`Reconnect`]
//! decides when to connect again after a failure, and [`CacheAdapter`] turns the Cache
//! family's effects into commands and replies into answers, and [`MessagingAdapter`]
//! with [`Consumers`] the Messaging family's, on Redis Streams.

mod cache;
mod command;
mod config;
mod connection;
mod decode;
mod error;
mod limits;
mod messaging;
mod pubsub;
mod reconnect;
mod scan;
mod url;
mod value;

pub use cache::{CacheAdapter, CachePending, CacheStep, command_error};
pub use command::{Command, Parts};
pub use config::{Password, Protocol, RedisConfig};
pub use connection::{Event, RedisConnection, RequestId, ServerHello};
pub use decode::FrameDecoder;
pub use error::{
    CommandError, ConnectionError, HandshakeStep, ProtocolError, Redirect, SendError, ServerError,
    ServerErrorKind,
};
pub use limits::Limits;
pub use messaging::{
    CONSUME_EFFECT, ConsumerOutput, Consumers, DEFAULT_ACK_TIMEOUT, MAX_PROPERTIES,
    MessagingAdapter, MessagingPending, MessagingPlan, ReadToken,
};
pub use pubsub::{Message, SubscriptionChange, SubscriptionKind, Subscriptions};
pub use reconnect::{Reconnect, ReconnectAction};
pub use url::{RedisUrl, UrlError};
pub use value::Value;

/// The number `digits` writes in decimal (ASCII digits only, at least one), read
/// without going through `str`: lengths and expiry headers are read once per reply.
pub(crate) fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    // Up to 19 digits cannot overflow a u64: no checked arithmetic per digit.
    if digits.len() <= 19 {
        let mut n = 0u64;
        for &d in digits {
            let d = d.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            n = n * 10 + u64::from(d);
        }
        return Some(n);
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let d = d.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn decimal_reads_digits_only_and_refuses_what_overflows() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"1234567"), Some(1_234_567));
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
        for refused in [
            &b""[..],
            b"-1",
            b"+1",
            b"12a",
            b" 1",
            b"18446744073709551616",
        ] {
            assert_eq!(decimal(refused), None, "{refused:?}");
        }
    }
}
