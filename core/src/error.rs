//! The two tiers of failure: domain outcomes are values (see the effect families);
//! infrastructure failures are [`EffectError`]s, and a program that could not finish
//! on its own terms ends with a [`ProgramError`].

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Time;

/// An infrastructure failure while performing one effect: it names the effect, the
/// cause, and whether trying again may help.
///
/// Domain outcomes (a user that does not exist, a cache miss) are *not* errors; they
/// are variants of the effect's typed output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{effect} failed: {kind}: {message} ({})", if *.retryable { "retryable" } else { "not retryable" })]
pub struct EffectError {
    /// The effect that failed, as `Family.Effect` (for example `Database.GetUserById`).
    pub effect: Cow<'static, str>,
    /// What went wrong, in a form a program can match on.
    pub kind: ErrorKind,
    /// Details for a human: the driver's own error text.
    pub message: String,
    /// Whether performing the same effect again may succeed.
    pub retryable: bool,
}

/// The cause of an [`EffectError`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The connection to the service was lost or could not be made.
    ConnectionLost,
    /// The service did not answer in time (a per-effect timeout, a command timeout).
    Timeout,
    /// The service is up but refused the work for now (pool exhausted, overloaded).
    Unavailable,
    /// The service answered something this library cannot make sense of.
    Protocol,
    /// The service reported an error of its own (a SQLSTATE, a Redis error reply).
    Service {
        /// The service's error code, when it has one (for example SQLSTATE `23505`).
        code: Option<String>,
    },
    /// The WebSocket is closed; `code` is the close code (1006 when it vanished).
    WebSocketClosed {
        /// The WebSocket close code.
        code: u16,
        /// The close reason sent by the peer, if any.
        reason: String,
    },
    /// No interpreter handles this effect.
    Unhandled {
        /// The effect families the driver does handle.
        available: Vec<String>,
    },
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::ConnectionLost => f.write_str("connection lost"),
            ErrorKind::Timeout => f.write_str("timed out"),
            ErrorKind::Unavailable => f.write_str("service unavailable"),
            ErrorKind::Protocol => f.write_str("protocol error"),
            ErrorKind::Service { code: Some(code) } => write!(f, "service error {code}"),
            ErrorKind::Service { code: None } => f.write_str("service error"),
            ErrorKind::WebSocketClosed { code, reason } => {
                write!(f, "websocket closed with code {code}")?;
                if !reason.is_empty() {
                    write!(f, " ({reason})")?;
                }
                Ok(())
            }
            ErrorKind::Unhandled { available } => {
                write!(f, "no interpreter handles it; available: ")?;
                if available.is_empty() {
                    f.write_str("none")
                } else {
                    f.write_str(&available.join(", "))
                }
            }
        }
    }
}

impl EffectError {
    /// An error of `kind` for `effect`, retryable as the kind usually is.
    pub fn new(
        effect: impl Into<Cow<'static, str>>,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> EffectError {
        let retryable = matches!(
            kind,
            ErrorKind::ConnectionLost | ErrorKind::Timeout | ErrorKind::Unavailable
        );
        EffectError {
            effect: effect.into(),
            kind,
            message: message.into(),
            retryable,
        }
    }

    /// The connection to the service behind `effect` was lost (retryable).
    pub fn connection_lost(
        effect: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> EffectError {
        EffectError::new(effect, ErrorKind::ConnectionLost, message)
    }

    /// `effect` did not complete in time (retryable).
    pub fn timeout(
        effect: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> EffectError {
        EffectError::new(effect, ErrorKind::Timeout, message)
    }

    /// The WebSocket is closed (not retryable). 1006 means the peer vanished.
    pub fn websocket_closed(
        effect: impl Into<Cow<'static, str>>,
        code: u16,
        reason: impl Into<String>,
    ) -> EffectError {
        let reason = reason.into();
        EffectError::new(
            effect,
            ErrorKind::WebSocketClosed {
                code,
                reason: reason.clone(),
            },
            reason,
        )
    }

    /// No interpreter handles `effect`; `available` lists the families that are handled.
    pub fn unhandled(effect: impl Into<Cow<'static, str>>, available: Vec<String>) -> EffectError {
        let effect = effect.into();
        let message = format!("register an interpreter for {effect}'s family");
        EffectError::new(effect, ErrorKind::Unhandled { available }, message)
    }

    /// The driver answered `effect` with a response of another effect (`got`).
    pub fn mismatched_response(effect: impl Into<Cow<'static, str>>, got: &str) -> EffectError {
        EffectError::new(
            effect,
            ErrorKind::Protocol,
            format!("the driver answered with a {got} response"),
        )
    }

    /// The same error with `retryable` set as given.
    pub fn with_retryable(mut self, retryable: bool) -> EffectError {
        self.retryable = retryable;
        self
    }
}

/// Why a program ended without producing its own output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ProgramError {
    /// The program's deadline passed; its outstanding effects were cancelled.
    #[error(
        "program deadline {deadline} passed before it finished; raise EngineConfig::program_timeout \
         or bound the slow effects with fx.perform_timeout"
    )]
    DeadlineExceeded {
        /// The deadline that passed.
        deadline: Time,
    },
    /// The driver aborted the program (a client vanished, shutdown).
    #[error("program aborted by the driver (a client went away, or the driver is shutting down)")]
    Aborted,
    /// An async program awaited a future that is not an effect (a tokio sleep, a
    /// channel): nothing could ever wake it, so it was ended instead of hanging.
    #[error(
        "program awaited a future that is not an effect; use the effect handle \
         (fx.perform, fx.sleep, fx.timeout) instead of runtime futures"
    )]
    ForeignAwait,
    /// A hand-written program asked to wait while it had no effect or timer
    /// outstanding, so nothing could ever resume it.
    #[error(
        "program is waiting with no effect or timer outstanding; it can never be resumed \
         (a hand-written Program must ask for something through its Cx before returning Pending)"
    )]
    Stalled,
    /// The program woke itself again and again at one instant without waiting for
    /// anything outside (a retry without delay whose attempt fails at once, a loop
    /// of zero sleeps), so it could never let time move on: it was ended.
    #[error(
        "program spun: it armed {wakes} timers already due at one instant without waiting \
         for anything else; give its retry Schedule a delay or a limit (recurs, up_to)"
    )]
    Spinning {
        /// How many already-due timers it armed at that instant.
        wakes: u32,
    },
    /// The program panicked; the engine ended it and kept running the others.
    #[error("program panicked: {message}; the other programs keep running")]
    Panicked {
        /// The panic message.
        message: String,
    },
}

/// The text of a caught panic's payload, as [`ProgramError::Panicked`] reports it: for
/// drivers that catch panics of their own (an interpreter's, say) and report them the
/// same way.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (
        payload.downcast_ref::<&str>(),
        payload.downcast_ref::<String>(),
    ) {
        (Some(text), _) => (*text).to_string(),
        (_, Some(text)) => text.clone(),
        _ => "a panic with a non-text payload".to_string(),
    }
}
