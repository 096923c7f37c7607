//! The Database contract (`effectful_test::contract::check_database`) on the tokio
//! runtime, against the real PostgreSQL interpreter (a fresh schema per case) and
//! against the in-memory backend (the same fake the simulator uses): one behaviour,
//! two implementations.

use std::process::Command;
use std::time::Duration;

use effectful::ProgramError;
use effectful::memory::Services;
use effectful_test::contract::{ContractProgram, DatabaseDriver, check_database};
use effectful_tokio::Runtime;
use effectful_tokio::memory::MemoryWorld;
use effectful_tokio::postgres::{PgDatabase, PgDatabaseConfig};

const START_SERVER: &str = "PostgreSQL 15 must answer on 127.0.0.1:5432 with trust auth for user postgres and a database named \"test\"; start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (scripts/services does this), and install psql (apt-get install postgresql-client-15)";

fn psql(sql: &str) {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-qc",
            sql,
        ])
        .output()
        .unwrap_or_else(|e| panic!("psql: {e}\n{START_SERVER}"));
    assert!(
        out.status.success(),
        "psql {sql:?}: {}\n{START_SERVER}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_on(runtime: &Runtime, program: ContractProgram) -> Result<Vec<String>, ProgramError> {
    runtime.block_on(async {
        runtime
            .handle()
            .spawn(program)
            .await
            .expect("spawned")
            .await
    })
}

struct Postgres;

impl DatabaseDriver for Postgres {
    fn run(&mut self, case: &str, program: ContractProgram) -> Result<Vec<String>, ProgramError> {
        let schema = format!("effectful_pg_contract_{case}_{}", std::process::id());
        psql(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ));
        let url = format!(
            "postgresql://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D{schema}"
        );
        let db = PgDatabase::start(
            PgDatabaseConfig::from_url(&url)
                .expect("a valid URL")
                .pool_size(1, 4),
        )
        .expect("started");
        let runtime = db
            .register(Runtime::builder().shards(1))
            .build()
            .expect("runtime");
        let result = run_on(&runtime, program);
        runtime.shutdown(Duration::from_secs(1));
        db.shutdown(Duration::from_secs(5));
        psql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        result
    }
}

struct InMemory;

impl DatabaseDriver for InMemory {
    fn run(&mut self, _case: &str, program: ContractProgram) -> Result<Vec<String>, ProgramError> {
        let world = MemoryWorld::with_services(Services::new(3));
        let runtime = world
            .register(Runtime::builder().shards(1))
            .build()
            .expect("runtime");
        let result = run_on(&runtime, program);
        runtime.shutdown(Duration::from_secs(1));
        result
    }
}

#[test]
fn the_postgres_interpreter_keeps_the_database_contract() {
    check_database(&mut Postgres);
}

#[test]
fn the_in_memory_backend_keeps_the_same_database_contract() {
    check_database(&mut InMemory);
}
