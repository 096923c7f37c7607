//! SQLSTATE codes that both the real PostgreSQL interpreter and the in-memory database
//! produce, so a program (or a family adapter) matches one constant whichever driver
//! runs it.
//!
//! They arrive as `ErrorKind::Service { code: Some(..) }` on an
//! [`EffectError`](crate::EffectError). The names are PostgreSQL's condition names
//! (Appendix A of its manual), upper-cased.
//!
//! ```
//! use effectful::effect::sqlstate;
//! use effectful::{EffectError, ErrorKind};
//!
//! fn is_duplicate(error: &EffectError) -> bool {
//!     matches!(&error.kind, ErrorKind::Service { code: Some(code) } if code == sqlstate::UNIQUE_VIOLATION)
//! }
//! # let taken = EffectError::new(
//! #     "Database.UpdateUser",
//! #     ErrorKind::Service { code: Some(sqlstate::UNIQUE_VIOLATION.into()) },
//! #     "duplicate key value violates unique constraint",
//! # );
//! # assert!(is_duplicate(&taken));
//! ```

/// `unique_violation`: a row would repeat a value a unique constraint forbids (a
/// taken email, a message id saved twice with other contents). Not retryable.
pub const UNIQUE_VIOLATION: &str = "23505";

/// `foreign_key_violation`: a row refers to one that does not exist (a message for a
/// user that was never created or was deleted). Not retryable.
pub const FOREIGN_KEY_VIOLATION: &str = "23503";

/// `not_null_violation`: a required column was left empty. Not retryable.
pub const NOT_NULL_VIOLATION: &str = "23502";

/// `check_violation`: a row breaks a `CHECK` constraint. Not retryable.
pub const CHECK_VIOLATION: &str = "23514";

/// `serialization_failure`: a concurrent transaction won; running the whole
/// transaction again may succeed.
pub const SERIALIZATION_FAILURE: &str = "40001";

/// `deadlock_detected`: the server broke a deadlock by failing this transaction;
/// running it again may succeed.
pub const DEADLOCK_DETECTED: &str = "40P01";

/// `query_canceled`: the statement was cancelled (a `statement_timeout`, or a cancel
/// request the driver sent when the program gave up on the effect).
pub const QUERY_CANCELED: &str = "57014";

/// `admin_shutdown`: the server is shutting down and ended the session; another
/// connection may succeed.
pub const ADMIN_SHUTDOWN: &str = "57P01";

/// `cannot_connect_now`: the server is starting up or shutting down; retry later.
pub const CANNOT_CONNECT_NOW: &str = "57P03";

/// `too_many_connections`: the server refused a new connection; retry later or lower
/// the pool size.
pub const TOO_MANY_CONNECTIONS: &str = "53300";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_five_characters_of_digits_and_capitals() {
        for code in [
            UNIQUE_VIOLATION,
            FOREIGN_KEY_VIOLATION,
            NOT_NULL_VIOLATION,
            CHECK_VIOLATION,
            SERIALIZATION_FAILURE,
            DEADLOCK_DETECTED,
            QUERY_CANCELED,
            ADMIN_SHUTDOWN,
            CANNOT_CONNECT_NOW,
            TOO_MANY_CONNECTIONS,
        ] {
            assert_eq!(code.len(), 5, "{code}");
            assert!(
                code.bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
                "{code}"
            );
        }
    }
}
