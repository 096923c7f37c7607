//! The shard round trip `tokio/step` measures, shared with `examples/shardcount.rs`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use effectful::EffectId;
use effectful::effect::{GenerateUuid, Request, Response, SystemResponse};
use effectful_tokio::{Interpreter, LocalReplier, Replier, Runtime, ShardCx};
use tokio::sync::{mpsc, oneshot};

/// The service's answer to every request.
pub fn uuid_answer() -> Response {
    Response::System(SystemResponse::GenerateUuid(uuid::Uuid::from_u128(42)))
}

/// Answers inside the drain loop.
pub struct Inline;

impl Interpreter for Inline {
    fn perform(&mut self, cx: &mut ShardCx<'_>, id: EffectId, _request: Request) {
        cx.answer(id, Ok(uuid_answer()));
    }
}

/// How a service task hands its answer back to the shard.
pub trait Answers: 'static {
    fn answer(&self, id: EffectId, response: Response) -> bool;
}

impl Answers for Replier {
    fn answer(&self, id: EffectId, response: Response) -> bool {
        Replier::answer(self, id, Ok(response))
    }
}

impl Answers for LocalReplier {
    fn answer(&self, id: EffectId, response: Response) -> bool {
        LocalReplier::answer(self, id, Ok(response))
    }
}

/// Answers with [`LocalReplier::answer_now`]: the program resumes inside the call.
pub struct AnswerNow(pub LocalReplier);

impl Answers for AnswerNow {
    fn answer(&self, id: EffectId, response: Response) -> bool {
        self.0.answer_now(id, Ok(response))
    }
}

/// Hands each request to a service task on the shard, which answers through `replier`.
pub struct InTask {
    to_service: mpsc::UnboundedSender<(EffectId, Request)>,
}

impl InTask {
    /// Spawns the service task on the shard's thread.
    pub fn start(replier: impl Answers) -> InTask {
        let (to_service, mut requests) = mpsc::unbounded_channel::<(EffectId, Request)>();
        tokio::task::spawn_local(async move {
            while let Some((id, request)) = requests.recv().await {
                black_box(&request);
                replier.answer(id, uuid_answer());
            }
        });
        InTask { to_service }
    }
}

impl Interpreter for InTask {
    fn perform(&mut self, _cx: &mut ShardCx<'_>, id: EffectId, request: Request) {
        let _ = self.to_service.send((id, request));
    }
}

/// Runs `iters` round trips in one program on `runtime`; the time they took.
pub fn effect_loop(runtime: &Runtime, iters: u64) -> Duration {
    runtime.block_on(async {
        let start = Instant::now();
        let handle = runtime
            .handle()
            .spawn(move |fx| async move {
                for _ in 0..iters {
                    black_box(fx.perform(GenerateUuid {}).await.ok());
                }
            })
            .await
            .expect("spawned");
        handle.await.expect("finished");
        start.elapsed()
    })
}

/// The peer: `iters` round trips written as a hand-written tokio service would, on
/// `runtime` (configured as a shard's: current-thread, with timers): task A sends
/// the request over an `mpsc` channel to task B and awaits a `oneshot` reply.
pub fn oneshot_loop(runtime: &tokio::runtime::Runtime, iters: u64) -> Duration {
    runtime.block_on(async {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                type Ask = (GenerateUuid, oneshot::Sender<Response>);
                let (to_service, mut requests) = mpsc::unbounded_channel::<Ask>();
                tokio::task::spawn_local(async move {
                    while let Some((request, reply)) = requests.recv().await {
                        black_box(&request);
                        let _ = reply.send(uuid_answer());
                    }
                });
                let start = Instant::now();
                let caller = tokio::task::spawn_local(async move {
                    for _ in 0..iters {
                        let (tx, rx) = oneshot::channel();
                        let _ = to_service.send((GenerateUuid {}, tx));
                        black_box(rx.await.ok());
                    }
                });
                caller.await.expect("caller finished");
                start.elapsed()
            })
            .await
    })
}
