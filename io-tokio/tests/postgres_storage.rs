//! The Storage contract (`effectful_test::contract::check_storage`) on the tokio
//! runtime, against the PostgreSQL interpreter (a fresh schema per case) and against
//! the in-memory backend (the same fake the simulator uses): one behaviour, two
//! implementations. Then what only the real server can show: keys sort by code
//! point whatever the database's collation, and concurrent writes of one key take
//! distinct versions.

mod pg_support;

use std::future::Future;
use std::pin::Pin;
use std::process::Command;
use std::time::Duration;

use effectful::effect::{GetObject, ListObjects, ObjectLookup, PutObject, PutOutcome};
use effectful::memory::Services;
use effectful::{Fx, ProgramError};
use effectful_test::contract::{ContractProgram, StorageDriver, check_storage};
use effectful_tokio::memory::MemoryWorld;
use effectful_tokio::postgres::{PgDatabase, PgDatabaseConfig};
use effectful_tokio::{Runtime, SystemInterpreter};
use pg_support::{START_SERVER, Schema, psql};

/// A program as the tests write it: what it gives back, from its effect handle.
type Program<T> = Box<dyn FnOnce(Fx) -> Pin<Box<dyn Future<Output = T>>> + Send>;

fn run_on<T: Send + 'static>(runtime: &Runtime, program: Program<T>) -> Result<T, ProgramError> {
    runtime.block_on(async {
        runtime
            .handle()
            .spawn(program)
            .await
            .expect("spawned")
            .await
    })
}

/// A runtime whose Storage (and Database) are `db`'s, with the OS clock for System.
fn on_postgres(db: &PgDatabase) -> Runtime {
    let builder = Runtime::builder()
        .shards(1)
        .interpreter("System", |_| SystemInterpreter::new());
    db.register_storage(db.register(builder))
        .build()
        .expect("runtime")
}

struct Postgres;

impl StorageDriver for Postgres {
    fn run(&mut self, case: &str, program: ContractProgram) -> Result<Vec<String>, ProgramError> {
        let schema = Schema::new(&format!("storage_{case}"));
        let db = PgDatabase::start(schema.config().pool_size(1, 4)).expect("started");
        let runtime = on_postgres(&db);
        let result = run_on(&runtime, program);
        runtime.shutdown(Duration::from_secs(1));
        db.shutdown(Duration::from_secs(5));
        result
    }
}

struct InMemory;

impl StorageDriver for InMemory {
    fn run(&mut self, _case: &str, program: ContractProgram) -> Result<Vec<String>, ProgramError> {
        let world = MemoryWorld::with_services(Services::new(3));
        let runtime = world
            .register(
                Runtime::builder()
                    .shards(1)
                    .interpreter("System", |_| SystemInterpreter::new()),
            )
            .build()
            .expect("runtime");
        let result = run_on(&runtime, program);
        runtime.shutdown(Duration::from_secs(1));
        result
    }
}

#[test]
fn the_postgres_interpreter_keeps_the_storage_contract() {
    check_storage(&mut Postgres);
}

#[test]
fn the_in_memory_backend_keeps_the_same_storage_contract() {
    check_storage(&mut InMemory);
}

fn put(bucket: &str, key: &str, content: &[u8]) -> PutObject {
    PutObject {
        bucket: bucket.into(),
        key: key.into(),
        content: content.to_vec(),
        metadata: Default::default(),
        content_type: None,
    }
}

/// Runs `program` on a runtime over `config`'s database.
fn run_program<T: Send + 'static>(config: PgDatabaseConfig, program: Program<T>) -> T {
    let db = PgDatabase::start(config.pool_size(2, 8)).expect("started");
    let runtime = on_postgres(&db);
    let result = run_on(&runtime, program);
    runtime.shutdown(Duration::from_secs(1));
    db.shutdown(Duration::from_secs(5));
    result.expect("the program ran")
}

/// `psql -Atc sql` on `database` of the shared server (its output, whatever it is).
fn psql_in(database: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            database,
            "-Atc",
            sql,
        ])
        .output()
        .unwrap_or_else(|e| panic!("psql: {e}\n{START_SERVER}"))
}

/// A database of this test's own whose default collation is ICU's `en-US`, dropped
/// at the end.
struct LinguisticDatabase {
    name: String,
}

impl LinguisticDatabase {
    fn new() -> LinguisticDatabase {
        let name = format!("effectful_pg_it_storage_icu_{}", std::process::id());
        psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        psql(&format!(
            "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu \
             ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        ));
        LinguisticDatabase { name }
    }

    fn config(&self) -> PgDatabaseConfig {
        let url = format!(
            "postgresql://postgres@127.0.0.1:5432/{}?application_name={}",
            self.name, self.name
        );
        PgDatabaseConfig::from_url(&url).expect("a valid URL")
    }
}

impl Drop for LinguisticDatabase {
    fn drop(&mut self) {
        let _ = psql_in(
            "test",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

#[test]
fn keys_sort_by_code_point_even_where_the_database_collation_would_not() {
    let database = LinguisticDatabase::new();
    let linguistic = psql_in(&database.name, "SELECT 'é' < 'z' AND 'a' < 'Z'");
    assert_eq!(
        String::from_utf8_lossy(&linguistic.stdout).trim(),
        "t",
        "the database's own collation sorts linguistically, so this test shows something"
    );
    let keys = run_program(
        database.config(),
        Box::new(|fx: Fx| {
            Box::pin(async move {
                for key in ["z", "é", "Z", "e", "ä", "a"] {
                    fx.perform(put("b", key, b"")).await.expect("stored");
                }
                fx.perform(ListObjects {
                    bucket: "b".into(),
                    prefix: Some(String::new()),
                    max_keys: 10,
                    start_after: None,
                })
                .await
                .expect("listed")
            })
        }),
    );
    assert_eq!(keys, ["Z", "a", "e", "z", "ä", "é"], "code point order");
}

#[test]
fn concurrent_writes_of_one_key_take_distinct_versions_and_the_last_one_wins() {
    let schema = Schema::new("storage_race");
    let (outcomes, last) = run_program(
        schema.config(),
        Box::new(|fx: Fx| {
            Box::pin(async move {
                let writes = (0..32u8).map(|i| put("b", "contended", &[i]));
                let outcomes = fx.perform_all(writes).await;
                let last = fx
                    .perform(GetObject {
                        bucket: "b".into(),
                        key: "contended".into(),
                    })
                    .await
                    .expect("read");
                (outcomes, last)
            })
        }),
    );
    let mut versions: Vec<u64> = outcomes
        .iter()
        .map(|o| match o {
            Ok(PutOutcome::Stored {
                version_id: Some(v),
                ..
            }) => v.parse().expect("a number"),
            other => panic!("a write failed: {other:?}"),
        })
        .collect();
    versions.sort_unstable();
    let winner = versions
        .iter()
        .position(|v| *v == 32)
        .and_then(|i| u8::try_from(i).ok());
    versions.sort_unstable();
    assert_eq!(versions, (1..=32).collect::<Vec<u64>>());
    let ObjectLookup::Found(object) = last else {
        panic!("the key is gone")
    };
    assert_eq!(object.version_id.as_deref(), Some("32"));
    assert_eq!(
        object.content,
        winner.into_iter().collect::<Vec<u8>>(),
        "the object holds the bytes of the write that took the last version"
    );
}
