//! What the PostgreSQL suites share: the shared server's address, `psql` for the
//! other sessions, and a schema of each test's own.

#![allow(dead_code)]

use std::process::Command;

use effectful::EffectError;
use effectful::effect::{GetUserById, UserLookup};
use effectful_tokio::Runtime;
use effectful_tokio::postgres::PgDatabaseConfig;

pub const START_SERVER: &str = "PostgreSQL 15 must answer on 127.0.0.1:5432 with trust auth for user postgres and a database named \"test\"; start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (scripts/services does this), and install psql (apt-get install postgresql-client-15)";

/// Runs `sql` on the shared server's database `test`; its output, trimmed.
pub fn psql(sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-d",
            "test",
            "-Atqc",
            sql,
        ])
        .output()
        .unwrap_or_else(|e| panic!("psql: {e}\n{START_SERVER}"));
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}\n{START_SERVER}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs one program on `runtime` that looks up a user who does not exist.
pub fn lookup(runtime: &Runtime) -> Result<UserLookup, EffectError> {
    runtime.block_on(async {
        runtime
            .handle()
            .spawn(|fx| async move {
                fx.perform(GetUserById {
                    user_id: uuid::Uuid::nil(),
                })
                .await
            })
            .await
            .expect("spawned")
            .await
            .expect("finished")
    })
}

/// Waits until `done`, for 30 s at most (a limit for a loaded machine, not a timing
/// under test).
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what} (30 s)"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A schema (and an application_name) of one test's own, dropped at the end.
pub struct Schema {
    pub name: String,
}

impl Schema {
    pub fn new(tag: &str) -> Schema {
        let name = format!("effectful_pg_it_{tag}_{}", std::process::id());
        psql(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
        ));
        Schema { name }
    }

    /// The shared server's URL with this schema as `search_path`.
    pub fn url(&self) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:5432/test?application_name={}&options=-c%20search_path%3D{}",
            self.name, self.name
        )
    }

    pub fn config(&self) -> PgDatabaseConfig {
        PgDatabaseConfig::from_url(&self.url()).expect("a valid URL")
    }

    /// The backends of this test's pool.
    pub fn backends(&self) -> Vec<i32> {
        psql(&format!(
            "SELECT pid FROM pg_stat_activity WHERE application_name = '{}'",
            self.name
        ))
        .lines()
        .map(|l| l.parse().expect("a pid"))
        .collect()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .output();
    }
}
