//! The Database contract (`effectful_test::contract::check_database`) on the tokio
//! runtime, against the real PostgreSQL interpreter (a fresh schema per case) and
//! against the in-memory backend (the same fake the simulator uses): one behaviour,
//! two implementations.

mod pg_support;

use std::time::Duration;

use effectful::ProgramError;
use effectful::memory::Services;
use effectful_test::contract::{ContractProgram, DatabaseDriver, check_database};
use effectful_tokio::Runtime;
use effectful_tokio::memory::MemoryWorld;
use effectful_tokio::postgres::PgDatabase;
use pg_support::Schema;

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
        let schema = Schema::new(&format!("contract_{case}"));
        let db = PgDatabase::start(schema.config().pool_size(1, 4)).expect("started");
        let runtime = db
            .register(Runtime::builder().shards(1))
            .build()
            .expect("runtime");
        let result = run_on(&runtime, program);
        runtime.shutdown(Duration::from_secs(1));
        db.shutdown(Duration::from_secs(5));
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
