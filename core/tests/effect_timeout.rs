//! The engine's default per-effect timeout: a lost answer fails one effect with a
//! retryable `Timeout`, not the whole program at its deadline.

use std::task::Poll;
use std::time::Duration;

use effectful::effect::*;
use effectful::*;

mod support;
use support::*;

type Out = Result<u64, EffectError>;

const LIMIT: Duration = EngineConfig::DEFAULT_EFFECT_TIMEOUT;

fn uuid_answer() -> Response {
    Response::System(SystemResponse::GenerateUuid(uuid::Uuid::from_u128(9)))
}

#[test]
fn an_unanswered_effect_fails_at_the_default_limit_as_a_retryable_timeout_and_is_cancelled() {
    let mut engine: Engine<Result<uuid::Uuid, EffectError>> = Engine::new(EngineConfig::default());
    engine.spawn_async(
        Time::ZERO,
        |fx| async move { fx.perform(GenerateUuid {}).await },
    );
    let asked = requests(&drain(&mut engine));
    assert_eq!(engine.poll_timeout(), Some(Time::ZERO + LIMIT));
    engine.handle_timeout(Time::ZERO + (LIMIT - Duration::from_nanos(1)));
    assert!(drain(&mut engine).is_empty(), "never early");
    engine.handle_timeout(Time::ZERO + LIMIT);
    let out = drain(&mut engine);
    assert_eq!(cancels(&out), asked, "the driver is told to cancel it");
    let error = finished(&out).remove(0).unwrap().unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(error.retryable);
    assert_eq!(error.effect, "System.GenerateUuid");
    assert!(error.message.contains("30s"), "{error}");
    assert_eq!(
        engine.handle_response(Time::ZERO + LIMIT, asked[0], Ok(uuid_answer())),
        Delivery::Stale
    );
}

#[test]
fn an_answer_that_comes_in_time_wins_and_leaves_no_live_timer() {
    let mut engine: Engine<Result<uuid::Uuid, EffectError>> = Engine::new(EngineConfig::default());
    engine.spawn_async(
        Time::ZERO,
        |fx| async move { fx.perform(GenerateUuid {}).await },
    );
    let asked = requests(&drain(&mut engine));
    let _ = engine.handle_response(Time::from_secs(29), asked[0], Ok(uuid_answer()));
    assert_eq!(
        finished(&drain(&mut engine)),
        vec![Ok(Ok(uuid::Uuid::from_u128(9)))]
    );
    assert_eq!(engine.poll_timeout(), None);
}

#[test]
fn waits_by_nature_have_no_default_limit() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        fx.perform(ReceiveText {}).await.map(|t| t.len() as u64)
    });
    engine.spawn_async(Time::ZERO, |fx| async move {
        let consume = ConsumeMessage {
            subscription: "s".into(),
            timeout_ms: 120_000,
        };
        fx.perform(consume).await.map(|_| 0)
    });
    assert_eq!(requests(&drain(&mut engine)).len(), 2);
    assert_eq!(engine.poll_timeout(), None);
}

#[test]
fn an_effects_own_limit_replaces_the_default_and_untimed_has_none() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        fx.perform_timeout(GenerateUuid {}, Duration::from_secs(90))
            .await
            .map(|_| 90)
    });
    engine.spawn_async(Time::ZERO, |fx| async move {
        fx.perform_untimed(GenerateUuid {}).await.map(|_| 0)
    });
    drain(&mut engine);
    assert_eq!(engine.poll_timeout(), Some(Time::from_secs(90)));
    engine.handle_timeout(Time::from_secs(90));
    let out = finished(&drain(&mut engine));
    assert_eq!(out.len(), 1, "only the 90 s effect ran out");
    assert_eq!(engine.poll_timeout(), None, "the untimed one waits on");
    assert_eq!(engine.programs(), 1);
}

#[test]
fn no_default_limit_when_the_config_switches_it_off() {
    let config = EngineConfig {
        effect_timeout: None,
        ..EngineConfig::default()
    };
    let mut engine: Engine<Out> = Engine::new(config);
    engine.spawn_async(Time::ZERO, |fx| async move {
        fx.perform(GenerateUuid {}).await.map(|_| 0)
    });
    drain(&mut engine);
    assert_eq!(engine.poll_timeout(), None);
}

/// Asks once with the default limit, once with none, and returns what the first got.
struct HandAsker;

impl Program for HandAsker {
    type Output = Out;
    fn resume(&mut self, cx: &mut Cx<'_>, event: Event) -> Poll<Out> {
        match event {
            Event::Start => {
                cx.request(GenerateUuid {}.into());
                cx.request_untimed(GenerateUuid {}.into());
                Poll::Pending
            }
            Event::Response { result, .. } => Poll::Ready(result.map(|_| 1)),
            Event::Timer { .. } => Poll::Ready(Ok(2)),
        }
    }
}

#[test]
fn a_hand_written_programs_request_times_out_as_a_response_event() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn(Time::ZERO, HandAsker);
    let asked = requests(&drain(&mut engine));
    engine.handle_timeout(Time::ZERO + LIMIT);
    let out = drain(&mut engine);
    // The timed one ran out; the program returned, which cancels the untimed one too.
    assert_eq!(cancels(&out), asked);
    let error = finished(&out).remove(0).unwrap().unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout);
}

/// Asks with a limit of 1 s; once answered, asks with none in the slot that freed,
/// then with 2 s of its own, and returns the last answer.
struct SlotReuser {
    asked: u32,
}

impl Program for SlotReuser {
    type Output = Out;
    fn resume(&mut self, cx: &mut Cx<'_>, event: Event) -> Poll<Out> {
        self.asked += 1;
        match (self.asked, event) {
            (1, _) => cx.request_timeout(GenerateUuid {}.into(), Duration::from_secs(1)),
            (2, _) => cx.request_untimed(GenerateUuid {}.into()),
            (3, _) => cx.request_timeout(GetCurrentTime {}.into(), Duration::from_secs(2)),
            (_, Event::Response { result, .. }) => return Poll::Ready(result.map(|_| 3)),
            (_, _) => return Poll::Ready(Ok(0)),
        };
        Poll::Pending
    }
}

#[test]
fn a_reused_slot_keeps_nothing_of_its_predecessors_time_limit() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn(Time::ZERO, SlotReuser { asked: 0 });
    let first = requests(&drain(&mut engine));
    assert_eq!(
        engine.handle_response(Time::ZERO, first[0], Ok(uuid_answer())),
        Delivery::Delivered
    );
    let untimed = requests(&drain(&mut engine));
    assert_eq!(
        (format!("{:?}", first[0]), format!("{:?}", untimed[0])),
        ("p0.0/e0.0".to_string(), "p0.0/e0.1".to_string()),
        "the second effect reuses the first one's slot"
    );
    // The first effect's limit passes: the untimed effect in its slot is not touched.
    engine.handle_timeout(Time::from_secs(5));
    assert!(
        drain(&mut engine).is_empty(),
        "the untimed effect has no limit"
    );
    assert_eq!(engine.poll_timeout(), None);
    assert_eq!(
        engine.handle_response(Time::from_secs(5), untimed[0], Ok(uuid_answer())),
        Delivery::Delivered
    );
    let timed = requests(&drain(&mut engine));
    assert_eq!(engine.poll_timeout(), Some(Time::from_secs(7)));
    engine.handle_timeout(Time::from_secs(7));
    let out = drain(&mut engine);
    assert_eq!(cancels(&out), timed);
    // The error names the effect in the slot now and its own limit, not the first's.
    let error = finished(&out).remove(0).unwrap().unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert_eq!(error.effect, "System.GetCurrentTime");
    assert!(error.message.contains("within 2s"), "{error}");
}

#[test]
fn answered_effects_leave_their_limits_to_be_shed_so_timers_stay_few() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        let mut n = 0;
        loop {
            fx.perform(GenerateUuid {}).await?;
            n += 1;
            if n == 100_000 {
                return Ok(n);
            }
        }
    });
    for _ in 0..100_000 {
        let asked = requests(&drain(&mut engine));
        let _ = engine.handle_response(Time::ZERO, asked[0], Ok(uuid_answer()));
        assert!(engine.timers_armed() <= 130, "{}", engine.timers_armed());
    }
    assert_eq!(finished(&drain(&mut engine)), vec![Ok(Ok(100_000))]);
}

#[test]
fn a_program_in_the_readmes_style_survives_a_lost_answer_by_retrying_it() {
    let mut engine: Engine<Result<uuid::Uuid, EffectError>> = Engine::new(EngineConfig {
        program_timeout: Some(Duration::from_secs(300)),
        ..EngineConfig::default()
    });
    engine.spawn_async(Time::ZERO, |fx| async move {
        let schedule = Schedule::exponential(Duration::from_millis(50)).recurs(3);
        fx.retry(&schedule, GenerateUuid {}).await
    });
    let lost = requests(&drain(&mut engine));
    assert_eq!(lost.len(), 1, "the first answer is lost");
    engine.handle_timeout(Time::ZERO + LIMIT);
    drain(&mut engine);
    let retry_at = engine.poll_timeout().expect("a retry is due");
    engine.handle_timeout(retry_at);
    let again = requests(&drain(&mut engine));
    let _ = engine.handle_response(retry_at, again[0], Ok(uuid_answer()));
    assert_eq!(
        finished(&drain(&mut engine)),
        vec![Ok(Ok(uuid::Uuid::from_u128(9)))]
    );
}

/// A default limit of zero: each request a timed-out effect's retry makes runs out
/// at once, yet waits for the driver's next `handle_timeout`. The limit is queued as
/// the request is made, inside the call that fired its predecessor; firing it there
/// would let one input run the program's every retry.
#[test]
fn a_default_limit_queued_during_handle_timeout_waits_for_the_next_call() {
    let config = EngineConfig {
        effect_timeout: Some(Duration::ZERO),
        ..EngineConfig::default()
    };
    let mut engine: Engine<Out> = Engine::new(config);
    engine.spawn_async(Time::ZERO, |fx| async move {
        let mut timeouts = 0;
        while timeouts < 3 {
            match fx.perform(GenerateUuid {}).await {
                Err(error) if error.kind == ErrorKind::Timeout => timeouts += 1,
                other => return other.map(|_| 0),
            }
        }
        Ok(timeouts)
    });
    let mut asked = requests(&drain(&mut engine));
    for round in 1..=3u64 {
        assert_eq!(engine.poll_timeout(), Some(Time::ZERO), "round {round}");
        engine.handle_timeout(Time::ZERO);
        let out = drain(&mut engine);
        assert_eq!(cancels(&out), asked, "round {round}: one limit per call");
        asked = requests(&out);
        if round < 3 {
            assert_eq!(asked.len(), 1, "round {round}: the retry asks again");
            assert!(finished(&out).is_empty(), "round {round}");
        } else {
            assert_eq!(finished(&out), vec![Ok(Ok(3))]);
        }
    }
}
