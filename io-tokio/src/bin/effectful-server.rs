//! An effectful server on the in-memory backends: settings from the environment and
//! `.env`, logs at LOG_LEVEL, errors to SENTRY_DSN, `/health`, `/metrics`, and two
//! programs (`GET /uuid`, `GET /sleep?ms=N`); graceful shutdown on SIGTERM or Ctrl-C.
//!
//! ```text
//! PORT=8000 LOG_LEVEL=debug cargo run -p effectful-tokio --bin effectful-server
//! ```

use std::process::ExitCode;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Request, StatusCode};
use effectful::effect::GenerateUuid;
use effectful_tokio::memory::MemoryWorld;
use effectful_tokio::server::{
    EffectfulRouter, Settings, check_fn, init_error_reporting, init_logging, serve, shutdown_signal,
};
use effectful_tokio::{Runtime, SystemInterpreter};

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            // No logger yet: the settings say how to log.
            eprintln!("effectful-server: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(settings.log_level, settings.log_format) {
        eprintln!("effectful-server: {e}");
        return ExitCode::from(2);
    }
    tracing::info!(?settings, "starting");
    let _sentry = init_error_reporting(&settings);
    match run(&settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server stopped with an error");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: &Settings) -> Result<(), Box<dyn std::error::Error>> {
    let world = MemoryWorld::new()?;
    let runtime = world
        .register(Runtime::builder().settings(settings))
        .interpreter("System", |_| SystemInterpreter::new())
        .build()?;
    let app = EffectfulRouter::new(runtime.handle().clone())
        .health_check(check_fn("memory", || async { Ok(()) }))
        .program("/uuid", |fx, _request: Request<Bytes>| async move {
            match fx.perform(GenerateUuid {}).await {
                Ok(id) => (StatusCode::OK, format!("{id}\n")),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        })
        .program("/sleep", |fx, request: Request<Bytes>| async move {
            let ms = request
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|ms| ms.parse::<u64>().ok())
                .unwrap_or(0);
            fx.sleep(Duration::from_millis(ms)).await;
            format!("slept {ms} ms\n")
        })
        .into_router();

    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    io.block_on(async {
        let listener = tokio::net::TcpListener::bind(settings.bind_addr).await?;
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
    tracing::info!(?report, "stopped");
    Ok(())
}
