//! Each shard's own share of the Redis pool against the shared Redis on
//! 127.0.0.1:6379: the pool's limit holds for the whole process, programs on both
//! shards get their answers on their own connections, work from outside the shards
//! is served before and while they run, and shutdown closes every shard's
//! connections. `CLIENT LIST` (on a side connection) counts the connections by the
//! test's own client name.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use effectful::effect::{CacheLookup, GetCachedValue, PutCachedValue};
use effectful::redis::{Command, RedisUrl};
use effectful::{EffectError, ErrorKind};
use effectful_tokio::Runtime;
use effectful_tokio::redis::{PoolConfig, RedisBackend};

const URL: &str = "redis://127.0.0.1:6379/0";
const START: &str = "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" \
     --appendonly no";

/// The test's client name and key prefix.
fn name(test: &str) -> String {
    format!("effectful-shards-{}-{test}", std::process::id())
}

fn backend(test: &str, max_connections: usize) -> RedisBackend {
    if TcpStream::connect("127.0.0.1:6379").is_err() {
        panic!("Redis is not running on 127.0.0.1:6379; start it with: {START}");
    }
    let mut config = PoolConfig::new(RedisUrl::parse(URL).expect("a URL"));
    config.max_connections = max_connections;
    config.client_name = name(test);
    RedisBackend::start(config, format!("{}:", name(test))).expect("a pool")
}

fn runtime(backend: &RedisBackend, shards: usize) -> Runtime {
    backend
        .register(Runtime::builder().shards(shards).seed(5))
        .build()
        .expect("a runtime")
}

/// A runtime of the test's own, outside the shards.
fn outside() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// How many connections named `name` the server has now (`CLIENT LIST` on a side
/// connection of its own).
fn connections(name: &str) -> usize {
    let mut side = TcpStream::connect("127.0.0.1:6379").expect("a side connection");
    side.write_all(b"*2\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n")
        .expect("CLIENT LIST sent");
    let mut reader = BufReader::new(side);
    let mut header = String::new();
    reader.read_line(&mut header).expect("a reply");
    let len: usize = header
        .trim_end()
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a bulk string, not {header:?}"));
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).expect("the list");
    let wanted = format!(" name={name} ");
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|line| line.contains(&wanted))
        .count()
}

/// Waits up to 10 s for the test's connections to satisfy `want`; the last count.
fn connections_become(name: &str, want: impl Fn(usize) -> bool) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = connections(name);
        if want(n) || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `programs` programs (they go to the shards in turn), each writing its key, then
/// reading it `reads` times one after the other (one engine drain each): what each
/// read found.
fn read_back(
    runtime: &Runtime,
    programs: u32,
    reads: usize,
) -> Vec<Result<Vec<CacheLookup<Vec<u8>>>, EffectError>> {
    runtime.block_on(async {
        let mut handles = Vec::new();
        for i in 0..programs {
            let handle = runtime
                .handle()
                .spawn(move |fx| async move {
                    let key = format!("k{i}");
                    fx.perform(PutCachedValue {
                        key: key.clone(),
                        value: i.to_string().into_bytes(),
                        ttl_seconds: Some(60),
                    })
                    .await?;
                    let mut found = Vec::new();
                    for _ in 0..reads {
                        found.push(fx.perform(GetCachedValue { key: key.clone() }).await?);
                    }
                    Ok(found)
                })
                .await
                .expect("spawned");
            handles.push(handle);
        }
        let mut results = Vec::new();
        for handle in handles {
            results.push(handle.await.expect("finished"));
        }
        results
    })
}

fn assert_read_back(results: &[Result<Vec<CacheLookup<Vec<u8>>>, EffectError>], reads: usize) {
    for (i, result) in results.iter().enumerate() {
        let found = result
            .as_ref()
            .unwrap_or_else(|e| panic!("program {i}: {e}"));
        assert_eq!(found.len(), reads);
        for lookup in found {
            assert_eq!(
                lookup,
                &CacheLookup::Hit {
                    value: i.to_string().into_bytes(),
                    ttl_remaining: Some(60)
                },
                "program {i}"
            );
        }
    }
}

/// Forty programs on two shards, with a pool of three for the process: shard 0 runs
/// two connections and shard 1 one; a sampler never sees more than three.
#[test]
fn the_process_wide_connection_limit_holds_across_two_shards() {
    let test = "limit";
    let backend = backend(test, 3);
    let runtime = runtime(&backend, 2);
    let peak = Arc::new(AtomicUsize::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, name) = (peak.clone(), sampling.clone(), name(test));
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(connections(&name), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let results = read_back(&runtime, 40, 10);
    sampling.store(false, Ordering::Relaxed);
    sampler.join().expect("the sampler");
    assert_read_back(&results, 10);
    assert_eq!(
        connections_become(&name(test), |n| n == 3),
        3,
        "each shard opened its share"
    );
    assert!(
        peak.load(Ordering::Relaxed) <= 3,
        "peak {}",
        peak.load(Ordering::Relaxed)
    );
    assert_eq!(backend.pool().max_connections(), 3);
    runtime.shutdown(Duration::from_secs(1));
}

/// With a pool of two on two shards, each shard's share is one connection, made only
/// when that shard has work: both are up, so both shards answered their programs.
#[test]
fn programs_on_both_shards_get_answers_each_on_its_shards_connection() {
    let test = "both";
    let backend = backend(test, 2);
    let runtime = runtime(&backend, 2);
    let results = read_back(&runtime, 20, 3);
    assert_read_back(&results, 3);
    assert_eq!(
        connections_become(&name(test), |n| n == 2),
        2,
        "one connection per shard"
    );
    let status = backend.pool().status();
    assert_eq!(
        (status.max_connections, status.in_flight),
        (2, 0),
        "{status:?}"
    );
    runtime.shutdown(Duration::from_secs(1));
}

/// Before any shard runs, the pool serves a `PING` from outside on its IO thread;
/// once the shards run, that connection goes, and work from outside goes to them.
#[test]
fn work_from_outside_is_served_before_the_shards_and_by_them_once_they_run() {
    let test = "outside";
    let backend = backend(test, 2);
    let outside = outside();
    let ping = |backend: &RedisBackend| outside.block_on(backend.ping());
    assert_eq!(ping(&backend), Ok(()));
    assert_eq!(connections(&name(test)), 1, "the IO thread's connection");
    let runtime = runtime(&backend, 2);
    let results = read_back(&runtime, 20, 2);
    assert_read_back(&results, 2);
    assert_eq!(
        connections_become(&name(test), |n| n == 2),
        2,
        "the shards' two, and the IO thread's closed"
    );
    for _ in 0..4 {
        assert_eq!(ping(&backend), Ok(()));
    }
    assert_eq!(
        connections(&name(test)),
        2,
        "pings went to the shards' connections"
    );
    runtime.shutdown(Duration::from_secs(1));
}

/// `RedisPool::shutdown` while the runtime runs closes the connections of both
/// shards; later effects fail at once with a retryable `ConnectionLost`, and so does
/// work from outside.
#[test]
fn shutdown_closes_every_shards_connections() {
    let test = "shutdown";
    let backend = backend(test, 4);
    let runtime = runtime(&backend, 2);
    assert_read_back(&read_back(&runtime, 20, 5), 5);
    assert_eq!(
        connections_become(&name(test), |n| n == 4),
        4,
        "each shard opened its two"
    );
    backend.pool().shutdown();
    assert_eq!(
        connections_become(&name(test), |n| n == 0),
        0,
        "every shard's connections closed"
    );
    let after = read_back(&runtime, 2, 1);
    for result in after {
        match result {
            Err(EffectError {
                kind: ErrorKind::ConnectionLost,
                retryable: true,
                ..
            }) => {}
            other => panic!("expected a retryable ConnectionLost, got {other:?}"),
        }
    }
    let outside = outside();
    let ping = outside.block_on(backend.pool().call(Command::new("PING")));
    assert!(ping.is_err(), "{ping:?}");
    runtime.shutdown(Duration::from_secs(1));
    assert_eq!(connections(&name(test)), 0);
}

/// A runtime that shuts down takes its shards' connections with it.
#[test]
fn a_runtime_that_stops_closes_its_shards_connections() {
    let test = "stop";
    let backend = backend(test, 2);
    let runtime = runtime(&backend, 2);
    assert_read_back(&read_back(&runtime, 10, 2), 2);
    assert_eq!(connections_become(&name(test), |n| n == 2), 2);
    runtime.shutdown(Duration::from_secs(1));
    assert_eq!(
        connections_become(&name(test), |n| n == 0),
        0,
        "the shards' connections closed with them"
    );
}
