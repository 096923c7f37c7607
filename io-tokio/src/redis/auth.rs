//! The Auth family on Redis: HS256 tokens (jsonwebtoken) whose sessions and
//! revocations live in Redis, and Argon2id password hashes computed on the CPU pool.
//!
//! # Tokens
//! A token is a JWT signed with HS256 under the `JWT_SECRET` key. Its claims: `sub`
//! (the user id), `jti` (128 random bits), `iat` and `exp` (seconds, for other
//! readers), `exp_us` (the expiry instant in microseconds, the one this driver
//! judges by), `ttl` and `claims` (the effect's own). `GenerateToken` also writes the
//! session `{prefix}auth:session:{jti}` (the user id, expiring with the token).
//!
//! Expiry is judged at the effect's time from the driver's clock (the runtime's
//! clock plus the wall-clock instant of its epoch), never by the JWT crate's own
//! clock or leeway, so the fake and this driver agree: a token is expired from
//! `exp_us` on.
//!
//! Revoking writes `{prefix}auth:revoked:{jti}` (`SET NX`, so only one revocation or
//! refresh wins) and deletes the session. The revocation is kept until
//! [`REVOCATION_MEMORY_SECONDS`] after the token's expiry; later the token reads as
//! `Expired` (the fake agrees). A token that does not verify (malformed, another key,
//! altered) is `Invalid { reason: "unknown token" }`, as the fake says of tokens it
//! never issued.
//!
//! # Passwords
//! `HashPassword` answers an Argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`,
//! the argon2 crate's defaults, a 16-byte salt from the OS); `ValidatePassword`
//! verifies one. A malformed hash matches nothing. Both run off the shard, on the
//! process's CPU pool.
//!
//! # GetUserByEmail
//! Users live in the database: this interpreter answers `GetUserByEmail` with a
//! non-retryable `Unavailable` error saying so. Serve the Auth family's user lookup
//! from a Database-backed interpreter if your programs need it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use effectful::effect::{
    AuthRequest, AuthResponse, REVOCATION_MEMORY_SECONDS, RefreshOutcome, TokenValidation,
};
use effectful::redis::{Command, Value};
use effectful::{EffectError, ErrorKind, Timestamp};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::pool::{PoolError, RedisPool};

/// The HS256 key of tokens. Never shown: `Debug` prints `JwtSecret(<redacted>)`.
#[derive(Clone)]
pub struct JwtSecret {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl JwtSecret {
    /// The shortest key taken, in bytes (HS256's output size).
    pub const MIN_LEN: usize = 32;

    /// A key from its bytes; `None` if shorter than [`MIN_LEN`](Self::MIN_LEN).
    pub fn new(secret: &[u8]) -> Option<JwtSecret> {
        (secret.len() >= Self::MIN_LEN).then(|| JwtSecret {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        })
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

/// A token's claims.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    jti: String,
    iat: i64,
    exp: i64,
    exp_us: i64,
    ttl: u64,
    #[serde(default)]
    claims: BTreeMap<String, String>,
}

/// Tokens and sessions in Redis under a prefix.
#[derive(Clone, Debug)]
pub(crate) struct TokenService {
    secret: JwtSecret,
    prefix: String,
}

/// What a token verified as.
enum Verified {
    /// Signed by us: its claims.
    Ours(Claims),
    /// Not a token of ours.
    Unknown,
}

impl TokenService {
    pub(crate) fn new(secret: JwtSecret, prefix: String) -> TokenService {
        TokenService { secret, prefix }
    }

    fn session_key(&self, jti: &str) -> String {
        format!("{}auth:session:{jti}", self.prefix)
    }

    fn revoked_key(&self, jti: &str) -> String {
        format!("{}auth:revoked:{jti}", self.prefix)
    }

    fn verify(&self, token: &str) -> Verified {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is ours to judge, at the effect's time.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.required_spec_claims.clear();
        match jsonwebtoken::decode::<Claims>(token, &self.secret.decoding, &validation) {
            Ok(data) => Verified::Ours(data.claims),
            Err(_) => Verified::Unknown,
        }
    }

    /// Serves one token request at wall time `now`.
    pub(crate) async fn handle(
        &self,
        pool: &RedisPool,
        now: Timestamp,
        request: AuthRequest,
    ) -> Result<AuthResponse, EffectError> {
        let effect = request.name();
        let redis = |e: PoolError| e.effect_error(effect);
        Ok(match request {
            AuthRequest::GenerateToken(r) => AuthResponse::GenerateToken(
                self.issue(pool, now, r.user_id, r.claims, r.ttl_seconds, effect)
                    .await?,
            ),
            AuthRequest::ValidateToken(r) => {
                AuthResponse::ValidateToken(match self.verify(&r.token) {
                    Verified::Unknown => TokenValidation::Invalid {
                        reason: "unknown token".to_owned(),
                    },
                    Verified::Ours(claims) => {
                        let revoked = pool
                            .call(Command::new("EXISTS").arg(self.revoked_key(&claims.jti)))
                            .await
                            .map_err(redis)?;
                        if revoked.as_int() == Some(1) {
                            TokenValidation::Invalid {
                                reason: "revoked".to_owned(),
                            }
                        } else if now.unix_micros() >= claims.exp_us {
                            TokenValidation::Expired {
                                expired_at: Timestamp::from_unix_micros(claims.exp_us),
                            }
                        } else {
                            TokenValidation::Valid {
                                user_id: claims.sub,
                                claims: claims.claims,
                            }
                        }
                    }
                })
            }
            AuthRequest::RevokeToken(r) => AuthResponse::RevokeToken(match self.verify(&r.token) {
                Verified::Unknown => false,
                Verified::Ours(claims) => {
                    let first = self.revoke(pool, &claims, effect).await?;
                    first && now.unix_micros() < claims.exp_us
                }
            }),
            AuthRequest::RefreshToken(r) => {
                AuthResponse::RefreshToken(match self.verify(&r.token) {
                    Verified::Unknown => rejected("unknown token"),
                    Verified::Ours(claims) => {
                        let revoked = pool
                            .call(Command::new("EXISTS").arg(self.revoked_key(&claims.jti)))
                            .await
                            .map_err(redis)?;
                        if revoked.as_int() == Some(1) {
                            rejected("revoked")
                        } else if now.unix_micros() >= claims.exp_us {
                            rejected("expired")
                        } else if !self.revoke(pool, &claims, effect).await? {
                            // Another refresh or revocation won the race.
                            rejected("revoked")
                        } else {
                            RefreshOutcome::Refreshed {
                                token: self
                                    .issue(pool, now, claims.sub, claims.claims, claims.ttl, effect)
                                    .await?,
                            }
                        }
                    }
                })
            }
            other => {
                return Err(EffectError::new(
                    other.name(),
                    ErrorKind::Protocol,
                    "the token service was handed a request it does not serve",
                )
                .with_retryable(false));
            }
        })
    }

    async fn issue(
        &self,
        pool: &RedisPool,
        now: Timestamp,
        user_id: Uuid,
        claims: BTreeMap<String, String>,
        ttl: u64,
        effect: &'static str,
    ) -> Result<String, EffectError> {
        let mut jti = [0u8; 16];
        crate::entropy::fill_secret(&mut jti).map_err(|e| {
            EffectError::new(
                effect,
                ErrorKind::Unavailable,
                format!("no randomness: {e}"),
            )
        })?;
        let jti: String = jti.iter().map(|b| format!("{b:02x}")).collect();
        let ttl_us = i64::try_from(ttl.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
        let exp_us = now.unix_micros().saturating_add(ttl_us);
        let token_claims = Claims {
            sub: user_id,
            jti: jti.clone(),
            iat: now.unix_micros().div_euclid(1_000_000),
            exp: exp_us.saturating_add(999_999).div_euclid(1_000_000),
            exp_us,
            ttl,
            claims,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &token_claims,
            &self.secret.encoding,
        )
        .map_err(|e| {
            EffectError::new(effect, ErrorKind::Protocol, format!("signing failed: {e}"))
                .with_retryable(false)
        })?;
        if ttl > 0 {
            pool.call(
                Command::new("SET")
                    .arg(self.session_key(&jti))
                    .arg(user_id.to_string())
                    .arg("PXAT")
                    .arg_int(expiry_ms(exp_us, 0)),
            )
            .await
            .map_err(|e| e.effect_error(effect))?;
        }
        Ok(token)
    }

    /// Marks the token revoked; whether this call did it (not an earlier one).
    async fn revoke(
        &self,
        pool: &RedisPool,
        claims: &Claims,
        effect: &'static str,
    ) -> Result<bool, EffectError> {
        let memory = i64::try_from(REVOCATION_MEMORY_SECONDS * 1000).unwrap_or(i64::MAX);
        let set = pool
            .call(
                Command::new("SET")
                    .arg(self.revoked_key(&claims.jti))
                    .arg("1")
                    .arg("NX")
                    .arg("PXAT")
                    .arg_int(expiry_ms(claims.exp_us, memory)),
            )
            .await
            .map_err(|e| e.effect_error(effect))?;
        pool.call(Command::new("DEL").arg(self.session_key(&claims.jti)))
            .await
            .map_err(|e| e.effect_error(effect))?;
        Ok(!matches!(set, Value::Nil))
    }
}

/// The Unix milliseconds of `exp_us` plus `extra_ms`, at least 1 (Redis refuses 0).
fn expiry_ms(exp_us: i64, extra_ms: i64) -> i64 {
    exp_us
        .div_euclid(1000)
        .saturating_add(extra_ms)
        .clamp(1, i64::MAX / 2)
}

fn rejected(reason: &str) -> RefreshOutcome {
    RefreshOutcome::Rejected {
        reason: reason.to_owned(),
    }
}

/// Argon2id over `password` with a fresh salt from the OS.
pub(crate) fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    crate::entropy::fill_secret(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the PHC string `hash`; a malformed hash matches nothing.
pub(crate) fn password_matches(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// The answer to `GetUserByEmail`: the database serves users.
pub(crate) fn user_lookup_unserved(effect: &'static str) -> EffectError {
    EffectError::new(
        effect,
        ErrorKind::Unavailable,
        "users live in the database: the Redis Auth interpreter does not serve \
         GetUserByEmail; look the user up with the Database family",
    )
    .with_retryable(false)
}

/// Shared by every shard.
pub(crate) type SharedTokens = Arc<TokenService>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_hashes_verify_and_differ_and_malformed_hashes_match_nothing() {
        // A space is outside the hash's base64 alphabet, so the password
        // can appear in the hash only if it was copied there: a short
        // password such as "pw" turns up by chance in about one salt in 256.
        let password = "pw with spaces";
        let a = hash_password(password).expect("hashed");
        let b = hash_password(password).expect("hashed");
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "fresh salt each time");
        assert!(password_matches(password, &a));
        assert!(!password_matches("other", &a));
        assert!(!password_matches(password, "not a hash"));
        assert!(!a.contains(password), "{a}");
    }

    #[test]
    fn the_secret_is_never_shown_and_short_keys_are_refused() {
        assert!(JwtSecret::new(b"short").is_none());
        let secret = JwtSecret::new(b"0123456789abcdef0123456789abcdef").expect("32 bytes");
        assert_eq!(format!("{secret:?}"), "JwtSecret(<redacted>)");
    }
}
