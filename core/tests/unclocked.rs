//! Answers without a time (`Engine::handle_response_unclocked`): timers armed after
//! one count from the next time the driver gives, so they may fire late but never
//! early, whichever queue holds them.

use std::time::Duration;

use effectful::effect::*;
use effectful::*;

mod support;
use support::*;

const LIMIT: Duration = EngineConfig::DEFAULT_EFFECT_TIMEOUT;
const NS: Duration = Duration::from_nanos(1);

fn uuid_answer() -> Response {
    Response::System(SystemResponse::GenerateUuid(uuid::Uuid::from_u128(7)))
}

fn secs(s: u64) -> Time {
    Time::from_secs(s)
}

#[test]
fn a_default_limit_armed_after_an_unclocked_answer_counts_from_the_next_time_given() {
    let mut engine: Engine<(Time, Result<uuid::Uuid, EffectError>)> =
        Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        let _ = fx.perform(GenerateUuid {}).await;
        let seen = fx.now();
        (seen, fx.perform(GenerateUuid {}).await)
    });
    let first = requests(&drain(&mut engine));
    assert!(!engine.wants_time());
    // Really answered at 10 s; the engine is not told.
    assert_eq!(
        engine.handle_response_unclocked(first[0], Ok(uuid_answer())),
        Delivery::Delivered
    );
    assert!(engine.wants_time(), "an answer without a time asks for one");
    let second = requests(&drain(&mut engine));
    assert_eq!(second.len(), 1);
    assert_eq!(engine.now(), Time::ZERO, "the engine keeps its latest time");
    assert_eq!(
        engine.poll_timeout(),
        Some(Time::ZERO + LIMIT),
        "a lower bound until then"
    );

    engine.tick(secs(10));
    assert!(!engine.wants_time());
    assert_eq!(engine.poll_timeout(), Some(secs(10) + LIMIT));
    engine.handle_timeout(Time::ZERO + LIMIT);
    engine.handle_timeout(secs(10) + (LIMIT - NS));
    assert!(drain(&mut engine).is_empty(), "never early");
    engine.handle_timeout(secs(10) + LIMIT);
    let out = drain(&mut engine);
    assert_eq!(cancels(&out), second);
    let (seen, result) = finished(&out).remove(0).unwrap();
    assert_eq!(seen, Time::ZERO, "the program saw the engine's latest time");
    assert_eq!(result.unwrap_err().kind, ErrorKind::Timeout);
}

/// Timers armed while stale land in the queue's lanes and in its heap (sleeps armed
/// in falling order fill the four lanes, then the heap); all move, and a timer armed
/// before the engine went stale does not.
#[test]
fn sleeps_armed_after_unclocked_answers_move_on_and_earlier_timers_stay() {
    let mut engine: Engine<u64> = Engine::new(EngineConfig {
        effect_timeout: None,
        ..EngineConfig::default()
    });
    engine.spawn_async(Time::ZERO, |fx| async move {
        fx.sleep(Duration::from_secs(8)).await;
        8
    });
    let sleeps = [50u64, 40, 30, 20, 10, 5, 45, 3];
    for s in sleeps {
        engine.spawn_async(Time::ZERO, move |fx| async move {
            let _ = fx.perform(GenerateUuid {}).await;
            fx.sleep(Duration::from_secs(s)).await;
            s
        });
    }
    let asked = requests(&drain(&mut engine));
    assert_eq!(asked.len(), sleeps.len());
    for id in asked {
        assert_eq!(
            engine.handle_response_unclocked(id, Ok(uuid_answer())),
            Delivery::Delivered
        );
    }
    assert!(drain(&mut engine).is_empty());
    // The answers came at 1 s.
    engine.tick(secs(1));
    let mut order = Vec::new();
    let mut due = sleeps.map(|s| s + 1).to_vec();
    due.push(8);
    due.sort_unstable();
    for at in due {
        engine.handle_timeout(Time::from_nanos(secs(at).as_nanos() - 1));
        assert!(
            finished(&drain(&mut engine)).is_empty(),
            "nothing fires before {at} s"
        );
        engine.handle_timeout(secs(at));
        let ended = finished(&drain(&mut engine));
        assert_eq!(ended.len(), 1, "one sleep ends at {at} s");
        order.push(ended[0].clone().unwrap());
    }
    assert_eq!(order, vec![3, 5, 8, 10, 20, 30, 40, 45, 50]);
    assert_eq!(engine.programs(), 0);
}

/// Answers out of asking order leave answered limits in the queue, which is shed as
/// a whole once it doubles: the count of stale limits at its back survives that.
#[test]
fn stale_limits_survive_the_limit_queue_shedding_answered_ones() {
    const PROGRAMS: usize = 100;
    let mut engine: Engine<Result<uuid::Uuid, EffectError>> = Engine::new(EngineConfig::default());
    for _ in 0..PROGRAMS {
        engine.spawn_async(Time::ZERO, |fx| async move {
            let _ = fx.perform(GenerateUuid {}).await;
            fx.perform(GenerateUuid {}).await
        });
    }
    let first = requests(&drain(&mut engine));
    assert_eq!(first.len(), PROGRAMS);
    let mut second = Vec::new();
    for id in first.into_iter().rev() {
        let _ = engine.handle_response_unclocked(id, Ok(uuid_answer()));
        second.extend(requests(&drain(&mut engine)));
    }
    assert_eq!(second.len(), PROGRAMS);
    assert!(
        engine.timers_armed() < 2 * PROGRAMS,
        "answered limits were shed ({} armed)",
        engine.timers_armed()
    );
    engine.tick(secs(1));
    engine.handle_timeout(secs(1) + (LIMIT - NS));
    assert!(drain(&mut engine).is_empty(), "no limit fires early");
    engine.handle_timeout(secs(1) + LIMIT);
    let out = drain(&mut engine);
    assert_eq!(cancels(&out).len(), PROGRAMS);
    assert_eq!(finished(&out).len(), PROGRAMS);
}

/// Any input with a time ends the stale stretch, not only `tick`; the same time as
/// before moves nothing; and an answer with a time after it behaves as always.
#[test]
fn any_input_with_a_time_ends_the_stale_stretch() {
    let mut engine: Engine<()> = Engine::new(EngineConfig {
        effect_timeout: None,
        ..EngineConfig::default()
    });
    let program = |fx: Fx| async move {
        loop {
            let _ = fx.perform(GenerateUuid {}).await;
            fx.sleep(Duration::from_secs(2)).await;
        }
    };
    engine.spawn_async(secs(1), program);
    let asked = requests(&drain(&mut engine));
    let _ = engine.handle_response_unclocked(asked[0], Ok(uuid_answer()));
    assert_eq!(engine.poll_timeout(), Some(secs(3)));
    // At the same time as the latest: nothing moves.
    engine.handle_timeout(secs(1));
    assert!(!engine.wants_time());
    assert_eq!(engine.poll_timeout(), Some(secs(3)));
    engine.handle_timeout(secs(3));
    let asked = requests(&drain(&mut engine));
    assert_eq!(asked.len(), 1, "the sleep ended at 3 s");
    let _ = engine.handle_response_unclocked(asked[0], Ok(uuid_answer()));
    // A spawn is an input with a time, too.
    engine.spawn_async(secs(4), |_| async {});
    assert!(!engine.wants_time());
    assert_eq!(engine.poll_timeout(), Some(secs(6)));
}
