//! `WsSession` against an independent client: tungstenite's own blocking client talks
//! over a real loopback socket to a server that drives `WsSession` with a plain
//! blocking loop (the shape any driver takes: read, hand in, drain, write).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use effectful::policy::Disconnect;
use effectful::websocket::{Acceptor, WsConfig, WsEvent, WsMessage, WsSession};
use effectful::{ProgramError, Time};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Error, Message};

/// Serves one connection: echoes text and binary, ends the "program" with `Ok` when the
/// client sends `bye`, and returns every event the session produced.
fn serve_one(listener: TcpListener, config: WsConfig) -> Vec<WsEvent> {
    let (mut socket, _) = listener.accept().expect("accept the test client");
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("set a read timeout");
    let start = Instant::now();
    let now = || Time::from_nanos(start.elapsed().as_nanos() as u64);
    let acceptor = Acceptor::new().subprotocols(["echo.v1"]);
    let mut session = WsSession::from_raw(config, acceptor, now());
    let mut log = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut events = Vec::new();
        while let Some(event) = session.poll_event() {
            events.push(event);
        }
        for event in &events {
            match event {
                WsEvent::Text(t) if t == "bye" => {
                    session.handle_program_end(now(), &Ok::<(), ProgramError>(()))
                }
                WsEvent::Text(t) => {
                    let _ = session.handle_send(now(), WsMessage::Text(t.clone()));
                }
                WsEvent::Binary(b) => {
                    let _ = session.handle_send(now(), WsMessage::Binary(b.clone()));
                }
                _ => {}
            }
        }
        log.extend(events);
        if let Some(bytes) = session.poll_transmit() {
            let n = bytes.len();
            socket.write_all(bytes).expect("write to the test client");
            session.handle_transmitted(n);
        }
        if session.is_finished() && session.poll_transmit().is_none() {
            // Dropping the socket closes it: the server closes TCP first (RFC 6455).
            return log;
        }
        match socket.read(&mut buf) {
            Ok(0) => session.handle_eof(now()),
            Ok(n) => session.handle_input(now(), &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                session.handle_timeout(now())
            }
            Err(_) => session.handle_eof(now()),
        }
    }
}

fn start_server(config: WsConfig) -> (String, thread::JoinHandle<Vec<WsEvent>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let url = format!("ws://{}/ws", listener.local_addr().expect("local address"));
    (url, thread::spawn(move || serve_one(listener, config)))
}

type Client = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

fn connect(url: &str) -> Client {
    let mut request = url.into_client_request().expect("a valid URL");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "echo.v0, echo.v1".parse().expect("a header value"),
    );
    let (client, response) = tungstenite::connect(request).expect("handshake with WsSession");
    assert_eq!(response.status(), 101);
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.as_bytes()),
        Some(&b"echo.v1"[..])
    );
    client
}

/// Reads until the server's close frame, returning its code; the client answers it.
fn read_until_close(client: &mut Client) -> Option<CloseCode> {
    loop {
        match client.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| f.code),
            Ok(_) => {}
            Err(e) => panic!("expected the server's close frame, got {e}"),
        }
    }
}

#[test]
fn tungstenites_client_gets_every_frame_kind_echoed_and_a_normal_close() {
    let (url, server) = start_server(WsConfig::default());
    let mut client = connect(&url);

    client.send(Message::text("hello")).unwrap();
    assert_eq!(client.read().unwrap(), Message::text("hello"));
    client.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(client.read().unwrap(), Message::binary(vec![1, 2, 3]));
    client.send(Message::Ping(b"p".to_vec().into())).unwrap();
    assert_eq!(client.read().unwrap(), Message::Pong(b"p".to_vec().into()));
    let long = "x".repeat(70_000);
    client.send(Message::text(long.clone())).unwrap();
    assert_eq!(client.read().unwrap(), Message::text(long));

    client.send(Message::text("bye")).unwrap();
    assert_eq!(read_until_close(&mut client), Some(CloseCode::Normal));
    // The client's reply went out on that read; the server then closes TCP.
    match client.read() {
        Err(Error::ConnectionClosed) => {}
        other => panic!("expected the connection to end cleanly, got {other:?}"),
    }

    let events = server.join().expect("the server thread");
    assert_eq!(
        events.first(),
        Some(&WsEvent::Opened {
            subprotocol: Some("echo.v1".into())
        })
    );
    assert_eq!(
        events.last(),
        Some(&WsEvent::Closed(Disconnect::ServerClosed { code: 1000 }))
    );
}

#[test]
fn tungstenites_client_sending_too_much_gets_1009_and_a_client_close_ends_the_session() {
    let mut config = WsConfig::default();
    config.max_message_size = 1000;
    let (url, server) = start_server(config);
    let mut client = connect(&url);
    client.send(Message::binary(vec![0; 1001])).unwrap();
    assert_eq!(read_until_close(&mut client), Some(CloseCode::Size));
    let events = server.join().expect("the server thread");
    assert_eq!(
        events.last(),
        Some(&WsEvent::Closed(Disconnect::ServerClosed { code: 1009 }))
    );

    let (url, server) = start_server(WsConfig::default());
    let mut client = connect(&url);
    client.close(None).unwrap();
    loop {
        match client.read() {
            Ok(_) => {}
            Err(Error::ConnectionClosed) => break,
            Err(e) => panic!("expected a clean close, got {e}"),
        }
    }
    let events = server.join().expect("the server thread");
    assert_eq!(
        events.last(),
        Some(&WsEvent::Closed(Disconnect::ClientClosed { code: 1005 }))
    );
}
