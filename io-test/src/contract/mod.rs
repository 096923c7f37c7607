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

mod database;

pub use database::{DatabaseDriver, check_database, database_cases};
