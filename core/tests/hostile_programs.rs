//! Programs that misbehave, as an attacker or a careless user would write them: the
//! engine stays bounded, isolated and exact whatever they do.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use effectful::effect::*;
use effectful::*;

mod support;
use support::*;

type Out = Result<u64, EffectError>;

fn uuid_answer() -> Response {
    Response::System(SystemResponse::GenerateUuid(uuid::Uuid::nil()))
}

/// A clock reader beside the hostile program: it must keep being served.
async fn bystander(fx: Fx) -> Out {
    let mut sum = 0;
    for _ in 0..3 {
        sum += fx.perform(GetCurrentTime {}).await?.unix_micros() as u64;
    }
    Ok(sum)
}

/// Answers every System request among `outputs`.
fn answer_all(engine: &mut Engine<Out>, outputs: &[Output<Out>]) {
    for output in outputs {
        if let Output::Request { id, request } = output {
            let answer = match request {
                Request::System(SystemRequest::GetCurrentTime(_)) => Response::System(
                    SystemResponse::GetCurrentTime(Timestamp::from_unix_micros(1)),
                ),
                Request::System(_) => uuid_answer(),
                // A client's next frame never comes in these tests.
                _ => continue,
            };
            let _ = engine.handle_response(engine.now(), *id, Ok(answer));
        }
    }
}

#[test]
fn a_zero_delay_retry_yields_at_every_attempt_and_ends_as_spinning_while_time_stands_still() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    let spinner = engine.spawn_async(Time::ZERO, |fx| async move {
        fx.retry_with(&Schedule::spaced(Duration::ZERO), || {
            fx.perform_timeout(GenerateUuid {}, Duration::ZERO)
        })
        .await
        .map(|_| 0)
    });
    engine.spawn_async(Time::ZERO, bystander);
    let mut results = Vec::new();
    let mut inputs = 0u64;
    let mut most_outputs = 0;
    while engine.programs() > 0 {
        let outputs = drain(&mut engine);
        most_outputs = most_outputs.max(outputs.len());
        assert!(
            engine.timers_armed() < 1_000,
            "timers pile up: {}",
            engine.timers_armed()
        );
        // The spinner's attempts go unanswered: each fails when its zero limit fires.
        let (theirs, served): (Vec<_>, Vec<_>) = outputs
            .into_iter()
            .partition(|o| matches!(o, Output::Request { id, .. } if id.program() == spinner));
        drop(theirs);
        answer_all(&mut engine, &served);
        for output in served {
            if let Output::Finished { program, result } = output {
                results.push((program, result));
            }
        }
        // Time never moves in this run: only timers already due are fired.
        if engine.poll_timeout() == Some(Time::ZERO) {
            engine.handle_timeout(Time::ZERO);
        }
        inputs += 1;
        assert!(inputs < 1_000_000, "the spinner was never stopped");
    }
    for output in drain(&mut engine) {
        if let Output::Finished { program, result } = output {
            results.push((program, result));
        }
    }
    // One input, one attempt: a request and its cancellation at most, plus the
    // bystander's answer and results.
    assert!(most_outputs <= 6, "{most_outputs} outputs from one input");
    assert_eq!(results.len(), 2);
    let (_, bystander) = results.iter().find(|(p, _)| *p != spinner).unwrap();
    assert_eq!(bystander, &Ok(Ok(3)), "the other program was served");
    let (_, spun) = results.iter().find(|(p, _)| *p == spinner).unwrap();
    let Err(ProgramError::Spinning { wakes }) = spun else {
        panic!("the spinner ended with {spun:?}");
    };
    assert!(*wakes > 100_000);
    assert!(spun.as_ref().unwrap_err().to_string().contains("Schedule"));
}

#[test]
fn a_zero_delay_retry_runs_forever_without_harm_when_time_moves() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        fx.retry_with(&Schedule::spaced(Duration::ZERO), || {
            fx.perform_timeout(GenerateUuid {}, Duration::ZERO)
        })
        .await
        .map(|_| 0)
    });
    let mut now = Time::ZERO;
    for _ in 0..200_000 {
        let outputs = drain(&mut engine);
        assert!(
            outputs.len() <= 2,
            "{} outputs from one input",
            outputs.len()
        );
        now = now + Duration::from_nanos(1);
        engine.handle_timeout(now);
    }
    assert_eq!(engine.programs(), 1, "still retrying, as its schedule says");
    assert!(engine.timers_armed() < 1_000);
}

#[test]
fn a_zero_sleep_yields_to_the_driver_instead_of_completing_inside_the_call() {
    let mut engine: Engine<u8> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        fx.sleep(Duration::ZERO).await;
        fx.sleep_until(Time::ZERO).await;
        7
    });
    assert!(finished(&drain(&mut engine)).is_empty());
    assert_eq!(engine.poll_timeout(), Some(Time::ZERO));
    engine.handle_timeout(Time::ZERO);
    assert!(finished(&drain(&mut engine)).is_empty());
    engine.handle_timeout(Time::ZERO);
    assert_eq!(finished(&drain(&mut engine)), vec![Ok(7)]);
}

/// Panics when dropped.
struct Grenade;

impl Drop for Grenade {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("grenade went off");
        }
    }
}

/// Ends `program` with `end`, then checks it finished exactly once as a panic and that
/// the bystander still finishes.
fn assert_dropped_panic_is_contained(
    mut engine: Engine<Out>,
    program: ProgramId,
    end: impl FnOnce(&mut Engine<Out>),
    was: &str,
) {
    let bystander = engine.spawn_async(engine.now(), bystander);
    let before = drain(&mut engine);
    answer_all(&mut engine, &before);
    end(&mut engine);
    let mut results = Vec::new();
    for _ in 0..10 {
        let outputs = drain(&mut engine);
        answer_all(&mut engine, &outputs);
        for output in outputs {
            if let Output::Finished { program, result } = output {
                results.push((program, result));
            }
        }
    }
    let ended: Vec<_> = results.iter().filter(|(p, _)| *p == program).collect();
    assert_eq!(ended.len(), 1, "{results:?}");
    let Err(ProgramError::Panicked { message }) = &ended[0].1 else {
        panic!("{:?}", ended[0].1);
    };
    assert!(message.contains("grenade went off"), "{message}");
    assert!(message.contains(was), "{message}");
    assert!(
        results
            .iter()
            .any(|(p, r)| *p == bystander && r == &Ok(Ok(3)))
    );
    assert_eq!(engine.programs(), 0);
}

#[test]
fn a_panic_in_a_programs_destructor_at_abort_is_reported_once() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    let program = engine.spawn_async(Time::ZERO, |fx| async move {
        let _grenade = Grenade;
        fx.perform_untimed(ReceiveText {}).await.map(|_| 0)
    });
    assert_dropped_panic_is_contained(
        engine,
        program,
        |engine| assert!(engine.abort(Time::ZERO, program)),
        "aborted",
    );
}

#[test]
fn a_panic_in_a_programs_destructor_at_its_deadline_is_reported_once() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    let program = engine.spawn_async(Time::ZERO, |fx| async move {
        let _grenade = Grenade;
        fx.perform(ReceiveText {}).await.map(|_| 0)
    });
    assert!(engine.set_deadline(Time::ZERO, program, Some(Time::from_secs(1))));
    assert_dropped_panic_is_contained(
        engine,
        program,
        |engine| engine.handle_timeout(Time::from_secs(1)),
        "deadline",
    );
}

/// A hand-written program that returns at once and panics when the engine drops it.
struct ReturnsThenExplodes(#[allow(dead_code)] Grenade);

impl Program for ReturnsThenExplodes {
    type Output = Out;
    fn resume(&mut self, _cx: &mut Cx<'_>, _event: Event) -> Poll<Out> {
        Poll::Ready(Ok(1))
    }
}

#[test]
fn a_panic_in_a_programs_destructor_at_its_end_is_reported_once() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, bystander);
    let program = engine.spawn(Time::ZERO, ReturnsThenExplodes(Grenade));
    let outputs = drain(&mut engine);
    let ended: Vec<_> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Finished { program: p, result } if *p == program => Some(result),
            _ => None,
        })
        .collect();
    assert_eq!(ended.len(), 1);
    let Err(ProgramError::Panicked { message }) = ended[0] else {
        panic!("{:?}", ended[0]);
    };
    assert!(message.contains("it had returned"), "{message}");
    assert_eq!(engine.programs(), 1, "the bystander runs on");
}

/// Asks for one effect, shares its id, then waits on it.
struct Victim(Rc<Cell<Option<EffectId>>>);

impl Program for Victim {
    type Output = Out;
    fn resume(&mut self, cx: &mut Cx<'_>, event: Event) -> Poll<Out> {
        match event {
            Event::Start => {
                self.0.set(Some(cx.perform(GenerateUuid {})));
                Poll::Pending
            }
            _ => Poll::Ready(Ok(1)),
        }
    }
}

/// Asks for its own effect, then tries to cancel the victim's.
struct Thief(Rc<Cell<Option<EffectId>>>, Rc<Cell<Option<bool>>>);

impl Program for Thief {
    type Output = Out;
    fn resume(&mut self, cx: &mut Cx<'_>, event: Event) -> Poll<Out> {
        match event {
            Event::Start => {
                cx.perform(GenerateUuid {});
                let stolen = self.0.get().expect("the victim went first");
                // The victim's slot and generation may well equal ours.
                self.1.set(Some(cx.cancel(stolen)));
                Poll::Pending
            }
            _ => Poll::Ready(Ok(2)),
        }
    }
}

#[test]
fn cancelling_another_programs_effect_is_refused() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    let shared = Rc::new(Cell::new(None));
    let refused = Rc::new(Cell::new(None));
    engine.spawn(Time::ZERO, Victim(shared.clone()));
    engine.spawn(Time::ZERO, Thief(shared, refused.clone()));
    let outputs = drain(&mut engine);
    assert_eq!(refused.get(), Some(false), "the cancel was refused");
    assert!(cancels(&outputs).is_empty());
    let asked = requests(&outputs);
    assert_eq!(asked.len(), 2);
    for id in &asked {
        assert_eq!(engine.outstanding(id.program()), Some(1), "{id:?}");
    }
    answer_all(&mut engine, &outputs);
    let mut done = finished(&drain(&mut engine));
    done.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(done, vec![Ok(Ok(1)), Ok(Ok(2))]);
}

#[test]
fn an_effect_handle_kept_past_its_programs_end_emits_nothing() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    let kept: Rc<RefCell<Option<Fx>>> = Rc::default();
    let stash = kept.clone();
    let ended = engine.spawn_async(Time::ZERO, move |fx| async move {
        *stash.borrow_mut() = Some(fx);
        Ok(0)
    });
    assert_eq!(finished(&drain(&mut engine)), vec![Ok(Ok(0))]);
    engine.spawn_async(Time::ZERO, move |fx| async move {
        let stale = kept.borrow_mut().take().expect("kept");
        let refused = stale.perform(GenerateUuid {}).await;
        let error = refused.expect_err("nothing performs a dead program's effect");
        assert!(!error.retryable);
        assert!(error.message.contains("ended"), "{error}");
        assert!(
            stale
                .perform_all([GenerateUuid {}, GenerateUuid {}])
                .await
                .iter()
                .all(Result::is_err)
        );
        stale.sleep(Duration::from_secs(5)).await;
        // Its own handle still works.
        fx.perform(GenerateUuid {}).await.map(|_| 5)
    });
    let outputs = drain(&mut engine);
    let asked: Vec<_> = requests(&outputs);
    assert_eq!(asked.len(), 1);
    assert!(asked.iter().all(|id| id.program() != ended));
    answer_all(&mut engine, &outputs);
    assert_eq!(finished(&drain(&mut engine)), vec![Ok(Ok(5))]);
}

#[test]
fn deadlines_of_many_waiting_programs_survive_the_timer_queue_shedding_dead_timers() {
    let config = EngineConfig {
        program_timeout: Some(Duration::from_secs(10)),
        ..EngineConfig::default()
    };
    let mut engine: Engine<Out> = Engine::new(config);
    for i in 0..500 {
        // Programs that end at once leave dead deadlines behind to shed.
        engine.spawn_async(Time::from_millis(i), |_fx| async { Ok(0) });
        engine.spawn_async(Time::from_millis(i), |fx| async move {
            fx.perform(ReceiveText {}).await.map(|_| 1)
        });
    }
    drain(&mut engine);
    assert!(engine.timers_armed() < 1_500, "{}", engine.timers_armed());
    engine.handle_timeout(Time::from_secs(20));
    let done = finished(&drain(&mut engine));
    assert_eq!(done.len(), 500);
    assert!(
        done.iter()
            .all(|r| matches!(r, Err(ProgramError::DeadlineExceeded { .. })))
    );
}
