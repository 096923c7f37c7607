//! Pure programs that describe their effects, and the sans-IO machinery that runs them.
//!
//! This crate has no networking code, no clock and no OS randomness: programs ask for
//! effects (a database row, a cache entry, a WebSocket frame, the time) as plain
//! data, and a driver performs them and hands the answers back, together with the
//! current time. The same program runs on tokio against real services
//! (`effectful-tokio`), on a deterministic simulator (`effectful-test`), or under a
//! plain blocking loop ([`run_async`]).
//!
//! # Driving the engine
//! ```
//! use effectful::{Engine, EngineConfig, Output, Time, effect::*};
//!
//! let mut engine: Engine<Result<String, effectful::EffectError>> = Engine::new(EngineConfig::default());
//! engine.spawn_async(Time::ZERO, |fx| async move {
//!     let id = fx.perform(GenerateUuid {}).await?;
//!     Ok(id.to_string())
//! });
//! let mut result = None;
//! while let Some(output) = engine.poll_output() {
//!     match output {
//!         Output::Request { id, request: Request::System(SystemRequest::GenerateUuid(_)) } => {
//!             let answer = Response::System(SystemResponse::GenerateUuid(uuid::Uuid::nil()));
//!             let _ = engine.handle_response(Time::ZERO, id, Ok(answer));
//!         }
//!         Output::Finished { result: r, .. } => result = Some(r),
//!         other => panic!("unexpected {other:?}"),
//!     }
//! }
//! assert_eq!(result, Some(Ok(Ok(uuid::Uuid::nil().to_string()))));
//! ```
//!
//! # Map
//! - [`effect`]: the eight effect families as data, and how to add your own;
//! - [`Engine`]: hosts programs, emits requests, takes answers in any order;
//! - [`Fx`] and [`combinator`]: writing programs as `async` code; [`Program`]:
//!   writing them as hand-made state machines;
//! - [`ProgramMap`]: a driver's per-program state, keyed by [`ProgramId`];
//! - [`policy`]: what every driver does the same way (the close code when a program
//!   ends, what a client's disconnect means to its program);
//! - [`Schedule`]: retry policies; [`Time`], [`Timestamp`], [`Rng`]: time and
//!   randomness as values;
//! - [`run_program`] / [`run_async`]: the simplest driver;
//! - `memory` (cargo feature `memory`): in-memory services for every built-in family,
//!   which the simulator and the tokio driver's in-memory mode both run against.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod combinator;
pub mod effect;
mod engine;
mod error;
mod excerpt;
mod fx;
mod id;
mod mailbox;
#[cfg(feature = "memory")]
pub mod memory;
pub mod policy;
#[cfg(feature = "postgres")]
pub mod postgres;
mod program;
mod program_map;
#[cfg(feature = "redis")]
pub mod redis;
mod rng;
mod run;
pub mod schedule;
mod time;
#[cfg(feature = "websocket")]
pub mod websocket;

pub use combinator::{Either, join, join_all, race, race_all};
pub use effect::{Effect, EmbedStd, Family, Std, decode};
pub use engine::{Delivery, Engine, EngineConfig, Output};
pub use error::{EffectError, ErrorKind, ProgramError, panic_message};
pub use excerpt::Excerpt;
pub use fx::{Elapsed, Fx, Perform, PerformAll, Sleep};
pub use id::{EffectId, ProgramId};
pub use program::{Cx, Event, Program};
pub use program_map::ProgramMap;
pub use rng::Rng;
pub use run::{Handler, run_async, run_program};
pub use schedule::{Schedule, ScheduleState, ScheduleTooDeep};
pub use time::{Time, Timestamp, duration_nanos};

/// The README's example compiles (and its other Rust blocks run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
