//! The 64-in-flight lookup `pg/pipelined_select` measures, for both clients, shared
//! with `examples/pgcount.rs`: effectful the whole way (engine, Database adapter,
//! pool, driver) and tokio-postgres, in a schema of their own.
//!
//! Not a module of the library: `benches/pg.rs` and `examples/pgcount.rs` include it
//! with `#[path]`, so that tokio-postgres stays a dev-dependency (a test build of the
//! library never compiles the peer).

use std::time::Duration;

use effectful::Fx;
use effectful::effect::{DatabaseRequest, GetUserById, UserLookup};
use effectful::postgres::PoolConfig;
use effectful::postgres::database;
use effectful_tokio::Runtime;
use effectful_tokio::postgres::{PgDatabase, PgDatabaseConfig};

/// Lookups in flight at once on the one connection.
pub const IN_FLIGHT: usize = 64;
/// How to start the server the pg benches need.
pub const START_SERVER: &str = "the pg benches need PostgreSQL on 127.0.0.1:5432 with trust auth for user postgres and a database named \"test\"; start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (scripts/services does this)";

/// The schema both clients work in (dropped when the peer is).
pub fn schema() -> String {
    format!("effectful_pg_bench_{}", std::process::id())
}

/// The SQL of the Database adapter's `GetUserById`.
pub fn lookup_sql() -> &'static str {
    database::plan(&DatabaseRequest::GetUserById(GetUserById {
        user_id: uuid::Uuid::nil(),
    }))
    .sql()
}

/// The peer: one tokio-postgres client (its connection task on the same
/// current-thread runtime), with the tables made by effectful's migrations.
pub struct Peer {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    statement: tokio_postgres::Statement,
}

impl Peer {
    /// Connects, makes the schema and its tables, and prepares the lookup.
    pub fn connect() -> Peer {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let schema = schema();
        let (client, statement) = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(
                &format!(
                    "host=127.0.0.1 port=5432 user=postgres dbname=test options='-c search_path={schema}'"
                ),
                tokio_postgres::NoTls,
            )
            .await
            .unwrap_or_else(|e| panic!("{e}\n{START_SERVER}"));
            tokio::spawn(connection);
            client
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; {}",
                    database::migration_sql(database::MIGRATIONS)
                ))
                .await
                .expect("the bench schema");
            let statement = client.prepare(lookup_sql()).await.expect("prepared");
            (client, statement)
        });
        Peer {
            runtime,
            client,
            statement,
        }
    }

    /// One round of 64 lookups in flight.
    pub fn round(&self, id: uuid::Uuid) {
        self.runtime.block_on(async {
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
            let queries = (0..IN_FLIGHT).map(|_| self.client.query_one(&self.statement, &params));
            for row in futures_util::future::join_all(queries).await {
                let row = row.expect("a row");
                let deleted: bool = row.get(3);
                assert!(!deleted);
            }
        });
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let schema = schema();
        let _ = self.runtime.block_on(
            self.client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")),
        );
    }
}

/// Ours: a runtime with one shard and a pool of one connection.
pub struct Ours {
    runtime: Runtime,
    db: PgDatabase,
}

impl Ours {
    /// Starts the runtime and its pool, and runs one round to open the connection.
    pub fn start() -> Ours {
        let url = format!(
            "postgresql://postgres@127.0.0.1:5432/test?application_name=effectful-bench&sslmode=disable&options=-c%20search_path%3D{}",
            schema()
        );
        let db = PgDatabase::start(
            PgDatabaseConfig::from_url(&url)
                .expect("a valid URL")
                .pool(PoolConfig::default().size(1, 1)),
        )
        .expect("started");
        let runtime = db
            .register(Runtime::builder().shards(1))
            .build()
            .expect("runtime");
        let ours = Ours { runtime, db };
        ours.rounds(1, uuid::Uuid::nil());
        ours
    }

    /// `rounds` rounds of 64 lookups in flight at once, in one program.
    pub fn rounds(&self, rounds: u64, id: uuid::Uuid) {
        let done = self.runtime.block_on(async {
            self.runtime
                .handle()
                .spawn(move |fx: Fx| async move {
                    for _ in 0..rounds {
                        let all = fx
                            .perform_all((0..IN_FLIGHT).map(|_| GetUserById { user_id: id }))
                            .await;
                        for one in all {
                            match one {
                                Ok(UserLookup::NotFound { .. }) => {}
                                other => return Err(format!("{other:?}\n{START_SERVER}")),
                            }
                        }
                    }
                    Ok(())
                })
                .await
                .expect("spawned")
                .await
        });
        done.expect("finished").unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        self.db.shutdown(Duration::from_secs(2));
    }
}
