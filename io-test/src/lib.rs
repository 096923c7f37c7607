//! The deterministic driver for `effectful`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
