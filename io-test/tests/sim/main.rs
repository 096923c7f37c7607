//! The simulator's own behaviour: WebSocket clients, the fault plan, messaging, the
//! seeded scheduler, traces, and the clock and UUIDs the services hand out.
//!
//! Each test runs a small purpose-built program (`program(connection, fx)`) and checks
//! what its clients saw, what it returned, the report and the trace. One file per
//! concern; the helpers they share are here.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use effectful::effect::*;
use effectful::{EffectError, ErrorKind, Fx, ProgramError, Time, Timestamp, join, join_all};
use effectful_test::fake::{DEFAULT_WALL_EPOCH, wall_time};
use effectful_test::fault::{FaultPlan, Latency};
use effectful_test::sim::{
    Connection, ConnectionEnd, ConnectionState, SimConfig, SimReport, Simulation, Transcript,
};
use effectful_test::trace::{
    ClientEvent, DEFAULT_MAX_LINE, Fault, ReplayError, TraceReadError, TraceRecord,
    first_divergence, read_trace, replay, write_trace,
};

mod clock;
mod faults;
mod jobs;
mod messaging;
mod scheduler;
mod streaming;
mod timed_faults;
mod traces;
mod websocket;
mod world;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// The default latency of every family in `FaultPlan::none()`.
const DEFAULT_LATENCY: Duration = Duration::from_micros(500);

fn connection(connect_at: Time, messages: &[(Duration, &str)], end: ConnectionEnd) -> Connection {
    Connection {
        client: 0,
        connect_at,
        messages: messages
            .iter()
            .map(|(delay, text)| (*delay, (*text).to_string()))
            .collect(),
        end,
    }
}

/// A connection that only serves to spawn a program at `at` (the client says nothing
/// and closes a minute later).
fn quiet(at: Time) -> Connection {
    connection(at, &[], ConnectionEnd::Close { after: 60 * SEC })
}

fn texts(lines: &[(Time, String)]) -> Vec<&str> {
    lines.iter().map(|(_, text)| text.as_str()).collect()
}

fn close_code(error: &EffectError) -> Option<u16> {
    match error.kind {
        ErrorKind::WebSocketClosed { code, .. } => Some(code),
        _ => None,
    }
}

/// The result of the only connection's program.
fn only_result<O, P, Fut>(sim: &Simulation<O, P>) -> Result<O, ProgramError>
where
    O: Clone + std::fmt::Debug + 'static,
    P: FnMut(u32, Fx) -> Fut,
    Fut: Future<Output = O> + 'static,
{
    assert_eq!(sim.results().len(), 1);
    sim.results()[0].clone().expect("the program finished")
}

/// Echoes every client message until the connection ends; returns what it received
/// and the error that ended it.
async fn echo(_connection: u32, fx: Fx) -> (Vec<String>, EffectError) {
    let mut received = Vec::new();
    loop {
        let text = match fx.perform(ReceiveText {}).await {
            Ok(text) => text,
            Err(error) => return (received, error),
        };
        received.push(text.clone());
        if let Err(error) = fx.perform(SendText { text }).await {
            return (received, error);
        }
    }
}

/// How `echo` ended: what it received and the error that stopped it.
type EchoResult = Result<(Vec<String>, EffectError), ProgramError>;

/// Runs `echo` for one connection: its result, its transcript and the report.
fn run_echo(config: SimConfig, script: Connection) -> (EchoResult, Transcript, SimReport) {
    let mut sim = Simulation::new(config, vec![script], echo);
    let report = sim.run();
    (only_result(&sim), sim.transcripts()[0].clone(), report)
}

fn publish(topic: &str, payload: &str) -> PublishMessage {
    PublishMessage {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec(),
        properties: Default::default(),
        dedup_key: None,
    }
}

fn consume(subscription: &str, timeout_ms: u64) -> ConsumeMessage {
    ConsumeMessage {
        subscription: subscription.into(),
        timeout_ms,
    }
}

fn envelope(outcome: ConsumeOutcome) -> Envelope {
    match outcome {
        ConsumeOutcome::Message(envelope) => *envelope,
        ConsumeOutcome::Timeout => panic!("expected a message, got a timeout"),
    }
}
