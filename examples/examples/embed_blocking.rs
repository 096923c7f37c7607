//! Embedding effectful without any async runtime: a program whose effects are answered
//! by a plain blocking loop using only `std` (no tokio anywhere in this dependency tree).
//!
//! The program signs a user up: it hashes a password, creates the user, caches the
//! profile, and reads it back — retrying the flaky cache with a backoff schedule, and
//! waiting in real time (`std::thread::sleep`) between attempts.
//!
//! Run: `cargo run -p effectful-examples --example embed_blocking`

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use effectful::effect::*;
use effectful::{EffectError, EngineConfig, Fx, Handler, Schedule, Time, Timestamp, run_async};
use uuid::Uuid;

/// The program: pure, it only describes what it needs.
async fn sign_up(fx: Fx, email: &str, name: &str) -> Result<String, EffectError> {
    let password_hash = fx
        .perform(HashPassword {
            password: "correct horse".into(),
        })
        .await?;
    let user = match fx
        .perform(CreateUser {
            email: email.into(),
            name: name.into(),
            password_hash,
        })
        .await?
    {
        CreateUserOutcome::Created(user) => user,
        CreateUserOutcome::EmailTaken { email } => return Ok(format!("{email} is taken")),
    };
    let profile = ProfileData {
        user_id: user.id,
        name: user.name.clone(),
        email: user.email.clone(),
    };
    // The cache fails now and then: retry up to 5 times, 10 ms, 20 ms, 40 ms, ...
    let retry = Schedule::exponential(Duration::from_millis(10)).recurs(5);
    fx.retry(
        &retry,
        PutCachedProfile {
            user_id: user.id,
            profile,
            ttl_seconds: 600,
        },
    )
    .await?;
    let cached = fx.perform(GetCachedProfile { user_id: user.id }).await?;
    let at = fx.perform(GetCurrentTime {}).await?;
    Ok(match cached {
        CacheLookup::Hit {
            value,
            ttl_remaining,
        } => {
            format!(
                "{} signed up at {at}; profile cached for {ttl_remaining:?} s",
                value.name
            )
        }
        CacheLookup::Miss { reason, .. } => {
            format!("{} signed up at {at}; cache miss ({reason:?})", user.name)
        }
    })
}

/// The interpreters: ordinary blocking code over a HashMap.
struct Blocking {
    users: HashMap<Uuid, User>,
    cache: HashMap<String, Vec<u8>>,
    started: Instant,
    cache_calls: u32,
}

impl Handler for Blocking {
    fn handle(&mut self, request: Request) -> Result<Response, EffectError> {
        let name = request.name();
        Ok(match request {
            Request::Auth(AuthRequest::HashPassword(HashPassword { password })) => Response::Auth(
                AuthResponse::HashPassword(format!("plain${}", password.len())),
            ),
            Request::Database(DatabaseRequest::CreateUser(c)) => {
                if self.users.values().any(|u| u.email == c.email) {
                    Response::Database(DatabaseResponse::CreateUser(
                        CreateUserOutcome::EmailTaken { email: c.email },
                    ))
                } else {
                    let user = User {
                        id: Uuid::from_u128(self.users.len() as u128 + 1),
                        email: c.email,
                        name: c.name,
                    };
                    self.users.insert(user.id, user.clone());
                    Response::Database(DatabaseResponse::CreateUser(CreateUserOutcome::Created(
                        user,
                    )))
                }
            }
            Request::Cache(CacheRequest::PutCachedProfile(put)) => {
                self.cache_calls += 1;
                if self.cache_calls < 3 {
                    return Err(EffectError::connection_lost(name, "cache restarting"));
                }
                let json = format!("{}|{}", put.profile.name, put.profile.email);
                self.cache
                    .insert(profile_key(put.user_id), json.into_bytes());
                Response::Cache(CacheResponse::PutCachedProfile(()))
            }
            Request::Cache(CacheRequest::GetCachedProfile(GetCachedProfile { user_id })) => {
                let key = profile_key(user_id);
                let lookup = match (self.cache.get(&key), self.users.get(&user_id)) {
                    (Some(_), Some(user)) => CacheLookup::Hit {
                        value: ProfileData {
                            user_id,
                            name: user.name.clone(),
                            email: user.email.clone(),
                        },
                        ttl_remaining: Some(600),
                    },
                    _ => CacheLookup::Miss {
                        key,
                        reason: MissReason::NotFound,
                    },
                };
                Response::Cache(CacheResponse::GetCachedProfile(lookup))
            }
            Request::System(SystemRequest::GetCurrentTime(_)) => {
                let micros = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_micros())
                    .unwrap_or(0);
                Response::System(SystemResponse::GetCurrentTime(Timestamp::from_unix_micros(
                    micros as i64,
                )))
            }
            other => {
                return Err(EffectError::unhandled(
                    other.name(),
                    vec![
                        "Auth".into(),
                        "Database".into(),
                        "Cache".into(),
                        "System".into(),
                    ],
                ));
            }
        })
    }

    /// Real time: actually wait for the program's timers.
    fn wait_until(&mut self, now: Time, deadline: Time) -> Time {
        std::thread::sleep(deadline - now);
        self.now(deadline)
    }

    fn now(&mut self, _virtual_now: Time) -> Time {
        Time::from_nanos(effectful::duration_nanos(self.started.elapsed()))
    }
}

fn main() {
    let mut handler = Blocking {
        users: HashMap::new(),
        cache: HashMap::new(),
        started: Instant::now(),
        cache_calls: 0,
    };
    let result = run_async(
        |fx| sign_up(fx, "ada@example.com", "Ada"),
        EngineConfig::default(),
        &mut handler,
    );
    match result {
        Ok(Ok(report)) => println!("{report} (after {} cache attempts)", handler.cache_calls),
        Ok(Err(error)) => {
            eprintln!("program failed: {error}");
            std::process::exit(1);
        }
        Err(error) => {
            eprintln!("program did not finish: {error}");
            std::process::exit(1);
        }
    }
}
