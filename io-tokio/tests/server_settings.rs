//! Settings from variables and `.env`: every variable of the deployment guide,
//! validation naming the variable, secrets never shown.

use std::collections::HashMap;
use std::time::Duration;

use effectful::ProgramError;
use effectful_tokio::Runtime;
use effectful_tokio::server::{LogFormat, Settings, SettingsError};
use tracing::level_filters::LevelFilter;

fn from(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(|name| map.get(name).cloned())
}

fn problems(vars: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    match from(vars) {
        Err(SettingsError::Invalid(problems)) => problems
            .into_iter()
            .map(|p| (p.variable, p.problem))
            .collect(),
        other => panic!("expected invalid settings, got {other:?}"),
    }
}

#[test]
fn defaults_match_the_deployment_guide() {
    let s = from(&[]).expect("no variables is valid");
    assert!(s.database_url.is_none());
    assert!(s.redis_url.is_none());
    assert_eq!(s.database_pool_min_size, 5);
    assert_eq!(s.database_pool_max_size, 20);
    assert_eq!(s.redis_max_connections, 10);
    assert_eq!(s.environment, "production");
    assert_eq!(s.log_level, LevelFilter::INFO);
    assert_eq!(s.log_format, LogFormat::Text);
    assert_eq!(s.program_timeout, Duration::from_secs(300));
    assert!(s.sentry_dsn.is_none());
    assert_eq!(s.bind_addr.to_string(), "127.0.0.1:8000");
    assert_eq!(s.shutdown_grace, Duration::from_secs(30));
    assert_eq!(s.shards, None, "one shard per core unless SHARDS says");
}

#[test]
fn every_variable_of_the_guide_is_read() {
    let s = from(&[
        ("DATABASE_URL", "postgresql://user:password@db:5432/mydb"),
        ("DATABASE_POOL_MIN_SIZE", "2"),
        ("DATABASE_POOL_MAX_SIZE", "9"),
        ("REDIS_URL", "redis://redis:6379/0"),
        ("REDIS_MAX_CONNECTIONS", "4"),
        ("ENVIRONMENT", "staging"),
        ("LOG_LEVEL", "warning"),
        ("LOG_FORMAT", "JSON"),
        ("PROGRAM_TIMEOUT_SECONDS", "2.5"),
        ("SENTRY_DSN", "https://publickey@sentry.example/42"),
        ("HOST", "0.0.0.0"),
        ("PORT", "9000"),
        ("SHUTDOWN_GRACE_SECONDS", "3"),
        ("SHARDS", "3"),
    ])
    .expect("valid");
    assert_eq!(
        s.database_url.as_ref().map(|u| u.expose()),
        Some("postgresql://user:password@db:5432/mydb")
    );
    assert_eq!((s.database_pool_min_size, s.database_pool_max_size), (2, 9));
    assert_eq!(
        s.redis_url.as_ref().map(|u| u.expose()),
        Some("redis://redis:6379/0")
    );
    assert_eq!(s.redis_max_connections, 4);
    assert_eq!(s.environment, "staging");
    assert_eq!(s.log_level, LevelFilter::WARN);
    assert_eq!(s.log_format, LogFormat::Json);
    assert_eq!(s.program_timeout, Duration::from_millis(2500));
    assert_eq!(
        s.sentry_dsn.as_ref().map(|d| d.expose()),
        Some("https://publickey@sentry.example/42")
    );
    assert_eq!(s.bind_addr.to_string(), "0.0.0.0:9000");
    assert_eq!(s.shutdown_grace, Duration::from_secs(3));
    assert_eq!(s.shards, Some(3));
}

#[test]
fn the_runtime_takes_its_shards_and_program_timeout_from_the_settings() {
    let s = from(&[("SHARDS", "3"), ("PROGRAM_TIMEOUT_SECONDS", "0.05")]).expect("valid");
    let runtime = Runtime::builder().settings(&s).build().expect("a runtime");
    assert_eq!(runtime.handle().shards(), 3);
    let ended = runtime.block_on(async {
        let handle = runtime
            .handle()
            .spawn(|fx| async move { fx.sleep(Duration::from_secs(10)).await })
            .await
            .expect("spawned");
        handle.await
    });
    assert!(
        matches!(ended, Err(ProgramError::DeadlineExceeded { .. })),
        "a program outliving PROGRAM_TIMEOUT_SECONDS ends at it: {ended:?}"
    );
    runtime.shutdown(Duration::from_secs(1));

    let unset = from(&[]).expect("valid");
    let runtime = Runtime::builder()
        .settings(&unset)
        .build()
        .expect("a runtime");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(runtime.handle().shards(), cores, "one shard per core");
    runtime.shutdown(Duration::from_secs(1));
}

#[test]
fn python_level_names_are_accepted_in_any_case() {
    for (name, level) in [
        ("TRACE", LevelFilter::TRACE),
        ("debug", LevelFilter::DEBUG),
        ("Info", LevelFilter::INFO),
        ("WARN", LevelFilter::WARN),
        ("ERROR", LevelFilter::ERROR),
        ("CRITICAL", LevelFilter::ERROR),
    ] {
        assert_eq!(from(&[("LOG_LEVEL", name)]).expect(name).log_level, level);
    }
}

#[test]
fn every_bad_variable_is_reported_at_once_by_name() {
    let found = problems(&[
        ("DATABASE_POOL_MIN_SIZE", "five"),
        ("REDIS_MAX_CONNECTIONS", "0"),
        ("LOG_LEVEL", "LOUD"),
        ("PROGRAM_TIMEOUT_SECONDS", "-1"),
        ("SHUTDOWN_GRACE_SECONDS", "NaN"),
        ("HOST", "localhost"),
        ("PORT", "80000"),
        ("LOG_FORMAT", "xml"),
        ("REDIS_URL", "http://redis:6379"),
        ("SHARDS", "0"),
    ]);
    let names: Vec<_> = found.iter().map(|(v, _)| *v).collect();
    for name in [
        "DATABASE_POOL_MIN_SIZE",
        "REDIS_MAX_CONNECTIONS",
        "LOG_LEVEL",
        "PROGRAM_TIMEOUT_SECONDS",
        "SHUTDOWN_GRACE_SECONDS",
        "HOST",
        "PORT",
        "LOG_FORMAT",
        "REDIS_URL",
        "SHARDS",
    ] {
        assert!(names.contains(&name), "{name} not reported in {found:?}");
    }
    let level = &found
        .iter()
        .find(|(v, _)| *v == "LOG_LEVEL")
        .expect("LOG_LEVEL")
        .1;
    assert!(
        level.contains("\"LOUD\"") && level.contains("WARNING"),
        "{level}"
    );
    let message = from(&[("DATABASE_POOL_MIN_SIZE", "five")])
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("DATABASE_POOL_MIN_SIZE: \"five\" is not a whole number"),
        "{message}"
    );
}

#[test]
fn a_shard_count_beyond_the_limit_is_refused_by_name() {
    let found = problems(&[("SHARDS", "100000")]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "SHARDS");
    assert!(
        found[0].1.contains("100000") && found[0].1.contains("1024"),
        "{:?}",
        found[0].1
    );
    assert_eq!(
        from(&[("SHARDS", "1024")]).expect("valid").shards,
        Some(1024)
    );
}

#[test]
fn a_pool_maximum_below_its_minimum_is_refused() {
    let found = problems(&[
        ("DATABASE_POOL_MIN_SIZE", "10"),
        ("DATABASE_POOL_MAX_SIZE", "4"),
    ]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "DATABASE_POOL_MAX_SIZE");
    assert!(
        found[0].1.contains("below DATABASE_POOL_MIN_SIZE (10)"),
        "{found:?}"
    );
}

#[test]
fn passwords_and_the_sentry_dsn_never_show_in_debug_or_errors() {
    let s = from(&[
        ("DATABASE_URL", "postgresql://user:hunter2@db:5432/mydb"),
        ("REDIS_URL", "redis://:sw0rdfish@redis:6379/0"),
        ("SENTRY_DSN", "https://topsecretkey@sentry.example/42"),
    ])
    .expect("valid");
    let shown = format!("{s:?}");
    for secret in ["hunter2", "sw0rdfish", "topsecretkey"] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
    assert!(
        shown.contains("postgresql://user:***@db:5432/mydb"),
        "{shown}"
    );

    // A URL of the wrong kind is shown redacted; one that does not parse, and a bad
    // DSN, not at all.
    let wrong_scheme = from(&[("DATABASE_URL", "mysql://user:hunter2@db/x")])
        .unwrap_err()
        .to_string();
    assert!(
        wrong_scheme.contains("mysql://user:***@db/x"),
        "{wrong_scheme}"
    );
    for (var, value) in [
        ("DATABASE_URL", "postgresql://user:hunter2@[db"),
        ("SENTRY_DSN", "not-a-dsn-topsecretkey"),
    ] {
        let message = from(&[(var, value)]).unwrap_err().to_string();
        assert!(message.contains(var), "{message}");
        assert!(
            !message.contains("hunter2") && !message.contains("topsecretkey"),
            "{message}"
        );
    }
}

#[test]
fn a_dotenv_file_is_read_and_the_environment_wins_over_it() {
    let dir = std::env::temp_dir().join(format!("effectful-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(".env");
    std::fs::write(
        &path,
        "# Database\nDATABASE_POOL_MIN_SIZE=3\nENVIRONMENT=from-file\nLOG_LEVEL=DEBUG\n",
    )
    .expect("write .env");
    let env = |name: &str| (name == "ENVIRONMENT").then(|| "from-env".to_string());
    let s = Settings::from_lookup_and_file(env, &path).expect("valid");
    assert_eq!(s.database_pool_min_size, 3);
    assert_eq!(s.log_level, LevelFilter::DEBUG);
    assert_eq!(s.environment, "from-env");
    assert!(s.environment_given);

    let missing = Settings::from_lookup_and_file(|_| None, &dir.join("absent.env"));
    assert!(missing.is_ok(), "no .env file is fine: {missing:?}");
    let defaulted = missing.expect("valid");
    assert_eq!(defaulted.environment, "production");
    assert!(
        !defaulted.environment_given,
        "an unset ENVIRONMENT reads production but is not said"
    );

    // Said in the file alone, it is given.
    std::fs::write(&path, "ENVIRONMENT=production\n").expect("write .env");
    let from_file = Settings::from_lookup_and_file(|_| None, &path).expect("valid");
    assert!(from_file.environment_given && from_file.environment == "production");

    std::fs::write(&path, "DATABASE_URL='postgresql://u:hunter2@db/x\n").expect("write");
    let broken = Settings::from_lookup_and_file(|_| None, &path)
        .unwrap_err()
        .to_string();
    assert!(
        broken.contains(".env") && !broken.contains("hunter2"),
        "{broken}"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}
