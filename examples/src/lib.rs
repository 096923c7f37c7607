//! Small runnable examples of effectful, each in `examples/`: `embed_blocking` (a
//! program answered by a plain blocking loop, std only, no tokio anywhere in this
//! crate's dependency tree) and `custom_family` (an effect family of your own beside
//! the built-in ones). The `redis_cmd` binary sends one command to Redis and prints the
//! reply as `redis-cli --raw` does, on core's sans-IO connection and plain `std::net`.
//! The chat application has a crate of its own, `effectful-chat`.
//!
//! Run an example with `cargo run -p effectful-examples --example NAME`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
