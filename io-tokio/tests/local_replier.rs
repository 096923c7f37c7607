//! Answers from a task on the shard's own thread through a `LocalReplier`: every
//! answer reaches its program, and one after its effect's limit ran out is stale.
//! `LocalReplier::answer_now` resumes its program inside the call, with no task wake,
//! and falls back to the shard's queue when the shard is busy; the loop still hears
//! what it must: a timer the resumed program arms, and the end of shutdown.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use effectful::effect::{GenerateUuid, Request, Response, SystemResponse};
use effectful::{EffectId, ErrorKind};
use effectful_tokio::{Interpreter, LocalReplier, Runtime, ShardCx};
use tokio::sync::mpsc;

/// Hands each request to a task on the shard, which answers after `delay`.
struct InTask {
    to_service: mpsc::UnboundedSender<EffectId>,
}

impl InTask {
    fn start(
        replier: LocalReplier,
        delay: Duration,
        refused: mpsc::UnboundedSender<bool>,
    ) -> InTask {
        let (to_service, mut requests) = mpsc::unbounded_channel::<EffectId>();
        tokio::task::spawn_local(async move {
            while let Some(id) = requests.recv().await {
                if delay > Duration::ZERO {
                    tokio::time::sleep(delay).await;
                }
                let taken = replier.answer(id, Ok(uuid(7)));
                let _ = refused.send(!taken);
            }
        });
        InTask { to_service }
    }
}

impl Interpreter for InTask {
    fn perform(&mut self, _cx: &mut ShardCx<'_>, id: EffectId, _request: Request) {
        let _ = self.to_service.send(id);
    }
}

fn runtime(delay: Duration) -> (Runtime, mpsc::UnboundedReceiver<bool>) {
    let (refused_tx, refused) = mpsc::unbounded_channel();
    let runtime = Runtime::builder()
        .shards(1)
        .seed(3)
        .interpreter("System", move |shard| {
            InTask::start(shard.local_replier(), delay, refused_tx.clone())
        })
        .build()
        .expect("runtime");
    (runtime, refused)
}

fn system_counts(runtime: &Runtime) -> effectful_tokio::EffectCounts {
    let stats = runtime.stats().snapshot();
    stats
        .effects
        .into_iter()
        .find(|c| c.family == "System")
        .expect("System counters")
}

/// Runs one program that asks for `n` UUIDs one after another; the sum of their values.
fn sum_of_uuids(runtime: &Runtime, n: u32) -> u128 {
    runtime.block_on(async {
        let program = runtime
            .handle()
            .spawn(move |fx| async move {
                let mut sum = 0u128;
                for _ in 0..n {
                    sum += fx
                        .perform(GenerateUuid {})
                        .await
                        .expect("answered")
                        .as_u128();
                }
                sum
            })
            .await
            .expect("spawned");
        program.await.expect("finished")
    })
}

#[test]
fn every_answer_from_the_shards_thread_reaches_its_program() {
    let (runtime, mut refused) = runtime(Duration::ZERO);
    assert_eq!(sum_of_uuids(&runtime, 1_000), 7_000);
    assert_eq!(system_counts(&runtime).ok, 1_000);
    runtime.shutdown(Duration::ZERO);
    let mut answers = 0;
    while let Ok(was_refused) = refused.try_recv() {
        assert!(!was_refused, "an answer while the shard ran was refused");
        answers += 1;
    }
    assert_eq!(answers, 1_000);
}

#[test]
fn an_answer_after_the_effects_limit_is_stale() {
    let (runtime, mut refused) = runtime(Duration::from_millis(200));
    let timed_out = runtime.block_on(async {
        let late = runtime
            .handle()
            .spawn(|fx| async move {
                fx.perform_timeout(GenerateUuid {}, Duration::ZERO)
                    .await
                    .map_err(|e| e.kind)
            })
            .await
            .expect("spawned");
        late.await.expect("finished")
    });
    assert_eq!(timed_out, Err(ErrorKind::Timeout));
    // The late answer is given (and taken) 200 ms on; the shard then counts it stale.
    assert_eq!(refused.blocking_recv(), Some(false));
    let deadline = Instant::now() + Duration::from_secs(30);
    while system_counts(&runtime).stale == 0 {
        assert!(
            Instant::now() < deadline,
            "the late answer was never counted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let counts = system_counts(&runtime);
    assert_eq!((counts.ok, counts.cancelled, counts.stale), (0, 1, 1));

    runtime.shutdown(Duration::ZERO);
}

fn uuid(n: u128) -> Response {
    Response::System(SystemResponse::GenerateUuid(uuid::Uuid::from_u128(n)))
}

/// Hands each request to a task on the shard, which answers it with `answer_now`
/// after `delay`, and reports whether the program's next request reached this
/// interpreter before `answer_now` returned.
struct AnswersNow {
    to_service: mpsc::UnboundedSender<EffectId>,
    performed: Rc<Cell<u64>>,
}

impl AnswersNow {
    fn start(
        replier: LocalReplier,
        delay: Duration,
        seen: mpsc::UnboundedSender<bool>,
    ) -> AnswersNow {
        let (to_service, mut requests) = mpsc::unbounded_channel::<EffectId>();
        let performed = Rc::new(Cell::new(0));
        let counted = performed.clone();
        tokio::task::spawn_local(async move {
            while let Some(id) = requests.recv().await {
                if delay > Duration::ZERO {
                    tokio::time::sleep(delay).await;
                }
                let before = counted.get();
                assert!(replier.answer_now(id, Ok(uuid(7))), "the shard refused");
                let _ = seen.send(counted.get() > before);
            }
        });
        AnswersNow {
            to_service,
            performed,
        }
    }
}

impl Interpreter for AnswersNow {
    fn perform(&mut self, _cx: &mut ShardCx<'_>, id: EffectId, _request: Request) {
        self.performed.set(self.performed.get() + 1);
        let _ = self.to_service.send(id);
    }
}

fn answering_now(delay: Duration) -> (Runtime, mpsc::UnboundedReceiver<bool>) {
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let runtime = Runtime::builder()
        .shards(1)
        .seed(5)
        .interpreter("System", move |shard| {
            AnswersNow::start(shard.local_replier(), delay, seen_tx.clone())
        })
        .build()
        .expect("runtime");
    (runtime, seen)
}

#[test]
fn an_answer_given_now_resumes_its_program_before_the_call_returns() {
    let (runtime, mut seen) = answering_now(Duration::ZERO);
    assert_eq!(sum_of_uuids(&runtime, 1_000), 7_000);
    runtime.shutdown(Duration::ZERO);
    let mut resumed_inside = Vec::new();
    while let Ok(inside) = seen.try_recv() {
        resumed_inside.push(inside);
    }
    assert_eq!(resumed_inside.len(), 1_000);
    // Every answer but the last made the program ask again inside `answer_now`.
    assert!(
        resumed_inside[..999].iter().all(|&inside| inside),
        "an answer was queued although the shard was idle"
    );
    assert!(
        !resumed_inside[999],
        "the program asked again after its last effect"
    );
}

/// Answers inside its own hook with `answer_now`: the shard is busy then, so the
/// answer is queued, and still reaches its program.
struct AnswersInsideTheHook {
    replier: LocalReplier,
}

impl Interpreter for AnswersInsideTheHook {
    fn perform(&mut self, _cx: &mut ShardCx<'_>, id: EffectId, _request: Request) {
        assert!(self.replier.answer_now(id, Ok(uuid(3))));
    }
}

#[test]
fn an_answer_given_now_from_inside_a_hook_is_queued_and_still_delivered() {
    let runtime = Runtime::builder()
        .shards(1)
        .seed(5)
        .interpreter("System", |shard| AnswersInsideTheHook {
            replier: shard.local_replier(),
        })
        .build()
        .expect("runtime");
    assert_eq!(sum_of_uuids(&runtime, 100), 300);
    runtime.shutdown(Duration::ZERO);
}

#[test]
fn a_timer_armed_by_a_program_resumed_now_fires_on_time() {
    let (runtime, _seen) = answering_now(Duration::ZERO);
    let waited = runtime.block_on(async {
        let program = runtime
            .handle()
            .spawn(|fx| async move {
                // The effect's 30 s limit arms the shard's sleep; the program, resumed
                // inside `answer_now`, then sleeps far less than that.
                fx.perform(GenerateUuid {}).await.expect("answered");
                let start = Instant::now();
                fx.sleep(Duration::from_millis(50)).await;
                start.elapsed()
            })
            .await
            .expect("spawned");
        program.await.expect("finished")
    });
    assert!(
        waited >= Duration::from_millis(50),
        "woke early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "the sleep waited for the shard's older, later deadline: {waited:?}"
    );
    runtime.shutdown(Duration::ZERO);
}

/// `answer_now` resumes the program without reading the clock: the engine's time is
/// still the spawn's, 200 ms earlier. Timers the program arms then must count from
/// no earlier than the answer (the shard's loop reads the clock for them), or they
/// would fire at once.
#[test]
fn timers_armed_after_an_answer_given_now_count_from_the_answer_not_the_older_time() {
    const DELAY: Duration = Duration::from_millis(200);
    const LIMIT: Duration = Duration::from_millis(150);
    const SLEEP: Duration = Duration::from_millis(100);
    let (seen_tx, _seen) = mpsc::unbounded_channel();
    let config = effectful::EngineConfig {
        effect_timeout: Some(LIMIT),
        ..effectful::EngineConfig::default()
    };
    let runtime = Runtime::builder()
        .shards(1)
        .seed(5)
        .engine(config)
        .interpreter("System", move |shard| {
            AnswersNow::start(shard.local_replier(), DELAY, seen_tx.clone())
        })
        .build()
        .expect("runtime");
    let (slept, limited, error) = runtime.block_on(async {
        let program = runtime
            .handle()
            .spawn(|fx| async move {
                // Untimed: answered after DELAY, longer than the default limit.
                fx.perform_untimed(GenerateUuid {}).await.expect("answered");
                let start = Instant::now();
                fx.sleep(SLEEP).await;
                let slept = start.elapsed();
                fx.perform_untimed(GenerateUuid {}).await.expect("answered");
                // Under the default limit, and answered after it ran out.
                let start = Instant::now();
                let error = fx.perform(GenerateUuid {}).await.map_err(|e| e.kind);
                (slept, start.elapsed(), error)
            })
            .await
            .expect("spawned");
        program.await.expect("finished")
    });
    assert!(slept >= SLEEP, "the sleep ended early: {slept:?}");
    assert_eq!(error, Err(ErrorKind::Timeout));
    assert!(
        limited >= LIMIT,
        "the default limit ran out early: {limited:?}"
    );
    assert!(limited < DELAY + Duration::from_secs(5), "{limited:?}");
    runtime.shutdown(Duration::ZERO);
}

#[test]
fn a_program_that_ends_inside_answer_now_during_shutdown_lets_the_runtime_stop() {
    let (runtime, _seen) = answering_now(Duration::from_millis(100));
    // Its result is not awaited: dropping the handle leaves the program running.
    runtime.block_on(async {
        let handle = runtime
            .handle()
            .spawn(|fx| async move {
                fx.perform(GenerateUuid {}).await.expect("answered");
            })
            .await
            .expect("spawned");
        drop(handle);
    });
    let start = Instant::now();
    let report = runtime.shutdown(Duration::from_secs(30));
    let took = start.elapsed();
    assert_eq!(report.finished_in_grace, 1, "{report:?}");
    assert_eq!(report.aborted, 0, "{report:?}");
    assert!(
        took < Duration::from_secs(5),
        "shutdown waited for the grace period although its last program had ended: {took:?}"
    );
}
