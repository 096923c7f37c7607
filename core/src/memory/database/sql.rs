//! The simulator's SQL: users' own tables in memory, for a small subset of
//! PostgreSQL that it answers exactly as PostgreSQL would, and a clear `not
//! supported by the simulator: <excerpt>` (SQLSTATE `0A000`) for anything else,
//! never a guess.
//!
//! # The subset
//! - `CREATE TABLE [IF NOT EXISTS] t (col type [PRIMARY KEY] [NOT NULL] [UNIQUE]
//!   [DEFAULT literal | DEFAULT now()], ..., [PRIMARY KEY (col)], [UNIQUE (col)])`
//!   with types `smallint`/`int2`, `integer`/`int`/`int4`, `bigint`/`int8`,
//!   `serial`, `bigserial`, `text`, `boolean`/`bool`, `double precision`/`float8`,
//!   `bytea`, `uuid`, `timestamptz`; `DROP TABLE [IF EXISTS] t`.
//! - `INSERT INTO t (cols) VALUES (..), (..) [RETURNING *|cols]`.
//! - `SELECT *|cols|count(*) FROM t [WHERE ..] [ORDER BY col [ASC|DESC], ..]
//!   [LIMIT n] [OFFSET n]`.
//! - `UPDATE t SET col = expr, .. [WHERE ..] [RETURNING ..]`.
//! - `DELETE FROM t [WHERE ..] [RETURNING ..]`.
//! - `WHERE`: conditions joined by `AND`, each `col op expr` (`=`, `<>`, `!=`, `<`,
//!   `<=`, `>`, `>=`) or `col IS [NOT] NULL`; an expression is a column, a `$n`
//!   parameter or a literal (number, `'text'`, `true`, `false`, `NULL`), or two of
//!   them joined by `+` or `-`.
//!
//! Values keep PostgreSQL's rules where the subset meets them: NULL compares as
//! unknown (no row matches `col = NULL`), NULLs sort last ascending and first
//! descending, text compares by code point (the `C` collation), integers are range
//! checked for their column (22003), `NOT NULL` (23502) and `UNIQUE`/`PRIMARY KEY`
//! (23505, NULLs distinct) are enforced, a missing table is 42P01, a missing column
//! 42703; a `serial` does not go back when a transaction rolls back. A parameter or
//! literal of another kind than its column (text for an integer column, a float for
//! an integer column) is outside the subset.
//!
//! # Transactions
//! Every statement is atomic. A transaction (interactive, or a batch) records each
//! table as it was before its first write and puts them back on rollback; while it
//! is open, another transaction or statement touching a table it wrote is outside
//! the subset (PostgreSQL would make it wait or hide the rows, which a single-threaded
//! simulator cannot show faithfully). After a failed statement a transaction accepts
//! nothing but its end (25P02), and its commit rolls back and fails.

use std::collections::BTreeMap;

use crate::effect::sqlstate::{NOT_NULL_VIOLATION, UNIQUE_VIOLATION};
use crate::effect::{SqlMigration, SqlValue, Transaction, USER_MIGRATIONS_TABLE};
use crate::memory::Performer;
use crate::{Excerpt, Timestamp};

/// `feature_not_supported`: what the simulator answers outside its subset.
pub(crate) const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// `in_failed_sql_transaction`.
pub(crate) const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
const UNDEFINED_TABLE: &str = "42P01";
const UNDEFINED_COLUMN: &str = "42703";
const DUPLICATE_TABLE: &str = "42P07";
const OUT_OF_RANGE: &str = "22003";

/// A statement's failure: its SQLSTATE and PostgreSQL's wording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SqlFailure {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

fn fail(code: &'static str, message: impl Into<String>) -> SqlFailure {
    SqlFailure {
        code,
        message: message.into(),
    }
}

fn unsupported(sql: &str, why: &str) -> SqlFailure {
    fail(
        FEATURE_NOT_SUPPORTED,
        format!(
            "not supported by the simulator: {} ({why}; see effectful::memory's SQL subset)",
            Excerpt::head(sql.trim(), 120)
        ),
    )
}

type Result<T> = std::result::Result<T, SqlFailure>;

/// A statement's result.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Outcome {
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<Vec<SqlValue>>,
    pub(crate) affected: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ColType {
    Int(u32),
    Float,
    Text,
    Bool,
    Bytes,
    Uuid,
    Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
enum Default {
    None,
    Value(SqlValue),
    Serial,
    Now,
}

#[derive(Clone, Debug)]
struct ColumnDef {
    name: String,
    ty: ColType,
    not_null: bool,
    /// The constraint's name when the column is unique (`t_pkey`, `t_c_key`).
    unique: Option<String>,
    default: Default,
}

#[derive(Clone, Debug, Default)]
struct Table {
    columns: Vec<ColumnDef>,
    rows: Vec<Vec<SqlValue>>,
}

#[derive(Debug, Default, Clone)]
struct OpenTx {
    /// Each table written, as it was before (`None`: it did not exist).
    saved: BTreeMap<String, Option<Table>>,
    failed: bool,
    /// Who began it (an interactive one): it is rolled back when that program ends.
    owner: Option<Performer>,
}

/// Users' own tables, their open transactions and the migrations ledger.
#[derive(Clone, Debug, Default)]
pub(crate) struct SqlTables {
    tables: BTreeMap<String, Table>,
    /// `serial` counters by (table, column): never rolled back.
    serials: BTreeMap<(String, String), i64>,
    open: BTreeMap<u64, OpenTx>,
    next_tx: u64,
}

/// Where a statement runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Autocommit,
    Tx(u64),
}

impl SqlTables {
    /// Runs one statement, alone (`tx: None`) or inside an open transaction.
    pub(crate) fn run(
        &mut self,
        now: Timestamp,
        sql: &str,
        params: &[SqlValue],
        tx: Option<Transaction>,
    ) -> Result<Outcome> {
        let scope = match tx {
            None => Scope::Autocommit,
            Some(Transaction(id)) => match self.open.get(&id) {
                None => return Err(no_transaction(id)),
                Some(t) if t.failed => return Err(aborted()),
                Some(_) => Scope::Tx(id),
            },
        };
        let result = self.statement(now, sql, params, scope);
        if let (Err(_), Scope::Tx(id)) = (&result, scope) {
            if let Some(t) = self.open.get_mut(&id) {
                t.failed = true;
            }
        }
        result
    }

    /// Begins a transaction, owned by `owner` when a program began it.
    pub(crate) fn begin(&mut self, owner: Option<Performer>) -> Transaction {
        self.next_tx += 1;
        let open = OpenTx {
            owner,
            ..OpenTx::default()
        };
        self.open.insert(self.next_tx, open);
        Transaction(self.next_tx)
    }

    /// Rolls back every transaction `owner` began and left open (its program
    /// ended): they are the ones returned.
    pub(crate) fn end_program(&mut self, owner: Performer) -> Vec<Transaction> {
        let ended: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, t)| t.owner == Some(owner))
            .map(|(id, _)| *id)
            .collect();
        for &id in &ended {
            if let Some(open) = self.open.remove(&id) {
                self.restore(open);
            }
        }
        ended.into_iter().map(Transaction).collect()
    }

    /// Commits `tx`; a failed one rolls back and fails.
    pub(crate) fn commit(&mut self, tx: Transaction) -> Result<()> {
        let open = self
            .open
            .remove(&tx.0)
            .ok_or_else(|| no_transaction(tx.0))?;
        if open.failed {
            self.restore(open);
            return Err(fail(
                IN_FAILED_SQL_TRANSACTION,
                "the transaction had a failed statement: it was rolled back, not committed",
            ));
        }
        Ok(())
    }

    /// Rolls `tx` back.
    pub(crate) fn rollback(&mut self, tx: Transaction) -> Result<()> {
        let open = self
            .open
            .remove(&tx.0)
            .ok_or_else(|| no_transaction(tx.0))?;
        self.restore(open);
        Ok(())
    }

    /// The transactions still open.
    pub(crate) fn open_transactions(&self) -> Vec<Transaction> {
        self.open.keys().map(|id| Transaction(*id)).collect()
    }

    /// Runs `statements` as one transaction: all or nothing. The error names the
    /// statement (from 1).
    pub(crate) fn batch(
        &mut self,
        now: Timestamp,
        statements: &[(String, Vec<SqlValue>)],
    ) -> std::result::Result<Vec<u64>, (usize, SqlFailure)> {
        let tx = self.begin(None);
        let mut affected = Vec::with_capacity(statements.len());
        for (i, (sql, params)) in statements.iter().enumerate() {
            match self.run(now, sql, params, Some(tx)) {
                Ok(outcome) => affected.push(outcome.affected),
                Err(e) => {
                    let _ = self.rollback(tx);
                    return Err((i, e));
                }
            }
        }
        let _ = self.commit(tx);
        Ok(affected)
    }

    /// Applies the migrations not yet recorded, in version order, all or nothing.
    pub(crate) fn migrate(
        &mut self,
        now: Timestamp,
        migrations: &[SqlMigration],
    ) -> std::result::Result<Vec<i64>, SqlFailure> {
        let mut ordered: Vec<&SqlMigration> = migrations.iter().collect();
        ordered.sort_by_key(|m| m.version);
        if let Some(w) = ordered.windows(2).find(|w| w[0].version == w[1].version) {
            return Err(fail(
                UNIQUE_VIOLATION,
                format!("two migrations have version {}", w[0].version),
            ));
        }
        let tx = self.begin(None);
        let result = self.migrate_within(now, tx, &ordered);
        match &result {
            Ok(_) => self.commit(tx)?,
            Err(_) => {
                let _ = self.rollback(tx);
            }
        }
        result
    }

    fn migrate_within(
        &mut self,
        now: Timestamp,
        tx: Transaction,
        ordered: &[&SqlMigration],
    ) -> Result<Vec<i64>> {
        let ledger = format!(
            "CREATE TABLE IF NOT EXISTS {USER_MIGRATIONS_TABLE} (version bigint PRIMARY KEY, \
             name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        );
        self.run(now, &ledger, &[], Some(tx))?;
        let done = self.run(
            now,
            &format!("SELECT version FROM {USER_MIGRATIONS_TABLE}"),
            &[],
            Some(tx),
        )?;
        let mut applied = Vec::new();
        for m in ordered {
            if done
                .rows
                .iter()
                .any(|r| r.first() == Some(&SqlValue::Int(m.version)))
            {
                continue;
            }
            for statement in split_statements(&m.sql) {
                self.run(now, statement, &[], Some(tx))
                    .map_err(|e| SqlFailure {
                        code: e.code,
                        message: format!("migration {} ({}): {}", m.version, m.name, e.message),
                    })?;
            }
            self.run(
                now,
                &format!("INSERT INTO {USER_MIGRATIONS_TABLE} (version, name) VALUES ($1, $2)"),
                &[SqlValue::Int(m.version), SqlValue::Text(m.name.clone())],
                Some(tx),
            )?;
            applied.push(m.version);
        }
        Ok(applied)
    }

    fn restore(&mut self, open: OpenTx) {
        for (name, before) in open.saved {
            match before {
                Some(table) => self.tables.insert(name, table),
                None => self.tables.remove(&name),
            };
        }
    }

    /// The transaction that wrote `table` and is still open, if not `scope`'s own.
    fn check_access(&self, sql: &str, table: &str, scope: Scope) -> Result<()> {
        let writer = self
            .open
            .iter()
            .find(|(id, t)| t.saved.contains_key(table) && scope != Scope::Tx(**id));
        match writer {
            Some(_) => Err(unsupported(
                sql,
                &format!("table {table} has uncommitted writes of another open transaction"),
            )),
            None => Ok(()),
        }
    }

    /// Records `table` as it was before `scope` first writes it.
    fn save(&mut self, table: &str, scope: Scope) {
        if let Scope::Tx(id) = scope {
            let before = self.tables.get(table).cloned();
            if let Some(t) = self.open.get_mut(&id) {
                t.saved.entry(table.to_owned()).or_insert(before);
            }
        }
    }

    fn statement(
        &mut self,
        now: Timestamp,
        sql: &str,
        params: &[SqlValue],
        scope: Scope,
    ) -> Result<Outcome> {
        let tokens = tokenize(sql).ok_or_else(|| unsupported(sql, "a token it does not read"))?;
        let mut p = Parser {
            sql,
            tokens,
            at: 0,
            params,
        };
        let parsed = p.statement()?;
        p.end()?;
        match parsed {
            Parsed::Create {
                name,
                if_not_exists,
                table,
            } => {
                self.check_access(sql, &name, scope)?;
                if self.tables.contains_key(&name) {
                    if if_not_exists {
                        return Ok(Outcome::default());
                    }
                    return Err(fail(
                        DUPLICATE_TABLE,
                        format!("relation \"{name}\" already exists"),
                    ));
                }
                self.save(&name, scope);
                self.tables.insert(name, table);
                Ok(Outcome::default())
            }
            Parsed::Drop { name, if_exists } => {
                self.check_access(sql, &name, scope)?;
                if !self.tables.contains_key(&name) {
                    if if_exists {
                        return Ok(Outcome::default());
                    }
                    return Err(missing_table(&name));
                }
                self.save(&name, scope);
                self.tables.remove(&name);
                Ok(Outcome::default())
            }
            Parsed::Insert {
                name,
                columns,
                values,
                returning,
            } => {
                self.check_access(sql, &name, scope)?;
                let rows = self.insert_rows(sql, now, &name, &columns, values)?;
                self.write(sql, &name, scope, returning, rows, |table, new| {
                    table.rows.extend(new.iter().cloned());
                })
            }
            Parsed::Select(select) => {
                self.check_access(sql, &select.table, scope)?;
                let table = self.table(&select.table)?;
                select.run(sql, table)
            }
            Parsed::Update {
                name,
                sets,
                filter,
                returning,
            } => {
                self.check_access(sql, &name, scope)?;
                let table = self.table(&name)?;
                let mut rows = table.rows.clone();
                let mut changed = Vec::new();
                for (i, row) in rows.iter_mut().enumerate() {
                    if !matches(sql, table, &filter, row)? {
                        continue;
                    }
                    let mut next = row.clone();
                    for (column, expr) in &sets {
                        let at = column_position(&name, table, column)?;
                        let value = expr.eval(sql, table, row)?;
                        next[at] = store(sql, &table.columns[at], value)?;
                    }
                    *row = next;
                    changed.push(i);
                }
                check_not_null(&name, table, changed.iter().map(|i| &rows[*i]))?;
                check_unique(&name, table, &rows)?;
                let new: Vec<Vec<SqlValue>> = changed.iter().map(|i| rows[*i].clone()).collect();
                self.write(sql, &name, scope, returning, new, move |table, _| {
                    table.rows = rows;
                })
            }
            Parsed::Delete {
                name,
                filter,
                returning,
            } => {
                self.check_access(sql, &name, scope)?;
                let table = self.table(&name)?;
                let mut kept = Vec::new();
                let mut gone = Vec::new();
                for row in &table.rows {
                    if matches(sql, table, &filter, row)? {
                        gone.push(row.clone());
                    } else {
                        kept.push(row.clone());
                    }
                }
                self.write(sql, &name, scope, returning, gone, move |table, _| {
                    table.rows = kept;
                })
            }
        }
    }

    /// Applies a checked write to `name` and answers its `RETURNING`.
    fn write(
        &mut self,
        sql: &str,
        name: &str,
        scope: Scope,
        returning: Option<Items>,
        rows: Vec<Vec<SqlValue>>,
        apply: impl FnOnce(&mut Table, &[Vec<SqlValue>]),
    ) -> Result<Outcome> {
        let outcome = {
            let table = self.table(name)?;
            match &returning {
                Some(items) => project(sql, table, items, &rows)?,
                None => Outcome::default(),
            }
        };
        self.save(name, scope);
        if let Some(table) = self.tables.get_mut(name) {
            apply(table, &rows);
        }
        Ok(Outcome {
            affected: rows.len() as u64,
            ..outcome
        })
    }

    fn table(&self, name: &str) -> Result<&Table> {
        self.tables.get(name).ok_or_else(|| missing_table(name))
    }

    fn insert_rows(
        &mut self,
        sql: &str,
        now: Timestamp,
        name: &str,
        columns: &[String],
        values: Vec<Vec<Expr>>,
    ) -> Result<Vec<Vec<SqlValue>>> {
        let table = self.table(name)?.clone();
        let positions = columns
            .iter()
            .map(|c| column_position(name, &table, c))
            .collect::<Result<Vec<usize>>>()?;
        let mut rows = Vec::with_capacity(values.len());
        for tuple in values {
            if tuple.len() != positions.len() {
                return Err(unsupported(
                    sql,
                    "a VALUES list of another length than its columns",
                ));
            }
            // The given values first: they are constants (parameters, literals), which
            // PostgreSQL folds while planning, so one that fails draws no serial.
            let mut given: Vec<Option<SqlValue>> = vec![None; table.columns.len()];
            for (expr, &at) in tuple.iter().zip(&positions) {
                given[at] = Some(store(
                    sql,
                    &table.columns[at],
                    expr.eval(sql, &table, &[])?,
                )?);
            }
            let mut row = Vec::with_capacity(table.columns.len());
            for (column, value) in table.columns.iter().zip(given) {
                let value = match (value, &column.default) {
                    (Some(value), _) => value,
                    (None, Default::None) => SqlValue::Null,
                    (None, Default::Value(v)) => v.clone(),
                    (None, Default::Now) => SqlValue::Timestamp(now),
                    (None, Default::Serial) => {
                        let next = self
                            .serials
                            .entry((name.to_owned(), column.name.clone()))
                            .or_insert(0);
                        *next += 1;
                        store(sql, column, SqlValue::Int(*next))?
                    }
                };
                row.push(value);
            }
            rows.push(row);
        }
        check_not_null(name, &table, rows.iter())?;
        let mut all = table.rows.clone();
        all.extend(rows.iter().cloned());
        check_unique(name, &table, &all)?;
        Ok(rows)
    }
}

/// Splits a migration into statements at `;` outside quotes.
fn split_statements(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in sql.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&sql[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&sql[start..]);
    out.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

fn no_transaction(id: u64) -> SqlFailure {
    fail(
        IN_FAILED_SQL_TRANSACTION,
        format!("transaction {id} is not open (it ended, or its program did)"),
    )
}

fn aborted() -> SqlFailure {
    fail(
        IN_FAILED_SQL_TRANSACTION,
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

fn missing_table(name: &str) -> SqlFailure {
    fail(
        UNDEFINED_TABLE,
        format!("relation \"{name}\" does not exist"),
    )
}

fn position(table: &Table, column: &str) -> Result<usize> {
    table
        .columns
        .iter()
        .position(|c| c.name == column)
        .ok_or_else(|| {
            fail(
                UNDEFINED_COLUMN,
                format!("column \"{column}\" does not exist"),
            )
        })
}

fn column_position(table_name: &str, table: &Table, column: &str) -> Result<usize> {
    table
        .columns
        .iter()
        .position(|c| c.name == column)
        .ok_or_else(|| {
            fail(
                UNDEFINED_COLUMN,
                format!("column \"{column}\" of relation \"{table_name}\" does not exist"),
            )
        })
}

fn check_not_null<'a>(
    name: &str,
    table: &Table,
    rows: impl Iterator<Item = &'a Vec<SqlValue>>,
) -> Result<()> {
    for row in rows {
        for (column, value) in table.columns.iter().zip(row) {
            if column.not_null && *value == SqlValue::Null {
                return Err(fail(
                    NOT_NULL_VIOLATION,
                    format!(
                        "null value in column \"{}\" of relation \"{name}\" violates not-null constraint",
                        column.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_unique(name: &str, table: &Table, rows: &[Vec<SqlValue>]) -> Result<()> {
    for (at, column) in table.columns.iter().enumerate() {
        let Some(constraint) = &column.unique else {
            continue;
        };
        let mut seen: Vec<&SqlValue> = rows
            .iter()
            .filter_map(|r| r.get(at))
            .filter(|v| **v != SqlValue::Null)
            .collect();
        seen.sort_by(|a, b| compare(a, b).unwrap_or(std::cmp::Ordering::Equal));
        if let Some(w) = seen
            .windows(2)
            .find(|w| compare(w[0], w[1]) == Some(std::cmp::Ordering::Equal))
        {
            return Err(fail(
                UNIQUE_VIOLATION,
                format!(
                    "duplicate key value violates unique constraint \"{constraint}\" (relation \"{name}\", column \"{}\", value {:?})",
                    column.name, w[0]
                ),
            ));
        }
    }
    Ok(())
}

/// `value` as stored in `column`: kinds checked, integers range checked.
fn store(sql: &str, column: &ColumnDef, value: SqlValue) -> Result<SqlValue> {
    let value = match (column.ty, value) {
        (_, SqlValue::Null) => SqlValue::Null,
        (ColType::Int(bits), SqlValue::Int(v)) => {
            let max = (1i128 << (bits - 1)) - 1;
            if i128::from(v) > max || i128::from(v) < -max - 1 {
                return Err(fail(
                    OUT_OF_RANGE,
                    format!(
                        "value {v} is out of range for its {bits}-bit integer column \"{}\"",
                        column.name
                    ),
                ));
            }
            SqlValue::Int(v)
        }
        (ColType::Float, SqlValue::Int(v)) => SqlValue::Float(v as f64),
        (ColType::Float, v @ SqlValue::Float(_))
        | (ColType::Text, v @ SqlValue::Text(_))
        | (ColType::Bool, v @ SqlValue::Bool(_))
        | (ColType::Bytes, v @ SqlValue::Bytes(_))
        | (ColType::Uuid, v @ SqlValue::Uuid(_))
        | (ColType::Timestamp, v @ SqlValue::Timestamp(_)) => v,
        (ty, v) => {
            return Err(unsupported(
                sql,
                &format!(
                    "a {} value for the {ty:?} column \"{}\"",
                    v.kind(),
                    column.name
                ),
            ));
        }
    };
    Ok(value)
}

/// PostgreSQL's order between two non-NULL values of comparable kinds.
fn compare(a: &SqlValue, b: &SqlValue) -> Option<std::cmp::Ordering> {
    use SqlValue as V;
    match (a, b) {
        (V::Int(x), V::Int(y)) => Some(x.cmp(y)),
        (V::Float(x), V::Float(y)) => Some(x.total_cmp(y)),
        (V::Int(x), V::Float(y)) => Some((*x as f64).total_cmp(y)),
        (V::Float(x), V::Int(y)) => Some(x.total_cmp(&(*y as f64))),
        (V::Text(x), V::Text(y)) => Some(x.cmp(y)),
        (V::Bool(x), V::Bool(y)) => Some(x.cmp(y)),
        (V::Bytes(x), V::Bytes(y)) => Some(x.cmp(y)),
        (V::Uuid(x), V::Uuid(y)) => Some(x.cmp(y)),
        (V::Timestamp(x), V::Timestamp(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

// ---- expressions ----

#[derive(Clone, Debug)]
enum Operand {
    Column(String),
    Value(SqlValue),
}

#[derive(Clone, Debug)]
struct Expr {
    left: Operand,
    op: Option<(char, Operand)>,
}

impl Expr {
    fn eval(&self, sql: &str, table: &Table, row: &[SqlValue]) -> Result<SqlValue> {
        let get = |o: &Operand| match o {
            Operand::Column(name) => {
                let at = position(table, name)?;
                row.get(at)
                    .cloned()
                    .ok_or_else(|| unsupported(sql, &format!("column {name} where no row is")))
            }
            Operand::Value(v) => Ok(v.clone()),
        };
        let left = get(&self.left)?;
        let Some((op, right)) = &self.op else {
            return Ok(left);
        };
        let right = get(right)?;
        use SqlValue as V;
        let out = match (left, right) {
            (V::Null, _) | (_, V::Null) => V::Null,
            (V::Int(x), V::Int(y)) => {
                let r = if *op == '+' {
                    x.checked_add(y)
                } else {
                    x.checked_sub(y)
                };
                V::Int(r.ok_or_else(|| fail(OUT_OF_RANGE, "bigint out of range"))?)
            }
            (V::Float(x), V::Float(y)) => V::Float(if *op == '+' { x + y } else { x - y }),
            (V::Int(x), V::Float(y)) => V::Float(if *op == '+' {
                x as f64 + y
            } else {
                x as f64 - y
            }),
            (V::Float(x), V::Int(y)) => V::Float(if *op == '+' {
                x + y as f64
            } else {
                x - y as f64
            }),
            (a, b) => {
                return Err(unsupported(sql, &format!("{} {op} {}", a.kind(), b.kind())));
            }
        };
        Ok(out)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    IsNull,
    IsNotNull,
}

#[derive(Clone, Debug)]
struct Cond {
    column: String,
    cmp: Cmp,
    expr: Option<Expr>,
}

fn matches(sql: &str, table: &Table, filter: &[Cond], row: &[SqlValue]) -> Result<bool> {
    for cond in filter {
        let value = &row[position(table, &cond.column)?];
        let ok = match cond.cmp {
            Cmp::IsNull => *value == SqlValue::Null,
            Cmp::IsNotNull => *value != SqlValue::Null,
            cmp => {
                let Some(expr) = &cond.expr else {
                    return Ok(false);
                };
                let other = expr.eval(sql, table, row)?;
                if *value == SqlValue::Null || other == SqlValue::Null {
                    false
                } else {
                    let Some(order) = compare(value, &other) else {
                        return Err(unsupported(
                            sql,
                            &format!(
                                "comparing a {} column with a {}",
                                value.kind(),
                                other.kind()
                            ),
                        ));
                    };
                    use std::cmp::Ordering::*;
                    match cmp {
                        Cmp::Eq => order == Equal,
                        Cmp::Ne => order != Equal,
                        Cmp::Lt => order == Less,
                        Cmp::Le => order != Greater,
                        Cmp::Gt => order == Greater,
                        _ => order != Less,
                    }
                }
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

#[derive(Clone, Debug)]
enum Items {
    All,
    Columns(Vec<String>),
    Count,
}

fn project(sql: &str, table: &Table, items: &Items, rows: &[Vec<SqlValue>]) -> Result<Outcome> {
    let _ = sql;
    let positions: Vec<usize> = match items {
        Items::All => (0..table.columns.len()).collect(),
        Items::Columns(names) => names
            .iter()
            .map(|n| {
                table
                    .columns
                    .iter()
                    .position(|c| c.name == *n)
                    .ok_or_else(|| fail(UNDEFINED_COLUMN, format!("column \"{n}\" does not exist")))
            })
            .collect::<Result<_>>()?,
        Items::Count => {
            return Ok(Outcome {
                columns: vec!["count".into()],
                rows: vec![vec![SqlValue::Int(rows.len() as i64)]],
                affected: 1,
            });
        }
    };
    Ok(Outcome {
        columns: positions
            .iter()
            .map(|i| table.columns[*i].name.clone())
            .collect(),
        rows: rows
            .iter()
            .map(|r| positions.iter().map(|i| r[*i].clone()).collect())
            .collect(),
        affected: rows.len() as u64,
    })
}

#[derive(Clone, Debug)]
struct Select {
    table: String,
    items: Items,
    filter: Vec<Cond>,
    order: Vec<(String, bool)>,
    limit: Option<Expr>,
    offset: Option<Expr>,
}

impl Select {
    fn run(&self, sql: &str, table: &Table) -> Result<Outcome> {
        let mut rows = Vec::new();
        for row in &table.rows {
            if matches(sql, table, &self.filter, row)? {
                rows.push(row.clone());
            }
        }
        if matches!(self.items, Items::Count) {
            return project(sql, table, &self.items, &rows);
        }
        if !self.order.is_empty() {
            let order = self
                .order
                .iter()
                .map(|(name, descending)| Ok((position(table, name)?, *descending)))
                .collect::<Result<Vec<(usize, bool)>>>()?;
            rows.sort_by(|a, b| {
                for &(at, descending) in &order {
                    let o = match (&a[at], &b[at]) {
                        (SqlValue::Null, SqlValue::Null) => std::cmp::Ordering::Equal,
                        // NULLs are larger than any value: last ascending, first descending.
                        (SqlValue::Null, _) => std::cmp::Ordering::Greater,
                        (_, SqlValue::Null) => std::cmp::Ordering::Less,
                        (x, y) => compare(x, y).unwrap_or(std::cmp::Ordering::Equal),
                    };
                    let o = if descending { o.reverse() } else { o };
                    if o != std::cmp::Ordering::Equal {
                        return o;
                    }
                }
                std::cmp::Ordering::Equal
            });
        } else if rows.len() > 1 && (self.limit.is_some() || self.offset.is_some()) {
            // PostgreSQL's order without ORDER BY is unspecified: a page of it would
            // be a guess.
            return Err(unsupported(sql, "LIMIT or OFFSET without ORDER BY"));
        } else if rows.len() > 1 {
            // Without ORDER BY the order is unspecified: keep insertion order, and say
            // so in the docs (programs that care sort).
        }
        let count = |e: &Option<Expr>| -> Result<Option<usize>> {
            match e {
                None => Ok(None),
                Some(e) => match e.eval(sql, table, &[])? {
                    SqlValue::Null => Ok(None),
                    SqlValue::Int(n) if n >= 0 => {
                        Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)))
                    }
                    other => Err(unsupported(sql, &format!("a LIMIT or OFFSET of {other:?}"))),
                },
            }
        };
        let offset = count(&self.offset)?.unwrap_or(0);
        let limit = count(&self.limit)?.unwrap_or(usize::MAX);
        let rows: Vec<Vec<SqlValue>> = rows.into_iter().skip(offset).take(limit).collect();
        project(sql, table, &self.items, &rows)
    }
}

// ---- parsing ----

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Int(i64),
    Float(f64),
    Str(String),
    Param(usize),
    Sym(&'static str),
}

fn tokenize(sql: &str) -> Option<Vec<Token>> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Word(
                chars[start..i]
                    .iter()
                    .collect::<String>()
                    .to_ascii_lowercase(),
            ));
        } else if c == '"' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            if i >= chars.len() {
                return None;
            }
            out.push(Token::Quoted(chars[start..i].iter().collect()));
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            out.push(match text.parse::<i64>() {
                Ok(n) => Token::Int(n),
                Err(_) => Token::Float(text.parse().ok()?),
            });
        } else if c == '$' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let n: usize = chars[start..i].iter().collect::<String>().parse().ok()?;
            out.push(Token::Param(n));
        } else if c == '\'' {
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return None,
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        text.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        text.push(*c);
                        i += 1;
                    }
                }
            }
            out.push(Token::Str(text));
        } else {
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let sym = ["<=", ">=", "<>", "!="]
                .into_iter()
                .find(|s| *s == two)
                .or_else(|| {
                    ["(", ")", ",", "*", "=", "<", ">", "+", "-", ";"]
                        .into_iter()
                        .find(|s| s.starts_with(c))
                })?;
            i += sym.chars().count();
            out.push(Token::Sym(sym));
        }
    }
    Some(out)
}

enum Parsed {
    Create {
        name: String,
        if_not_exists: bool,
        table: Table,
    },
    Drop {
        name: String,
        if_exists: bool,
    },
    Insert {
        name: String,
        columns: Vec<String>,
        values: Vec<Vec<Expr>>,
        returning: Option<Items>,
    },
    Select(Select),
    Update {
        name: String,
        sets: Vec<(String, Expr)>,
        filter: Vec<Cond>,
        returning: Option<Items>,
    },
    Delete {
        name: String,
        filter: Vec<Cond>,
        returning: Option<Items>,
    },
}

struct Parser<'a> {
    sql: &'a str,
    tokens: Vec<Token>,
    at: usize,
    params: &'a [SqlValue],
}

impl Parser<'_> {
    fn no(&self, why: &str) -> SqlFailure {
        unsupported(self.sql, why)
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    /// Takes the next token if it is what `want` accepts.
    fn eat(&mut self, want: impl Fn(&Token) -> bool) -> bool {
        let found = self.peek().is_some_and(want);
        if found {
            self.at += 1;
        }
        found
    }

    fn word(&mut self, w: &str) -> bool {
        self.eat(|t| matches!(t, Token::Word(x) if x == w))
    }

    fn sym(&mut self, s: &str) -> bool {
        self.eat(|t| matches!(t, Token::Sym(x) if *x == s))
    }

    fn expect_word(&mut self, w: &str) -> Result<()> {
        let found = self.word(w);
        self.expect(found, &w.to_ascii_uppercase())
    }

    fn expect_sym(&mut self, s: &str) -> Result<()> {
        let found = self.sym(s);
        self.expect(found, s)
    }

    fn expect(&self, found: bool, what: &str) -> Result<()> {
        if found {
            Ok(())
        } else {
            Err(self.no(&format!("expected {what}")))
        }
    }

    fn name(&mut self) -> Result<String> {
        match self.next() {
            Some(Token::Word(w)) | Some(Token::Quoted(w)) => Ok(w),
            _ => Err(self.no("expected a name")),
        }
    }

    fn end(&mut self) -> Result<()> {
        self.sym(";");
        if self.at < self.tokens.len() {
            return Err(self.no("more than it reads after the statement"));
        }
        Ok(())
    }

    fn statement(&mut self) -> Result<Parsed> {
        if self.word("create") {
            return self.create();
        }
        if self.word("drop") {
            self.expect_word("table")?;
            let if_exists = self.word("if");
            if if_exists {
                self.expect_word("exists")?;
            }
            let name = self.name()?;
            return Ok(Parsed::Drop { name, if_exists });
        }
        if self.word("insert") {
            return self.insert();
        }
        if self.word("select") {
            return self.select().map(Parsed::Select);
        }
        if self.word("update") {
            let name = self.name()?;
            self.expect_word("set")?;
            let mut sets = Vec::new();
            loop {
                let column = self.name()?;
                self.expect_sym("=")?;
                sets.push((column, self.expr()?));
                if !self.sym(",") {
                    break;
                }
            }
            let filter = self.filter()?;
            let returning = self.returning()?;
            return Ok(Parsed::Update {
                name,
                sets,
                filter,
                returning,
            });
        }
        if self.word("delete") {
            self.expect_word("from")?;
            let name = self.name()?;
            let filter = self.filter()?;
            let returning = self.returning()?;
            return Ok(Parsed::Delete {
                name,
                filter,
                returning,
            });
        }
        Err(self.no("a statement it does not know"))
    }

    fn create(&mut self) -> Result<Parsed> {
        self.expect_word("table")?;
        let if_not_exists = self.word("if");
        if if_not_exists {
            self.expect_word("not")?;
            self.expect_word("exists")?;
        }
        let name = self.name()?;
        self.expect_sym("(")?;
        let mut table = Table::default();
        loop {
            if self.word("primary") {
                self.expect_word("key")?;
                let column = self.paren_name()?;
                self.constrain(&mut table, &column, format!("{name}_pkey"), true)?;
            } else if self.word("unique") {
                let column = self.paren_name()?;
                self.constrain(&mut table, &column, format!("{name}_{column}_key"), false)?;
            } else {
                let column = self.column(&name)?;
                if table.columns.iter().any(|c| c.name == column.name) {
                    return Err(self.no("a column named twice"));
                }
                table.columns.push(column);
            }
            if self.sym(")") {
                break;
            }
            self.expect_sym(",")?;
        }
        if table
            .columns
            .iter()
            .filter(|c| c.unique.as_deref() == Some(&format!("{name}_pkey")))
            .count()
            > 1
        {
            return Err(self.no("two primary keys"));
        }
        Ok(Parsed::Create {
            name,
            if_not_exists,
            table,
        })
    }

    fn paren_name(&mut self) -> Result<String> {
        self.expect_sym("(")?;
        let column = self.name()?;
        self.expect_sym(")")?;
        Ok(column)
    }

    fn constrain(
        &self,
        table: &mut Table,
        column: &str,
        constraint: String,
        key: bool,
    ) -> Result<()> {
        let Some(c) = table.columns.iter_mut().find(|c| c.name == column) else {
            return Err(self.no("a constraint on a column not declared before it"));
        };
        if c.unique.is_some() {
            return Err(self.no("two unique constraints on one column"));
        }
        c.unique = Some(constraint);
        c.not_null |= key;
        Ok(())
    }

    fn column(&mut self, table: &str) -> Result<ColumnDef> {
        let name = self.name()?;
        let ty = match self.next() {
            Some(Token::Word(w)) => w,
            _ => return Err(self.no("expected a column type")),
        };
        let (ty, default) = match ty.as_str() {
            "smallint" | "int2" => (ColType::Int(16), Default::None),
            "integer" | "int" | "int4" => (ColType::Int(32), Default::None),
            "bigint" | "int8" => (ColType::Int(64), Default::None),
            "serial" => (ColType::Int(32), Default::Serial),
            "bigserial" => (ColType::Int(64), Default::Serial),
            "text" => (ColType::Text, Default::None),
            "boolean" | "bool" => (ColType::Bool, Default::None),
            "float8" => (ColType::Float, Default::None),
            "double" => {
                self.expect_word("precision")?;
                (ColType::Float, Default::None)
            }
            "bytea" => (ColType::Bytes, Default::None),
            "uuid" => (ColType::Uuid, Default::None),
            "timestamptz" => (ColType::Timestamp, Default::None),
            _ => return Err(self.no(&format!("the column type {ty}"))),
        };
        let mut column = ColumnDef {
            not_null: default == Default::Serial,
            name,
            ty,
            unique: None,
            default,
        };
        loop {
            if self.word("primary") {
                self.expect_word("key")?;
                if column.unique.is_some() {
                    return Err(self.no("two unique constraints on one column"));
                }
                column.unique = Some(format!("{table}_pkey"));
                column.not_null = true;
            } else if self.word("unique") {
                if column.unique.is_some() {
                    return Err(self.no("two unique constraints on one column"));
                }
                column.unique = Some(format!("{table}_{}_key", column.name));
            } else if self.word("not") {
                self.expect_word("null")?;
                column.not_null = true;
            } else if self.word("null") {
            } else if self.word("default") {
                if self.word("now") {
                    self.expect_sym("(")?;
                    self.expect_sym(")")?;
                    if column.ty != ColType::Timestamp {
                        return Err(self.no("DEFAULT now() on a column that is not timestamptz"));
                    }
                    column.default = Default::Now;
                } else {
                    let Operand::Value(v) = self.operand()? else {
                        return Err(self.no("a DEFAULT that is not a literal"));
                    };
                    if matches!(v, SqlValue::Null) {
                        continue;
                    }
                    column.default = Default::Value(store(self.sql, &column, v)?);
                }
            } else {
                return Ok(column);
            }
        }
    }

    fn insert(&mut self) -> Result<Parsed> {
        self.expect_word("into")?;
        let name = self.name()?;
        self.expect_sym("(")?;
        let mut columns = Vec::new();
        loop {
            columns.push(self.name()?);
            if self.sym(")") {
                break;
            }
            self.expect_sym(",")?;
        }
        self.expect_word("values")?;
        let mut values = Vec::new();
        loop {
            self.expect_sym("(")?;
            let mut tuple = Vec::new();
            loop {
                tuple.push(self.expr()?);
                if self.sym(")") {
                    break;
                }
                self.expect_sym(",")?;
            }
            if tuple.iter().any(|e| {
                matches!(e.left, Operand::Column(_))
                    || matches!(e.op, Some((_, Operand::Column(_))))
            }) {
                return Err(self.no("a column name inside VALUES"));
            }
            values.push(tuple);
            if !self.sym(",") {
                break;
            }
        }
        let returning = self.returning()?;
        Ok(Parsed::Insert {
            name,
            columns,
            values,
            returning,
        })
    }

    fn items(&mut self) -> Result<Items> {
        if self.sym("*") {
            return Ok(Items::All);
        }
        if self.word("count") {
            self.expect_sym("(")?;
            self.expect_sym("*")?;
            self.expect_sym(")")?;
            return Ok(Items::Count);
        }
        let mut names = Vec::new();
        loop {
            names.push(self.name()?);
            if !self.sym(",") {
                return Ok(Items::Columns(names));
            }
        }
    }

    fn returning(&mut self) -> Result<Option<Items>> {
        if !self.word("returning") {
            return Ok(None);
        }
        match self.items()? {
            Items::Count => Err(self.no("count(*) in RETURNING")),
            items => Ok(Some(items)),
        }
    }

    fn select(&mut self) -> Result<Select> {
        let items = self.items()?;
        self.expect_word("from")?;
        let table = self.name()?;
        let filter = self.filter()?;
        let mut order = Vec::new();
        if self.word("order") {
            self.expect_word("by")?;
            loop {
                let column = self.name()?;
                let descending = if self.word("desc") {
                    true
                } else {
                    self.word("asc");
                    false
                };
                if self.word("nulls") {
                    return Err(self.no("NULLS FIRST or LAST"));
                }
                order.push((column, descending));
                if !self.sym(",") {
                    break;
                }
            }
        }
        let limit = if self.word("limit") {
            Some(self.expr()?)
        } else {
            None
        };
        let offset = if self.word("offset") {
            Some(self.expr()?)
        } else {
            None
        };
        if matches!(items, Items::Count)
            && (!order.is_empty() || limit.is_some() || offset.is_some())
        {
            return Err(self.no("count(*) with ORDER BY, LIMIT or OFFSET"));
        }
        Ok(Select {
            table,
            items,
            filter,
            order,
            limit,
            offset,
        })
    }

    fn filter(&mut self) -> Result<Vec<Cond>> {
        let mut conds = Vec::new();
        if !self.word("where") {
            return Ok(conds);
        }
        loop {
            let column = self.name()?;
            let cond = if self.word("is") {
                let cmp = if self.word("not") {
                    Cmp::IsNotNull
                } else {
                    Cmp::IsNull
                };
                self.expect_word("null")?;
                Cond {
                    column,
                    cmp,
                    expr: None,
                }
            } else {
                let cmp = match self.next() {
                    Some(Token::Sym("=")) => Cmp::Eq,
                    Some(Token::Sym("<>")) | Some(Token::Sym("!=")) => Cmp::Ne,
                    Some(Token::Sym("<")) => Cmp::Lt,
                    Some(Token::Sym("<=")) => Cmp::Le,
                    Some(Token::Sym(">")) => Cmp::Gt,
                    Some(Token::Sym(">=")) => Cmp::Ge,
                    _ => return Err(self.no("a condition it does not know")),
                };
                Cond {
                    column,
                    cmp,
                    expr: Some(self.expr()?),
                }
            };
            conds.push(cond);
            if !self.word("and") {
                return Ok(conds);
            }
        }
    }

    fn expr(&mut self) -> Result<Expr> {
        let left = self.operand()?;
        let op = if self.sym("+") {
            Some('+')
        } else if self.sym("-") {
            Some('-')
        } else {
            None
        };
        let op = match op {
            Some(op) => Some((op, self.operand()?)),
            None => None,
        };
        Ok(Expr { left, op })
    }

    fn operand(&mut self) -> Result<Operand> {
        let negative = self.sym("-");
        let operand = match self.next() {
            Some(Token::Int(n)) => Operand::Value(SqlValue::Int(n)),
            Some(Token::Float(f)) => {
                return Err(self.no(&format!("the numeric literal {f} (bind a float parameter)")));
            }
            Some(Token::Str(s)) => Operand::Value(SqlValue::Text(s)),
            Some(Token::Param(n)) => {
                let value = n
                    .checked_sub(1)
                    .and_then(|i| self.params.get(i))
                    .cloned()
                    .ok_or_else(|| {
                        fail(
                            "08P01",
                            format!(
                                "there is no parameter ${n} ({} were bound)",
                                self.params.len()
                            ),
                        )
                    })?;
                Operand::Value(value)
            }
            Some(Token::Word(w)) if w == "true" => Operand::Value(SqlValue::Bool(true)),
            Some(Token::Word(w)) if w == "false" => Operand::Value(SqlValue::Bool(false)),
            Some(Token::Word(w)) if w == "null" => Operand::Value(SqlValue::Null),
            Some(Token::Word(w)) if !is_reserved(&w) => Operand::Column(w),
            Some(Token::Quoted(w)) => Operand::Column(w),
            _ => return Err(self.no("an expression it does not know")),
        };
        match (negative, operand) {
            (false, operand) => Ok(operand),
            (true, Operand::Value(SqlValue::Int(n))) => Ok(Operand::Value(SqlValue::Int(-n))),
            (true, _) => Err(self.no("a minus before something other than a number")),
        }
    }
}

fn is_reserved(word: &str) -> bool {
    matches!(
        word,
        "select"
            | "from"
            | "where"
            | "and"
            | "or"
            | "not"
            | "order"
            | "by"
            | "limit"
            | "offset"
            | "returning"
            | "values"
            | "set"
            | "is"
            | "in"
            | "like"
            | "between"
            | "case"
            | "join"
            | "group"
            | "having"
            | "union"
            | "as"
            | "on"
            | "distinct"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Timestamp {
        Timestamp::from_unix_micros(0)
    }

    fn run(db: &mut SqlTables, sql: &str, params: &[SqlValue]) -> Result<Outcome> {
        db.run(at(), sql, params, None)
    }

    fn table() -> SqlTables {
        let mut db = SqlTables::default();
        run(
            &mut db,
            "CREATE TABLE t (id serial PRIMARY KEY, name text UNIQUE, n int4, f float8)",
            &[],
        )
        .unwrap();
        db
    }

    #[test]
    fn anything_outside_the_subset_is_refused_by_name_never_guessed() {
        let mut db = table();
        for sql in [
            "SELECT id FROM t JOIN u ON true",
            "SELECT id FROM t WHERE name LIKE 'a%'",
            "SELECT id FROM t WHERE n = 1 OR n = 2",
            "SELECT n * 2 FROM t",
            "CREATE TABLE v (x numeric)",
            "SELECT 1",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "SELECT id FROM t ORDER BY id NULLS FIRST",
            "SELECT id FROM t; SELECT id FROM t",
        ] {
            let e = run(&mut db, sql, &[]).unwrap_err();
            assert_eq!(e.code, FEATURE_NOT_SUPPORTED, "{sql}");
            assert!(
                e.message.starts_with("not supported by the simulator: "),
                "{sql}: {}",
                e.message
            );
        }
        // A parameter of another kind than its column is outside the subset too
        // (PostgreSQL would cast some and refuse others).
        let e = run(&mut db, "INSERT INTO t (n) VALUES ($1)", &["5".into()]).unwrap_err();
        assert_eq!(e.code, FEATURE_NOT_SUPPORTED);
        let e = run(&mut db, "INSERT INTO t (n) VALUES ($1)", &[1.5f64.into()]).unwrap_err();
        assert_eq!(e.code, FEATURE_NOT_SUPPORTED);
    }

    #[test]
    fn a_page_without_order_is_refused_and_nulls_sort_as_postgresql_sorts_them() {
        let mut db = table();
        for (name, n) in [
            ("a", SqlValue::Int(2)),
            ("b", SqlValue::Null),
            ("c", SqlValue::Int(1)),
        ] {
            run(
                &mut db,
                "INSERT INTO t (name, n) VALUES ($1, $2)",
                &[name.into(), n],
            )
            .unwrap();
        }
        let e = run(&mut db, "SELECT name FROM t LIMIT 1", &[]).unwrap_err();
        assert_eq!(e.code, FEATURE_NOT_SUPPORTED);
        let names =
            |o: Outcome| -> Vec<SqlValue> { o.rows.into_iter().map(|r| r[0].clone()).collect() };
        let asc = run(&mut db, "SELECT name FROM t ORDER BY n", &[]).unwrap();
        assert_eq!(names(asc), vec!["c".into(), "a".into(), "b".into()]);
        let desc = run(&mut db, "SELECT name FROM t ORDER BY n DESC LIMIT 2", &[]).unwrap();
        assert_eq!(names(desc), vec!["b".into(), "a".into()]);
    }

    #[test]
    fn integers_are_range_checked_for_their_column_and_a_serial_never_goes_back() {
        let mut db = table();
        let e = run(
            &mut db,
            "INSERT INTO t (n) VALUES ($1)",
            &[SqlValue::Int(1 << 31)],
        )
        .unwrap_err();
        assert_eq!(e.code, OUT_OF_RANGE);
        let tx = db.begin(None);
        db.run(
            at(),
            "INSERT INTO t (name) VALUES ($1)",
            &["x".into()],
            Some(tx),
        )
        .unwrap();
        db.rollback(tx).unwrap();
        let after = run(
            &mut db,
            "INSERT INTO t (name) VALUES ($1) RETURNING id",
            &["y".into()],
        )
        .unwrap();
        // The insert out of range drew nothing (PostgreSQL folds the parameter's
        // cast while planning), the rolled-back one drew 1.
        assert_eq!(after.rows, vec![vec![SqlValue::Int(2)]]);
    }

    #[test]
    fn a_table_written_by_an_open_transaction_is_off_limits_to_others() {
        let mut db = table();
        let tx = db.begin(None);
        db.run(
            at(),
            "INSERT INTO t (name) VALUES ($1)",
            &["x".into()],
            Some(tx),
        )
        .unwrap();
        let e = run(&mut db, "SELECT name FROM t", &[]).unwrap_err();
        assert_eq!(e.code, FEATURE_NOT_SUPPORTED);
        let seen = db.run(at(), "SELECT name FROM t", &[], Some(tx)).unwrap();
        assert_eq!(seen.rows.len(), 1);
        db.commit(tx).unwrap();
        assert_eq!(
            run(&mut db, "SELECT name FROM t", &[]).unwrap().rows.len(),
            1
        );
    }

    #[test]
    fn a_statement_is_atomic_and_a_missing_parameter_is_named() {
        let mut db = table();
        let e = run(
            &mut db,
            "INSERT INTO t (name) VALUES ($1), ($2)",
            &["x".into(), "x".into()],
        )
        .unwrap_err();
        assert_eq!(e.code, UNIQUE_VIOLATION);
        assert!(
            run(&mut db, "SELECT id FROM t", &[])
                .unwrap()
                .rows
                .is_empty()
        );
        let e = run(
            &mut db,
            "SELECT id FROM t WHERE n = $2",
            &[SqlValue::Int(1)],
        )
        .unwrap_err();
        assert!(e.message.contains("$2"), "{}", e.message);
    }
}
