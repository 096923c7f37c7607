//! `redis_cmd` against the real server, its output compared byte for byte with
//! `redis-cli --raw` for the same commands.

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const URL: &str = "redis://127.0.0.1:6379/0";
const START_REDIS: &str = "Redis 7 must answer on 127.0.0.1:6379 and `redis-cli` be on PATH; \
    start it with `redis-server --daemonize yes --port 6379` (scripts/services does this), \
    or install it with `apt-get install redis-server`";

fn redis_cmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_redis_cmd"))
        .args(args)
        .output()
        .expect("run redis_cmd")
}

fn redis_cli(args: &[&str]) -> Output {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "--raw"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}); {START_REDIS}"))
}

/// Runs a command that changes nothing through both tools, asserts they print the
/// same, returns the output.
fn same(args: &[&str]) -> Vec<u8> {
    let theirs = redis_cli(args);
    assert!(
        theirs.status.success(),
        "redis-cli failed on {args:?}: {}\n{START_REDIS}",
        String::from_utf8_lossy(&theirs.stderr)
    );
    let ours = ours(args);
    assert_eq!(
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&theirs.stdout),
        "{args:?}: redis_cmd and redis-cli --raw differ"
    );
    ours
}

/// Runs `args` through `redis_cmd` alone (for commands that change something).
fn ours(args: &[&str]) -> Vec<u8> {
    let out = redis_cmd(&[&[URL], args].concat());
    assert!(
        out.status.success(),
        "redis_cmd failed on {args:?}: {}\n{START_REDIS}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn prints_every_reply_shape_as_redis_cli_raw_does() {
    let p = format!("effectful-redis-cmd-{}:", std::process::id());
    let key = |k: &str| format!("{p}{k}");
    let (s, l, h, n, missing) = (key("s"), key("l"), key("h"), key("n"), key("missing"));
    // A status, a bulk with spaces and a newline, nil, an integer.
    assert_eq!(ours(&["SET", &s, "two words\nand a line"]), b"OK\n");
    assert_eq!(same(&["GET", &s]), b"two words\nand a line\n");
    assert_eq!(same(&["GET", &missing]), b"\n");
    assert_eq!(ours(&["INCR", &n]), b"1\n");
    assert_eq!(same(&["GET", &n]), b"1\n");
    assert_eq!(same(&["PING"]), b"PONG\n");
    // Arrays: empty strings inside, nested arrays, an empty array.
    assert_eq!(ours(&["RPUSH", &l, "a", "", "c"]), b"3\n");
    assert_eq!(same(&["LRANGE", &l, "0", "-1"]), b"a\n\nc\n");
    assert_eq!(same(&["LRANGE", &missing, "0", "-1"]), b"\n");
    assert_eq!(
        same(&["EVAL", "return {1,{2,'x'},'y'}", "0"]),
        b"1\n2\nx\ny\n"
    );
    assert_eq!(ours(&["HSET", &h, "a", "1", "b", "2"]), b"2\n");
    assert_eq!(same(&["HGETALL", &h]), b"a\n1\nb\n2\n");
    // Error replies: the text and an empty line, status 0, as redis-cli.
    let error = same(&["INCR", &s]);
    assert!(
        error.starts_with(b"ERR value is not an integer"),
        "{error:?}"
    );
    assert!(error.ends_with(b"\n\n"));
    assert_eq!(
        same(&["EVAL", "return redis.error_reply('boom')", "0"]),
        b"ERR boom\n\n"
    );
    same(&["EVAL", "return {1, redis.error_reply('inner')}", "0"]);
    assert_eq!(ours(&["DEL", &s, &l, &h, &n]), b"4\n");
}

#[test]
fn bad_urls_and_unreachable_servers_fail_with_a_message() {
    let out = redis_cmd(&["http://127.0.0.1", "PING"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad URL"), "{err}");

    let out = redis_cmd(&["redis://127.0.0.1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: redis_cmd URL COMMAND"));

    let out = redis_cmd(&["rediss://127.0.0.1", "PING"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS"));

    // A port nothing listens on: bind one, then free it.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let out = redis_cmd(&[&format!("redis://127.0.0.1:{port}"), "PING"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot connect to Redis at 127.0.0.1:{port}")),
        "{err}"
    );
}

/// A throwaway `redis-server` with a password, stopped when dropped.
struct Server(std::process::Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server_with_password(password: &str) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            password,
        ])
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start redis-server ({e}); {START_REDIS}"));
    let server = Server(child, port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server on {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

#[test]
fn authenticates_and_a_wrong_password_fails_without_showing_it() {
    let server = server_with_password("s3cret-pass");
    let port = server.1;
    let out = redis_cmd(&[&format!("redis://:s3cret-pass@127.0.0.1:{port}/1"), "PING"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PONG\n");
    assert!(out.status.success());

    let out = redis_cmd(&[&format!("redis://:wrong%20pass@127.0.0.1:{port}"), "PING"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WRONGPASS"), "{err}");
    assert!(
        !err.contains("wrong pass") && !err.contains("wrong%20pass"),
        "{err}"
    );

    let out = redis_cmd(&[&format!("redis://127.0.0.1:{port}"), "GET", "k"]);
    assert!(
        out.status.success(),
        "an error reply is printed, as redis-cli does"
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("NOAUTH"));
}
