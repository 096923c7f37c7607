//! The engine's guarantees, as checks over a run's trace and what its programs saw.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use effectful::{Delivery, EffectId, ProgramError, ProgramId, Time, duration_nanos};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::driver::{Ev, Run};
use crate::programs::{Outcome, Record};
use crate::schedules::Model;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdState {
    Outstanding,
    Answered,
    Cancelled,
}

/// Every request is answered (`Delivered`) once or cancelled once, never both; every
/// other answer is `Stale`; nothing is left outstanding once all programs are done.
pub(crate) fn check_requests(run: &Run) -> Result<(), TestCaseError> {
    let mut ids: HashMap<EffectId, IdState> = HashMap::new();
    for (i, ev) in run.events.iter().enumerate() {
        match ev {
            Ev::Request { id, .. } => {
                prop_assert!(
                    ids.insert(*id, IdState::Outstanding).is_none(),
                    "event {}: {:?} requested twice",
                    i,
                    id
                );
            }
            Ev::Cancel { id } => {
                let state = ids.get(id).copied();
                prop_assert_eq!(
                    state,
                    Some(IdState::Outstanding),
                    "event {}: cancel of {:?}",
                    i,
                    id
                );
                ids.insert(*id, IdState::Cancelled);
            }
            Ev::Respond { id, delivery, .. } => {
                let state = ids.get(id).copied();
                let expected = if state == Some(IdState::Outstanding) {
                    Delivery::Delivered
                } else {
                    Delivery::Stale
                };
                prop_assert_eq!(
                    *delivery,
                    expected,
                    "event {}: answer to {:?} in state {:?}",
                    i,
                    id,
                    state
                );
                if *delivery == Delivery::Delivered {
                    ids.insert(*id, IdState::Answered);
                }
            }
            _ => {}
        }
    }
    let left: Vec<_> = ids
        .iter()
        .filter(|(_, state)| **state == IdState::Outstanding)
        .collect();
    prop_assert!(
        left.is_empty(),
        "requests neither answered nor cancelled: {:?}",
        left
    );
    // Nor does an answer the engine called stale, or a cancelled timer, reach a program.
    let unexpected: Vec<&Record> = run
        .records
        .iter()
        .filter(|r| matches!(r, Record::Unexpected { .. }))
        .collect();
    prop_assert!(
        unexpected.is_empty(),
        "programs resumed for what they no longer wait for: {:?}",
        unexpected
    );
    Ok(())
}

/// Every spawned program finishes exactly once, asks for nothing afterwards, and the
/// engine ends empty; an abort is accepted exactly when the program still runs.
pub(crate) fn check_programs(run: &Run) -> Result<(), TestCaseError> {
    prop_assert!(!run.hung, "the run hung after {} steps", run.steps);
    let mut spawned = HashSet::new();
    let mut finished: HashMap<ProgramId, usize> = HashMap::new();
    for (i, ev) in run.events.iter().enumerate() {
        match ev {
            Ev::Spawn { program, .. } => prop_assert!(
                spawned.insert(*program),
                "event {}: {:?} spawned twice",
                i,
                program
            ),
            Ev::Finished { program, .. } => {
                prop_assert!(
                    spawned.contains(program),
                    "event {}: {:?} finished but was never spawned",
                    i,
                    program
                );
                let count = finished.entry(*program).or_default();
                *count += 1;
                prop_assert_eq!(*count, 1, "event {}: {:?} finished twice", i, program);
            }
            Ev::Request { id, .. } | Ev::Cancel { id } if finished.contains_key(&id.program()) => {
                prop_assert!(false, "event {}: {:?} after its program finished", i, ev);
            }
            Ev::Abort {
                program,
                was_finished,
                accepted,
            } => {
                prop_assert_eq!(
                    *accepted,
                    !*was_finished,
                    "event {}: abort of {:?}",
                    i,
                    program
                );
                let outputs: Vec<&Ev> = run.events[i + 1..]
                    .iter()
                    .take_while(|e| e.is_output())
                    .collect();
                if *accepted {
                    let last = outputs.last();
                    prop_assert!(
                        matches!(last, Some(Ev::Finished { program: p, result: Err(ProgramError::Aborted), .. }) if p == program),
                        "event {}: an accepted abort ends with the program's Finished, got {:?}",
                        i,
                        outputs
                    );
                } else {
                    prop_assert!(
                        outputs.is_empty(),
                        "event {}: a refused abort did something: {:?}",
                        i,
                        outputs
                    );
                }
            }
            Ev::SetDeadline {
                program,
                was_finished,
                accepted,
                ..
            } => {
                prop_assert_eq!(
                    *accepted,
                    !*was_finished,
                    "event {}: set_deadline of {:?}",
                    i,
                    program
                );
                prop_assert!(
                    !run.events.get(i + 1).is_some_and(Ev::is_output),
                    "event {}: set_deadline did something at once",
                    i
                );
            }
            _ => {}
        }
    }
    for program in &spawned {
        prop_assert_eq!(
            finished.get(program).copied(),
            Some(1),
            "{:?} never finished",
            program
        );
    }
    prop_assert_eq!(run.programs_left, 0);
    prop_assert_eq!(run.due_at_end, None);
    Ok(())
}

/// Timers never fire early and fire in deadline order, ties in the order they were
/// armed (a timer armed after an answer without a time counting from the next time
/// given); `handle_timeout` does nothing before the next deadline and everything due at
/// it; program deadlines are spawn time plus the program timeout, and never missed.
pub(crate) fn check_timers(
    run: &Run,
    program_timeout: Option<Duration>,
) -> Result<(), TestCaseError> {
    let mut last_deadline: Option<Time> = None;
    let mut last_sleep: Option<(Time, u64)> = None;
    for record in &run.records {
        let Record::Timer {
            order,
            driven,
            stretch,
            deadline,
            fired,
            ..
        } = record
        else {
            continue;
        };
        // Armed after an answer without a time: the program counted from the engine's
        // older `now`, and the next input with a time moved the timer on by how much
        // later it was. A timer can fire only in such an input, so the move is known.
        let deadline = &match *stretch {
            // A zero sleep completes at once, with no timer to move.
            n if n == 0 || !driven => *deadline,
            n => {
                let shift = run.shifts.get(&n).copied();
                prop_assert!(
                    shift.is_some(),
                    "a timer fired in a stretch without a time: {:?}",
                    record
                );
                *deadline + shift.unwrap_or_default()
            }
        };
        prop_assert!(
            fired >= deadline,
            "fired early: {:?} (due at {:?})",
            record,
            deadline
        );
        if !driven {
            continue; // an async zero-length sleep completes at once, without a timer
        }
        // Timers complete only in `handle_timeout`, in deadline order.
        if let Some(last) = last_deadline {
            prop_assert!(
                *deadline >= last,
                "fired out of order after a deadline of {:?}: {:?}",
                last,
                record
            );
        }
        last_deadline = Some(*deadline);
        if let Some(order) = *order {
            if let Some((at, before)) = last_sleep.filter(|(at, _)| at == deadline) {
                prop_assert!(
                    order > before,
                    "sleeps due at {:?} fired against the order they were armed: {:?}",
                    at,
                    record
                );
            }
            last_sleep = Some((*deadline, order));
        }
    }
    // Each program's deadline: spawn time plus the program timeout, until set otherwise.
    let mut deadlines: HashMap<ProgramId, Option<Time>> = HashMap::new();
    for (i, ev) in run.events.iter().enumerate() {
        match ev {
            Ev::Spawn { program, at } => {
                deadlines.insert(*program, program_timeout.map(|t| *at + t));
            }
            Ev::SetDeadline {
                program,
                deadline,
                accepted: true,
                ..
            } => {
                deadlines.insert(*program, *deadline);
            }
            Ev::Timeout {
                effective,
                due_before,
                due_after,
                outputs,
                ..
            } => {
                if due_before.is_none_or(|due| *effective < due) {
                    prop_assert_eq!(
                        *outputs,
                        0,
                        "event {}: an early handle_timeout did something: {:?}",
                        i,
                        ev
                    );
                }
                // Timers due at the call fire in it; a timer a program arms during the
                // call waits for the next one even if already due (a zero sleep), so
                // a timer can be left due only by a call that had timers to fire.
                prop_assert!(
                    due_after.is_none_or(|due| due > *effective)
                        || due_before.is_some_and(|due| due <= *effective),
                    "event {}: left a due timer it did not arm: {:?}",
                    i,
                    ev
                );
            }
            Ev::Finished {
                program,
                result: Err(ProgramError::DeadlineExceeded { deadline }),
                now,
            } => {
                prop_assert_eq!(
                    Some(*deadline),
                    deadlines.get(program).copied().flatten(),
                    "event {}: not the deadline the program was given: {:?}",
                    i,
                    ev
                );
                prop_assert!(
                    now >= deadline,
                    "event {}: the deadline fired early: {:?}",
                    i,
                    ev
                );
            }
            _ => {}
        }
    }
    prop_assert!(
        run.missed_deadlines.is_empty(),
        "programs outlived their deadline: {:?}",
        run.missed_deadlines
    );
    Ok(())
}

/// Each retry makes at most `recurs + 1` attempts, goes on exactly when its schedule
/// does, and waits at least the shortest delay the schedule could have drawn.
pub(crate) fn check_retries(run: &Run) -> Result<(), TestCaseError> {
    for record in &run.records {
        let Record::Retry(r) = record else { continue };
        prop_assert!(
            r.attempts.len() as u64 <= u64::from(r.recurs) + 1,
            "too many attempts: {:?}",
            r
        );
        if let Some(first) = r.attempts.first() {
            prop_assert_eq!(
                first.start,
                r.start,
                "the first attempt waits for nothing: {:?}",
                r
            );
        }
        if r.result.is_some() {
            prop_assert!(
                r.attempts.last().is_some_and(|a| a.end.is_some()),
                "a result without an attempt: {:?}",
                r
            );
        }
        let mut model = Model::new(&r.schedule);
        for (i, attempt) in r.attempts.iter().enumerate() {
            let next = r.attempts.get(i + 1);
            let Some((end, outcome)) = attempt.end else {
                prop_assert!(
                    next.is_none() && r.result.is_none(),
                    "attempt {} never ended: {:?}",
                    i,
                    r
                );
                break;
            };
            match outcome {
                Outcome::Ok | Outcome::Fatal => {
                    prop_assert!(
                        next.is_none(),
                        "attempt {} ended {:?} but was retried: {:?}",
                        i,
                        outcome,
                        r
                    );
                    prop_assert!(r.result.is_none_or(|result| result == outcome), "{:?}", r);
                }
                Outcome::Retryable => match (model.next(end - r.start), next) {
                    (None, next) => {
                        prop_assert!(
                            next.is_none(),
                            "retried after the schedule stopped: {:?}",
                            r
                        );
                        prop_assert_eq!(
                            r.result,
                            Some(Outcome::Retryable),
                            "gave up without saying so: {:?}",
                            r
                        );
                    }
                    (Some((lo, hi)), Some(next)) => {
                        let gap = duration_nanos(next.start - end);
                        // At the end of time a sleep is due at once: time saturates.
                        prop_assert!(
                            next.start >= end + Duration::from_nanos(lo),
                            "attempt {} came {} ns after a failure, the schedule allows {}..={}: {:?}",
                            i + 1,
                            gap,
                            lo,
                            hi,
                            r
                        );
                        // A zero delay yields to the driver: the next attempt starts
                        // at the driver's next `handle_timeout`, whenever it calls it
                        // (see `a_zero_delay_retry_yields_between_attempts`).
                        let _ = hi;
                    }
                    // Dropped while waiting for the next attempt.
                    (Some(_), None) => prop_assert!(
                        r.result.is_none(),
                        "stopped while the schedule goes on: {:?}",
                        r
                    ),
                },
            }
        }
    }
    Ok(())
}
