//! [`PgConnection`]: one PostgreSQL session as a state machine over bytes and time.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::message::backend::{Message, NOTICE_RESPONSE_TAG};
use postgres_protocol::message::frontend;

use super::cache::{Prepared, StatementCache};
use super::cancel::CancelRequest;
use super::config::{PgConfig, TlsMode};
use super::error::{ClosedReason, DbError, PgError, TypeError};
use super::event::{Event, Notification, QueryId, TransactionStatus};
use super::row::{self, Column, ResultSet, Row};
use super::scram::{NONCE_ENTROPY_LEN, SCRAM_SHA_256, Scram};
use super::value::Value;
use crate::time::Time;

/// Parameters whose types [`PgConnection::execute`] lists without allocating.
const FEW_PARAMS: usize = 16;

/// The tag of `NegotiateProtocolVersion`, which `postgres-protocol` does not parse.
const NEGOTIATE_PROTOCOL_VERSION_TAG: u8 = b'v';

/// One PostgreSQL session as a sans-IO state machine: bytes in, bytes out, time in.
///
/// It never touches a socket, a clock or OS randomness. The driver connects a socket
/// (TCP or Unix), then moves bytes between it and this type, and hands in the time.
///
/// # Methods by kind
/// - **Inputs** (each takes `now`): [`handle_input`](Self::handle_input) (bytes the
///   server sent), [`handle_eof`](Self::handle_eof) (the socket closed),
///   [`handle_tls_ready`](Self::handle_tls_ready) (the TLS handshake the connection
///   asked for is done), [`handle_timeout`](Self::handle_timeout).
/// - **Application calls** (also inputs): [`query`](Self::query) (simple protocol,
///   text results, several statements allowed), [`execute`](Self::execute) (extended
///   protocol, binary parameters and results, prepared statements cached),
///   [`close`](Self::close).
/// - **Outputs**: [`poll_event`](Self::poll_event), [`poll_transmit`](Self::poll_transmit)
///   (bytes to write, in order), [`poll_timeout`](Self::poll_timeout).
/// - **Getters**: [`transaction_status`](Self::transaction_status),
///   [`parameter`](Self::parameter), [`cancel_request`](Self::cancel_request),
///   [`in_flight`](Self::in_flight), [`is_ready`](Self::is_ready),
///   [`is_closed`](Self::is_closed).
///
/// # The drain rule
/// After every input and application call, drain [`poll_event`](Self::poll_event)
/// until `None` and [`poll_transmit`](Self::poll_transmit) until `None` (writing the
/// bytes in order), then read [`poll_timeout`](Self::poll_timeout) and call
/// [`handle_timeout`](Self::handle_timeout) no later than it; an early call is
/// harmless. After [`Event::StartTls`] the socket must carry TLS before
/// [`handle_tls_ready`](Self::handle_tls_ready) is called; after [`Event::Closed`]
/// write out what `poll_transmit` still gives (a `Terminate` after
/// [`close`](Self::close)) and close the socket.
///
/// # Guarantees
/// - Every id returned by `query` or `execute` gets exactly one [`Event::Done`], in
///   submission order; a connection that dies fails each one still in flight.
/// - Any number of queries may be in flight (up to `max_in_flight`): each is its own
///   Sync-delimited unit, so an error in one does not abort the next (unless they
///   share a transaction block).
/// - Every length the server sends is checked against `max_message_len` before
///   anything is allocated for it; no input makes this type panic.
/// - After the server accepts TLS it must send nothing more in plain text; bytes
///   that arrive before the handshake are refused (the CVE-2021-23222 class).
pub struct PgConnection {
    config: PgConfig,
    entropy: [u8; NONCE_ENTROPY_LEN],
    state: State,
    started: Time,
    input: BytesMut,
    out: BytesMut,
    /// Queries submitted before the startup finished: sent when it does.
    held: BytesMut,
    events: VecDeque<Event>,
    in_flight: VecDeque<InFlight>,
    next_id: u64,
    parameters: BTreeMap<String, String>,
    backend_key: Option<CancelRequest>,
    transaction: TransactionStatus,
    cache: StatementCache,
    /// When the query at the head of `in_flight` started executing on the server.
    head_since: Time,
    /// Statements whose Parse failed while queries binding them were in flight.
    failed_parses: Vec<(Arc<str>, PgError)>,
}

enum State {
    /// Sent `SSLRequest`; waiting for one byte.
    SslResponse,
    /// The server said 'S'; waiting for the driver's TLS handshake.
    TlsHandshake,
    /// Sent the startup message; authenticating.
    Authenticating(Auth),
    /// Authenticated; waiting for the first `ReadyForQuery`.
    Starting,
    Ready,
    Closed,
}

enum Auth {
    /// Nothing asked yet.
    Waiting,
    /// A cleartext or MD5 password was sent.
    PasswordSent,
    /// A SCRAM-SHA-256 exchange is under way.
    Scram(Box<Scram>),
}

enum Kind {
    Simple,
    Extended {
        /// The cached statement this query binds, if named.
        statement: Option<Arc<str>>,
        /// This query prepares the statement and its ParseComplete has not arrived.
        parse_pending: bool,
    },
}

struct InFlight {
    id: QueryId,
    kind: Kind,
    columns: Option<Arc<[Column]>>,
    sets: Vec<ResultSet>,
    rows: Vec<Row>,
    bytes: usize,
    error: Option<PgError>,
    cancel_sent: bool,
}

impl std::fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnection")
            .field("user", &self.config.user)
            .field("ready", &self.is_ready())
            .field("closed", &self.is_closed())
            .field("in_flight", &self.in_flight.len())
            .field("transaction", &self.transaction)
            .finish_non_exhaustive()
    }
}

impl PgConnection {
    /// A connection about to start: the first bytes to send are already in
    /// [`poll_transmit`](Self::poll_transmit) (an `SSLRequest`, or the startup message).
    ///
    /// `entropy` makes the SCRAM client nonce: fresh OS randomness in production,
    /// never logged and never derived from the engine's logged seed; a seeded stream
    /// in simulation.
    pub fn new(config: PgConfig, entropy: [u8; NONCE_ENTROPY_LEN], now: Time) -> PgConnection {
        let mut conn = PgConnection {
            cache: StatementCache::new(config.statement_cache_size),
            config,
            entropy,
            state: State::Closed,
            started: now,
            input: BytesMut::new(),
            out: BytesMut::new(),
            held: BytesMut::new(),
            events: VecDeque::new(),
            in_flight: VecDeque::new(),
            next_id: 0,
            parameters: BTreeMap::new(),
            backend_key: None,
            transaction: TransactionStatus::Idle,
            head_since: now,
            failed_parses: Vec::new(),
        };
        if conn.config.tls == TlsMode::Disable {
            conn.send_startup();
        } else {
            frontend::ssl_request(&mut conn.out);
            conn.state = State::SslResponse;
        }
        conn
    }

    fn send_startup(&mut self) {
        let mut params: Vec<(&str, &str)> =
            vec![("user", &self.config.user), ("client_encoding", "UTF8")];
        if let Some(db) = &self.config.database {
            params.push(("database", db));
        }
        if let Some(app) = &self.config.application_name {
            params.push(("application_name", app));
        }
        if let Some(options) = &self.config.options {
            params.push(("options", options));
        }
        let result = frontend::startup_message(params.iter().copied(), &mut self.out);
        match result {
            Ok(()) => self.state = State::Authenticating(Auth::Waiting),
            Err(e) => self.fail(PgError::Query(format!(
                "the startup parameters cannot be sent (a NUL byte in the user, database or application name?): {e}"
            ))),
        }
    }

    // ---- getters ----

    /// Whether the startup is done and the connection is not closed.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready)
    }

    /// Whether the connection is finished.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The transaction status from the latest `ReadyForQuery`.
    pub fn transaction_status(&self) -> TransactionStatus {
        self.transaction
    }

    /// A run-time parameter the server reported (`server_version`, `TimeZone`,
    /// `integer_datetimes`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// What to send to cancel this connection's running query, once the server has
    /// sent its `BackendKeyData`.
    pub fn cancel_request(&self) -> Option<CancelRequest> {
        self.backend_key
    }

    /// How many queries are in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// How many prepared statements are cached.
    pub fn cached_statements(&self) -> usize {
        self.cache.len()
    }

    // ---- outputs ----

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether there are bytes to write to the socket.
    pub fn has_transmit(&self) -> bool {
        !self.out.is_empty()
    }

    /// Appends everything to write to the socket now to `into` (the driver's own
    /// buffer): the same bytes as [`poll_transmit`](Self::poll_transmit), with no
    /// allocation of their own.
    pub fn transmit_into(&mut self, into: &mut BytesMut) {
        into.extend_from_slice(&self.out);
        self.out.clear();
    }

    /// Everything to write to the socket now, in one buffer.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            return None;
        }
        // A copy of exactly what is queued, and the buffer kept for the next query:
        // splitting it off would make the buffer shared and cost a second
        // allocation on the next write.
        let bytes = Bytes::copy_from_slice(&self.out);
        self.out.clear();
        Some(bytes)
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called: the connect
    /// deadline during startup; the command-timeout deadline of the query executing.
    pub fn poll_timeout(&self) -> Option<Time> {
        match self.state {
            State::Closed => None,
            State::Ready => {
                let timeout = self.config.command_timeout?;
                let head = self.in_flight.front()?;
                (!head.cancel_sent && self.backend_key.is_some()).then(|| self.head_since + timeout)
            }
            _ => Some(self.started + self.config.connect_timeout),
        }
    }

    // ---- inputs ----

    /// Time has passed: fails a startup past its connect timeout; emits
    /// [`Event::CancelDue`] for a query past its command timeout.
    pub fn handle_timeout(&mut self, now: Time) {
        let Some(deadline) = self.poll_timeout() else {
            return;
        };
        if now < deadline {
            return;
        }
        if self.is_ready() {
            if let (Some(head), Some(cancel)) = (self.in_flight.front_mut(), self.backend_key) {
                head.cancel_sent = true;
                self.events.push_back(Event::CancelDue {
                    id: head.id,
                    cancel,
                });
            }
        } else {
            self.fail(PgError::ConnectTimeout(self.config.connect_timeout));
        }
    }

    /// The socket closed (or failed) under the connection.
    pub fn handle_eof(&mut self, _now: Time) {
        if !self.is_closed() {
            self.fail(PgError::Closed(ClosedReason::ServerHungUp));
        }
    }

    /// The TLS handshake asked for by [`Event::StartTls`] is done; the startup goes on
    /// over TLS. Ignored in any other state.
    pub fn handle_tls_ready(&mut self, _now: Time) {
        if matches!(self.state, State::TlsHandshake) {
            self.send_startup();
        }
    }

    /// Bytes the server sent (decrypted, if TLS is on).
    pub fn handle_input(&mut self, now: Time, bytes: &[u8]) {
        match self.state {
            State::Closed => return,
            State::SslResponse => {
                let Some((&answer, rest)) = bytes.split_first() else {
                    return;
                };
                match answer {
                    b'S' if !rest.is_empty() => {
                        return self.fail(PgError::Tls(format!(
                            "the server sent {} more bytes in plain text right after accepting TLS; refused, as they could be injected by an attacker (CVE-2021-23222)",
                            rest.len()
                        )));
                    }
                    b'S' => {
                        self.state = State::TlsHandshake;
                        self.events.push_back(Event::StartTls);
                        return;
                    }
                    b'N' if self.config.tls == TlsMode::Require => {
                        return self.fail(PgError::Tls(
                            "the server does not accept TLS (answered 'N'), and TlsMode::Require forbids going on in plain text; enable ssl on the server or use TlsMode::Prefer".into(),
                        ));
                    }
                    b'N' => {
                        self.send_startup();
                        if rest.is_empty() {
                            return;
                        }
                        self.input.extend_from_slice(rest);
                    }
                    other => {
                        return self.fail(PgError::Tls(format!(
                            "the server answered the SSLRequest with {:?}, not 'S' or 'N'; is this a PostgreSQL server?",
                            char::from(other)
                        )));
                    }
                }
            }
            State::TlsHandshake => {
                return self.fail(PgError::Tls(format!(
                    "{} bytes arrived before the TLS handshake finished; refused (CVE-2021-23222): the driver must call handle_tls_ready first and pass decrypted bytes",
                    bytes.len()
                )));
            }
            _ => self.input.extend_from_slice(bytes),
        }
        self.read_messages(now);
    }

    fn read_messages(&mut self, now: Time) {
        while !self.is_closed() && self.input.len() >= 5 {
            let tag = self.input[0];
            let len =
                u32::from_be_bytes([self.input[1], self.input[2], self.input[3], self.input[4]]);
            if len < 4 {
                return self.fail(PgError::protocol(format!(
                    "a message declares length {len}, below the 4 bytes of the length itself"
                )));
            }
            let len = len as usize;
            if len > self.config.max_message_len {
                return self.fail(PgError::MessageTooLarge {
                    len: len as u64,
                    limit: self.config.max_message_len,
                });
            }
            if self.input.len() < len + 1 {
                return;
            }
            if tag == NEGOTIATE_PROTOCOL_VERSION_TAG {
                let body = self.input.split_to(len + 1).freeze();
                return self.fail(negotiate_protocol_version(&body[5..]));
            }
            match Message::parse(&mut self.input) {
                Ok(Some(message)) => self.on_message(now, tag, message),
                Ok(None) => return,
                Err(e) => {
                    return self.fail(PgError::protocol(format!(
                        "malformed message (tag {:?}): {e}",
                        char::from(tag)
                    )));
                }
            }
        }
    }

    fn on_message(&mut self, now: Time, tag: u8, message: Message) {
        // Asynchronous messages, allowed whenever the session is up.
        match message {
            Message::NoticeResponse(body) => {
                return match DbError::parse(body.fields()) {
                    Ok(notice) => self.events.push_back(Event::Notice(notice)),
                    Err(e) => self.fail(e),
                };
            }
            Message::ParameterStatus(body) => {
                return match (body.name(), body.value()) {
                    (Ok(name), Ok(value)) => {
                        self.parameters.insert(name.to_owned(), value.to_owned());
                    }
                    _ => self.fail(PgError::protocol("a ParameterStatus is not UTF-8")),
                };
            }
            Message::ErrorResponse(body) => {
                let error = match DbError::parse(body.fields()) {
                    Ok(e) => e,
                    Err(e) => return self.fail(e),
                };
                return self.on_error(error);
            }
            _ => {}
        }
        match &mut self.state {
            State::Authenticating(_) => self.on_auth(message),
            State::Starting => self.on_starting(now, message),
            State::Ready => self.on_ready(now, message),
            _ => self.unexpected(tag, "before the startup"),
        }
    }

    fn unexpected(&mut self, tag: u8, when: &str) {
        let name = message_name(tag);
        self.fail(PgError::protocol(format!("unexpected {name} {when}")));
    }

    fn on_error(&mut self, error: DbError) {
        let fatal = error.is_fatal() || !self.is_ready();
        match self.in_flight.front_mut() {
            Some(head) if !fatal => {
                if let Kind::Extended {
                    statement: Some(name),
                    parse_pending: true,
                } = &head.kind
                {
                    // Queries behind it that bind the same statement will fail with
                    // "prepared statement does not exist"; they get this error instead.
                    self.cache.forget(name);
                    let error = PgError::from(error.clone());
                    self.failed_parses.push((name.clone(), error));
                }
                head.error.get_or_insert(PgError::from(error));
            }
            _ => self.fail(PgError::from(error)),
        }
    }

    fn on_auth(&mut self, message: Message) {
        let State::Authenticating(auth) = &mut self.state else {
            return;
        };
        let waiting = matches!(auth, Auth::Waiting);
        let password = self.config.password.as_ref().map(|p| p.expose().to_owned());
        let need_password = |method: &str| {
            PgError::Auth(format!(
                "the server asks for a password ({method}) and PgConfig has none; set one, or allow this client in pg_hba.conf"
            ))
        };
        match message {
            Message::AuthenticationOk => {
                if let Auth::Scram(scram) = auth {
                    if !scram.is_verified() {
                        return self.fail(PgError::Auth(
                            "the server skipped the end of SCRAM, so it never proved it knows the password; refused".into(),
                        ));
                    }
                }
                self.state = State::Starting;
            }
            Message::AuthenticationCleartextPassword if waiting => {
                let Some(password) = password else {
                    return self.fail(need_password("cleartext"));
                };
                *auth = Auth::PasswordSent;
                self.write_auth(|out| frontend::password_message(password.as_bytes(), out));
            }
            Message::AuthenticationMd5Password(body) if waiting => {
                let Some(password) = password else {
                    return self.fail(need_password("MD5"));
                };
                let hash = md5_hash(self.config.user.as_bytes(), password.as_bytes(), body.salt());
                *auth = Auth::PasswordSent;
                self.write_auth(|out| frontend::password_message(hash.as_bytes(), out));
            }
            Message::AuthenticationSasl(body) if waiting => {
                let mut mechanisms = Vec::new();
                let mut iter = body.mechanisms();
                loop {
                    match iter.next() {
                        Ok(Some(m)) => mechanisms.push(m.to_owned()),
                        Ok(None) => break,
                        Err(e) => {
                            return self.fail(PgError::protocol(format!(
                                "malformed SASL mechanism list: {e}"
                            )));
                        }
                    }
                }
                if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                    return self.fail(PgError::Auth(format!(
                        "the server offers SASL mechanisms {mechanisms:?}; this client speaks SCRAM-SHA-256"
                    )));
                }
                let Some(password) = password else {
                    return self.fail(need_password("SCRAM-SHA-256"));
                };
                let scram = Scram::new(&password, &self.entropy);
                let first = scram.client_first();
                *auth = Auth::Scram(Box::new(scram));
                self.write_auth(|out| {
                    frontend::sasl_initial_response(SCRAM_SHA_256, first.as_bytes(), out)
                });
            }
            Message::AuthenticationSaslContinue(body) => {
                let Auth::Scram(scram) = auth else {
                    return self.unexpected(b'R', "(SASLContinue) outside a SCRAM exchange");
                };
                match scram.server_first(body.data(), self.config.max_scram_iterations) {
                    Ok(reply) => self.write_auth(|out| frontend::sasl_response(reply.as_bytes(), out)),
                    Err(e) => self.fail(e),
                }
            }
            Message::AuthenticationSaslFinal(body) => {
                let Auth::Scram(scram) = auth else {
                    return self.unexpected(b'R', "(SASLFinal) outside a SCRAM exchange");
                };
                if let Err(e) = scram.server_final(body.data()) {
                    self.fail(e);
                }
            }
            Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential
            | Message::AuthenticationGss
            | Message::AuthenticationGssContinue(_)
            | Message::AuthenticationSspi => self.fail(PgError::Auth(
                "the server asks for Kerberos, GSSAPI, SSPI or SCM credentials, which this client does not speak; configure pg_hba.conf for scram-sha-256, md5, password or trust".into(),
            )),
            _ => self.fail(PgError::protocol(
                "unexpected message during authentication (a second password request, or a query response before AuthenticationOk)",
            )),
        }
    }

    fn write_auth(&mut self, write: impl FnOnce(&mut BytesMut) -> std::io::Result<()>) {
        if let Err(e) = write(&mut self.out) {
            self.fail(PgError::Auth(format!(
                "the authentication message cannot be written: {e}"
            )));
        }
    }

    fn on_starting(&mut self, now: Time, message: Message) {
        match message {
            Message::BackendKeyData(body) => {
                self.backend_key = Some(CancelRequest::new(body.process_id(), body.secret_key()));
            }
            Message::ReadyForQuery(body) => {
                if let Err(e) = self.set_transaction(body.status()) {
                    return self.fail(e);
                }
                self.state = State::Ready;
                self.head_since = now;
                let held = self.held.split();
                self.out.unsplit(held);
                self.events.push_back(Event::Ready);
            }
            _ => self.fail(PgError::protocol(
                "unexpected message between AuthenticationOk and the first ReadyForQuery",
            )),
        }
    }

    fn set_transaction(&mut self, status: u8) -> Result<(), PgError> {
        self.transaction = match status {
            b'I' => TransactionStatus::Idle,
            b'T' => TransactionStatus::InTransaction,
            b'E' => TransactionStatus::Failed,
            other => {
                return Err(PgError::protocol(format!(
                    "ReadyForQuery with unknown transaction status {other:#04x}"
                )));
            }
        };
        Ok(())
    }

    fn on_ready(&mut self, now: Time, message: Message) {
        if let Message::NotificationResponse(body) = &message {
            return match (body.channel(), body.message()) {
                (Ok(channel), Ok(payload)) => {
                    self.events.push_back(Event::Notification(Notification {
                        process_id: body.process_id(),
                        channel: channel.to_owned(),
                        payload: payload.to_owned(),
                    }))
                }
                _ => self.fail(PgError::protocol("a NotificationResponse is not UTF-8")),
            };
        }
        let max_result = self.config.max_result_bytes;
        let Some(head) = self.in_flight.front_mut() else {
            let tag = message_tag(&message);
            return self.unexpected(tag, "with no query in flight");
        };
        match message {
            Message::ParseComplete => match &mut head.kind {
                Kind::Extended { parse_pending, .. } => *parse_pending = false,
                Kind::Simple => self.unexpected(b'1', "in a simple query"),
            },
            Message::BindComplete => {
                if head.columns.is_none() {
                    if let Kind::Extended {
                        statement: Some(name),
                        ..
                    } = &head.kind
                    {
                        head.columns = self.cache.columns(name);
                    }
                }
            }
            Message::CloseComplete | Message::ParameterDescription(_) => {}
            Message::RowDescription(body) => {
                let extended = matches!(head.kind, Kind::Extended { .. });
                match row::columns(&body, extended) {
                    Ok(columns) => {
                        if let Kind::Extended {
                            statement: Some(name),
                            ..
                        } = &head.kind
                        {
                            self.cache.described(name, columns.clone());
                        }
                        head.columns = Some(columns);
                    }
                    Err(e) => self.fail(e),
                }
            }
            Message::NoData => {
                let columns: Arc<[Column]> = Arc::new([]);
                if let Kind::Extended {
                    statement: Some(name),
                    ..
                } = &head.kind
                {
                    self.cache.described(name, columns.clone());
                }
                head.columns = Some(columns);
            }
            Message::DataRow(body) => {
                if head.error.is_some() {
                    return; // failed already (too large, COPY): discard
                }
                let Some(columns) = head.columns.clone() else {
                    return self.unexpected(b'D', "before the row's description");
                };
                let size = body.buffer().len();
                match Row::new(columns, body) {
                    Ok(row) if head.bytes.saturating_add(size) <= max_result => {
                        head.bytes += size;
                        head.rows.push(row);
                    }
                    Ok(_) => {
                        head.rows = Vec::new();
                        head.sets = Vec::new();
                        head.error = Some(PgError::ResultTooLarge { limit: max_result });
                    }
                    Err(e) => self.fail(e),
                }
            }
            Message::CommandComplete(body) => {
                let Ok(tag) = body.tag() else {
                    return self.fail(PgError::protocol("a CommandComplete tag is not UTF-8"));
                };
                if tag == "DISCARD ALL" || tag == "DEALLOCATE ALL" {
                    self.cache.clear();
                }
                let set = ResultSet {
                    columns: head.columns.take().unwrap_or_else(|| Arc::new([])),
                    rows: std::mem::take(&mut head.rows),
                    tag: tag.into(),
                };
                if head.error.is_none() {
                    head.sets.push(set);
                }
            }
            Message::EmptyQueryResponse => {
                head.columns = None;
                head.sets.push(ResultSet::default());
            }
            Message::CopyInResponse(_) => {
                head.error.get_or_insert(PgError::CopyUnsupported);
                // The message has no NUL, so this cannot fail.
                let _ = frontend::copy_fail(
                    "COPY FROM STDIN is not supported by this client",
                    &mut self.out,
                );
            }
            Message::CopyOutResponse(_) => {
                head.error.get_or_insert(PgError::CopyUnsupported);
            }
            Message::CopyData(_) | Message::CopyDone => {
                if !matches!(head.error, Some(PgError::CopyUnsupported)) {
                    self.unexpected(b'd', "outside a COPY")
                }
            }
            Message::ReadyForQuery(body) => {
                if let Err(e) = self.set_transaction(body.status()) {
                    return self.fail(e);
                }
                self.complete_head(now);
            }
            other => {
                let tag = message_tag(&other);
                self.unexpected(tag, "while queries are in flight")
            }
        }
    }

    fn complete_head(&mut self, now: Time) {
        let Some(done) = self.in_flight.pop_front() else {
            return;
        };
        if let Kind::Extended {
            statement: Some(name),
            parse_pending,
        } = &done.kind
        {
            if *parse_pending {
                self.cache.forget(name);
            } else {
                self.cache.release(name);
            }
        }
        self.head_since = now;
        let result = match done.error {
            Some(e) => Err(self.original_parse_error(&done.kind, e)),
            None => Ok(done.sets),
        };
        self.events.push_back(Event::Done {
            id: done.id,
            result,
        });
    }

    /// A query that bound a statement whose preparation failed ahead of it in the
    /// pipeline reports that failure, not the missing statement.
    fn original_parse_error(&mut self, kind: &Kind, error: PgError) -> PgError {
        if self.failed_parses.is_empty() {
            return error;
        }
        let mut result = error;
        if let Kind::Extended {
            statement: Some(name),
            ..
        } = kind
        {
            if result.code() == Some(super::error::sqlstate::INVALID_SQL_STATEMENT_NAME) {
                if let Some((_, original)) = self.failed_parses.iter().find(|(n, _)| n == name) {
                    result = original.clone();
                }
            }
        }
        let in_flight = &self.in_flight;
        self.failed_parses.retain(|(name, _)| {
            in_flight
                .iter()
                .any(|q| matches!(&q.kind, Kind::Extended { statement: Some(n), .. } if n == name))
        });
        result
    }

    /// Ends the connection: every query in flight fails with `error`, then
    /// [`Event::Closed`].
    fn fail(&mut self, error: PgError) {
        if self.is_closed() {
            return;
        }
        self.state = State::Closed;
        self.input = BytesMut::new();
        self.held = BytesMut::new();
        // Nothing queued is worth sending to a session that is over.
        self.out.clear();
        for done in std::mem::take(&mut self.in_flight) {
            self.events.push_back(Event::Done {
                id: done.id,
                result: Err(error.clone()),
            });
        }
        self.events.push_back(Event::Closed(error));
    }

    // ---- application calls ----

    /// Ends the session politely: queues `Terminate`; queries in flight fail with
    /// [`PgError::Closed`].
    pub fn close(&mut self, _now: Time) {
        if self.is_closed() {
            return;
        }
        let ready = self.is_ready();
        self.fail(PgError::Closed(ClosedReason::ByClient));
        if ready {
            frontend::terminate(&mut self.out);
        }
    }

    fn admit(&mut self, now: Time) -> Result<QueryId, PgError> {
        if self.is_closed() {
            return Err(PgError::Closed(ClosedReason::ByClient));
        }
        if self.in_flight.len() >= self.config.max_in_flight {
            return Err(PgError::PipelineFull {
                limit: self.config.max_in_flight,
            });
        }
        if self.in_flight.is_empty() {
            self.head_since = now;
        }
        self.next_id += 1;
        Ok(QueryId(self.next_id))
    }

    fn push(&mut self, id: QueryId, kind: Kind, columns: Option<Arc<[Column]>>) {
        self.in_flight.push_back(InFlight {
            id,
            kind,
            columns,
            sets: Vec::new(),
            rows: Vec::new(),
            bytes: 0,
            error: None,
            cancel_sent: false,
        });
    }

    /// Sends `sql` with the simple query protocol: no parameters, any number of
    /// statements separated by `;`, text results. Before the startup finishes the
    /// query waits and is sent when it does.
    pub fn query(&mut self, now: Time, sql: &str) -> Result<QueryId, PgError> {
        if sql.contains('\0') {
            return Err(PgError::Query("the SQL text contains a NUL byte".into()));
        }
        let id = self.admit(now)?;
        let buf = if self.is_ready() {
            &mut self.out
        } else {
            &mut self.held
        };
        frontend::query(sql, buf).map_err(|e| PgError::Query(e.to_string()))?;
        self.push(id, Kind::Simple, None);
        Ok(id)
    }

    /// Runs one statement with the extended query protocol: `params` bound as `$1`,
    /// `$2`, ... in binary, results in binary, the statement prepared once per
    /// connection and cached. Ends with its own Sync, so it fails alone.
    pub fn execute(&mut self, now: Time, sql: &str, params: &[Value]) -> Result<QueryId, PgError> {
        if params.len() > usize::from(u16::MAX) {
            return Err(PgError::Query(format!(
                "{} parameters; PostgreSQL takes at most 65535",
                params.len()
            )));
        }
        let id = self.admit(now)?;
        // Most statements take a few parameters: their types stay on the stack.
        let mut few = [0u32; FEW_PARAMS];
        let many: Vec<u32>;
        let types: &[u32] = if params.len() <= FEW_PARAMS {
            for (ty, p) in few.iter_mut().zip(params) {
                *ty = p.param_type().0;
            }
            &few[..params.len()]
        } else {
            many = params.iter().map(|p| p.param_type().0).collect();
            &many
        };
        // A cached statement's text passed this check when it was prepared (a text
        // with a NUL is never cached): only a text about to be sent is scanned.
        let lookup = match self.cache.hit(sql, types) {
            Some(hit) => hit,
            None if sql.contains('\0') => {
                return Err(PgError::Query("the SQL text contains a NUL byte".into()));
            }
            None => self.cache.prepare(sql, types),
        };
        let super::cache::Lookup {
            prepared,
            evicted,
            columns,
        } = lookup;
        let buf = if self.is_ready() {
            &mut self.out
        } else {
            &mut self.held
        };
        let rollback = buf.len();
        let written = write_extended(buf, sql, types, params, &prepared, evicted.as_deref());
        if let Err(e) = written {
            buf.truncate(rollback);
            match &prepared {
                Prepared::New(name) => self.cache.forget(name),
                Prepared::Cached(name) => self.cache.release(name),
                Prepared::Unnamed => {}
            }
            return Err(e);
        }
        let kind = match prepared {
            Prepared::Cached(name) => Kind::Extended {
                statement: Some(name),
                parse_pending: false,
            },
            Prepared::New(name) => Kind::Extended {
                statement: Some(name),
                parse_pending: true,
            },
            Prepared::Unnamed => Kind::Extended {
                statement: None,
                parse_pending: false,
            },
        };
        self.push(id, kind, columns);
        Ok(id)
    }
}

/// Writes one extended-protocol unit: [Close evicted] [Parse, Describe] Bind, Execute,
/// Sync.
fn write_extended(
    buf: &mut BytesMut,
    sql: &str,
    types: &[u32],
    params: &[Value],
    prepared: &Prepared,
    evicted: Option<&str>,
) -> Result<(), PgError> {
    let io = |e: std::io::Error| PgError::Query(e.to_string());
    if let Some(name) = evicted {
        frontend::close(b'S', name, buf).map_err(io)?;
    }
    let name: &str = match prepared {
        Prepared::Cached(name) => name,
        Prepared::New(name) => name,
        Prepared::Unnamed => "",
    };
    if !matches!(prepared, Prepared::Cached(_)) {
        frontend::parse(name, sql, types.iter().copied(), buf).map_err(io)?;
        frontend::describe(b'S', name, buf).map_err(io)?;
    }
    let mut failed = None;
    let bound = frontend::bind(
        "",
        name,
        std::iter::once(1i16),
        params.iter().enumerate(),
        |(i, value), buf| {
            value.encode(buf).map_err(|reason| {
                failed = Some(TypeError::Encode {
                    index: i + 1,
                    reason: reason.clone(),
                });
                reason.into()
            })
        },
        std::iter::once(1i16),
        buf,
    );
    if let Err(e) = bound {
        return Err(match failed {
            Some(t) => PgError::Type(t),
            None => PgError::Query(match e {
                frontend::BindError::Conversion(e) => e.to_string(),
                frontend::BindError::Serialization(e) => e.to_string(),
            }),
        });
    }
    frontend::execute("", 0, buf).map_err(io)?;
    frontend::sync(buf);
    Ok(())
}

fn negotiate_protocol_version(body: &[u8]) -> PgError {
    let read_i32 = |at: usize| -> Option<i32> {
        Some(i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?))
    };
    let newest_minor = read_i32(0).unwrap_or(-1);
    let count = read_i32(4).unwrap_or(0).max(0) as usize;
    let mut unrecognized = Vec::new();
    let mut rest = body.get(8..).unwrap_or(&[]);
    // Each option is a NUL-terminated string, so `count` cannot exceed the bytes.
    while unrecognized.len() < count.min(body.len()) {
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            break;
        };
        unrecognized.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        rest = &rest[end + 1..];
    }
    PgError::ProtocolVersion {
        newest_minor,
        unrecognized,
    }
}

fn message_tag(message: &Message) -> u8 {
    match message {
        Message::AuthenticationCleartextPassword
        | Message::AuthenticationGss
        | Message::AuthenticationKerberosV5
        | Message::AuthenticationMd5Password(_)
        | Message::AuthenticationOk
        | Message::AuthenticationScmCredential
        | Message::AuthenticationSspi
        | Message::AuthenticationGssContinue(_)
        | Message::AuthenticationSasl(_)
        | Message::AuthenticationSaslContinue(_)
        | Message::AuthenticationSaslFinal(_) => b'R',
        Message::BackendKeyData(_) => b'K',
        Message::BindComplete => b'2',
        Message::CloseComplete => b'3',
        Message::CommandComplete(_) => b'C',
        Message::CopyData(_) => b'd',
        Message::CopyDone => b'c',
        Message::CopyInResponse(_) => b'G',
        Message::CopyOutResponse(_) => b'H',
        Message::DataRow(_) => b'D',
        Message::EmptyQueryResponse => b'I',
        Message::ErrorResponse(_) => b'E',
        Message::NoData => b'n',
        Message::NoticeResponse(_) => NOTICE_RESPONSE_TAG,
        Message::NotificationResponse(_) => b'A',
        Message::ParameterDescription(_) => b't',
        Message::ParameterStatus(_) => b'S',
        Message::ParseComplete => b'1',
        Message::PortalSuspended => b's',
        Message::ReadyForQuery(_) => b'Z',
        Message::RowDescription(_) => b'T',
        _ => b'?',
    }
}

fn message_name(tag: u8) -> &'static str {
    match tag {
        b'R' => "Authentication",
        b'K' => "BackendKeyData",
        b'2' => "BindComplete",
        b'3' => "CloseComplete",
        b'C' => "CommandComplete",
        b'd' => "CopyData",
        b'c' => "CopyDone",
        b'G' => "CopyInResponse",
        b'H' => "CopyOutResponse",
        b'D' => "DataRow",
        b'I' => "EmptyQueryResponse",
        b'E' => "ErrorResponse",
        b'n' => "NoData",
        b'N' => "NoticeResponse",
        b'A' => "NotificationResponse",
        b't' => "ParameterDescription",
        b'S' => "ParameterStatus",
        b'1' => "ParseComplete",
        b's' => "PortalSuspended",
        b'Z' => "ReadyForQuery",
        b'T' => "RowDescription",
        _ => "message",
    }
}
