//! The chat application of the seed tutorial, written on effectful: the session
//! program that the simulator (and later the server) runs unchanged, and the
//! simulation scenario and invariants around it.
//!
//! - [`session`]: one WebSocket chat session, as an async program.
//! - [`sim`]: N clients over a simulated duration under faults, and the invariants
//!   checked as each session ends.
//!
//! The `simulate` binary runs many seeds of [`sim`] from the command line:
//! `cargo run --release -p effectful-chat --bin simulate -- --help`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod session;
pub mod sim;
