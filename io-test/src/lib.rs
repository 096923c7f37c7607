//! The deterministic driver for `effectful`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod fake;
pub mod script;
pub use script::{
    IntoResponse, Script, ScriptFailure, ScriptRun, assert_script, assert_script_program,
};
pub mod fault;
pub mod seed;
pub mod sim;
pub mod trace;
