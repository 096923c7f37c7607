//! The seed-range helper for users' tests, the Script assertion helper and the
//! `uuid` re-export.

use effectful::effect::PutCachedValue;
use effectful_test::Script;
use effectful_test::seed::{SEED_VAR, run_seeds, try_seeds};
use effectful_test::uuid::Uuid;

#[test]
fn try_seeds_stops_at_the_first_failing_seed_and_names_the_rerun_command() {
    let mut seen = Vec::new();
    let failure = try_seeds(0..100, "cargo test -p app -- t --exact", |seed| {
        seen.push(seed);
        if seed == 7 {
            Err("seven is unlucky")
        } else {
            Ok(())
        }
    })
    .expect_err("seed 7 fails");
    assert_eq!(seen, (0..=7).collect::<Vec<_>>());
    assert_eq!(failure.seed, 7);
    assert_eq!(
        failure.to_string(),
        format!(
            "seed 7 failed: seven is unlucky\nreproduce with: {SEED_VAR}=7 cargo test -p app -- t --exact"
        )
    );
}

#[test]
fn run_seeds_runs_every_seed_of_its_range_when_no_seed_is_pinned() {
    // The test runner may pin one seed through EFFECTFUL_SEED; then exactly one runs.
    let pinned = std::env::var(SEED_VAR).is_ok();
    let ran = run_seeds(0..50, |_| Ok::<(), String>(()));
    assert_eq!(ran, if pinned { 1 } else { 50 });
}

#[test]
fn run_seeds_panics_with_the_command_that_reruns_this_very_test() {
    if std::env::var(SEED_VAR).is_ok() {
        return assert_eq!(run_seeds(0..1, |_| Ok::<(), String>(())), 1);
    }
    let panic =
        std::panic::catch_unwind(|| run_seeds(3..4, |_| Err("broken"))).expect_err("seed 3 fails");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.ends_with(&format!(
            "{SEED_VAR}=3 cargo test -p effectful-test -- run_seeds_panics_with_the_command_that_reruns_this_very_test --exact"
        )),
        "{message}"
    );
}

#[test]
fn a_failing_script_assertion_reads_like_the_failure_display_not_a_debug_dump() {
    let script = Script::new().expect(put(Uuid::from_u128(1))).respond(());
    let panic = std::panic::catch_unwind(|| {
        script.assert_run(|fx| async move { fx.perform(put(Uuid::from_u128(2))).await })
    })
    .expect_err("the program asked for another user");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("--- expected\n+++ got\n"), "{message}");
    assert!(!message.contains("\\n"), "no escaped newlines: {message}");
}

#[test]
fn a_passing_script_assertion_returns_the_programs_value() {
    let id = Uuid::from_u128(1);
    let script = Script::new().expect(put(id)).respond(());
    let done = script.assert_run(|fx| async move { fx.perform(put(id)).await.map(|()| 42) });
    assert_eq!(done, Ok(42));
}

/// A cache write keyed by a UUID (built with the re-exported `uuid`).
fn put(id: Uuid) -> PutCachedValue {
    PutCachedValue {
        key: format!("user/{id}"),
        value: vec![1],
        ttl_seconds: None,
    }
}
