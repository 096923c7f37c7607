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
