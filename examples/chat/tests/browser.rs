//! The chat page in a real browser: headless Chromium driven through chromedriver
//! (the W3C WebDriver protocol, spoken here over plain HTTP) loads `/`, types a name,
//! joins, sends, and sees its own message and another client's.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const NEEDS: &str = "this test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; \
    scripts/test installs them when missing)";

/// The key under which WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wait_for<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 exchange with a JSON body; the status and the JSON answer.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).ok()?;
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).ok()?;
    // Read the head, then exactly Content-Length bytes: chromedriver may keep the
    // connection open whatever `Connection: close` says.
    let mut reply = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        reply.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&reply[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while reply.len() < head_end + length {
        let n = socket.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let json = serde_json::from_slice(&reply[head_end..]).unwrap_or(Value::Null);
    Some((status, json))
}

/// A WebDriver session on a chromedriver of its own.
struct Browser {
    port: u16,
    session: String,
    _driver: Process,
    profile: std::path::PathBuf,
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver: {e}\n{NEEDS}"));
        let driver = Process(driver);
        wait_for("chromedriver", || http(port, "GET", "/status", None));
        let profile =
            std::env::temp_dir().join(format!("effectful-chromium-{}-{port}", std::process::id()));
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or_else(|| panic!("no chromium binary\n{NEEDS}"));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let (status, answer) =
            http(port, "POST", "/session", Some(&capabilities)).expect("chromedriver answers");
        assert_eq!(status, 200, "new session: {answer}\n{NEEDS}");
        let session = answer["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Browser {
            port,
            session,
            _driver: driver,
            profile,
        }
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (status, answer) =
            http(self.port, method, &path, body.as_ref()).expect("chromedriver answers");
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({"url": url})));
    }

    fn find(&self, css: &str) -> String {
        let found = self.command(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        );
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.command(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    /// The text of every element matching `css`.
    fn texts(&self, css: &str) -> Vec<String> {
        let found = self.command(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        found
            .as_array()
            .map(|elements| {
                elements
                    .iter()
                    .filter_map(|e| e[ELEMENT].as_str())
                    .map(|id| {
                        self.command("GET", &format!("/element/{id}/text"), None)
                            .as_str()
                            .unwrap_or_default()
                            .to_owned()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[test]
fn a_person_joins_chats_and_sees_another_clients_message_in_the_browser() {
    let port = free_port();
    let server = Process(
        Command::new(env!("CARGO_BIN_EXE_chat_server"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("ENVIRONMENT", "test")
            .env("LOG_LEVEL", "WARNING")
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .spawn()
            .expect("start chat_server"),
    );
    wait_for("chat_server", || http(port, "GET", "/health", None));

    let browser = Browser::start();
    browser.goto(&format!("http://127.0.0.1:{port}/"));
    browser.type_into("#name", "alice");
    browser.click("#join");
    wait_for("the page to join", || {
        browser
            .texts("#status")
            .first()
            .filter(|s| s.contains("joined as alice"))
            .cloned()
    });
    browser.type_into("#text", "hello from the browser");
    browser.click("#send");
    wait_for("the page to show its own message", || {
        browser
            .texts("#messages li .text")
            .contains(&"hello from the browser".to_owned())
            .then_some(())
    });

    // Another client, over a WebSocket of its own.
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    io.block_on(async {
        let (mut bob, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws/chat"))
                .await
                .expect("connect");
        bob.send(Message::text(
            json!({"type": "join", "name": "bob"}).to_string(),
        ))
        .await
        .expect("join");
        let joined = bob.next().await.expect("a frame").expect("a frame");
        let joined: Value = serde_json::from_str(joined.to_text().expect("text")).expect("JSON");
        assert_eq!(joined["history"][0]["text"], "hello from the browser");
        bob.send(Message::text(
            json!({"type": "send", "text": "hello from bob"}).to_string(),
        ))
        .await
        .expect("send");
    });
    wait_for("the page to show bob's message", || {
        let names = browser.texts("#messages li .name");
        let texts = browser.texts("#messages li .text");
        (texts == ["hello from the browser", "hello from bob"] && names == ["alice", "bob"])
            .then_some(())
    });
    drop(browser);
    drop(server);
}
