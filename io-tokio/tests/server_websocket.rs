//! The WebSocket route over real loopback sockets, against an independent client
//! (tokio-tungstenite): the handshake, every frame type, the limits' close codes, the
//! program's deadline, a client that vanishes, a slow client, shutdown.

mod support;

use std::sync::mpsc;
use std::time::Duration;

use effectful::effect::{ReceiveText, SendText};
use effectful::websocket::WsConfig;
use effectful::{EngineConfig, ErrorKind, Fx};
use effectful_tokio::Runtime;
use effectful_tokio::server::{EffectfulRouter, WebSocketInterpreter, WsConnect, WsRoute};
use futures_util::{SinkExt, StreamExt};
use support::{TestServer, get};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const LIMIT: Duration = Duration::from_secs(10);

fn runtime(program_timeout: Option<Duration>) -> Runtime {
    Runtime::builder()
        .shards(2)
        .seed(12)
        .engine(EngineConfig {
            program_timeout,
            ..EngineConfig::default()
        })
        .interpreter("WebSocket", WebSocketInterpreter::new)
        .build()
        .expect("runtime")
}

/// Echoes text until the connection ends; reports how it ended (the close code the
/// program's `ReceiveText` or `SendText` failed with).
async fn echo(fx: Fx, ended: mpsc::Sender<u16>) {
    loop {
        let text = match fx.perform(ReceiveText {}).await {
            Ok(text) => text,
            Err(e) => {
                let _ = ended.send(closed_code(&e.kind));
                return;
            }
        };
        if let Err(e) = fx.perform(SendText { text }).await {
            let _ = ended.send(closed_code(&e.kind));
            return;
        }
    }
}

fn closed_code(kind: &ErrorKind) -> u16 {
    match kind {
        ErrorKind::WebSocketClosed { code, .. } => *code,
        other => panic!("a WebSocket effect failed with {other:?}, not WebSocketClosed"),
    }
}

/// An echo server; returns it, its runtime and how each program ended.
fn echo_server(
    route: WsRoute,
    program_timeout: Option<Duration>,
) -> (Runtime, TestServer, mpsc::Receiver<u16>) {
    let runtime = runtime(program_timeout);
    let (tx, rx) = mpsc::channel();
    let app = EffectfulRouter::new(runtime.handle().clone())
        .websocket("/ws", route, move |fx, _connect: WsConnect| {
            let ended = tx.clone();
            echo(fx, ended)
        })
        .into_router();
    let server = TestServer::start(app, runtime.handle().clone(), Duration::from_secs(2));
    (runtime, server, rx)
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a client runtime")
}

async fn connect(server: &TestServer) -> Client {
    let url = format!("ws://{}/ws", server.addr);
    let (client, response) = tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("the handshake within 10 s")
        .expect("the server accepts the upgrade");
    assert_eq!(response.status(), 101);
    client
}

/// The next message that is not a ping or pong (`None`: the stream ended).
async fn next(client: &mut Client) -> Option<Message> {
    loop {
        match tokio::time::timeout(LIMIT, client.next())
            .await
            .expect("a message within 10 s")
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return Some(message),
            Some(Err(_)) | None => return None,
        }
    }
}

/// Reads until the server's close frame; returns its code and reason.
async fn close_of(client: &mut Client) -> (u16, String) {
    loop {
        match next(client).await {
            Some(Message::Close(Some(CloseFrame { code, reason }))) => {
                return (u16::from(code), reason.to_string());
            }
            Some(Message::Close(None)) => return (1005, String::new()),
            Some(_) => continue,
            None => panic!("the connection ended without a close frame"),
        }
    }
}

fn ended_with(rx: &mpsc::Receiver<u16>) -> u16 {
    rx.recv_timeout(LIMIT)
        .expect("the program reports how its connection ended within 10 s")
}

#[test]
fn text_frames_echo_in_order_binary_is_dropped_ping_gets_pong_and_close_is_answered() {
    let (_runtime, server, ended) = echo_server(WsRoute::new(), None);
    client_runtime().block_on(async {
        let mut client = connect(&server).await;
        for i in 0..50 {
            client
                .send(Message::text(format!("message {i}")))
                .await
                .expect("send");
        }
        client
            .send(Message::binary(vec![1, 2, 3]))
            .await
            .expect("send binary");
        client
            .send(Message::text("after binary"))
            .await
            .expect("send");
        for i in 0..50 {
            assert_eq!(
                next(&mut client).await,
                Some(Message::text(format!("message {i}")))
            );
        }
        assert_eq!(
            next(&mut client).await,
            Some(Message::text("after binary")),
            "the binary message is dropped, and nothing else"
        );
        client
            .send(Message::Ping(b"are you there".to_vec().into()))
            .await
            .expect("ping");
        let pong = tokio::time::timeout(LIMIT, client.next())
            .await
            .expect("a pong within 10 s");
        assert!(
            matches!(&pong, Some(Ok(Message::Pong(p))) if p.as_ref() == b"are you there"),
            "{pong:?}"
        );
        client
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await
            .expect("close");
        // The server answers the close; the stream then ends.
        assert!(matches!(
            next(&mut client).await,
            Some(Message::Close(_)) | None
        ));
    });
    assert_eq!(ended_with(&ended), 1000, "the client's close code");
}

#[test]
fn a_refused_upgrade_gets_its_http_status_and_starts_no_program() {
    let (_runtime, server, ended) = echo_server(WsRoute::new(), None);
    let plain = get(server.addr, "/ws");
    assert_eq!(plain.status, 400, "{plain:?}");
    assert!(plain.body.contains("Upgrade: websocket"), "{plain:?}");
    let mut stream = std::net::TcpStream::connect(server.addr).expect("connect");
    use std::io::{Read, Write};
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .expect("send");
    stream
        .set_read_timeout(Some(LIMIT))
        .expect("a read timeout");
    let mut reply = [0u8; 512];
    let n = stream.read(&mut reply).expect("a reply");
    let reply = String::from_utf8_lossy(&reply[..n]).to_ascii_lowercase();
    assert!(reply.starts_with("http/1.1 426"), "{reply}");
    assert!(reply.contains("sec-websocket-version: 13"), "{reply}");
    assert!(
        ended.recv_timeout(Duration::from_millis(200)).is_err(),
        "no program ran for a refused upgrade"
    );
}

#[test]
fn a_frame_over_the_limit_closes_with_1009_and_the_program_sees_it() {
    let mut config = WsConfig::default();
    config.max_frame_size = 1024;
    config.max_message_size = 4096;
    let (_runtime, server, ended) = echo_server(WsRoute::new().config(config), None);
    client_runtime().block_on(async {
        let mut client = connect(&server).await;
        client.send(Message::text("small")).await.expect("send");
        assert_eq!(next(&mut client).await, Some(Message::text("small")));
        client
            .send(Message::text("x".repeat(2000)))
            .await
            .expect("send");
        assert_eq!(close_of(&mut client).await.0, 1009);
    });
    assert_eq!(ended_with(&ended), 1009);
}

#[test]
fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let (_runtime, server, ended) = echo_server(WsRoute::new(), None);
    client_runtime().block_on(async {
        let mut client = connect(&server).await;
        let bad = Frame::message(vec![0x66, 0xff, 0xfe, 0x6f], OpCode::Data(Data::Text), true);
        client.send(Message::Frame(bad)).await.expect("send");
        assert_eq!(close_of(&mut client).await.0, 1007);
    });
    assert_eq!(ended_with(&ended), 1007);
}

#[test]
fn a_program_past_its_deadline_closes_with_1008_timeout() {
    let (_runtime, server, _ended) = echo_server(WsRoute::new(), Some(Duration::from_millis(300)));
    client_runtime().block_on(async {
        let mut client = connect(&server).await;
        client.send(Message::text("hello")).await.expect("send");
        assert_eq!(next(&mut client).await, Some(Message::text("hello")));
        assert_eq!(close_of(&mut client).await, (1008, "Timeout".to_string()));
    });
}

#[test]
fn a_client_that_vanishes_fails_the_programs_receive_with_1006() {
    let (runtime, server, ended) = echo_server(WsRoute::new(), None);
    client_runtime().block_on(async {
        let mut client = connect(&server).await;
        client.send(Message::text("one")).await.expect("send");
        assert_eq!(next(&mut client).await, Some(Message::text("one")));
        // Dropped without a close frame: the TCP connection just ends.
        drop(client);
    });
    assert_eq!(ended_with(&ended), 1006);
    // The session is gone from the gauge once its task ended.
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let metrics = get(server.addr, "/metrics");
        if metrics.body.contains("effectful_websocket_sessions_open 0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gauge still counts the session: {}",
            metrics.body
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(runtime);
}

#[test]
fn open_sessions_are_counted_in_metrics() {
    let (_runtime, server, _ended) = echo_server(WsRoute::new(), None);
    let rt = client_runtime();
    rt.block_on(async {
        let mut a = connect(&server).await;
        let mut b = connect(&server).await;
        for client in [&mut a, &mut b] {
            client.send(Message::text("up")).await.expect("send");
            assert_eq!(next(client).await, Some(Message::text("up")));
        }
        let metrics = tokio::task::spawn_blocking({
            let addr = server.addr;
            move || get(addr, "/metrics")
        })
        .await
        .expect("metrics");
        assert!(
            metrics.body.contains("effectful_websocket_sessions_open 2"),
            "{}",
            metrics.body
        );
    });
}

#[test]
fn a_cancelled_receive_loses_no_frame() {
    let runtime = runtime(None);
    let app = EffectfulRouter::new(runtime.handle().clone())
        .websocket("/ws", WsRoute::new(), |fx, _connect| async move {
            // Waits for each frame under a time limit short enough to expire often
            // while frames are on their way: each expiry cancels the receive.
            loop {
                match fx
                    .perform_timeout(ReceiveText {}, Duration::from_micros(200))
                    .await
                {
                    Ok(text) => {
                        if fx.perform(SendText { text }).await.is_err() {
                            return;
                        }
                    }
                    Err(e) if matches!(e.kind, ErrorKind::WebSocketClosed { .. }) => return,
                    Err(_) => continue,
                }
            }
        })
        .into_router();
    let server = TestServer::start(app, runtime.handle().clone(), Duration::from_secs(1));
    client_runtime().block_on(async {
        let mut client = connect(&server).await;
        for i in 0..300 {
            client
                .send(Message::text(format!("{i}")))
                .await
                .expect("send");
            if i % 7 == 0 {
                tokio::time::sleep(Duration::from_micros(150)).await;
            }
        }
        for i in 0..300 {
            assert_eq!(next(&mut client).await, Some(Message::text(format!("{i}"))));
        }
    });
}

#[test]
fn a_client_that_reads_too_slowly_is_closed_with_1008_and_the_program_told() {
    let mut config = WsConfig::default();
    config.max_queued_bytes = 64 * 1024;
    config.close_timeout = Duration::from_secs(5);
    let runtime = runtime(None);
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let app = EffectfulRouter::new(runtime.handle().clone())
        .websocket("/ws", WsRoute::new().config(config), move |fx, _connect| {
            let report = tx.clone();
            async move {
                let chunk = "y".repeat(16 * 1024);
                for sent in 0.. {
                    if let Err(e) = fx
                        .perform(SendText {
                            text: chunk.clone(),
                        })
                        .await
                    {
                        let _ = report.send((sent, e.to_string()));
                        let _ = closed_code(&e.kind);
                        return;
                    }
                    // Let the socket take what it will.
                    fx.sleep(Duration::from_millis(1)).await;
                }
            }
        })
        .into_router();
    let server = TestServer::start(app, runtime.handle().clone(), Duration::from_secs(1));
    client_runtime().block_on(async {
        let mut client = connect(&server).await;
        // The client reads nothing until the server gave up on it.
        let (sent, error) =
            tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
                .await
                .expect("join")
                .expect("the program is told the client is too slow within 30 s");
        assert!(error.contains("Client too slow"), "{error}");
        assert!(
            sent >= 4,
            "the socket's buffers took some first ({sent} sent)"
        );
        let mut texts = 0;
        let code = loop {
            match next(&mut client).await {
                Some(Message::Text(_)) => texts += 1,
                Some(Message::Close(Some(frame))) => break u16::from(frame.code),
                other => panic!("after {texts} texts: {other:?}"),
            }
        };
        assert_eq!(code, 1008);
        assert_eq!(
            texts, sent,
            "every accepted message arrives, the refused one never"
        );
    });
}

#[test]
fn shutdown_closes_open_sessions_with_1001_and_lets_programs_finish() {
    let (runtime, server, ended) = echo_server(WsRoute::new(), None);
    let rt = client_runtime();
    let mut client = rt.block_on(async {
        let mut client = connect(&server).await;
        client.send(Message::text("hi")).await.expect("send");
        assert_eq!(next(&mut client).await, Some(Message::text("hi")));
        client
    });
    server.stop().expect("the server stops");
    rt.block_on(async {
        assert_eq!(close_of(&mut client).await.0, 1001);
    });
    assert_eq!(
        ended_with(&ended),
        1001,
        "the program saw the 1001 and ended"
    );
    let report = runtime.shutdown(Duration::from_secs(2));
    assert_eq!(report.finished_in_grace, 1, "{report:?}");
    assert_eq!(report.aborted, 0, "{report:?}");
}

#[test]
fn bursts_to_many_sessions_arrive_whole_and_in_order() {
    // Each program sends a burst without waiting between frames, small ones and
    // some larger than the socket takes at once (all within `max_queued_bytes`,
    // since the test reads one client at a time), so the shard's writer writes some
    // whole, coalesces others and hands the rest to each connection's task.
    const CLIENTS: usize = 16;
    const FRAMES: usize = 40;
    let frame = |i: usize| {
        let size = if i % 10 == 9 { 100 * 1024 } else { 20 + i * 7 };
        format!("{i}:{}", "z".repeat(size))
    };
    let runtime = runtime(None);
    let app = EffectfulRouter::new(runtime.handle().clone())
        .websocket("/ws", WsRoute::new(), move |fx, _connect| async move {
            // Start on the client's word, so every session is open first.
            if fx.perform(ReceiveText {}).await.is_err() {
                return;
            }
            for i in 0..FRAMES {
                if fx.perform(SendText { text: frame(i) }).await.is_err() {
                    return;
                }
            }
            let _ = fx.perform(ReceiveText {}).await;
        })
        .into_router();
    let server = TestServer::start(app, runtime.handle().clone(), Duration::from_secs(1));
    client_runtime().block_on(async {
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(connect(&server).await);
        }
        for client in &mut clients {
            client.send(Message::text("go")).await.expect("send");
        }
        for (c, client) in clients.iter_mut().enumerate() {
            for i in 0..FRAMES {
                match next(client).await {
                    Some(Message::Text(text)) => assert!(
                        text.as_str() == frame(i),
                        "client {c}, frame {i}: {} bytes starting {:?}",
                        text.len(),
                        &text.as_str()[..text.len().min(16)]
                    ),
                    other => panic!("client {c}, frame {i}: {other:?}"),
                }
            }
        }
    });
}
