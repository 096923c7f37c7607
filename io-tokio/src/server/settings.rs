//! Settings from environment variables and a `.env` file, validated at start.
//!
//! Every variable of the deployment guide is read; a process environment variable
//! wins over the same name in `.env`. Validation collects every problem at once,
//! each naming its variable. Secrets (the password in `DATABASE_URL` and
//! `REDIS_URL`, the whole `SENTRY_DSN`) never appear in `Debug`, errors or logs.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tracing::level_filters::LevelFilter;

/// A URL whose password is hidden when shown (`postgresql://user:***@db:5432/app`).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(url::Url);

impl SecretUrl {
    /// The full URL, password included: pass it to the client that connects, and
    /// never to a log.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// The URL with its password replaced by `***` (safe to log).
    pub fn redacted(&self) -> String {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            // Only fails for URLs that cannot have a password, which this one has.
            let _ = shown.set_password(Some("***"));
        }
        shown.to_string()
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A value never shown: `Debug` prints `"***"`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value itself: hand it to the client that needs it, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The server's settings; see the README's settings table for each variable.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `DATABASE_URL` (`postgresql://` or `postgres://`); `None` runs without PostgreSQL.
    pub database_url: Option<SecretUrl>,
    /// `DATABASE_POOL_MIN_SIZE` (default 5).
    pub database_pool_min_size: u32,
    /// `DATABASE_POOL_MAX_SIZE` (default 20, at least the minimum).
    pub database_pool_max_size: u32,
    /// `REDIS_URL` (`redis://` or `rediss://`); `None` runs without Redis.
    pub redis_url: Option<SecretUrl>,
    /// `REDIS_MAX_CONNECTIONS` (default 10).
    pub redis_max_connections: u32,
    /// `JWT_SECRET`: the HS256 key of the Auth family's tokens (at least 32 bytes);
    /// `None` runs without token auth. Never shown.
    pub jwt_secret: Option<Secret>,
    /// `ENVIRONMENT` (default `production`), reported with errors.
    pub environment: String,
    /// Whether `ENVIRONMENT` was set (in the environment or `.env`), not defaulted:
    /// a server may take an unset one as a developer's machine (`chat_server` then
    /// runs in memory without `DATABASE_URL` and `REDIS_URL`, and refuses to only
    /// when `ENVIRONMENT=production` is said).
    pub environment_given: bool,
    /// `LOG_LEVEL`: `TRACE`, `DEBUG`, `INFO` (default), `WARNING`/`WARN`, `ERROR`,
    /// `CRITICAL` (taken as `ERROR`); any case.
    pub log_level: LevelFilter,
    /// `LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// `PROGRAM_TIMEOUT_SECONDS` (default 300): the longest a program may run.
    pub program_timeout: Duration,
    /// `SENTRY_DSN`: where errors are reported; `None` reports nowhere.
    pub sentry_dsn: Option<Secret>,
    /// `HOST` (an IP address, default `127.0.0.1`: this machine only; `0.0.0.0` in a
    /// container) and `PORT` (default 8000; 0 picks a free one): where the server
    /// listens.
    pub bind_addr: SocketAddr,
    /// `SHUTDOWN_GRACE_SECONDS` (default 30): how long running programs may take to
    /// finish after SIGTERM or Ctrl-C.
    pub shutdown_grace: Duration,
    /// `SHARDS`: how many shards (threads, each with its own engine) serve programs,
    /// 1 to [`MAX_SHARDS`]; `None` (unset): one per core. Fewer leave cores to what
    /// shares the machine (the databases, a sidecar).
    pub shards: Option<u32>,
}

/// The most shards `SHARDS` may ask for.
pub const MAX_SHARDS: u32 = 1024;

/// One variable with a bad value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingProblem {
    /// The variable's name.
    pub variable: &'static str,
    /// What is wrong and what is expected (never the value of a secret).
    pub problem: String,
}

/// Why the settings could not be loaded: every bad variable, each named.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The `.env` file exists but could not be read or parsed.
    #[error("could not read {path}: {message}; fix the file or remove it")]
    DotEnv {
        /// The file.
        path: String,
        /// What went wrong (the line that failed, never its value).
        message: String,
    },
    /// One or more variables have bad values.
    #[error("invalid settings: {}", describe(.0))]
    Invalid(Vec<SettingProblem>),
}

fn describe(problems: &[SettingProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.variable, p.problem))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Settings {
    /// Reads the process environment and `./.env` (if present); the environment wins.
    pub fn from_env() -> Result<Settings, SettingsError> {
        Settings::from_env_and_file(Path::new(".env"))
    }

    /// Reads the process environment and `dotenv` (if present); the environment wins.
    pub fn from_env_and_file(dotenv: &Path) -> Result<Settings, SettingsError> {
        Settings::from_lookup_and_file(|name| std::env::var(name).ok(), dotenv)
    }

    /// Reads each variable through `lookup`, then from `dotenv` (if present) for the
    /// ones `lookup` lacks.
    pub fn from_lookup_and_file(
        lookup: impl Fn(&str) -> Option<String>,
        dotenv: &Path,
    ) -> Result<Settings, SettingsError> {
        let file = read_dotenv(dotenv)?;
        Settings::from_lookup(|name| lookup(name).or_else(|| file.get(name).cloned()))
    }

    /// Reads each variable through `lookup` (for tests and embedding: no process
    /// state is touched).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let mut problems = Vec::new();
        let mut bad = |variable: &'static str, problem: String| {
            problems.push(SettingProblem { variable, problem })
        };
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };

        let database_url = secret_url(
            get("DATABASE_URL"),
            "DATABASE_URL",
            &["postgresql", "postgres"],
            &mut bad,
        );
        let redis_url = secret_url(
            get("REDIS_URL"),
            "REDIS_URL",
            &["redis", "rediss"],
            &mut bad,
        );
        let database_pool_min_size = count(
            get("DATABASE_POOL_MIN_SIZE"),
            "DATABASE_POOL_MIN_SIZE",
            5,
            &mut bad,
        );
        let database_pool_max_size = count(
            get("DATABASE_POOL_MAX_SIZE"),
            "DATABASE_POOL_MAX_SIZE",
            20,
            &mut bad,
        );
        if database_pool_max_size < database_pool_min_size {
            bad(
                "DATABASE_POOL_MAX_SIZE",
                format!(
                    "{database_pool_max_size} is below DATABASE_POOL_MIN_SIZE ({database_pool_min_size}); \
                     the maximum must be at least the minimum"
                ),
            );
        }
        let redis_max_connections = count(
            get("REDIS_MAX_CONNECTIONS"),
            "REDIS_MAX_CONNECTIONS",
            10,
            &mut bad,
        );
        let jwt_secret = get("JWT_SECRET").and_then(|secret| {
            if secret.len() < 32 {
                bad(
                    "JWT_SECRET",
                    format!(
                        "is {} bytes; an HS256 key needs at least 32 (the value is not shown)",
                        secret.len()
                    ),
                );
                None
            } else {
                Some(Secret(secret))
            }
        });
        let given_environment = get("ENVIRONMENT");
        let environment_given = given_environment.is_some();
        let environment = given_environment.unwrap_or_else(|| "production".to_string());
        let log_level = match get("LOG_LEVEL") {
            None => LevelFilter::INFO,
            Some(level) => match parse_level(&level) {
                Some(level) => level,
                None => {
                    bad(
                        "LOG_LEVEL",
                        format!(
                            "unknown level {level:?}; use one of TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL"
                        ),
                    );
                    LevelFilter::INFO
                }
            },
        };
        let log_format = match get("LOG_FORMAT").map(|f| f.to_ascii_lowercase()).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                bad(
                    "LOG_FORMAT",
                    format!("unknown format {other:?}; use text or json"),
                );
                LogFormat::Text
            }
        };
        let program_timeout = seconds(
            get("PROGRAM_TIMEOUT_SECONDS"),
            "PROGRAM_TIMEOUT_SECONDS",
            300.0,
            &mut bad,
        );
        let shutdown_grace = seconds(
            get("SHUTDOWN_GRACE_SECONDS"),
            "SHUTDOWN_GRACE_SECONDS",
            30.0,
            &mut bad,
        );
        let sentry_dsn =
            get("SENTRY_DSN").and_then(|dsn| match dsn.parse::<sentry::types::Dsn>() {
                Ok(_) => Some(Secret(dsn)),
                Err(_) => {
                    bad(
                        "SENTRY_DSN",
                        "is not a Sentry DSN (expected https://PUBLIC_KEY@HOST/PROJECT_ID); \
                     the value is not shown because it is a secret"
                            .to_string(),
                    );
                    None
                }
            });
        let host = match get("HOST") {
            None => std::net::IpAddr::from([127, 0, 0, 1]),
            Some(host) => host.trim().parse().unwrap_or_else(|_| {
                bad(
                    "HOST",
                    format!(
                        "{host:?} is not an IP address; use 127.0.0.1 (this machine only) or \
                         0.0.0.0 (every interface, as in a container)"
                    ),
                );
                std::net::IpAddr::from([127, 0, 0, 1])
            }),
        };
        let port = match get("PORT") {
            None => 8000,
            Some(port) => port.trim().parse::<u16>().unwrap_or_else(|_| {
                bad(
                    "PORT",
                    format!("{port:?} is not a port; use a number from 0 to 65535 such as 8000"),
                );
                8000
            }),
        };
        let bind_addr = SocketAddr::new(host, port);
        // Each shard is a thread with its own engine: a mistyped huge value would
        // start threads until the OS refused.
        let shards = get("SHARDS")
            .map(|shards| count_up_to(Some(shards), "SHARDS", 1, MAX_SHARDS, &mut bad));

        if !problems.is_empty() {
            return Err(SettingsError::Invalid(problems));
        }
        Ok(Settings {
            database_url,
            database_pool_min_size,
            database_pool_max_size,
            redis_url,
            redis_max_connections,
            jwt_secret,
            environment,
            environment_given,
            log_level,
            log_format,
            program_timeout,
            sentry_dsn,
            bind_addr,
            shutdown_grace,
            shards,
        })
    }
}

fn read_dotenv(path: &Path) -> Result<HashMap<String, String>, SettingsError> {
    let iter = match dotenvy::from_path_iter(path) {
        Ok(iter) => iter,
        Err(dotenvy::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(HashMap::new());
        }
        Err(e) => return Err(dotenv_error(path, &e)),
    };
    let mut out = HashMap::new();
    for item in iter {
        let (k, v) = item.map_err(|e| dotenv_error(path, &e))?;
        out.insert(k, v);
    }
    Ok(out)
}

fn dotenv_error(path: &Path, error: &dotenvy::Error) -> SettingsError {
    let message = match error {
        // dotenvy's parse error quotes the line, which may hold a secret.
        dotenvy::Error::LineParse(_, index) => {
            format!("a line does not parse (at character {index})")
        }
        other => other.to_string(),
    };
    SettingsError::DotEnv {
        path: path.display().to_string(),
        message,
    }
}

fn parse_level(level: &str) -> Option<LevelFilter> {
    Some(match level.to_ascii_uppercase().as_str() {
        "TRACE" => LevelFilter::TRACE,
        "DEBUG" => LevelFilter::DEBUG,
        "INFO" => LevelFilter::INFO,
        "WARN" | "WARNING" => LevelFilter::WARN,
        "ERROR" | "CRITICAL" => LevelFilter::ERROR,
        "OFF" => LevelFilter::OFF,
        _ => return None,
    })
}

fn secret_url(
    value: Option<String>,
    variable: &'static str,
    schemes: &[&str],
    bad: &mut impl FnMut(&'static str, String),
) -> Option<SecretUrl> {
    let value = value?;
    match url::Url::parse(&value) {
        Ok(url) if schemes.contains(&url.scheme()) && url.host_str().is_some() => {
            Some(SecretUrl(url))
        }
        Ok(url) => {
            bad(
                variable,
                format!(
                    "{} is not a {} URL with a host; expected {}://USER:PASSWORD@HOST:PORT/...",
                    SecretUrl(url.clone()),
                    schemes.join(" or "),
                    schemes[0]
                ),
            );
            None
        }
        Err(e) => {
            bad(
                variable,
                format!(
                    "is not a URL ({e}); the value is not shown because it may hold a password"
                ),
            );
            None
        }
    }
}

fn count(
    value: Option<String>,
    variable: &'static str,
    default: u32,
    bad: &mut impl FnMut(&'static str, String),
) -> u32 {
    count_up_to(value, variable, default, u32::MAX, bad)
}

/// A whole number from 1 to `max`, or `default` (unset, or refused by name).
fn count_up_to(
    value: Option<String>,
    variable: &'static str,
    default: u32,
    max: u32,
    bad: &mut impl FnMut(&'static str, String),
) -> u32 {
    let Some(value) = value else { return default };
    match value.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => n,
        _ if max == u32::MAX => {
            bad(
                variable,
                format!("{value:?} is not a whole number of at least 1"),
            );
            default
        }
        _ => {
            bad(
                variable,
                format!("{value:?} is not a whole number from 1 to {max}"),
            );
            default
        }
    }
}

fn seconds(
    value: Option<String>,
    variable: &'static str,
    default: f64,
    bad: &mut impl FnMut(&'static str, String),
) -> Duration {
    let value = value.map(|v| (v.parse::<f64>(), v));
    let secs = match value {
        None => default,
        Some((Ok(s), _)) if s.is_finite() && s > 0.0 && s <= 1e9 => s,
        Some((_, raw)) => {
            bad(
                variable,
                format!("{raw:?} is not a number of seconds above 0 (such as 300 or 2.5)"),
            );
            default
        }
    };
    Duration::from_secs_f64(secs)
}
