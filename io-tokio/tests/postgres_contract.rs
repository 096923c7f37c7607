//! The Database contract (`effectful_test::contract::check_database`) on the tokio
//! runtime, against the real PostgreSQL interpreter (a fresh schema per case) and
//! against the in-memory backend (the same fake the simulator uses): one behaviour,
//! two implementations. Beside it, what only PostgreSQL shows: a connection pinned
//! by a transaction its program abandoned comes back clean and is reused.

mod pg_support;

use std::time::Duration;

use effectful::effect::{Begin, Execute, Query, SqlValue};
use effectful::memory::Services;
use effectful::{EngineConfig, Fx, ProgramError};
use effectful_test::contract::{ContractProgram, DatabaseDriver, check_database};
use effectful_tokio::memory::MemoryWorld;
use effectful_tokio::postgres::PgDatabase;
use effectful_tokio::{Runtime, RuntimeBuilder};
use pg_support::{Schema, psql};

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

fn builder(deadline: Option<Duration>) -> RuntimeBuilder {
    Runtime::builder().shards(1).engine(EngineConfig {
        program_timeout: deadline,
        ..EngineConfig::default()
    })
}

/// Runs `programs` in turn on a fresh schema with a pool of `min..=max` connections.
fn on_postgres(
    case: &str,
    pool: (usize, usize),
    deadline: Option<Duration>,
    programs: Vec<ContractProgram>,
) -> Vec<Result<Vec<String>, ProgramError>> {
    let schema = Schema::new(&format!("contract_{case}"));
    let db = PgDatabase::start(schema.config().pool_size(pool.0, pool.1)).expect("started");
    let runtime = db.register(builder(deadline)).build().expect("runtime");
    let results = programs.into_iter().map(|p| run_on(&runtime, p)).collect();
    runtime.shutdown(Duration::from_secs(1));
    db.shutdown(Duration::from_secs(5));
    results
}

struct Postgres;

impl DatabaseDriver for Postgres {
    fn run(&mut self, case: &str, program: ContractProgram) -> Result<Vec<String>, ProgramError> {
        on_postgres(case, (1, 4), None, vec![program]).remove(0)
    }

    fn run_in_turn(
        &mut self,
        case: &str,
        deadline: Duration,
        programs: Vec<ContractProgram>,
    ) -> Vec<Result<Vec<String>, ProgramError>> {
        on_postgres(case, (1, 4), Some(deadline), programs)
    }
}

struct InMemory;

impl InMemory {
    fn run_all(
        deadline: Option<Duration>,
        programs: Vec<ContractProgram>,
    ) -> Vec<Result<Vec<String>, ProgramError>> {
        let world = MemoryWorld::with_services(Services::new(3));
        let runtime = world.register(builder(deadline)).build().expect("runtime");
        let results = programs
            .into_iter()
            // What a program leaves open the world rolls back when it hears of the
            // program's end, as the PostgreSQL interpreter does.
            .map(|p| run_on(&runtime, p))
            .collect();
        runtime.shutdown(Duration::from_secs(1));
        results
    }
}

impl DatabaseDriver for InMemory {
    fn run(&mut self, _case: &str, program: ContractProgram) -> Result<Vec<String>, ProgramError> {
        InMemory::run_all(None, vec![program]).remove(0)
    }

    fn run_in_turn(
        &mut self,
        _case: &str,
        deadline: Duration,
        programs: Vec<ContractProgram>,
    ) -> Vec<Result<Vec<String>, ProgramError>> {
        InMemory::run_all(Some(deadline), programs)
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

fn program<F, Fut>(f: F) -> ContractProgram
where
    F: FnOnce(Fx) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Vec<String>> + 'static,
{
    Box::new(move |fx: Fx| Box::pin(f(fx)))
}

async fn backend_pid(fx: &Fx, tx: Option<effectful::effect::Transaction>) -> i64 {
    let mut query = Query::new("SELECT pg_backend_pid()::int8 AS pid", vec![]);
    query.tx = tx;
    let rows = fx.perform(query).await.expect("the backend's pid");
    rows.row(0).expect("a row").get("pid").expect("an int")
}

/// With one connection in the pool, a program that passes its deadline inside a
/// transaction, and one that returns without committing, leave the connection out
/// of any transaction: the next program gets the same backend, sees none of their
/// rows, and the server shows no session idle in a transaction.
#[test]
fn an_abandoned_transaction_gives_its_connection_back_clean_and_it_is_reused() {
    let schema = Schema::new("abandoned_tx");
    let name = schema.name.clone();
    let db = PgDatabase::start(schema.config().pool_size(1, 1)).expect("started");
    let runtime = db
        .register(builder(Some(Duration::from_millis(400))))
        .build()
        .expect("runtime");
    let setup = program(|fx| async move {
        fx.perform(Execute::new(
            "CREATE TABLE t (a bigint PRIMARY KEY, pid bigint)",
            vec![],
        ))
        .await
        .expect("created");
        vec![backend_pid(&fx, None).await.to_string()]
    });
    let first = run_on(&runtime, setup).expect("setup ran");
    for (i, end_by_deadline) in [(1i64, true), (2, false)] {
        let abandon = program(move |fx| async move {
            let tx = fx.perform(Begin {}).await.expect("began");
            let pid = backend_pid(&fx, Some(tx)).await;
            fx.perform(
                Execute::new(
                    "INSERT INTO t (a, pid) VALUES ($1, $2)",
                    vec![SqlValue::Int(i), SqlValue::Int(pid)],
                )
                .within(tx),
            )
            .await
            .expect("inserted");
            if end_by_deadline {
                fx.sleep(Duration::from_secs(3600)).await;
            }
            vec![pid.to_string()]
        });
        let ended = run_on(&runtime, abandon);
        match (end_by_deadline, &ended) {
            (true, Err(ProgramError::DeadlineExceeded { .. })) => {}
            (false, Ok(pid)) => assert_eq!(
                pid, &first,
                "the transaction ran on the pool's one connection"
            ),
            other => panic!("unexpected end: {other:?}"),
        }
        let check = program(|fx| async move {
            let rows = fx
                .perform(Query::new("SELECT a FROM t", vec![]))
                .await
                .expect("read");
            // The same backend: had its transaction stayed open, this session would
            // see its own uncommitted row.
            vec![
                backend_pid(&fx, None).await.to_string(),
                format!("rows left behind: {}", rows.len()),
            ]
        });
        let seen = run_on(&runtime, check).expect("the check ran");
        assert_eq!(
            seen,
            vec![first[0].clone(), "rows left behind: 0".to_string(),],
            "after the program that ended {}",
            if end_by_deadline {
                "at its deadline"
            } else {
                "by returning"
            }
        );
        let idle_in_tx = psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{name}' AND state LIKE 'idle in transaction%'"
        ));
        assert_eq!(
            idle_in_tx, "0",
            "no session of the pool is left in a transaction"
        );
    }
    runtime.shutdown(Duration::from_secs(1));
    db.shutdown(Duration::from_secs(5));
}

/// Two migrators at once (on two connections) apply each migration once: the
/// advisory lock makes the second wait, and it then finds them recorded.
#[test]
fn concurrent_migrators_apply_each_migration_once() {
    use effectful::effect::{Migrate, SqlMigration};
    let migrations = vec![
        SqlMigration {
            version: 1,
            name: "counter".into(),
            sql: "CREATE TABLE counter (n bigint NOT NULL)".into(),
        },
        SqlMigration {
            version: 2,
            name: "one row".into(),
            sql: "INSERT INTO counter (n) VALUES (1)".into(),
        },
    ];
    let both = program(move |fx| async move {
        let (a, b) = effectful::join(
            fx.perform(Migrate {
                migrations: migrations.clone(),
            }),
            fx.perform(Migrate { migrations }),
        )
        .await;
        let mut applied = vec![format!("{a:?}"), format!("{b:?}")];
        applied.sort();
        let rows = fx
            .perform(Query::new("SELECT n FROM counter", vec![]))
            .await
            .expect("read");
        applied.push(format!("rows: {}", rows.len()));
        applied
    });
    let seen = on_postgres("concurrent_migrate", (2, 4), None, vec![both]).remove(0);
    assert_eq!(
        seen,
        Ok(vec![
            "Ok([1, 2])".to_string(),
            "Ok([])".to_string(),
            "rows: 1".to_string()
        ])
    );
}

/// Migrations read from a directory of SQL files apply once, in version order, on
/// PostgreSQL and on the in-memory database alike; a file added later applies on
/// the next run.
#[test]
fn migrations_from_a_directory_apply_once_on_postgres_and_in_memory() {
    let dir = std::env::temp_dir().join(format!("effectful-migrate-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let write = |name: &str, sql: &str| std::fs::write(dir.join(name), sql).expect("written");
    write(
        "0001_points.sql",
        "CREATE TABLE points (name text PRIMARY KEY, total bigint NOT NULL);",
    );
    write(
        "0002_seed.sql",
        "INSERT INTO points (name, total) VALUES ('ada', 1);\n\
         INSERT INTO points (name, total) VALUES ('bob', 2);",
    );
    write("README.md", "How to add a migration: not SQL, left alone.");
    let first = effectful_tokio::migrations_from_dir(&dir).expect("read");
    write(
        "0003_more.sql",
        "UPDATE points SET total = total + 10 WHERE name = 'ada';",
    );
    let later = effectful_tokio::migrations_from_dir(&dir).expect("read again");
    std::fs::remove_dir_all(&dir).expect("removed");
    let migrating = move || {
        let (first, later) = (first.clone(), later.clone());
        program(move |fx| async move {
            let mut seen = Vec::new();
            for migrate in [first.clone(), first, later.clone(), later] {
                let applied = fx.perform(migrate).await.expect("migrated");
                seen.push(format!("applied {applied:?}"));
            }
            let rows = fx
                .perform(Query::new(
                    "SELECT name, total FROM points ORDER BY name",
                    vec![],
                ))
                .await
                .expect("the points");
            for row in rows.rows {
                seen.push(format!("{row:?}"));
            }
            seen
        })
    };
    let expected = vec![
        "applied [1, 2]",
        "applied []",
        "applied [3]",
        "applied []",
        "[Text(\"ada\"), Int(11)]",
        "[Text(\"bob\"), Int(2)]",
    ];
    let on_postgres = on_postgres("migrate_dir", (1, 2), None, vec![migrating()]);
    assert_eq!(on_postgres[0].as_ref().expect("ran"), &expected);
    let in_memory = InMemory::run_all(None, vec![migrating()]);
    assert_eq!(in_memory[0].as_ref().expect("ran"), &expected);
}
