//! The runtime's promises: programs run across shards and report exactly once,
//! interpreters hear what they must, shutdown is graceful, panics stay contained.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use effectful::effect::{
    AuthResponse, GenerateUuid, GetCachedValue, GetCurrentTime, Request, Response, SystemResponse,
    WaitForShutdown,
};
use effectful::{
    Cx, EffectError, EffectId, EngineConfig, ErrorKind, Event, Program, ProgramError, ProgramId,
};
use effectful_tokio::{Interpreter, Runtime, ShardCx, SpawnError, SystemInterpreter};

fn system_runtime(shards: usize) -> Runtime {
    Runtime::builder()
        .shards(shards)
        .seed(7)
        .interpreter("System", |_| SystemInterpreter::new())
        .build()
        .expect("runtime")
}

#[test]
fn programs_spread_over_shards_and_each_reports_its_result() {
    let runtime = system_runtime(2);
    let shards = Arc::new(Mutex::new(HashSet::new()));
    let ids = runtime.block_on(async {
        let mut handles = Vec::new();
        for i in 0..16u32 {
            let shards = shards.clone();
            handles.push(
                runtime
                    .handle()
                    .spawn(move |fx| async move {
                        shards
                            .lock()
                            .expect("not poisoned")
                            .insert(std::thread::current().name().map(str::to_string));
                        let id = fx.perform(GenerateUuid {}).await?;
                        let at = fx.perform(GetCurrentTime {}).await?;
                        Ok::<_, EffectError>((i, id, at))
                    })
                    .await
                    .expect("spawned"),
            );
        }
        let mut ids = Vec::new();
        for handle in handles {
            ids.push(handle.await.expect("finished").expect("effects answered"));
        }
        ids
    });
    assert_eq!(
        ids.iter().map(|(i, ..)| *i).collect::<Vec<_>>(),
        (0..16).collect::<Vec<_>>()
    );
    let distinct: HashSet<_> = ids.iter().map(|(_, id, _)| *id).collect();
    assert_eq!(
        distinct.len(),
        16,
        "UUIDs come from OS entropy, all distinct"
    );
    assert_eq!(
        *shards.lock().expect("not poisoned"),
        HashSet::from([
            Some("effectful-shard-0".to_string()),
            Some("effectful-shard-1".to_string())
        ])
    );
    let stats = runtime.stats().snapshot();
    assert_eq!(
        stats.family("System").map(|c| (c.requested, c.ok)),
        Some((32, 32))
    );
    assert_eq!(stats.finished("ok"), 16);
    assert_eq!(stats.running(), 0);
    runtime.shutdown(Duration::ZERO);
}

#[test]
fn an_effect_of_a_family_without_interpreter_fails_naming_the_families_there_are() {
    let runtime = system_runtime(1);
    let result = runtime.block_on(async {
        let handle = runtime
            .handle()
            .spawn(|fx| async move { fx.perform(GetCachedValue { key: "k".into() }).await });
        handle.await.expect("spawned").await.expect("finished")
    });
    let error = result.expect_err("no Cache interpreter");
    assert_eq!(error.effect, "Cache.GetCachedValue");
    assert_eq!(
        error.kind,
        ErrorKind::Unhandled {
            available: vec!["System".to_string()]
        }
    );
    assert_eq!(
        runtime
            .stats()
            .snapshot()
            .family("unhandled")
            .map(|c| c.error),
        Some(1)
    );
}

#[test]
fn a_program_that_panics_ends_alone_and_the_other_programs_on_its_shard_keep_running() {
    let runtime = system_runtime(2);
    let (panicked, others) = runtime.block_on(async {
        let mut others = Vec::new();
        for _ in 0..8 {
            others.push(
                runtime
                    .handle()
                    .spawn(|fx| async move {
                        fx.sleep(Duration::from_millis(50)).await;
                        fx.perform(GenerateUuid {}).await.map(|_| "still running")
                    })
                    .await
                    .expect("spawned"),
            );
        }
        let panicking = runtime
            .handle()
            .spawn(|fx| async move {
                fx.perform(GenerateUuid {}).await.expect("answered");
                if fx.program().index() < u32::MAX {
                    panic!("a bug in one program");
                }
            })
            .await
            .expect("spawned");
        let panicked = panicking.await;
        let mut results = Vec::new();
        for other in others {
            results.push(other.await);
        }
        (panicked, results)
    });
    assert_eq!(
        panicked,
        Err(ProgramError::Panicked {
            message: "a bug in one program".into()
        })
    );
    assert!(
        others.iter().all(|r| r == &Ok(Ok("still running"))),
        "{others:?}"
    );
}

#[test]
fn shutdown_answers_wait_for_shutdown_lets_programs_finish_then_aborts_the_rest_each_reporting_once()
 {
    let runtime = system_runtime(2);
    let handle = runtime.handle().clone();
    let (winding_down, stuck) = runtime.block_on(async {
        let mut winding_down = Vec::new();
        for i in 0..10u32 {
            winding_down.push(
                handle
                    .spawn(move |fx| async move {
                        fx.perform(WaitForShutdown {}).await?;
                        // Wind down on our own terms: one more effect after the notice.
                        fx.perform(GenerateUuid {}).await?;
                        Ok::<_, EffectError>(i)
                    })
                    .await
                    .expect("spawned"),
            );
        }
        let mut stuck = Vec::new();
        for _ in 0..5 {
            stuck.push(
                handle
                    .spawn(|fx| async move {
                        fx.sleep(Duration::from_secs(3600)).await;
                        "woke up an hour later"
                    })
                    .await
                    .expect("spawned"),
            );
        }
        (winding_down, stuck)
    });
    // Let every program reach its first wait.
    while runtime.stats().snapshot().spawned < 15 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    let report = runtime.shutdown(Duration::from_millis(200));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(report.finished_in_grace, 10);
    assert_eq!(report.aborted, 5);
    assert_eq!(report.refused, 0);
    for (i, handle) in winding_down.into_iter().enumerate() {
        assert_eq!(handle.blocking_join(), Ok(Ok(i as u32)));
    }
    for handle in stuck {
        assert_eq!(handle.blocking_join(), Err(ProgramError::Aborted));
    }
    assert_eq!(
        handle.try_spawn(|_fx| async {}).err(),
        Some(SpawnError::ShuttingDown)
    );
}

#[test]
fn a_program_asking_for_shutdown_after_it_began_is_answered_at_once() {
    let runtime = system_runtime(1);
    let handle = runtime.handle().clone();
    let late = handle
        .try_spawn(|fx| async move {
            fx.perform(WaitForShutdown {}).await?;
            // The notice came; asking again is answered at once.
            fx.perform(WaitForShutdown {}).await?;
            Ok::<_, EffectError>("saw shutdown twice")
        })
        .expect("room");
    while runtime.stats().snapshot().spawned < 1 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let report = runtime.shutdown(Duration::from_secs(5));
    assert_eq!(report.finished_in_grace, 1);
    assert_eq!(late.blocking_join(), Ok(Ok("saw shutdown twice")));
}

#[test]
fn try_spawn_refuses_when_every_queue_is_full_and_spawn_waits_for_room() {
    // A shard blocked in an interpreter cannot take programs: its queue fills.
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().expect("not poisoned");
    let blocking = gate.clone();
    let runtime = Runtime::builder()
        .shards(1)
        .queue_capacity(2)
        .interpreter("System", move |_| Blocking(blocking.clone()))
        .build()
        .expect("runtime");
    let handle = runtime.handle().clone();
    let first = handle
        .try_spawn(|fx| async move { fx.perform(GenerateUuid {}).await.is_ok() })
        .expect("room");
    // Wait until the shard is stuck in the interpreter, then fill the queue.
    while runtime.stats().snapshot().spawned < 1 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let queued: Vec<_> = (0..2)
        .map(|_| handle.try_spawn(|_fx| async { true }).expect("room"))
        .collect();
    assert_eq!(
        handle.try_spawn(|_fx| async { true }).err(),
        Some(SpawnError::Full { capacity: 2 })
    );
    drop(held);
    let waited = runtime.block_on(async { handle.spawn(|_fx| async { true }).await });
    assert!(first.blocking_join().expect("finished"));
    for q in queued {
        assert!(q.blocking_join().expect("finished"));
    }
    assert!(
        waited
            .expect("spawned after waiting")
            .blocking_join()
            .expect("finished")
    );
}

/// Answers System requests only once the gate opens (blocks its shard: for the
/// backpressure test only).
struct Blocking(Arc<Mutex<()>>);

impl Interpreter for Blocking {
    fn perform(&mut self, cx: &mut ShardCx<'_>, id: EffectId, _request: Request) {
        let _open = self.0.lock().expect("not poisoned");
        cx.answer(
            id,
            Ok(Response::System(SystemResponse::GenerateUuid(
                uuid::Uuid::nil(),
            ))),
        );
    }
}

/// Counts what the driver tells it: every program's end, every cancellation.
#[derive(Clone, Default)]
struct Heard {
    finished: Arc<Mutex<Vec<ProgramId>>>,
    cancelled: Arc<AtomicU64>,
}

struct Never(Heard);

impl Interpreter for Never {
    fn perform(&mut self, _cx: &mut ShardCx<'_>, _id: EffectId, _request: Request) {}
    fn cancel(&mut self, _cx: &mut ShardCx<'_>, _id: EffectId) {
        self.0.cancelled.fetch_add(1, Ordering::SeqCst);
    }
    fn program_finished(&mut self, _cx: &mut ShardCx<'_>, program: ProgramId) {
        self.0.finished.lock().expect("not poisoned").push(program);
    }
}

#[test]
fn interpreters_hear_each_cancellation_and_each_program_end_however_it_ends() {
    let heard = Heard::default();
    let h = heard.clone();
    let runtime = Runtime::builder()
        .shards(1)
        .engine(EngineConfig {
            program_timeout: Some(Duration::from_millis(100)),
            ..EngineConfig::default()
        })
        .interpreter("Cache", move |_| Never(h.clone()))
        .build()
        .expect("runtime");
    let results = runtime.block_on(async {
        let timed_out = runtime
            .handle()
            .spawn(|fx| async move {
                fx.perform_timeout(
                    GetCachedValue { key: "a".into() },
                    Duration::from_millis(10),
                )
                .await
                .is_err()
            })
            .await
            .expect("spawned");
        let past_deadline = runtime
            .handle()
            .spawn(|fx| async move {
                let _ = fx.perform(GetCachedValue { key: "b".into() }).await;
                true
            })
            .await
            .expect("spawned");
        (timed_out.await, past_deadline.await)
    });
    assert_eq!(results.0, Ok(true));
    assert!(matches!(
        results.1,
        Err(ProgramError::DeadlineExceeded { .. })
    ));
    assert_eq!(heard.cancelled.load(Ordering::SeqCst), 2);
    assert_eq!(heard.finished.lock().expect("not poisoned").len(), 2);
    let cache = runtime.stats().snapshot();
    let cache = cache.family("Cache").expect("registered");
    assert_eq!((cache.requested, cache.cancelled), (2, 2));
}

/// Hashes for a long time: on the CPU pool, off the shard.
struct SlowHash;

impl Interpreter for SlowHash {
    fn perform(&mut self, cx: &mut ShardCx<'_>, id: EffectId, request: Request) {
        cx.offload(id, request.name(), || {
            std::thread::sleep(Duration::from_millis(300));
            Ok(Response::Auth(AuthResponse::HashPassword(
                "slow-hash".into(),
            )))
        });
    }
}

#[test]
fn cpu_heavy_work_runs_off_the_shard_so_other_programs_on_it_keep_going() {
    let runtime = Runtime::builder()
        .shards(1)
        .interpreter("System", |_| SystemInterpreter::new())
        .interpreter("Auth", |_| SlowHash)
        .build()
        .expect("runtime");
    let (slow_done, fast_done) = runtime.block_on(async {
        let slow = runtime
            .handle()
            .spawn(|fx| async move {
                let hash = fx
                    .perform(effectful::effect::HashPassword {
                        password: "hunter2".into(),
                    })
                    .await;
                assert_eq!(hash, Ok("slow-hash".to_string()));
                Instant::now()
            })
            .await
            .expect("spawned");
        let fast = runtime
            .handle()
            .spawn(|fx| async move {
                for _ in 0..100 {
                    fx.perform(GenerateUuid {}).await.expect("answered");
                }
                Instant::now()
            })
            .await
            .expect("spawned");
        (slow.await.expect("ran"), fast.await.expect("ran"))
    });
    assert!(
        fast_done < slow_done,
        "100 effects on the same shard finished while the slow hash ran"
    );
}

/// A hand-written program: asks for one UUID and returns it.
struct OneUuid(Option<EffectId>);

impl Program for OneUuid {
    type Output = Result<uuid::Uuid, EffectError>;
    fn resume(&mut self, cx: &mut Cx<'_>, event: Event) -> Poll<Self::Output> {
        match event {
            Event::Start => {
                self.0 = Some(cx.perform(GenerateUuid {}));
                Poll::Pending
            }
            Event::Response { result, .. } => {
                Poll::Ready(result.and_then(effectful::decode::<effectful::Std, GenerateUuid>))
            }
            Event::Timer { .. } => Poll::Pending,
        }
    }
}

#[test]
fn hand_written_programs_run_on_the_runtime_too() {
    let runtime = system_runtime(1);
    let id = runtime.block_on(async {
        let handle = runtime
            .handle()
            .spawn_program(|| OneUuid(None))
            .await
            .expect("spawned");
        handle.await
    });
    assert_eq!(
        id.expect("finished").expect("answered").get_version_num(),
        4
    );
}

#[test]
fn registering_two_interpreters_for_one_family_is_refused_with_a_clear_error() {
    let error = Runtime::builder()
        .shards(1)
        .interpreter("System", |_| SystemInterpreter::new())
        .interpreter("System", |_| SystemInterpreter::new())
        .build()
        .err()
        .expect("refused");
    assert!(error.to_string().contains("two interpreters"), "{error}");
    let error = Runtime::builder()
        .interpreter("System.GenerateUuid", |_| SystemInterpreter::new())
        .build()
        .err()
        .expect("refused");
    assert!(error.to_string().contains("before the dot"), "{error}");
}

#[test]
fn waiting_for_shutdown_outlasts_the_default_per_effect_timeout() {
    let runtime = Runtime::builder()
        .shards(1)
        .engine(EngineConfig {
            effect_timeout: Some(Duration::from_millis(20)),
            ..EngineConfig::default()
        })
        .interpreter("System", |_| SystemInterpreter::new())
        .build()
        .expect("runtime");
    let waiting = runtime
        .handle()
        .try_spawn(|fx| async move { fx.perform(WaitForShutdown {}).await })
        .expect("room");
    // Once it has begun, and well past the default limit, the program still waits.
    while runtime.stats().snapshot().spawned < 1 {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(runtime.stats().snapshot().running(), 1);
    runtime.shutdown(Duration::from_secs(5));
    assert_eq!(waiting.blocking_join(), Ok(Ok(())));
}

#[test]
fn a_program_whose_making_panics_is_reported_aborted_and_its_shard_keeps_going() {
    let runtime = system_runtime(1);
    let (broken, next) = runtime.block_on(async {
        let broken = runtime
            .handle()
            .spawn(|_fx| -> std::future::Ready<u8> { panic!("no program today") })
            .await
            .expect("spawned");
        let next = runtime
            .handle()
            .spawn(|fx| async move { fx.perform(GenerateUuid {}).await.is_ok() })
            .await
            .expect("spawned");
        (broken.await, next.await)
    });
    assert_eq!(broken, Err(ProgramError::Aborted));
    assert_eq!(next, Ok(true));
}

/// An interpreter that panics on every effect it is asked to perform.
struct Exploding;

impl Interpreter for Exploding {
    fn perform(&mut self, _cx: &mut ShardCx<'_>, _id: EffectId, _request: Request) {
        panic!("the cache client blew up");
    }
}

#[test]
fn a_panicking_interpreter_fails_that_effect_and_the_shard_keeps_serving() {
    let runtime = Runtime::builder()
        .shards(1)
        .interpreter("System", |_| SystemInterpreter::new())
        .interpreter("Cache", |_| Exploding)
        .build()
        .expect("runtime");
    let (failed, served) = runtime.block_on(async {
        let failed = runtime
            .handle()
            .spawn(|fx| async move { fx.perform(GetCachedValue { key: "k".into() }).await })
            .await
            .expect("spawned");
        let served = runtime
            .handle()
            .spawn(|fx| async move { fx.perform(GenerateUuid {}).await })
            .await
            .expect("spawned");
        (failed.await.expect("ran"), served.await.expect("ran"))
    });
    let error = failed.expect_err("the effect fails");
    assert_eq!(error.kind, ErrorKind::Unavailable);
    assert!(!error.retryable);
    assert!(
        error.message.contains("the cache client blew up"),
        "{error}"
    );
    assert!(served.is_ok(), "the shard went on serving: {served:?}");
}
