//! Property tests: random programs on one engine, driven by a random driver, keep every
//! guarantee written on [`Engine`].
//!
//! A case is one to five random programs — async trees of sequence, join, race,
//! timeout, retry, sleep, effects and the odd foreign future, or hand-written step
//! lists — an engine seed and program timeout, and a list of driver choices: which
//! outstanding request to answer and how (ok, retryable, fatal, wrong type), when to
//! move time and by how much (early, exact, late, the end of time), when to abort a
//! program or move its deadline, when to answer an effect nobody waits for. When the
//! choices run out the driver answers everything `Ok` and jumps to each deadline until
//! every program has finished. A run yields a trace (every input with its outcome,
//! every output) and what the programs saw (timers, retry attempts); each test checks
//! one guarantee over it.
//!
//! The programs and their strategies are in `programs`, the driver in `driver`, the
//! checks in `invariants`; schedules (shared with `schedule_properties.rs`) in
//! `support/schedules.rs`. Proptest keeps the seeds of past failures for this file in
//! `tests/proptest-regressions/main.txt` (its default place for a test's `main.rs`) and
//! replays them before new cases.

mod driver;
mod invariants;
mod programs;
#[path = "../support/schedules.rs"]
mod schedules;

use std::collections::HashMap;

use effectful::effect::{Response, SystemResponse};
use effectful::{
    Delivery, EffectId, Either, Engine, EngineConfig, Output, ProgramError, Time, join, race,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use uuid::Uuid;

use driver::{Answer, Ev, run_case};
use invariants::{check_programs, check_requests, check_retries, check_timers};
use programs::{LeafKind, Out, Outcome, Record, case_strategy, perform};

// ---------------------------------------------------------------------------------------
// Engine properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn every_request_is_answered_once_or_cancelled_once_and_late_answers_are_stale(case in case_strategy()) {
        check_requests(&run_case(&case))?;
    }

    #[test]
    fn every_program_finishes_exactly_once_and_the_engine_ends_empty(case in case_strategy()) {
        check_programs(&run_case(&case))?;
    }

    #[test]
    fn timers_fire_in_deadline_order_and_never_early(case in case_strategy()) {
        check_timers(&run_case(&case), case.program_timeout)?;
    }

    #[test]
    fn retries_stay_within_their_schedule(case in case_strategy()) {
        check_retries(&run_case(&case))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_same_case_gives_the_same_trace(case in case_strategy()) {
        let first = run_case(&case);
        let second = run_case(&case);
        prop_assert_eq!(first, second);
    }
}

/// Guards the properties above against passing vacuously: over a fixed set of cases the
/// driver reaches every kind of event they are about.
#[test]
fn the_random_driver_reaches_every_kind_of_event() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = case_strategy();
    let mut seen: HashMap<&'static str, usize> = HashMap::new();
    for _ in 0..200 {
        let case = strategy
            .new_tree(&mut runner)
            .expect("cases generate")
            .current();
        let run = run_case(&case);
        let mut see = |what: &'static str| *seen.entry(what).or_default() += 1;
        for ev in &run.events {
            if let Ev::Respond {
                at: None,
                delivery: Delivery::Delivered,
                ..
            } = ev
            {
                see("answer without a time");
            }
            match ev {
                Ev::Respond {
                    delivery: Delivery::Stale,
                    ..
                } => see("stale answer"),
                Ev::Respond {
                    answer: Answer::Retryable,
                    delivery: Delivery::Delivered,
                    ..
                } => see("retryable error"),
                Ev::Respond {
                    answer: Answer::WrongType,
                    delivery: Delivery::Delivered,
                    ..
                } => see("wrong response"),
                Ev::Cancel { .. } => see("cancel"),
                Ev::Abort { accepted: true, .. } => see("abort"),
                Ev::Abort {
                    accepted: false, ..
                } => see("refused abort"),
                Ev::Timeout { outputs: 0, .. } => see("quiet handle_timeout"),
                Ev::SetDeadline { accepted: true, .. } => see("set deadline"),
                Ev::Timeout {
                    asked: Time::MAX, ..
                } => see("end of time"),
                Ev::Finished {
                    result: Err(ProgramError::ForeignAwait),
                    ..
                } => see("foreign await"),
                Ev::Finished {
                    result: Err(ProgramError::DeadlineExceeded { .. }),
                    ..
                } => see("deadline"),
                Ev::Finished {
                    result: Ok(Ok(_)), ..
                } => see("success"),
                Ev::Finished {
                    result: Ok(Err(_)), ..
                } => see("failure"),
                _ => {}
            }
        }
        for record in &run.records {
            if let Record::Timer {
                driven: true,
                stretch,
                ..
            } = record
            {
                if run.shifts.get(stretch).is_some_and(|s| !s.is_zero()) {
                    see("timer moved on by a later time");
                }
            }
            match record {
                Record::Timer {
                    what: "timeout", ..
                } => see("timeout elapsed"),
                Record::Timer {
                    what: "hand-written sleep",
                    ..
                } => see("hand-written sleep"),
                Record::Timer { .. } => see("sleep"),
                Record::Retry(r) if r.attempts.len() > 1 => see("retried"),
                Record::Retry(r) if r.result == Some(Outcome::Retryable) => see("retry gave up"),
                Record::Retry(_) | Record::Unexpected { .. } => {}
            }
        }
    }
    for what in [
        "stale answer",
        "retryable error",
        "wrong response",
        "cancel",
        "abort",
        "refused abort",
        "quiet handle_timeout",
        "set deadline",
        "end of time",
        "foreign await",
        "hand-written sleep",
        "deadline",
        "success",
        "failure",
        "timeout elapsed",
        "sleep",
        "retried",
        "retry gave up",
        "answer without a time",
        "timer moved on by a later time",
    ] {
        assert!(
            seen.get(what).copied().unwrap_or(0) > 0,
            "no {what} in 200 cases: {seen:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Regressions found by the properties above
// ---------------------------------------------------------------------------------------

/// Found by `every_program_finishes_exactly_once_and_the_engine_ends_empty`: the loser
/// of a race is polled (and counts as waiting) before the winner completes and the loser
/// is dropped; the program then waits only on a foreign future and used to hang,
/// neither finished nor waiting for anything the driver could answer.
#[test]
fn a_foreign_future_left_alone_by_a_race_is_caught_instead_of_hanging() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        let winner = async {
            match race(perform(&fx, LeafKind::Clock), perform(&fx, LeafKind::Uuid)).await {
                Either::Left(v) | Either::Right(v) => v,
            }
        };
        let (value, ()) = join(winner, std::future::pending::<()>()).await;
        value
    });
    let mut driver: Vec<Output<Out>> = std::iter::from_fn(|| engine.poll_output()).collect();
    let ids: Vec<EffectId> = driver
        .drain(..)
        .filter_map(|o| match o {
            Output::Request { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 2);
    let uuid = Response::System(SystemResponse::GenerateUuid(Uuid::nil()));
    assert_eq!(
        engine.handle_response(Time::ZERO, ids[1], Ok(uuid)),
        Delivery::Delivered
    );
    let outputs: Vec<String> = std::iter::from_fn(|| engine.poll_output())
        .map(|o| format!("{o:?}"))
        .collect();
    assert_eq!(
        outputs,
        vec![
            format!("{:?}", Output::<Out>::Cancel { id: ids[0] }),
            format!(
                "{:?}",
                Output::<Out>::Finished {
                    program: ids[0].program(),
                    result: Err(ProgramError::ForeignAwait)
                }
            ),
        ]
    );
    assert_eq!(engine.programs(), 0);
    assert_eq!(engine.poll_timeout(), None);
}
