//! The PostgreSQL interpreter and `/health` against a throwaway cluster that the test
//! stops and starts (the shared server is never restarted).

#[path = "../../core/tests/postgres/cluster.rs"]
mod cluster;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use effectful::EffectError;
use effectful::effect::{GetUserById, UserLookup};
use effectful_tokio::Runtime;
use effectful_tokio::postgres::{PgDatabase, PgDatabaseConfig};
use effectful_tokio::server::{EffectfulRouter, HealthReport};

use cluster::Cluster;
use support::{TestServer, get};

const TRUST: &str = "local all all trust\nhost all all 127.0.0.1/32 trust\n";

fn database(cluster: &Cluster) -> PgDatabase {
    let url = format!(
        "postgresql://postgres@127.0.0.1:{}/postgres?application_name=effectful-restart&connect_timeout=2",
        cluster.port
    );
    PgDatabase::start(
        PgDatabaseConfig::from_url(&url)
            .expect("a valid URL")
            .pool_size(2, 2),
    )
    .expect("started")
}

fn runtime(db: &PgDatabase) -> Runtime {
    db.register(Runtime::builder().shards(1))
        .build()
        .expect("runtime")
}

#[test]
fn a_server_restart_fails_work_retryably_and_later_work_succeeds() {
    let cluster = Cluster::start(TRUST);
    let db = database(&cluster);
    let runtime = runtime(&db);
    // A program that looks a user up every 20 ms until it has seen the outage and a
    // success after it.
    let successes = Arc::new(AtomicUsize::new(0));
    let counter = successes.clone();
    let program = runtime
        .block_on(runtime.handle().spawn(move |fx| async move {
            let mut errors: Vec<EffectError> = Vec::new();
            let mut before = 0;
            for _ in 0..1500 {
                match fx
                    .perform(GetUserById {
                        user_id: uuid::Uuid::nil(),
                    })
                    .await
                {
                    Ok(UserLookup::NotFound { .. }) if !errors.is_empty() => {
                        return Ok((before, errors));
                    }
                    Ok(UserLookup::NotFound { .. }) => {
                        before += 1;
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(found) => return Err(format!("no user was created: {found:?}")),
                    Err(e) => errors.push(e),
                }
                fx.sleep(Duration::from_millis(20)).await;
            }
            Err(format!("never recovered; errors: {errors:?}"))
        }))
        .expect("spawned");
    // Stop only once lookups succeed (the pool's first connections and the
    // migrations may take a while on a busy machine).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while successes.load(Ordering::SeqCst) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no lookup succeeded before the restart"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.stop();
    // Longer than the pool's 1 s open backoff: an outage shorter than that can pass
    // unseen (waiting work just waits for the next connection).
    std::thread::sleep(Duration::from_secs(3));
    cluster.start_again();
    let (before, errors) = runtime
        .block_on(program)
        .expect("finished")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(before > 0, "lookups succeeded before the restart");
    assert!(!errors.is_empty(), "the outage was seen");
    for e in &errors {
        assert!(e.retryable, "every failure of a restart is retryable: {e}");
        assert_eq!(e.effect, "Database.GetUserById");
    }
    runtime.shutdown(Duration::from_secs(1));
    db.shutdown(Duration::from_secs(5));
}

fn health(addr: std::net::SocketAddr) -> (u16, HealthReport) {
    let reply = get(addr, "/health");
    let report = serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {reply:?}"));
    (reply.status, report)
}

#[test]
fn health_is_503_while_the_database_is_down_and_200_once_it_is_back() {
    let cluster = Cluster::start(TRUST);
    let db = database(&cluster);
    let runtime = runtime(&db);
    let app = EffectfulRouter::new(runtime.handle().clone())
        .health_timeout(Duration::from_secs(3))
        .health_check(db.health_check())
        .into_router();
    let server = TestServer::start(app, runtime.handle().clone(), Duration::from_secs(1));
    let (status, report) = health(server.addr);
    assert_eq!(status, 200, "{report:?}");
    assert_eq!(report.checks["database"], "healthy");

    cluster.stop();
    let (status, report) = health(server.addr);
    assert_eq!(status, 503, "{report:?}");
    assert!(
        report.checks["database"].starts_with("unhealthy"),
        "{report:?}"
    );

    cluster.start_again();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, report) = health(server.addr);
        if status == 200 {
            assert_eq!(report.checks["database"], "healthy");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never healthy again: {report:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop().expect("server stops");
    runtime.shutdown(Duration::from_secs(1));
    db.shutdown(Duration::from_secs(5));
}
