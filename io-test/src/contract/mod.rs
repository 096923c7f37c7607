//! Contracts that every driver keeps, written once and run against each driver (the
//! simulator here, the tokio runtime in `effectful-tokio`'s tests).
//!
//! # Cancellation
//! When a program gives up an effect (a timeout, the loser of a race, the program's
//! end), the driver hears a cancellation. An effect the service has not started yet
//! (still queued, still on its way) is dropped and never performed; one already in
//! flight may still complete, and its answer is then stale: dropped, never seen by the
//! program. [`check_cancellation`] pins this down with four programs run one after
//! another against a Cache service whose requests take one `leg` to arrive (then they
//! are applied) and one more `leg` for the answer to come back:
//! 1. a write given up long before it arrives: times out, and is never applied;
//! 2. a write given up after it was applied but before its answer came: times out,
//!    stays applied, and its answer is the one stale answer of the run;
//! 3. a write given enough time: succeeds;
//! 4. a reader: the first write is missing, the other two are there.
//!
//! # Database
//! [`check_database`] runs the same cases against the in-memory `FakeDatabase` and
//! against a real PostgreSQL interpreter: each case is a program on a fresh, empty
//! database whose observations (outcomes, error codes, orderings; never ids or
//! timestamps, which differ between drivers) must match what the case expects.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use effectful::effect::{CacheLookup, GetCachedValue, PutCachedValue};
use effectful::{Fx, ProgramError};

/// A program of the contract: what it saw, one word per observation.
pub type ContractProgram = Box<dyn FnOnce(Fx) -> Pin<Box<dyn Future<Output = Vec<String>>>> + Send>;

/// What a driver reports after running the contract's programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractRun {
    /// Each program's result, in the order given.
    pub results: Vec<Result<Vec<String>, ProgramError>>,
    /// Answers that arrived after their program stopped waiting (dropped).
    pub stale_answers: u64,
}

/// A driver under test for [`check_cancellation`].
pub trait CancellationDriver {
    /// Runs `programs` one after another (each once the previous one has ended)
    /// against a Cache service whose requests take `leg` to arrive, are then applied,
    /// and whose answers take `leg` more to come back.
    fn run_in_turn(&mut self, leg: Duration, programs: Vec<ContractProgram>) -> ContractRun;
}

fn put(key: &str) -> PutCachedValue {
    PutCachedValue {
        key: key.into(),
        value: b"written".to_vec(),
        ttl_seconds: None,
    }
}

/// A write of `key` bounded by `limit`: `ok` or `timeout`.
fn write(key: &'static str, limit: Duration) -> ContractProgram {
    Box::new(move |fx: Fx| {
        Box::pin(async move {
            let word = match fx.perform_timeout(put(key), limit).await {
                Ok(()) => "ok".to_string(),
                Err(e) if e.kind == effectful::ErrorKind::Timeout => "timeout".to_string(),
                Err(e) => format!("error: {e}"),
            };
            vec![word]
        })
    })
}

/// Reads each key: `hit` or `miss`.
fn read(keys: &'static [&'static str]) -> ContractProgram {
    Box::new(move |fx: Fx| {
        Box::pin(async move {
            let mut seen = Vec::new();
            for key in keys {
                let word = match fx.perform(GetCachedValue { key: (*key).into() }).await {
                    Ok(CacheLookup::Hit { .. }) => "hit".to_string(),
                    Ok(CacheLookup::Miss { .. }) => "miss".to_string(),
                    Err(e) => format!("error: {e}"),
                };
                seen.push(word);
            }
            seen
        })
    })
}

/// Runs the cancellation contract on `driver` with requests taking `leg` each way;
/// panics with what differed.
pub fn check_cancellation(driver: &mut impl CancellationDriver, leg: Duration) {
    let programs = vec![
        write("queued", leg / 10),
        write("in-flight", leg * 3 / 2),
        write("answered", leg * 4),
        read(&["queued", "in-flight", "answered"]),
    ];
    let run = driver.run_in_turn(leg, programs);
    let words = |w: &[&str]| Ok(w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        run.results,
        vec![
            words(&["timeout"]),
            words(&["timeout"]),
            words(&["ok"]),
            words(&["miss", "hit", "hit"]),
        ],
        "queued write dropped, in-flight write applied but its answer unseen, \
         a write given time answered, and the reader sees exactly the applied writes"
    );
    assert_eq!(
        run.stale_answers, 1,
        "exactly one answer arrives stale: the in-flight write's"
    );
}

mod commands;
mod database;
mod messaging;
mod storage;

pub use commands::check_cache_commands;
pub use database::{DatabaseDriver, check_database, database_cases};
pub use messaging::{ACK_TIMEOUT, MessagingDriver, check_messaging};
pub use storage::{StorageDriver, check_storage, storage_cases};
/// A driver under test for the family contracts ([`check_cache`], [`check_auth`]).
pub trait ServiceDriver {
    /// Runs `program` alone, to its end, against the driver's Cache and Auth
    /// services (fresh keys for each run) with System for the time.
    fn run(&mut self, program: ContractProgram) -> Result<Vec<String>, ProgramError>;
}

fn lookup_word<T>(lookup: &CacheLookup<T>, show: impl Fn(&T) -> String) -> String {
    match lookup {
        CacheLookup::Hit {
            value,
            ttl_remaining,
        } => match ttl_remaining {
            Some(ttl) => format!("hit {} ttl {ttl}", show(value)),
            None => format!("hit {} no ttl", show(value)),
        },
        CacheLookup::Miss { reason, .. } => format!("miss {reason:?}"),
    }
}

fn error_word(e: &effectful::EffectError) -> String {
    format!(
        "error {} {}",
        e.kind,
        if e.retryable { "retryable" } else { "final" }
    )
}

/// The Cache contract: misses told apart (not found, expired once then not found),
/// times to live (whole seconds, rounded up), invalidation, profiles as JSON under
/// `profile:{id}`, a refused time to live of 0. Takes about 1.5 s of driver time.
pub fn check_cache(driver: &mut impl ServiceDriver) {
    use effectful::effect::{
        DeleteCachedProfile, GetCachedProfile, InvalidateCache, ProfileData, PutCachedProfile,
        profile_key,
    };
    let program: ContractProgram = Box::new(|fx: Fx| {
        Box::pin(async move {
            let mut seen = Vec::new();
            let text = |v: &Vec<u8>| String::from_utf8_lossy(v).into_owned();
            let get = |key: &str| GetCachedValue { key: key.into() };
            let put = |key: &str, ttl| PutCachedValue {
                key: key.into(),
                value: key.as_bytes().to_vec(),
                ttl_seconds: ttl,
            };
            macro_rules! see {
                ($effect:expr, $word:expr) => {
                    seen.push(match fx.perform($effect).await {
                        Ok(v) => $word(&v),
                        Err(e) => error_word(&e),
                    })
                };
            }
            see!(get("short"), |l| lookup_word(l, text));
            see!(put("short", Some(1)), |_: &()| "put".to_owned());
            see!(put("long", Some(100)), |_: &()| "put".to_owned());
            see!(put("forever", None), |_: &()| "put".to_owned());
            see!(get("short"), |l| lookup_word(l, text));
            see!(get("long"), |l| lookup_word(l, text));
            see!(get("forever"), |l| lookup_word(l, text));
            see!(put("zero", Some(0)), |_: &()| "put".to_owned());
            let _ = fx.sleep(Duration::from_millis(1500)).await;
            see!(get("short"), |l| lookup_word(l, text));
            see!(get("short"), |l| lookup_word(l, text));
            see!(get("forever"), |l| lookup_word(l, text));
            see!(InvalidateCache { key: "long".into() }, |b: &bool| format!(
                "invalidated {b}"
            ));
            see!(InvalidateCache { key: "long".into() }, |b: &bool| format!(
                "invalidated {b}"
            ));
            see!(get("long"), |l| lookup_word(l, text));
            let user_id = uuid::Uuid::from_u128(42);
            let profile = ProfileData {
                user_id,
                name: "Ada".into(),
                email: "ada@example.com".into(),
            };
            see!(
                PutCachedProfile {
                    user_id,
                    profile: profile.clone(),
                    ttl_seconds: 300
                },
                |_: &()| "put profile".to_owned()
            );
            see!(GetCachedProfile { user_id }, |l| lookup_word(
                l,
                |p: &ProfileData| p.name.clone()
            ));
            see!(get(&profile_key(user_id)), |l| lookup_word(l, text));
            see!(DeleteCachedProfile { user_id }, |b: &bool| format!(
                "deleted {b}"
            ));
            see!(GetCachedProfile { user_id }, |l| lookup_word(
                l,
                |p: &ProfileData| p.name.clone()
            ));
            seen
        })
    });
    let json = r#"{"user_id":"00000000-0000-0000-0000-00000000002a","name":"Ada","email":"ada@example.com"}"#;
    let expected: Vec<String> = [
        "miss NotFound",
        "put",
        "put",
        "put",
        "hit short ttl 1",
        "hit long ttl 100",
        "hit forever no ttl",
        "error service error ERR final",
        "miss Expired",
        "miss NotFound",
        "hit forever no ttl",
        "invalidated true",
        "invalidated false",
        "miss NotFound",
        "put profile",
        "hit Ada ttl 300",
        &format!("hit {json} ttl 300"),
        "deleted true",
        "miss NotFound",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(driver.run(program), Ok(expected));
}

/// The Auth contract: tokens validate with their user and claims, expire at their
/// time to live (and say when), are revoked (revocation wins over expiry), refresh
/// into a new token revoking the old, refuse what they did not issue; passwords hash
/// to distinct strings that verify. Takes about 1.2 s of driver time.
pub fn check_auth(driver: &mut impl ServiceDriver) {
    use effectful::effect::{
        GenerateToken, GetCurrentTime, HashPassword, RefreshOutcome, RefreshToken, RevokeToken,
        TokenValidation, ValidatePassword, ValidateToken,
    };
    use std::collections::BTreeMap;
    let program: ContractProgram = Box::new(|fx: Fx| {
        Box::pin(async move {
            let mut seen = Vec::new();
            let user = uuid::Uuid::from_u128(7);
            let claims = BTreeMap::from([("role".to_owned(), "admin".to_owned())]);
            let generate = |ttl| GenerateToken {
                user_id: user,
                claims: claims.clone(),
                ttl_seconds: ttl,
            };
            let validation = |v: &TokenValidation| match v {
                TokenValidation::Valid { user_id, claims } => {
                    format!("valid {} {claims:?}", *user_id == user)
                }
                TokenValidation::Expired { .. } => "expired".to_owned(),
                TokenValidation::Invalid { reason } => format!("invalid {reason}"),
            };
            let refresh = |r: &RefreshOutcome| match r {
                RefreshOutcome::Refreshed { .. } => "refreshed".to_owned(),
                RefreshOutcome::Rejected { reason } => format!("rejected {reason}"),
            };
            macro_rules! go {
                ($effect:expr) => {
                    match fx.perform($effect).await {
                        Ok(v) => v,
                        Err(e) => {
                            seen.push(error_word(&e));
                            return seen;
                        }
                    }
                };
            }
            let before = go!(GetCurrentTime {});
            let short = go!(generate(1));
            let long = go!(generate(100));
            seen.push(validation(&go!(ValidateToken {
                token: short.clone()
            })));
            seen.push(format!(
                "revoked {}",
                go!(RevokeToken {
                    token: long.clone()
                })
            ));
            seen.push(format!(
                "revoked {}",
                go!(RevokeToken {
                    token: long.clone()
                })
            ));
            seen.push(validation(&go!(ValidateToken {
                token: long.clone()
            })));
            seen.push(refresh(&go!(RefreshToken {
                token: long.clone()
            })));
            let fresh = go!(generate(100));
            let renewed = match go!(RefreshToken {
                token: fresh.clone()
            }) {
                RefreshOutcome::Refreshed { token } => token,
                other => {
                    seen.push(refresh(&other));
                    return seen;
                }
            };
            seen.push(format!("new token {}", renewed != fresh));
            seen.push(validation(&go!(ValidateToken { token: renewed })));
            seen.push(validation(&go!(ValidateToken { token: fresh })));
            seen.push(validation(&go!(ValidateToken {
                token: "not-a-token".into()
            })));
            seen.push(refresh(&go!(RefreshToken {
                token: "not-a-token".into()
            })));
            seen.push(format!(
                "revoked {}",
                go!(RevokeToken {
                    token: "not-a-token".into()
                })
            ));
            let _ = fx.sleep(Duration::from_millis(1200)).await;
            match go!(ValidateToken {
                token: short.clone()
            }) {
                TokenValidation::Expired { expired_at } => {
                    let after = expired_at.unix_micros() - before.unix_micros();
                    // Issued just after `before`, for one second. A real driver reads
                    // the OS wall clock for `GetCurrentTime` and its runtime clock
                    // (plus the wall instant of its epoch) for expiry: allow 10 ms
                    // of disagreement between the two.
                    seen.push(format!(
                        "expired one second after issue {}",
                        (990_000..1_500_000).contains(&after)
                    ));
                }
                other => seen.push(validation(&other)),
            }
            seen.push(refresh(&go!(RefreshToken {
                token: short.clone()
            })));
            seen.push(format!(
                "revoked {}",
                go!(RevokeToken {
                    token: short.clone()
                })
            ));
            seen.push(validation(&go!(ValidateToken { token: short })));
            let a = go!(HashPassword {
                password: "correct horse".into()
            });
            let b = go!(HashPassword {
                password: "correct horse".into()
            });
            seen.push(format!(
                "hashes differ {} hide the password {}",
                a != b,
                !a.contains("correct horse")
            ));
            for (password, hash) in [
                ("correct horse", a.clone()),
                ("wrong horse", a),
                ("correct horse", "malformed".to_owned()),
            ] {
                seen.push(format!(
                    "matches {}",
                    go!(ValidatePassword {
                        password: password.into(),
                        password_hash: hash
                    })
                ));
            }
            seen
        })
    });
    let expected: Vec<String> = [
        "valid true {\"role\": \"admin\"}",
        "revoked true",
        "revoked false",
        "invalid revoked",
        "rejected revoked",
        "new token true",
        "valid true {\"role\": \"admin\"}",
        "invalid revoked",
        "invalid unknown token",
        "rejected unknown token",
        "revoked false",
        "expired one second after issue true",
        "rejected expired",
        "revoked false",
        "invalid revoked",
        "hashes differ true hide the password true",
        "matches true",
        "matches false",
        "matches false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(driver.run(program), Ok(expected));
}
