//! The Auth fake: opaque tokens with expiry and revocation, salted password hashes.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::effect::{
    AuthRequest, AuthResponse, EmailLookup, REVOCATION_MEMORY_SECONDS, RefreshOutcome,
    TokenValidation,
};
use crate::{Rng, Time, Timestamp};
use uuid::Uuid;

use super::{DEFAULT_WALL_EPOCH, FakeDatabase, wall_time};

const TOKEN_PREFIX: &str = "tok_";
const HASH_PREFIX: &str = "fake$";

#[derive(Clone, Debug)]
struct TokenRecord {
    user_id: Uuid,
    claims: BTreeMap<String, String>,
    ttl_seconds: u64,
    expires_at: Time,
    revoked: bool,
}

/// One token as [`FakeAuth::tokens`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken<'a> {
    /// The token.
    pub token: &'a str,
    /// Whose it is.
    pub user_id: Uuid,
    /// Its claims.
    pub claims: &'a BTreeMap<String, String>,
    /// When it expires (simulated time).
    pub expires_at: Time,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// What a token is worth at some time.
enum TokenState<'a> {
    Valid(&'a TokenRecord),
    Expired(Time),
    Revoked,
    Unknown,
}

/// An auth service: opaque tokens kept in a table, and salted password hashes.
///
/// - `GenerateToken` draws an opaque token (`tok_` and 32 hex digits) from the fake's
///   [`Rng`] and remembers its user, claims and expiry (`now + ttl_seconds`; a token
///   is expired from that instant on, as a JWT's `exp`).
/// - `ValidateToken` answers `Valid`, `Expired { expired_at }` (the wall-clock instant
///   `wall_epoch + expiry`), or `Invalid { reason }` with reason `"revoked"` or
///   `"unknown token"`; revocation wins over expiry for
///   [`REVOCATION_MEMORY_SECONDS`] past the expiry, after which a revoked token reads
///   as expired (a real service forgets revocations then).
/// - `RefreshToken` on a valid token issues a new one with the same user, claims and
///   time to live (counted from now) and revokes the old one; an expired, revoked or
///   unknown token is `Rejected` with reason `"expired"`, `"revoked"` or
///   `"unknown token"`.
/// - `RevokeToken` revokes a known token and answers whether it was valid until then.
/// - `HashPassword` answers `fake${salt}${digest}` (16 hex digits each, the salt from
///   the fake's [`Rng`], the digest FNV-1a over salt and password): deterministic for a
///   seed, never the password itself, different for the same password twice.
///   `ValidatePassword` recomputes it; a malformed hash matches nothing.
/// - `GetUserByEmail` reads the users of the [`FakeDatabase`] passed to
///   [`handle`](FakeAuth::handle), so auth and database never disagree.
#[derive(Clone, Debug)]
pub struct FakeAuth {
    rng: Rng,
    wall_epoch: Timestamp,
    tokens: BTreeMap<String, TokenRecord>,
}

impl FakeAuth {
    /// No tokens yet; tokens and salts come from `rng`.
    pub fn new(rng: Rng) -> FakeAuth {
        FakeAuth {
            rng,
            wall_epoch: DEFAULT_WALL_EPOCH,
            tokens: BTreeMap::new(),
        }
    }

    /// The same service with `wall_epoch` as the wall-clock instant of [`Time::ZERO`].
    pub fn with_wall_epoch(mut self, wall_epoch: Timestamp) -> FakeAuth {
        self.wall_epoch = wall_epoch;
        self
    }

    /// Answers one Auth request at simulated time `now`; `GetUserByEmail` looks in
    /// `database`.
    pub fn handle(
        &mut self,
        now: Time,
        request: AuthRequest,
        database: &FakeDatabase,
    ) -> AuthResponse {
        match request {
            AuthRequest::ValidateToken(r) => {
                AuthResponse::ValidateToken(self.validate(now, &r.token))
            }
            AuthRequest::GenerateToken(r) => {
                AuthResponse::GenerateToken(self.issue(now, r.user_id, r.claims, r.ttl_seconds))
            }
            AuthRequest::RefreshToken(r) => AuthResponse::RefreshToken(self.refresh(now, &r.token)),
            AuthRequest::RevokeToken(r) => AuthResponse::RevokeToken(self.revoke(now, &r.token)),
            AuthRequest::GetUserByEmail(r) => {
                AuthResponse::GetUserByEmail(match database.user_by_email(&r.email) {
                    Some(user) => EmailLookup::Found(user.clone()),
                    None => EmailLookup::NotFound { email: r.email },
                })
            }
            AuthRequest::ValidatePassword(r) => {
                AuthResponse::ValidatePassword(password_matches(&r.password, &r.password_hash))
            }
            AuthRequest::HashPassword(r) => {
                AuthResponse::HashPassword(self.hash_password(&r.password))
            }
        }
    }

    /// Issues a token for `user_id` (as `GenerateToken` does), for setting a
    /// scenario up.
    pub fn issue(
        &mut self,
        now: Time,
        user_id: Uuid,
        claims: BTreeMap<String, String>,
        ttl_seconds: u64,
    ) -> String {
        let token = loop {
            let token = format!(
                "{TOKEN_PREFIX}{:016x}{:016x}",
                self.rng.next_u64(),
                self.rng.next_u64()
            );
            if !self.tokens.contains_key(&token) {
                break token;
            }
        };
        let expires_at = now.saturating_add(Duration::from_secs(ttl_seconds));
        self.tokens.insert(
            token.clone(),
            TokenRecord {
                user_id,
                claims,
                ttl_seconds,
                expires_at,
                revoked: false,
            },
        );
        token
    }

    /// What `ValidateToken` says about `token` at `now`.
    pub fn validate(&self, now: Time, token: &str) -> TokenValidation {
        match self.state(now, token) {
            TokenState::Valid(record) => TokenValidation::Valid {
                user_id: record.user_id,
                claims: record.claims.clone(),
            },
            TokenState::Expired(at) => TokenValidation::Expired {
                expired_at: wall_time(self.wall_epoch, at),
            },
            TokenState::Revoked => TokenValidation::Invalid {
                reason: "revoked".to_owned(),
            },
            TokenState::Unknown => TokenValidation::Invalid {
                reason: "unknown token".to_owned(),
            },
        }
    }

    /// Every token issued, in token order, revoked and expired ones included.
    pub fn tokens(&self) -> impl Iterator<Item = IssuedToken<'_>> {
        self.tokens.iter().map(|(token, r)| IssuedToken {
            token,
            user_id: r.user_id,
            claims: &r.claims,
            expires_at: r.expires_at,
            revoked: r.revoked,
        })
    }

    /// How many tokens were issued and not revoked (expired ones included).
    pub fn unrevoked_tokens(&self) -> usize {
        self.tokens.values().filter(|t| !t.revoked).count()
    }

    fn state(&self, now: Time, token: &str) -> TokenState<'_> {
        match self.tokens.get(token) {
            None => TokenState::Unknown,
            // A revocation is remembered for a day past the token's expiry.
            Some(record)
                if record.revoked
                    && now
                        < record
                            .expires_at
                            .saturating_add(Duration::from_secs(REVOCATION_MEMORY_SECONDS)) =>
            {
                TokenState::Revoked
            }
            Some(record) if now >= record.expires_at => TokenState::Expired(record.expires_at),
            Some(record) => TokenState::Valid(record),
        }
    }

    fn refresh(&mut self, now: Time, token: &str) -> RefreshOutcome {
        let reason = match self.state(now, token) {
            TokenState::Valid(record) => {
                let (user_id, claims, ttl) =
                    (record.user_id, record.claims.clone(), record.ttl_seconds);
                if let Some(old) = self.tokens.get_mut(token) {
                    old.revoked = true;
                }
                return RefreshOutcome::Refreshed {
                    token: self.issue(now, user_id, claims, ttl),
                };
            }
            TokenState::Expired(_) => "expired",
            TokenState::Revoked => "revoked",
            TokenState::Unknown => "unknown token",
        };
        RefreshOutcome::Rejected {
            reason: reason.to_owned(),
        }
    }

    fn revoke(&mut self, now: Time, token: &str) -> bool {
        let was_valid = matches!(self.state(now, token), TokenState::Valid(_));
        if let Some(record) = self.tokens.get_mut(token) {
            record.revoked = true;
        }
        was_valid
    }

    fn hash_password(&mut self, password: &str) -> String {
        let salt = self.rng.next_u64();
        format!("{HASH_PREFIX}{salt:016x}${:016x}", digest(salt, password))
    }
}

/// Whether `password` hashes to `password_hash` (a `fake$salt$digest` string).
fn password_matches(password: &str, password_hash: &str) -> bool {
    let Some((salt, expected)) = password_hash
        .strip_prefix(HASH_PREFIX)
        .and_then(|rest| rest.split_once('$'))
    else {
        return false;
    };
    let parse = |hex: &str| {
        (hex.len() == 16)
            .then(|| u64::from_str_radix(hex, 16).ok())
            .flatten()
    };
    match (parse(salt), parse(expected)) {
        (Some(salt), Some(expected)) => digest(salt, password) == expected,
        _ => false,
    }
}

/// FNV-1a, 64 bits, over the salt's bytes then the password's. Not for real secrets.
fn digest(salt: u64, password: &str) -> u64 {
    salt.to_le_bytes()
        .iter()
        .chain(password.as_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::{
        CreateUserOutcome, GenerateToken, GetUserByEmail, HashPassword, RefreshToken, RevokeToken,
        ValidatePassword, ValidateToken,
    };

    fn auth() -> FakeAuth {
        FakeAuth::new(Rng::from_seed(5))
    }

    fn db() -> FakeDatabase {
        FakeDatabase::new(Rng::from_seed(6))
    }

    fn claims() -> BTreeMap<String, String> {
        BTreeMap::from([("role".to_owned(), "admin".to_owned())])
    }

    fn generate(auth: &mut FakeAuth, now: Time, ttl_seconds: u64) -> String {
        let request = AuthRequest::GenerateToken(GenerateToken {
            user_id: Uuid::from_u128(1),
            claims: claims(),
            ttl_seconds,
        });
        match auth.handle(now, request, &db()) {
            AuthResponse::GenerateToken(token) => token,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn validate(auth: &mut FakeAuth, now: Time, token: &str) -> TokenValidation {
        match auth.handle(
            now,
            AuthRequest::ValidateToken(ValidateToken {
                token: token.into(),
            }),
            &db(),
        ) {
            AuthResponse::ValidateToken(validation) => validation,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn refresh(auth: &mut FakeAuth, now: Time, token: &str) -> RefreshOutcome {
        match auth.handle(
            now,
            AuthRequest::RefreshToken(RefreshToken {
                token: token.into(),
            }),
            &db(),
        ) {
            AuthResponse::RefreshToken(outcome) => outcome,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn revoke(auth: &mut FakeAuth, now: Time, token: &str) -> bool {
        match auth.handle(
            now,
            AuthRequest::RevokeToken(RevokeToken {
                token: token.into(),
            }),
            &db(),
        ) {
            AuthResponse::RevokeToken(was_valid) => was_valid,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn invalid(reason: &str) -> TokenValidation {
        TokenValidation::Invalid {
            reason: reason.into(),
        }
    }

    #[test]
    fn token_is_opaque_and_valid_with_its_user_and_claims_until_expiry() {
        let mut auth = auth();
        let token = generate(&mut auth, Time::from_secs(10), 60);
        assert!(token.starts_with("tok_") && token.len() == 36, "{token}");
        assert!(!token.contains(&Uuid::from_u128(1).to_string()));
        let valid = TokenValidation::Valid {
            user_id: Uuid::from_u128(1),
            claims: claims(),
        };
        assert_eq!(
            validate(&mut auth, Time::from_nanos(69_999_999_999), &token),
            valid
        );
        let expired = validate(&mut auth, Time::from_secs(70), &token);
        assert_eq!(
            expired,
            TokenValidation::Expired {
                expired_at: wall_time(DEFAULT_WALL_EPOCH, Time::from_secs(70))
            }
        );
        assert_ne!(generate(&mut auth, Time::ZERO, 60), token);
    }

    #[test]
    fn token_unknown_or_revoked_is_invalid_with_its_reason() {
        let mut auth = auth();
        assert_eq!(
            validate(&mut auth, Time::ZERO, "tok_nope"),
            invalid("unknown token")
        );
        let token = generate(&mut auth, Time::ZERO, 60);
        assert!(revoke(&mut auth, Time::ZERO, &token));
        assert_eq!(validate(&mut auth, Time::ZERO, &token), invalid("revoked"));
        // Revocation wins over expiry.
        assert_eq!(
            validate(&mut auth, Time::from_secs(100), &token),
            invalid("revoked")
        );
    }

    #[test]
    fn token_revoke_says_whether_it_was_valid() {
        let mut auth = auth();
        let token = generate(&mut auth, Time::ZERO, 60);
        assert!(revoke(&mut auth, Time::ZERO, &token));
        assert!(!revoke(&mut auth, Time::ZERO, &token));
        assert!(!revoke(&mut auth, Time::ZERO, "tok_unknown"));
        let short = generate(&mut auth, Time::ZERO, 1);
        assert!(!revoke(&mut auth, Time::from_secs(2), &short));
        assert_eq!(auth.unrevoked_tokens(), 0);
    }

    #[test]
    fn token_refresh_issues_a_new_token_with_the_same_ttl_and_revokes_the_old() {
        let mut auth = auth();
        let old = generate(&mut auth, Time::ZERO, 60);
        let RefreshOutcome::Refreshed { token: new } =
            refresh(&mut auth, Time::from_secs(50), &old)
        else {
            panic!("expected a refresh");
        };
        assert_ne!(new, old);
        assert_eq!(
            validate(&mut auth, Time::from_secs(50), &old),
            invalid("revoked")
        );
        let valid = TokenValidation::Valid {
            user_id: Uuid::from_u128(1),
            claims: claims(),
        };
        assert_eq!(validate(&mut auth, Time::from_secs(109), &new), valid);
        assert!(matches!(
            validate(&mut auth, Time::from_secs(110), &new),
            TokenValidation::Expired { .. }
        ));
    }

    #[test]
    fn token_refresh_of_expired_revoked_or_unknown_is_rejected() {
        let mut auth = auth();
        let rejected = |reason: &str| RefreshOutcome::Rejected {
            reason: reason.into(),
        };
        let expired = generate(&mut auth, Time::ZERO, 5);
        assert_eq!(
            refresh(&mut auth, Time::from_secs(5), &expired),
            rejected("expired")
        );
        let revoked = generate(&mut auth, Time::ZERO, 5);
        revoke(&mut auth, Time::ZERO, &revoked);
        assert_eq!(
            refresh(&mut auth, Time::ZERO, &revoked),
            rejected("revoked")
        );
        assert_eq!(
            refresh(&mut auth, Time::ZERO, "garbage"),
            rejected("unknown token")
        );
        // A refreshed token cannot be refreshed again.
        let once = generate(&mut auth, Time::ZERO, 5);
        assert!(matches!(
            refresh(&mut auth, Time::ZERO, &once),
            RefreshOutcome::Refreshed { .. }
        ));
        assert_eq!(refresh(&mut auth, Time::ZERO, &once), rejected("revoked"));
    }

    #[test]
    fn password_hash_is_salted_and_validates_only_the_right_password() {
        let mut auth = auth();
        let hash = |auth: &mut FakeAuth, password: &str| match auth.handle(
            Time::ZERO,
            AuthRequest::HashPassword(HashPassword {
                password: password.into(),
            }),
            &db(),
        ) {
            AuthResponse::HashPassword(hash) => hash,
            other => panic!("unexpected {other:?}"),
        };
        let check = |auth: &mut FakeAuth, password: &str, password_hash: &str| {
            let request = ValidatePassword {
                password: password.into(),
                password_hash: password_hash.into(),
            };
            auth.handle(Time::ZERO, AuthRequest::ValidatePassword(request), &db())
                == AuthResponse::ValidatePassword(true)
        };
        let first = hash(&mut auth, "secret");
        let second = hash(&mut auth, "secret");
        assert!(
            first.starts_with("fake$") && !first.contains("secret"),
            "{first}"
        );
        assert_ne!(first, second, "each hash has its own salt");
        assert!(check(&mut auth, "secret", &first));
        assert!(check(&mut auth, "secret", &second));
        assert!(!check(&mut auth, "Secret", &first));
        for malformed in [
            "",
            "secret",
            "fake$",
            "fake$zz$zz",
            "fake$0000000000000000",
            "bcrypt$0000000000000000$0000000000000000",
        ] {
            assert!(!check(&mut auth, "secret", malformed), "{malformed}");
        }
        // The same seed hashes the same way.
        assert_eq!(hash(&mut FakeAuth::new(Rng::from_seed(5)), "secret"), first);
    }

    #[test]
    fn user_by_email_reads_the_database() {
        let mut auth = auth();
        let mut db = db();
        let CreateUserOutcome::Created(user) =
            db.create_user("a@x.io".into(), "A".into(), "h".into())
        else {
            panic!("expected a user");
        };
        let lookup = |auth: &mut FakeAuth, db: &FakeDatabase, email: &str| {
            auth.handle(
                Time::ZERO,
                AuthRequest::GetUserByEmail(GetUserByEmail {
                    email: email.into(),
                }),
                db,
            )
        };
        assert_eq!(
            lookup(&mut auth, &db, "a@x.io"),
            AuthResponse::GetUserByEmail(EmailLookup::Found(user))
        );
        assert_eq!(
            lookup(&mut auth, &db, "b@x.io"),
            AuthResponse::GetUserByEmail(EmailLookup::NotFound {
                email: "b@x.io".into()
            })
        );
    }
}
