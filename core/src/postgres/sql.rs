//! Users' own SQL on PostgreSQL, sans IO: [`SqlPlan`] turns a `Query`, `Execute`,
//! `Batch`, `Begin`, `Commit`, `Rollback` or `Migrate` into protocol work, and reads
//! the server's answer back into the [`DatabaseResponse`] the in-memory database
//! would give.
//!
//! A `Query` or `Execute` outside a transaction runs like any Database effect: one
//! extended query (binary parameters, its own Sync) on a shared, pipelined
//! connection. Everything else runs on a connection held alone
//! ([`PgService`](super::PgService) pins it): a batch pipelines `BEGIN`, its
//! statements and `COMMIT` at once (a statement that fails makes the server refuse
//! the rest and turn the `COMMIT` into a `ROLLBACK`); an interactive transaction
//! keeps its connection from `Begin` to `Commit`/`Rollback`, or to the end of the
//! program that began it, which rolls it back; `Migrate` locks, reads the ledger
//! `effectful_user_migrations`, then sends each pending migration and its ledger
//! row, and `COMMIT`.

use super::error::PgError;
use super::row::ResultSet;
use super::value::Value;
use crate::effect::{
    DatabaseRequest, DatabaseResponse, Rows, SqlMigration, SqlValue, Transaction,
    USER_MIGRATIONS_TABLE, is_transaction_control,
};
use crate::{EffectError, ErrorKind};

/// The first half of the advisory-lock key (`pg_advisory_xact_lock(USER_MIGRATION_LOCK,
/// hashtext(current_schema()))`) that serialises users' migrations of one schema across
/// processes; other schemas migrate independently (see
/// [`MIGRATION_LOCK`](crate::postgres::database::MIGRATION_LOCK)).
pub const USER_MIGRATION_LOCK: i32 = 0x6566_756d; // "efum"

/// `in_failed_sql_transaction`: a statement failed earlier in the transaction, so
/// it can only roll back.
pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";

/// One statement: SQL and binary parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct SqlStatement {
    /// The SQL.
    pub sql: String,
    /// The parameters.
    pub params: Vec<Value>,
}

/// A request of users' own SQL as protocol work.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum SqlPlan {
    /// `Query` (`rows`) or `Execute` outside a transaction: a shared connection.
    Statement {
        /// The effect's name.
        effect: &'static str,
        /// The statement.
        statement: SqlStatement,
        /// Answer the rows (`Query`) rather than the count (`Execute`).
        rows: bool,
    },
    /// `Query` or `Execute` inside `tx`: its pinned connection.
    InTransaction {
        /// The effect's name.
        effect: &'static str,
        /// The transaction.
        tx: Transaction,
        /// The statement.
        statement: SqlStatement,
        /// Answer the rows rather than the count.
        rows: bool,
    },
    /// A `Batch`: `BEGIN`, the statements, `COMMIT`, pipelined on a connection held
    /// alone.
    Batch {
        /// The statements.
        statements: Vec<SqlStatement>,
    },
    /// `Begin`: hold a connection alone and send `BEGIN`.
    Begin,
    /// `Commit`.
    Commit {
        /// The transaction.
        tx: Transaction,
    },
    /// `Rollback`.
    Rollback {
        /// The transaction.
        tx: Transaction,
    },
    /// `Migrate`.
    Migrate {
        /// The migrations, ordered by version.
        migrations: Vec<SqlMigration>,
    },
    /// Refused before reaching the server (transaction control in a `Query`,
    /// repeated migration versions).
    Refused {
        /// The effect's name.
        effect: &'static str,
        /// Why.
        message: String,
    },
}

impl SqlPlan {
    /// The plan for `request`, or `None` if it is not one of users' own SQL.
    pub fn new(request: &DatabaseRequest) -> Option<SqlPlan> {
        let effect = request.name();
        let refused = |message: &str| SqlPlan::Refused {
            effect,
            message: message.to_owned(),
        };
        const CONTROL: &str =
            "transaction control is refused here: use Database.Begin or Database.Batch";
        Some(match request {
            DatabaseRequest::Query(q) => Self::statement(effect, &q.sql, &q.params, q.tx, true)
                .unwrap_or_else(|| refused(CONTROL)),
            DatabaseRequest::Execute(q) => Self::statement(effect, &q.sql, &q.params, q.tx, false)
                .unwrap_or_else(|| refused(CONTROL)),
            DatabaseRequest::Batch(b) => {
                if b.statements.iter().any(|s| is_transaction_control(&s.sql)) {
                    return Some(refused(CONTROL));
                }
                SqlPlan::Batch {
                    statements: b
                        .statements
                        .iter()
                        .map(|s| statement(&s.sql, &s.params))
                        .collect(),
                }
            }
            DatabaseRequest::Begin(_) => SqlPlan::Begin,
            DatabaseRequest::Commit(c) => SqlPlan::Commit { tx: c.tx },
            DatabaseRequest::Rollback(r) => SqlPlan::Rollback { tx: r.tx },
            DatabaseRequest::Migrate(m) => {
                let mut migrations = m.migrations.clone();
                migrations.sort_by_key(|m| m.version);
                if let Some(w) = migrations.windows(2).find(|w| w[0].version == w[1].version) {
                    return Some(refused(&format!(
                        "two migrations have version {}",
                        w[0].version
                    )));
                }
                SqlPlan::Migrate { migrations }
            }
            _ => return None,
        })
    }

    fn statement(
        effect: &'static str,
        sql: &str,
        params: &[SqlValue],
        tx: Option<Transaction>,
        rows: bool,
    ) -> Option<SqlPlan> {
        if is_transaction_control(sql) {
            return None;
        }
        let statement = statement(sql, params);
        Some(match tx {
            None => SqlPlan::Statement {
                effect,
                statement,
                rows,
            },
            Some(tx) => SqlPlan::InTransaction {
                effect,
                tx,
                statement,
                rows,
            },
        })
    }

    /// The effect's name, for errors.
    pub fn effect(&self) -> &'static str {
        match self {
            SqlPlan::Statement { effect, .. }
            | SqlPlan::InTransaction { effect, .. }
            | SqlPlan::Refused { effect, .. } => effect,
            SqlPlan::Batch { .. } => "Database.Batch",
            SqlPlan::Begin => "Database.Begin",
            SqlPlan::Commit { .. } => "Database.Commit",
            SqlPlan::Rollback { .. } => "Database.Rollback",
            SqlPlan::Migrate { .. } => "Database.Migrate",
        }
    }

    /// Whether it runs on a connection held alone (everything but a statement
    /// outside a transaction).
    pub fn is_pinned(&self) -> bool {
        !matches!(self, SqlPlan::Statement { .. })
    }
}

fn statement(sql: &str, params: &[SqlValue]) -> SqlStatement {
    SqlStatement {
        sql: sql.to_owned(),
        params: params.iter().map(to_value).collect(),
    }
}

/// A program's value as a PostgreSQL parameter.
pub fn to_value(value: &SqlValue) -> Value {
    match value {
        SqlValue::Null => Value::Null,
        SqlValue::Bool(v) => Value::Bool(*v),
        SqlValue::Int(v) => Value::Int8(*v),
        SqlValue::Float(v) => Value::Float8(*v),
        SqlValue::Text(v) => Value::Text(v.clone()),
        SqlValue::Bytes(v) => Value::Bytea(v.clone()),
        SqlValue::Uuid(v) => Value::Uuid(*v),
        SqlValue::Timestamp(v) => Value::Timestamptz(*v),
    }
}

/// A column's value as a program's, or why it has none.
pub fn from_value(value: Value) -> Result<SqlValue, String> {
    Ok(match value {
        Value::Null => SqlValue::Null,
        Value::Bool(v) => SqlValue::Bool(v),
        Value::Int2(v) => SqlValue::Int(v.into()),
        Value::Int4(v) => SqlValue::Int(v.into()),
        Value::Int8(v) => SqlValue::Int(v),
        Value::Float4(v) => SqlValue::Float(v.into()),
        Value::Float8(v) => SqlValue::Float(v),
        Value::Text(v) => SqlValue::Text(v),
        Value::Bytea(v) => SqlValue::Bytes(v),
        Value::Uuid(v) => SqlValue::Uuid(v),
        Value::Timestamptz(v) | Value::Timestamp(v) => SqlValue::Timestamp(v),
        other => {
            return Err(format!(
                "a column of type {} has no SqlValue: cast it in the query (::text, ::float8)",
                other.param_type()
            ));
        }
    })
}

/// A result set as [`Rows`].
pub fn rows(set: &ResultSet) -> Result<Rows, String> {
    let columns = set.columns.iter().map(|c| c.name.clone()).collect();
    let rows = set
        .rows
        .iter()
        .map(|row| {
            let values = row.values().map_err(|e| e.to_string())?;
            values
                .into_iter()
                .map(from_value)
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rows { columns, rows })
}

/// The answer to a `Query` (`rows`) or `Execute` from its statement's outcome.
pub fn finish_statement(
    effect: &'static str,
    rows_wanted: bool,
    outcome: Result<Vec<ResultSet>, PgError>,
) -> Result<DatabaseResponse, EffectError> {
    let mut sets = outcome.map_err(|e| e.to_effect_error(effect))?;
    if sets.len() != 1 {
        return Err(protocol(
            effect,
            format!("expected one result, the server sent {}", sets.len()),
        ));
    }
    let set = sets.remove(0);
    if rows_wanted {
        rows(&set)
            .map(DatabaseResponse::Query)
            .map_err(|e| protocol(effect, e))
    } else {
        Ok(DatabaseResponse::Execute(
            set.rows_affected().unwrap_or(set.rows.len() as u64),
        ))
    }
}

/// The answer to a statement planned as [`SqlPlan::Statement`] (the only plan that
/// runs on a shared connection).
pub fn finish(
    plan: SqlPlan,
    outcome: Result<Vec<ResultSet>, PgError>,
) -> Result<DatabaseResponse, EffectError> {
    match plan {
        SqlPlan::Statement { effect, rows, .. } => finish_statement(effect, rows, outcome),
        other => Err(protocol(
            other.effect(),
            "pinned work was answered as a shared statement".into(),
        )),
    }
}

/// The first query of a migration: lock, make sure the ledger exists, read it.
pub fn migration_ledger_sql() -> String {
    format!(
        "BEGIN;\nSELECT pg_advisory_xact_lock({USER_MIGRATION_LOCK}, hashtext(current_schema()));\n\
         CREATE TABLE IF NOT EXISTS {USER_MIGRATIONS_TABLE} (\n    version bigint PRIMARY KEY,\n    \
         name text NOT NULL,\n    applied_at timestamptz NOT NULL DEFAULT now()\n);\n\
         SELECT version FROM {USER_MIGRATIONS_TABLE};"
    )
}

/// The versions the ledger query found (its last result set).
pub fn applied_versions(sets: &[ResultSet]) -> Result<Vec<i64>, String> {
    let Some(set) = sets.last() else {
        return Err("the migrations ledger query returned nothing".into());
    };
    set.rows
        .iter()
        .map(|row| row.get::<i64, _>(0).map_err(|e| e.to_string()))
        .collect()
}

/// One pending migration and its ledger row, as one simple query.
pub fn migration_step_sql(m: &SqlMigration) -> String {
    format!(
        "{};\nINSERT INTO {USER_MIGRATIONS_TABLE} (version, name) VALUES ({}, '{}');",
        m.sql.trim().trim_end_matches(';'),
        m.version,
        m.name.replace('\'', "''")
    )
}

pub(crate) use super::database::protocol;

/// The error for a transaction that is not open (never begun here, already ended,
/// or ended with its program).
pub fn not_open(effect: &'static str, tx: Transaction) -> EffectError {
    EffectError::new(
        effect,
        ErrorKind::Service {
            code: Some(IN_FAILED_SQL_TRANSACTION.to_owned()),
        },
        format!("{tx} is not open (it ended, or its program did)"),
    )
    .with_retryable(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::{Batch, Migrate, Query, Statement};

    #[test]
    fn a_query_outside_a_transaction_is_shared_and_transaction_control_is_refused() {
        let plan = SqlPlan::new(&DatabaseRequest::Query(Box::new(Query::new(
            "SELECT $1",
            vec![SqlValue::Int(1)],
        ))))
        .unwrap();
        assert!(!plan.is_pinned());
        let refused = SqlPlan::new(&DatabaseRequest::Query(Box::new(Query::new(
            "BEGIN",
            vec![],
        ))))
        .unwrap();
        assert!(matches!(refused, SqlPlan::Refused { .. }));
        let batch = SqlPlan::new(&DatabaseRequest::Batch(Batch {
            statements: vec![Statement::new("COMMIT", vec![])],
        }))
        .unwrap();
        assert!(matches!(batch, SqlPlan::Refused { .. }));
    }

    #[test]
    fn migrations_run_by_version_and_a_repeated_version_is_refused() {
        let m = |version| SqlMigration {
            version,
            name: format!("it's {version}"),
            sql: "CREATE TABLE t (a int);".into(),
        };
        let plan = SqlPlan::new(&DatabaseRequest::Migrate(Migrate {
            migrations: vec![m(2), m(1)],
        }))
        .unwrap();
        let SqlPlan::Migrate { migrations } = plan else {
            panic!("a migration plan");
        };
        assert_eq!(migrations[0].version, 1);
        assert!(migration_step_sql(&migrations[0]).contains("'it''s 1'"));
        let twice = SqlPlan::new(&DatabaseRequest::Migrate(Migrate {
            migrations: vec![m(1), m(1)],
        }))
        .unwrap();
        assert!(matches!(twice, SqlPlan::Refused { .. }));
    }
}
