//! Every reply type, as the bytes Redis sends and the value they become.

use effectful::redis::{FrameDecoder, Limits, ServerError, ServerErrorKind, Value};

use crate::support::bulk;

fn decode_one(bytes: &[u8]) -> Value {
    let mut decoder = FrameDecoder::new(Limits::default());
    let (value, used) = decoder
        .decode(bytes)
        .expect("a valid frame")
        .expect("a whole frame");
    assert_eq!(used, bytes.len(), "the frame is all of {bytes:?}");
    value
}

#[test]
fn resp2_reply_types_decode_to_values() {
    assert_eq!(decode_one(b"+OK\r\n"), Value::Simple("OK".into()));
    assert_eq!(decode_one(b":-42\r\n"), Value::Int(-42));
    assert_eq!(decode_one(b"$5\r\nhello\r\n"), bulk("hello"));
    assert_eq!(decode_one(b"$0\r\n\r\n"), Value::Bulk(Vec::new()));
    assert_eq!(decode_one(b"$-1\r\n"), Value::Nil);
    assert_eq!(decode_one(b"*-1\r\n"), Value::Nil);
    assert_eq!(decode_one(b"*0\r\n"), Value::Array(vec![]));
    assert_eq!(
        decode_one(b"*3\r\n$1\r\na\r\n$-1\r\n:7\r\n"),
        Value::Array(vec![bulk("a"), Value::Nil, Value::Int(7)])
    );
    assert_eq!(
        decode_one(b"-ERR unknown command\r\n"),
        Value::Error(ServerError::parse("ERR unknown command"))
    );
}

#[test]
fn bulk_strings_are_binary_safe() {
    assert_eq!(
        decode_one(b"$4\r\n\r\n\0\xff\r\n"),
        Value::Bulk(vec![b'\r', b'\n', 0, 0xff])
    );
}

#[test]
fn resp3_reply_types_decode_to_values() {
    assert_eq!(decode_one(b"_\r\n"), Value::Nil);
    assert_eq!(decode_one(b",3.25\r\n"), Value::Double(3.25));
    assert_eq!(decode_one(b",inf\r\n"), Value::Double(f64::INFINITY));
    assert_eq!(decode_one(b"#t\r\n"), Value::Bool(true));
    assert_eq!(decode_one(b"#f\r\n"), Value::Bool(false));
    assert_eq!(
        decode_one(b"(3492890328409238509324850943850943825024385\r\n"),
        Value::BigNumber("3492890328409238509324850943850943825024385".into())
    );
    assert_eq!(
        decode_one(b"=15\r\ntxt:Some string\r\n"),
        Value::Verbatim {
            format: "txt".into(),
            text: b"Some string".to_vec()
        }
    );
    assert_eq!(
        decode_one(b"~2\r\n$1\r\na\r\n$1\r\nb\r\n"),
        Value::Set(vec![bulk("a"), bulk("b")])
    );
    assert_eq!(
        decode_one(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"),
        Value::Push(vec![bulk("invalidate"), Value::Array(vec![bulk("k")])])
    );
    assert_eq!(
        decode_one(b"!21\r\nSYNTAX invalid syntax\r\n"),
        Value::Error(ServerError::parse("SYNTAX invalid syntax"))
    );
}

#[test]
fn a_map_keeps_the_order_the_server_sent() {
    let value = decode_one(b"%3\r\n$1\r\nz\r\n:1\r\n$1\r\na\r\n:2\r\n$1\r\nm\r\n:3\r\n");
    assert_eq!(
        value,
        Value::Map(vec![
            (bulk("z"), Value::Int(1)),
            (bulk("a"), Value::Int(2)),
            (bulk("m"), Value::Int(3)),
        ])
    );
}

#[test]
fn attributes_are_read_and_dropped() {
    // An attribute before a top-level reply, and one before an array element.
    let bytes = b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:1\r\n|1\r\n+ttl\r\n:5\r\n:2\r\n";
    assert_eq!(
        decode_one(bytes),
        Value::Array(vec![Value::Int(1), Value::Int(2)])
    );
}

#[test]
fn errors_inside_an_exec_reply_stay_in_place() {
    let value = decode_one(
        b"*2\r\n+OK\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
    );
    let Value::Array(items) = value else {
        panic!("an array")
    };
    assert_eq!(items[0], Value::Simple("OK".into()));
    let Value::Error(e) = &items[1] else {
        panic!("an error")
    };
    assert_eq!(e.kind(), &ServerErrorKind::WrongType);
}

#[test]
fn consecutive_frames_decode_one_at_a_time() {
    let bytes = b"+OK\r\n:1\r\n$-1\r\n";
    let mut decoder = FrameDecoder::new(Limits::default());
    let mut at = 0;
    let mut values = Vec::new();
    while let Some((value, used)) = decoder.decode(&bytes[at..]).expect("valid") {
        values.push(value);
        at += used;
    }
    assert_eq!(at, bytes.len());
    assert_eq!(
        values,
        vec![Value::Simple("OK".into()), Value::Int(1), Value::Nil]
    );
}

#[test]
fn values_survive_json() {
    let value = Value::Array(vec![
        Value::Double(f64::NEG_INFINITY),
        Value::Error(ServerError::parse("MOVED 12 10.0.0.1:7000")),
        Value::Map(vec![(bulk("k"), Value::Bool(true))]),
    ]);
    let json = serde_json::to_string(&value).expect("serializes");
    let back: Value = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, value);
}
