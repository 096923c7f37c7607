//! A WebSocket client's bytes reach `WsSession` straight from the network: any bytes,
//! cut anywhere, with time passing between them, must end in events and bytes to send,
//! never a panic, and at most one close per session.
//!
//! The first byte picks the path: even, the handshake from raw bytes comes first (a
//! valid request is prepended when the second bit is set, so frames get fuzzed too);
//! odd, the session starts already upgraded. Each following byte below 8 cuts the
//! input there and advances the clock by that many seconds.
#![no_main]

use effectful::Time;
use effectful::websocket::{Acceptor, WsConfig, WsEvent, WsSession};
use libfuzzer_sys::fuzz_target;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a, b\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut config = WsConfig::default();
    config.max_message_size = 4096;
    config.max_frame_size = 1024;
    config.max_queued_bytes = 8192;
    config.max_request_bytes = 2048;
    let mut now = Time::ZERO;
    let mut session = if mode & 1 == 0 {
        let acceptor = Acceptor::new()
            .subprotocols(["b"])
            .origin_check(|origin| origin != Some("bad"));
        let mut session = WsSession::from_raw(config, acceptor, now);
        if mode & 2 != 0 {
            session.handle_input(now, REQUEST);
        }
        session
    } else {
        WsSession::upgraded(config, now)
    };
    let mut closes = 0;
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, &b) in rest.iter().enumerate() {
        if b < 8 {
            pieces.push((&rest[start..i], b));
            start = i + 1;
        }
    }
    pieces.push((&rest[start..], 0));
    for (chunk, seconds) in pieces {
        session.handle_input(now, chunk);
        now = now.saturating_add(std::time::Duration::from_secs(u64::from(seconds)));
        session.handle_timeout(now);
        while let Some(event) = session.poll_event() {
            if matches!(event, WsEvent::Closed(_)) {
                closes += 1;
            }
            if let WsEvent::Text(text) = event {
                // Echo, as a program would: exercises sending and the slow-client bound.
                let _ = session.handle_send(now, effectful::websocket::WsMessage::Text(text));
            }
        }
        if let Some(bytes) = session.poll_transmit() {
            // A slow socket: only half is written each time.
            session.handle_transmitted(bytes.len() / 2);
        }
    }
    session.handle_eof(now);
    while let Some(event) = session.poll_event() {
        if matches!(event, WsEvent::Closed(_)) {
            closes += 1;
        }
    }
    assert!(
        closes <= 1,
        "a session reports its end once, not {closes} times"
    );
    assert!(session.is_finished());
});
