//! Error reporting to Sentry when `SENTRY_DSN` is set.

use effectful::ProgramError;

use super::settings::Settings;

/// Starts reporting errors to `settings.sentry_dsn` (tagged with
/// `settings.environment`); `None` when no DSN is set. Keep the guard alive for the
/// life of the process: dropping it sends what is queued (waiting at most 2 s).
pub fn init_error_reporting(settings: &Settings) -> Option<sentry::ClientInitGuard> {
    let dsn = settings.sentry_dsn.as_ref()?;
    let guard = sentry::init((
        dsn.expose(),
        sentry::ClientOptions {
            environment: Some(settings.environment.clone().into()),
            release: sentry::release_name!(),
            shutdown_timeout: std::time::Duration::from_secs(2),
            ..Default::default()
        },
    ));
    tracing::info!(environment = %settings.environment, "reporting errors to Sentry");
    Some(guard)
}

/// Logs a failed program and reports it to Sentry (a no-op when reporting is not
/// set up).
pub fn report_program_error(route: &str, error: &ProgramError) {
    tracing::error!(route, %error, "program failed");
    sentry::with_scope(
        |scope| scope.set_tag("route", route),
        || sentry::capture_error(error),
    );
}
