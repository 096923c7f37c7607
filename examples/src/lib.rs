//! Programs shared by the runnable examples: the chat session the simulator and the
//! server run, and the simulation scenario and invariants around it.
//!
//! Run an example with `cargo run -p effectful-examples --example NAME`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod chat;
pub mod chat_sim;
