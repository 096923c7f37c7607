//! Users' own SQL: [`Query`] and [`Execute`] with bound, typed parameters, atomic
//! [`Batch`]es, interactive transactions ([`Begin`], [`Commit`], [`Rollback`]) and
//! [`Migrate`] for users' own tables.
//!
//! Rows come back as [`Rows`] (column names and [`SqlValue`]s) and decode into the
//! program's own types through [`FromRow`]:
//!
//! ```
//! use effectful::effect::{FromRow, RowError, RowRef, Rows, SqlValue};
//!
//! struct Points { user: String, total: i64 }
//!
//! impl FromRow for Points {
//!     fn from_row(row: RowRef<'_>) -> Result<Self, RowError> {
//!         Ok(Points { user: row.get("user_name")?, total: row.get("total")? })
//!     }
//! }
//!
//! let rows = Rows {
//!     columns: vec!["user_name".into(), "total".into()],
//!     rows: vec![vec![SqlValue::Text("ada".into()), SqlValue::Int(30)]],
//! };
//! let points: Vec<Points> = rows.decode().unwrap();
//! assert_eq!((points[0].user.as_str(), points[0].total), ("ada", 30));
//! ```
//!
//! # Transactions
//! - A [`Batch`] is one atomic unit: its statements run in order inside one
//!   transaction (pipelined on PostgreSQL: `BEGIN`, the statements, `COMMIT` sent at
//!   once); if any fails, none of them took effect, and the error names the statement
//!   (`statement 2 of 3: ...`).
//! - [`Begin`] pins a connection to the program and answers a [`Transaction`];
//!   [`Query`] and [`Execute`] with `tx: Some(..)` run on it; [`Commit`] or
//!   [`Rollback`] ends it and returns the connection. A program that ends (returns,
//!   fails, is cancelled, passes its deadline) with a transaction still open has it
//!   rolled back, and the connection goes back to the pool clean.
//! - [`Query`] and [`Execute`] refuse transaction control (`BEGIN`, `COMMIT`, ...):
//!   outside a transaction they run on a connection shared with other programs.
//!
//! # Errors
//! A statement the server rejects fails with `ErrorKind::Service { code }`, its
//! SQLSTATE (see [`sqlstate`](crate::effect::sqlstate)); the in-memory database
//! answers a statement outside the SQL it knows with `not supported by the
//! simulator: <excerpt>`, never with a guess.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::time::Timestamp;

/// One SQL value: a parameter, or a column of a returned row.
///
/// As a parameter on PostgreSQL: `Int` is sent as `int8`, `Float` as `float8`,
/// `Text` as `text`, `Bytes` as `bytea`, `Timestamp` as `timestamptz`; `Null` lets
/// the server infer the type. Read back, `int2`/`int4`/`int8` are `Int`,
/// `float4`/`float8` are `Float`, `text`/`varchar`/`char(n)` are `Text`,
/// `timestamptz`/`timestamp` are `Timestamp`; cast other types in the query
/// (`numeric::text`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SqlValue {
    /// SQL NULL.
    Null,
    /// `bool`.
    Bool(bool),
    /// An integer (`int2`, `int4`, `int8`).
    Int(i64),
    /// A float (`float4`, `float8`).
    Float(#[serde(with = "crate::effect::float")] f64),
    /// Text.
    Text(String),
    /// `bytea`.
    Bytes(Vec<u8>),
    /// `uuid`.
    Uuid(Uuid),
    /// `timestamptz` (and `timestamp`, read as UTC).
    Timestamp(Timestamp),
}

impl SqlValue {
    /// The variant's name, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            SqlValue::Null => "NULL",
            SqlValue::Bool(_) => "bool",
            SqlValue::Int(_) => "int",
            SqlValue::Float(_) => "float",
            SqlValue::Text(_) => "text",
            SqlValue::Bytes(_) => "bytes",
            SqlValue::Uuid(_) => "uuid",
            SqlValue::Timestamp(_) => "timestamp",
        }
    }
}

macro_rules! sql_value_from {
    ($($t:ty => $v:ident $(as $via:ty)?),* $(,)?) => {$(
        impl From<$t> for SqlValue {
            fn from(v: $t) -> SqlValue { SqlValue::$v(v $(as $via)?.into()) }
        }
    )*};
}

sql_value_from! {
    bool => Bool, i16 => Int, i32 => Int, i64 => Int, u32 => Int, f64 => Float,
    f32 => Float, String => Text, &str => Text, Vec<u8> => Bytes, Uuid => Uuid,
    Timestamp => Timestamp,
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> SqlValue {
        v.map_or(SqlValue::Null, Into::into)
    }
}

/// An open interactive transaction, pinned to the program that began it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Transaction(pub u64);

/// One statement of a [`Batch`], with its parameters (`$1`, `$2`, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// The SQL: one statement.
    pub sql: String,
    /// Its parameters, bound in order.
    pub params: Vec<SqlValue>,
}

impl Statement {
    /// A statement with parameters.
    pub fn new(sql: impl Into<String>, params: Vec<SqlValue>) -> Statement {
        Statement {
            sql: sql.into(),
            params,
        }
    }
}

/// Runs one statement and answers its rows. Output: [`Rows`].
///
/// An "award points" job on tables of its own: a migration creates them once, then
/// each award runs in one transaction (the same program runs on PostgreSQL through
/// `effectful-tokio` and on the in-memory database, as here):
///
/// ```
/// # #[cfg(feature = "memory")] {
/// use effectful::effect::*;
/// use effectful::{EffectError, EngineConfig, Fx, run_async};
///
/// async fn award(fx: &Fx, user: &str, points: i64) -> Result<i64, EffectError> {
///     let tx = fx.perform(Begin {}).await?;
///     let found = fx
///         .perform(Query::new("SELECT total FROM points WHERE user_name = $1", vec![user.into()]).within(tx))
///         .await?;
///     let sql = match found.first::<Total>() {
///         Ok(Some(_)) => "UPDATE points SET total = total + $2 WHERE user_name = $1",
///         _ => "INSERT INTO points (user_name, total) VALUES ($1, $2)",
///     };
///     fx.perform(Execute::new(sql, vec![user.into(), points.into()]).within(tx)).await?;
///     fx.perform(Commit { tx }).await?;
///     let rows = fx
///         .perform(Query::new("SELECT total FROM points WHERE user_name = $1", vec![user.into()]))
///         .await?;
///     Ok(rows.first::<Total>().ok().flatten().map_or(0, |t| t.0))
/// }
///
/// struct Total(i64);
///
/// impl FromRow for Total {
///     fn from_row(row: RowRef<'_>) -> Result<Self, RowError> {
///         Ok(Total(row.get("total")?))
///     }
/// }
///
/// let job = |fx: Fx| async move {
///     fx.perform(Migrate {
///         migrations: vec![SqlMigration {
///             version: 1,
///             name: "points".into(),
///             sql: "CREATE TABLE points (user_name text PRIMARY KEY, total bigint NOT NULL)".into(),
///         }],
///     })
///     .await?;
///     award(&fx, "ada", 10).await?;
///     award(&fx, "ada", 5).await
/// };
/// let mut services = effectful::memory::Services::new(7);
/// let mut handler = |request: Request| match services.handle(effectful::Time::ZERO, request) {
///     effectful::memory::Handled::Done(result) => result,
///     _ => unreachable!("the job asks only for Database effects"),
/// };
/// assert_eq!(run_async(job, EngineConfig::default(), &mut handler), Ok(Ok(15)));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Query {
    /// The SQL: one statement, parameters as `$1`, `$2`, ...
    pub sql: String,
    /// Its parameters, bound in order (typed; never spliced into the text).
    pub params: Vec<SqlValue>,
    /// Run inside this transaction; `None`: on its own (autocommit).
    #[serde(default)]
    pub tx: Option<Transaction>,
}

impl Query {
    /// A query on its own (autocommit).
    pub fn new(sql: impl Into<String>, params: Vec<SqlValue>) -> Query {
        Query {
            sql: sql.into(),
            params,
            tx: None,
        }
    }

    /// The same query inside `tx`.
    pub fn within(mut self, tx: Transaction) -> Query {
        self.tx = Some(tx);
        self
    }
}

/// Runs one statement and answers how many rows it affected (inserted, updated,
/// deleted, or selected). Output: `u64`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Execute {
    /// The SQL: one statement, parameters as `$1`, `$2`, ...
    pub sql: String,
    /// Its parameters, bound in order.
    pub params: Vec<SqlValue>,
    /// Run inside this transaction; `None`: on its own (autocommit).
    #[serde(default)]
    pub tx: Option<Transaction>,
}

impl Execute {
    /// A statement on its own (autocommit).
    pub fn new(sql: impl Into<String>, params: Vec<SqlValue>) -> Execute {
        Execute {
            sql: sql.into(),
            params,
            tx: None,
        }
    }

    /// The same statement inside `tx`.
    pub fn within(mut self, tx: Transaction) -> Execute {
        self.tx = Some(tx);
        self
    }
}

/// Runs statements in order as one atomic transaction. Output: the rows each
/// affected, in order. On any failure nothing took effect, and the error's message
/// starts with `statement N of M:` (counting from 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The statements, in order.
    pub statements: Vec<Statement>,
}

/// Begins an interactive transaction on a connection pinned to the program until
/// [`Commit`] or [`Rollback`] (or the program's end, which rolls it back). Output:
/// the [`Transaction`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Begin {}

/// Commits `tx`. Output: `()`. A transaction in which a statement failed cannot
/// commit: the commit fails (not retryable) and the transaction is rolled back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The transaction.
    pub tx: Transaction,
}

/// Rolls `tx` back. Output: `()`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// The transaction.
    pub tx: Transaction,
}

/// One migration of the user's own tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlMigration {
    /// Its place in the order (a file's leading number: `0002_points.sql` is 2);
    /// never reused.
    pub version: i64,
    /// What it does (the rest of the file name), recorded beside the version.
    pub name: String,
    /// Its statements, separated by `;` (no transaction control).
    pub sql: String,
}

impl SqlMigration {
    /// The migration in file `file_name` (its name only, not a path) holding `sql`:
    /// `0002_add_points.sql` is version 2, named `add_points`. The name is a version
    /// (decimal digits, leading zeros allowed), `_`, a non-empty description, and
    /// `.sql`.
    ///
    /// ```
    /// use effectful::effect::SqlMigration;
    ///
    /// let m = SqlMigration::from_file("0002_add_points.sql", "ALTER TABLE ...").unwrap();
    /// assert_eq!((m.version, m.name.as_str()), (2, "add_points"));
    /// assert!(SqlMigration::from_file("add_points.sql", "").is_err());
    /// ```
    pub fn from_file(
        file_name: &str,
        sql: impl Into<String>,
    ) -> Result<SqlMigration, MigrationFileError> {
        let bad = |why: &'static str| MigrationFileError::BadName {
            file: file_name.to_owned(),
            why,
        };
        let stem = file_name
            .strip_suffix(".sql")
            .ok_or_else(|| bad("it does not end with .sql"))?;
        let (version, name) = stem
            .split_once('_')
            .ok_or_else(|| bad("write VERSION_DESCRIPTION.sql, e.g. 0002_add_points.sql"))?;
        if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(
                "it does not start with a version number, e.g. 0002_add_points.sql",
            ));
        }
        if name.is_empty() {
            return Err(bad(
                "the description after the version is empty, e.g. 0002_add_points.sql",
            ));
        }
        let version = version
            .parse::<i64>()
            .map_err(|_| bad("its version is too large (at most 9223372036854775807)"))?;
        Ok(SqlMigration {
            version,
            name: name.to_owned(),
            sql: sql.into(),
        })
    }
}

impl Migrate {
    /// The migrations in `files`, each a file name (not a path) and its SQL, as
    /// [`SqlMigration::from_file`] reads them; two files of one version are refused.
    pub fn from_files<N, S>(
        files: impl IntoIterator<Item = (N, S)>,
    ) -> Result<Migrate, MigrationFileError>
    where
        N: AsRef<str>,
        S: Into<String>,
    {
        let mut named: Vec<(String, SqlMigration)> = Vec::new();
        for (file, sql) in files {
            let file = file.as_ref();
            named.push((file.to_owned(), SqlMigration::from_file(file, sql)?));
        }
        named.sort_by(|a, b| (a.1.version, &a.0).cmp(&(b.1.version, &b.0)));
        if let Some(w) = named.windows(2).find(|w| w[0].1.version == w[1].1.version) {
            return Err(MigrationFileError::SameVersion {
                version: w[0].1.version,
                files: [w[0].0.clone(), w[1].0.clone()],
            });
        }
        Ok(Migrate {
            migrations: named.into_iter().map(|(_, m)| m).collect(),
        })
    }
}

/// Why migration files were refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MigrationFileError {
    /// A file's name is not `VERSION_DESCRIPTION.sql`.
    BadName {
        /// The file.
        file: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Two files have one version.
    SameVersion {
        /// The version.
        version: i64,
        /// The two files.
        files: [String; 2],
    },
}

impl fmt::Display for MigrationFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrationFileError::BadName { file, why } => {
                write!(f, "migration file {file:?}: {why}")
            }
            MigrationFileError::SameVersion { version, files } => write!(
                f,
                "migration files {:?} and {:?} both have version {version}; versions are never reused",
                files[0], files[1]
            ),
        }
    }
}

impl std::error::Error for MigrationFileError {}

/// Applies the migrations not applied yet, in version order, each once, recorded
/// in the table `effectful_user_migrations` (version, name, applied_at). Output: the
/// versions applied by this call (empty when all were applied before).
///
/// On PostgreSQL everything runs in one transaction under an advisory lock, so two
/// processes migrating at once apply each migration once, and a failing migration
/// leaves nothing of this call behind. Versions must be distinct.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migrate {
    /// The migrations (any order; they run by version).
    pub migrations: Vec<SqlMigration>,
}

/// The name of the table that records users' migrations.
pub const USER_MIGRATIONS_TABLE: &str = "effectful_user_migrations";

/// What a [`Query`] returns: the column names and the rows, each a value per column.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rows {
    /// The column names, in order.
    pub columns: Vec<String>,
    /// The rows, each as long as `columns`.
    pub rows: Vec<Vec<SqlValue>>,
}

impl Rows {
    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Row `index`, to read by column name or position.
    pub fn row(&self, index: usize) -> Option<RowRef<'_>> {
        Some(RowRef {
            columns: &self.columns,
            values: self.rows.get(index)?,
        })
    }

    /// Every row, to read by column name or position.
    pub fn iter(&self) -> impl Iterator<Item = RowRef<'_>> {
        self.rows.iter().map(|values| RowRef {
            columns: &self.columns,
            values,
        })
    }

    /// Every row decoded as `T`.
    pub fn decode<T: FromRow>(&self) -> Result<Vec<T>, RowError> {
        self.iter().map(T::from_row).collect()
    }

    /// The first row decoded as `T`, `None` when there is no row.
    pub fn first<T: FromRow>(&self) -> Result<Option<T>, RowError> {
        self.row(0).map(T::from_row).transpose()
    }
}

/// One row of [`Rows`]: its values beside the column names.
#[derive(Clone, Copy, Debug)]
pub struct RowRef<'a> {
    columns: &'a [String],
    values: &'a [SqlValue],
}

impl<'a> RowRef<'a> {
    /// The value of column `column` (a name, or a position as `usize`).
    pub fn value(&self, column: impl RowIndex) -> Result<&'a SqlValue, RowError> {
        let position = column
            .position(self.columns)
            .filter(|i| *i < self.values.len());
        position
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| RowError::NoSuchColumn {
                column: column.describe(),
            })
    }

    /// Column `column` read as `T`.
    pub fn get<T: FromSqlValue>(&self, column: impl RowIndex) -> Result<T, RowError> {
        let value = self.value(&column)?;
        T::from_sql_value(value).map_err(|expected| RowError::Mismatch {
            column: column.describe(),
            expected,
            actual: value.kind(),
        })
    }
}

/// A column by name or position.
pub trait RowIndex {
    /// Its position among `columns`.
    fn position(&self, columns: &[String]) -> Option<usize>;
    /// How to name it in an error.
    fn describe(&self) -> String;
}

impl RowIndex for usize {
    fn position(&self, _columns: &[String]) -> Option<usize> {
        Some(*self)
    }
    fn describe(&self) -> String {
        format!("#{self}")
    }
}

impl RowIndex for &str {
    fn position(&self, columns: &[String]) -> Option<usize> {
        columns.iter().position(|c| c == self)
    }
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

impl<T: RowIndex + ?Sized> RowIndex for &T {
    fn position(&self, columns: &[String]) -> Option<usize> {
        (**self).position(columns)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// Why a row did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RowError {
    /// No such column.
    #[error("no column {column} in the row")]
    NoSuchColumn {
        /// The column asked for.
        column: String,
    },
    /// The column holds another kind of value (or NULL for a non-`Option`).
    #[error("column {column} holds {actual}, expected {expected}")]
    Mismatch {
        /// The column.
        column: String,
        /// What the Rust type reads.
        expected: &'static str,
        /// What the column holds.
        actual: &'static str,
    },
}

/// A program's own row type, read from one row.
pub trait FromRow: Sized {
    /// Reads `row`.
    fn from_row(row: RowRef<'_>) -> Result<Self, RowError>;
}

/// A Rust type read from one [`SqlValue`]; `Err` says what it expected.
pub trait FromSqlValue: Sized {
    /// Reads `value`, or names the kind of value it expected.
    fn from_sql_value(value: &SqlValue) -> Result<Self, &'static str>;
}

macro_rules! from_sql_value {
    ($($t:ty: $expected:literal, $pat:pat => $out:expr;)*) => {$(
        impl FromSqlValue for $t {
            fn from_sql_value(value: &SqlValue) -> Result<$t, &'static str> {
                match value {
                    $pat => $out,
                    _ => Err($expected),
                }
            }
        }
    )*};
}

from_sql_value! {
    bool: "bool", SqlValue::Bool(v) => Ok(*v);
    i64: "int", SqlValue::Int(v) => Ok(*v);
    i32: "int (32 bits)", SqlValue::Int(v) => i32::try_from(*v).map_err(|_| "int (32 bits)");
    u64: "int (not negative)", SqlValue::Int(v) => u64::try_from(*v).map_err(|_| "int (not negative)");
    f64: "float", SqlValue::Float(v) => Ok(*v);
    String: "text", SqlValue::Text(v) => Ok(v.clone());
    Vec<u8>: "bytes", SqlValue::Bytes(v) => Ok(v.clone());
    Uuid: "uuid", SqlValue::Uuid(v) => Ok(*v);
    Timestamp: "timestamp", SqlValue::Timestamp(v) => Ok(*v);
}

impl FromSqlValue for SqlValue {
    fn from_sql_value(value: &SqlValue) -> Result<SqlValue, &'static str> {
        Ok(value.clone())
    }
}

impl<T: FromSqlValue> FromSqlValue for Option<T> {
    fn from_sql_value(value: &SqlValue) -> Result<Option<T>, &'static str> {
        match value {
            SqlValue::Null => Ok(None),
            other => T::from_sql_value(other).map(Some),
        }
    }
}

impl fmt::Display for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transaction {}", self.0)
    }
}

/// Whether `sql` starts with transaction control (`BEGIN`, `START`, `COMMIT`, `END`,
/// `ROLLBACK`, `ABORT`, `SAVEPOINT`, `RELEASE`, `PREPARE TRANSACTION`), which
/// [`Query`] and [`Execute`] refuse: use [`Begin`] or [`Batch`].
pub fn is_transaction_control(sql: &str) -> bool {
    let first: String = sql
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase();
    matches!(
        first.as_str(),
        "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE"
    ) || (first == "PREPARE" && sql.to_ascii_uppercase().contains("TRANSACTION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_files_are_read_by_name_and_bad_names_say_what_is_wrong() {
        let m = SqlMigration::from_file("0010_add_points_table.sql", "CREATE TABLE p ()").unwrap();
        assert_eq!(
            (m.version, m.name.as_str(), m.sql.as_str()),
            (10, "add_points_table", "CREATE TABLE p ()")
        );
        for (file, says) in [
            ("0001_points.SQL", "does not end with .sql"),
            ("0001-points.sql", "VERSION_DESCRIPTION"),
            ("points_0001.sql", "does not start with a version"),
            ("_points.sql", "does not start with a version"),
            ("+1_points.sql", "does not start with a version"),
            ("0001_.sql", "description after the version is empty"),
            ("99999999999999999999_big.sql", "too large"),
        ] {
            let error = SqlMigration::from_file(file, "").unwrap_err().to_string();
            assert!(
                error.contains(file) && error.contains(says),
                "{file}: {error}"
            );
        }
    }

    #[test]
    fn migrate_from_files_orders_by_version_and_refuses_a_version_twice() {
        let migrate =
            Migrate::from_files([("0002_b.sql", "B"), ("0001_a.sql", "A"), ("10_c.sql", "C")])
                .unwrap();
        let versions: Vec<i64> = migrate.migrations.iter().map(|m| m.version).collect();
        assert_eq!(versions, vec![1, 2, 10]);
        let error = Migrate::from_files([("0002_b.sql", "B"), ("2_again.sql", "B2")]).unwrap_err();
        assert_eq!(
            error,
            MigrationFileError::SameVersion {
                version: 2,
                files: ["0002_b.sql".into(), "2_again.sql".into()],
            }
        );
        assert!(error.to_string().contains("both have version 2"));
    }

    #[test]
    fn a_row_reads_by_name_and_position_and_names_a_mismatch() {
        let rows = Rows {
            columns: vec!["a".into(), "b".into()],
            rows: vec![vec![SqlValue::Int(3), SqlValue::Null]],
        };
        let row = rows.row(0).unwrap();
        assert_eq!(row.get::<i64>("a"), Ok(3));
        assert_eq!(row.get::<Option<String>>(1), Ok(None));
        assert_eq!(
            row.get::<String>("b"),
            Err(RowError::Mismatch {
                column: "\"b\"".into(),
                expected: "text",
                actual: "NULL"
            })
        );
        assert!(matches!(
            row.get::<i64>("c"),
            Err(RowError::NoSuchColumn { .. })
        ));
    }

    #[test]
    fn transaction_control_is_recognised_whatever_the_case() {
        for sql in [
            "begin",
            " COMMIT;",
            "Rollback",
            "start transaction",
            "savepoint a",
        ] {
            assert!(is_transaction_control(sql), "{sql}");
        }
        for sql in ["SELECT 1", "UPDATE t SET ended = true", "beginning"] {
            assert!(!is_transaction_control(sql), "{sql}");
        }
    }

    #[test]
    fn values_round_trip_through_json_even_nan() {
        let values = vec![
            SqlValue::Float(f64::NAN),
            SqlValue::Int(-1),
            SqlValue::Text("ü".into()),
        ];
        let json = serde_json::to_string(&values).unwrap();
        let back: Vec<SqlValue> = serde_json::from_str(&json).unwrap();
        assert!(matches!(back[0], SqlValue::Float(f) if f.is_nan()));
        assert_eq!(back[1..], values[1..]);
    }
}
