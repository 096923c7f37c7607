//! Production policy that every driver shares, written once: the tokio driver and the
//! simulator both follow it, so a simulated run closes connections as production does.
//!
//! # When the program ends first
//! A program that ends while its WebSocket is still open has the server close the
//! connection, with the close frame [`close_reason`] gives for its result: 1000 if it
//! returned (whatever value it returned), 1001 if the driver aborted it (the server is
//! shutting down), 1008 `Timeout` if its deadline passed, 1011 `Internal error` if it
//! failed otherwise (the seed tutorial's codes and reasons).
//!
//! # When the client goes first: a disconnect fails effects, it never aborts
//! A client's disconnect does **not** end its program. The frames the client sent
//! before it closed or vanished reached the server first, so the program still reads
//! them, in order. After them every WebSocket effect of the program fails with
//! [`ErrorKind::WebSocketClosed`](crate::ErrorKind::WebSocketClosed) carrying the
//! close code ([`Disconnect::error`]): a `ReceiveText` already waiting fails at once.
//! The program then ends on its own terms within its deadline, so it can still clean
//! up (record that the user left, release what it holds).

use serde::{Deserialize, Serialize};

use crate::EffectError;
use crate::ProgramError;
use crate::effect::CloseReason;

/// The close frame the server sends when the program serving a still-open WebSocket
/// ends with `result`.
///
/// ```
/// use effectful::{ProgramError, Time, policy::close_reason};
///
/// assert_eq!(close_reason(&Ok::<_, ProgramError>(())).code(), 1000);
/// assert_eq!(close_reason::<()>(&Err(ProgramError::Aborted)).code(), 1001);
/// let late = Err(ProgramError::DeadlineExceeded { deadline: Time::from_secs(300) });
/// assert_eq!(close_reason::<()>(&late).code(), 1008);
/// assert_eq!(close_reason::<()>(&Err(ProgramError::ForeignAwait)).code(), 1011);
/// ```
pub fn close_reason<O>(result: &Result<O, ProgramError>) -> CloseReason {
    match result {
        Ok(_) => CloseReason::Normal,
        // A driver aborts a program whose client is still connected only when it
        // shuts down: a client that went away leaves no connection to close.
        Err(ProgramError::Aborted) => CloseReason::GoingAway,
        Err(ProgramError::DeadlineExceeded { .. }) => {
            CloseReason::PolicyViolation("Timeout".to_owned())
        }
        Err(_) => CloseReason::InternalError("Internal error".to_owned()),
    }
}

/// How a WebSocket connection ended, as the program serving it learns it: see the
/// [module documentation](self) for what a disconnect means to the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Disconnect {
    /// The client sent a close frame with this code (1000 for a normal close).
    ClientClosed {
        /// The client's close code.
        code: u16,
    },
    /// The connection dropped without a close frame (the server sees 1006).
    ClientVanished,
    /// The server closed it with this code: the program's own `WebSocket.Close`, or
    /// the program's end ([`close_reason`]).
    ServerClosed {
        /// The server's close code.
        code: u16,
    },
}

impl Disconnect {
    /// The close code the program sees: the client's, the server's, or 1006 when the
    /// client vanished.
    pub fn code(self) -> u16 {
        match self {
            Disconnect::ClientClosed { code } | Disconnect::ServerClosed { code } => code,
            Disconnect::ClientVanished => 1006,
        }
    }

    /// The error every WebSocket effect (`effect`, as `WebSocket.Effect`) of the
    /// program gets once the connection has ended and the frames that arrived before
    /// the end have been read. Not retryable.
    pub fn error(self, effect: &'static str) -> EffectError {
        let reason = match self {
            Disconnect::ClientClosed { .. } => "the client closed the connection",
            Disconnect::ClientVanished => "the client vanished",
            Disconnect::ServerClosed { .. } => "the connection is already closed",
        };
        EffectError::websocket_closed(effect, self.code(), reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn a_program_end_closes_with_the_seed_tutorials_codes_and_reasons() {
        let reasons = [
            close_reason(&Ok::<u8, _>(7)),
            close_reason::<u8>(&Err(ProgramError::Aborted)),
            close_reason::<u8>(&Err(ProgramError::DeadlineExceeded {
                deadline: crate::Time::from_secs(300),
            })),
            close_reason::<u8>(&Err(ProgramError::Panicked {
                message: "boom".into(),
            })),
            close_reason::<u8>(&Err(ProgramError::Stalled)),
        ];
        let shown: Vec<(u16, &str)> = reasons.iter().map(|r| (r.code(), r.text())).collect();
        assert_eq!(
            shown,
            [
                (1000, ""),
                (1001, ""),
                (1008, "Timeout"),
                (1011, "Internal error"),
                (1011, "Internal error"),
            ]
        );
    }

    #[test]
    fn a_disconnect_fails_websocket_effects_with_its_close_code_and_no_retry() {
        for (disconnect, code) in [
            (Disconnect::ClientClosed { code: 1000 }, 1000),
            (Disconnect::ClientVanished, 1006),
            (Disconnect::ServerClosed { code: 1008 }, 1008),
        ] {
            let error = disconnect.error("WebSocket.ReceiveText");
            assert_eq!(error.effect, "WebSocket.ReceiveText");
            assert!(
                matches!(error.kind, ErrorKind::WebSocketClosed { code: c, .. } if c == code),
                "{error}"
            );
            assert!(!error.retryable, "{error}");
        }
    }
}
