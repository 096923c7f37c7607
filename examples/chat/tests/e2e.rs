//! The chat server end to end, as users run it: real processes (`chat_server`), real
//! sockets, PostgreSQL and Redis. Two instances share one room through PostgreSQL;
//! clients on each see every message once, in one order; history on join; malformed
//! frames; the program timeout's 1008; Redis restarted mid-conversation (a throwaway
//! server) without a stored message missed; `chat_load`'s report of a short run; the
//! README's first command on a bare machine (in memory, said in the log) and
//! `ENVIRONMENT=production`'s refusal without the URLs. Each test on PostgreSQL keeps
//! to a schema of its own.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};

#[path = "../../../io-tokio/tests/pg_support/mod.rs"]
mod pg_support;

use pg_support::{Schema, psql};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const NEEDS: &str = "these tests need PostgreSQL 15 on 127.0.0.1:5432 (trust auth, database \"test\") with psql, \
    and redis-server on PATH; scripts/services starts PostgreSQL and Redis (apt-get install postgresql-15 redis-server)";

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A throwaway `redis-server`, restartable on its port.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Redis {
        let mut redis = Redis {
            port: free_port(),
            child: None,
        };
        redis.restart();
        redis
    }

    fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server: {e}\n{NEEDS}"));
        self.child = Some(child);
        wait_for(&format!("redis-server on {}", self.port), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// One `chat_server` process, killed when dropped.
struct Server {
    port: u16,
    child: Child,
}

impl Server {
    fn start(env: &[(&str, String)]) -> Server {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_chat_server"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("LOG_LEVEL", "WARNING")
            .env("ENVIRONMENT", "test")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .spawn()
            .expect("start chat_server");
        let server = Server { port, child };
        wait_for("chat_server to answer /health", || {
            server.health().is_some()
        });
        server
    }

    /// `/health`'s status code, if it answers.
    fn health(&self) -> Option<u16> {
        self.get("/health")?.split(' ').nth(1)?.parse().ok()
    }

    /// The whole HTTP reply to `GET path`, if it answers.
    fn get(&self, path: &str) -> Option<String> {
        use std::io::{Read, Write};
        let mut socket = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        socket.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        socket.write_all(request.as_bytes()).ok()?;
        let mut reply = String::new();
        socket.read_to_string(&mut reply).ok()?;
        Some(reply)
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws/chat", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Client {
    socket: Socket,
}

impl Client {
    async fn connect(server: &Server) -> Client {
        let (socket, _) = tokio_tungstenite::connect_async(server.url())
            .await
            .expect("connect to /ws/chat");
        Client { socket }
    }

    async fn send(&mut self, frame: Value) {
        self.socket
            .send(Message::text(frame.to_string()))
            .await
            .expect("send");
    }

    /// The next text frame as JSON.
    async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .expect("a frame within 10 s")
                .expect("the connection is open")
                .expect("a frame");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
                Message::Close(close) => panic!("closed by the server: {close:?}"),
                _ => {}
            }
        }
    }

    async fn join(server: &Server, name: &str) -> (Client, Value) {
        let mut client = Client::connect(server).await;
        client.send(json!({"type": "join", "name": name})).await;
        let joined = client.next().await;
        assert_eq!(joined["type"], "joined", "{joined}");
        (client, joined)
    }

    /// The next `message` frame's text.
    async fn message(&mut self) -> String {
        let frame = self.next().await;
        assert_eq!(frame["type"], "message", "{frame}");
        frame["text"].as_str().expect("a text").to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_room_and_every_client_sees_each_message_once() {
    let schema = Schema::new("rooms");
    let redis = Redis::start();
    let env = [("DATABASE_URL", schema.url()), ("REDIS_URL", redis.url())];
    let one = Server::start(&env);
    let two = Server::start(&env);

    let (mut alice, joined) = Client::join(&one, "alice").await;
    assert_eq!(joined["history"], json!([]));
    let (mut amy, _) = Client::join(&one, "amy").await;
    let (mut bob, _) = Client::join(&two, "bob").await;

    let mut sent = Vec::new();
    for (i, who) in [0, 2, 1, 0, 2].into_iter().enumerate() {
        let text = format!("message {i}");
        let client = match who {
            0 => &mut alice,
            1 => &mut amy,
            _ => &mut bob,
        };
        client.send(json!({"type": "send", "text": text})).await;
        sent.push(text);
        // Every client, the sender included, on both instances, gets it once, in order.
        for client in [&mut alice, &mut amy, &mut bob] {
            assert_eq!(client.message().await, sent[i]);
        }
    }
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM {}.chat_room_messages",
            schema.name
        )),
        "5",
        "each message is stored once"
    );

    // A late joiner gets the history, oldest first, with the authors' names.
    let (_carol, joined) = Client::join(&two, "carol").await;
    let history: Vec<(&str, &str)> = joined["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or(""),
                m["text"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            ("alice", "message 0"),
            ("bob", "message 1"),
            ("amy", "message 2"),
            ("alice", "message 3"),
            ("bob", "message 4")
        ]
    );
    // /metrics: the sessions open and the PostgreSQL and Redis pools' shares in use.
    wait_for("/metrics to show the pools", || {
        one.get("/metrics").is_some_and(|m| {
            m.contains("effectful_pool_utilization{pool=\"database\"}")
                && m.contains("effectful_pool_utilization{pool=\"redis\"}")
                && m.contains("effectful_websocket_sessions_open 2")
        })
    });
    // The same name joins as the same user, on either instance.
    let (_again, joined) = Client::join(&two, "alice").await;
    let (_, first) = Client::join(&one, "alice").await;
    assert_eq!(joined["user_id"], first["user_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_an_error_and_the_connection_stays_open() {
    let server = Server::start(&[]);
    let mut client = Client::connect(&server).await;
    for (frame, says) in [
        ("not json", "malformed"),
        (r#"{"type":"dance"}"#, "dance"),
        (r#"{"type":"send","text":"too early"}"#, "join"),
        (r#"{"type":"join"}"#, "name"),
    ] {
        client
            .socket
            .send(Message::text(frame))
            .await
            .expect("send");
        let error = client.next().await;
        assert_eq!(error["type"], "error", "{frame} -> {error}");
        let text = error["error"].as_str().unwrap_or("").to_lowercase();
        assert!(text.contains(says), "{frame} -> {error}");
    }
    client.send(json!({"type": "join", "name": "dora"})).await;
    assert_eq!(client.next().await["type"], "joined");
    client
        .send(json!({"type": "send", "text": "still here"}))
        .await;
    assert_eq!(client.message().await, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_program_timeout_closes_the_session_with_1008() {
    let server = Server::start(&[("PROGRAM_TIMEOUT_SECONDS", "1".to_owned())]);
    let (mut client, _) = Client::join(&server, "erin").await;
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), client.socket.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => break frame,
            Ok(Some(Ok(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(closed.code), 1008, "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_conversation_loses_no_stored_message() {
    let schema = Schema::new("redis_restart");
    let mut redis = Redis::start();
    let env = [("DATABASE_URL", schema.url()), ("REDIS_URL", redis.url())];
    let one = Server::start(&env);
    let two = Server::start(&env);
    let (mut a, _) = Client::join(&one, "frank").await;
    let (mut b, _) = Client::join(&two, "grace").await;

    let mut expected = Vec::new();
    for phase in ["before", "while down", "after"] {
        if phase == "while down" {
            redis.stop();
            wait_for("/health to say 503", || one.health() == Some(503));
        }
        if phase == "after" {
            redis.restart();
            wait_for("/health to say 200", || one.health() == Some(200));
        }
        for i in 0..3 {
            let text = format!("{phase} {i}");
            a.send(json!({"type": "send", "text": text})).await;
            expected.push(text);
        }
    }
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    for _ in 0..expected.len() {
        seen_a.push(a.message().await);
        seen_b.push(b.message().await);
    }
    assert_eq!(seen_a, expected);
    assert_eq!(seen_b, expected);
    let stored: Vec<String> = psql(&format!(
        "SELECT text FROM {}.chat_room_messages ORDER BY seq",
        schema.name
    ))
    .lines()
    .map(str::to_owned)
    .collect();
    assert_eq!(stored, expected);
}

/// `chat_load`, the tool behind the load figures, against a server on PostgreSQL and
/// Redis: its report counts every delivery of a short run, none missing, no errors,
/// and latencies for each delivery after the warm-up.
#[test]
fn chat_load_counts_every_delivery_of_a_short_run() {
    let schema = Schema::new("load");
    let redis = Redis::start();
    let server = Server::start(&[("DATABASE_URL", schema.url()), ("REDIS_URL", redis.url())]);
    let output = Command::new(env!("CARGO_BIN_EXE_chat_load"))
        .args(["--url", &server.url(), "--clients", "20", "--rate", "20"])
        .args(["--duration", "2s", "--warmup", "1s", "--json"])
        .output()
        .expect("run chat_load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "chat_load failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON report");
    assert_eq!(report["connected"], 20, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["deliveries_missing"], 0, "{report}");
    let sent = report["messages_sent"].as_u64().expect("messages_sent");
    // 20 a second for 3 s, give or take the first and last tick and a busy machine.
    assert!((30..=70).contains(&sent), "{report}");
    // Every client gets every message, its own included.
    assert_eq!(report["deliveries"].as_u64(), Some(sent * 20), "{report}");
    let latency = &report["latency_ms"];
    let samples = latency["samples"].as_u64().expect("samples");
    assert!(
        samples > 0 && samples < sent * 20,
        "only after the warm-up: {report}"
    );
    let (p50, p99, max) = (
        latency["p50"].as_f64().unwrap(),
        latency["p99"].as_f64().unwrap(),
        latency["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{report}");
    // The stored messages are the ones it sent, once each.
    let stored = psql(&format!(
        "SELECT count(*) FROM {}.chat_room_messages",
        schema.name
    ));
    assert_eq!(stored.parse::<u64>().ok(), Some(sent), "{report}");
}

/// `chat_server` started the way a newcomer starts it, in a fresh directory (no
/// `.env`) with only `PATH`, `HOST`, `PORT` and `env`: its stderr is piped.
fn spawn_bare(port: u16, env: &[(&str, &str)]) -> (Child, std::path::PathBuf) {
    let dir =
        std::env::temp_dir().join(format!("effectful-chat-bare-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a fresh directory");
    let child = Command::new(env!("CARGO_BIN_EXE_chat_server"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .envs(env.iter().copied())
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chat_server");
    (child, dir)
}

/// The README's first command on a bare machine: no `DATABASE_URL`, no `REDIS_URL`,
/// no `ENVIRONMENT`. The server runs in memory, says so in its log, and chats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_bare_machine_the_server_runs_in_memory_and_says_so() {
    use std::io::Read;
    let port = free_port();
    let (child, dir) = spawn_bare(port, &[]);
    let mut server = Server { port, child };
    wait_for("chat_server to answer /health on a bare machine", || {
        server.health() == Some(200)
    });
    let (mut alice, _) = Client::join(&server, "alice").await;
    alice.send(json!({"type": "send", "text": "hello"})).await;
    assert_eq!(alice.message().await, "hello");

    let _ = server.child.kill();
    let _ = server.child.wait();
    let mut log = String::new();
    server
        .child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut log)
        .expect("read the log");
    assert!(
        log.contains("DATABASE_URL is not set: the room lives in this process's memory")
            && log.contains("REDIS_URL is not set: the cache lives in this process's memory"),
        "the log says where the room and the cache live: {log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `ENVIRONMENT=production` said without the URLs (a mistyped variable): the server
/// refuses to start, saying which are missing, rather than keep the room in memory.
#[test]
fn production_without_its_urls_refuses_to_start() {
    use std::io::Read;
    for said in ["production", "Production"] {
        let port = free_port();
        let (mut child, dir) = spawn_bare(port, &[("ENVIRONMENT", said)]);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for chat_server") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ENVIRONMENT={said} without URLs: chat_server kept running");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut error = String::new();
        child
            .stderr
            .take()
            .expect("piped stderr")
            .read_to_string(&mut error)
            .expect("read stderr");
        assert_eq!(status.code(), Some(2), "ENVIRONMENT={said}: {error}");
        assert!(
            error.contains("needs DATABASE_URL and REDIS_URL"),
            "ENVIRONMENT={said}: {error}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
