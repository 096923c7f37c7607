//! Scripted-bytes helpers: a connection stepped by hand, and a RESP encoder for
//! values (independent of the decoder under test).

use effectful::Time;
use effectful::redis::{Command, Event, Protocol, RedisConfig, RedisConnection, Value};

/// A connection on RESP2 with no handshake: ready at once.
pub fn resp2() -> RedisConnection {
    let mut config = RedisConfig::default();
    config.protocol = Protocol::Resp2;
    let mut conn = RedisConnection::new(config, Time::ZERO);
    assert!(matches!(conn.poll_event(), Some(Event::Ready { .. })));
    conn
}

/// A RESP3 connection whose `HELLO 3` has been answered.
pub fn resp3() -> RedisConnection {
    let mut conn = RedisConnection::new(RedisConfig::default(), Time::ZERO);
    assert_eq!(transmit(&mut conn), b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
    conn.handle_input(Time::ZERO, HELLO_REPLY);
    match conn.poll_event() {
        Some(Event::Ready { protocol, .. }) => assert_eq!(protocol, Protocol::Resp3),
        other => panic!("expected Ready, got {other:?}"),
    }
    conn
}

/// Redis 7.0's answer to `HELLO 3`, as recorded.
pub const HELLO_REPLY: &[u8] = b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:19\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";

/// Everything the connection wants to write.
pub fn transmit(conn: &mut RedisConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while conn.poll_transmit(&mut out).is_some() {}
    out
}

/// Every event waiting.
pub fn events(conn: &mut RedisConnection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

pub fn cmd(parts: &[&str]) -> Command {
    Command::from_parts(parts).expect("a command has a name")
}

pub fn bulk(s: &str) -> Value {
    Value::Bulk(s.as_bytes().to_vec())
}

/// Encodes `value` as RESP: RESP2 nulls (`$-1`) when `resp2`, RESP3's `_` otherwise.
pub fn encode(value: &Value, resp2: bool, out: &mut Vec<u8>) {
    let header = |out: &mut Vec<u8>, tag: u8, n: usize| {
        out.push(tag);
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    let blob = |out: &mut Vec<u8>, tag: u8, data: &[u8]| {
        header(out, tag, data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    };
    let line = |out: &mut Vec<u8>, tag: u8, text: &str| {
        out.push(tag);
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    match value {
        Value::Nil if resp2 => out.extend_from_slice(b"$-1\r\n"),
        Value::Nil => out.extend_from_slice(b"_\r\n"),
        Value::Simple(s) => line(out, b'+', s),
        Value::Bulk(b) => blob(out, b'$', b),
        Value::Int(i) => line(out, b':', &i.to_string()),
        Value::Double(d) => line(out, b',', &d.to_string()),
        Value::Bool(b) => line(out, b'#', if *b { "t" } else { "f" }),
        Value::BigNumber(n) => line(out, b'(', n),
        Value::Verbatim { format, text } => {
            let mut data = format.as_bytes().to_vec();
            data.push(b':');
            data.extend_from_slice(text);
            blob(out, b'=', &data);
        }
        Value::Error(e) => line(out, b'-', e.message()),
        Value::Array(items) | Value::Set(items) | Value::Push(items) => {
            let tag = match value {
                Value::Array(_) => b'*',
                Value::Set(_) => b'~',
                _ => b'>',
            };
            header(out, tag, items.len());
            for item in items {
                encode(item, resp2, out);
            }
        }
        Value::Map(pairs) => {
            header(out, b'%', pairs.len());
            for (k, v) in pairs {
                encode(k, resp2, out);
                encode(v, resp2, out);
            }
        }
        other => panic!("no encoding for {other:?}"),
    }
}

pub fn encoded(value: &Value, resp2: bool) -> Vec<u8> {
    let mut out = Vec::new();
    encode(value, resp2, &mut out);
    out
}
