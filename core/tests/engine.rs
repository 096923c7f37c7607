//! Worked examples of the engine and of each combinator.

use std::task::Poll;
use std::time::Duration;

use effectful::effect::*;
use effectful::*;
use uuid::Uuid;

mod support;
use support::*;

type Out = Result<u64, EffectError>;

const MS: Duration = Duration::from_millis(1);

fn now_response(micros: i64) -> Response {
    Response::System(SystemResponse::GetCurrentTime(Timestamp::from_unix_micros(
        micros,
    )))
}

async fn read_clock(fx: &Fx) -> Result<u64, EffectError> {
    Ok(fx.perform(GetCurrentTime {}).await?.unix_micros() as u64)
}

#[test]
fn a_sequence_of_effects_runs_one_round_trip_at_a_time() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        Ok(read_clock(&fx).await? + read_clock(&fx).await?)
    });
    let first = requests(&drain(&mut engine));
    assert_eq!(first.len(), 1);
    assert_eq!(
        engine.handle_response(Time::ZERO, first[0], Ok(now_response(2))),
        Delivery::Delivered
    );
    let second = requests(&drain(&mut engine));
    assert_eq!(second.len(), 1);
    let _ = engine.handle_response(Time::ZERO, second[0], Ok(now_response(3)));
    assert_eq!(finished(&drain(&mut engine)), vec![Ok(Ok(5))]);
    assert_eq!(engine.programs(), 0);
}

#[test]
fn infrastructure_errors_reach_the_program_as_values() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move { read_clock(&fx).await });
    let id = requests(&drain(&mut engine))[0];
    let err = EffectError::connection_lost("System.GetCurrentTime", "reset by peer");
    let _ = engine.handle_response(Time::ZERO, id, Err(err.clone()));
    assert_eq!(finished(&drain(&mut engine)), vec![Ok(Err(err))]);
}

#[test]
fn a_response_to_another_effect_is_a_protocol_error_naming_both() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move { read_clock(&fx).await });
    let id = requests(&drain(&mut engine))[0];
    let wrong = Response::System(SystemResponse::GenerateUuid(Uuid::nil()));
    let _ = engine.handle_response(Time::ZERO, id, Ok(wrong));
    let result = finished(&drain(&mut engine))
        .remove(0)
        .unwrap()
        .unwrap_err();
    assert_eq!(result.kind, ErrorKind::Protocol);
    assert!(
        result.to_string().contains("System.GenerateUuid"),
        "{result}"
    );
}

#[test]
fn join_has_both_effects_outstanding_and_takes_answers_in_any_order() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        let (a, b) = join(read_clock(&fx), read_clock(&fx)).await;
        Ok(a? * 10 + b?)
    });
    let ids = requests(&drain(&mut engine));
    assert_eq!(ids.len(), 2);
    let _ = engine.handle_response(Time::ZERO, ids[1], Ok(now_response(2)));
    assert!(drain(&mut engine).is_empty());
    let _ = engine.handle_response(Time::ZERO, ids[0], Ok(now_response(1)));
    assert_eq!(finished(&drain(&mut engine)), vec![Ok(Ok(12))]);
}

#[test]
fn join_all_and_perform_all_keep_input_order() {
    let mut engine: Engine<Vec<u64>> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        let a: Vec<u64> = join_all((0..3).map(|_| read_clock(&fx)))
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let b: Vec<u64> = fx
            .perform_all((0..3).map(|_| GetCurrentTime {}))
            .await
            .into_iter()
            .map(|r| r.unwrap().unix_micros() as u64)
            .collect();
        a.into_iter().chain(b).collect()
    });
    for round in 0..2 {
        let ids = requests(&drain(&mut engine));
        assert_eq!(ids.len(), 3, "round {round}");
        for (i, id) in ids.iter().enumerate().rev() {
            let _ = engine.handle_response(Time::ZERO, *id, Ok(now_response(i as i64)));
        }
    }
    assert_eq!(
        finished(&drain(&mut engine)),
        vec![Ok(vec![0, 1, 2, 0, 1, 2])]
    );
}

#[test]
fn race_takes_the_first_answer_and_cancels_the_loser() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        match race(read_clock(&fx), read_clock(&fx)).await {
            Either::Left(v) => v,
            Either::Right(v) => Ok(v? + 100),
        }
    });
    let ids = requests(&drain(&mut engine));
    let _ = engine.handle_response(Time::ZERO, ids[1], Ok(now_response(7)));
    let out = drain(&mut engine);
    assert_eq!(cancels(&out), vec![ids[0]]);
    assert_eq!(finished(&out), vec![Ok(Ok(107))]);
    // The loser's late answer is recognised as stale.
    assert_eq!(
        engine.handle_response(Time::ZERO, ids[0], Ok(now_response(1))),
        Delivery::Stale
    );
}

/// An engine running one program that reads the clock within `limit`.
fn timed_clock_read(limit: Duration) -> Engine<Out> {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, move |fx| async move {
        fx.perform_timeout(GetCurrentTime {}, limit)
            .await
            .map(|t| t.unix_micros() as u64)
    });
    engine
}

#[test]
fn a_timeout_cancels_the_effect_when_its_timer_fires_and_never_early() {
    let mut engine = timed_clock_read(50 * MS);
    let id = requests(&drain(&mut engine))[0];
    assert_eq!(engine.poll_timeout(), Some(Time::from_millis(50)));
    engine.handle_timeout(Time::from_millis(49));
    assert!(drain(&mut engine).is_empty(), "fired early");
    engine.handle_timeout(Time::from_millis(50));
    let out = drain(&mut engine);
    assert_eq!(cancels(&out), vec![id]);
    let err = finished(&out).remove(0).unwrap().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(err.retryable);
    assert_eq!(engine.poll_timeout(), None);
}

#[test]
fn an_answer_before_the_timeout_disarms_its_timer() {
    let mut engine = timed_clock_read(50 * MS);
    let id = requests(&drain(&mut engine))[0];
    assert_eq!(engine.timer_bound(), Some(Time::from_millis(50)));
    let _ = engine.handle_response(Time::from_millis(10), id, Ok(now_response(4)));
    assert_eq!(finished(&drain(&mut engine)), vec![Ok(Ok(4))]);
    // The disarmed timer still bounds the next one from below until it is pruned.
    assert_eq!(engine.timer_bound(), Some(Time::from_millis(50)));
    assert_eq!(engine.poll_timeout(), None);
    assert_eq!(engine.timer_bound(), None);
}

#[test]
fn a_perform_timeout_dropped_midway_frees_its_slots_as_a_raced_sleep_did() {
    // An outer timeout drops the inner perform_timeout while both wait. The timer's
    // slot is freed before the effect's, as `timeout(race(perform, sleep))` freed
    // them, so the next effect reuses the effect's slot and ids stay as they were.
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        let inner = fx.perform_timeout(GetCurrentTime {}, 50 * MS);
        assert!(fx.timeout(10 * MS, inner).await.is_err());
        read_clock(&fx).await
    });
    let first = requests(&drain(&mut engine))[0];
    engine.handle_timeout(Time::from_millis(10));
    let out = drain(&mut engine);
    assert_eq!(cancels(&out), vec![first]);
    let next = requests(&out);
    assert_eq!(format!("{first:?} {:?}", next[0]), "p0.0/e0.0 p0.0/e0.1");
}

#[test]
fn a_zero_timeout_asks_then_gives_up_at_the_next_timeout_input() {
    let mut engine = timed_clock_read(Duration::ZERO);
    let asked = drain(&mut engine);
    assert_eq!(requests(&asked).len(), 1);
    assert!(
        cancels(&asked).is_empty(),
        "given up inside the spawn: {asked:?}"
    );
    assert_eq!(engine.poll_timeout(), Some(Time::ZERO));
    engine.handle_timeout(Time::ZERO);
    let out = drain(&mut engine);
    assert_eq!(cancels(&out), requests(&asked));
    let err = finished(&out).remove(0).unwrap().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert_eq!(engine.timer_bound(), None);
}

#[test]
fn retry_follows_the_schedule_and_gives_up_with_the_last_error() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    let schedule = Schedule::exponential(10 * MS).recurs(2);
    engine.spawn_async(Time::ZERO, move |fx| async move {
        fx.retry(&schedule, GetCurrentTime {})
            .await
            .map(|t| t.unix_micros() as u64)
    });
    let mut now = Time::ZERO;
    let mut attempts = Vec::new();
    loop {
        let out = drain(&mut engine);
        if let Some(result) = finished(&out).pop() {
            let err = result.unwrap().unwrap_err();
            assert_eq!(err.kind, ErrorKind::ConnectionLost);
            break;
        }
        if let Some(id) = requests(&out).first() {
            attempts.push(now);
            let _ = engine.handle_response(
                now,
                *id,
                Err(EffectError::connection_lost(
                    "System.GetCurrentTime",
                    "down",
                )),
            );
            continue;
        }
        now = engine.poll_timeout().expect("a retry delay is armed");
        engine.handle_timeout(now);
    }
    assert_eq!(
        attempts,
        vec![Time::ZERO, Time::from_millis(10), Time::from_millis(30)]
    );
}

#[test]
fn retry_stops_at_once_on_an_error_that_is_not_retryable() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    let schedule = Schedule::spaced(MS).recurs(5);
    engine.spawn_async(Time::ZERO, move |fx| async move {
        fx.retry(&schedule, GetCurrentTime {})
            .await
            .map(|t| t.unix_micros() as u64)
    });
    let id = requests(&drain(&mut engine))[0];
    let fatal = EffectError::websocket_closed("System.GetCurrentTime", 1006, "gone");
    let _ = engine.handle_response(Time::ZERO, id, Err(fatal.clone()));
    assert_eq!(finished(&drain(&mut engine)), vec![Ok(Err(fatal))]);
}

#[test]
fn the_program_deadline_ends_it_and_cancels_what_it_waits_for() {
    let config = EngineConfig {
        program_timeout: Some(Duration::from_secs(300)),
        effect_timeout: None,
        ..EngineConfig::default()
    };
    let mut engine: Engine<Out> = Engine::new(config);
    let program = engine.spawn_async(
        Time::from_secs(1),
        |fx| async move { read_clock(&fx).await },
    );
    let id = requests(&drain(&mut engine))[0];
    assert_eq!(engine.poll_timeout(), Some(Time::from_secs(301)));
    engine.handle_timeout(Time::from_secs(301));
    let out = drain(&mut engine);
    assert_eq!(cancels(&out), vec![id]);
    assert_eq!(
        finished(&out),
        vec![Err(ProgramError::DeadlineExceeded {
            deadline: Time::from_secs(301)
        })]
    );
    assert!(
        !engine.abort(Time::from_secs(302), program),
        "already finished"
    );
}

#[test]
fn abort_reports_the_program_once_and_cancels_its_effects() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    let program = engine.spawn_async(Time::ZERO, |fx| async move { read_clock(&fx).await });
    let id = requests(&drain(&mut engine))[0];
    assert!(engine.abort(Time::ZERO, program));
    let out = drain(&mut engine);
    assert_eq!(cancels(&out), vec![id]);
    assert_eq!(finished(&out), vec![Err(ProgramError::Aborted)]);
    assert_eq!(
        engine.handle_response(Time::ZERO, id, Ok(now_response(1))),
        Delivery::Stale
    );
}

#[test]
fn awaiting_a_foreign_future_ends_the_program_instead_of_hanging() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |_fx| async move {
        std::future::pending::<()>().await;
        Ok(0)
    });
    assert_eq!(
        finished(&drain(&mut engine)),
        vec![Err(ProgramError::ForeignAwait)]
    );
}

#[test]
fn a_foreign_future_joined_with_an_effect_is_caught_once_the_effect_is_done() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        let (t, ()) = join(read_clock(&fx), std::future::pending::<()>()).await;
        t
    });
    let id = requests(&drain(&mut engine))[0];
    let _ = engine.handle_response(Time::ZERO, id, Ok(now_response(1)));
    assert_eq!(
        finished(&drain(&mut engine)),
        vec![Err(ProgramError::ForeignAwait)]
    );
}

#[test]
fn sleep_fires_at_its_deadline_and_sub_programs_compose() {
    async fn nap_then_read(fx: &Fx, d: Duration) -> Result<u64, EffectError> {
        fx.sleep(d).await;
        Ok(fx.now().as_nanos())
    }
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        Ok(nap_then_read(&fx, 5 * MS).await? + nap_then_read(&fx, Duration::ZERO).await?)
    });
    assert_eq!(engine.poll_timeout(), Some(Time::from_millis(5)));
    engine.handle_timeout(Time::from_millis(7));
    // The zero sleep armed inside that call yields: it fires at the next one.
    assert!(finished(&drain(&mut engine)).is_empty());
    assert_eq!(engine.poll_timeout(), Some(Time::from_millis(7)));
    engine.handle_timeout(Time::from_millis(7));
    assert_eq!(finished(&drain(&mut engine)), vec![Ok(Ok(14_000_000))]);
}

/// A hand-written program: ask for the time twice, then return the sum.
struct TwoReads {
    sum: i64,
    left: u32,
}

impl Program for TwoReads {
    type Output = Result<i64, EffectError>;
    fn resume(&mut self, cx: &mut Cx<'_>, event: Event) -> Poll<Self::Output> {
        match event {
            Event::Start => {}
            Event::Response { result, .. } => {
                match result.and_then(decode::<Std, GetCurrentTime>) {
                    Ok(t) => self.sum += t.unix_micros(),
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            Event::Timer { .. } => unreachable!("no timers armed"),
        }
        if self.left == 0 {
            return Poll::Ready(Ok(self.sum));
        }
        self.left -= 1;
        cx.perform(GetCurrentTime {});
        Poll::Pending
    }
}

#[test]
fn hand_written_programs_run_on_the_same_engine() {
    let mut engine: Engine<Result<i64, EffectError>> = Engine::new(EngineConfig::default());
    engine.spawn(Time::ZERO, TwoReads { sum: 0, left: 2 });
    for t in [3, 4] {
        let id = requests(&drain(&mut engine))[0];
        let _ = engine.handle_response(Time::ZERO, id, Ok(now_response(t)));
    }
    assert_eq!(finished(&drain(&mut engine)), vec![Ok(Ok(7))]);
}

struct Idle;
impl Program for Idle {
    type Output = ();
    fn resume(&mut self, _cx: &mut Cx<'_>, _event: Event) -> Poll<()> {
        Poll::Pending
    }
}

#[test]
fn a_hand_written_program_waiting_on_nothing_is_reported_stalled() {
    let mut engine: Engine<()> = Engine::new(EngineConfig::default());
    engine.spawn(Time::ZERO, Idle);
    assert_eq!(
        finished(&drain(&mut engine)),
        vec![Err(ProgramError::Stalled)]
    );
}

#[test]
fn program_ids_are_not_reused_while_stale_ids_are_rejected() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    let a = engine.spawn_async(Time::ZERO, |fx| async move { read_clock(&fx).await });
    assert!(engine.abort(Time::ZERO, a));
    let b = engine.spawn_async(Time::ZERO, |fx| async move { read_clock(&fx).await });
    assert_eq!(a.index(), b.index(), "the slot is reused");
    assert_ne!(a, b, "but the id is new");
    assert!(!engine.abort(Time::ZERO, a));
    assert_eq!(engine.outstanding(b), Some(1));
}

#[test]
fn the_blocking_runner_answers_in_order_and_jumps_virtual_time() {
    let mut calls = 0;
    let mut handler = |request: Request| {
        calls += 1;
        match request {
            Request::System(SystemRequest::GetCurrentTime(_)) => Ok(now_response(calls)),
            other => Err(EffectError::unhandled(other.name(), vec!["System".into()])),
        }
    };
    let result = run_async(
        |fx: Fx| async move {
            fx.sleep(Duration::from_secs(3600)).await;
            let (a, b) = join(read_clock(&fx), read_clock(&fx)).await;
            Ok::<_, EffectError>((a?, b?, fx.now()))
        },
        EngineConfig::default(),
        &mut handler,
    );
    assert_eq!(result, Ok(Ok((1, 2, Time::from_secs(3600)))));
}

#[test]
fn an_unhandled_effect_error_lists_what_is_available() {
    let mut handler = |request: Request| {
        Err(EffectError::unhandled(
            request.name(),
            vec!["System".into(), "Cache".into()],
        ))
    };
    let result = run_async(
        |fx: Fx| async move {
            fx.perform(GetUserById {
                user_id: Uuid::nil(),
            })
            .await
        },
        EngineConfig::default(),
        &mut handler,
    );
    let err = result.unwrap().unwrap_err();
    assert_eq!(
        err.to_string(),
        "Database.GetUserById failed: no interpreter handles it; available: System, Cache: register an interpreter for Database.GetUserById's family (not retryable)"
    );
}

#[test]
fn a_panicking_program_ends_alone_and_the_others_keep_running() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    let calm = engine.spawn_async(Time::ZERO, |fx| async move { read_clock(&fx).await });
    let wild = engine.spawn_async(Time::ZERO, |fx| async move {
        let t = read_clock(&fx).await?;
        if t == 13 {
            panic!("unlucky {t}");
        }
        Ok(t)
    });
    let ids = requests(&drain(&mut engine));
    let (calm_id, wild_id) = (ids[0], ids[1]);
    assert_eq!((calm_id.program(), wild_id.program()), (calm, wild));
    let _ = engine.handle_response(Time::ZERO, wild_id, Ok(now_response(13)));
    let out = drain(&mut engine);
    assert_eq!(
        finished(&out),
        vec![Err(ProgramError::Panicked {
            message: "unlucky 13".into()
        })]
    );
    assert_eq!(engine.programs(), 1);
    let _ = engine.handle_response(Time::ZERO, calm_id, Ok(now_response(2)));
    assert_eq!(finished(&drain(&mut engine)), vec![Ok(Ok(2))]);
}
