//! The server binary under real signals: SIGTERM and Ctrl-C (SIGINT) stop accepting,
//! let running programs finish within the grace period, and exit 0.

mod support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A working directory with no `.env` in it.
fn empty_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("effectful-server-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("an empty working directory (no .env)");
    dir
}

/// Starts the binary on an OS-chosen port; returns it, its address, the log lines
/// up to "listening" and the rest of its log lines.
fn start_server(grace_seconds: &str) -> (Running, SocketAddr, Vec<String>, mpsc::Receiver<String>) {
    let dir = empty_dir();
    let child = Command::new(env!("CARGO_BIN_EXE_effectful-server"))
        .current_dir(&dir)
        .env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "info")
        .env("DATABASE_URL", "postgresql://app:hunter2@db:5432/app")
        .env("SHUTDOWN_GRACE_SECONDS", grace_seconds)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the effectful-server binary");
    let mut child = Running(child);
    let stderr = child.0.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server did not log that it is listening within 20 s");
        seen.push(line.clone());
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if json["message"] == "listening" {
            let addr = json["address"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no address in {line}"));
            return (child, addr, seen, rx);
        }
    }
}

/// The server process; killed and reaped if a test ends before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn signal(child: &Running, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.0.id().to_string())
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -{name} failed");
}

/// Waits (up to 30 s) until the server runs a program: the request sent on another
/// thread has arrived, however slowly that thread got going on a busy machine.
fn until_a_program_runs(addr: SocketAddr) {
    for _ in 0..3000 {
        let metrics = support::get(addr, "/metrics");
        if metrics
            .body
            .lines()
            .any(|l| l == "effectful_programs_in_progress 1")
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the server did not run the request's program within 30 s");
}

fn wait_exit(child: &mut Running) -> std::process::ExitStatus {
    for _ in 0..200 {
        if let Some(status) = child.0.try_wait().expect("wait") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the server did not exit within 10 s of the signal");
}

#[test]
fn sigterm_lets_a_running_program_finish_then_exits_0() {
    let (mut child, addr, seen, logs) = start_server("10");
    assert_eq!(support::get(addr, "/health").status, 200);

    let running = std::thread::spawn(move || support::get(addr, "/sleep?ms=700"));
    until_a_program_runs(addr);
    signal(&child, "TERM");

    let reply = running.join().expect("the request thread");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "slept 700 ms\n");
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "nothing accepts after shutdown"
    );
    let lines: Vec<String> = seen.into_iter().chain(logs.try_iter()).collect();
    assert!(
        lines.iter().any(|l| l.contains("app:***@db:5432")),
        "the settings are logged, redacted: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("SIGTERM: shutting down")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("hunter2")),
        "the database password reached the log: {lines:#?}"
    );
}

#[test]
fn ctrl_c_past_the_grace_period_aborts_the_program_and_still_exits_0() {
    let (mut child, addr, _, _logs) = start_server("0.2");
    let running = std::thread::spawn(move || support::get(addr, "/sleep?ms=30000"));
    until_a_program_runs(addr);
    signal(&child, "INT");

    let reply = running.join().expect("the request thread");
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.body.contains("stopped by shutdown"), "{reply:?}");
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn a_bad_setting_stops_the_binary_at_start_naming_the_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_effectful-server"))
        .current_dir(empty_dir())
        .env_clear()
        .env("LOG_LEVEL", "LOUD")
        .env("DATABASE_URL", "postgresql://u:hunter2@[db")
        .output()
        .expect("run the binary");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("LOG_LEVEL") && stderr.contains("DATABASE_URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
