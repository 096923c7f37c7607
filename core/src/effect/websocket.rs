//! WebSocket: talk to the client this program serves.

use serde::{Deserialize, Serialize};

use super::family;

/// Send a text frame to the client. Output: `()`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendText {
    /// The text to send.
    pub text: String,
}

/// Wait for the client's next text frame. Output: the text.
///
/// A closed connection is an infrastructure error (`ErrorKind::WebSocketClosed`, code
/// 1006 when the client vanished).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ReceiveText {}

/// Close the connection. Output: `()`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Close {
    /// Why the connection is closed; decides the close code.
    pub reason: CloseReason,
}

/// Why a WebSocket is closed by the program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseReason {
    /// 1000: the conversation is over.
    Normal,
    /// 1001: the server is going away (shutdown).
    GoingAway,
    /// 1002: the client broke the protocol.
    ProtocolError(String),
    /// 1008: the client broke a policy (for example the program's time limit).
    PolicyViolation(String),
    /// 1011: the server met an unexpected condition.
    InternalError(String),
}

impl CloseReason {
    /// The WebSocket close code for this reason.
    pub fn code(&self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::GoingAway => 1001,
            CloseReason::ProtocolError(_) => 1002,
            CloseReason::PolicyViolation(_) => 1008,
            CloseReason::InternalError(_) => 1011,
        }
    }

    /// The text sent in the close frame.
    pub fn text(&self) -> &str {
        match self {
            CloseReason::Normal | CloseReason::GoingAway => "",
            CloseReason::ProtocolError(r)
            | CloseReason::PolicyViolation(r)
            | CloseReason::InternalError(r) => r,
        }
    }
}

family! {
    /// The WebSocket family's requests.
    WebSocket: WebSocketRequest => WebSocketResponse {
        SendText => (),
        ReceiveText => String,
        Close => (),
    }
}
