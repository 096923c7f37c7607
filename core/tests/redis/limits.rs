//! Hostile and broken input: every declared length and the depth are refused before
//! anything is held for them, and the decoder is never reached past a limit.

use effectful::Time;
use effectful::redis::{ConnectionError, Event, FrameDecoder, Limits, ProtocolError, Value};

use crate::support::{cmd, resp2};

fn error_of(bytes: &[u8], limits: Limits) -> ProtocolError {
    match FrameDecoder::new(limits).decode(bytes) {
        Err(e) => e,
        other => panic!("expected an error for {bytes:?}, got {other:?}"),
    }
}

fn small() -> Limits {
    let mut limits = Limits::default();
    limits.max_bulk_len = 16;
    limits.max_aggregate_len = 4;
    limits.max_depth = 3;
    limits.max_line_len = 8;
    limits.max_frame_len = 64;
    limits
}

#[test]
fn a_huge_bulk_length_is_refused_from_its_header_alone() {
    assert_eq!(
        error_of(b"$17\r\n", small()),
        ProtocolError::BulkTooLong { len: 17, max: 16 }
    );
    assert_eq!(
        error_of(b"$9223372036854775807\r\n", Limits::default()),
        ProtocolError::BulkTooLong {
            len: i64::MAX as u64,
            max: 512 * 1024 * 1024
        }
    );
    // At the limit it is merely incomplete, and nothing but the header is held.
    assert_eq!(FrameDecoder::new(small()).decode(b"$16\r\n"), Ok(None));
}

#[test]
fn a_huge_aggregate_length_is_refused_from_its_header_alone() {
    for tag in ["*", "~", ">", "%", "|"] {
        assert_eq!(
            error_of(format!("{tag}5\r\n").as_bytes(), small()),
            ProtocolError::AggregateTooLong { len: 5, max: 4 },
            "{tag}"
        );
    }
}

#[test]
fn nesting_past_the_depth_limit_is_refused_without_recursing() {
    assert_eq!(
        error_of(b"*1\r\n*1\r\n*1\r\n*1\r\n", small()),
        ProtocolError::TooDeep { max: 3 }
    );
    assert_eq!(
        FrameDecoder::new(small())
            .decode(b"*1\r\n*1\r\n*1\r\n:1\r\n")
            .unwrap()
            .unwrap()
            .1,
        16
    );
    // A million levels: refused at the 33rd, with no stack to speak of.
    let deep = b"*1\r\n".repeat(1_000_000);
    assert_eq!(
        error_of(&deep, Limits::default()),
        ProtocolError::TooDeep { max: 32 }
    );
}

#[test]
fn the_deepest_allowed_nesting_decodes_on_a_test_thread() {
    let mut limits = Limits::default();
    limits.max_depth = 10_000;
    assert_eq!(limits.depth(), Limits::MAX_DEPTH);
    let mut frame = b"*1\r\n".repeat(Limits::MAX_DEPTH);
    frame.extend_from_slice(b":1\r\n");
    let (mut value, _) = FrameDecoder::new(limits).decode(&frame).unwrap().unwrap();
    let mut depth = 0;
    while let Value::Array(mut items) = value {
        depth += 1;
        value = items.pop().expect("one element");
    }
    assert_eq!((depth, value), (Limits::MAX_DEPTH, Value::Int(1)));
    let mut deeper = b"*1\r\n".repeat(Limits::MAX_DEPTH + 1);
    deeper.extend_from_slice(b":1\r\n");
    assert_eq!(
        error_of(&deeper, limits),
        ProtocolError::TooDeep {
            max: Limits::MAX_DEPTH
        }
    );
}

#[test]
fn a_frame_longer_than_allowed_is_refused_as_soon_as_it_is_known() {
    // Four 16-byte strings in an array: each alone is fine, together past 64 bytes.
    let mut frame = b"*4\r\n".to_vec();
    for _ in 0..4 {
        frame.extend_from_slice(b"$16\r\n0123456789abcdef\r\n");
    }
    assert!(matches!(
        error_of(&frame, small()),
        ProtocolError::FrameTooLong { max: 64, .. }
    ));
}

#[test]
fn a_line_without_its_crlf_is_refused_past_the_line_limit() {
    assert_eq!(
        error_of(b"+123456789", small()),
        ProtocolError::LineTooLong { max: 8 }
    );
    assert_eq!(FrameDecoder::new(small()).decode(b"+12345678\r"), Ok(None));
    assert_eq!(
        FrameDecoder::new(small())
            .decode(b"+12345678\r\n")
            .unwrap()
            .unwrap()
            .0,
        Value::Simple("12345678".into())
    );
}

#[test]
fn malformed_lengths_are_refused() {
    for bytes in [
        &b"$abc\r\n"[..],
        b"$-2\r\n",
        b"$ 5\r\n",
        b"$+5\r\n",
        b"$\r\n",
        b"*99999999999999999999\r\n",
        b"%-1\r\n",
        b"$123456789012345678901234",
    ] {
        assert!(
            matches!(
                error_of(bytes, Limits::default()),
                ProtocolError::BadLength { .. }
            ),
            "{bytes:?}"
        );
    }
}

#[test]
fn other_broken_frames_are_refused_with_their_reason() {
    let d = Limits::default();
    assert_eq!(error_of(b"$3\r\nfooXY", d), ProtocolError::MissingCrlf);
    assert_eq!(
        error_of(b"X\r\n", d),
        ProtocolError::UnknownType { byte: b'X' }
    );
    assert_eq!(
        error_of(b"HELLO 3\r\n", d),
        ProtocolError::UnknownType { byte: b'H' }
    );
    assert_eq!(
        error_of(b"$?\r\n", d),
        ProtocolError::Streamed { tag: b'$' }
    );
    assert_eq!(
        error_of(b"*?\r\n", d),
        ProtocolError::Streamed { tag: b'*' }
    );
    assert_eq!(
        error_of(b";4\r\nabcd\r\n", d),
        ProtocolError::Streamed { tag: b';' }
    );
    assert_eq!(
        error_of(b"=3\r\ntxt\r\n", d),
        ProtocolError::BadLength { tag: b'=' }
    );
    assert_eq!(
        error_of(b"*2\r\n$-1\r\n#t\r\n", d),
        ProtocolError::MixedNulls
    );
    for bytes in [
        &b":abc\r\n"[..],
        b"#x\r\n",
        b",notanumber\r\n",
        b"=5\r\nxyz:a\r\n",
        b"%1\r\n*0\r\n:1\r\n",
    ] {
        assert!(
            matches!(error_of(bytes, d), ProtocolError::Decode(_)),
            "{bytes:?}"
        );
    }
}

#[test]
fn a_protocol_error_closes_the_connection_and_fails_what_waits() {
    let mut conn = resp2();
    let id = conn.send(Time::ZERO, &cmd(&["GET", "k"])).unwrap();
    conn.handle_input(Time::ZERO, b"$99999999999\r\n");
    let evs: Vec<_> = std::iter::from_fn(|| conn.poll_event()).collect();
    assert!(matches!(&evs[0], Event::Reply { id: got, result: Err(_) } if *got == id));
    assert!(matches!(
        &evs[1],
        Event::Closed(ConnectionError::Protocol(ProtocolError::BulkTooLong { .. }))
    ));
    assert!(!ConnectionError::Protocol(ProtocolError::MissingCrlf).is_retryable());
}

#[test]
fn a_reply_arriving_one_byte_at_a_time_is_read_once_whole() {
    let mut conn = resp2();
    let id = conn.send(Time::ZERO, &cmd(&["GET", "k"])).unwrap();
    let value = vec![b'x'; 100_000];
    let mut reply = format!("${}\r\n", value.len()).into_bytes();
    reply.extend_from_slice(&value);
    reply.extend_from_slice(b"\r\n");
    for byte in &reply[..reply.len() - 1] {
        conn.handle_input(Time::ZERO, std::slice::from_ref(byte));
        assert_eq!(conn.poll_event(), None);
    }
    conn.handle_input(Time::ZERO, b"\n");
    assert_eq!(
        conn.poll_event(),
        Some(Event::Reply {
            id,
            result: Ok(Value::Bulk(value))
        })
    );
}
