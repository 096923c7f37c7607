//! A small blocking driver for `PgConnection` over `std::net`, for tests only: it
//! writes what the connection transmits, reads what the server sends, and keeps the
//! events for the test to look at.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use effectful::Time;
use effectful::postgres::{
    Event, Notification, PgConfig, PgConnection, PgError, QueryId, ResultSet, Value,
};

/// How to start the suite's server, said by every test that cannot reach it.
pub const START_SERVER: &str = "PostgreSQL 15 must answer on 127.0.0.1:5432 with trust auth and a database named \"test\"; start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (scripts/services does this), or install it with `apt-get install postgresql-15`";

/// Entropy for SCRAM nonces in tests (production drivers pass OS randomness).
pub const TEST_ENTROPY: [u8; 18] = *b"effectful-test-nce";

pub struct Client {
    pub conn: PgConnection,
    sock: TcpStream,
    epoch: Instant,
    pub events: VecDeque<Event>,
}

/// The suite's server: user `postgres`, database `test`.
pub fn config() -> PgConfig {
    PgConfig::new("postgres")
        .database("test")
        .application_name("effectful-core-tests")
}

impl Client {
    /// Connects to the suite's server on 127.0.0.1:5432 and finishes the startup,
    /// or panics saying how to start the server.
    pub fn connect() -> Client {
        Client::connect_to(5432, config()).unwrap_or_else(|e| panic!("{e}\n{START_SERVER}"))
    }

    /// Connects to `port` on 127.0.0.1 with `config` and runs the startup.
    pub fn connect_to(port: u16, config: PgConfig) -> Result<Client, PgError> {
        let sock = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| PgError::Query(format!("cannot connect to 127.0.0.1:{port}: {e}")))?;
        sock.set_nodelay(true).ok();
        sock.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let epoch = Instant::now();
        let conn = PgConnection::new(config, TEST_ENTROPY, Time::ZERO);
        let mut client = Client {
            conn,
            sock,
            epoch,
            events: VecDeque::new(),
        };
        client.flush();
        loop {
            client.pump();
            while let Some(event) = client.events.pop_front() {
                match event {
                    Event::Ready => return Ok(client),
                    Event::Closed(e) => return Err(e),
                    Event::Notice(_) => {}
                    other => panic!("unexpected during startup: {other:?}"),
                }
            }
        }
    }

    pub fn now(&self) -> Time {
        Time::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    /// Writes everything the connection has to send.
    pub fn flush(&mut self) {
        while let Some(bytes) = self.conn.poll_transmit() {
            if self.sock.write_all(&bytes).is_err() {
                let now = self.now();
                self.conn.handle_eof(now);
                while let Some(event) = self.conn.poll_event() {
                    self.events.push_back(event);
                }
            }
        }
    }

    /// One read from the socket (blocking until bytes arrive or the connection's
    /// next deadline), handed to the connection, outputs drained.
    pub fn pump(&mut self) {
        let mut buf = [0u8; 64 * 1024];
        let wait = match self.conn.poll_timeout() {
            Some(t) => t
                .saturating_duration_since(self.now())
                .max(Duration::from_millis(1)),
            None => Duration::from_secs(30),
        };
        self.sock
            .set_read_timeout(Some(wait.min(Duration::from_secs(30))))
            .ok();
        let read = self.sock.read(&mut buf);
        let now = self.now();
        match read {
            Ok(0) => self.conn.handle_eof(now),
            Ok(n) => self.conn.handle_input(now, &buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                assert!(
                    self.conn.poll_timeout().is_some(),
                    "the server sent nothing for 30 s"
                );
            }
            Err(_) => self.conn.handle_eof(now), // reset by the server
        }
        self.drain();
    }

    /// Moves events into `self.events`, writes output, fires due timers.
    pub fn drain(&mut self) {
        let now = self.now();
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        while let Some(event) = self.conn.poll_event() {
            self.events.push_back(event);
        }
        self.flush();
    }

    /// Waits for the `Done` of `id`, keeping other events.
    pub fn wait(&mut self, id: QueryId) -> Result<Vec<ResultSet>, PgError> {
        loop {
            let found = self
                .events
                .iter()
                .position(|e| matches!(e, Event::Done { id: done, .. } if *done == id));
            if let Some(i) = found {
                match self.events.remove(i) {
                    Some(Event::Done { result, .. }) => return result,
                    _ => unreachable!(),
                }
            }
            self.pump();
        }
    }

    /// Waits for the next notification.
    pub fn wait_notification(&mut self) -> Notification {
        loop {
            let found = self
                .events
                .iter()
                .position(|e| matches!(e, Event::Notification(_)));
            if let Some(i) = found {
                match self.events.remove(i) {
                    Some(Event::Notification(n)) => return n,
                    _ => unreachable!(),
                }
            }
            self.pump();
        }
    }

    /// Runs `sql` with the simple protocol.
    pub fn query(&mut self, sql: &str) -> Result<Vec<ResultSet>, PgError> {
        let id = self.conn.query(self.now(), sql)?;
        self.drain();
        self.wait(id)
    }

    /// Runs `sql` with the extended protocol; its one result.
    pub fn execute(&mut self, sql: &str, params: &[Value]) -> Result<ResultSet, PgError> {
        let id = self.conn.execute(self.now(), sql, params)?;
        self.drain();
        let mut sets = self.wait(id)?;
        assert_eq!(sets.len(), 1, "an extended query has one result");
        Ok(sets.remove(0))
    }

    /// Sends a cancel request for this connection on a fresh socket.
    pub fn send_cancel(&self, port: u16) {
        let cancel = self.conn.cancel_request().expect("BackendKeyData arrived");
        let mut sock = TcpStream::connect(("127.0.0.1", port)).expect("connect for cancel");
        sock.write_all(&cancel.to_bytes())
            .expect("write the cancel request");
        // The server closes the socket when it has read the request.
        let _ = sock.read(&mut [0u8; 1]);
    }
}
