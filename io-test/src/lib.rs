//! The deterministic driver for `effectful`: run programs against in-memory services
//! on a simulated clock, break things on purpose, and reproduce any run from one seed.
//!
//! Nothing here sleeps, opens a socket or draws OS randomness: time jumps to the next
//! event, and every random choice comes from the run's seed.
//!
//! - [`script`]: unit-test one program: expect this request, answer with that.
//! - [`fake`] (a re-export of `effectful::memory`): in-memory services that behave like PostgreSQL, Redis, a broker, S3,
//!   an auth service and a metrics registry (constraints, TTLs, redelivery, ...).
//! - [`sim`]: whole-system simulation: many programs, simulated WebSocket clients, a
//!   seeded scheduler deciding arrival order, and a [`fault`] plan.
//! - [`trace`]: every input and output as JSON lines; [`trace::replay`] reproduces a
//!   run exactly and fails at the first divergence.
//! - [`contract`]: behaviour every driver keeps (cancellation), written once and
//!   run against the simulator and the tokio runtime.
//! - [`seed`]: `EFFECTFUL_SEED=<n>` reruns one seed; failing runs print how to reproduce.
//! - `strategy` (feature `proptest`, on by default): proptest strategies for fault
//!   plans and client connections.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod contract;
pub mod fault;
pub mod script;
pub mod seed;
pub mod sim;
#[cfg(feature = "proptest")]
pub mod strategy;
pub mod trace;

/// In-memory fakes of the services behind the effect families. They live in core
/// (`effectful::memory`, cargo feature `memory`) so that every driver can host them;
/// this path is kept for the simulator's users.
pub use effectful::memory as fake;

/// The `uuid` crate the effect types use (user ids, request ids), re-exported so
/// tests need no dependency of their own that must match its version.
pub use uuid;

pub use script::{
    IntoResponse, Script, ScriptFailure, ScriptRun, assert_script, assert_script_program,
};
