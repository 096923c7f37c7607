//! The Redis backend on the tokio runtime: Cache effects against the shared Redis on
//! 127.0.0.1:6379 (keys under `effectful-it-<pid>:`), and against throwaway
//! `redis-server`s that are paused, stopped and restarted mid-use.

mod support;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use effectful::effect::{CacheLookup, GetCachedValue, InvalidateCache, MissReason, PutCachedValue};
use effectful::redis::{Command, RedisUrl};
use effectful::{EffectError, ErrorKind};
use effectful_tokio::Runtime;
use effectful_tokio::redis::{PoolConfig, RedisBackend, RedisPool};

const SHARED: &str = "redis://127.0.0.1:6379/0";
const START: &str = "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" \
     --appendonly no";

fn prefix(name: &str) -> String {
    format!("effectful-it-{}:{name}:", std::process::id())
}

fn shared_backend(name: &str, connections: usize) -> RedisBackend {
    if TcpStream::connect("127.0.0.1:6379").is_err() {
        panic!("Redis is not running on 127.0.0.1:6379; start it with: {START}");
    }
    let mut config = PoolConfig::new(RedisUrl::parse(SHARED).expect("a URL"));
    config.max_connections = connections;
    RedisBackend::start(config, prefix(name)).expect("a pool")
}

fn runtime(backend: &RedisBackend, shards: usize) -> Runtime {
    backend
        .register(Runtime::builder().shards(shards).seed(3))
        .build()
        .expect("a runtime")
}

fn put(key: &str, value: &[u8], ttl: Option<u64>) -> PutCachedValue {
    PutCachedValue {
        key: key.into(),
        value: value.to_vec(),
        ttl_seconds: ttl,
    }
}

fn get(key: &str) -> GetCachedValue {
    GetCachedValue { key: key.into() }
}

#[test]
fn cache_effects_from_many_programs_on_two_shards_share_a_pool_of_two() {
    let backend = shared_backend("many", 2);
    let runtime = runtime(&backend, 2);
    let results = runtime.block_on(async {
        let mut handles = Vec::new();
        for i in 0..200u32 {
            let handle = runtime
                .handle()
                .spawn(move |fx| async move {
                    let key = format!("k{i}");
                    fx.perform(put(&key, i.to_string().as_bytes(), Some(60)))
                        .await?;
                    let got = fx.perform(get(&key)).await?;
                    let gone = fx.perform(InvalidateCache { key: key.clone() }).await?;
                    let after = fx.perform(get(&key)).await?;
                    Ok::<_, EffectError>((i, got, gone, after))
                })
                .await
                .expect("spawned");
            handles.push(handle);
        }
        let mut results = Vec::new();
        for handle in handles {
            results.push(handle.await.expect("finished").expect("answered"));
        }
        results
    });
    assert_eq!(results.len(), 200);
    for (i, got, gone, after) in results {
        assert_eq!(
            got,
            CacheLookup::Hit {
                value: i.to_string().into_bytes(),
                ttl_remaining: Some(60)
            }
        );
        assert!(gone, "key {i} was there to invalidate");
        assert_eq!(
            after,
            CacheLookup::Miss {
                key: format!("k{i}"),
                reason: MissReason::NotFound
            }
        );
    }
    runtime.shutdown(Duration::from_secs(1));
}

#[test]
fn a_refused_ttl_is_answered_without_a_round_trip_and_a_wrong_type_keeps_its_code() {
    let backend = shared_backend("errors", 1);
    let key = backend.cache().redis_key("list");
    let runtime = runtime(&backend, 1);
    let (zero, wrong) = runtime.block_on(async {
        backend
            .pool()
            .call(Command::new("RPUSH").arg(&key).arg("x"))
            .await
            .expect("RPUSH");
        let handle = runtime
            .handle()
            .spawn(|fx| async move {
                let zero = fx.perform(put("z", b"v", Some(0))).await;
                let wrong = fx.perform(get("list")).await;
                (zero, wrong)
            })
            .await
            .expect("spawned");
        let out = handle.await.expect("finished");
        backend
            .pool()
            .call(Command::new("DEL").arg(&key))
            .await
            .expect("DEL");
        out
    });
    let zero = zero.expect_err("EX 0 refused");
    assert_eq!(
        (zero.kind, zero.retryable),
        (
            ErrorKind::Service {
                code: Some("ERR".into())
            },
            false
        )
    );
    let wrong = wrong.expect_err("a list is not a string");
    assert_eq!(
        wrong.kind,
        ErrorKind::Service {
            code: Some("WRONGTYPE".into())
        }
    );
    assert!(!wrong.retryable);
}

/// A redis-server of our own on a fixed free port, which can be stopped and
/// started again on the same port.
struct Throwaway {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    extra: Vec<&'static str>,
}

impl Throwaway {
    fn start() -> Throwaway {
        Throwaway::start_with(&[])
    }

    fn start_with(extra: &[&'static str]) -> Throwaway {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!(
            "effectful-tokio-redis-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let mut server = Throwaway {
            child: None,
            dir,
            port,
            extra: extra.to_vec(),
        };
        server.up();
        server
    }

    fn url(&self) -> RedisUrl {
        RedisUrl::parse(&format!("redis://127.0.0.1:{}/0", self.port)).expect("a URL")
    }

    fn up(&mut self) {
        let child = Process::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); install it: apt-get install redis-server")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the throwaway redis-server on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_restarted_server_fails_effects_retryably_and_the_pool_recovers() {
    let mut server = Throwaway::start();
    let mut config = PoolConfig::new(server.url());
    config.max_connections = 3;
    let backend = RedisBackend::start(config, "restart:").expect("a pool");
    let runtime = runtime(&backend, 1);
    let round = |value: &'static [u8]| {
        runtime.block_on(async {
            let mut handles = Vec::new();
            for i in 0..6 {
                handles.push(
                    runtime
                        .handle()
                        .spawn(move |fx| async move {
                            let key = format!("k{i}");
                            fx.perform(put(&key, value, None)).await?;
                            fx.perform(get(&key)).await
                        })
                        .await
                        .expect("spawned"),
                );
            }
            let mut out = Vec::new();
            for handle in handles {
                out.push(handle.await.expect("finished"));
            }
            out
        })
    };
    for result in round(b"before") {
        assert!(matches!(result, Ok(CacheLookup::Hit { .. })), "{result:?}");
    }
    server.down();
    for result in round(b"during") {
        let e = result.expect_err("the server is down");
        assert_eq!(e.kind, ErrorKind::ConnectionLost, "{e}");
        assert!(e.retryable, "{e}");
    }
    server.up();
    // The pool reconnects with backoff (100 ms doubling); give it a few seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let results = round(b"after");
        if results.iter().all(Result::is_ok) {
            for result in results {
                assert_eq!(
                    result.expect("ok"),
                    CacheLookup::Hit {
                        value: b"after".to_vec(),
                        ttl_remaining: None
                    }
                );
            }
            break;
        }
        for result in &results {
            if let Err(e) = result {
                assert!(e.retryable, "while recovering: {e}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "the pool did not recover: {results:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    runtime.shutdown(Duration::from_secs(1));
}

/// Runs one program performing `effect` alone, and gives its answer.
fn perform_one<E>(runtime: &Runtime, effect: E) -> Result<E::Output, EffectError>
where
    E: effectful::Effect<effectful::Std> + Send + 'static,
    E::Output: Send + 'static,
{
    runtime.block_on(async {
        let handle = runtime
            .handle()
            .spawn(move |fx| async move { fx.perform(effect).await })
            .await
            .expect("spawned");
        handle.await.expect("ran")
    })
}

/// What Messaging on a throwaway server shows across a restart (kill, start again):
/// during the outage effects fail retryably, the pool recovers, then the rest.
fn messaging_across_a_restart(extra: &[&'static str]) -> Vec<String> {
    use effectful::effect::{
        AcknowledgeMessage, ConsumeMessage, ConsumeOutcome, PublishMessage, PublishOutcome,
    };
    let mut server = Throwaway::start_with(extra);
    let mut config = PoolConfig::new(server.url());
    config.max_connections = 2;
    let adapter = effectful::redis::MessagingAdapter::new("restart:")
        .with_ack_timeout(Duration::from_secs(1));
    let backend = RedisBackend::start(config, "restart:")
        .expect("a pool")
        .with_messaging(adapter)
        .expect("the consumers' thread");
    let runtime = runtime(&backend, 1);
    let publish = |payload: &str| PublishMessage {
        topic: "r".into(),
        payload: payload.as_bytes().to_vec(),
        properties: Default::default(),
        dedup_key: None,
    };
    let consume = |timeout_ms| ConsumeMessage {
        subscription: "r/g".into(),
        timeout_ms,
    };
    let word = |outcome: &ConsumeOutcome| match outcome {
        ConsumeOutcome::Message(m) => format!(
            "{} (redelivery {})",
            String::from_utf8_lossy(&m.payload),
            m.redelivery_count
        ),
        ConsumeOutcome::Timeout => "timeout".to_owned(),
    };
    let error = |e: &EffectError| format!("{:?} retryable {}", e.kind, e.retryable);
    let block = |effect: PublishMessage| perform_one(&runtime, effect);
    let take = |timeout_ms| perform_one(&runtime, consume(timeout_ms));
    let ack = |message_id| perform_one(&runtime, AcknowledgeMessage { message_id });
    let mut seen = Vec::new();
    seen.push(word(&take(0).expect("the group")));
    assert!(matches!(
        block(publish("kept")),
        Ok(PublishOutcome::Published { .. })
    ));
    let Ok(ConsumeOutcome::Message(in_flight)) = take(1000) else {
        panic!("the message published before the restart");
    };
    server.down();
    seen.push(format!(
        "publish {}",
        error(&block(publish("lost")).expect_err("down"))
    ));
    seen.push(format!("consume {}", error(&take(200).expect_err("down"))));
    server.up();
    // The pool reconnects with backoff (100 ms doubling); give it a few seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match block(publish("after")) {
            Ok(_) => break,
            Err(e) => assert!(e.retryable && Instant::now() < deadline, "{e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Past the ack timeout of anything delivered before the restart.
    std::thread::sleep(Duration::from_millis(1100));
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        match take(3000) {
            Ok(outcome) => break outcome,
            Err(e) => assert!(e.retryable && Instant::now() < deadline, "{e}"),
        }
    };
    seen.push(format!("then {}", word(&first)));
    if let ConsumeOutcome::Message(m) = first {
        ack(m.message_id).expect("ack");
    }
    assert!(matches!(
        block(publish("fresh")),
        Ok(PublishOutcome::Published { .. })
    ));
    for _ in 0..2 {
        let next = take(300).expect("a consume");
        seen.push(format!("then {}", word(&next)));
        if let ConsumeOutcome::Message(m) = next {
            ack(m.message_id).expect("ack");
        }
    }
    seen.push(format!(
        "ack from before {:?}",
        ack(in_flight.message_id).expect("ack")
    ));
    runtime.shutdown(Duration::from_secs(1));
    seen
}

/// A restart without persistence loses every stream, group and pending entry: the
/// message in flight is gone (its ack is unknown), and so is what was published
/// before the first consume recreated the group.
#[test]
fn a_restarted_redis_without_persistence_loses_streams_and_groups_and_the_pool_recovers() {
    assert_eq!(
        messaging_across_a_restart(&[]),
        [
            "timeout",
            "publish ConnectionLost retryable true",
            "consume ConnectionLost retryable true",
            "then timeout",
            "then fresh (redelivery 0)",
            "then timeout",
            "ack from before UnknownMessage",
        ]
    );
}

/// With `appendonly yes` a restart keeps streams and pending entries, and the
/// message that was in flight comes again after the ack timeout with its count: what
/// the simulator's broker restart does (it keeps its topics and redelivers what was
/// in flight).
#[test]
fn a_restarted_redis_with_an_append_only_file_redelivers_what_was_in_flight() {
    assert_eq!(
        messaging_across_a_restart(&["--appendonly", "yes", "--appendfsync", "always"]),
        [
            "timeout",
            "publish ConnectionLost retryable true",
            "consume ConnectionLost retryable true",
            "then kept (redelivery 1)",
            "then after (redelivery 0)",
            "then fresh (redelivery 0)",
            "ack from before UnknownMessage",
        ]
    );
}

#[test]
fn a_paused_server_times_effects_out_retryably_and_the_connection_goes_on() {
    let server = Throwaway::start();
    let mut config = PoolConfig::new(server.url());
    config.max_connections = 1;
    config.operation_timeout = Duration::from_millis(300);
    let backend = RedisBackend::start(config, "pause:").expect("a pool");
    let runtime = runtime(&backend, 1);
    let (slow, fine) = runtime.block_on(async {
        let warm = runtime
            .handle()
            .spawn(|fx| async move { fx.perform(put("k", b"v", None)).await })
            .await
            .expect("spawned");
        warm.await.expect("finished").expect("connected and stored");
        // Another client pauses every client for a second.
        let mut side = TcpStream::connect(("127.0.0.1", server.port)).expect("side connection");
        std::io::Write::write_all(
            &mut side,
            b"*4\r\n$6\r\nCLIENT\r\n$5\r\nPAUSE\r\n$4\r\n1000\r\n$3\r\nALL\r\n",
        )
        .expect("CLIENT PAUSE");
        let mut ok = [0u8; 5];
        std::io::Read::read_exact(&mut side, &mut ok).expect("+OK");
        let slow = runtime
            .handle()
            .spawn(|fx| async move { fx.perform(get("k")).await })
            .await
            .expect("spawned");
        let slow = slow.await.expect("finished");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let fine = runtime
            .handle()
            .spawn(|fx| async move { fx.perform(get("k")).await })
            .await
            .expect("spawned");
        (slow, fine.await.expect("finished"))
    });
    let e = slow.expect_err("the server was paused past the timeout");
    assert_eq!(
        (e.kind.clone(), e.retryable),
        (ErrorKind::Timeout, true),
        "{e}"
    );
    assert_eq!(
        fine.expect("answered after the pause"),
        CacheLookup::Hit {
            value: b"v".to_vec(),
            ttl_remaining: None
        }
    );
    runtime.shutdown(Duration::from_secs(1));
}

#[test]
fn the_pools_status_counts_commands_in_flight_and_the_connections_they_hold() {
    let server = Throwaway::start();
    let mut config = PoolConfig::new(server.url());
    config.max_connections = 2;
    let pool = RedisPool::start(config).expect("a pool");
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    client.block_on(async {
        pool.call(Command::new("PING")).await.expect("connected");
        pool.call(Command::new("PING"))
            .await
            .expect("both connected");
        let idle = pool.status();
        assert_eq!((idle.busy, idle.in_flight, idle.utilisation), (0, 0, 0.0));
        // Another client pauses every client: these three wait on the server.
        let mut side = TcpStream::connect(("127.0.0.1", server.port)).expect("side connection");
        std::io::Write::write_all(
            &mut side,
            b"*4\r\n$6\r\nCLIENT\r\n$5\r\nPAUSE\r\n$3\r\n500\r\n$3\r\nALL\r\n",
        )
        .expect("CLIENT PAUSE");
        let mut ok = [0u8; 5];
        std::io::Read::read_exact(&mut side, &mut ok).expect("+OK");
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.call(Command::new("PING")).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let paused = pool.status();
        assert_eq!(
            (paused.max_connections, paused.busy, paused.in_flight),
            (2, 2, 3),
            "{paused:?}"
        );
        assert_eq!(paused.utilisation, 1.0);
        for answered in waiting {
            answered
                .await
                .expect("joined")
                .expect("answered after the pause");
        }
        assert_eq!(pool.status().in_flight, 0);
    });
}

#[test]
fn a_wrong_password_is_not_retryable_and_never_shown() {
    let server = Throwaway::start_with(&["--requirepass", "the-right-one"]);
    let url = RedisUrl::parse(&format!(
        "redis://:hunter2-secret@127.0.0.1:{}/0",
        server.port
    ))
    .expect("a URL");
    let backend = RedisBackend::start(PoolConfig::new(url), "pw:").expect("a pool");
    let runtime = runtime(&backend, 1);
    let result = runtime.block_on(async {
        let h = runtime
            .handle()
            .spawn(|fx| async move { fx.perform(get("k")).await })
            .await
            .expect("spawned");
        h.await.expect("finished")
    });
    let e = result.expect_err("the password is wrong");
    assert_eq!(e.kind, ErrorKind::ConnectionLost, "{e}");
    assert!(!e.retryable, "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(!format!("{backend:?}").contains("hunter2"));
    runtime.shutdown(Duration::from_secs(1));
}

/// The tokio runtime with the Redis backend (Cache and Auth) and the OS's System.
struct RedisDriver;

impl effectful_test::contract::ServiceDriver for RedisDriver {
    fn run(
        &mut self,
        program: effectful_test::contract::ContractProgram,
    ) -> Result<Vec<String>, effectful::ProgramError> {
        static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let backend = shared_backend(&format!("contract-{run}"), 2).with_auth(
            effectful_tokio::redis::JwtSecret::new(b"a contract-test key of 32+ bytes!!")
                .expect("long enough"),
        );
        run_alone(&backend, program)
    }
}

/// Runs `program` alone on one shard with `backend`'s families and System.
fn run_alone(
    backend: &RedisBackend,
    program: effectful_test::contract::ContractProgram,
) -> Result<Vec<String>, effectful::ProgramError> {
    let runtime = backend
        .register(Runtime::builder().shards(1).seed(5))
        .interpreter("System", |_| effectful_tokio::SystemInterpreter::new())
        .build()
        .expect("a runtime");
    let result = runtime.block_on(async {
        let handle = runtime.handle().spawn(program).await.expect("spawned");
        handle.await
    });
    runtime.shutdown(Duration::from_secs(1));
    result
}

impl effectful_test::contract::MessagingDriver for RedisDriver {
    fn run(
        &mut self,
        program: effectful_test::contract::ContractProgram,
    ) -> Result<Vec<String>, effectful::ProgramError> {
        static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("messaging-contract-{run}");
        let adapter = effectful::redis::MessagingAdapter::new(prefix(&name))
            .with_ack_timeout(effectful_test::contract::ACK_TIMEOUT);
        let backend = shared_backend(&name, 2)
            .with_messaging(adapter)
            .expect("the consumers' thread");
        run_alone(&backend, program)
    }
}

#[test]
fn redis_streams_keep_the_messaging_contract() {
    effectful_test::contract::check_messaging(&mut RedisDriver);
}

#[test]
fn redis_keeps_the_commands_contract() {
    effectful_test::contract::check_cache_commands(&mut RedisDriver);
}

#[test]
fn redis_keeps_the_cache_contract() {
    effectful_test::contract::check_cache(&mut RedisDriver);
}

#[test]
fn redis_keeps_the_auth_contract() {
    effectful_test::contract::check_auth(&mut RedisDriver);
}

fn health(addr: std::net::SocketAddr) -> (u16, effectful_tokio::server::HealthReport) {
    let reply = support::get(addr, "/health");
    let report = serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {reply:?}"));
    (reply.status, report)
}

#[test]
fn health_pings_redis_503_while_it_is_down_and_200_once_it_is_back() {
    let mut server = Throwaway::start_with(&["--requirepass", "health-pw"]);
    let url =
        RedisUrl::parse(&format!("redis://:health-pw@127.0.0.1:{}/0", server.port)).expect("a URL");
    let mut config = PoolConfig::new(url);
    config.max_connections = 2;
    let backend = RedisBackend::start(config, "health:").expect("a pool");
    let runtime = runtime(&backend, 1);
    let app = effectful_tokio::server::EffectfulRouter::new(runtime.handle().clone())
        .health_check(backend.health_check())
        .into_router();
    let http = support::TestServer::start(app, runtime.handle().clone(), Duration::from_secs(1));

    let (status, report) = health(http.addr);
    assert_eq!((status, report.checks["redis"].as_str()), (200, "healthy"));

    server.down();
    let (status, report) = health(http.addr);
    assert_eq!(status, 503, "{report:?}");
    let why = &report.checks["redis"];
    assert!(why.starts_with("unhealthy: "), "{why}");
    assert!(
        why.contains(&server.port.to_string()),
        "names the server: {why}"
    );
    assert!(!why.contains("health-pw"), "never the password: {why}");

    server.up();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, report) = health(http.addr);
        if status == 200 {
            assert_eq!(report.checks["redis"], "healthy");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still unhealthy 10 s after the restart: {report:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    http.stop().expect("the server stops");
    runtime.shutdown(Duration::from_secs(1));
}

#[test]
fn get_user_by_email_is_refused_as_the_databases_and_token_effects_need_a_secret() {
    let with_auth = shared_backend("email", 1)
        .with_auth(effectful_tokio::redis::JwtSecret::new(&[7u8; 32]).expect("long enough"));
    let runtime = runtime(&with_auth, 1);
    let lookup = runtime.block_on(async {
        let h = runtime
            .handle()
            .spawn(|fx| async move {
                fx.perform(effectful::effect::GetUserByEmail {
                    email: "ada@example.com".into(),
                })
                .await
            })
            .await
            .expect("spawned");
        h.await.expect("finished")
    });
    let e = lookup.expect_err("the database serves users");
    assert_eq!(
        (e.kind.clone(), e.retryable),
        (ErrorKind::Unavailable, false)
    );
    assert!(e.message.contains("Database"), "{e}");
    assert!(
        !format!("{with_auth:?}").contains("7, 7, 7"),
        "the key is not shown"
    );
    runtime.shutdown(Duration::from_secs(1));
}
