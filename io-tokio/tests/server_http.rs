//! The router over real loopback sockets: programs per request, `/health` and
//! `/metrics`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Request, StatusCode};
use effectful::EngineConfig;
use effectful::effect::GenerateUuid;
use effectful_tokio::server::{EffectfulRouter, HealthReport, check_fn};
use effectful_tokio::{Runtime, SystemInterpreter};
use support::{TestServer, get, request};

fn runtime(program_timeout: Option<Duration>) -> Runtime {
    Runtime::builder()
        .shards(1)
        .seed(7)
        .engine(EngineConfig {
            program_timeout,
            ..EngineConfig::default()
        })
        .interpreter("System", |_| SystemInterpreter::new())
        .build()
        .expect("runtime")
}

fn programs(router: EffectfulRouter) -> EffectfulRouter {
    router
        .program("/uuid", |fx, _request: Request<Bytes>| async move {
            match fx.perform(GenerateUuid {}).await {
                Ok(id) => (StatusCode::OK, id.to_string()),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        })
        .program("/echo", |_fx, request: Request<Bytes>| async move {
            format!(
                "{} {} {}",
                request.method(),
                request.uri().path(),
                String::from_utf8_lossy(request.body())
            )
        })
        .program("/sleep", |fx, _request: Request<Bytes>| async move {
            fx.sleep(Duration::from_secs(60)).await;
            "woke"
        })
        .program("/panic", |_fx, _request: Request<Bytes>| async move {
            if true {
                panic!("the program panics on purpose");
            }
            "unreachable"
        })
}

#[test]
fn a_program_runs_per_request_and_its_output_is_the_response() {
    let runtime = runtime(None);
    let app = programs(EffectfulRouter::new(runtime.handle().clone())).into_router();
    let server = TestServer::start(app, runtime.handle().clone(), Duration::from_secs(1));

    let first = get(server.addr, "/uuid");
    let second = get(server.addr, "/uuid");
    assert_eq!(first.status, 200, "{first:?}");
    let a = uuid::Uuid::parse_str(&first.body).expect("a uuid");
    let b = uuid::Uuid::parse_str(&second.body).expect("a uuid");
    assert_ne!(a, b, "each request runs its own program");

    let echo = request(server.addr, "POST", "/echo", b"hello body");
    assert_eq!(echo.status, 200);
    assert_eq!(echo.body, "POST /echo hello body");
    server.stop().expect("server stops cleanly");
}

#[test]
fn a_body_over_the_limit_gets_413_and_starts_no_program() {
    let runtime = runtime(None);
    let app = programs(EffectfulRouter::new(runtime.handle().clone()).body_limit(16)).into_router();
    let server = TestServer::start(app, runtime.handle().clone(), Duration::from_secs(1));
    let reply = request(server.addr, "POST", "/echo", &[b'x'; 64]);
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(runtime.stats().snapshot().spawned, 0);
}

#[test]
fn a_program_past_its_deadline_gets_504_and_a_panic_gets_500() {
    let runtime = runtime(Some(Duration::from_millis(100)));
    let app = programs(EffectfulRouter::new(runtime.handle().clone())).into_router();
    let server = TestServer::start(app, runtime.handle().clone(), Duration::from_secs(1));

    let slow = get(server.addr, "/sleep");
    assert_eq!(slow.status, 504, "{slow:?}");
    assert!(slow.body.contains("deadline"), "{slow:?}");
    let panicked = get(server.addr, "/panic");
    assert_eq!(panicked.status, 500, "{panicked:?}");
    assert!(
        !panicked.body.contains("on purpose"),
        "the panic message stays in the log, not the response: {panicked:?}"
    );
    // The server still answers after both.
    assert_eq!(get(server.addr, "/uuid").status, 200);
}

#[test]
fn metrics_show_framework_counters_durations_pools_and_sessions_in_prometheus_text() {
    let runtime = runtime(None);
    let router = programs(EffectfulRouter::new(runtime.handle().clone()));
    let metrics = router.metrics().clone();
    let server = TestServer::start(
        router.into_router(),
        runtime.handle().clone(),
        Duration::from_secs(1),
    );
    for _ in 0..3 {
        assert_eq!(get(server.addr, "/uuid").status, 200);
    }
    metrics.set_pool_utilization("database", 0.25);
    metrics.websocket_sessions().inc();
    metrics.websocket_sessions().inc();

    let reply = get(server.addr, "/metrics");
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .headers
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        reply.headers
    );
    let text = reply.body;
    for line in [
        "# TYPE effectful_effects_total counter",
        "effectful_effects_total{family=\"System\",outcome=\"ok\"} 3",
        "# TYPE effectful_programs_total counter",
        "effectful_programs_total{outcome=\"ok\"} 3",
        "# TYPE effectful_programs_in_progress gauge",
        "effectful_programs_in_progress 0",
        "# TYPE effectful_program_duration_seconds histogram",
        "effectful_program_duration_seconds_count{route=\"/uuid\"} 3",
        "effectful_pool_utilization{pool=\"database\"} 0.25",
        "effectful_websocket_sessions_open 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
}

fn health(addr: std::net::SocketAddr) -> (u16, HealthReport) {
    let reply = get(addr, "/health");
    let report = serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {reply:?}"));
    (reply.status, report)
}

#[test]
fn health_is_200_when_every_check_passes_and_503_naming_the_one_that_fails() {
    let runtime = runtime(None);
    let redis_up = Arc::new(AtomicBool::new(true));
    let up = redis_up.clone();
    let app = EffectfulRouter::new(runtime.handle().clone())
        .health_check(check_fn("database", || async { Ok(()) }))
        .health_check(check_fn("redis", move || {
            let up = up.load(Ordering::SeqCst);
            async move {
                if up {
                    Ok(())
                } else {
                    Err("connection refused".to_string())
                }
            }
        }))
        .into_router();
    let server = TestServer::start(app, runtime.handle().clone(), Duration::from_secs(1));

    let (status, report) = health(server.addr);
    assert_eq!(status, 200);
    assert_eq!(report.status, "healthy");
    assert_eq!(report.checks["database"], "healthy");
    assert_eq!(report.checks["redis"], "healthy");

    redis_up.store(false, Ordering::SeqCst);
    let (status, report) = health(server.addr);
    assert_eq!(status, 503);
    assert_eq!(report.status, "unhealthy");
    assert_eq!(report.checks["database"], "healthy");
    assert_eq!(report.checks["redis"], "unhealthy: connection refused");

    redis_up.store(true, Ordering::SeqCst);
    assert_eq!(
        health(server.addr).0,
        200,
        "healthy again once redis is back"
    );
}

#[test]
fn a_check_that_hangs_counts_as_unhealthy_after_the_timeout() {
    let runtime = runtime(None);
    let app = EffectfulRouter::new(runtime.handle().clone())
        .health_timeout(Duration::from_millis(50))
        .health_check(check_fn("database", std::future::pending))
        .into_router();
    let server = TestServer::start(app, runtime.handle().clone(), Duration::from_secs(1));
    let (status, report) = health(server.addr);
    assert_eq!(status, 503);
    assert_eq!(
        report.checks["database"],
        "unhealthy: no answer within 50 ms"
    );
}

#[test]
fn health_turns_503_once_shutdown_begins_so_balancers_drain() {
    let runtime = runtime(None);
    let app = EffectfulRouter::new(runtime.handle().clone()).into_router();
    let server = TestServer::start(app, runtime.handle().clone(), Duration::from_secs(1));
    assert_eq!(health(server.addr).0, 200);
    runtime.handle().begin_shutdown(Duration::from_secs(1));
    let (status, report) = health(server.addr);
    assert_eq!(status, 503);
    assert_eq!(report.checks["runtime"], "unhealthy: shutting down");
}

#[test]
fn a_request_after_shutdown_began_gets_503_not_a_started_program() {
    let runtime = runtime(None);
    let app = programs(EffectfulRouter::new(runtime.handle().clone())).into_router();
    let server = TestServer::start(app, runtime.handle().clone(), Duration::from_secs(1));
    runtime.handle().begin_shutdown(Duration::from_secs(1));
    let reply = get(server.addr, "/uuid");
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.body.contains("shutting down"));
}

#[test]
fn the_router_mounts_inside_a_users_own_axum_app() {
    let runtime = runtime(None);
    let ours = programs(EffectfulRouter::new(runtime.handle().clone())).into_router();
    let app = axum::Router::new()
        .route("/own", axum::routing::get(|| async { "the user's route" }))
        .nest("/fx", ours);
    let server = TestServer::start(app, runtime.handle().clone(), Duration::from_secs(1));
    assert_eq!(get(server.addr, "/own").body, "the user's route");
    assert_eq!(get(server.addr, "/fx/health").status, 200);
    assert_eq!(
        request(server.addr, "PUT", "/fx/echo", b"x").body,
        "PUT /echo x"
    );
}
