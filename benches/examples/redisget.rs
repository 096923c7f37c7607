//! The client's cost per GET of `redis/pipelined_get` (batches of 64 `GetCachedValue`
//! effects, or 64 plain `GET`s through the pool), for `valgrind --tool=callgrind`
//! and `strace -c -f`: on a shared machine the wall-clock benches wander,
//! instruction counts, syscalls and CPU time per GET much less.
//!
//! ```text
//! cargo build --release -p effectful-benches --example redisget
//! for n in 200 400; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/rg.$n \
//!     target/release/examples/redisget effects $n 2>&1 | grep refs
//! done   # (refs(400) - refs(200)) / (200 * 64) = instructions per GET
//! strace -c -f target/release/examples/redisget effects 2000  # syscalls / 2000 = per batch
//! ```
//!
//! It prints the process's CPU time per GET and how long the batches took. Needs
//! Redis on 127.0.0.1:6379 (or the port `EFFECTFUL_BENCH_REDIS_PORT` names).
use std::time::{Duration, Instant};

use effectful::effect::{GetCachedValue, PutCachedValue};
use effectful::redis::{Command, RedisUrl};
use effectful_benches::cpu::process_cpu_nanos;
use effectful_tokio::Runtime;
use effectful_tokio::redis::{PoolConfig, RedisBackend};

const IN_FLIGHT: usize = 64;

fn main() {
    let usage = "usage: redisget (effects|pool) BATCHES";
    let mut args = std::env::args().skip(1);
    let kind = args.next().expect(usage);
    let batches: u64 = args.next().and_then(|n| n.parse().ok()).expect(usage);
    let port = std::env::var("EFFECTFUL_BENCH_REDIS_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(6379);
    let url = RedisUrl::parse(&format!("redis://127.0.0.1:{port}/0")).expect("a URL");
    let mut config = PoolConfig::new(url);
    config.max_connections = 1;
    let backend = RedisBackend::start(
        config,
        format!("effectful-redisget-{}:", std::process::id()),
    )
    .expect("a pool");
    let runtime = backend
        .register(Runtime::builder().shards(1).seed(1))
        .build()
        .expect("a runtime");
    let keys: Vec<String> = (0..IN_FLIGHT).map(|i| format!("k{i}")).collect();
    let seeded = run(&runtime, {
        let keys = keys.clone();
        move |fx| async move {
            fx.perform_all(keys.into_iter().map(|key| PutCachedValue {
                key,
                value: vec![b'v'; 100],
                ttl_seconds: Some(600),
            }))
            .await
        }
    });
    assert!(
        seeded.iter().all(Result::is_ok),
        "seeding failed: {seeded:?}"
    );

    let (cpu, wall) = match kind.as_str() {
        "effects" => run(&runtime, move |fx| async move {
            let (cpu, start) = (process_cpu_nanos(), Instant::now());
            for _ in 0..batches {
                let got = fx
                    .perform_all(keys.iter().map(|k| GetCachedValue { key: k.clone() }))
                    .await;
                assert!(got.iter().all(Result::is_ok), "a GET failed: {got:?}");
            }
            (process_cpu_nanos() - cpu, start.elapsed())
        }),
        "pool" => {
            let pool = backend.pool().clone();
            let raw: Vec<String> = keys.iter().map(|k| backend.cache().redis_key(k)).collect();
            let io = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            io.block_on(async {
                let (cpu, start) = (process_cpu_nanos(), Instant::now());
                for _ in 0..batches {
                    let got = futures_util::future::join_all(
                        raw.iter().map(|k| pool.call(Command::new("GET").arg(k))),
                    )
                    .await;
                    assert!(got.iter().all(Result::is_ok), "a GET failed");
                }
                (process_cpu_nanos() - cpu, start.elapsed())
            })
        }
        _ => panic!("{usage}"),
    };
    let gets = (batches * IN_FLIGHT as u64).max(1);
    println!(
        "{kind}: {batches} batches of {IN_FLIGHT} in {wall:?}: {} ns CPU per GET, {:.0} GET/s",
        cpu / gets,
        gets as f64 / wall.as_secs_f64()
    );
    runtime.shutdown(Duration::from_secs(1));
}

/// Runs one program on the runtime and waits for its output.
fn run<T, Fut>(runtime: &Runtime, program: impl FnOnce(effectful::Fx) -> Fut + Send + 'static) -> T
where
    T: Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    runtime.block_on(async {
        let handle = runtime.handle().spawn(program).await.expect("spawned");
        handle.await.expect("finished")
    })
}
