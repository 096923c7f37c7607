//! The simulated WebSocket clients: each connects, sends its scripted texts, and
//! closes, vanishes, lingers or stops reading; frames to it arrive in the order they
//! were sent. The server side keeps the real session's limits ([`WsLimits`]): a text
//! too long closes with 1009, a client that stopped reading is closed with 1008
//! `Client too slow` once the frames held for it would pass the limit. What the
//! program sees when its client goes is the shared policy ([`effectful::policy`]).
//!
//! [`WsLimits`]: super::WsLimits

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use effectful::effect::{Response, WebSocketRequest, WebSocketResponse};
use effectful::policy::{self, Disconnect};
use effectful::{EffectError, EffectId, Fx, ProgramError, ProgramId, Time};
use serde::{Deserialize, Serialize};

use super::queue::Event;
use super::{SimFamily, Simulation};
use crate::fake::Services;
use crate::trace::{ClientEvent, TraceRecord};

/// One client session: a WebSocket connection, and the program that serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// Which client (user) this is; several connections may share a client.
    pub client: u32,
    /// When it connects.
    pub connect_at: Time,
    /// What it sends: each text after waiting the given time since the previous send
    /// (or since connecting).
    pub messages: Vec<(Duration, String)>,
    /// How it ends after its last message.
    pub end: ConnectionEnd,
}

/// How a connection ends once the client has sent everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectionEnd {
    /// It sends a close frame after this long (close code 1000).
    Close {
        /// Wait after the last message.
        after: Duration,
    },
    /// It vanishes without a close frame after this long (the server sees 1006).
    Vanish {
        /// Wait after the last message.
        after: Duration,
    },
    /// It stays connected and silent until the program ends (at the latest at its
    /// deadline, when the server closes the connection with 1008).
    Linger,
    /// It stays connected but reads nothing more: the frames sent to it are held by
    /// the server until a send would hold more than
    /// [`WsLimits::max_queued_bytes`](super::WsLimits::max_queued_bytes) (that send
    /// fails with 1008 `Client too slow` and the server closes the connection) or the
    /// program ends. Then it reads every frame held for it, and the close.
    StopReading,
}

/// How the WebSocket connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectionState {
    /// Not connected yet.
    Waiting,
    /// Connected.
    Open,
    /// The client closed it (1000).
    ClosedByClient,
    /// The client vanished (1006).
    Vanished,
    /// The server closed it with this code: the program's `WebSocket.Close`, or the
    /// program ended with the connection open (1000 returned, 1008 deadline passed,
    /// 1011 failed).
    ClosedByServer(u16),
}

/// What one connection's client sent and saw, and how its program ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Transcript {
    /// The client.
    pub client: u32,
    /// When it connected.
    pub connected_at: Time,
    /// The program serving it, once spawned.
    pub program: Option<ProgramId>,
    /// Texts it sent, with the time.
    pub sent: Vec<(Time, String)>,
    /// Texts it received, with the time.
    pub received: Vec<(Time, String)>,
    /// The connection's state at the end.
    pub state: ConnectionState,
    /// When the connection closed (by either side) or vanished, if it did.
    pub closed_at: Option<Time>,
    /// When the program ended (how it ended: [`Simulation::results`]).
    pub finished: Option<Time>,
}

impl Transcript {
    /// The transcript without its texts.
    fn clone_times(&self) -> Transcript {
        Transcript {
            client: self.client,
            connected_at: self.connected_at,
            program: self.program,
            sent: Vec::new(),
            received: Vec::new(),
            state: self.state,
            closed_at: self.closed_at,
            finished: self.finished,
        }
    }
}

/// One connection as the simulator runs it: the client's script and state.
pub(super) struct ConnectionSim {
    script: Connection,
    state: ConnectionState,
    inbox: VecDeque<String>,
    waiting: Option<EffectId>,
    pub(super) transcript: Transcript,
    deadline: Option<Time>,
    /// When the last frame sent to the client arrives: a WebSocket is one TCP stream,
    /// so frames arrive in the order they were sent whatever their latency draws.
    last_arrival: Time,
    /// The client stopped reading ([`ConnectionEnd::StopReading`]): frames sent to it
    /// wait in `unread` (`unread_bytes` on the wire, headers included).
    stalled: bool,
    unread: VecDeque<String>,
    unread_bytes: usize,
    /// Frames on their way to the client: the transcript is whole only once none is.
    in_flight: u32,
    /// The transcript went to the sink ([`Simulation::on_transcript`]).
    handed_over: bool,
}

impl ConnectionSim {
    pub(super) fn new(script: Connection) -> ConnectionSim {
        ConnectionSim {
            transcript: Transcript {
                client: script.client,
                connected_at: script.connect_at,
                program: None,
                // Sized for the script, and for an answer to each line.
                sent: Vec::with_capacity(script.messages.len()),
                received: Vec::with_capacity(script.messages.len() + 1),
                state: ConnectionState::Waiting,
                closed_at: None,
                finished: None,
            },
            script,
            state: ConnectionState::Waiting,
            inbox: VecDeque::new(),
            waiting: None,
            deadline: None,
            last_arrival: Time::ZERO,
            stalled: false,
            unread: VecDeque::new(),
            unread_bytes: 0,
            in_flight: 0,
            handed_over: false,
        }
    }

    /// Whether nothing more can happen to the transcript: the program ended (so the
    /// connection is closed) and every frame sent to the client has arrived.
    fn transcript_whole(&self) -> bool {
        !self.handed_over && self.transcript.finished.is_some() && self.in_flight == 0
    }
}

impl<O, P, Fut, F> Simulation<O, P, F>
where
    O: fmt::Debug + 'static,
    P: FnMut(u32, Fx<F>) -> Fut,
    Fut: Future<Output = O> + 'static,
    F: SimFamily,
{
    pub(super) fn connect(&mut self, connection: u32) {
        let now = self.now;
        let Simulation {
            engine, program, ..
        } = self;
        let id = engine.spawn_async(now, |fx| program(connection, fx));
        self.report.programs += 1;
        self.by_program.insert(id, connection);
        let deadline = self.config.program_timeout.map(|t| now + t);
        let conn = &mut self.connections[connection as usize];
        conn.state = ConnectionState::Open;
        conn.transcript.state = ConnectionState::Open;
        conn.transcript.program = Some(id);
        conn.transcript.connected_at = now;
        conn.deadline = deadline;
        let first = conn.script.messages.first().map(|(delay, _)| *delay);
        let end = conn.script.end;
        self.trace.record(|| TraceRecord::Spawn {
            at: now,
            program: id,
            connection,
        });
        self.trace.record(|| TraceRecord::Client {
            at: now,
            connection,
            event: ClientEvent::Connect,
        });
        match first {
            Some(delay) => self.schedule(
                now + delay,
                Event::ClientSend {
                    connection,
                    index: 0,
                },
            ),
            None => self.schedule_end(connection, end),
        }
        self.drain();
    }

    fn schedule_end(&mut self, connection: u32, end: ConnectionEnd) {
        match end {
            ConnectionEnd::Close { after } | ConnectionEnd::Vanish { after } => {
                self.schedule(self.now + after, Event::ClientEnd(connection))
            }
            ConnectionEnd::Linger => {}
            ConnectionEnd::StopReading => self.connections[connection as usize].stalled = true,
        }
    }

    pub(super) fn client_send(&mut self, connection: u32, index: usize) {
        let now = self.now;
        let conn = &mut self.connections[connection as usize];
        if conn.state != ConnectionState::Open {
            return;
        }
        // Each scripted text is sent once: the transcript takes it over.
        let sent = std::mem::take(&mut conn.script.messages[index].1);
        let text = sent.clone();
        let next = conn.script.messages.get(index + 1).map(|(delay, _)| *delay);
        let end = conn.script.end;
        let waiting = conn.waiting.take();
        self.trace.record(|| TraceRecord::Client {
            at: now,
            connection,
            event: ClientEvent::Send(sent.clone()),
        });
        let conn = &mut self.connections[connection as usize];
        conn.transcript.sent.push((now, sent));
        if next.is_none() && end == ConnectionEnd::StopReading {
            // Before the program sees its last text: it reads nothing from now on.
            conn.stalled = true;
        }
        if text.len() > self.config.websocket.max_message_size {
            // The session refuses it before reading its payload: the program never
            // sees it, and the connection closes.
            conn.waiting = waiting;
            self.server_close(connection, MESSAGE_TOO_BIG);
            return;
        }
        match waiting {
            Some(id) => self.deliver(
                id,
                Ok(Response::WebSocket(WebSocketResponse::ReceiveText(text))),
            ),
            None => conn.inbox.push_back(text),
        }
        if self.drops_connection() {
            self.end_connection(connection, ConnectionState::Vanished);
            return;
        }
        match next {
            Some(delay) => self.schedule(
                now + delay,
                Event::ClientSend {
                    connection,
                    index: index + 1,
                },
            ),
            None => self.schedule_end(connection, end),
        }
    }

    pub(super) fn client_end(&mut self, connection: u32) {
        if self.connections[connection as usize].state != ConnectionState::Open {
            return;
        }
        let state = match self.connections[connection as usize].script.end {
            ConnectionEnd::Vanish { .. } => ConnectionState::Vanished,
            _ => ConnectionState::ClosedByClient,
        };
        self.end_connection(connection, state);
    }

    pub(super) fn end_connection(&mut self, connection: u32, state: ConnectionState) {
        let now = self.now;
        let conn = &mut self.connections[connection as usize];
        conn.state = state;
        conn.transcript.state = state;
        conn.transcript.closed_at = Some(now);
        let waiting = conn.waiting.take();
        let event = if state == ConnectionState::Vanished {
            ClientEvent::Vanish
        } else {
            ClientEvent::Close
        };
        self.trace.record(|| TraceRecord::Client {
            at: now,
            connection,
            event,
        });
        if let Some(id) = waiting {
            let error = closed_error("WebSocket.ReceiveText", state);
            self.deliver(id, Err(error));
        }
    }

    pub(super) fn websocket(&mut self, id: EffectId, request: WebSocketRequest) {
        let name = match &request {
            WebSocketRequest::SendText(_) => "WebSocket.SendText",
            WebSocketRequest::ReceiveText(_) => "WebSocket.ReceiveText",
            WebSocketRequest::Close(_) => "WebSocket.Close",
        };
        let Some(&connection) = self.by_program.get(id.program()) else {
            let error = EffectError::websocket_closed(name, 1006, "no connection for this program");
            self.deliver_at(self.now, id, Err(error));
            return;
        };
        let now = self.now;
        let state = self.connections[connection as usize].state;
        // Frames the client sent before it closed or vanished reached the server first:
        // the program reads them before it learns that the connection ended.
        if matches!(request, WebSocketRequest::ReceiveText(_))
            && matches!(
                state,
                ConnectionState::ClosedByClient | ConnectionState::Vanished
            )
        {
            if let Some(text) = self.connections[connection as usize].inbox.pop_front() {
                self.deliver_at(
                    now,
                    id,
                    Ok(Response::WebSocket(WebSocketResponse::ReceiveText(text))),
                );
                return;
            }
        }
        if state != ConnectionState::Open {
            self.deliver_at(now, id, Err(closed_error(name, state)));
            return;
        }
        match request {
            WebSocketRequest::SendText(send) => {
                let limit = self.config.websocket.max_queued_bytes;
                let conn = &mut self.connections[connection as usize];
                let result = if !conn.stalled {
                    self.send_to_client(connection, send.text);
                    Ok(Response::WebSocket(WebSocketResponse::SendText(())))
                } else if conn.unread_bytes.saturating_add(send.text.len()) > limit {
                    // As the session counts: what it holds (framed) and the new payload.
                    self.server_close(connection, POLICY_VIOLATION);
                    Err(EffectError::websocket_closed(
                        name,
                        POLICY_VIOLATION,
                        "Client too slow",
                    ))
                } else {
                    conn.unread_bytes += framed_len(&send.text);
                    conn.unread.push_back(send.text);
                    Ok(Response::WebSocket(WebSocketResponse::SendText(())))
                };
                self.deliver_at(now, id, result);
            }
            WebSocketRequest::ReceiveText(_) => {
                let conn = &mut self.connections[connection as usize];
                match conn.inbox.pop_front() {
                    Some(text) => self.deliver_at(
                        now,
                        id,
                        Ok(Response::WebSocket(WebSocketResponse::ReceiveText(text))),
                    ),
                    None => conn.waiting = Some(id),
                }
            }
            WebSocketRequest::Close(close) => {
                self.server_close(connection, close.reason.code());
                self.deliver_at(
                    now,
                    id,
                    Ok(Response::WebSocket(WebSocketResponse::Close(()))),
                );
            }
        }
    }

    /// Sends `text` to the client: it arrives after the drawn latency, and after the
    /// frame sent before it.
    fn send_to_client(&mut self, connection: u32, text: String) {
        let drawn = self.now + self.latency(self.config.faults.latency.websocket);
        let conn = &mut self.connections[connection as usize];
        // Strictly after the previous frame, so equal draws cannot swap them.
        let arrives = drawn.max(conn.last_arrival + Duration::from_nanos(1));
        conn.last_arrival = arrives;
        conn.in_flight += 1;
        self.schedule(arrives, Event::ClientReceive { connection, text });
    }

    /// The server closes `connection` with `code`: a receive the program is waiting
    /// on fails, and a client that stopped reading reads what was held for it.
    fn server_close(&mut self, connection: u32, code: u16) {
        let now = self.now;
        let state = ConnectionState::ClosedByServer(code);
        let conn = &mut self.connections[connection as usize];
        conn.state = state;
        conn.transcript.state = state;
        conn.transcript.closed_at = Some(now);
        let waiting = conn.waiting.take();
        let unread = std::mem::take(&mut conn.unread);
        conn.unread_bytes = 0;
        self.trace.record(|| TraceRecord::Client {
            at: now,
            connection,
            event: ClientEvent::ClosedByServer(code),
        });
        for text in unread {
            self.send_to_client(connection, text);
        }
        // Another of the program's futures may be waiting for a client message: the
        // close ends that wait. (Scheduled, not delivered at once: the engine's
        // outputs may still be being drained.)
        if let Some(waiting) = waiting {
            self.deliver_at(
                now,
                waiting,
                Err(closed_error("WebSocket.ReceiveText", state)),
            );
        }
    }

    /// A frame the server sent reaches the client (if the client is still there to
    /// read it).
    pub(super) fn client_receive(&mut self, connection: u32, text: String) {
        let conn = &mut self.connections[connection as usize];
        conn.in_flight -= 1;
        if conn.state == ConnectionState::Open
            || matches!(conn.state, ConnectionState::ClosedByServer(_))
        {
            let now = self.now;
            if self.trace.on {
                let event = ClientEvent::Receive(text.clone());
                self.trace.push(TraceRecord::Client {
                    at: now,
                    connection,
                    event,
                });
            }
            conn.transcript.received.push((now, text));
        }
        self.hand_over_if_whole(connection);
    }

    /// Sets where whole transcripts go: once a connection's program has ended and
    /// every frame sent to its client has arrived, `sink` gets the connection's index,
    /// its [`Transcript`] and the services as they are at that moment, and the
    /// simulation keeps only the transcript's times and state (its `sent` and
    /// `received` are emptied in [`transcripts`](Self::transcripts)). So a long run's
    /// memory holds the connections still open, not every frame ever sent: check
    /// each transcript as it comes (the chat checker does) instead of all at the end.
    ///
    /// Without a sink, every transcript stays whole until the simulation is dropped.
    pub fn on_transcript(&mut self, sink: impl FnMut(u32, Transcript, &Services) + 'static) {
        self.transcript_sink = Some(Box::new(sink));
    }

    /// Gives `connection`'s transcript to the sink if it is whole and there is one.
    pub(super) fn hand_over_if_whole(&mut self, connection: u32) {
        let Some(sink) = self.transcript_sink.as_mut() else {
            return;
        };
        let conn = &mut self.connections[connection as usize];
        if !conn.transcript_whole() {
            return;
        }
        conn.handed_over = true;
        let kept = conn.transcript.clone_times();
        let transcript = std::mem::replace(&mut conn.transcript, kept);
        // The script's texts were taken as they were sent; what is left is spent.
        conn.script.messages = Vec::new();
        conn.inbox = VecDeque::new();
        sink(connection, transcript, &self.services);
    }

    /// The program serving `connection` ended with `result`: if the connection is
    /// still open, the server closes it as the shared policy says (1000 returned,
    /// 1008 deadline, 1011 failed).
    pub(super) fn program_ended<T>(&mut self, connection: u32, result: &Result<T, ProgramError>) {
        let now = self.now;
        let conn = &mut self.connections[connection as usize];
        if conn.deadline.is_some_and(|d| now > d) {
            self.report.late += 1;
        }
        conn.transcript.finished = Some(now);
        conn.waiting = None;
        if conn.state == ConnectionState::Open {
            self.server_close(connection, policy::close_reason(result).code());
        }
    }

    /// The engine cancelled `id`: if it was a `ReceiveText` waiting for its client,
    /// it waits no more.
    pub(super) fn stop_receiving(&mut self, id: EffectId) {
        if let Some(&connection) = self.by_program.get(id.program()) {
            let conn = &mut self.connections[connection as usize];
            if conn.waiting == Some(id) {
                conn.waiting = None;
            }
        }
    }
}

/// 1008, as the real session closes a client too slow to read.
const POLICY_VIOLATION: u16 = 1008;
/// 1009, as the real session closes on a message over its limit.
const MESSAGE_TOO_BIG: u16 = 1009;

/// A text's length on the wire as the server frames it (unmasked): what the real
/// session counts against its queue limit.
fn framed_len(text: &str) -> usize {
    let header = match text.len() {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    };
    header + text.len()
}

/// The error a WebSocket effect gets once the connection is no longer open: the
/// shared policy ([`Disconnect::error`]).
fn closed_error(effect: &'static str, state: ConnectionState) -> EffectError {
    let disconnect = match state {
        ConnectionState::ClosedByClient => Disconnect::ClientClosed { code: 1000 },
        ConnectionState::ClosedByServer(code) => Disconnect::ServerClosed { code },
        _ => Disconnect::ClientVanished,
    };
    disconnect.error(effect)
}
