//! Cancel requests: the 16 bytes a driver writes on a fresh connection to the same
//! server to stop the query a backend is running.

use std::fmt;

use bytes::BytesMut;
use postgres_protocol::message::frontend;

/// The key to cancel work on one backend, from its `BackendKeyData`.
///
/// `Debug` hides the secret key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CancelRequest {
    process_id: i32,
    secret_key: i32,
}

impl CancelRequest {
    pub(crate) fn new(process_id: i32, secret_key: i32) -> CancelRequest {
        CancelRequest {
            process_id,
            secret_key,
        }
    }

    /// The backend's process id (`pg_backend_pid()` on that connection).
    pub fn process_id(&self) -> i32 {
        self.process_id
    }

    /// The `CancelRequest` message: open a new connection to the same server (TLS
    /// negotiated the same way, if used), write these bytes and close it. The server
    /// answers nothing; the cancelled query fails with SQLSTATE `57014`.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut buf = BytesMut::with_capacity(16);
        frontend::cancel_request(self.process_id, self.secret_key, &mut buf);
        let mut out = [0; 16];
        out.copy_from_slice(&buf[..16]);
        out
    }
}

impl fmt::Debug for CancelRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelRequest")
            .field("process_id", &self.process_id)
            .field("secret_key", &"***")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cancel_message_is_length_code_pid_and_key() {
        let bytes = CancelRequest::new(0x0102_0304, 0x0a0b_0c0d).to_bytes();
        assert_eq!(
            bytes,
            [
                0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d
            ]
        );
    }
}
