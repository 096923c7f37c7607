//! Worked examples for `WsSession`: the handshake, each frame kind, each close code, the
//! timers on a virtual clock, the slow-client bound, and bytes split at every point.

use std::time::Duration;

use effectful::policy::Disconnect;
use effectful::websocket::{
    Acceptor, HandshakeError, UpgradeRequest, WsConfig, WsEvent, WsMessage, WsSendError, WsSession,
};
use effectful::{ProgramError, Time};
use proptest::prelude::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

fn request_with(extra: &str) -> Vec<u8> {
    format!(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// A client frame: masked, as RFC 6455 requires of clients.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    masked_or_not(fin, opcode, payload, true)
}

fn masked_or_not(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(mask_bit | 126);
            out.extend((n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend((n as u64).to_be_bytes());
        }
    }
    if masked {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        out.extend(mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend(payload);
    }
    out
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend(reason.as_bytes());
    p
}

/// A frame the server sent: (fin, opcode, payload).
#[derive(Debug, PartialEq, Eq)]
struct ServerFrame(bool, u8, Vec<u8>);

impl ServerFrame {
    fn close_code(&self) -> Option<u16> {
        (self.1 == CLOSE && self.2.len() >= 2).then(|| u16::from_be_bytes([self.2[0], self.2[1]]))
    }
}

/// Decodes the server's frames; asserts they are unmasked (a server never masks).
fn server_frames(mut bytes: &[u8]) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let fin = bytes[0] & 0x80 != 0;
        let opcode = bytes[0] & 0x0f;
        assert_eq!(bytes[1] & 0x80, 0, "a server frame must not be masked");
        let (len, header) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&bytes[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            n => (n as usize, 2),
        };
        frames.push(ServerFrame(
            fin,
            opcode,
            bytes[header..header + len].to_vec(),
        ));
        bytes = &bytes[header + len..];
    }
    frames
}

/// Drains the session as the drain rule asks: every event, every byte to transmit.
fn drain(session: &mut WsSession) -> (Vec<WsEvent>, Vec<u8>) {
    let mut events = Vec::new();
    while let Some(event) = session.poll_event() {
        events.push(event);
    }
    let bytes = session
        .poll_transmit()
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    session.handle_transmitted(bytes.len());
    (events, bytes)
}

fn quiet_config() -> WsConfig {
    let mut config = WsConfig::default();
    config.keepalive_interval = None;
    config.idle_timeout = None;
    config
}

/// A session past the handshake from raw bytes, with its events and bytes drained.
fn open_session(config: WsConfig) -> WsSession {
    let mut session = WsSession::from_raw(config, Acceptor::new(), Time::ZERO);
    session.handle_input(Time::ZERO, &request_with(""));
    let (events, bytes) = drain(&mut session);
    assert_eq!(events, [WsEvent::Opened { subprotocol: None }]);
    assert!(bytes.starts_with(b"HTTP/1.1 101 "));
    session
}

fn send_client(
    session: &mut WsSession,
    now: Time,
    bytes: &[u8],
) -> (Vec<WsEvent>, Vec<ServerFrame>) {
    session.handle_input(now, bytes);
    let (events, out) = drain(session);
    (events, server_frames(&out))
}

fn refusal(extra: &str, acceptor: Acceptor) -> (HandshakeError, String) {
    let mut session = WsSession::from_raw(quiet_config(), acceptor, Time::ZERO);
    session.handle_input(Time::ZERO, &request_with(extra));
    let (events, bytes) = drain(&mut session);
    assert!(session.is_finished());
    match events.as_slice() {
        [WsEvent::Rejected(e)] => (e.clone(), String::from_utf8_lossy(&bytes).into_owned()),
        other => panic!("expected one rejection, got {other:?}"),
    }
}

// ---- handshake ----

#[test]
fn a_session_and_an_acceptor_can_move_to_the_thread_that_serves_the_connection() {
    fn moves_between_threads<T: Send + 'static>() {}
    moves_between_threads::<WsSession>();
    fn shared_by_threads<T: Send + Sync + 'static>() {}
    shared_by_threads::<Acceptor>();
}

#[test]
fn a_valid_upgrade_from_raw_bytes_is_answered_101_with_the_rfc_accept_key() {
    let mut session = WsSession::from_raw(quiet_config(), Acceptor::new(), Time::ZERO);
    session.handle_input(Time::ZERO, &request_with(""));
    let (events, bytes) = drain(&mut session);
    assert_eq!(events, [WsEvent::Opened { subprotocol: None }]);
    let response = String::from_utf8(bytes).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{response}"
    );
    assert!(
        response.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")),
        "{response}"
    );
    assert!(response.ends_with("\r\n\r\n"));
    assert!(!session.is_finished());
}

#[test]
fn a_key_that_is_not_sixteen_bytes_of_base64_is_refused_with_400() {
    let mut bad = request_with("");
    let text = String::from_utf8(bad.clone())
        .unwrap()
        .replace(KEY, "c2hvcnQ=");
    bad = text.into_bytes();
    let mut session = WsSession::from_raw(quiet_config(), Acceptor::new(), Time::ZERO);
    session.handle_input(Time::ZERO, &bad);
    let (events, bytes) = drain(&mut session);
    assert_eq!(events, [WsEvent::Rejected(HandshakeError::BadKey)]);
    assert!(bytes.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    assert!(session.is_finished());
}

#[test]
fn a_wrong_version_is_refused_with_426_naming_version_13() {
    let acceptor = Acceptor::new();
    let request = UpgradeRequest {
        method: "GET",
        http_1_1_or_later: true,
        headers: &[
            ("upgrade", b"WebSocket"),
            ("connection", b"Upgrade"),
            ("sec-websocket-version", b"8"),
            ("sec-websocket-key", KEY.as_bytes()),
        ],
    };
    let refused = acceptor.accept(&request).unwrap_err();
    assert_eq!(refused, HandshakeError::WrongVersion("8".into()));
    assert_eq!(refused.status(), 426);
    let response = String::from_utf8(refused.response_bytes()).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{response}"
    );
    assert!(
        response.contains("Sec-WebSocket-Version: 13\r\n"),
        "{response}"
    );
}

#[test]
fn an_origin_the_check_refuses_gets_403() {
    let acceptor = Acceptor::new().origin_check(|o| o == Some("https://ok.example"));
    let (refused, response) = refusal("Origin: https://evil.example\r\n", acceptor.clone());
    assert_eq!(
        refused,
        HandshakeError::OriginRefused(Some("https://evil.example".into()))
    );
    assert!(
        response.starts_with("HTTP/1.1 403 Forbidden\r\n"),
        "{response}"
    );
    let (missing, _) = refusal("", acceptor.clone());
    assert_eq!(missing, HandshakeError::OriginRefused(None));

    let mut admitted = WsSession::from_raw(quiet_config(), acceptor, Time::ZERO);
    admitted.handle_input(Time::ZERO, &request_with("Origin: https://ok.example\r\n"));
    assert_eq!(
        drain(&mut admitted).0,
        [WsEvent::Opened { subprotocol: None }]
    );
}

#[test]
fn the_servers_most_preferred_subprotocol_that_the_client_offered_is_chosen() {
    let acceptor = Acceptor::new().subprotocols(["graphql-ws", "chat.v2", "chat.v1"]);
    let mut session = WsSession::from_raw(quiet_config(), acceptor.clone(), Time::ZERO);
    session.handle_input(
        Time::ZERO,
        &request_with("Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n"),
    );
    let (events, bytes) = drain(&mut session);
    assert_eq!(
        events,
        [WsEvent::Opened {
            subprotocol: Some("chat.v2".into())
        }]
    );
    assert!(
        String::from_utf8(bytes)
            .unwrap()
            .contains("Sec-WebSocket-Protocol: chat.v2\r\n")
    );

    let mut none_shared = WsSession::from_raw(quiet_config(), acceptor, Time::ZERO);
    none_shared.handle_input(
        Time::ZERO,
        &request_with("Sec-WebSocket-Protocol: mqtt\r\n"),
    );
    let (events, bytes) = drain(&mut none_shared);
    assert_eq!(events, [WsEvent::Opened { subprotocol: None }]);
    assert!(
        !String::from_utf8(bytes)
            .unwrap()
            .contains("Sec-WebSocket-Protocol")
    );
}

#[test]
fn other_bad_requests_get_their_own_status() {
    let post = b"POST /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let mut session = WsSession::from_raw(quiet_config(), Acceptor::new(), Time::ZERO);
    session.handle_input(Time::ZERO, post);
    assert_eq!(
        drain(&mut session).0,
        [WsEvent::Rejected(HandshakeError::WrongMethod(
            "POST".into()
        ))]
    );

    let (no_upgrade, _) = {
        let mut s = WsSession::from_raw(quiet_config(), Acceptor::new(), Time::ZERO);
        s.handle_input(Time::ZERO, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let (events, bytes) = drain(&mut s);
        (events, bytes)
    };
    assert_eq!(
        no_upgrade,
        [WsEvent::Rejected(HandshakeError::NotAnUpgrade)]
    );

    let mut garbage = WsSession::from_raw(quiet_config(), Acceptor::new(), Time::ZERO);
    garbage.handle_input(Time::ZERO, b"\x16\x03\x01 not http\r\n\r\n");
    assert!(matches!(
        drain(&mut garbage).0.as_slice(),
        [WsEvent::Rejected(HandshakeError::Malformed(_))]
    ));
}

#[test]
fn a_request_longer_than_the_limit_is_refused_with_431_before_it_ends() {
    let mut config = quiet_config();
    config.max_request_bytes = 256;
    let mut session = WsSession::from_raw(config, Acceptor::new(), Time::ZERO);
    session.handle_input(Time::ZERO, b"GET /ws HTTP/1.1\r\n");
    assert_eq!(drain(&mut session).0, []);
    let long_header = format!("X-Padding: {}\r\n", "a".repeat(300));
    session.handle_input(Time::ZERO, long_header.as_bytes());
    let (events, bytes) = drain(&mut session);
    assert_eq!(
        events,
        [WsEvent::Rejected(HandshakeError::TooLarge { limit: 256 })]
    );
    assert!(bytes.starts_with(b"HTTP/1.1 431 "));
}

#[test]
fn a_handshake_not_finished_within_the_idle_timeout_is_refused_with_408() {
    let mut config = quiet_config();
    config.idle_timeout = Some(Duration::from_secs(10));
    let mut session = WsSession::from_raw(config, Acceptor::new(), Time::ZERO);
    session.handle_input(Time::ZERO, b"GET /ws HTTP/1.1\r\n");
    assert_eq!(session.poll_timeout(), Some(Time::from_secs(10)));
    session.handle_timeout(Time::from_secs(9));
    assert_eq!(drain(&mut session).0, []);
    session.handle_timeout(Time::from_secs(10));
    let (events, bytes) = drain(&mut session);
    assert_eq!(events, [WsEvent::Rejected(HandshakeError::Timeout)]);
    assert!(bytes.starts_with(b"HTTP/1.1 408 "));
}

#[test]
fn a_request_parsed_by_an_http_server_then_the_bytes_it_read_past_it_open_a_session() {
    let accepted = Acceptor::new()
        .accept(&UpgradeRequest {
            method: "GET",
            http_1_1_or_later: true,
            headers: &[
                ("Upgrade", b"websocket"),
                ("Connection", b"Upgrade"),
                ("Sec-WebSocket-Version", b"13"),
                ("Sec-WebSocket-Key", KEY.as_bytes()),
            ],
        })
        .unwrap();
    assert_eq!(accepted.accept_key, ACCEPT);
    let mut session = WsSession::upgraded(quiet_config(), Time::ZERO);
    let (events, frames) = send_client(
        &mut session,
        Time::ZERO,
        &client_frame(true, TEXT, b"early"),
    );
    assert_eq!(events, [WsEvent::Text("early".into())]);
    assert_eq!(frames, []);
}

// ---- frames ----

#[test]
fn text_and_binary_messages_arrive_as_events_in_order() {
    let mut session = open_session(quiet_config());
    let mut bytes = client_frame(true, TEXT, "héllo".as_bytes());
    bytes.extend(client_frame(true, BINARY, &[0, 1, 2, 255]));
    let (events, frames) = send_client(&mut session, Time::ZERO, &bytes);
    assert_eq!(
        events,
        [
            WsEvent::Text("héllo".into()),
            WsEvent::Binary(vec![0, 1, 2, 255])
        ]
    );
    assert_eq!(frames, []);
}

#[test]
fn the_server_sends_text_binary_and_ping_frames_unmasked() {
    let mut session = open_session(quiet_config());
    session
        .handle_send(Time::ZERO, WsMessage::Text("hi".into()))
        .unwrap();
    session
        .handle_send(Time::ZERO, WsMessage::Binary(vec![9; 300]))
        .unwrap();
    session
        .handle_send(Time::ZERO, WsMessage::Ping(b"are you there".to_vec()))
        .unwrap();
    let (_, out) = drain(&mut session);
    assert_eq!(
        server_frames(&out),
        [
            ServerFrame(true, TEXT, b"hi".to_vec()),
            ServerFrame(true, BINARY, vec![9; 300]),
            ServerFrame(true, PING, b"are you there".to_vec()),
        ]
    );
    assert_eq!(
        session.handle_send(Time::ZERO, WsMessage::Ping(vec![0; 126])),
        Err(WsSendError::PingTooBig(126))
    );
}

#[test]
fn a_clients_ping_is_answered_with_a_pong_flushed_by_the_same_read() {
    let mut session = open_session(quiet_config());
    let (events, frames) = send_client(&mut session, Time::ZERO, &client_frame(true, PING, b"p1"));
    assert_eq!(events, []);
    assert_eq!(frames, [ServerFrame(true, PONG, b"p1".to_vec())]);
}

#[test]
fn a_clients_pong_is_taken_silently() {
    let mut session = open_session(quiet_config());
    let (events, frames) = send_client(&mut session, Time::ZERO, &client_frame(true, PONG, b"x"));
    assert_eq!((events, frames), (vec![], vec![]));
    assert!(!session.is_finished());
}

#[test]
fn a_fragmented_message_arrives_whole_with_a_ping_between_its_fragments() {
    let mut session = open_session(quiet_config());
    let mut bytes = client_frame(false, TEXT, b"Hel");
    bytes.extend(client_frame(true, PING, b""));
    bytes.extend(client_frame(false, CONTINUATION, b"lo, "));
    bytes.extend(client_frame(true, CONTINUATION, b"World"));
    let (events, frames) = send_client(&mut session, Time::ZERO, &bytes);
    assert_eq!(events, [WsEvent::Text("Hello, World".into())]);
    assert_eq!(frames, [ServerFrame(true, PONG, vec![])]);
}

// ---- close codes ----

#[test]
fn a_client_close_is_echoed_and_ends_the_session_with_its_code() {
    let mut session = open_session(quiet_config());
    let (events, frames) = send_client(
        &mut session,
        Time::ZERO,
        &client_frame(true, CLOSE, &close_payload(1000, "bye")),
    );
    assert_eq!(
        events,
        [WsEvent::Closed(Disconnect::ClientClosed { code: 1000 })]
    );
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].close_code(), Some(1000));
    assert!(session.is_finished());
    assert_eq!(
        session.handle_send(Time::ZERO, WsMessage::Text("late".into())),
        Err(WsSendError::Closed(Some(Disconnect::ClientClosed {
            code: 1000
        })))
    );
}

fn program_end_closes_with(result: Result<(), ProgramError>, code: u16, reason: &str) {
    let mut session = open_session(quiet_config());
    session.handle_program_end(Time::ZERO, &result);
    let (events, out) = drain(&mut session);
    assert_eq!(events, []);
    let frames = server_frames(&out);
    assert_eq!(
        frames,
        [ServerFrame(true, CLOSE, close_payload(code, reason))]
    );
    assert!(!session.is_finished(), "waits for the client's close frame");
    let (events, frames) = send_client(
        &mut session,
        Time::ZERO,
        &client_frame(true, CLOSE, &close_payload(code, "")),
    );
    assert_eq!(events, [WsEvent::Closed(Disconnect::ServerClosed { code })]);
    assert_eq!(frames, []);
    assert!(session.is_finished());
}

#[test]
fn a_program_that_returns_closes_with_1000() {
    program_end_closes_with(Ok(()), 1000, "");
}

#[test]
fn an_aborted_program_closes_with_1001() {
    program_end_closes_with(Err(ProgramError::Aborted), 1001, "");
}

#[test]
fn a_program_past_its_deadline_closes_with_1008_timeout() {
    program_end_closes_with(
        Err(ProgramError::DeadlineExceeded {
            deadline: Time::from_secs(300),
        }),
        1008,
        "Timeout",
    );
}

#[test]
fn a_failed_program_closes_with_1011_internal_error() {
    program_end_closes_with(
        Err(ProgramError::Panicked {
            message: "boom".into(),
        }),
        1011,
        "Internal error",
    );
}

#[test]
fn shutdown_closes_with_1001_and_gives_up_on_a_silent_client_after_the_close_timeout() {
    let mut config = quiet_config();
    config.close_timeout = Duration::from_secs(5);
    let mut session = open_session(config);
    session.handle_shutdown(Time::from_secs(1));
    let (_, out) = drain(&mut session);
    assert_eq!(server_frames(&out)[0].close_code(), Some(1001));
    assert_eq!(session.poll_timeout(), Some(Time::from_secs(6)));
    session.handle_timeout(Time::from_secs(5));
    assert!(!session.is_finished());
    session.handle_timeout(Time::from_secs(6));
    assert_eq!(
        drain(&mut session).0,
        [WsEvent::Closed(Disconnect::ServerClosed { code: 1001 })]
    );
    assert!(session.is_finished());
    assert_eq!(session.poll_timeout(), None);
}

/// Feeds `bytes` to an open session and asserts it fails the connection with `code`.
fn fails_with(config: WsConfig, bytes: &[u8], code: u16) {
    let mut session = open_session(config);
    let (events, frames) = send_client(&mut session, Time::ZERO, bytes);
    assert_eq!(
        events,
        [WsEvent::Closed(Disconnect::ServerClosed { code })],
        "{frames:?}"
    );
    assert_eq!(
        frames.last().and_then(ServerFrame::close_code),
        Some(code),
        "{frames:?}"
    );
    assert!(session.is_finished());
    // Whatever comes after is ignored.
    session.handle_input(Time::ZERO, &client_frame(true, TEXT, b"more"));
    assert_eq!(drain(&mut session), (vec![], vec![]));
}

#[test]
fn invalid_utf8_in_a_text_message_closes_with_1007() {
    fails_with(
        quiet_config(),
        &client_frame(true, TEXT, &[b'a', 0xff, 0xfe]),
        1007,
    );
}

#[test]
fn a_message_over_the_limit_closes_with_1009_even_in_small_fragments() {
    let mut config = quiet_config();
    config.max_message_size = 10;
    let mut bytes = client_frame(false, BINARY, &[1; 6]);
    bytes.extend(client_frame(true, CONTINUATION, &[1; 6]));
    fails_with(config, &bytes, 1009);
}

#[test]
fn a_frame_header_announcing_more_than_the_frame_limit_closes_with_1009_before_the_payload() {
    let mut config = quiet_config();
    config.max_frame_size = 1000;
    let whole = client_frame(true, BINARY, &[0; 5000]);
    // Only the header and mask: the payload never arrives.
    fails_with(config, &whole[..8], 1009);
}

#[test]
fn an_unmasked_client_frame_closes_with_1002() {
    fails_with(
        quiet_config(),
        &masked_or_not(true, TEXT, b"hi", false),
        1002,
    );
}

#[test]
fn a_client_that_vanishes_is_reported_once() {
    let mut session = open_session(quiet_config());
    session.handle_eof(Time::ZERO);
    assert_eq!(
        drain(&mut session).0,
        [WsEvent::Closed(Disconnect::ClientVanished)]
    );
    session.handle_eof(Time::ZERO);
    assert_eq!(drain(&mut session).0, []);
    assert_eq!(session.disconnect(), Some(Disconnect::ClientVanished));
}

// ---- timers ----

#[test]
fn keepalive_pings_go_out_when_the_client_is_quiet_and_its_pongs_keep_it_alive() {
    let mut config = quiet_config();
    config.keepalive_interval = Some(Duration::from_secs(30));
    config.idle_timeout = Some(Duration::from_secs(75));
    let mut session = open_session(config);
    assert_eq!(session.poll_timeout(), Some(Time::from_secs(30)));
    session.handle_timeout(Time::from_secs(29));
    assert_eq!(drain(&mut session), (vec![], vec![]));
    session.handle_timeout(Time::from_secs(30));
    let (_, out) = drain(&mut session);
    assert_eq!(server_frames(&out), [ServerFrame(true, PING, vec![])]);
    assert_eq!(session.poll_timeout(), Some(Time::from_secs(60)));
    // The pong counts as hearing from the client: the idle deadline moves.
    send_client(
        &mut session,
        Time::from_secs(31),
        &client_frame(true, PONG, b""),
    );
    assert_eq!(session.poll_timeout(), Some(Time::from_secs(61)));
    session.handle_timeout(Time::from_secs(61));
    session.handle_timeout(Time::from_secs(91));
    let (events, out) = drain(&mut session);
    assert_eq!(events, []);
    assert_eq!(server_frames(&out).len(), 2);
    // No answer to those pings: idle since 31 s, closed at 106 s with 1008.
    assert_eq!(session.poll_timeout(), Some(Time::from_secs(106)));
    session.handle_timeout(Time::from_secs(106));
    let (events, out) = drain(&mut session);
    assert_eq!(
        events,
        [WsEvent::Closed(Disconnect::ServerClosed { code: 1008 })]
    );
    assert_eq!(
        server_frames(&out),
        [ServerFrame(
            true,
            CLOSE,
            close_payload(1008, "Idle timeout")
        )]
    );
}

// ---- slow clients ----

#[test]
fn a_client_too_slow_to_read_is_refused_more_and_closed_with_1008() {
    let mut config = quiet_config();
    config.max_queued_bytes = 1000;
    let mut session = open_session(config);
    // Nothing is reported written: the bytes pile up.
    for _ in 0..4 {
        session
            .handle_send(Time::ZERO, WsMessage::Binary(vec![0; 200]))
            .unwrap();
    }
    assert_eq!(
        session.queued(),
        4 * (4 + 200),
        "each with a four-byte header"
    );
    let refused = session.handle_send(Time::ZERO, WsMessage::Binary(vec![0; 200]));
    assert_eq!(
        refused,
        Err(WsSendError::SlowClient {
            queued: 816,
            message: 200,
            limit: 1000
        })
    );
    let (events, out) = drain(&mut session);
    assert_eq!(
        events,
        [WsEvent::Closed(Disconnect::ServerClosed { code: 1008 })]
    );
    let frames = server_frames(&out);
    assert_eq!(
        frames.len(),
        5,
        "the four queued messages, then the close frame"
    );
    assert_eq!(
        frames[4],
        ServerFrame(true, CLOSE, close_payload(1008, "Client too slow"))
    );
}

#[test]
fn bytes_reported_written_make_room_for_more() {
    let mut config = quiet_config();
    config.max_queued_bytes = 500;
    let mut session = open_session(config);
    for _ in 0..10 {
        session
            .handle_send(Time::ZERO, WsMessage::Binary(vec![0; 200]))
            .unwrap();
        let waiting = session.poll_transmit().map_or(0, <[u8]>::len);
        // A socket that takes half of what waits each time still keeps up.
        session.handle_transmitted(waiting / 2 + 1);
    }
    assert!(!session.is_finished());
}

// ---- bytes split at every point ----

/// A recorded client conversation: the upgrade, a fragmented text, a ping, binary,
/// and a close.
fn recorded_client_bytes() -> Vec<u8> {
    let mut bytes = request_with("Sec-WebSocket-Protocol: chat\r\n");
    bytes.extend(client_frame(false, TEXT, "héllo ".as_bytes()));
    bytes.extend(client_frame(true, PING, b"keep"));
    bytes.extend(client_frame(true, CONTINUATION, "wörld".as_bytes()));
    bytes.extend(client_frame(true, BINARY, &[7; 300]));
    bytes.extend(client_frame(true, CLOSE, &close_payload(1000, "done")));
    bytes
}

fn run_in_chunks(bytes: &[u8], cuts: &[usize]) -> (Vec<WsEvent>, Vec<u8>) {
    let mut session = WsSession::from_raw(
        quiet_config(),
        Acceptor::new().subprotocols(["chat"]),
        Time::ZERO,
    );
    let mut events = Vec::new();
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain([bytes.len()].iter()) {
        session.handle_input(Time::ZERO, &bytes[start..cut]);
        let (e, o) = drain(&mut session);
        events.extend(e);
        out.extend(o);
        start = cut;
    }
    (events, out)
}

#[test]
fn a_recorded_conversation_split_at_every_single_point_gives_the_same_events_and_bytes() {
    let bytes = recorded_client_bytes();
    let whole = run_in_chunks(&bytes, &[]);
    assert_eq!(
        whole.0,
        [
            WsEvent::Opened {
                subprotocol: Some("chat".into())
            },
            WsEvent::Text("héllo wörld".into()),
            WsEvent::Binary(vec![7; 300]),
            WsEvent::Closed(Disconnect::ClientClosed { code: 1000 }),
        ]
    );
    for cut in 0..=bytes.len() {
        assert_eq!(run_in_chunks(&bytes, &[cut]), whole, "split at {cut}");
    }
}

proptest! {
    #[test]
    fn a_recorded_conversation_in_any_chunks_gives_the_same_events_and_bytes(
        mut cuts in proptest::collection::vec(0usize..1000, 0..40)
    ) {
        let bytes = recorded_client_bytes();
        let whole = run_in_chunks(&bytes, &[]);
        for cut in &mut cuts {
            *cut %= bytes.len() + 1;
        }
        cuts.sort_unstable();
        prop_assert_eq!(run_in_chunks(&bytes, &cuts), whole);
    }

    #[test]
    fn arbitrary_bytes_after_the_handshake_never_panic_and_end_in_one_close_at_most(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)
    ) {
        let mut session = open_session(quiet_config());
        let mut closes = 0;
        for chunk in &chunks {
            session.handle_input(Time::ZERO, chunk);
            let (events, _) = drain(&mut session);
            closes += events.iter().filter(|e| matches!(e, WsEvent::Closed(_))).count();
        }
        session.handle_eof(Time::ZERO);
        let (events, _) = drain(&mut session);
        closes += events.iter().filter(|e| matches!(e, WsEvent::Closed(_))).count();
        prop_assert_eq!(closes, 1);
        prop_assert!(session.is_finished());
    }
}
