//! Whole-system simulation: many programs, in-memory services, simulated WebSocket
//! clients, a simulated clock, a seeded scheduler and a fault plan.
//!
//! Time jumps from one event to the next (nothing sleeps), so an hour of traffic
//! takes as long as its effects take to compute. The order in which answers and client
//! messages arrive comes from seeded latency draws with random tie-breaking: one seed
//! fixes the whole run, and a recorded [`trace`](crate::trace) replays it.
//!
//! # When an effect happens
//! An effect sent to a service (every effect but WebSocket ones and `ConsumeMessage`)
//! travels there and back: its latency is drawn once, the service applies it after the
//! first half of the draw, and its answer arrives after the rest (see [`Latency`]).
//! The simulator acts as a driver that sends cancel requests: when the engine cancels
//! an effect the service has not applied yet, the request is dropped and never applied;
//! one the service already applied stays applied, and its answer arrives stale. An
//! injected error ([`FaultPlan::error_rate`]) is decided when the effect is issued, and
//! that effect is never applied either. WebSocket effects and `ConsumeMessage` take
//! effect the moment they are issued (a consumer waits at the broker until a message
//! comes or its `timeout_ms` passes); frames to one client arrive in the order they
//! were sent.
//!
//! # Families
//! The simulator hosts programs of the built-in family ([`effectful::Std`]), which its
//! fakes answer; traces record built-in requests and responses. A program of a custom
//! family is unit-tested with [`Script`](crate::script::Script), which is generic over
//! the family.
//!
//! # How a connection ends
//! The client closes or vanishes ([`ConnectionEnd`]), the program closes it
//! (`WebSocket.Close`), or the program ends while it is still open: the server then
//! closes it with 1000 if the program returned, 1008 if its deadline passed and 1011 if
//! it failed otherwise. Both the close codes and what a disconnect means to the
//! program (its WebSocket effects fail; it is not aborted) are the production policy
//! of [`effectful::policy`], shared with the tokio driver.
//!
//! ```
//! use std::time::Duration;
//! use effectful::{EffectError, Fx, effect::*};
//! use effectful_test::sim::{Connection, ConnectionEnd, SimConfig, Simulation};
//!
//! // An echo program: answer every client message until the client goes away.
//! async fn echo(_connection: u32, fx: Fx) -> Result<u32, EffectError> {
//!     let mut echoed = 0;
//!     loop {
//!         match fx.perform(ReceiveText {}).await {
//!             Ok(text) => fx.perform(SendText { text }).await?,
//!             Err(_) => return Ok(echoed),
//!         }
//!         echoed += 1;
//!     }
//! }
//!
//! let connections = (0..10).map(|i| Connection {
//!     client: i,
//!     connect_at: effectful::Time::from_secs(i as u64),
//!     messages: vec![(Duration::from_secs(1), "ping".into()); 3],
//!     end: ConnectionEnd::Close { after: Duration::from_secs(1) },
//! }).collect();
//! let mut sim = Simulation::new(SimConfig::new(7), connections, echo);
//! let report = sim.run();
//! assert_eq!(report.unfinished, 0);
//! assert!(sim.transcripts().iter().all(|t| t.received.len() == 3));
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::future::Future;
use std::time::Duration;

use effectful::effect::{
    AckOutcome, ConsumeMessage, ConsumeOutcome, Envelope, MessagingRequest, MessagingResponse,
    NegativeAcknowledge, Request, Response, WebSocketRequest, WebSocketResponse,
};
use effectful::policy::{self, Disconnect};
use effectful::{
    Delivery, EffectError, EffectId, Engine, EngineConfig, Fx, Output, ProgramError, ProgramId,
    ProgramMap, Rng, Time,
};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::fake::{Handled, Services};
use crate::fault::{FaultPlan, Latency};
use crate::trace::{ClientEvent, Fault, TraceRecord};

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
}

/// How a simulation runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Fixes every random choice: the services', the scheduler's, the programs'.
    pub seed: u64,
    /// Each program's deadline after it starts (the seed tutorial's 300 s).
    pub program_timeout: Option<Duration>,
    /// What goes wrong.
    pub faults: FaultPlan,
    /// Keep a trace of the run in memory (see [`Simulation::trace`]).
    pub record_trace: bool,
}

impl SimConfig {
    /// No faults, a 300 s program timeout, no trace.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            program_timeout: Some(Duration::from_secs(300)),
            faults: FaultPlan::none(),
            record_trace: false,
        }
    }
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
    /// When the program ended (how it ended: [`Simulation::results`]).
    pub finished: Option<Time>,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Effects the programs asked for.
    pub effects: u64,
    /// Faults injected.
    pub faults: u64,
    /// Programs spawned.
    pub programs: u64,
    /// Programs that never finished (must be 0 when every program has a deadline).
    pub unfinished: u64,
    /// Programs that finished after their deadline (must be 0).
    pub late: u64,
    /// The simulated time when the last event happened.
    pub simulated: Duration,
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {} programs, {} effects, {} faults, {:.1} s simulated, {} unfinished, {} late",
            self.seed,
            self.programs,
            self.effects,
            self.faults,
            self.simulated.as_secs_f64(),
            self.unfinished,
            self.late
        )
    }
}

enum Event {
    Connect(u32),
    ClientSend {
        connection: u32,
        index: usize,
    },
    ClientEnd(u32),
    ClientReceive {
        connection: u32,
        text: String,
    },
    /// A request reaches its service (the end of its request leg).
    Apply {
        id: EffectId,
        request: Request,
        /// How long its answer then takes to come back.
        response_leg: Duration,
    },
    Deliver {
        id: EffectId,
        result: Result<Response, EffectError>,
    },
    ConsumeDeadline(EffectId),
    /// The ack timeout of one delivered message whose acknowledgement was lost.
    AckTimeout {
        message_id: String,
    },
    BrokerWake,
}

struct ConnectionSim {
    script: Connection,
    state: ConnectionState,
    inbox: VecDeque<String>,
    waiting: Option<EffectId>,
    transcript: Transcript,
    deadline: Option<Time>,
    /// When the last frame sent to the client arrives: a WebSocket is one TCP stream,
    /// so frames arrive in the order they were sent whatever their latency draws.
    last_arrival: Time,
}

struct ParkedConsumer {
    id: EffectId,
    request: ConsumeMessage,
}

/// A whole-system simulation of `program` serving `connections`.
///
/// The program is spawned once per connection, as `program(connection_index, fx)`.
pub struct Simulation<O, P> {
    config: SimConfig,
    engine: Engine<O>,
    services: Services,
    program: P,
    rng: Rng,
    now: Time,
    /// Pending events, earliest first: see [`EventKey`].
    queue: BinaryHeap<Reverse<EventKey>>,
    /// Pending events due at the current time (answers given at once), kept apart so
    /// that they do not sift through the whole queue; the next event is the earlier
    /// head of the two, so the order is the same as with one queue.
    due_now: BinaryHeap<Reverse<EventKey>>,
    /// The events themselves, by slot (kept out of the heap so sifting moves 16 bytes).
    events: Vec<Option<Event>>,
    free_events: Vec<u32>,
    connections: Vec<ConnectionSim>,
    /// The connection each running program serves, by program slot index.
    by_program: ProgramMap<u32>,
    consumers: Vec<ParkedConsumer>,
    /// Requests on their way to a service, by effect: the slot of their `Apply` event,
    /// emptied if the engine cancels them first.
    unapplied: FxHashMap<EffectId, u32>,
    results: Vec<Option<Result<O, ProgramError>>>,
    trace: Vec<TraceRecord>,
    report: SimReport,
}

impl<O, P, Fut> Simulation<O, P>
where
    O: fmt::Debug + 'static,
    P: FnMut(u32, Fx) -> Fut,
    Fut: Future<Output = O> + 'static,
{
    /// A simulation that has not started; seed the services through
    /// [`Simulation::services_mut`] before [`Simulation::run`].
    pub fn new(config: SimConfig, connections: Vec<Connection>, program: P) -> Self {
        let engine_config = EngineConfig {
            seed: config.seed,
            program_timeout: config.program_timeout,
        };
        let mut sim = Simulation {
            engine: Engine::new(engine_config.clone()),
            services: Services::new(config.seed),
            program,
            rng: Rng::derive(config.seed, "sim.scheduler", 0),
            now: Time::ZERO,
            queue: BinaryHeap::new(),
            due_now: BinaryHeap::new(),
            events: Vec::new(),
            free_events: Vec::new(),
            connections: Vec::with_capacity(connections.len()),
            by_program: ProgramMap::new(),
            consumers: Vec::new(),
            unapplied: FxHashMap::default(),
            results: Vec::new(),
            trace: Vec::new(),
            report: SimReport {
                seed: config.seed,
                ..SimReport::default()
            },
            config,
        };
        if sim.config.record_trace {
            let label = serde_json::to_string(&sim.config).unwrap_or_default();
            sim.trace.push(TraceRecord::Start {
                engine: engine_config,
                label,
            });
        }
        for script in connections {
            sim.add_connection(script);
        }
        sim
    }

    /// Adds a connection before the run; returns its index.
    pub fn add_connection(&mut self, script: Connection) -> u32 {
        let index = self.connections.len() as u32;
        self.schedule(script.connect_at, Event::Connect(index));
        self.connections.push(ConnectionSim {
            transcript: Transcript {
                client: script.client,
                connected_at: script.connect_at,
                program: None,
                // Sized for the script, and for an answer to each line.
                sent: Vec::with_capacity(script.messages.len()),
                received: Vec::with_capacity(script.messages.len() + 1),
                state: ConnectionState::Waiting,
                finished: None,
            },
            script,
            state: ConnectionState::Waiting,
            inbox: VecDeque::new(),
            waiting: None,
            deadline: None,
            last_arrival: Time::ZERO,
        });
        self.results.push(None);
        index
    }

    /// The services, to seed data before the run or inspect it after.
    pub fn services_mut(&mut self) -> &mut Services {
        &mut self.services
    }

    /// The services.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// What each connection's client sent and saw, by connection index.
    pub fn transcripts(&self) -> Vec<&Transcript> {
        self.connections.iter().map(|c| &c.transcript).collect()
    }

    /// Each connection's program result, by connection index (`None`: not finished).
    pub fn results(&self) -> &[Option<Result<O, ProgramError>>] {
        &self.results
    }

    /// The recorded trace (empty unless `record_trace` was set). Once [`run`](Self::run)
    /// has returned it ends with a [`TraceRecord::End`] record, which says it is whole.
    pub fn trace(&self) -> &[TraceRecord] {
        &self.trace
    }

    /// The simulated time now.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Runs until nothing is left to happen, and reports.
    pub fn run(&mut self) -> SimReport {
        // A second run continues the trace: its end record moves to the new end.
        if let Some(TraceRecord::End { .. }) = self.trace.last() {
            self.trace.pop();
        }
        loop {
            let next_event = self.next_event().map(|(key, _)| key.at());
            // Only a timer that may come before the next event is worth checking for
            // liveness: the earliest armed one bounds the earliest live one from below.
            let next_timer = match (self.engine.timer_bound(), next_event) {
                (None, _) => None,
                (Some(bound), Some(event)) if bound > event => None,
                _ => self.engine.poll_timeout(),
            };
            match (next_event, next_timer) {
                (None, None) => break,
                (Some(e), Some(t)) if t <= e => self.fire_timers(t),
                (None, Some(t)) => self.fire_timers(t),
                _ => {
                    let Some((key, queue)) = self.next_event() else {
                        break;
                    };
                    match queue {
                        Queue::DueNow => self.due_now.pop(),
                        Queue::Later => self.queue.pop(),
                    };
                    let (at, slot) = (key.at(), key.slot());
                    // The slot is free only once its heap entry is gone; an event
                    // withdrawn before its time (a cancelled request) left it empty.
                    self.free_events.push(slot);
                    let Some(event) = self.events[slot as usize].take() else {
                        continue;
                    };
                    self.now = self.now.max(at);
                    self.handle(event);
                }
            }
        }
        self.report.simulated = self.now.since_epoch();
        self.report.unfinished = self
            .results
            .iter()
            .zip(&self.connections)
            .filter(|(r, c)| r.is_none() && c.transcript.program.is_some())
            .count() as u64;
        let records = self.trace.len() as u64;
        self.record(|| TraceRecord::End { records });
        self.report.clone()
    }

    fn schedule(&mut self, at: Time, event: Event) {
        self.schedule_slot(at, event);
    }

    /// Queues `event` at `at`; returns its slot, to withdraw it before its time.
    fn schedule_slot(&mut self, at: Time, event: Event) -> u32 {
        // The random tie-break is the scheduler: simultaneous arrivals come in an
        // order the seed decides.
        let slot = match self.free_events.pop() {
            Some(slot) => {
                self.events[slot as usize] = Some(event);
                slot
            }
            None => {
                self.events.push(Some(event));
                (self.events.len() - 1) as u32
            }
        };
        let tie_break = (self.rng.next_u64() >> 32) as u32;
        let key = Reverse(EventKey::new(at, tie_break, slot));
        if at <= self.now {
            self.due_now.push(key);
        } else {
            self.queue.push(key);
        }
        slot
    }

    /// The earliest pending event's key, and which queue holds it.
    fn next_event(&self) -> Option<(EventKey, Queue)> {
        let now = self
            .due_now
            .peek()
            .map(|Reverse(key)| (*key, Queue::DueNow));
        let later = self.queue.peek().map(|Reverse(key)| (*key, Queue::Later));
        match (now, later) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Counts and records a fault injected into effect `id`.
    fn injected(&mut self, id: EffectId, fault: Fault) {
        self.report.faults += 1;
        let at = self.now;
        self.record(|| TraceRecord::Fault { at, id, fault });
    }

    fn record(&mut self, record: impl FnOnce() -> TraceRecord) {
        if self.config.record_trace {
            self.trace.push(record());
        }
    }

    fn fire_timers(&mut self, at: Time) {
        self.now = self.now.max(at);
        let now = self.now;
        self.record(|| TraceRecord::Timeout { at: now });
        self.engine.handle_timeout(now);
        self.drain();
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Connect(c) => self.connect(c),
            Event::ClientSend { connection, index } => self.client_send(connection, index),
            Event::ClientEnd(c) => self.client_end(c),
            Event::ClientReceive { connection, text } => {
                let conn = &mut self.connections[connection as usize];
                if conn.state == ConnectionState::Open
                    || matches!(conn.state, ConnectionState::ClosedByServer(_))
                {
                    let now = self.now;
                    if self.config.record_trace {
                        let event = ClientEvent::Receive(text.clone());
                        self.trace.push(TraceRecord::Client {
                            at: now,
                            connection,
                            event,
                        });
                    }
                    conn.transcript.received.push((now, text));
                }
            }
            Event::Apply {
                id,
                request,
                response_leg,
            } => {
                self.unapplied.remove(&id);
                self.apply(id, request, response_leg);
            }
            Event::Deliver { id, result } => self.deliver(id, result),
            Event::ConsumeDeadline(id) => {
                if let Some(i) = self.consumers.iter().position(|p| p.id == id) {
                    self.consumers.remove(i);
                    let answer = Response::Messaging(MessagingResponse::ConsumeMessage(
                        ConsumeOutcome::Timeout,
                    ));
                    self.deliver(id, Ok(answer));
                }
            }
            Event::AckTimeout { message_id } => {
                // Pulsar's ack timeout is per message: only this one comes again, if
                // it is still in flight (a nack of anything else is harmless).
                let nack = NegativeAcknowledge {
                    message_id,
                    delay_ms: 0,
                };
                self.services
                    .broker
                    .handle(self.now, MessagingRequest::NegativeAcknowledge(nack));
                self.wake_consumers();
            }
            Event::BrokerWake => self.wake_consumers(),
        }
    }

    fn connect(&mut self, connection: u32) {
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
        self.record(|| TraceRecord::Spawn {
            at: now,
            program: id,
            connection,
        });
        self.record(|| TraceRecord::Client {
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
        }
    }

    fn client_send(&mut self, connection: u32, index: usize) {
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
        self.record(|| TraceRecord::Client {
            at: now,
            connection,
            event: ClientEvent::Send(sent.clone()),
        });
        let conn = &mut self.connections[connection as usize];
        conn.transcript.sent.push((now, sent));
        match waiting {
            Some(id) => self.deliver(
                id,
                Ok(Response::WebSocket(WebSocketResponse::ReceiveText(text))),
            ),
            None => conn.inbox.push_back(text),
        }
        if self.config.faults.websocket_drop_rate > 0.0
            && self.rng.chance(self.config.faults.websocket_drop_rate)
        {
            self.report.faults += 1;
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

    fn client_end(&mut self, connection: u32) {
        if self.connections[connection as usize].state != ConnectionState::Open {
            return;
        }
        let state = match self.connections[connection as usize].script.end {
            ConnectionEnd::Vanish { .. } => ConnectionState::Vanished,
            _ => ConnectionState::ClosedByClient,
        };
        self.end_connection(connection, state);
    }

    fn end_connection(&mut self, connection: u32, state: ConnectionState) {
        let now = self.now;
        let conn = &mut self.connections[connection as usize];
        conn.state = state;
        conn.transcript.state = state;
        let waiting = conn.waiting.take();
        let event = if state == ConnectionState::Vanished {
            ClientEvent::Vanish
        } else {
            ClientEvent::Close
        };
        self.record(|| TraceRecord::Client {
            at: now,
            connection,
            event,
        });
        if let Some(id) = waiting {
            let error = closed_error("WebSocket.ReceiveText", state);
            self.deliver(id, Err(error));
        }
    }

    fn deliver(&mut self, id: EffectId, result: Result<Response, EffectError>) {
        let now = self.now;
        // A message handed to a consumer that stopped waiting goes back to the broker,
        // as a real client library returns what it received but never passed on.
        let handed_over = match &result {
            Ok(Response::Messaging(MessagingResponse::ConsumeMessage(
                ConsumeOutcome::Message(envelope),
            ))) => Some(envelope.message_id.clone()),
            _ => None,
        };
        let delivery = if self.config.record_trace {
            let delivery = self.engine.handle_response(now, id, result.clone());
            self.trace.push(TraceRecord::Response {
                at: now,
                id,
                result,
                delivered: delivery == Delivery::Delivered,
            });
            delivery
        } else {
            self.engine.handle_response(now, id, result)
        };
        if let (Delivery::Stale, Some(message_id)) = (delivery, handed_over) {
            let nack = NegativeAcknowledge {
                message_id,
                delay_ms: 0,
            };
            self.services
                .broker
                .handle(now, MessagingRequest::NegativeAcknowledge(nack));
            self.wake_consumers();
        }
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(output) = self.engine.poll_output() {
            if self.config.record_trace {
                self.trace.push(TraceRecord::of_output(&output));
            }
            match output {
                Output::Request { id, request } => {
                    self.report.effects += 1;
                    self.perform(id, request);
                }
                Output::Cancel { id } => self.cancel(id),
                Output::Finished { program, result } => self.finished(program, result),
            }
        }
    }

    fn finished(&mut self, program: ProgramId, result: Result<O, ProgramError>) {
        let Some(connection) = self.by_program.remove(program) else {
            return;
        };
        let now = self.now;
        let conn = &mut self.connections[connection as usize];
        if conn.deadline.is_some_and(|d| now > d) {
            self.report.late += 1;
        }
        conn.transcript.finished = Some(now);
        conn.waiting = None;
        // The program is gone, so the server closes its connection as the shared
        // policy says (1000 returned, 1008 deadline, 1011 failed).
        if conn.state == ConnectionState::Open {
            let code = policy::close_reason(&result).code();
            conn.state = ConnectionState::ClosedByServer(code);
            conn.transcript.state = ConnectionState::ClosedByServer(code);
            self.record(|| TraceRecord::Client {
                at: now,
                connection,
                event: ClientEvent::ClosedByServer(code),
            });
        }
        self.results[connection as usize] = Some(result);
    }

    fn cancel(&mut self, id: EffectId) {
        // The driver's cancel request overtakes a request still on its way: the
        // service never applies it (and never answers).
        if let Some(slot) = self.unapplied.remove(&id) {
            self.events[slot as usize] = None;
        }
        if let Some(&connection) = self.by_program.get(id.program()) {
            let conn = &mut self.connections[connection as usize];
            if conn.waiting == Some(id) {
                conn.waiting = None;
            }
        }
        self.consumers.retain(|p| p.id != id);
    }

    fn latency(&mut self, latency: Latency) -> Duration {
        latency.sample(&mut self.rng)
    }

    fn perform(&mut self, id: EffectId, request: Request) {
        let now = self.now;
        let faults = &self.config.faults;
        let family = faults.latency.for_request(&request);
        // WebSocket failures are modelled by dropped connections only.
        let error_rate = match request {
            Request::WebSocket(_) => 0.0,
            _ => faults.error_rate.for_request(&request),
        };
        let dup_rate = faults.duplicate_delivery_rate;
        if error_rate > 0.0 && self.rng.chance(error_rate) {
            // Decided at issue time: the request never reaches the service.
            self.injected(id, Fault::Error);
            let error = EffectError::connection_lost(
                request.name(),
                "injected fault: connection reset before the request was sent",
            );
            let at = now + self.latency(family);
            self.schedule(
                at,
                Event::Deliver {
                    id,
                    result: Err(error),
                },
            );
            return;
        }
        if let Request::Messaging(MessagingRequest::AcknowledgeMessage(ack)) = &request {
            if dup_rate > 0.0 && self.rng.chance(dup_rate) {
                // The broker never hears of this acknowledgement: once the message's
                // ack timeout passes, it comes again.
                self.injected(id, Fault::LostAck);
                let message_id = ack.message_id.clone();
                let ack_timeout = self.config.faults.ack_timeout;
                self.schedule(now + ack_timeout, Event::AckTimeout { message_id });
                let answer = Response::Messaging(MessagingResponse::AcknowledgeMessage(
                    AckOutcome::Acknowledged,
                ));
                let at = now + self.latency(family);
                self.schedule(
                    at,
                    Event::Deliver {
                        id,
                        result: Ok(answer),
                    },
                );
                return;
            }
        }
        match request {
            Request::WebSocket(ws) => self.websocket(id, ws),
            Request::Messaging(MessagingRequest::ConsumeMessage(consume)) => {
                self.consume(id, consume)
            }
            request => {
                // One draw, split into the way there and the way back.
                let latency = self.latency(family);
                let request_leg = latency / 2;
                let response_leg = latency - request_leg;
                let slot = self.schedule_slot(
                    now + request_leg,
                    Event::Apply {
                        id,
                        request,
                        response_leg,
                    },
                );
                self.unapplied.insert(id, slot);
            }
        }
    }

    /// A request reaches its service: the service performs it now, and its answer
    /// (unless lost) arrives `response_leg` later.
    fn apply(&mut self, id: EffectId, request: Request, response_leg: Duration) {
        let now = self.now;
        let lost_rate = self.config.faults.lost_answer_rate.for_request(&request);
        let wakes_consumers = matches!(
            request,
            Request::Messaging(
                MessagingRequest::PublishMessage(_) | MessagingRequest::NegativeAcknowledge(_)
            )
        );
        // A negatively acknowledged message comes back only after its delay; consumers
        // parked before then must be woken when it does.
        let redelivery_at = match &request {
            Request::Messaging(MessagingRequest::NegativeAcknowledge(nack)) => {
                Some(now.saturating_add(Duration::from_millis(nack.delay_ms)))
            }
            _ => None,
        };
        match self.services.handle(now, request) {
            Handled::Done(result) => {
                if lost_rate > 0.0 && self.rng.chance(lost_rate) {
                    self.injected(id, Fault::LostAnswer);
                } else {
                    self.schedule(now + response_leg, Event::Deliver { id, result });
                }
                if wakes_consumers {
                    self.wake_consumers();
                }
                if let Some(at) = redelivery_at.filter(|at| *at > now) {
                    self.schedule(at, Event::BrokerWake);
                }
            }
            // `perform` handles these at issue time; kept for completeness.
            Handled::Consume(consume) => self.consume(id, consume),
            Handled::WebSocket(ws) => self.websocket(id, ws),
        }
    }

    /// A consumer asks the broker for a message: it gets one now, or waits at the
    /// broker until one comes or its `timeout_ms` passes. Lost answers do not apply.
    fn consume(&mut self, id: EffectId, request: ConsumeMessage) {
        let now = self.now;
        match self.services.broker.try_consume(now, &request) {
            Some(envelope) => self.hand_over(id, envelope),
            None => {
                let deadline = now + Duration::from_millis(request.timeout_ms);
                self.schedule(deadline, Event::ConsumeDeadline(id));
                // Its own subscription's next redelivery is the only one that can wake it.
                if let Some(at) = self
                    .services
                    .broker
                    .next_redelivery_for(&request.subscription)
                {
                    self.schedule(at.max(now), Event::BrokerWake);
                }
                self.consumers.push(ParkedConsumer { id, request });
            }
        }
    }

    /// The broker handed `envelope` to the consumer `id`: its answer travels back.
    fn hand_over(&mut self, id: EffectId, envelope: Envelope) {
        let answer = Response::Messaging(MessagingResponse::ConsumeMessage(
            ConsumeOutcome::Message(envelope.into()),
        ));
        let at = self.now + self.latency(self.config.faults.latency.messaging);
        self.schedule(
            at,
            Event::Deliver {
                id,
                result: Ok(answer),
            },
        );
    }

    fn wake_consumers(&mut self) {
        let now = self.now;
        let mut i = 0;
        while i < self.consumers.len() {
            match self
                .services
                .broker
                .try_consume(now, &self.consumers[i].request)
            {
                Some(envelope) => {
                    let parked = self.consumers.remove(i);
                    self.hand_over(parked.id, envelope);
                }
                None => i += 1,
            }
        }
    }

    fn websocket(&mut self, id: EffectId, request: WebSocketRequest) {
        let name = match &request {
            WebSocketRequest::SendText(_) => "WebSocket.SendText",
            WebSocketRequest::ReceiveText(_) => "WebSocket.ReceiveText",
            WebSocketRequest::Close(_) => "WebSocket.Close",
        };
        let Some(&connection) = self.by_program.get(id.program()) else {
            let error = EffectError::websocket_closed(name, 1006, "no connection for this program");
            self.schedule(
                self.now,
                Event::Deliver {
                    id,
                    result: Err(error),
                },
            );
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
                self.schedule(
                    now,
                    Event::Deliver {
                        id,
                        result: Ok(Response::WebSocket(WebSocketResponse::ReceiveText(text))),
                    },
                );
                return;
            }
        }
        if state != ConnectionState::Open {
            self.schedule(
                now,
                Event::Deliver {
                    id,
                    result: Err(closed_error(name, state)),
                },
            );
            return;
        }
        match request {
            WebSocketRequest::SendText(send) => {
                let drawn = now + self.latency(self.config.faults.latency.websocket);
                let conn = &mut self.connections[connection as usize];
                // Strictly after the previous frame, so equal draws cannot swap them.
                let arrives = drawn.max(conn.last_arrival + Duration::from_nanos(1));
                conn.last_arrival = arrives;
                self.schedule(
                    arrives,
                    Event::ClientReceive {
                        connection,
                        text: send.text,
                    },
                );
                self.schedule(
                    now,
                    Event::Deliver {
                        id,
                        result: Ok(Response::WebSocket(WebSocketResponse::SendText(()))),
                    },
                );
            }
            WebSocketRequest::ReceiveText(_) => {
                let conn = &mut self.connections[connection as usize];
                match conn.inbox.pop_front() {
                    Some(text) => self.schedule(
                        now,
                        Event::Deliver {
                            id,
                            result: Ok(Response::WebSocket(WebSocketResponse::ReceiveText(text))),
                        },
                    ),
                    None => conn.waiting = Some(id),
                }
            }
            WebSocketRequest::Close(close) => {
                let code = close.reason.code();
                let state = ConnectionState::ClosedByServer(code);
                let conn = &mut self.connections[connection as usize];
                conn.state = state;
                conn.transcript.state = state;
                let waiting = conn.waiting.take();
                self.record(|| TraceRecord::Client {
                    at: now,
                    connection,
                    event: ClientEvent::ClosedByServer(code),
                });
                // Another of the program's futures may be waiting for a client
                // message: the close ends that wait. (Scheduled, not delivered at once:
                // the engine's outputs are still being drained.)
                if let Some(waiting) = waiting {
                    self.schedule(
                        now,
                        Event::Deliver {
                            id: waiting,
                            result: Err(closed_error("WebSocket.ReceiveText", state)),
                        },
                    );
                }
                self.schedule(
                    now,
                    Event::Deliver {
                        id,
                        result: Ok(Response::WebSocket(WebSocketResponse::Close(()))),
                    },
                );
            }
        }
    }
}

/// Which queue holds an event.
#[derive(Clone, Copy)]
enum Queue {
    DueNow,
    Later,
}

/// An event's place in the queue: its time, then a random tie-break, then its slot,
/// packed into one integer so that sifting compares and moves 16 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EventKey(u128);

impl EventKey {
    fn new(at: Time, tie_break: u32, slot: u32) -> EventKey {
        EventKey(u128::from(at.as_nanos()) << 64 | u128::from(tie_break) << 32 | u128::from(slot))
    }

    fn at(self) -> Time {
        Time::from_nanos((self.0 >> 64) as u64)
    }

    fn slot(self) -> u32 {
        self.0 as u32
    }
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
