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
//! `now` answers from a task on the shard's thread with `LocalReplier::answer_now`
//! (`tokio/step/effectful`); `local` queues that answer with `LocalReplier::answer`
//! (`tokio/step/effectful_queued`); `oneshot` is the hand-written peer
//! (`tokio/step/tokio_oneshot`): an `mpsc` request and a `oneshot` reply.
use std::time::Duration;

use effectful_benches::shard_step::{AnswerNow, InTask, Inline, effect_loop, oneshot_loop};
use effectful_tokio::Runtime;

fn effectful(runtime: Runtime, n: u64) {
    effect_loop(&runtime, n);
    runtime.shutdown(Duration::ZERO);
}

fn oneshot(n: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    oneshot_loop(&runtime, n);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: shardcount (inline|now|local|oneshot) ROUND_TRIPS";
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
        "now" => effectful(
            builder
                .interpreter("System", |shard| {
                    InTask::start(AnswerNow(shard.local_replier()))
                })
                .build()
                .expect("runtime"),
            n,
        ),
        "oneshot" => oneshot(n),
        _ => panic!("{usage}"),
    }
}
