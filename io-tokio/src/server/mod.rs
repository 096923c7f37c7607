//! The production server surface (feature `server`): an axum [`Router`] users mount
//! in their own app, serving
//!
//! - programs, one per plain HTTP request, whose output becomes the response
//!   ([`EffectfulRouter::program`]);
//! - `/health`: every registered [`HealthCheck`], 200 or 503 with per-check JSON;
//! - `/metrics`: Prometheus text ([`ServerMetrics`]);
//!
//! and what a deployment needs around it: [`Settings`] from the environment and
//! `.env`, [`init_logging`], [`init_error_reporting`] (Sentry), and [`serve`] with
//! graceful shutdown on SIGTERM or Ctrl-C ([`shutdown_signal`]).
//!
//! - WebSocket connections, one program each ([`EffectfulRouter::websocket`], with
//!   [`WebSocketInterpreter`] registered on the runtime): the handler takes the
//!   upgraded connection to the program's shard through the same [`Handle`], counts
//!   it in [`ServerMetrics::websocket_sessions`], and the runtime's shutdown closes
//!   sessions with 1001.

mod health;
mod logging;
mod metrics;
mod reporting;
mod settings;
mod websocket;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use effectful::{Family, Fx, ProgramError, Std};

use crate::{Handle, SpawnError};

pub use health::{CheckFuture, HealthCheck, HealthReport, check_fn};
pub use logging::{LoggingError, init_logging, log_subscriber};
pub use metrics::{PoolLabels, ServerMetrics};
pub use reporting::{init_error_reporting, report_program_error};
pub use settings::{
    LogFormat, MAX_SHARDS, Secret, SecretUrl, SettingProblem, Settings, SettingsError,
};
pub use websocket::{WebSocketInterpreter, WsConnect, WsRoute};

use health::HealthChecks;

/// The largest request body a program is handed, unless set with
/// [`EffectfulRouter::body_limit`]: 2 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// What every route shares: the runtime's handle, the metrics and the health checks.
pub struct ServerState<F: Family = Std> {
    handle: Handle<F>,
    metrics: ServerMetrics,
    health: HealthChecks,
}

impl<F: Family> Clone for ServerState<F> {
    fn clone(&self) -> Self {
        ServerState {
            handle: self.handle.clone(),
            metrics: self.metrics.clone(),
            health: self.health.clone(),
        }
    }
}

impl<F: Family> ServerState<F> {
    /// The runtime's handle: start programs on its shards.
    pub fn handle(&self) -> &Handle<F> {
        &self.handle
    }

    /// The metrics every route reports to.
    pub fn metrics(&self) -> &ServerMetrics {
        &self.metrics
    }

    /// Whether the runtime began shutting down (sessions should close with 1001).
    pub fn shutting_down(&self) -> bool {
        self.handle.is_shutting_down()
    }
}

/// Builds the axum [`Router`] of an effectful server.
///
/// ```
/// use axum::body::Bytes;
/// use axum::http::Request;
/// use effectful_tokio::server::{EffectfulRouter, check_fn};
/// use effectful_tokio::{Runtime, SystemInterpreter};
///
/// let runtime = Runtime::builder()
///     .shards(1)
///     .interpreter("System", |_| SystemInterpreter::new())
///     .build()?;
/// let app: axum::Router = EffectfulRouter::new(runtime.handle().clone())
///     .health_check(check_fn("memory", || async { Ok(()) }))
///     .program("/uuid", |fx, _request: Request<Bytes>| async move {
///         match fx.perform(effectful::effect::GenerateUuid {}).await {
///             Ok(id) => id.to_string(),
///             Err(e) => format!("no uuid: {e}"),
///         }
///     })
///     .into_router();
/// // Mount it in your own app: `Router::new().merge(app)` or `.nest("/api", app)`.
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct EffectfulRouter<F: Family = Std> {
    state: ServerState<F>,
    router: Router<ServerState<F>>,
    body_limit: usize,
}

impl<F: Family> EffectfulRouter<F>
where
    F::Response: Send,
{
    /// A router with `/health` (no checks yet: always healthy while running) and
    /// `/metrics`, starting programs through `handle`.
    pub fn new(handle: Handle<F>) -> Self {
        let metrics = ServerMetrics::new(handle.stats().clone());
        let state = ServerState {
            handle,
            metrics,
            health: HealthChecks {
                checks: Vec::new(),
                timeout: Duration::from_secs(5),
            },
        };
        let router = Router::new()
            .route("/health", get(health_route::<F>))
            .route("/metrics", get(metrics_route::<F>));
        EffectfulRouter {
            state,
            router,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// Adds a check to `/health`.
    pub fn health_check(mut self, check: impl HealthCheck) -> Self {
        self.state.health.checks.push(Arc::new(check));
        self
    }

    /// How long each health check may take before it counts as unhealthy
    /// (default 5 s).
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        self.state.health.timeout = timeout;
        self
    }

    /// The largest request body handed to a program (default
    /// [`DEFAULT_BODY_LIMIT`]); larger requests get 413 and start nothing.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The metrics, to set pool utilisation and WebSocket sessions from elsewhere.
    pub fn metrics(&self) -> &ServerMetrics {
        &self.state.metrics
    }

    /// The shared state, for routes of your own (such as the WebSocket route) added
    /// with [`with_routes`](Self::with_routes).
    pub fn state(&self) -> &ServerState<F> {
        &self.state
    }

    /// Adds routes that take [`ServerState`] as their axum state.
    pub fn with_routes(mut self, routes: Router<ServerState<F>>) -> Self {
        self.router = self.router.merge(routes);
        self
    }

    /// Serves `path` (any method) by running one program per request on a shard:
    /// `program(fx, request)` is called on the shard with the request and its whole
    /// body, and what the program returns becomes the response.
    ///
    /// A program that fails (deadline from `PROGRAM_TIMEOUT_SECONDS`: 504; aborted
    /// at shutdown or not started because of it: 503; panicked or otherwise: 500) is
    /// logged and reported to Sentry (when set up); the response says only what
    /// kind of failure it was.
    pub fn program<P, Fut, T>(mut self, path: &str, program: P) -> Self
    where
        P: Fn(Fx<F>, Request<Bytes>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = T> + 'static,
        T: IntoResponse + Send + 'static,
    {
        let route: Arc<str> = Arc::from(path);
        let limit = self.body_limit;
        let handler = move |State(state): State<ServerState<F>>, request: Request<Body>| {
            let program = program.clone();
            let route = route.clone();
            async move { run_program(state, &route, limit, request, program).await }
        };
        self.router = self
            .router
            .route(path, any(handler).layer(DefaultBodyLimit::max(limit)));
        self
    }

    /// The finished router, to serve or to mount in your own app.
    pub fn into_router(self) -> Router {
        self.router.with_state(self.state)
    }
}

async fn run_program<F, P, Fut, T>(
    state: ServerState<F>,
    route: &str,
    limit: usize,
    request: Request<Body>,
    program: P,
) -> Response
where
    F: Family,
    F::Response: Send,
    P: Fn(Fx<F>, Request<Bytes>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: IntoResponse + Send + 'static,
{
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over {limit} bytes or was cut short\n"),
            )
                .into_response();
        }
    };
    let request = Request::from_parts(parts, body);
    let started = Instant::now();
    let joined = match state.handle.spawn(move |fx| program(fx, request)).await {
        Ok(join) => join.await,
        Err(e) => return not_started(route, &e),
    };
    state
        .metrics
        .observe_program(route, started.elapsed().as_secs_f64());
    match joined {
        Ok(output) => output.into_response(),
        Err(error) => {
            let status = match error {
                ProgramError::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
                ProgramError::Aborted => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            report_program_error(route, &error);
            (status, format!("the program failed: {}\n", kind(&error))).into_response()
        }
    }
}

/// The answer when a program could not start: 503, saying whether the server is
/// shutting down or busy.
pub(crate) fn not_started(route: &str, error: &SpawnError) -> Response {
    if *error == SpawnError::ShuttingDown {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down\n",
        )
            .into_response();
    }
    tracing::warn!(route, %error, "program not started");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is busy; retry later\n",
    )
        .into_response()
}

fn kind(error: &ProgramError) -> &'static str {
    match error {
        ProgramError::DeadlineExceeded { .. } => "it ran past its deadline",
        ProgramError::Aborted => "it was stopped by shutdown",
        ProgramError::Panicked { .. } => "it panicked",
        _ => "internal error",
    }
}

async fn health_route<F: Family>(State(state): State<ServerState<F>>) -> HealthReport {
    state.health.run(state.handle.is_shutting_down()).await
}

async fn metrics_route<F: Family>(State(state): State<ServerState<F>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT); on other platforms, Ctrl-C only.
/// If the OS refuses a handler, says so in the log and waits for the other one.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "could not listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "could not listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
}

/// Serves `router` on `listener` until `signal` resolves, then shuts down
/// gracefully: stops accepting, begins the runtime's shutdown (programs have
/// `grace` to finish; WebSocket sessions are closed with 1001; `/health` turns 503),
/// and returns once every open request is answered (or `grace` passed). Then drop
/// or [`shut down`](crate::Runtime::shutdown) the runtime.
///
/// Connections are served with hyper's HTTP/1.1 (keep-alive, upgrades). A WebSocket
/// connection leaves this function's runtime entirely: its socket moves to the shard
/// running its program, so the runtime that called `serve` may stop first. (Mounted
/// in your own `axum::serve`, the route still works, but the socket stays with
/// axum's runtime, which must then outlive the sessions.)
///
/// Needs a tokio runtime with IO and time enabled (the shards' runtime is not one:
/// run it from `main`'s own).
pub async fn serve<F: Family>(
    listener: tokio::net::TcpListener,
    router: Router,
    handle: Handle<F>,
    grace: Duration,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    F::Response: Send,
{
    let address = listener.local_addr()?;
    tracing::info!(%address, "listening");
    let service = hyper_util::service::TowerToHyperService::new(router);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Each connection's task holds a sender; all dropped means all answered.
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut signal = std::pin::pin!(signal);
    loop {
        let stream = tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Out of file descriptors, mostly: wait a little rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let mut stop = stop_rx.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let served = tokio::select! {
                served = conn.as_mut() => served,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    handle.begin_shutdown(grace);
    let _ = stop_tx.send(true);
    drop(open_tx);
    // Programs still running when the grace period ends are aborted, and their
    // requests answered, just after it.
    let answered = grace + Duration::from_secs(1);
    if tokio::time::timeout(answered, open_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "HTTP connections still open after the grace period; leaving them"
        );
    }
    Ok(())
}
