//! The WebSocket route: one program per connection, on a shard, talking to its client
//! through the WebSocket family (`ReceiveText`, `SendText`, `Close`).
//!
//! The axum handler validates the upgrade with core's
//! [`Acceptor::accept`](effectful::websocket::Acceptor::accept) (a refusal is answered
//! with its HTTP status: 400, 403, 405, 426 with `Sec-WebSocket-Version: 13`), starts
//! the program on a shard through the runtime's [`Handle`](crate::Handle) (503 while
//! shutting down or when every queue is full), answers `101`, and hands the upgraded
//! connection to that shard: axum handlers are `Send` and the engine is not, so the
//! IO moves, not the program. On the shard, [`WebSocketInterpreter`] answers the
//! program's effects from a [`WsSession`](effectful::websocket::WsSession) that does
//! the framing; see [`shard`] for the rules.
//!
//! Close codes: the program's end closes with
//! [`policy::close_reason`](effectful::policy::close_reason) (1000 returned, 1001
//! aborted at shutdown, 1008 `Timeout` past `PROGRAM_TIMEOUT_SECONDS`, 1011 failed);
//! the runtime's shutdown closes every session with 1001 and lets programs finish
//! within the grace period; the session's own limits give 1007, 1008 (`Idle timeout`,
//! `Client too slow`) and 1009.

pub(crate) mod shard;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use effectful::Fx;
use effectful::websocket::{Acceptor, HandshakeError, UpgradeRequest, WsConfig};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use super::{EffectfulRouter, ServerState, not_started, report_program_error};
use crate::{SpawnError, SplitStd};

pub use shard::WebSocketInterpreter;

/// What a WebSocket program is told about its connection.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WsConnect {
    /// The request's URI (path and query).
    pub uri: Uri,
    /// The upgrade request's headers.
    pub headers: HeaderMap,
    /// The subprotocol chosen by the [`Acceptor`], if any.
    pub subprotocol: Option<String>,
}

/// How a WebSocket route accepts and runs connections: the handshake's
/// [`Acceptor`] (subprotocols, origin check) and each session's [`WsConfig`]
/// (message and frame limits, the slow-client bound, keep-alive and idle timeout).
#[derive(Clone, Debug, Default)]
pub struct WsRoute {
    acceptor: Acceptor,
    config: WsConfig,
}

impl WsRoute {
    /// The defaults: any origin, no subprotocol, [`WsConfig::default`].
    pub fn new() -> WsRoute {
        WsRoute::default()
    }

    /// The handshake's acceptor.
    pub fn acceptor(mut self, acceptor: Acceptor) -> WsRoute {
        self.acceptor = acceptor;
        self
    }

    /// Each session's limits and timers.
    pub fn config(mut self, config: WsConfig) -> WsRoute {
        self.config = config;
        self
    }
}

impl<F: SplitStd> EffectfulRouter<F>
where
    F::Response: Send,
{
    /// Serves WebSocket upgrades on `path`: each connection runs one program,
    /// `program(fx, connect)`, made on the shard that serves the connection. The
    /// runtime needs [`WebSocketInterpreter`] registered for `"WebSocket"`.
    ///
    /// ```
    /// use effectful::effect::{ReceiveText, SendText};
    /// use effectful_tokio::server::{EffectfulRouter, WebSocketInterpreter, WsRoute};
    /// use effectful_tokio::Runtime;
    ///
    /// let runtime = Runtime::builder()
    ///     .shards(1)
    ///     .interpreter("WebSocket", WebSocketInterpreter::new)
    ///     .build()?;
    /// let app: axum::Router = EffectfulRouter::new(runtime.handle().clone())
    ///     .websocket("/ws/echo", WsRoute::new(), |fx, _connect| async move {
    ///         // Echo until the client goes: its disconnect fails ReceiveText.
    ///         while let Ok(text) = fx.perform(ReceiveText {}).await {
    ///             if fx.perform(SendText { text }).await.is_err() {
    ///                 break;
    ///             }
    ///         }
    ///     })
    ///     .into_router();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// The program's output is dropped; how it ended picks the close code (1000
    /// returned, 1001 aborted at shutdown, 1008 `Timeout` past its deadline, 1011
    /// failed). A failed program is logged and reported like an HTTP one.
    pub fn websocket<P, Fut, T>(mut self, path: &str, route: WsRoute, program: P) -> Self
    where
        P: Fn(Fx<F>, WsConnect) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let name: Arc<str> = Arc::from(path);
        let route = Arc::new(route);
        let handler = move |State(state): State<ServerState<F>>, request: Request<Body>| {
            let program = program.clone();
            let name = name.clone();
            let route = route.clone();
            async move { upgrade(state, name, &route, request, program).await }
        };
        self.router = self.router.route(path, any(handler));
        self
    }
}

async fn upgrade<F, P, Fut, T>(
    state: ServerState<F>,
    name: Arc<str>,
    route: &WsRoute,
    mut request: Request<Body>,
    program: P,
) -> Response
where
    F: SplitStd,
    F::Response: Send,
    P: Fn(Fx<F>, WsConnect) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    if state.shutting_down() {
        return not_started(&name, &SpawnError::ShuttingDown);
    }
    let accepted = {
        let headers: Vec<(&str, &[u8])> = request
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        let parsed = UpgradeRequest {
            method: request.method().as_str(),
            http_1_1_or_later: request.version() >= Version::HTTP_11,
            headers: &headers,
        };
        match route.acceptor.accept(&parsed) {
            Ok(accepted) => accepted,
            Err(refused) => return refusal(&refused),
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let (parts, _body) = request.into_parts();
    let connect = WsConnect {
        uri: parts.uri,
        headers: parts.headers,
        subprotocol: accepted.subprotocol.clone(),
    };
    let (io_tx, io_rx) = oneshot::channel::<shard::Handoff>();
    let config = route.config.clone();
    let gauge = state.metrics.websocket_sessions().clone();
    let started = Instant::now();
    let spawned = state
        .handle
        .spawn(move |fx| {
            shard::attach(fx.program(), config, io_rx, gauge);
            program(fx, connect)
        })
        .await;
    let join = match spawned {
        Ok(join) => join,
        Err(e) => return not_started(&name, &e),
    };
    let metrics = state.metrics.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                if let Some(handoff) = handoff(upgraded) {
                    let _ = io_tx.send(handoff);
                }
            }
            // The session sees the client vanish: its program's effects fail.
            Err(error) => tracing::debug!(route = &*name, %error, "WebSocket upgrade failed"),
        }
        let result = join.await;
        metrics.observe_program(&name, started.elapsed().as_secs_f64());
        if let Err(error) = result {
            report_program_error(&name, &error);
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(key) = HeaderValue::from_str(&accepted.accept_key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, key);
    }
    if let Some(protocol) = accepted
        .subprotocol
        .as_deref()
        .and_then(|p| HeaderValue::from_str(p).ok())
    {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}

/// The upgraded connection, ready for the shard: the TCP stream itself when hyper
/// served it straight from the listener (as [`serve`](crate::server::serve) does),
/// or hyper's upgraded IO otherwise.
fn handoff(upgraded: hyper::upgrade::Upgraded) -> Option<shard::Handoff> {
    match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
        Ok(parts) => match parts.io.into_inner().into_std() {
            Ok(stream) => Some(shard::Handoff::Tcp(stream, parts.read_buf)),
            // The session then sees its client vanish.
            Err(error) => {
                tracing::error!(%error, "could not take the WebSocket's socket off the HTTP runtime");
                None
            }
        },
        Err(upgraded) => Some(shard::Handoff::Other(Box::new(TokioIo::new(upgraded)))),
    }
}

/// The HTTP answer to a refused upgrade: its status, and for 426 the version this
/// server speaks.
fn refusal(refused: &HandshakeError) -> Response {
    let status = StatusCode::from_u16(refused.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, format!("{refused}\n")).into_response();
    if status == StatusCode::UPGRADE_REQUIRED {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    response
}
