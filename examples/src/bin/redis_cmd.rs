//! `redis_cmd URL COMMAND [ARG...]`: sends one command to Redis and prints the reply
//! exactly as `redis-cli --raw` does.
//!
//! The connection is core's sans-IO [`RedisConnection`], driven here by a plain
//! blocking loop over `std::net` (no async runtime): the same state machine the tokio
//! driver runs, with the drain rule written out by hand.
//!
//! - The URL is `redis://[[user]:password@]host[:port][/db]` (percent-encoded parts
//!   allowed); `rediss://` (TLS) is refused with a message, since this example has no
//!   TLS layer. The password never appears in any message.
//! - The reply is printed as `redis-cli --raw` prints it: strings raw, integers in
//!   decimal, nil as an empty line, arrays one element per line, and an error reply as
//!   its text followed by an empty line (exit status 0, as redis-cli's).
//! - A bad URL, a refused connection, a failed `AUTH` or `SELECT`, a lost connection
//!   or a timeout prints a clear message on stderr and exits with status 1.
//!
//! `cargo run -p effectful-examples --bin redis_cmd -- redis://127.0.0.1 INCR visits`

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use effectful::Time;
use effectful::redis::{
    Command, CommandError, Event, Protocol, RedisConnection, RedisUrl, RequestId, Value,
};

const USAGE: &str = "usage: redis_cmd URL COMMAND [ARG...]\n  \
    e.g. redis_cmd redis://127.0.0.1:6379/0 SET greeting hello";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match run(&args) {
        Ok(reply) => {
            let mut out = std::io::stdout().lock();
            let written = out.write_all(&reply).and_then(|()| out.flush());
            if written.is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("redis_cmd: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Sends the command the arguments name; the reply as `redis-cli --raw` prints it.
fn run(args: &[OsString]) -> Result<Vec<u8>, String> {
    let [url, name, rest @ ..] = args else {
        return Err(format!("expected a URL and a command\n{USAGE}"));
    };
    let url = url
        .to_str()
        .ok_or_else(|| "the URL is not valid UTF-8".to_owned())?;
    let url = RedisUrl::parse(url).map_err(|e| format!("bad URL: {e}"))?;
    if url.tls() {
        return Err(
            "rediss:// (TLS) is not supported by this example; use redis:// on a trusted network"
                .to_owned(),
        );
    }
    let mut command = Command::new(os_bytes(name));
    for arg in rest {
        command.push(os_bytes(arg));
    }

    // redis-cli speaks RESP2 unless told otherwise; so does this, for the same output.
    let mut config = url.config();
    if url.protocol().is_none() {
        config.protocol = Protocol::Resp2;
    }
    let timeout = config.operation_timeout.unwrap_or(Duration::from_secs(30));

    let address = if url.host().contains(':') {
        format!("[{}]:{}", url.host(), url.port())
    } else {
        format!("{}:{}", url.host(), url.port())
    };
    let socket = connect(&address, timeout)?;
    let mut driver = Driver::new(RedisConnection::new(config, Time::ZERO), socket);
    let id = driver
        .conn
        .send(driver.now(), &command)
        .map_err(|e| format!("cannot send the command: {e}"))?;
    let value = driver.wait(id)?;
    let mut out = Vec::new();
    format_raw(&value, &mut out);
    out.push(b'\n');
    Ok(out)
}

/// An argument's bytes, as the shell gave them (not necessarily UTF-8).
fn os_bytes(arg: &OsString) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        arg.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        arg.to_string_lossy().into_owned().into_bytes()
    }
}

fn connect(address: &str, timeout: Duration) -> Result<TcpStream, String> {
    use std::net::ToSocketAddrs;
    let addrs = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(socket) => {
                socket.set_nodelay(true).ok();
                return Ok(socket);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => format!("cannot connect to Redis at {address}: {e}"),
        None => format!("{address} resolves to no address"),
    })
}

/// The blocking loop: write what the connection transmits, read what the server
/// sends, fire the connection's deadline, keep its events.
struct Driver {
    conn: RedisConnection,
    socket: TcpStream,
    epoch: Instant,
    out: Vec<u8>,
}

impl Driver {
    fn new(conn: RedisConnection, socket: TcpStream) -> Driver {
        Driver {
            conn,
            socket,
            epoch: Instant::now(),
            out: Vec::new(),
        }
    }

    fn now(&self) -> Time {
        Time::from_nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// Runs the connection until `id` is answered; its value, or a message saying why
    /// there is none (a server error reply is a value here, printed as redis-cli does).
    fn wait(&mut self, id: RequestId) -> Result<Value, String> {
        let mut buf = vec![0u8; 64 * 1024];
        'drive: loop {
            while let Some(event) = self.conn.poll_event() {
                match event {
                    Event::Reply { id: done, result } if done == id => match result {
                        Ok(value) => return Ok(value),
                        Err(CommandError::Server(error)) => return Ok(Value::Error(error)),
                        // `Event::Closed` follows at once and says why (a refused AUTH).
                        Err(CommandError::ConnectionClosed { .. }) => {}
                        Err(e) => return Err(e.to_string()),
                    },
                    Event::Closed(e) => return Err(e.to_string()),
                    _ => {}
                }
            }
            self.out.clear();
            while self.conn.poll_transmit(&mut self.out).is_some() {
                if self.socket.write_all(&self.out).is_err() {
                    // The reply to `id` now says the connection was lost.
                    self.conn.handle_disconnect(self.now());
                    continue 'drive;
                }
                self.out.clear();
            }
            let now = self.now();
            let wait = self
                .conn
                .poll_timeout()
                .map_or(Duration::from_secs(30), |t| {
                    t.saturating_duration_since(now)
                        .max(Duration::from_millis(1))
                });
            self.socket.set_read_timeout(Some(wait)).ok();
            let read = self.socket.read(&mut buf);
            let now = self.now();
            match read {
                Ok(0) => self.conn.handle_disconnect(now),
                Ok(n) => self.conn.handle_input(now, &buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    self.conn.handle_timeout(now)
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.conn.handle_disconnect(now),
            }
        }
    }
}

/// Appends `value` as `redis-cli --raw` formats it (`cliFormatReplyRaw`), without the
/// final newline redis-cli adds after the whole reply.
fn format_raw(value: &Value, out: &mut Vec<u8>) {
    let items = |items: &[Value], out: &mut Vec<u8>| {
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(b'\n');
            }
            format_raw(item, out);
        }
    };
    match value {
        Value::Nil => {}
        Value::Error(error) => {
            out.extend_from_slice(error.message().as_bytes());
            out.push(b'\n');
        }
        Value::Simple(text) | Value::BigNumber(text) => out.extend_from_slice(text.as_bytes()),
        Value::Bulk(bytes) | Value::Verbatim { text: bytes, .. } => out.extend_from_slice(bytes),
        Value::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::Double(d) => out.extend_from_slice(d.to_string().as_bytes()),
        Value::Bool(b) => out.extend_from_slice(if *b { b"(true)" } else { b"(false)" }),
        Value::Array(list) | Value::Set(list) | Value::Push(list) => items(list, out),
        Value::Map(pairs) => {
            for (i, (key, value)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                format_raw(key, out);
                out.push(b'\n');
                format_raw(value, out);
            }
        }
        // `Value` may grow: print what it holds as its debug form rather than nothing.
        other => out.extend_from_slice(format!("{other:?}").as_bytes()),
    }
}
