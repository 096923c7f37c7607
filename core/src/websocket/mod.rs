//! The server side of a WebSocket connection as a sans-IO state machine (cargo feature
//! `websocket`), on tungstenite's framing over an in-memory stream.
//!
//! - [`Acceptor`]: the opening handshake, from raw bytes or from a request an HTTP
//!   server already parsed (accept key, subprotocol, origin check);
//! - [`WsSession`]: one connection after (or including) the handshake: text, binary,
//!   ping, pong and close; keep-alive pings and an idle timeout on the caller's clock;
//!   message, frame and slow-client limits; the close codes below;
//! - [`WsConfig`]: its limits and timers.
//!
//! # Close codes
//! | code | when |
//! | --- | --- |
//! | 1000 | the program returned ([`policy::close_reason`](crate::policy::close_reason)) |
//! | 1001 | the server shuts down, or aborted the program |
//! | 1002 | the client broke the protocol (unmasked frame, bad opcode, fragmented control frame) |
//! | 1007 | a text message that is not UTF-8 |
//! | 1008 | the program's deadline passed (`Timeout`), the client was idle (`Idle timeout`) or read too slowly (`Client too slow`) |
//! | 1009 | a frame or message over the limits |
//! | 1011 | the program failed otherwise, or the server met an unexpected error |
//!
//! A server never masks its frames, so nothing here draws randomness.

mod close;
mod config;
mod handshake;
mod pipe;
mod session;

pub use close::{INTERNAL_ERROR, INVALID_UTF8, MESSAGE_TOO_BIG, POLICY_VIOLATION, PROTOCOL_ERROR};
pub use config::WsConfig;
pub use handshake::{Accepted, Acceptor, HandshakeError, OriginCheck, UpgradeRequest, accept_key};
pub use session::{WsEvent, WsMessage, WsSendError, WsSession};
