//! Auth: tokens and passwords.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::database::User;
use super::family;
use crate::time::Timestamp;

/// How long after its expiry a revoked token still reads as revoked, in seconds (one
/// day); later it reads as expired. A real service keeps revocations that long and
/// then forgets them (the fake agrees).
pub const REVOCATION_MEMORY_SECONDS: u64 = 86_400;

/// The domain outcome of validating a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenValidation {
    /// The token is good.
    Valid {
        /// Whose token it is.
        user_id: Uuid,
        /// Its claims.
        claims: BTreeMap<String, String>,
    },
    /// The token was good until `expired_at`.
    Expired {
        /// When it expired.
        expired_at: Timestamp,
    },
    /// The token is not good (malformed, bad signature, revoked).
    Invalid {
        /// Why.
        reason: String,
    },
}

/// The domain outcome of refreshing a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefreshOutcome {
    /// A new token.
    Refreshed {
        /// The new token.
        token: String,
    },
    /// Refused.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// The domain outcome of looking a user up by email.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmailLookup {
    /// The user.
    Found(User),
    /// No user has this email.
    NotFound {
        /// The email looked up.
        email: String,
    },
}

/// Check a token. Output: [`TokenValidation`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateToken {
    /// The token.
    pub token: String,
}

/// Issue a token. Output: the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateToken {
    /// For whom.
    pub user_id: Uuid,
    /// Its claims.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// Seconds until it expires.
    pub ttl_seconds: u64,
}

/// Trade a token for a fresh one. Output: [`RefreshOutcome`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshToken {
    /// The token to refresh.
    pub token: String,
}

/// Revoke a token. Output: whether it was valid until now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeToken {
    /// The token.
    pub token: String,
}

/// Find a user by email. Output: [`EmailLookup`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetUserByEmail {
    /// The email.
    pub email: String,
}

/// Check a password against a hash. Output: whether it matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatePassword {
    /// The password.
    pub password: String,
    /// The stored hash.
    pub password_hash: String,
}

/// Hash a password. Output: the hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashPassword {
    /// The password.
    pub password: String,
}

family! {
    /// The Auth family's requests.
    Auth: AuthRequest => AuthResponse {
        ValidateToken => TokenValidation,
        GenerateToken => String,
        RefreshToken => RefreshOutcome,
        RevokeToken => bool,
        GetUserByEmail => EmailLookup,
        ValidatePassword => bool,
        HashPassword => String,
    }
}
