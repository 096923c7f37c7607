//! Each shard's own PostgreSQL client against the real server on 127.0.0.1:5432:
//! the pool's limits hold for the whole process, programs on every shard get their
//! answers, the handle works before any shard runs, and shutdown closes every
//! shard's connections. `psql` counts the backends by the test's `application_name`.

mod pg_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use effectful::effect::{Begin, Commit, GetUserById, Query, UserLookup};
use effectful::{EffectError, ErrorKind};
use effectful_tokio::Runtime;
use effectful_tokio::postgres::PgDatabase;
use pg_support::{START_SERVER, Schema, lookup, psql};

fn runtime(db: &PgDatabase, shards: usize) -> Runtime {
    db.register(Runtime::builder().shards(shards))
        .build()
        .expect("runtime")
}

/// Waits up to 10 s for the test's backends to number `want`; the last count.
fn backends_become(schema: &Schema, want: impl Fn(usize) -> bool) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = schema.backends().len();
        if want(n) || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Twenty programs, spread over two shards, each hold a transaction (a connection
/// alone) for 150 ms: every shard's pool grows to its share, and the process never
/// holds more than the pool's maximum of four.
#[test]
fn the_process_wide_connection_limit_holds_across_two_shards() {
    let schema = Schema::new("shard_limit");
    let db = PgDatabase::start(schema.config().pool_size(0, 4)).expect("started");
    let runtime = runtime(&db, 2);
    let peak = Arc::new(AtomicUsize::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, name) = (peak.clone(), sampling.clone(), schema.name.clone());
        std::thread::spawn(move || {
            let count =
                format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{name}'");
            while sampling.load(Ordering::Relaxed) {
                let n: usize = psql(&count).parse().expect("a count");
                peak.fetch_max(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let results = runtime.block_on(async {
        let mut handles = Vec::new();
        for _ in 0..20 {
            handles.push(
                runtime
                    .handle()
                    .spawn(|fx| async move {
                        let tx = fx.perform(Begin {}).await?;
                        fx.perform(Query::new("SELECT pg_sleep(0.15)::text", vec![]).within(tx))
                            .await?;
                        fx.perform(Commit { tx }).await
                    })
                    .await
                    .expect("spawned"),
            );
        }
        let mut results = Vec::new();
        for handle in handles {
            results.push(handle.await.expect("finished"));
        }
        results
    });
    sampling.store(false, Ordering::Relaxed);
    sampler.join().expect("the sampler ran");
    for result in &results {
        assert!(result.is_ok(), "{result:?}\n{START_SERVER}");
    }
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak <= 4, "{peak} backends at once for a pool of at most 4");
    assert!(
        peak >= 3,
        "the shards' pools grew to their shares under load: {peak} backends at the peak"
    );
    let status = runtime.block_on(db.status()).expect("running");
    assert!(status.size <= 4, "{status:?}");
    runtime.shutdown(Duration::from_secs(1));
    db.shutdown(Duration::from_secs(5));
}

/// Programs started on each of two shards get their answers from their own
/// shard's client; the pool's minimum of two is one connection per shard.
#[test]
fn programs_on_both_shards_get_answers_and_the_minimum_is_split_between_them() {
    let schema = Schema::new("shard_answers");
    let db = PgDatabase::start(schema.config().pool_size(2, 2)).expect("started");
    let runtime = runtime(&db, 2);
    let answers = runtime.block_on(async {
        let mut handles = Vec::new();
        // Programs go to the shards in turn: ten reach each.
        for i in 0..20u128 {
            handles.push(
                runtime
                    .handle()
                    .spawn(move |fx| async move {
                        fx.perform(GetUserById {
                            user_id: uuid::Uuid::from_u128(i + 1),
                        })
                        .await
                    })
                    .await
                    .expect("spawned"),
            );
        }
        let mut answers = Vec::new();
        for handle in handles {
            answers.push(handle.await.expect("finished"));
        }
        answers
    });
    for answer in &answers {
        assert!(
            matches!(answer, Ok(UserLookup::NotFound { .. })),
            "{answer:?}\n{START_SERVER}"
        );
    }
    assert_eq!(
        backends_become(&schema, |n| n == 2),
        2,
        "one connection per shard"
    );
    let status = runtime.block_on(db.status()).expect("running");
    assert_eq!(status.size, 2, "{status:?}");
    runtime.shutdown(Duration::from_secs(1));
    db.shutdown(Duration::from_secs(5));
}

/// `PgDatabase::shutdown` while the runtime runs closes the connections of every
/// shard; later work fails at once with a retryable error.
#[test]
fn shutdown_closes_every_shards_connections() {
    let schema = Schema::new("shard_shutdown");
    let db = PgDatabase::start(schema.config().pool_size(4, 4)).expect("started");
    let runtime = runtime(&db, 2);
    assert_eq!(
        backends_become(&schema, |n| n == 4),
        4,
        "each shard opens its share of the minimum"
    );
    db.shutdown(Duration::from_secs(5));
    assert_eq!(
        backends_become(&schema, |n| n == 0),
        0,
        "every shard's connections closed"
    );
    let after = lookup(&runtime);
    match after {
        Err(EffectError {
            kind: ErrorKind::ConnectionLost,
            retryable: true,
            ..
        }) => {}
        other => panic!("expected a retryable ConnectionLost, got {other:?}"),
    }
    assert!(runtime.block_on(db.status()).is_none());
    assert!(runtime.block_on(db.ping()).is_err());
    runtime.shutdown(Duration::from_secs(1));
}

/// Before any shard runs, `ping` works on a thread of its own and runs the
/// migrations; that thread's connection closes once the shards start, so the
/// process keeps to the pool's maximum of one.
#[test]
fn a_ping_before_any_shard_runs_the_migrations_and_its_connection_goes_when_shards_start() {
    let schema = Schema::new("shard_early");
    let db = PgDatabase::start(schema.config().pool_size(1, 1)).expect("started");
    let caller = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    caller
        .block_on(db.ping())
        .unwrap_or_else(|e| panic!("{e}\n{START_SERVER}"));
    let migrated = psql(&format!(
        "SELECT count(*) > 0 FROM {}.effectful_migrations",
        schema.name
    ));
    assert_eq!(migrated, "t", "the ping ran the migrations first");
    let runtime = runtime(&db, 1);
    // Once the shard's connection is up, the early one goes.
    let answered = lookup(&runtime);
    assert!(matches!(answered, Ok(UserLookup::NotFound { .. })));
    assert_eq!(backends_become(&schema, |n| n == 1), 1);
    caller
        .block_on(db.ping())
        .expect("a ping through the shard");
    runtime.shutdown(Duration::from_secs(1));
    db.shutdown(Duration::from_secs(5));
}
