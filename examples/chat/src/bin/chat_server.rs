//! `chat_server`: the chat application, served. The README's main command.
//!
//! ```text
//! cargo run --release -p effectful-chat --bin chat_server            # http://127.0.0.1:8000
//! chat_server --host 0.0.0.0 --port 8080
//! DATABASE_URL=postgresql://app@db/chat REDIS_URL=redis://cache chat_server
//! ```
//!
//! - `/` serves the page where a person joins and chats (plain HTML and JS);
//!   `/ws/chat` runs one chat session per WebSocket connection on a shard, under
//!   `PROGRAM_TIMEOUT_SECONDS` (then it closes with 1008); `/health` checks each
//!   backend; `/metrics` is Prometheus text.
//! - Settings come from the environment and `.env` (see `deploy/.env.example`);
//!   `--host` and `--port` override `HOST` and `PORT`.
//! - With `DATABASE_URL` set the room and Storage's objects live in PostgreSQL.
//!   With it unset the room lives in memory, and with `REDIS_URL` unset so
//!   does the cache: the log says so, and one process keeps the room. So the
//!   first command works on a bare machine. With `ENVIRONMENT=production` said (in
//!   the environment or `.env`, as `deploy/` does) the server refuses to start
//!   without both, so that a mistyped variable never silently loses data; unset,
//!   `ENVIRONMENT` still reads `production` in error reports.
//! - SIGTERM or Ctrl-C: stop accepting, close sessions with 1001, let programs finish
//!   within `SHUTDOWN_GRACE_SECONDS`, exit 0.

use std::process::ExitCode;
use std::rc::Rc;

use axum::response::Html;
use axum::routing::get;
use effectful_chat::session::{ChatConfig, chat_session};
use effectful_tokio::memory::{MEMORY_FAMILIES, MemoryWorld};
use effectful_tokio::postgres::{PgDatabase, PgDatabaseConfig};
use effectful_tokio::redis::{REDIS_FAMILIES, RedisBackend};
use effectful_tokio::server::{
    EffectfulRouter, Settings, WebSocketInterpreter, WsRoute, check_fn, init_error_reporting,
    init_logging, serve, shutdown_signal,
};
use effectful_tokio::{Runtime, SystemInterpreter};

/// The page, served at `/`.
const PAGE: &str = include_str!("../../static/index.html");

const USAGE: &str = "usage: chat_server [--host IP] [--port PORT]\n\
    Settings come from the environment and .env: HOST, PORT, DATABASE_URL, REDIS_URL, \
    ENVIRONMENT, LOG_LEVEL, LOG_FORMAT, PROGRAM_TIMEOUT_SECONDS, SHUTDOWN_GRACE_SECONDS, \
    SHARDS, SENTRY_DSN, ... (see deploy/.env.example).";

/// `--host` and `--port`, read before the settings so they can override them.
fn overrides(args: &[String]) -> Result<Vec<(&'static str, String)>, String> {
    let mut found = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_owned())),
            None => (arg.as_str(), None),
        };
        let variable = match name {
            "--host" => "HOST",
            "--port" => "PORT",
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        };
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))?,
        };
        found.push((variable, value));
    }
    Ok(found)
}

fn settings(args: &[String]) -> Result<Settings, String> {
    let overrides = overrides(args)?;
    let lookup = |name: &str| {
        overrides
            .iter()
            .find(|(variable, _)| *variable == name)
            .map(|(_, value)| value.clone())
            .or_else(|| std::env::var(name).ok())
    };
    let settings = Settings::from_lookup_and_file(lookup, std::path::Path::new(".env"))
        .map_err(|e| e.to_string())?;
    if settings.environment_given && settings.environment.eq_ignore_ascii_case("production") {
        let missing: Vec<&str> = [
            ("DATABASE_URL", settings.database_url.is_none()),
            ("REDIS_URL", settings.redis_url.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, missing)| missing.then_some(name))
        .collect();
        if !missing.is_empty() {
            return Err(format!(
                "ENVIRONMENT=production needs {}: without them the room would live in this \
                 process's memory and be lost when it stops (set ENVIRONMENT=development to run \
                 in memory on purpose)",
                missing.join(" and ")
            ));
        }
    }
    Ok(settings)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = match settings(&args) {
        Ok(settings) => settings,
        Err(e) => {
            // No logger yet: the settings say how to log.
            eprintln!("chat_server: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(settings.log_level, settings.log_format) {
        eprintln!("chat_server: {e}");
        return ExitCode::from(2);
    }
    let _sentry = init_error_reporting(&settings);
    match run(&settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "chat_server stopped with an error");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: &Settings) -> Result<(), Box<dyn std::error::Error>> {
    let world = MemoryWorld::new()?;
    let mut builder = Runtime::builder()
        .settings(settings)
        .interpreter("System", |_| SystemInterpreter::new())
        .interpreter("WebSocket", WebSocketInterpreter::new);
    let mut real: Vec<&str> = Vec::new();

    let database = match PgDatabaseConfig::from_settings(settings)? {
        Some(config) => {
            let db = PgDatabase::start(config)?;
            builder = db.register_storage(db.register(builder));
            real.extend(["Database", "Storage"]);
            tracing::info!(url = %settings.database_url.as_ref().map(|u| u.redacted()).unwrap_or_default(), "the room lives in PostgreSQL");
            Some(db)
        }
        None => {
            tracing::warn!(
                "DATABASE_URL is not set: the room lives in this process's memory and is lost when it stops"
            );
            None
        }
    };
    let redis = match settings.redis_url {
        Some(_) => {
            let backend = RedisBackend::from_settings(settings, "effectful-chat:")?;
            builder = backend.register(builder);
            real.extend(
                REDIS_FAMILIES
                    .iter()
                    .take(if settings.jwt_secret.is_some() { 2 } else { 1 }),
            );
            tracing::info!("the cache lives in Redis");
            Some(backend)
        }
        None => {
            tracing::warn!("REDIS_URL is not set: the cache lives in this process's memory");
            None
        }
    };
    for family in MEMORY_FAMILIES {
        if !real.contains(&family) {
            let world = world.clone();
            builder = builder.interpreter(family, move |shard| world.interpreter(family, shard));
        }
    }
    let runtime = builder.build()?;

    let chat = ChatConfig::default();
    let mut app = EffectfulRouter::new(runtime.handle().clone())
        .websocket("/ws/chat", WsRoute::new(), move |fx, _connect| {
            chat_session(fx, Rc::new(chat.clone()))
        })
        .with_routes(axum::Router::new().route("/", get(|| async { Html(PAGE) })));
    match &database {
        Some(db) => app = app.health_check(db.health_check()),
        None => app = app.health_check(check_fn("database", || async { Ok(()) })),
    }
    if let Some(redis) = &redis {
        app = app.health_check(redis.health_check());
    }
    let metrics = app.metrics().clone();
    let app = app.into_router();

    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    io.block_on(async {
        let listener = tokio::net::TcpListener::bind(settings.bind_addr).await?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "chat_server listening: open http://{addr}/");
        // /metrics: the PostgreSQL and Redis pools' shares in use, every second.
        let (db, pool) = (database.clone(), redis.as_ref().map(|r| r.pool().clone()));
        if db.is_some() || pool.is_some() {
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    every.tick().await;
                    if let Some(db) = &db {
                        let Some(status) = db.status().await else {
                            break;
                        };
                        metrics.set_pool_utilization("database", status.utilisation);
                    }
                    if let Some(pool) = &pool {
                        metrics.set_pool_utilization("redis", pool.status().utilisation);
                    }
                }
            });
        }
        serve(
            listener,
            app,
            runtime.handle().clone(),
            settings.shutdown_grace,
            shutdown_signal(),
        )
        .await
    })?;
    let report = runtime.shutdown(settings.shutdown_grace);
    if let Some(db) = &database {
        db.shutdown(settings.shutdown_grace);
    }
    tracing::info!(?report, "stopped");
    Ok(())
}
