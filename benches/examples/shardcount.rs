//! Instructions per effect round trip through a shard (`tokio/step`), for
//! `valgrind --tool=callgrind`: on a shared machine the wall-clock benches wander,
//! instruction counts do not.
//!
//! ```text
//! cargo build --release -p effectful-benches --example shardcount
//! for n in 100000 200000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/sc.$n \
//!     target/release/examples/shardcount local $n 2>&1 | grep refs
//! done   # (refs(200000) - refs(100000)) / 100000 = instructions per round trip
//! ```
//!
//! `inline` answers inside the shard's drain loop (`tokio/step/effectful_inline`);
//! `local` answers from a task on the shard's thread through a `LocalReplier`
//! (`tokio/step/effectful`); `oneshot` is the hand-written peer
//! (`tokio/step/tokio_oneshot`): an `mpsc` request and a `oneshot` reply.
use std::hint::black_box;
use std::time::Duration;

use effectful::EffectId;
use effectful::effect::{GenerateUuid, Request, Response, SystemResponse};
use effectful_tokio::{Interpreter, LocalReplier, Runtime, ShardCx};
use tokio::sync::{mpsc, oneshot};

fn uuid_answer() -> Response {
    Response::System(SystemResponse::GenerateUuid(uuid::Uuid::from_u128(42)))
}

struct Inline;

impl Interpreter for Inline {
    fn perform(&mut self, cx: &mut ShardCx<'_>, id: EffectId, _request: Request) {
        cx.answer(id, Ok(uuid_answer()));
    }
}

struct InTask {
    to_service: mpsc::UnboundedSender<(EffectId, Request)>,
}

impl InTask {
    fn start(replier: LocalReplier) -> InTask {
        let (to_service, mut requests) = mpsc::unbounded_channel::<(EffectId, Request)>();
        tokio::task::spawn_local(async move {
            while let Some((id, request)) = requests.recv().await {
                black_box(&request);
                replier.answer(id, Ok(uuid_answer()));
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

fn effectful(runtime: Runtime, n: u64) {
    runtime.block_on(async {
        let handle = runtime
            .handle()
            .spawn(move |fx| async move {
                for _ in 0..n {
                    black_box(fx.perform(GenerateUuid {}).await.ok());
                }
            })
            .await
            .expect("spawned");
        handle.await.expect("finished");
    });
    runtime.shutdown(Duration::ZERO);
}

fn oneshot(n: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
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
                let caller = tokio::task::spawn_local(async move {
                    for _ in 0..n {
                        let (tx, rx) = oneshot::channel();
                        let _ = to_service.send((GenerateUuid {}, tx));
                        black_box(rx.await.ok());
                    }
                });
                caller.await.expect("caller finished");
            })
            .await
    });
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: shardcount (inline|local|oneshot) ROUND_TRIPS";
    let kind = args.next().expect(usage);
    let n: u64 = args.next().and_then(|n| n.parse().ok()).expect(usage);
    let builder = Runtime::builder().shards(1).seed(1);
    match kind.as_str() {
        "inline" => effectful(
            builder
                .interpreter("System", |_| Inline)
                .build()
                .expect("runtime"),
            n,
        ),
        "local" => effectful(
            builder
                .interpreter("System", |shard| InTask::start(shard.local_replier()))
                .build()
                .expect("runtime"),
            n,
        ),
        "oneshot" => oneshot(n),
        _ => panic!("{usage}"),
    }
}
