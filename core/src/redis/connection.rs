//! `RedisConnection`: the state machine of one Redis connection, without its socket.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::command::{Command, CommandKind, classify, classify_parts, encode_get, encode_parts};
use super::config::{Protocol, RedisConfig};
use super::decode::FrameDecoder;
use super::error::{CommandError, ConnectionError, HandshakeStep, ProtocolError, SendError};
use super::pubsub::{self, Message, PubSubFrame, SubscriptionChange, Subscriptions};
use super::value::Value;
use crate::time::Time;

/// Names one command sent on one connection; its [`Event::Reply`] carries it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// What the server said about itself in its `HELLO` reply.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    /// `redis` (or the name of a compatible server).
    pub server: String,
    /// Its version, such as `7.0.15`.
    pub version: String,
    /// The protocol now in force (3).
    pub proto: i64,
    /// This connection's client id.
    pub id: i64,
    /// `standalone`, `sentinel` or `cluster`.
    pub mode: String,
    /// `master` or `replica`.
    pub role: String,
}

impl ServerHello {
    fn read(reply: &Value) -> ServerHello {
        let mut hello = ServerHello::default();
        let pairs: Vec<(&Value, &Value)> = match reply {
            Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
            Value::Array(flat) => flat.chunks_exact(2).map(|kv| (&kv[0], &kv[1])).collect(),
            _ => Vec::new(),
        };
        for (key, value) in pairs {
            let text = || value.as_str().unwrap_or_default().to_owned();
            match key.as_str() {
                Some("server") => hello.server = text(),
                Some("version") => hello.version = text(),
                Some("proto") => hello.proto = value.as_int().unwrap_or_default(),
                Some("id") => hello.id = value.as_int().unwrap_or_default(),
                Some("mode") => hello.mode = text(),
                Some("role") => hello.role = text(),
                _ => {}
            }
        }
        hello
    }
}

/// What a [`RedisConnection`] tells its driver, in order.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake finished: the connection is authenticated, in its database, and
    /// speaks `protocol`. Commands sent earlier were pipelined behind the handshake.
    Ready {
        /// The protocol in force.
        protocol: Protocol,
        /// The server's `HELLO` reply, on RESP3 connections.
        server: Option<ServerHello>,
    },
    /// The one answer to a command.
    Reply {
        /// The command's id, from [`RedisConnection::send`].
        id: RequestId,
        /// Its value, or why there is none.
        result: Result<Value, CommandError>,
    },
    /// A pub/sub message.
    Message(Message),
    /// The server confirmed a (un)subscription, or ended one on its own.
    Subscription(SubscriptionChange),
    /// Any other RESP3 push (client-side caching invalidations, for example).
    Push(Value),
    /// The connection is closed; nothing follows. Every command still waiting got
    /// its [`Event::Reply`] (with [`CommandError::ConnectionClosed`]) just before.
    Closed(ConnectionError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Handshake(HandshakeStep),
    User(RequestId),
}

#[derive(Debug)]
struct Pending {
    owner: Owner,
    kind: CommandKind,
    deadline: Time,
    /// Where the command's bytes end in the stream of bytes to the server.
    wire_end: u64,
    /// Pub/sub confirmations gathered so far.
    confirmations: Vec<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Handshaking,
    Ready,
    Closed,
}

/// One Redis connection as a state machine: bytes and time in, bytes and events out.
/// It never touches a socket or a clock; a driver moves the bytes and says the time.
///
/// # Methods, by kind
/// - **constructor**: [`new`](Self::new) queues the handshake (`HELLO 3` with `AUTH`
///   and `SETNAME`, or RESP2's `AUTH` and `CLIENT SETNAME`; then `SELECT`).
/// - **inputs** (`handle_*`, each taking `now`): [`handle_input`](Self::handle_input)
///   for bytes read from the socket, [`handle_timeout`](Self::handle_timeout) when the
///   deadline passes (harmless if early), [`handle_disconnect`](Self::handle_disconnect)
///   when the socket is gone.
/// - **application calls**: [`send`](Self::send) queues a command (pipelined: send as
///   many as you like without waiting), [`close`](Self::close).
/// - **outputs** (`poll_*`): [`poll_transmit`](Self::poll_transmit) gives the bytes to
///   write, [`poll_event`](Self::poll_event) the events, and
///   [`poll_timeout`](Self::poll_timeout) the one deadline.
/// - **getters**: [`protocol`](Self::protocol), [`subscriptions`](Self::subscriptions),
///   [`db`](Self::db), [`server`](Self::server), [`is_ready`](Self::is_ready),
///   [`is_closed`](Self::is_closed), [`in_flight`](Self::in_flight),
///   [`timed_out_in_flight`](Self::timed_out_in_flight).
///
/// # The drain rule
/// After constructing it and after every input or application call, drain
/// `poll_event` until `None`, write out everything `poll_transmit` gives, then read
/// `poll_timeout` and call `handle_timeout` when that time comes.
///
/// # Guarantees
/// - Every command [`send`](Self::send) accepts gets exactly one [`Event::Reply`]:
///   its value, a server error, a timeout, or the connection's end.
/// - Replies are matched to commands in the order they were sent. RESP3 pushes (and,
///   on RESP2, pub/sub arrays while subscribed) are routed out as events first, so
///   they never take a command's place.
/// - A command that times out keeps its place: its late answer is read and dropped,
///   and the connection stays usable.
/// - Bytes from the server are checked against [`Limits`](super::Limits) before they
///   are held or decoded; a violation closes the connection with a
///   [`ProtocolError`](super::ProtocolError). Nothing the server sends can panic it.
pub struct RedisConnection {
    decoder: FrameDecoder,
    timeout: Option<Duration>,
    max_pending: usize,
    /// The protocol in which replies are being read now.
    protocol: Protocol,
    state: State,
    now: Time,
    next_id: u64,
    pending: VecDeque<Pending>,
    /// The first `timed_out` entries of `pending` were told they timed out.
    timed_out: usize,
    out: Vec<u8>,
    /// Bytes ever queued for the server, and bytes ever handed to the driver.
    written: u64,
    taken: u64,
    input: Vec<u8>,
    events: VecDeque<Event>,
    subscriptions: Subscriptions,
    db: i64,
    server: Option<ServerHello>,
}

impl std::fmt::Debug for RedisConnection {
    /// The connection's state, never its buffers (the handshake's bytes hold the password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("state", &self.state)
            .field("protocol", &self.protocol)
            .field("db", &self.db)
            .field("in_flight", &self.pending.len())
            .field("timed_out", &self.timed_out)
            .field("subscriptions", &self.subscriptions)
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// A connection that has just been opened (the socket, and TLS if any, are up):
    /// its handshake is queued for [`poll_transmit`](Self::poll_transmit).
    pub fn new(config: RedisConfig, now: Time) -> RedisConnection {
        let mut connection = RedisConnection {
            decoder: FrameDecoder::new(config.limits),
            timeout: config.operation_timeout,
            max_pending: config.max_pending,
            protocol: Protocol::Resp2,
            state: State::Handshaking,
            now,
            next_id: 0,
            pending: VecDeque::new(),
            timed_out: 0,
            out: Vec::new(),
            written: 0,
            taken: 0,
            input: Vec::new(),
            events: VecDeque::new(),
            subscriptions: Subscriptions::default(),
            db: 0,
            server: None,
        };
        let user = config.username.as_deref().unwrap_or("default");
        match config.protocol {
            Protocol::Resp3 => {
                let mut hello = Command::new("HELLO").arg("3");
                if let Some(password) = &config.password {
                    hello = hello.arg("AUTH").arg(user).arg(password.expose());
                }
                if let Some(name) = &config.client_name {
                    hello = hello.arg("SETNAME").arg(name);
                }
                connection.queue(Owner::Handshake(HandshakeStep::Hello), &hello);
            }
            Protocol::Resp2 => {
                if let Some(password) = &config.password {
                    let mut auth = Command::new("AUTH");
                    if let Some(user) = &config.username {
                        auth.push(user);
                    }
                    auth.push(password.expose());
                    connection.queue(Owner::Handshake(HandshakeStep::Auth), &auth);
                }
                if let Some(name) = &config.client_name {
                    let setname = Command::new("CLIENT").arg("SETNAME").arg(name);
                    connection.queue(Owner::Handshake(HandshakeStep::SetName), &setname);
                }
            }
        }
        if config.db != 0 {
            let select = Command::new("SELECT").arg_int(config.db);
            connection.queue(Owner::Handshake(HandshakeStep::Select), &select);
        }
        connection.db = config.db;
        if connection.pending.is_empty() {
            connection.become_ready();
        }
        connection
    }

    // ----- application calls -----

    /// Queues a command; its reply comes as an [`Event::Reply`] with the returned id.
    /// Commands may be sent before the handshake finishes: they follow it on the wire.
    pub fn send(&mut self, now: Time, command: &Command) -> Result<RequestId, SendError> {
        self.admit(now)?;
        let kind = classify(command).map_err(|command| SendError::Unsupported { command })?;
        Ok(self.push_user(kind, |out| command.encode(out)))
    }

    /// Queues the command `name` with `args`, each argument made of its pieces one
    /// after the other (a key under its prefix): as [`send`](Self::send) would a
    /// [`Command`] of them, written straight into the bytes for the server, with no
    /// command built first.
    ///
    /// ```
    /// use effectful::Time;
    /// use effectful::redis::{Protocol, RedisConfig, RedisConnection};
    ///
    /// let mut config = RedisConfig::default();
    /// config.protocol = Protocol::Resp2;
    /// let mut conn = RedisConnection::new(config, Time::ZERO);
    /// conn.send_parts(Time::ZERO, b"GET", &[&[b"app:", b"greeting"]]).unwrap();
    /// let mut wire = Vec::new();
    /// conn.poll_transmit(&mut wire);
    /// assert_eq!(wire, b"*2\r\n$3\r\nGET\r\n$12\r\napp:greeting\r\n");
    /// ```
    pub fn send_parts(
        &mut self,
        now: Time,
        name: &[u8],
        args: &[&[&[u8]]],
    ) -> Result<RequestId, SendError> {
        self.admit(now)?;
        let first = || args.first().map(|pieces| Cow::Owned(pieces.concat()));
        let kind = classify_parts(name, 1 + args.len(), first)
            .map_err(|command| SendError::Unsupported { command })?;
        Ok(self.push_user(kind, |out| encode_parts(out, name, args)))
    }

    /// Queues `GET {head}{key}`: [`send_parts`](Self::send_parts) of it, written in
    /// one pass with no classification (a `GET` changes nothing but its reply).
    pub(crate) fn send_get(
        &mut self,
        now: Time,
        head: &[u8],
        key: &[u8],
    ) -> Result<RequestId, SendError> {
        self.admit(now)?;
        Ok(self.push_user(CommandKind::Plain, |out| encode_get(out, head, key)))
    }

    /// Whether a command may be sent now.
    fn admit(&mut self, now: Time) -> Result<(), SendError> {
        self.advance(now);
        if self.state == State::Closed {
            return Err(SendError::Closed);
        }
        if self.pending.len() >= self.max_pending {
            return Err(SendError::TooManyPending {
                max: self.max_pending,
            });
        }
        Ok(())
    }

    /// Queues a command of the application, written by `encode`.
    fn push_user(&mut self, kind: CommandKind, encode: impl FnOnce(&mut Vec<u8>)) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.push_pending(Owner::User(id), kind, encode);
        id
    }

    /// Closes the connection: every command still waiting fails with
    /// [`CommandError::ConnectionClosed`], then [`Event::Closed`]. Drop the socket.
    pub fn close(&mut self, now: Time) {
        self.advance(now);
        self.fail(ConnectionError::Closed);
    }

    // ----- inputs -----

    /// Bytes read from the socket, in any pieces.
    pub fn handle_input(&mut self, now: Time, bytes: &[u8]) {
        self.advance(now);
        if self.state == State::Closed {
            return;
        }
        if self.input.is_empty() {
            // The common case: read straight from the caller's bytes, keep the rest.
            let used = self.read_frames(bytes);
            if self.state != State::Closed {
                self.input.extend_from_slice(&bytes[used..]);
            }
        } else {
            self.input.extend_from_slice(bytes);
            let input = std::mem::take(&mut self.input);
            let used = self.read_frames(&input);
            if self.state != State::Closed {
                self.input = input;
                self.input.drain(..used);
            }
        }
    }

    /// The deadline from [`poll_timeout`](Self::poll_timeout) has come (calling it early
    /// does nothing). A command past its operation timeout gets
    /// [`CommandError::TimedOut`]; a handshake step past it closes the connection.
    pub fn handle_timeout(&mut self, now: Time) {
        self.advance(now);
        if self.state == State::Closed {
            return;
        }
        let after = self.timeout.unwrap_or_default();
        while let Some(pending) = self.pending.get(self.timed_out) {
            if pending.deadline > self.now {
                break;
            }
            match pending.owner {
                Owner::Handshake(step) => {
                    self.fail(ConnectionError::HandshakeTimedOut { step, after });
                    return;
                }
                Owner::User(id) => {
                    self.timed_out += 1;
                    self.events.push_back(Event::Reply {
                        id,
                        result: Err(CommandError::TimedOut { after }),
                    });
                }
            }
        }
    }

    /// The socket is gone (end of stream, reset, an I/O error): every command still
    /// waiting fails, then [`Event::Closed`] with [`ConnectionError::Lost`].
    pub fn handle_disconnect(&mut self, now: Time) {
        self.advance(now);
        self.fail(ConnectionError::Lost);
    }

    // ----- outputs -----

    /// Moves the bytes waiting for the server into `out` and says how many, or `None`
    /// if none wait. When `out` is empty the buffers are swapped, so nothing is copied
    /// (give back an emptied `Vec` to reuse its capacity).
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> Option<usize> {
        if self.out.is_empty() {
            return None;
        }
        let n = self.out.len();
        if out.is_empty() {
            std::mem::swap(out, &mut self.out);
        } else {
            out.extend_from_slice(&self.out);
            self.out.clear();
        }
        self.taken += n as u64;
        Some(n)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout): the earliest deadline
    /// of a command still waiting, if any.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.state == State::Closed || self.timeout.is_none() {
            return None;
        }
        self.pending.get(self.timed_out).map(|p| p.deadline)
    }

    // ----- getters -----

    /// The protocol replies are read in now (RESP2 until a `HELLO 3` succeeds).
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The subscriptions the server has confirmed.
    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subscriptions
    }

    /// The selected database, as of the last reply read.
    pub fn db(&self) -> i64 {
        self.db
    }

    /// The server's `HELLO` reply, once the handshake has read it.
    pub fn server(&self) -> Option<&ServerHello> {
        self.server.as_ref()
    }

    /// Whether the handshake has finished and the connection is open.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Commands (and handshake steps) whose answers have not been read yet, timed-out
    /// ones included.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Commands that were told they timed out and whose late answers have not come
    /// yet. A pool may take a connection where this stays above zero for long as dead.
    pub fn timed_out_in_flight(&self) -> usize {
        self.timed_out
    }

    // ----- internals -----

    fn advance(&mut self, now: Time) {
        self.now = self.now.max(now);
    }

    fn queue(&mut self, owner: Owner, command: &Command) {
        let kind = classify(command).unwrap_or(CommandKind::Plain);
        self.push_pending(owner, kind, |out| command.encode(out));
    }

    fn push_pending(&mut self, owner: Owner, kind: CommandKind, encode: impl FnOnce(&mut Vec<u8>)) {
        let before = self.out.len();
        encode(&mut self.out);
        self.written += (self.out.len() - before) as u64;
        let deadline = match self.timeout {
            Some(t) => self.now + t,
            None => Time::MAX,
        };
        self.pending.push_back(Pending {
            owner,
            kind,
            deadline,
            wire_end: self.written,
            confirmations: Vec::new(),
        });
    }

    /// Reads every whole frame at the front of `buf`; returns the bytes used.
    fn read_frames(&mut self, buf: &[u8]) -> usize {
        let mut used = 0;
        while self.state != State::Closed {
            match self.decoder.decode(&buf[used..]) {
                Ok(Some((value, n))) => {
                    used += n;
                    self.on_frame(value);
                }
                Ok(None) => break,
                Err(e) => self.fail(ConnectionError::Protocol(e)),
            }
        }
        used
    }

    fn on_frame(&mut self, value: Value) {
        match value {
            Value::Push(items) => self.on_pubsub(items, true),
            Value::Array(items)
                if self.protocol == Protocol::Resp2
                    && self.in_pubsub_context()
                    && pubsub::looks_like_pubsub(&items) =>
            {
                self.on_pubsub(items, false);
            }
            other => self.on_reply(other),
        }
    }

    /// On RESP2, pub/sub arrays come only while subscribed or subscribing.
    fn in_pubsub_context(&self) -> bool {
        !self.subscriptions.is_empty()
            || self
                .pending
                .front()
                .is_some_and(|p| matches!(p.kind, CommandKind::PubSub { .. }))
    }

    fn on_pubsub(&mut self, items: Vec<Value>, push: bool) {
        match pubsub::parse(&items) {
            Some(PubSubFrame::Message(message)) => self.events.push_back(Event::Message(message)),
            Some(PubSubFrame::Change(change)) => self.on_change(change, items),
            None if push => self.events.push_back(Event::Push(Value::Push(items))),
            None => self.on_reply(Value::Array(items)),
        }
    }

    fn on_change(&mut self, change: SubscriptionChange, raw: Vec<Value>) {
        let before = self.subscriptions.count(change.kind);
        let Some(head) = self.pending.front_mut().filter(|head| {
            matches!(head.kind, CommandKind::PubSub { kind, subscribe, .. }
                if kind == change.kind && subscribe == change.subscribed)
        }) else {
            // Not an answer: the server ended a subscription on its own (a shard
            // channel whose slot moved). Only removals are kept, so a server cannot
            // grow the set without commands of ours.
            if !change.subscribed {
                self.subscriptions.apply(&change);
            }
            self.events.push_back(Event::Subscription(change));
            return;
        };
        let CommandKind::PubSub { remaining, .. } = &mut head.kind else {
            return;
        };
        // Unsubscribing from everything is answered once per subscription, or once
        // if there were none.
        let left = remaining.get_or_insert(before.max(1));
        *left = left.saturating_sub(1);
        let done = *left == 0;
        head.confirmations.push(Value::Array(raw));
        self.subscriptions.apply(&change);
        self.events.push_back(Event::Subscription(change));
        if done {
            if let Some((head, timed_out)) = self.pop_front() {
                if let (Owner::User(id), false) = (head.owner, timed_out) {
                    self.events.push_back(Event::Reply {
                        id,
                        result: Ok(Value::Array(head.confirmations)),
                    });
                }
            }
        }
    }

    fn on_reply(&mut self, value: Value) {
        let Some((head, timed_out)) = self.pop_front() else {
            self.fail(ConnectionError::Protocol(ProtocolError::Unexpected(
                "a reply while no command was waiting for one",
            )));
            return;
        };
        let result = match value {
            Value::Error(error) => Err(error),
            value => Ok(value),
        };
        match head.owner {
            Owner::Handshake(step) => match result {
                Err(error) => self.fail(ConnectionError::Handshake { step, error }),
                Ok(value) => {
                    if step == HandshakeStep::Hello {
                        self.protocol = Protocol::Resp3;
                        self.server = Some(ServerHello::read(&value));
                    }
                    let more = self
                        .pending
                        .front()
                        .is_some_and(|p| matches!(p.owner, Owner::Handshake(_)));
                    if !more {
                        self.become_ready();
                    }
                }
            },
            Owner::User(id) => {
                if result.is_ok() {
                    self.apply(&head.kind);
                }
                if !timed_out {
                    self.events.push_back(Event::Reply {
                        id,
                        result: result.map_err(CommandError::Server),
                    });
                }
            }
        }
    }

    /// What a successful command changed.
    fn apply(&mut self, kind: &CommandKind) {
        match kind {
            CommandKind::Hello(Some(2)) => self.protocol = Protocol::Resp2,
            CommandKind::Hello(Some(_)) => self.protocol = Protocol::Resp3,
            CommandKind::Select(Some(db)) => self.db = *db,
            CommandKind::Reset => {
                self.protocol = Protocol::Resp2;
                self.db = 0;
                self.subscriptions.clear();
            }
            _ => {}
        }
    }

    fn pop_front(&mut self) -> Option<(Pending, bool)> {
        let head = self.pending.pop_front()?;
        let timed_out = self.timed_out > 0;
        if timed_out {
            self.timed_out -= 1;
        }
        Some((head, timed_out))
    }

    fn become_ready(&mut self) {
        self.state = State::Ready;
        self.events.push_back(Event::Ready {
            protocol: self.protocol,
            server: self.server.clone(),
        });
    }

    fn fail(&mut self, reason: ConnectionError) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        let taken = self.taken;
        for (i, pending) in self.pending.drain(..).enumerate() {
            if let (Owner::User(id), false) = (pending.owner, i < self.timed_out) {
                self.events.push_back(Event::Reply {
                    id,
                    result: Err(CommandError::ConnectionClosed {
                        sent: pending.wire_end <= taken,
                    }),
                });
            }
        }
        self.timed_out = 0;
        self.out.clear();
        self.input.clear();
        self.events.push_back(Event::Closed(reason));
    }
}
