//! One behaviour, two implementations: the simulator's WebSocket client model
//! (`effectful_test::sim`) and the real route (`EffectfulRouter::websocket` over
//! loopback, driven by tokio-tungstenite) run the same client scripts against the
//! same program, and must agree on what the program read, the close code its
//! effects failed with, the frames the client received (in order) and how the
//! connection ended.
//!
//! The cases: a client that closes (1000), one that vanishes (1006), one that
//! lingers until the program's deadline (1008), a program that returns with the
//! connection open (1000 from the server), a text over the limit (1009), and a client
//! that stops reading while the program floods it (1008 `Client too slow`). For the
//! last, the two agree on everything but how many frames were accepted before the
//! refusal: a real socket's buffers take some first, the model's none (it refuses
//! sooner, never later), so the test checks that count's relation, not equality.

mod support;

use std::sync::mpsc;
use std::time::Duration;

use effectful::effect::{ReceiveText, SendText};
use effectful::websocket::WsConfig;
use effectful::{EngineConfig, ErrorKind, Fx, Time};
use effectful_test::sim::{
    Connection, ConnectionEnd, ConnectionState, SimConfig, Simulation, WsLimits,
};
use effectful_tokio::Runtime;
use effectful_tokio::server::{EffectfulRouter, WebSocketInterpreter, WsRoute};
use futures_util::{SinkExt, StreamExt};
use support::TestServer;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const GAP: Duration = Duration::from_millis(10);
const DEADLINE: Duration = Duration::from_millis(800);
/// The limits both sides keep: the longest text a client may send, and what the
/// server holds for a client that stopped reading.
const LIMITS: WsLimits = WsLimits {
    max_message_size: 1024,
    max_queued_bytes: 64 * 1024,
};
/// What the program sends, over and over, when told to "flood".
const CHUNK: usize = 16 * 1024;

fn ws_config() -> WsConfig {
    let mut config = WsConfig::default();
    config.max_frame_size = LIMITS.max_message_size;
    config.max_message_size = LIMITS.max_message_size;
    config.max_queued_bytes = LIMITS.max_queued_bytes;
    config
}

/// What one run showed: the program's reads and the code its effects failed with
/// (`None`: it returned on "quit"), or `None` if it never returned (its deadline);
/// the client's received frames, and how the connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observed {
    program: Option<(Vec<String>, Option<u16>)>,
    client_received: Vec<String>,
    ended: ConnectionState,
}

/// Echoes each text; returns on "quit" (with the connection open); on "flood", sends
/// `CHUNK` bytes over and over until a send fails, then returns what it read, with one
/// entry per accepted chunk (`"sent"`) and the failure's reason.
async fn program(fx: Fx) -> (Vec<String>, Option<u16>) {
    let mut read = Vec::new();
    loop {
        match fx.perform(ReceiveText {}).await {
            Ok(text) if text == "quit" => return (read, None),
            Ok(text) if text == "flood" => loop {
                let chunk = "y".repeat(CHUNK);
                if let Err(e) = fx.perform(SendText { text: chunk }).await {
                    if let ErrorKind::WebSocketClosed { reason, .. } = &e.kind {
                        read.push(reason.clone());
                    }
                    return (read, code(&e.kind));
                }
                read.push("sent".into());
            },
            Ok(text) => {
                read.push(text.clone());
                if let Err(e) = fx.perform(SendText { text }).await {
                    return (read, code(&e.kind));
                }
            }
            Err(e) => return (read, code(&e.kind)),
        }
    }
}

fn code(kind: &ErrorKind) -> Option<u16> {
    match kind {
        ErrorKind::WebSocketClosed { code, .. } => Some(*code),
        other => panic!("a WebSocket effect failed with {other:?}"),
    }
}

fn script(messages: &[&str], end: ConnectionEnd) -> Connection {
    Connection {
        client: 0,
        connect_at: Time::ZERO,
        messages: messages.iter().map(|m| (GAP, m.to_string())).collect(),
        end,
    }
}

fn simulated(script: Connection) -> Observed {
    let mut config = SimConfig::new(3);
    config.program_timeout = Some(DEADLINE);
    config.websocket = LIMITS;
    let mut sim = Simulation::new(config, vec![script], |_, fx| program(fx));
    sim.run();
    let transcript = sim.transcripts()[0].clone();
    let program = match &sim.results()[0] {
        Some(Ok(output)) => Some(output.clone()),
        Some(Err(_)) | None => None,
    };
    Observed {
        program,
        client_received: transcript.received.iter().map(|(_, t)| t.clone()).collect(),
        ended: transcript.state,
    }
}

fn real(script: Connection) -> Observed {
    let runtime = Runtime::builder()
        .shards(1)
        .seed(3)
        .engine(EngineConfig {
            program_timeout: Some(DEADLINE),
            ..EngineConfig::default()
        })
        .interpreter("WebSocket", WebSocketInterpreter::new)
        .build()
        .expect("runtime");
    let (tx, rx) = mpsc::channel();
    let app = EffectfulRouter::new(runtime.handle().clone())
        .websocket(
            "/ws",
            WsRoute::new().config(ws_config()),
            move |fx, _connect| {
                let report = tx.clone();
                async move {
                    let output = program(fx).await;
                    let _ = report.send(output);
                }
            },
        )
        .into_router();
    let server = TestServer::start(app, runtime.handle().clone(), Duration::from_secs(1));
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a client runtime");
    // A program that returned while the client was not reading.
    let mut early = None;
    let (client_received, ended) = client.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr))
            .await
            .expect("the route accepts");
        let mut received = Vec::new();
        for (gap, text) in &script.messages {
            tokio::time::sleep(*gap).await;
            // A text over the limit is sent whole; the server's close may come first.
            let _ = ws.send(Message::text(text.clone())).await;
        }
        let mut ended = None;
        match script.end {
            ConnectionEnd::Close { after } => {
                tokio::time::sleep(after).await;
                // Read what was echoed before closing, as the model's client does.
                ws.close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                }))
                .await
                .expect("close");
                ended = Some(ConnectionState::ClosedByClient);
            }
            ConnectionEnd::Vanish { after } => {
                tokio::time::sleep(after).await;
                // Take what arrived, then drop the socket without a close frame. The
                // model's answers arrive at once; a real one's may lag on a busy
                // machine, so wait for as many as texts were sent (10 s at most),
                // then take anything more that is already there.
                let sent = script.messages.len();
                let mut limit = Duration::from_secs(10);
                while let Ok(Some(Ok(message))) = tokio::time::timeout(limit, ws.next()).await {
                    if let Message::Text(t) = message {
                        received.push(t.to_string());
                    }
                    if received.len() >= sent {
                        limit = Duration::from_millis(50);
                    }
                }
                drop(ws);
                return (received, ConnectionState::Vanished);
            }
            ConnectionEnd::Linger => {}
            // Read nothing until the program has been refused; then everything, and
            // the close.
            ConnectionEnd::StopReading => {
                let refused = std::time::Instant::now() + Duration::from_secs(30);
                while early.is_none() && std::time::Instant::now() < refused {
                    early = rx.try_recv().ok();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("the connection ends within 10 s")
            {
                Some(Ok(Message::Text(t))) => received.push(t.to_string()),
                Some(Ok(Message::Close(frame))) => {
                    let state = ended.unwrap_or(ConnectionState::ClosedByServer(
                        frame.map_or(1005, |f| u16::from(f.code)),
                    ));
                    return (received, state);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    return (received, ended.unwrap_or(ConnectionState::Vanished));
                }
            }
        }
    });
    // Once the router is gone, a program that never returned has no sender left:
    // `None`.
    server.stop().expect("the server stops");
    let program = early.or_else(|| rx.recv_timeout(Duration::from_secs(10)).ok());
    Observed {
        program,
        client_received,
        ended,
    }
}

fn agree(script: Connection, expected: Observed) {
    let sim = simulated(script.clone());
    let tokio = real(script);
    assert_eq!(sim, expected, "the simulator's model");
    assert_eq!(tokio, expected, "the real route");
}

#[test]
fn a_client_that_closes() {
    agree(
        script(&["a", "b", "c"], ConnectionEnd::Close { after: 5 * GAP }),
        Observed {
            program: Some((vec!["a".into(), "b".into(), "c".into()], Some(1000))),
            client_received: vec!["a".into(), "b".into(), "c".into()],
            ended: ConnectionState::ClosedByClient,
        },
    );
}

#[test]
fn a_client_that_vanishes() {
    agree(
        script(&["one", "two"], ConnectionEnd::Vanish { after: 5 * GAP }),
        Observed {
            program: Some((vec!["one".into(), "two".into()], Some(1006))),
            client_received: vec!["one".into(), "two".into()],
            ended: ConnectionState::Vanished,
        },
    );
}

#[test]
fn a_client_that_lingers_past_the_programs_deadline() {
    agree(
        script(&["x"], ConnectionEnd::Linger),
        Observed {
            program: None,
            client_received: vec!["x".into()],
            ended: ConnectionState::ClosedByServer(1008),
        },
    );
}

#[test]
fn a_program_that_returns_with_the_connection_open() {
    agree(
        script(&["p", "quit", "never read"], ConnectionEnd::Linger),
        Observed {
            program: Some((vec!["p".into()], None)),
            client_received: vec!["p".into()],
            ended: ConnectionState::ClosedByServer(1000),
        },
    );
}

#[test]
fn a_text_over_the_limit_closes_with_1009_and_never_reaches_the_program() {
    let too_long = "x".repeat(LIMITS.max_message_size + 1);
    agree(
        script(&["fits", &too_long], ConnectionEnd::Linger),
        Observed {
            program: Some((vec!["fits".into()], Some(1009))),
            client_received: vec!["fits".into()],
            ended: ConnectionState::ClosedByServer(1009),
        },
    );
}

#[test]
fn a_client_that_stops_reading_is_closed_with_1008_and_gets_every_accepted_frame() {
    let observe = |observed: Observed| {
        let (read, code) = observed.program.expect("the program returns");
        let (reason, sends) = read.split_last().expect("the failure's reason");
        assert_eq!(reason, "Client too slow");
        assert_eq!(code, Some(1008));
        assert!(sends.iter().all(|s| s == "sent"), "{sends:?}");
        assert_eq!(
            observed.client_received.len(),
            sends.len(),
            "every accepted frame arrives, the refused one never"
        );
        assert!(observed.client_received.iter().all(|t| t.len() == CHUNK));
        assert_eq!(observed.ended, ConnectionState::ClosedByServer(1008));
        sends.len()
    };
    let flood = script(&["flood"], ConnectionEnd::StopReading);
    let modelled = observe(simulated(flood.clone()));
    let real = observe(real(flood));
    // The model holds at most the limit and nothing in socket buffers: it accepts
    // exactly as many chunks as fit, the real route those and what the socket took.
    assert_eq!(modelled, LIMITS.max_queued_bytes / (CHUNK + 4));
    assert!(real >= modelled, "real {real} < modelled {modelled}");
}
