//! The PostgreSQL interpreter against the real server on 127.0.0.1:5432 (trust auth,
//! database `test`), each test in a schema of its own (`search_path` through the
//! URL's `options`), dropped at the end. `psql` plays the other sessions: it holds
//! locks, terminates backends and reads `pg_stat_activity`.

mod pg_support;

use std::process::Command;
use std::time::{Duration, Instant};

use effectful::effect::*;
use effectful::postgres::PoolConfig;
use effectful::postgres::database::migration_sql;
use effectful::{EffectError, ErrorKind};
use effectful_tokio::Runtime;
use effectful_tokio::postgres::PgDatabase;
use pg_support::{START_SERVER, Schema, lookup, psql, wait_until};

fn runtime(db: &PgDatabase, shards: usize) -> Runtime {
    db.register(Runtime::builder().shards(shards))
        .build()
        .expect("runtime")
}

async fn create(fx: &effectful::Fx, email: &str) -> User {
    match fx
        .perform(CreateUser {
            email: email.into(),
            name: "n".into(),
            password_hash: "h".into(),
        })
        .await
    {
        Ok(CreateUserOutcome::Created(user)) => user,
        other => panic!("expected a new user, got {other:?}\n{START_SERVER}"),
    }
}

#[test]
fn programs_on_several_shards_share_one_pool_and_the_adapter_answers_as_the_fake() {
    let schema = Schema::new("basic");
    let db = PgDatabase::start(schema.config()).expect("started");
    let runtime = runtime(&db, 2);
    let outcome = runtime.block_on(async {
        let handle = runtime.handle().clone();
        handle
            .spawn(|fx| async move {
                let a = create(&fx, "a@x.io").await;
                let taken = fx
                    .perform(CreateUser {
                        email: "a@x.io".into(),
                        name: "b".into(),
                        password_hash: "h".into(),
                    })
                    .await?;
                let found = fx.perform(GetUserById { user_id: a.id }).await?;
                let saved = fx
                    .perform(SaveChatMessage {
                        user_id: a.id,
                        text: "hi".into(),
                        message_id: None,
                    })
                    .await?;
                let page = fx.perform(ListMessagesForUser::latest(a.id, 10)).await?;
                Ok::<_, EffectError>((a, taken, found, saved, page))
            })
            .await
            .expect("spawned")
            .await
            .expect("finished")
    });
    let (a, taken, found, saved, page) = outcome.expect("answered");
    assert_eq!(
        taken,
        CreateUserOutcome::EmailTaken {
            email: "a@x.io".into()
        }
    );
    assert_eq!(found, UserLookup::Found(a.clone()));
    assert_eq!(page.messages, vec![saved]);
    // A user created through one shard is found through the other.
    let again = runtime.block_on(async {
        let id = a.id;
        let mut found = Vec::new();
        for _ in 0..2 {
            found.push(
                runtime
                    .handle()
                    .spawn(move |fx| async move { fx.perform(GetUserById { user_id: id }).await })
                    .await
                    .expect("spawned")
                    .await
                    .expect("finished")
                    .expect("answered"),
            );
        }
        found
    });
    assert!(again.iter().all(|l| *l == UserLookup::Found(a.clone())));
    let status = runtime.block_on(db.status()).expect("running");
    assert!(status.size <= 20 && status.size >= 1, "{status:?}");
    runtime.shutdown(Duration::from_secs(1));
    db.shutdown(Duration::from_secs(5));
}

#[test]
fn a_thousand_effects_pipelined_on_one_connection_each_get_their_own_row() {
    let schema = Schema::new("pipeline");
    let db = PgDatabase::start(
        schema.config().pool(
            PoolConfig::default()
                .size(1, 1)
                .max_shared_per_connection(1024),
        ),
    )
    .expect("started");
    let runtime = runtime(&db, 1);
    let users: Vec<User> = runtime.block_on(async {
        runtime
            .handle()
            .spawn(|fx| async move {
                let mut users = Vec::new();
                for i in 0..10 {
                    users.push(create(&fx, &format!("{i}@x.io")).await);
                }
                users
            })
            .await
            .expect("spawned")
            .await
            .expect("finished")
    });
    let answers = runtime.block_on(async {
        let mut joins = Vec::new();
        for i in 0..1000 {
            let user_id = users[i % 10].id;
            joins.push(
                runtime
                    .handle()
                    .spawn(move |fx| async move { fx.perform(GetUserById { user_id }).await })
                    .await
                    .expect("spawned"),
            );
        }
        let mut answers = Vec::new();
        for join in joins {
            answers.push(join.await.expect("finished").expect("answered"));
        }
        answers
    });
    assert_eq!(answers.len(), 1000);
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(
            *answer,
            UserLookup::Found(users[i % 10].clone()),
            "effect {i}"
        );
    }
    assert_eq!(
        schema.backends().len(),
        1,
        "one connection carried them all"
    );
    runtime.shutdown(Duration::from_secs(1));
    db.shutdown(Duration::from_secs(5));
}

/// The client hands an answer over only after it has released its own state: an
/// answer that resumes its program at once (the shard idle, the answer arriving from
/// the socket's task) makes the program perform its next effect on the same client
/// inside that call, and end (which rolls back its transactions through the same
/// client). Were the state still borrowed, the program's next effect would panic
/// with a `RefCell` borrow error and the shard would lose it.
#[test]
fn a_program_resumed_by_an_answer_performs_its_next_query_on_the_same_client_at_once() {
    let schema = Schema::new("resumed");
    let db =
        PgDatabase::start(schema.config().pool(PoolConfig::default().size(1, 1))).expect("started");
    let runtime = runtime(&db, 1);
    let (found, committed) = runtime.block_on(async {
        runtime
            .handle()
            .spawn(|fx| async move {
                let user = create(&fx, "resumed@x.io").await;
                let mut found = 0;
                for _ in 0..200 {
                    // Each answer arrives alone and resumes the program, which asks
                    // for the next one at once.
                    if fx.perform(GetUserById { user_id: user.id }).await
                        == Ok(UserLookup::Found(user.clone()))
                    {
                        found += 1;
                    }
                }
                let tx = fx.perform(Begin {}).await.expect("began");
                let inserted = fx
                    .perform(Execute::new("CREATE TABLE resumed (a int8)", vec![]).within(tx))
                    .await;
                let committed = fx.perform(Commit { tx }).await;
                // The program ends inside the Commit's answer: the runtime tells the
                // interpreter, which cancels the Begin's key on the same client.
                (found, inserted.and(committed))
            })
            .await
            .expect("spawned")
            .await
            .expect("finished")
    });
    assert_eq!(found, 200, "every lookup answered with its row");
    assert_eq!(committed, Ok(()), "the transaction committed");
    // The client still serves programs after the one that ended inside an answer.
    assert!(
        matches!(lookup(&runtime), Ok(UserLookup::NotFound { .. })),
        "a lookup after it"
    );
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{}' AND table_name = 'resumed'",
            schema.name
        )),
        "1"
    );
    runtime.shutdown(Duration::from_secs(1));
    db.shutdown(Duration::from_secs(5));
}

#[test]
fn a_terminated_backend_fails_retryably_and_the_pool_replaces_it() {
    let schema = Schema::new("terminate");
    let db = PgDatabase::start(schema.config().pool_size(2, 2)).expect("started");
    let runtime = runtime(&db, 1);
    let lookup = |runtime: &Runtime, user_id| {
        runtime.block_on(async {
            runtime
                .handle()
                .spawn(move |fx| async move { fx.perform(GetUserById { user_id }).await })
                .await
                .expect("spawned")
                .await
                .expect("finished")
        })
    };
    let nobody = uuid::Uuid::from_u128(1);
    lookup(&runtime, nobody).expect("the pool works");
    let before = schema.backends();
    assert!(!before.is_empty());
    for pid in &before {
        psql(&format!("SELECT pg_terminate_backend({pid})"));
    }
    // Each failure (the first queries may meet a dead connection) is retryable; within
    // a few tries the pool has new connections and the lookup succeeds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match lookup(&runtime, nobody) {
            Ok(lookup) => {
                assert!(matches!(lookup, UserLookup::NotFound { .. }));
                break;
            }
            Err(e) => {
                assert!(e.retryable, "a lost connection is retryable: {e}");
                assert!(Instant::now() < deadline, "the pool never recovered: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let after = schema.backends();
    assert!(
        after.iter().all(|pid| !before.contains(pid)),
        "new backends {after:?} replaced {before:?}"
    );
    runtime.shutdown(Duration::from_secs(1));
    db.shutdown(Duration::from_secs(5));
}

/// The application_name of the other session `background_psql` starts.
fn holder_name() -> String {
    format!("effectful_pg_it_holder_{}", std::process::id())
}

/// Runs `sql`, which ends in a long `pg_sleep`, in another psql session, and returns
/// once that session sleeps: what it ran before (its locks) is done, however long
/// psql took to start on a busy machine. [`release`] ends it.
fn background_psql(sql: &str) -> std::process::Child {
    let child = Command::new("psql")
        .env("PGAPPNAME", holder_name())
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
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("psql: {e}\n{START_SERVER}"));
    let sleeping = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}' AND wait_event = 'PgSleep'",
        holder_name()
    );
    wait_until("the other session sleeps", || psql(&sleeping) == "1");
    child
}

/// Starts a migration of `schema` in another session, as the pool's first connection
/// runs it, and stops it once it holds its lock: until [`release`], a migration that
/// takes the same lock waits.
fn hold_migration_lock(schema: &Schema) -> std::process::Child {
    let sql = migration_sql(&[]);
    let lock = sql
        .lines()
        .find(|line| line.contains("pg_advisory_xact_lock"))
        .expect("the migration takes an advisory lock");
    background_psql(&format!(
        "SET search_path TO {}; BEGIN; {lock} SELECT pg_sleep(60);",
        schema.name
    ))
}

/// Ends the session `background_psql` started (its locks go with it).
fn release(mut holder: std::process::Child) {
    psql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{}'",
        holder_name()
    ));
    let _ = holder.wait();
}

#[test]
fn the_command_timeout_sends_a_cancel_and_the_server_stops_the_query() {
    let schema = Schema::new("timeout");
    // Migrate first on a pool of the default timeout: on a loaded machine the first
    // connection and its migrations may take longer than the 300 ms under test.
    let migrating = PgDatabase::start(schema.config().pool_size(1, 1)).expect("started");
    let warm = runtime(&migrating, 1);
    lookup(&warm).expect("migrated");
    warm.shutdown(Duration::from_secs(1));
    migrating.shutdown(Duration::from_secs(5));
    let db = PgDatabase::start(
        schema
            .config()
            .migrations(&[])
            .pool_size(1, 1)
            .command_timeout(Duration::from_millis(300)),
    )
    .expect("started");
    let runtime = runtime(&db, 1);
    lookup(&runtime).expect("working");
    // Another session holds the table: the lookup waits on the lock.
    let holder = background_psql(&format!(
        "BEGIN; LOCK TABLE {}.users IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60); COMMIT;",
        schema.name
    ));
    let started = Instant::now();
    let err = lookup(&runtime).expect_err("cancelled by the command timeout");
    let took = started.elapsed();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(err.retryable);
    assert!(err.message.contains("command timeout"), "{err}");
    assert!(
        took < Duration::from_secs(3),
        "the cancel stopped the query long before the lock was released ({took:?})"
    );
    // The server-side query is gone: our backend is idle, not waiting on the lock
    // (which the other session still holds).
    let active = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}' AND state = 'active'",
        schema.name
    );
    wait_until("our backend is idle", || psql(&active) == "0");
    release(holder);
    lookup(&runtime).expect("the connection is usable after the cancel");
    runtime.shutdown(Duration::from_secs(1));
    db.shutdown(Duration::from_secs(5));
}

#[test]
fn a_cancelled_effect_that_never_started_never_runs_and_a_running_ones_answer_reaches_no_one() {
    let schema = Schema::new("cancel");
    // Hold this schema's migration lock: the pool's first connection waits on it, so
    // no effect can start yet.
    let holder = hold_migration_lock(&schema);
    let db = PgDatabase::start(schema.config().pool_size(1, 1)).expect("started");
    let runtime = runtime(&db, 1);
    let first = runtime.block_on(async {
        runtime
            .handle()
            .spawn(|fx| async move {
                fx.perform_timeout(
                    CreateUser {
                        email: "once@x.io".into(),
                        name: "n".into(),
                        password_hash: "h".into(),
                    },
                    Duration::from_millis(200),
                )
                .await
            })
            .await
            .expect("spawned")
            .await
            .expect("finished")
    });
    let err = first.expect_err("timed out while waiting for a connection");
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    release(holder);
    // Never performed: the email is still free.
    let again = runtime.block_on(async {
        runtime
            .handle()
            .spawn(|fx| async move { create(&fx, "once@x.io").await })
            .await
            .expect("spawned")
            .await
            .expect("finished")
    });
    assert_eq!(again.email, "once@x.io");

    // Now one that runs: it waits on a table lock past its own time limit; its
    // answer arrives later and is dropped as stale.
    let holder = background_psql(&format!(
        "BEGIN; LOCK TABLE {}.users IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60); COMMIT;",
        schema.name
    ));
    let running = runtime.block_on(async {
        runtime
            .handle()
            .spawn(move |fx| async move {
                fx.perform_timeout(
                    GetUserById { user_id: again.id },
                    Duration::from_millis(100),
                )
                .await
            })
            .await
            .expect("spawned")
            .await
            .expect("finished")
    });
    assert_eq!(running.expect_err("timed out").kind, ErrorKind::Timeout);
    release(holder);
    // The late answer reached no one: the next effect on the same connection gets
    // its own.
    let nobody = uuid::Uuid::from_u128(42);
    let next = runtime.block_on(async {
        runtime
            .handle()
            .spawn(move |fx| async move { fx.perform(GetUserById { user_id: nobody }).await })
            .await
            .expect("spawned")
            .await
            .expect("finished")
    });
    assert_eq!(
        next.expect("answered"),
        UserLookup::NotFound {
            user_id: nobody,
            reason: NotFoundReason::DoesNotExist
        }
    );
    runtime.shutdown(Duration::from_secs(1));
    db.shutdown(Duration::from_secs(5));
}

#[test]
fn a_schema_migrates_while_another_schemas_migration_lock_is_held() {
    let held = Schema::new("lockheld");
    let free = Schema::new("lockfree");
    // Another service's migration stuck in its own schema (held here for up to 60 s)...
    let holder = hold_migration_lock(&held);
    // ...does not hold up this schema's: its migrations run and an effect is answered
    // (with one lock for every schema, the lookup waited until its 30 s time limit).
    let db = PgDatabase::start(free.config().pool_size(1, 1)).expect("started");
    let runtime = runtime(&db, 1);
    let found = lookup(&runtime);
    release(holder);
    assert!(
        matches!(found, Ok(UserLookup::NotFound { .. })),
        "migrated and answered while the other schema's lock was held: {found:?}"
    );
    runtime.shutdown(Duration::from_secs(1));
    db.shutdown(Duration::from_secs(5));
}
