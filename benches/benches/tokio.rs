//! The tokio driver's costs, each beside the hand-written tokio code that does the
//! same work, in the same run.
//!
//! - `tokio/step/effectful`: one effect round trip of a program on a shard, answered by
//!   an interpreter from its own task on the shard's thread, as a network interpreter
//!   would: the request crosses to that task over an `mpsc` channel and the answer
//!   comes back through `LocalReplier::answer_now`, which resumes the program inside
//!   the call when the shard is idle (no task wake for the answer);
//! - `tokio/step/effectful_queued`: the same, the answer queued for the shard's loop
//!   with `LocalReplier::answer`, which wakes the shard's task (two handoffs);
//! - `tokio/step/effectful_replier`: the same, the answer crossing back through the
//!   `Send` `Replier` (the shard's inbox channel), as from another thread;
//! - `tokio/step/tokio_oneshot`: the same two handoffs as a hand-written tokio service
//!   would write them: task A sends the request over an `mpsc` channel to task B and
//!   awaits a `oneshot` reply (same current-thread runtime);
//! - `tokio/step/effectful_inline`: an interpreter that answers inside the drain
//!   loop, no handoff: the driver's own cost per effect;
//! - `tokio/spawn/*`: programs started from another thread and awaited there, in
//!   batches of 1,000, against `tokio::spawn` of the same work onto a one-worker
//!   runtime from another thread.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use effectful_benches::shard_step::{AnswerNow, InTask, Inline, effect_loop, oneshot_loop};
use effectful_tokio::Runtime;

fn step(c: &mut Criterion) {
    let mut group = c.benchmark_group("tokio/step");
    group.throughput(Throughput::Elements(1));

    let in_task = Runtime::builder()
        .shards(1)
        .seed(1)
        .interpreter("System", |shard| {
            InTask::start(AnswerNow(shard.local_replier()))
        })
        .build()
        .expect("runtime");
    group.bench_function("effectful", |b| {
        b.iter_custom(|iters| effect_loop(&in_task, iters))
    });
    in_task.shutdown(Duration::ZERO);

    let in_task = Runtime::builder()
        .shards(1)
        .seed(1)
        .interpreter("System", |shard| InTask::start(shard.local_replier()))
        .build()
        .expect("runtime");
    group.bench_function("effectful_queued", |b| {
        b.iter_custom(|iters| effect_loop(&in_task, iters))
    });
    in_task.shutdown(Duration::ZERO);

    let in_task = Runtime::builder()
        .shards(1)
        .seed(1)
        .interpreter("System", |shard| InTask::start(shard.replier()))
        .build()
        .expect("runtime");
    group.bench_function("effectful_replier", |b| {
        b.iter_custom(|iters| effect_loop(&in_task, iters))
    });
    in_task.shutdown(Duration::ZERO);

    group.bench_function("tokio_oneshot", |b| {
        // Configured as a shard's runtime is: current-thread, with timers.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        b.iter_custom(|iters| oneshot_loop(&runtime, iters))
    });

    let inline = Runtime::builder()
        .shards(1)
        .seed(1)
        .interpreter("System", |_| Inline)
        .build()
        .expect("runtime");
    group.bench_function("effectful_inline", |b| {
        b.iter_custom(|iters| effect_loop(&inline, iters))
    });
    inline.shutdown(Duration::ZERO);
    group.finish();
}

const BATCH: u64 = 1_000;

fn spawn(c: &mut Criterion) {
    let mut group = c.benchmark_group("tokio/spawn");
    group.throughput(Throughput::Elements(BATCH));

    let runtime = Runtime::builder()
        .shards(1)
        .seed(1)
        .interpreter("System", |_| Inline)
        .build()
        .expect("runtime");
    group.bench_function("effectful", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut handles = Vec::with_capacity(BATCH as usize);
                for i in 0..BATCH {
                    let handle = runtime
                        .handle()
                        .spawn(move |_fx| async move { black_box(i) })
                        .await
                        .expect("spawned");
                    handles.push(handle);
                }
                for handle in handles {
                    black_box(handle.await.expect("finished"));
                }
            })
        })
    });
    runtime.shutdown(Duration::ZERO);

    let workers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("runtime");
    let caller = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    group.bench_function("tokio_spawn", |b| {
        b.iter(|| {
            caller.block_on(async {
                let mut handles = Vec::with_capacity(BATCH as usize);
                for i in 0..BATCH {
                    handles.push(workers.spawn(async move { black_box(i) }));
                }
                for handle in handles {
                    black_box(handle.await.expect("finished"));
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, step, spawn);
criterion_main!(benches);
