//! Which close frame the server sends for each way the client's bytes can be wrong.
//!
//! tungstenite reports most bad input as an error and leaves the close frame to its
//! caller; this is the one place that maps them.

use tungstenite::error::{CapacityError, Error, ProtocolError};

/// 1002: the client broke the protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// 1007: a text message (or a close reason) that is not UTF-8.
pub const INVALID_UTF8: u16 = 1007;
/// 1008: a policy: the program's time limit, an idle client, a client too slow to read.
pub const POLICY_VIOLATION: u16 = 1008;
/// 1009: a frame or message above the configured limits.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// 1011: the server met an unexpected condition.
pub const INTERNAL_ERROR: u16 = 1011;

/// The close code and reason the server sends when reading the client's bytes failed
/// with `error`. `None` for errors that are not the client's fault and need no close
/// frame (the connection is already closed).
pub(super) fn close_frame_for(error: &Error) -> Option<(u16, &'static str)> {
    match error {
        Error::ConnectionClosed | Error::AlreadyClosed => None,
        Error::Capacity(CapacityError::MessageTooLong { .. }) => {
            Some((MESSAGE_TOO_BIG, "Message too big"))
        }
        Error::Capacity(CapacityError::TooManyHeaders) => {
            Some((PROTOCOL_ERROR, "Protocol violation"))
        }
        Error::Utf8(_) => Some((INVALID_UTF8, "Invalid UTF-8")),
        Error::Protocol(ProtocolError::ControlFrameTooBig) => {
            Some((PROTOCOL_ERROR, "Control frame too big"))
        }
        Error::Protocol(_) | Error::AttackAttempt => Some((PROTOCOL_ERROR, "Protocol violation")),
        _ => Some((INTERNAL_ERROR, "Internal error")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_framing_error_maps_to_the_close_code_users_expect() {
        let too_long = Error::Capacity(CapacityError::MessageTooLong {
            size: 10,
            max_size: 5,
        });
        assert_eq!(close_frame_for(&too_long).map(|c| c.0), Some(1009));
        assert_eq!(
            close_frame_for(&Error::Utf8("bad".into())).map(|c| c.0),
            Some(1007)
        );
        let unmasked = Error::Protocol(ProtocolError::UnmaskedFrameFromClient);
        assert_eq!(close_frame_for(&unmasked).map(|c| c.0), Some(1002));
        let io = Error::Io(std::io::ErrorKind::Other.into());
        assert_eq!(close_frame_for(&io).map(|c| c.0), Some(1011));
        assert_eq!(close_frame_for(&Error::ConnectionClosed), None);
    }
}
