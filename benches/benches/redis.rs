//! Redis against redis-rs, same server (127.0.0.1:6379), same run.
//!
//! - `redis/pipelined_get/effectful`: 64 `GetCachedValue` effects in flight at once
//!   from one program, the whole way a user's effects go: engine, shard, the Cache
//!   adapter (one `GET` per effect, the value behind its expiry header), the pool
//!   (one connection), the connection's pipelining, and back;
//! - `redis/pipelined_get/effectful_pool`: 64 plain `GET`s in flight through the same
//!   pool directly (no engine, no adapter): the client's own cost;
//! - `redis/pipelined_get/redis_rs`: 64 `GET`s in flight on one redis-rs multiplexed
//!   connection (tokio), of the same keys;
//! - `redis/decode/*`: the replies of 64 GETs (100-byte values) decoded by the core's
//!   scanner and decoder, beside the bare `redis-protocol` RESP2 decoder.
//!
//! Needs Redis on 127.0.0.1:6379 (or on the port `EFFECTFUL_BENCH_REDIS_PORT` names,
//! to measure on a server of one's own); fails at once saying how to start it
//! otherwise.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use effectful::effect::{GetCachedValue, PutCachedValue};
use effectful::redis::{Command, FrameDecoder, Limits, RedisUrl};
use effectful_tokio::Runtime;
use effectful_tokio::redis::{PoolConfig, RedisBackend};

const IN_FLIGHT: usize = 64;

/// The server's port: 6379, or `EFFECTFUL_BENCH_REDIS_PORT`.
fn port() -> u16 {
    std::env::var("EFFECTFUL_BENCH_REDIS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(6379)
}

fn url() -> String {
    format!("redis://127.0.0.1:{}/0", port())
}

fn require_redis() {
    if std::net::TcpStream::connect(("127.0.0.1", port())).is_err() {
        panic!(
            "the redis benches need Redis on 127.0.0.1:{}; start it with: \
             redis-server --daemonize yes --port {} --save \"\" --appendonly no",
            port(),
            port()
        );
    }
}

fn prefix() -> String {
    format!("effectful-bench-{}:", std::process::id())
}

fn pipelined_get(c: &mut Criterion) {
    require_redis();
    let mut config = PoolConfig::new(RedisUrl::parse(&url()).expect("a URL"));
    config.max_connections = 1;
    let backend = RedisBackend::start(config, prefix()).expect("a pool");
    let runtime = backend
        .register(Runtime::builder().shards(1).seed(1))
        .build()
        .expect("a runtime");
    let keys: Vec<String> = (0..IN_FLIGHT).map(|i| format!("k{i}")).collect();
    // Seed the values (100 bytes each) through the effects themselves.
    let seeded = {
        let keys = keys.clone();
        runtime.block_on(async {
            let handle = runtime
                .handle()
                .spawn(move |fx| async move {
                    fx.perform_all(keys.into_iter().map(|key| PutCachedValue {
                        key,
                        value: vec![b'v'; 100],
                        ttl_seconds: Some(600),
                    }))
                    .await
                })
                .await
                .expect("spawned");
            handle.await.expect("finished")
        })
    };
    assert!(
        seeded.iter().all(Result::is_ok),
        "seeding failed: {seeded:?}"
    );

    let mut group = c.benchmark_group("redis/pipelined_get");
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));

    group.bench_function("effectful", |b| {
        b.iter_custom(|iters| {
            let keys = keys.clone();
            runtime.block_on(async {
                let handle = runtime
                    .handle()
                    .spawn(move |fx| async move {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let got = fx
                                .perform_all(keys.iter().map(|k| GetCachedValue { key: k.clone() }))
                                .await;
                            assert!(got.iter().all(Result::is_ok), "a GET failed: {got:?}");
                            black_box(got);
                        }
                        start.elapsed()
                    })
                    .await
                    .expect("spawned");
                handle.await.expect("finished")
            })
        });
    });

    let pool = backend.pool().clone();
    let raw_keys: Vec<String> = keys.iter().map(|k| backend.cache().redis_key(k)).collect();
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    group.bench_function("effectful_pool", |b| {
        b.iter_custom(|iters| {
            io.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let got = futures_util::future::join_all(
                        raw_keys
                            .iter()
                            .map(|k| pool.call(Command::new("GET").arg(k))),
                    )
                    .await;
                    assert!(got.iter().all(Result::is_ok), "a GET failed");
                    black_box(got);
                }
                start.elapsed()
            })
        });
    });

    let client = redis::Client::open(url()).expect("a redis-rs client");
    let mut conn = io
        .block_on(client.get_multiplexed_async_connection())
        .expect("a redis-rs connection");
    group.bench_function("redis_rs", |b| {
        b.iter_custom(|iters| {
            io.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let got = futures_util::future::join_all(raw_keys.iter().map(|k| {
                        let mut conn = conn.clone();
                        async move {
                            redis::cmd("GET")
                                .arg(k)
                                .query_async::<Option<Vec<u8>>>(&mut conn)
                                .await
                        }
                    }))
                    .await;
                    assert!(got.iter().all(|r| matches!(r, Ok(Some(_)))), "a GET failed");
                    black_box(got);
                }
                start.elapsed()
            })
        });
    });
    group.finish();

    let mut del = redis::cmd("DEL");
    for k in &keys {
        del.arg(backend.cache().redis_key(k));
        del.arg(backend.cache().marker_key(k));
    }
    let _: Result<i64, _> = io.block_on(del.query_async(&mut conn));
    runtime.shutdown(Duration::from_secs(1));
}

fn decode(c: &mut Criterion) {
    let mut replies = Vec::new();
    for _ in 0..IN_FLIGHT {
        replies.extend_from_slice(b"$100\r\n");
        replies.extend_from_slice(&[b'v'; 100]);
        replies.extend_from_slice(b"\r\n");
    }
    let mut group = c.benchmark_group("redis/decode");
    group.throughput(Throughput::Bytes(replies.len() as u64));
    group.bench_function("effectful", |b| {
        let mut decoder = FrameDecoder::new(Limits::default());
        b.iter(|| {
            let mut at = 0;
            let mut n = 0;
            while at < replies.len() {
                let (value, used) = decoder
                    .decode(&replies[at..])
                    .expect("well formed")
                    .expect("whole");
                black_box(value);
                at += used;
                n += 1;
            }
            assert_eq!(n, IN_FLIGHT);
        });
    });
    group.bench_function("redis_protocol", |b| {
        b.iter(|| {
            let mut at = 0;
            let mut n = 0;
            while at < replies.len() {
                let (frame, used) = redis_protocol::resp2::decode::decode(&replies[at..])
                    .expect("well formed")
                    .expect("whole");
                black_box(frame);
                at += used;
                n += 1;
            }
            assert_eq!(n, IN_FLIGHT);
        });
    });
    group.finish();
}

criterion_group!(benches, pipelined_get, decode);
criterion_main!(benches);
