//! The thin tokio driver for `effectful`: runs engines on every core, and moves bytes,
//! time and answers between them and the OS. No protocol logic lives here.
//!
//! - [`Runtime`]: shards (one OS thread each, a current-thread tokio runtime, one
//!   `!Send` [`effectful::Engine`]), a `Send` [`Handle`] to start programs from
//!   anywhere and await their results, graceful shutdown;
//! - [`Interpreter`]: how a family's effects are performed on a shard, and the
//!   layering the protocol interpreters follow (see the [`interpreter`] module);
//! - [`SystemInterpreter`]: the wall clock, random UUIDs and shutdown, from the OS;
//! - [`memory`] (feature `memory`, on by default): in-memory backends for the other
//!   families, one world per process, on the core's in-memory services;
//! - [`Clock`] and [`entropy`]: the time and randomness the core never reads itself;
//! - [`RuntimeStats`]: effects per family and outcome, programs per outcome;
//! - [`server`] (feature `server`, on by default): the axum router (programs per
//!   HTTP request, `/health`, `/metrics`), settings, logs, Sentry, graceful shutdown.
//!
//! ```
//! use std::time::Duration;
//! use effectful::effect::GetCurrentTime;
//! use effectful_tokio::{Runtime, SystemInterpreter};
//!
//! let runtime = Runtime::builder()
//!     .shards(2)
//!     .interpreter("System", |_| SystemInterpreter::new())
//!     .build()?;
//! let year = runtime.block_on(async {
//!     let program = runtime.handle().spawn(|fx| async move {
//!         let now = fx.perform(GetCurrentTime {}).await?;
//!         Ok::<_, effectful::EffectError>(now.to_string()[..4].to_string())
//!     });
//!     // Started (or refused), then finished (or ended without an output).
//!     Ok::<_, Box<dyn std::error::Error>>(program.await?.await??)
//! })?;
//! assert!(year.as_str() >= "2025");
//! runtime.shutdown(Duration::from_secs(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod clock;
mod deadline;
pub mod entropy;
mod inbox;
pub mod interpreter;
#[cfg(feature = "memory")]
pub mod memory;
mod migrations;
mod offload;
#[cfg(any(feature = "postgres", feature = "redis"))]
mod outbox;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
mod runtime;
#[cfg(feature = "server")]
pub mod server;
mod shard;
mod stats;
mod system;
#[cfg(feature = "tls")]
pub mod tls;

pub use clock::Clock;
pub use interpreter::{Interpreter, LocalReplier, Replier, ShardContext, ShardCx, SplitStd};
pub use migrations::{
    MAX_MIGRATION_FILE_BYTES, MAX_MIGRATION_FILES, MigrationDirError, migrations_from_dir,
};
pub use offload::{CpuPool, Offloaded};
pub use runtime::{
    BuildError, Handle, JoinHandle, Runtime, RuntimeBuilder, ShutdownReport, SpawnError,
};
pub use stats::{EffectCounts, RuntimeStats, StatsSnapshot, UNHANDLED};
pub use system::SystemInterpreter;
