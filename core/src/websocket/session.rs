//! [`WsSession`]: one server-side WebSocket connection as a sans-IO state machine.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use tungstenite::error::Error;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Message, Role, WebSocketContext};

use super::close::{POLICY_VIOLATION, close_frame_for};
use super::config::WsConfig;
use super::handshake::{Acceptor, HandshakeError};
use super::pipe::Pipe;
use crate::effect::CloseReason;
use crate::policy::{Disconnect, close_reason};
use crate::{ProgramError, Time};

/// A message the server sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsMessage {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping (at most 125 bytes); the client answers with a pong.
    Ping(Vec<u8>),
}

/// What the session tells its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsEvent {
    /// The handshake from raw bytes succeeded (the `101` response is queued), with
    /// the subprotocol chosen.
    Opened {
        /// The subprotocol chosen, if any.
        subprotocol: Option<String>,
    },
    /// The handshake was refused; the HTTP refusal is queued and the session is
    /// finished.
    Rejected(HandshakeError),
    /// A whole text message from the client.
    Text(String),
    /// A whole binary message from the client.
    Binary(Vec<u8>),
    /// The connection ended; the session is finished once its last bytes are written.
    /// Comes exactly once per opened session.
    Closed(Disconnect),
}

/// Why a send was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WsSendError {
    /// The connection is not open: its handshake is not done (`None`), or it is
    /// closing or closed (how it ended, once it has).
    #[error(
        "the WebSocket is not open (handshake unfinished, closing or closed: {0:?}); nothing more can be sent"
    )]
    Closed(Option<Disconnect>),
    /// The client reads too slowly: sending would queue more than
    /// `WsConfig::max_queued_bytes`. The message was dropped and the session closes
    /// the connection with 1008 `Client too slow`.
    #[error(
        "the client reads too slowly: {queued} bytes are waiting and {message} more would pass the limit of {limit}; the connection is being closed with 1008"
    )]
    SlowClient {
        /// Bytes already waiting for the client.
        queued: usize,
        /// The size of the refused message.
        message: usize,
        /// `WsConfig::max_queued_bytes`.
        limit: usize,
    },
    /// A ping payload longer than 125 bytes.
    #[error("a ping carries at most 125 bytes, not {0}")]
    PingTooBig(usize),
}

/// The opcodes of a text and a binary frame (RFC 6455, section 5.2).
const TEXT_OPCODE: u8 = 0x1;
const BINARY_OPCODE: u8 = 0x2;

/// Appends one final, unmasked data frame (as a server sends it) to `out`: the
/// header of RFC 6455 section 5.2, with the shortest length encoding, then `payload`.
fn write_data_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    const FIN: u8 = 0x80;
    let len = payload.len();
    out.reserve(10 + len);
    out.push(FIN | opcode);
    match len {
        0..=125 => out.push(len as u8),
        126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

#[derive(Debug)]
enum State {
    /// Reading the upgrade request from raw bytes.
    Handshaking {
        acceptor: Acceptor,
        request: Vec<u8>,
    },
    Open,
    /// The server sent its close frame and waits for the client's until `deadline`.
    Closing {
        code: u16,
        deadline: Time,
    },
    /// Nothing more will be read or sent once the queued bytes are written.
    Finished,
}

/// The server side of one WebSocket connection, as a sans-IO state machine on
/// tungstenite's framing: bytes from the socket go in, bytes for the socket and
/// events for the program come out, and time is an input.
///
/// - **Inputs**: [`handle_input`](Self::handle_input) (bytes read from the socket),
///   [`handle_eof`](Self::handle_eof), [`handle_transmitted`](Self::handle_transmitted),
///   [`handle_send`](Self::handle_send), [`handle_close`](Self::handle_close),
///   [`handle_program_end`](Self::handle_program_end),
///   [`handle_shutdown`](Self::handle_shutdown) and
///   [`handle_timeout`](Self::handle_timeout), each taking `now`.
/// - **Outputs**: [`poll_event`](Self::poll_event) and
///   [`poll_transmit`](Self::poll_transmit) (the bytes to write, which stay queued
///   until [`handle_transmitted`](Self::handle_transmitted) says how many were written).
/// - **One deadline**: [`poll_timeout`](Self::poll_timeout) (keep-alive ping, idle
///   timeout, the close handshake's wait); calling `handle_timeout` early is harmless.
///
/// **Drain rule**: after each input, drain [`poll_event`](Self::poll_event) until
/// `None` and write out [`poll_transmit`](Self::poll_transmit) before the next input.
/// When [`is_finished`](Self::is_finished) and nothing is left to transmit, close the
/// socket.
///
/// **Slow clients**: bytes wait in the session until the driver reports them written;
/// a send that would queue more than `WsConfig::max_queued_bytes` is refused with
/// [`WsSendError::SlowClient`] and the connection is closed with 1008 `Client too
/// slow` (the close frame may pass the bound by its few bytes).
#[derive(Debug)]
pub struct WsSession {
    config: WsConfig,
    state: State,
    ctx: WebSocketContext,
    pipe: Pipe,
    /// Bytes of `pipe.outbound` the driver reported written.
    written: usize,
    events: VecDeque<WsEvent>,
    last_heard: Time,
    last_ping: Time,
    closed: Option<Disconnect>,
}

impl WsSession {
    /// A session that reads the upgrade request from the socket's first bytes and
    /// answers it itself (`101`, or the refusal's status).
    pub fn from_raw(config: WsConfig, acceptor: Acceptor, now: Time) -> WsSession {
        let mut session = WsSession::upgraded(config, now);
        session.state = State::Handshaking {
            acceptor,
            request: Vec::new(),
        };
        session
    }

    /// A session on a connection an HTTP server already upgraded (after
    /// [`Acceptor::accept`] and its `101` response). Pass any bytes the server read
    /// past the request to [`handle_input`](Self::handle_input).
    pub fn upgraded(config: WsConfig, now: Time) -> WsSession {
        let ctx = WebSocketContext::new(Role::Server, Some(config.framing()));
        WsSession {
            config,
            state: State::Open,
            ctx,
            pipe: Pipe::default(),
            written: 0,
            events: VecDeque::new(),
            last_heard: now,
            last_ping: now,
            closed: None,
        }
    }

    /// Bytes read from the socket.
    pub fn handle_input(&mut self, now: Time, bytes: &[u8]) {
        if bytes.is_empty() || matches!(self.state, State::Finished) {
            return;
        }
        self.last_heard = now;
        if let State::Handshaking { acceptor, request } = &mut self.state {
            request.extend_from_slice(bytes);
            match acceptor.accept_bytes(request, self.config.max_request_bytes) {
                Ok(None) => return,
                Ok(Some((accepted, consumed))) => {
                    let rest = request.split_off(consumed);
                    self.pipe.outbound.extend(accepted.response_bytes());
                    self.events.push_back(WsEvent::Opened {
                        subprotocol: accepted.subprotocol,
                    });
                    self.state = State::Open;
                    self.last_ping = now;
                    self.pipe.push_inbound(&rest);
                }
                Err(refused) => {
                    self.reject(refused);
                    return;
                }
            }
        } else {
            self.pipe.push_inbound(bytes);
        }
        self.read(now);
    }

    /// The socket reached end of stream (or failed): the client vanished, unless the
    /// close handshake already ended the session.
    pub fn handle_eof(&mut self, _now: Time) {
        match self.state {
            State::Finished => {}
            State::Handshaking { .. } => self.state = State::Finished,
            State::Closing { code, .. } => self.finish(Disconnect::ServerClosed { code }),
            State::Open => self.finish(Disconnect::ClientVanished),
        }
    }

    /// The driver wrote the first `n` bytes of [`poll_transmit`](Self::poll_transmit).
    pub fn handle_transmitted(&mut self, n: usize) {
        self.written = (self.written + n).min(self.pipe.outbound.len());
        if self.written == self.pipe.outbound.len() {
            self.pipe.outbound.clear();
            self.written = 0;
        }
    }

    /// Sends a message to the client. See the type's note on slow clients.
    pub fn handle_send(&mut self, now: Time, message: WsMessage) -> Result<(), WsSendError> {
        if !matches!(self.state, State::Open) {
            return Err(WsSendError::Closed(self.closed));
        }
        let size = match &message {
            WsMessage::Text(t) => t.len(),
            WsMessage::Binary(b) => b.len(),
            WsMessage::Ping(p) if p.len() > 125 => return Err(WsSendError::PingTooBig(p.len())),
            WsMessage::Ping(p) => p.len(),
        };
        let queued = self.queued();
        if queued.saturating_add(size) > self.config.max_queued_bytes {
            self.fail(now, POLICY_VIOLATION, "Client too slow");
            return Err(WsSendError::SlowClient {
                queued,
                message: size,
                limit: self.config.max_queued_bytes,
            });
        }
        let message = match message {
            // A data message is one unmasked frame, written straight into the
            // outgoing bytes: one copy of the payload where the framing makes two
            // (into its buffer, then into ours). Nothing of the framing's can be
            // waiting to go first: every call that queues a pong or a close reply
            // flushes it into the outgoing bytes before returning.
            WsMessage::Text(t) if self.ctx.can_write() => {
                write_data_frame(&mut self.pipe.outbound, TEXT_OPCODE, t.as_bytes());
                return Ok(());
            }
            WsMessage::Binary(b) if self.ctx.can_write() => {
                write_data_frame(&mut self.pipe.outbound, BINARY_OPCODE, &b);
                return Ok(());
            }
            WsMessage::Text(t) => Message::Text(t.into()),
            WsMessage::Binary(b) => Message::Binary(b.into()),
            WsMessage::Ping(p) => Message::Ping(p.into()),
        };
        match self.ctx.write(&mut self.pipe, message) {
            Ok(()) => {
                self.flush(now);
                Ok(())
            }
            Err(e) => {
                self.on_error(now, &e);
                Err(WsSendError::Closed(self.closed))
            }
        }
    }

    /// Starts the close handshake with `reason`; the session finishes when the client
    /// answers or `WsConfig::close_timeout` passes.
    pub fn handle_close(&mut self, now: Time, reason: &CloseReason) {
        if !matches!(self.state, State::Open) {
            return;
        }
        let code = reason.code();
        let frame = CloseFrame {
            code: code.into(),
            reason: reason.text().to_owned().into(),
        };
        match self.ctx.close(&mut self.pipe, Some(frame)) {
            Ok(()) | Err(Error::ConnectionClosed) => {
                self.state = State::Closing {
                    code,
                    deadline: now.saturating_add(self.config.close_timeout),
                };
            }
            Err(e) => self.on_error(now, &e),
        }
    }

    /// The program serving this connection ended with `result`: close with the code
    /// core's one policy gives ([`close_reason`]).
    pub fn handle_program_end<O>(&mut self, now: Time, result: &Result<O, ProgramError>) {
        self.handle_close(now, &close_reason(result));
    }

    /// The server is shutting down: close with 1001.
    pub fn handle_shutdown(&mut self, now: Time) {
        self.handle_close(now, &CloseReason::GoingAway);
    }

    /// Time passed: sends a keep-alive ping, closes an idle connection with 1008
    /// `Idle timeout`, or gives up waiting for the client's close frame.
    pub fn handle_timeout(&mut self, now: Time) {
        match self.state {
            State::Finished => {}
            State::Handshaking { .. } => {
                if self.idle_deadline().is_some_and(|d| now >= d) {
                    self.reject(HandshakeError::Timeout);
                }
            }
            State::Closing { code, deadline } => {
                if now >= deadline {
                    self.finish(Disconnect::ServerClosed { code });
                }
            }
            State::Open => {
                if self.idle_deadline().is_some_and(|d| now >= d) {
                    self.fail(now, POLICY_VIOLATION, "Idle timeout");
                } else if self.ping_deadline().is_some_and(|d| now >= d) {
                    self.last_ping = now;
                    if let Err(e) = self
                        .ctx
                        .write(&mut self.pipe, Message::Ping(Vec::new().into()))
                    {
                        self.on_error(now, &e);
                    } else {
                        self.flush(now);
                    }
                }
            }
        }
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<WsEvent> {
        self.events.pop_front()
    }

    /// The bytes waiting to be written to the socket, if any. They stay until
    /// [`handle_transmitted`](Self::handle_transmitted) reports them written.
    pub fn poll_transmit(&self) -> Option<&[u8]> {
        let waiting = &self.pipe.outbound[self.written..];
        (!waiting.is_empty()).then_some(waiting)
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        match self.state {
            State::Finished => None,
            State::Handshaking { .. } => self.idle_deadline(),
            State::Closing { deadline, .. } => Some(deadline),
            State::Open => match (self.idle_deadline(), self.ping_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }

    /// Whether the session is over: close the socket once nothing is left to transmit.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }

    /// How the connection ended, once it has.
    pub fn disconnect(&self) -> Option<Disconnect> {
        self.closed
    }

    /// Bytes waiting for the client.
    pub fn queued(&self) -> usize {
        self.pipe.outbound.len() - self.written
    }

    fn idle_deadline(&self) -> Option<Time> {
        self.config
            .idle_timeout
            .map(|d| self.last_heard.saturating_add(d))
    }

    fn ping_deadline(&self) -> Option<Time> {
        let interval: Duration = self.config.keepalive_interval?;
        Some(self.last_heard.max(self.last_ping).saturating_add(interval))
    }

    /// Reads every whole message the inbound bytes hold, then flushes what reading
    /// produced (pongs, the close reply).
    fn read(&mut self, now: Time) {
        loop {
            if matches!(self.state, State::Finished) {
                return;
            }
            match self.ctx.read(&mut self.pipe) {
                Ok(Message::Text(text)) => self
                    .events
                    .push_back(WsEvent::Text(text.as_str().to_owned())),
                Ok(Message::Binary(data)) => self.events.push_back(WsEvent::Binary(data.to_vec())),
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Close(frame)) => {
                    let disconnect = match self.state {
                        State::Closing { code, .. } => Disconnect::ServerClosed { code },
                        _ => Disconnect::ClientClosed {
                            code: frame.map_or(1005, |f| u16::from(f.code)),
                        },
                    };
                    // The framing queued the reply to a client's close; write it out.
                    let _ = self.ctx.flush(&mut self.pipe);
                    self.finish(disconnect);
                    return;
                }
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.on_error(now, &e);
                    return;
                }
            }
        }
        self.flush(now);
    }

    /// Moves what the framing holds (pongs among it) into the outgoing bytes.
    fn flush(&mut self, now: Time) {
        if let Err(e) = self.ctx.flush(&mut self.pipe) {
            self.on_error(now, &e);
        }
    }

    fn on_error(&mut self, now: Time, error: &Error) {
        match close_frame_for(error) {
            Some((code, reason)) => self.fail(now, code, reason),
            None => {
                let disconnect = match self.state {
                    State::Closing { code, .. } => Disconnect::ServerClosed { code },
                    _ => self.closed.unwrap_or(Disconnect::ClientVanished),
                };
                self.finish(disconnect);
            }
        }
    }

    /// Fails the connection: queues a close frame with `code` and finishes at once,
    /// without waiting for the client's answer.
    fn fail(&mut self, _now: Time, code: u16, reason: &str) {
        if matches!(self.state, State::Finished) {
            return;
        }
        tracing::debug!(code, reason, "closing the WebSocket");
        let frame = CloseFrame {
            code: code.into(),
            reason: reason.to_owned().into(),
        };
        let _ = self.ctx.close(&mut self.pipe, Some(frame));
        self.finish(Disconnect::ServerClosed { code });
    }

    fn reject(&mut self, refused: HandshakeError) {
        self.pipe.outbound.extend(refused.response_bytes());
        self.events.push_back(WsEvent::Rejected(refused));
        self.state = State::Finished;
    }

    fn finish(&mut self, disconnect: Disconnect) {
        if matches!(self.state, State::Finished) {
            return;
        }
        self.state = State::Finished;
        self.closed = Some(disconnect);
        self.events.push_back(WsEvent::Closed(disconnect));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};

    /// The bytes the framing itself writes for one final data frame.
    fn framing_bytes(opcode: Data, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Frame::message(payload.to_vec(), OpCode::Data(opcode), true)
            .format(&mut out)
            .expect("a Vec takes any frame");
        out
    }

    #[test]
    fn a_data_frame_is_the_bytes_the_framing_writes_at_every_length_encoding() {
        for len in [0, 1, 125, 126, 127, 300, 0xFFFF, 0x1_0000, 0x1_0001] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut text = b"queued before".to_vec();
            write_data_frame(&mut text, TEXT_OPCODE, &payload);
            let mut expected = b"queued before".to_vec();
            expected.extend(framing_bytes(Data::Text, &payload));
            assert_eq!(text, expected, "text, {len} bytes");
            let mut binary = Vec::new();
            write_data_frame(&mut binary, BINARY_OPCODE, &payload);
            assert_eq!(
                binary,
                framing_bytes(Data::Binary, &payload),
                "binary, {len} bytes"
            );
        }
    }
}
