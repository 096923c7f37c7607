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
//! injected error
//! ([`FaultPlan::error_rate`](crate::fault::FaultPlan::error_rate)) is decided when
//! the effect is issued, and that effect is never applied either. WebSocket effects and `ConsumeMessage` take
//! effect the moment they are issued (a consumer waits at the broker until a message
//! comes or its `timeout_ms` passes); frames to one client arrive in the order they
//! were sent.
//!
//! # Families
//! The simulator hosts programs of the built-in family ([`effectful::Std`], the
//! default) or of a custom family that embeds it ([`SimFamily`]). The built-in fakes
//! answer the built-in effects; a fake the user supplies
//! ([`Simulation::set_family_fake`], a [`FamilyFake`]) answers the family's own, with
//! the simulator's latency and faults applied as to a service's. Traces record the
//! family's own requests and answers as JSON, and
//! [`replay_family`](crate::trace::replay_family) replays them.
//!
//! # Stepping
//! [`Simulation::run`] runs to the end; [`Simulation::step`] handles one event (or
//! one batch of due timers) and [`Simulation::run_until`] everything up to a time, so
//! a test can look at the services, transcripts and results mid-run. The services are
//! seeded before a run and read after it through [`Simulation::services_mut`] and
//! [`Simulation::services`] (see [`crate::fake::Services`] for what each
//! fake offers).
//!
//! # How a connection ends
//! The client closes or vanishes ([`ConnectionEnd`]), the program closes it
//! (`WebSocket.Close`), or the program ends while it is still open: the server then
//! closes it with 1000 if the program returned, 1008 if its deadline passed and 1011 if
//! it failed otherwise. Both the close codes and what a disconnect means to the
//! program (its WebSocket effects fail; it is not aborted) are the production policy
//! of [`effectful::policy`], shared with the tokio driver.
//!
//! # Files
//! - this file: [`Simulation`], its run loop and the engine's outputs;
//! - `config.rs`: [`SimConfig`] and [`SimReport`];
//! - `queue.rs`: the event queue and its seeded tie-breaks;
//! - `client.rs`: the simulated WebSocket clients and their [`Transcript`]s;
//! - `services.rs`: effects on their way to the in-memory services and back, and
//!   consumers waiting at the broker (whose behaviour lives in
//!   [`FakeBroker`](crate::fake::FakeBroker));
//! - `jobs.rs`: programs with no connection, spawned at chosen times
//!   ([`Simulation::spawn_at`]);
//! - `family.rs`: custom families and the user's fake for their own effects;
//! - `faults.rs`: fault injection from the [`FaultPlan`](crate::fault::FaultPlan),
//!   rates and faults over time (outages, latency spikes, restarts, disconnect storms);
//! - `recorder.rs`: the trace.
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

use std::fmt;
use std::future::Future;
use std::io::{self, Seek, Write};
use std::time::Duration;

use effectful::effect::{MessagingRequest, Request, Response, Std};
use effectful::{
    Delivery, EffectError, EffectId, Engine, EngineConfig, Fx, Output, ProgramError, ProgramId,
    ProgramMap, Rng, Time,
};
use rustc_hash::FxHashMap;

use crate::fake::{self, Services};
use crate::fault::Latency;
use crate::trace::TraceRecord;

mod client;
mod config;
pub(crate) mod family;
mod faults;
mod jobs;
mod queue;
mod recorder;
mod services;

pub use client::{Connection, ConnectionEnd, ConnectionState, Transcript};
pub use config::{FaultCounts, SimConfig, SimReport, WsLimits};
pub use family::{FamilyFake, SimFamily};
pub use jobs::{Job, NoConnections};

use family::OwnEffects;
use jobs::JobSim;

use client::ConnectionSim;
use queue::{Event, EventQueue};
use recorder::Recorder;

/// A whole-system simulation of `program` serving `connections`, and of any number
/// of programs spawned at chosen times ([`Simulation::spawn_at`]).
///
/// The connection program is spawned once per connection, as
/// `program(connection_index, fx)`; a simulation of background programs alone needs
/// no connections ([`Simulation::without_connections`]). Every program has its own
/// result ([`Simulation::results`] by connection, [`Simulation::job_results`] by job).
pub struct Simulation<O, P, F: SimFamily = Std> {
    config: SimConfig,
    engine: Engine<O, F>,
    services: Services,
    program: P,
    rng: Rng,
    now: Time,
    /// Pending events, earliest first.
    queue: EventQueue,
    connections: Vec<ConnectionSim>,
    /// The connection each running program serves.
    by_program: ProgramMap<u32>,
    /// Requests on their way to a service, by effect: the slot of their `Apply` event,
    /// emptied if the engine cancels them first.
    unapplied: FxHashMap<EffectId, u32>,
    results: Vec<Option<Result<O, ProgramError>>>,
    /// Programs spawned at chosen times, by job index.
    jobs: Vec<JobSim<O, F>>,
    /// The job each running job program is.
    job_by_program: ProgramMap<u32>,
    job_results: Vec<Option<Result<O, ProgramError>>>,
    /// The custom family's own effects and their fake (none for [`Std`]).
    own: OwnEffects<F>,
    trace: Recorder,
    report: SimReport,
    /// Where whole transcripts go ([`Simulation::on_transcript`]); none: they stay.
    transcript_sink: Option<TranscriptSink>,
}

/// What [`Simulation::on_transcript`] is given.
type TranscriptSink = Box<dyn FnMut(u32, Transcript, &Services)>;

impl<O, P, Fut, F> Simulation<O, P, F>
where
    O: fmt::Debug + 'static,
    P: FnMut(u32, Fx<F>) -> Fut,
    Fut: Future<Output = O> + 'static,
    F: SimFamily,
{
    /// A simulation that has not started; seed the services through
    /// [`Simulation::services_mut`] before [`Simulation::run`].
    pub fn new(config: SimConfig, connections: Vec<Connection>, program: P) -> Self {
        let engine_config = engine_config(&config);
        let mut sim = Simulation {
            engine: Engine::new(engine_config.clone()),
            services: Services::new(config.seed),
            program,
            rng: Rng::derive(config.seed, "sim.scheduler", 0),
            now: Time::ZERO,
            queue: EventQueue::default(),
            connections: Vec::with_capacity(connections.len()),
            by_program: ProgramMap::new(),
            unapplied: FxHashMap::default(),
            results: Vec::new(),
            jobs: Vec::new(),
            job_by_program: ProgramMap::new(),
            job_results: Vec::new(),
            own: OwnEffects::default(),
            trace: Recorder::new(&config, engine_config),
            report: SimReport {
                seed: config.seed,
                ..SimReport::default()
            },
            config,
            transcript_sink: None,
        };
        for script in connections {
            sim.add_connection(script);
        }
        sim.schedule_timed_faults();
        sim
    }

    /// Adds a connection before the run; returns its index.
    pub fn add_connection(&mut self, script: Connection) -> u32 {
        let index = self.connections.len() as u32;
        self.schedule(script.connect_at, Event::Connect(index));
        self.connections.push(ConnectionSim::new(script));
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

    /// What each connection's client sent and saw, by connection index (without the
    /// texts of those already handed to [`on_transcript`](Self::on_transcript)'s sink).
    pub fn transcripts(&self) -> Vec<&Transcript> {
        self.connections.iter().map(|c| &c.transcript).collect()
    }

    /// Each connection's program result, by connection index (`None`: not finished).
    pub fn results(&self) -> &[Option<Result<O, ProgramError>>] {
        &self.results
    }

    /// The recorded trace (empty unless `record_trace` was set, and when it is
    /// [streamed](Self::stream_trace)). Once [`run`](Self::run) has returned it ends
    /// with a [`TraceRecord::End`] record, which says it is whole.
    pub fn trace(&self) -> &[TraceRecord] {
        self.trace.records()
    }

    /// Writes the trace to `out` as it is made, one JSON line per record through a
    /// buffer, instead of keeping it in memory (tracing is on from now on, whatever
    /// `record_trace` said; records made so far are written first): a long run's
    /// memory then does not grow with its trace. [`run`](Self::run) and
    /// [`run_until`](Self::run_until) end it with its [`TraceRecord::End`] record and
    /// flush it; a run that continues the trace writes over that record (hence
    /// [`Seek`]). A run stopped before (a process killed, [`step`](Self::step)s
    /// given up) leaves a trace without it, which [`trace::replay`](crate::trace::replay)
    /// refuses as cut short, as it does after a failed write
    /// ([`trace_error`](Self::trace_error)).
    pub fn stream_trace(&mut self, out: impl Write + Seek + 'static) {
        // The start record says the trace is recorded, as it is.
        self.config.record_trace = true;
        let (config, engine) = (&self.config, engine_config(&self.config));
        self.trace
            .stream_to(Box::new(out), || recorder::start_record(config, engine));
    }

    /// The first write of a [streamed](Self::stream_trace) trace that failed, if one
    /// did: nothing was written after it.
    pub fn trace_error(&self) -> Option<&io::Error> {
        self.trace.error()
    }

    /// The simulated time now.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Runs until nothing is left to happen, and reports.
    pub fn run(&mut self) -> SimReport {
        // A second run continues the trace: its end record moves to the new end.
        self.trace.reopen();
        while self.advance(None) {}
        self.trace.close();
        self.report()
    }

    /// Handles the next event or fires the next timers, whichever comes first, and
    /// returns whether anything happened (`false`: nothing is left to happen). Between
    /// steps a test may inspect the services, transcripts and results, and seed more.
    ///
    /// The trace gets its end record only from [`run`](Self::run) or
    /// [`run_until`](Self::run_until).
    pub fn step(&mut self) -> bool {
        self.trace.reopen();
        self.advance(None)
    }

    /// Handles every event and timer due at or before `until`, then moves the clock
    /// to `until` (if it is not past it already), and reports the run so far. A later
    /// [`run`](Self::run) or `run_until` carries on from there.
    pub fn run_until(&mut self, until: Time) -> SimReport {
        self.trace.reopen();
        while self.advance(Some(until)) {}
        self.now = self.now.max(until);
        self.trace.close();
        self.report()
    }

    /// What the run has done so far.
    pub fn report(&self) -> SimReport {
        let mut report = self.report.clone();
        report.simulated = self.now.since_epoch();
        let connections = self
            .results
            .iter()
            .zip(&self.connections)
            .filter(|(r, c)| r.is_none() && c.transcript.program.is_some())
            .count();
        let jobs = self
            .job_results
            .iter()
            .zip(&self.jobs)
            .filter(|(r, j)| r.is_none() && j.program.is_some())
            .count();
        report.unfinished = (connections + jobs) as u64;
        report
    }

    /// One step of the run loop: the next event or timer, if it comes no later than
    /// `until`; `false` when there is none.
    fn advance(&mut self, until: Option<Time>) -> bool {
        loop {
            let next_event = self.queue.next_at();
            // Only a timer that may come before the next event is worth checking for
            // liveness: the earliest armed one bounds the earliest live one from below.
            let next_timer = match (self.engine.timer_bound(), next_event) {
                (None, _) => None,
                (Some(bound), Some(event)) if bound > event => None,
                _ => self.engine.poll_timeout(),
            };
            let timer_first = match (next_event, next_timer) {
                (None, None) => return false,
                (Some(e), Some(t)) => t <= e,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            let at = if timer_first { next_timer } else { next_event };
            if let (Some(until), Some(at)) = (until, at) {
                if at > until {
                    return false;
                }
            }
            if timer_first {
                if let Some(t) = next_timer {
                    self.fire_timers(t);
                }
                return true;
            }
            let Some((at, event)) = self.queue.pop() else {
                return false;
            };
            // An event withdrawn before its time (a cancelled request) is gone.
            let Some(event) = event else {
                continue;
            };
            self.now = self.now.max(at);
            self.handle(event);
            return true;
        }
    }

    fn schedule(&mut self, at: Time, event: Event) {
        self.schedule_slot(at, event);
    }

    /// Queues `event` at `at`; returns its slot, to withdraw it before its time.
    fn schedule_slot(&mut self, at: Time, event: Event) -> u32 {
        // The random tie-break is the scheduler: simultaneous arrivals come in an
        // order the seed decides.
        let tie_break = (self.rng.next_u64() >> 32) as u32;
        self.queue.push(self.now, at, tie_break, event)
    }

    fn fire_timers(&mut self, at: Time) {
        self.now = self.now.max(at);
        let now = self.now;
        self.trace.record(|| TraceRecord::Timeout { at: now });
        self.engine.handle_timeout(now);
        self.drain();
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Connect(c) => self.connect(c),
            Event::ClientSend { connection, index } => self.client_send(connection, index),
            Event::ClientEnd(c) => self.client_end(c),
            Event::ClientReceive { connection, text } => self.client_receive(connection, text),
            Event::Apply {
                id,
                request,
                response_leg,
            } => {
                self.unapplied.remove(&id);
                self.apply(id, request, response_leg);
            }
            Event::Deliver { id, result } => self.deliver(id, result),
            Event::ApplyOwn { id, response_leg } => {
                self.unapplied.remove(&id);
                self.apply_own(id, response_leg);
            }
            Event::DeliverOwn(id) => self.deliver_own(id),
            Event::ConsumeDeadline(id) => self.consume_deadline(id),
            Event::AckTimeout { message_id } => self.ack_timeout(message_id),
            Event::BrokerWake => self.wake_broker(),
            Event::SpawnJob(job) => self.spawn_job(job),
            Event::Restart(n) => self.restart(n),
            Event::Storm(n) => self.storm(n),
        }
    }

    /// Answers `id` with `result` at simulated time `at`, as an event of its own:
    /// never from inside the drain that asked (the engine's outputs may still be
    /// being taken).
    pub(super) fn deliver_at(
        &mut self,
        at: Time,
        id: EffectId,
        result: Result<Response, EffectError>,
    ) {
        self.schedule(at, Event::Deliver { id, result });
    }

    /// Hands an answer to the engine, and drains what it does next.
    fn deliver(&mut self, id: EffectId, result: Result<Response, EffectError>) {
        let now = self.now;
        let handed_over = services::handed_over(&result);
        let delivery = if self.trace.on {
            let answer = result.clone().map(F::embed_response);
            let delivery = self.engine.handle_response(now, id, answer);
            self.trace.push(TraceRecord::Response {
                at: now,
                id,
                result,
                delivered: delivery == Delivery::Delivered,
            });
            delivery
        } else {
            self.engine
                .handle_response(now, id, result.map(F::embed_response))
        };
        if let (Delivery::Stale, Some(message_id)) = (delivery, handed_over) {
            self.return_to_broker(&message_id);
        }
        self.drain();
    }

    /// Drains the engine's outputs: requests go out, cancels catch up with them,
    /// results are kept.
    fn drain(&mut self) {
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Request { id, request } => {
                    self.report.effects += 1;
                    match F::split_request(request) {
                        Ok(request) => {
                            if self.trace.on {
                                let record = TraceRecord::Request {
                                    id,
                                    request: request.clone(),
                                };
                                self.trace.push(record);
                            }
                            self.perform(id, request)
                        }
                        Err(own) => {
                            self.trace.record(|| TraceRecord::own_request(id, &own));
                            self.perform_own(id, own)
                        }
                    }
                }
                Output::Cancel { id } => {
                    self.trace.record(|| TraceRecord::Cancel { id });
                    self.cancel(id)
                }
                Output::Finished { program, result } => {
                    self.trace.record(|| TraceRecord::Finished {
                        program,
                        result: format!("{result:?}"),
                    });
                    self.finished(program, result)
                }
            }
        }
    }

    fn finished(&mut self, program: ProgramId, result: Result<O, ProgramError>) {
        // What the program left open ends with it (an interactive transaction).
        self.services
            .program_ended(fake::Performer { engine: 0, program });
        let Some(connection) = self.by_program.remove(program) else {
            if let Some(job) = self.job_by_program.remove(program) {
                self.job_finished(job, result);
            }
            return;
        };
        self.program_ended(connection, &result);
        self.results[connection as usize] = Some(result);
        self.hand_over_if_whole(connection);
    }

    fn cancel(&mut self, id: EffectId) {
        // The driver's cancel request overtakes a request still on its way: the
        // service never applies it (and never answers).
        if let Some(slot) = self.unapplied.remove(&id) {
            self.queue.withdraw(slot);
            self.own.cancel(id);
        }
        self.stop_receiving(id);
        self.services.broker.stop_waiting(id);
        self.services.database.stop_waiting_room(id);
    }

    /// Sends `request` where it goes: to a client, to the broker's waiting consumers,
    /// or on its way to a service; unless the fault plan fails it first.
    fn perform(&mut self, id: EffectId, request: Request) {
        let family = self.config.faults.latency.for_request(&request);
        if self.refuse_in_outage(id, &request, family)
            || self.inject_error(id, &request, family)
            || self.lose_ack(id, &request, family)
        {
            return;
        }
        match request {
            Request::WebSocket(ws) => self.websocket(id, ws),
            Request::Messaging(MessagingRequest::ConsumeMessage(consume)) => {
                self.consume(id, consume)
            }
            request => self.send(id, request, family),
        }
    }

    fn latency(&mut self, latency: Latency) -> Duration {
        latency.sample(&mut self.rng)
    }
}

/// The engine's configuration for a simulation.
fn engine_config(config: &SimConfig) -> EngineConfig {
    EngineConfig {
        seed: config.seed,
        program_timeout: config.program_timeout,
        ..EngineConfig::default()
    }
}
