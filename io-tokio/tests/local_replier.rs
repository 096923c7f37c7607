//! Answers from a task on the shard's own thread through a `LocalReplier`: every
//! answer reaches its program, and one after its effect's limit ran out is stale.

use std::time::Duration;

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
                let response = SystemResponse::GenerateUuid(uuid::Uuid::from_u128(7));
                let taken = replier.answer(id, Ok(Response::System(response)));
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

#[test]
fn every_answer_from_the_shards_thread_reaches_its_program() {
    let (runtime, mut refused) = runtime(Duration::ZERO);
    let sum = runtime.block_on(async {
        let many = runtime
            .handle()
            .spawn(|fx| async move {
                let mut sum = 0u128;
                for _ in 0..1_000 {
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
        many.await.expect("finished")
    });
    assert_eq!(sum, 7_000);
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
    std::thread::sleep(Duration::from_millis(600));
    let counts = system_counts(&runtime);
    assert_eq!((counts.ok, counts.cancelled, counts.stale), (0, 1, 1));
    assert_eq!(refused.try_recv(), Ok(false));

    runtime.shutdown(Duration::ZERO);
}
