//! `tracing` logs at `LOG_LEVEL`, human-readable or JSON.

use tracing::Subscriber;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

use super::settings::LogFormat;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("could not install the log subscriber: {0}; another subscriber is already installed")]
pub struct LoggingError(String);

/// A subscriber writing lines at `level` and above to `writer`, in `format`, without
/// terminal colours (use it with `tracing::subscriber::with_default` in tests, or
/// see [`init_logging`]).
pub fn log_subscriber<W>(
    level: LevelFilter,
    format: LogFormat,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    subscriber(level, format, writer, false)
}

fn subscriber<W>(
    level: LevelFilter,
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // RUST_LOG, when set, refines per target (`info,hyper=warn`); LOG_LEVEL is the rest.
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(true);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .finish(),
        ),
    }
}

/// Installs the process-wide subscriber: lines at `level` and above to stderr, in
/// `format`, coloured only when stderr is a terminal. Call once, early in `main`.
pub fn init_logging(level: LevelFilter, format: LogFormat) -> Result<(), LoggingError> {
    use std::io::IsTerminal;
    let ansi = format == LogFormat::Text && std::io::stderr().is_terminal();
    tracing::subscriber::set_global_default(subscriber(level, format, std::io::stderr, ansi))
        .map_err(|e| LoggingError(e.to_string()))
}
