//! Bytes from a Redis server are outside input: any bytes, in any pieces, must give a
//! connection that reads replies or closes with a clear error, never a panic, and the
//! frame decoder must reach the same outcome however the bytes are split.
#![no_main]

use effectful::Time;
use effectful::redis::{Command, Event, FrameDecoder, Limits, Protocol, RedisConfig, RedisConnection};
use libfuzzer_sys::fuzz_target;

/// Values, then the first error, reading `chunks` one after another.
fn decode(chunks: &[&[u8]], limits: Limits) -> (Vec<effectful::redis::Value>, Option<String>) {
    let mut decoder = FrameDecoder::new(limits);
    let mut buf = Vec::new();
    let mut values = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&buf) {
                Ok(Some((value, used))) => {
                    values.push(value);
                    buf.drain(..used);
                }
                Ok(None) => break,
                Err(e) => return (values, Some(e.to_string())),
            }
        }
    }
    (values, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let mut limits = Limits::default();
    limits.max_bulk_len = 1 << 16;
    limits.max_aggregate_len = 1 << 10;
    limits.max_frame_len = 1 << 20;
    // Pieces of 1 to 16 bytes, from the control byte.
    let piece = usize::from(control & 0x0f) + 1;
    let pieces: Vec<&[u8]> = bytes.chunks(piece).collect();
    assert_eq!(decode(&[bytes], limits), decode(&pieces, limits));

    let mut config = RedisConfig::default();
    config.limits = limits;
    config.protocol = if control & 0x10 == 0 { Protocol::Resp2 } else { Protocol::Resp3 };
    let mut conn = RedisConnection::new(config, Time::ZERO);
    let commands = [
        Command::new("GET").arg("k"),
        Command::new("SUBSCRIBE").arg("a").arg("b"),
        Command::new("UNSUBSCRIBE"),
        Command::new("HELLO").arg("2"),
        Command::new("PING"),
    ];
    let mut sent = 0usize;
    let mut replies = 0usize;
    let mut closed = false;
    for (i, chunk) in pieces.iter().enumerate() {
        if let Ok(_id) = conn.send(Time::from_millis(i as u64), &commands[i % commands.len()]) {
            sent += 1;
        }
        let mut out = Vec::new();
        while conn.poll_transmit(&mut out).is_some() {}
        conn.handle_input(Time::from_millis(i as u64), chunk);
        if control & 0x20 != 0 {
            conn.handle_timeout(Time::from_secs(i as u64));
        }
        while let Some(event) = conn.poll_event() {
            assert!(!closed, "nothing follows Closed");
            match event {
                Event::Reply { .. } => replies += 1,
                Event::Closed(_) => closed = true,
                _ => {}
            }
        }
    }
    conn.handle_disconnect(Time::MAX);
    while let Some(event) = conn.poll_event() {
        match event {
            Event::Reply { .. } => replies += 1,
            Event::Closed(_) => closed = true,
            _ => {}
        }
    }
    assert!(closed);
    assert_eq!(replies, sent, "every command gets exactly one reply");
});
