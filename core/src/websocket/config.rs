//! The limits and timers of one WebSocket session.

use std::time::Duration;

/// Limits and timers for a [`WsSession`](super::WsSession).
///
/// Every size read from the client is checked against these before anything is
/// allocated for it: a frame header announcing more than `max_frame_size` closes the
/// connection with 1009 before its payload is read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WsConfig {
    /// The largest message (all fragments together) the client may send; more closes
    /// the connection with 1009 `Message too big`. Default 1 MiB.
    pub max_message_size: usize,
    /// The largest single frame payload the client may send; more closes with 1009.
    /// Default 1 MiB.
    pub max_frame_size: usize,
    /// The most bytes the session holds for a client that reads slowly (written by
    /// the session, not yet taken by the driver with
    /// [`handle_transmitted`](super::WsSession::handle_transmitted)). A send that
    /// would go past it is refused and the connection is closed with 1008
    /// `Client too slow`: see [`WsSendError::SlowClient`](super::WsSendError::SlowClient).
    /// It must exceed the largest message the server sends. Default 1 MiB.
    pub max_queued_bytes: usize,
    /// Send a ping when nothing was heard from the client for this long (`None`: never).
    /// Default 30 s.
    pub keepalive_interval: Option<Duration>,
    /// Close the connection with 1008 `Idle timeout` when nothing was heard from the
    /// client for this long, the pongs to keep-alive pings included (`None`: never).
    /// It also bounds how long the opening handshake may take. Default 75 s.
    pub idle_timeout: Option<Duration>,
    /// How long the server waits for the client to answer its close frame before it
    /// considers the connection closed. Default 5 s.
    pub close_timeout: Duration,
    /// The largest HTTP upgrade request accepted from raw bytes; more is refused with
    /// 431. Default 8 KiB.
    pub max_request_bytes: usize,
    /// How many bytes the framing reads at a time. Default 4 KiB.
    pub read_chunk: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
            max_queued_bytes: 1 << 20,
            keepalive_interval: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(75)),
            close_timeout: Duration::from_secs(5),
            max_request_bytes: 8 * 1024,
            read_chunk: 4 * 1024,
        }
    }
}

impl WsConfig {
    /// The framing's configuration: the server writes every frame straight into the
    /// session's outgoing buffer (the driver batches the socket writes).
    pub(super) fn framing(&self) -> tungstenite::protocol::WebSocketConfig {
        tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(self.read_chunk.max(1))
            .write_buffer_size(0)
            .max_write_buffer_size(usize::MAX)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_frame_size))
    }
}
