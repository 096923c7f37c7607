//! What a simulation is given and what it reports.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fault::FaultPlan;

/// How a simulation runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Fixes every random choice: the services', the scheduler's, the programs'.
    pub seed: u64,
    /// Each program's deadline after it starts (the seed tutorial's 300 s).
    pub program_timeout: Option<Duration>,
    /// What goes wrong.
    pub faults: FaultPlan,
    /// Keep a trace of the run in memory (see [`Simulation::trace`](super::Simulation::trace)).
    pub record_trace: bool,
    /// The limits the server keeps on each WebSocket connection.
    #[serde(default)]
    pub websocket: WsLimits,
}

/// The limits the simulated server keeps on each WebSocket connection: those of the
/// real session (`effectful::websocket::WsConfig`), with the same defaults and the
/// same outcomes, held to it by the WebSocket contract test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsLimits {
    /// The longest text a client may send: a longer one closes the connection with
    /// 1009 and never reaches the program. A client sends each text as one frame, so
    /// this is the smaller of the session's frame and message limits (1 MiB each by
    /// default).
    pub max_message_size: usize,
    /// The most bytes of frames the server holds for a client that stopped reading
    /// ([`ConnectionEnd::StopReading`](super::ConnectionEnd::StopReading)): a send
    /// past it fails with 1008 `Client too slow` and closes the connection. Default
    /// 1 MiB. (A real socket's buffers take some bytes before the session holds any;
    /// the model has none, so it refuses sooner, never later.)
    pub max_queued_bytes: usize,
}

impl Default for WsLimits {
    fn default() -> WsLimits {
        WsLimits {
            max_message_size: 1 << 20,
            max_queued_bytes: 1 << 20,
        }
    }
}

impl SimConfig {
    /// No faults, a 300 s program timeout, no trace.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            program_timeout: Some(Duration::from_secs(300)),
            faults: FaultPlan::none(),
            record_trace: false,
            websocket: WsLimits::default(),
        }
    }
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
    /// The same faults, by kind.
    #[serde(default)]
    pub fault_kinds: FaultCounts,
    /// Programs spawned.
    pub programs: u64,
    /// Programs that never finished (must be 0 when every program has a deadline).
    pub unfinished: u64,
    /// Programs that finished after their deadline (must be 0).
    pub late: u64,
    /// The simulated time when the last event happened.
    pub simulated: Duration,
}

/// Faults injected, by kind (they add up to [`SimReport::faults`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultCounts {
    /// Effects failed before the service saw them (the plan's error rates).
    pub errors: u64,
    /// Answers lost after the service applied the effect.
    pub lost_answers: u64,
    /// Acknowledgements lost on their way to the broker.
    pub lost_acks: u64,
    /// Effects refused during an outage window.
    pub outages: u64,
    /// Effects on their way to a service when it restarted.
    pub restarts: u64,
    /// Client connections dropped (the drop rate, and disconnect storms).
    pub dropped_connections: u64,
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} errors, {} lost answers, {} lost acks, {} refused in outages, {} lost in restarts, {} dropped connections",
            self.errors,
            self.lost_answers,
            self.lost_acks,
            self.outages,
            self.restarts,
            self.dropped_connections
        )
    }
}

impl FaultCounts {
    /// Both counts added kind by kind; `None` if one would overflow (counts read back
    /// from reports are not to be trusted).
    pub fn checked_add(self, other: FaultCounts) -> Option<FaultCounts> {
        Some(FaultCounts {
            errors: self.errors.checked_add(other.errors)?,
            lost_answers: self.lost_answers.checked_add(other.lost_answers)?,
            lost_acks: self.lost_acks.checked_add(other.lost_acks)?,
            outages: self.outages.checked_add(other.outages)?,
            restarts: self.restarts.checked_add(other.restarts)?,
            dropped_connections: self
                .dropped_connections
                .checked_add(other.dropped_connections)?,
        })
    }
}

impl std::ops::AddAssign for FaultCounts {
    /// Adds kind by kind, saturating.
    fn add_assign(&mut self, other: FaultCounts) {
        let most = FaultCounts {
            errors: u64::MAX,
            lost_answers: u64::MAX,
            lost_acks: u64::MAX,
            outages: u64::MAX,
            restarts: u64::MAX,
            dropped_connections: u64::MAX,
        };
        *self = self.checked_add(other).unwrap_or(most);
    }
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
