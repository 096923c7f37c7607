//! Work that holds a connection alone: interactive transactions, batches and users'
//! migrations (see [`SqlPlan`]). Kept apart from the shared-connection path of
//! [`PgService`]: it hooks in where work is submitted, cancelled, granted a
//! connection, answered, and where a connection closes.
//!
//! A transaction is remembered under the key of the `Begin` that opened it. The
//! driver cancels that key when the program ends (the tokio interpreter does, for
//! every `Begin` of the program), and a transaction still open then is rolled back
//! before its connection goes back to the pool.

use rustc_hash::FxHashMap as HashMap;
use std::hash::Hash;

use super::{Output, PgService, Reply, Role};
use crate::effect::{DatabaseResponse, SqlMigration, Transaction};
use crate::postgres::error::PgError;
use crate::postgres::event::TransactionStatus;
use crate::postgres::pool::{AcquireId, ConnId, Mode, Release};
use crate::postgres::row::ResultSet;
use crate::postgres::sql::{self, IN_FAILED_SQL_TRANSACTION, SqlPlan};
use crate::{EffectError, ErrorKind};

/// The pinned work's state inside a [`PgService`].
pub(super) struct Pinned<K> {
    next_tx: u64,
    /// Work waiting for a connection of its own.
    waiting: HashMap<AcquireId, (K, SqlPlan)>,
    /// Open transactions by id.
    txs: HashMap<u64, Tx<K>>,
    /// The transaction each `Begin` opened, by the `Begin`'s key.
    begins: HashMap<K, u64>,
    /// Batches and migrations under way, by key.
    sessions: HashMap<K, Session>,
}

impl<K> Default for Pinned<K> {
    fn default() -> Self {
        Pinned {
            next_tx: 0,
            waiting: HashMap::default(),
            txs: HashMap::default(),
            begins: HashMap::default(),
            sessions: HashMap::default(),
        }
    }
}

struct Tx<K> {
    acquire: AcquireId,
    conn: ConnId,
    begin: K,
    /// `COMMIT` or `ROLLBACK` sent: nothing more runs in it.
    ending: bool,
}

struct Session {
    acquire: AcquireId,
    conn: ConnId,
    effect: &'static str,
    /// The program no longer wants the answer.
    cancelled: bool,
    /// Rows affected by each batch statement.
    affected: Vec<u64>,
    /// How many statements the batch has.
    total: usize,
    /// The first failure.
    error: Option<EffectError>,
    /// The migrations asked for, and those this call applies.
    migrations: Vec<SqlMigration>,
    applied: Vec<i64>,
}

/// What a query sent on a pinned connection is for.
pub(super) enum Step<K> {
    Begin {
        key: K,
        tx: u64,
    },
    Statement {
        key: K,
        effect: &'static str,
        rows: bool,
    },
    Commit {
        key: K,
        tx: u64,
    },
    Rollback {
        key: Option<K>,
        tx: u64,
    },
    BatchBegin {
        key: K,
    },
    BatchStatement {
        key: K,
        index: usize,
    },
    SessionEnd {
        key: K,
    },
    MigrationLedger {
        key: K,
    },
    Migration {
        key: K,
        index: usize,
    },
}

impl<K: Clone + Eq + Hash> PgService<K> {
    /// Queues `plan` for a connection of its own, or runs it on its transaction's.
    pub(super) fn submit_pinned(&mut self, key: K, plan: SqlPlan) {
        let effect = plan.effect();
        match plan {
            SqlPlan::Refused { message, .. } => {
                self.answer_pinned(key, Err(sql::protocol(effect, message)));
            }
            SqlPlan::InTransaction {
                tx,
                statement,
                rows,
                ..
            } => match self.open_tx(tx) {
                Some(conn) => {
                    let step = Step::Statement {
                        key: key.clone(),
                        effect,
                        rows,
                    };
                    if !self.send_pinned(conn, step, |pg, now| {
                        pg.execute(now, &statement.sql, &statement.params)
                    }) {
                        self.answer_pinned(key, Err(lost(effect)));
                    }
                }
                None => self.answer_pinned(key, Err(sql::not_open(effect, tx))),
            },
            SqlPlan::Commit { tx } | SqlPlan::Rollback { tx } => {
                let commit = matches!(plan, SqlPlan::Commit { .. });
                let Some(conn) = self.open_tx(tx) else {
                    self.answer_pinned(key, Err(sql::not_open(effect, tx)));
                    return;
                };
                if let Some(t) = self.pinned.txs.get_mut(&tx.0) {
                    t.ending = true;
                }
                let (step, text) = if commit {
                    (Step::Commit { key, tx: tx.0 }, "COMMIT")
                } else {
                    (
                        Step::Rollback {
                            key: Some(key),
                            tx: tx.0,
                        },
                        "ROLLBACK",
                    )
                };
                if !self.send_pinned(conn, step, |pg, now| pg.query(now, text)) {
                    self.close_tx(tx.0, Release::Broken);
                }
            }
            plan => {
                let acquire = self.pool.acquire(self.now, Mode::Exclusive);
                self.pinned.waiting.insert(acquire, (key, plan));
            }
        }
    }

    /// The connection of `tx` if it is open and not ending.
    fn open_tx(&self, tx: Transaction) -> Option<ConnId> {
        self.pinned
            .txs
            .get(&tx.0)
            .filter(|t| !t.ending)
            .map(|t| t.conn)
    }

    /// Whether `acquire` is pinned work's.
    pub(super) fn is_pinned_acquire(&self, acquire: AcquireId) -> bool {
        self.pinned.waiting.contains_key(&acquire)
    }

    /// A pinned acquire timed out.
    pub(super) fn pinned_acquire_timed_out(&mut self, acquire: AcquireId) {
        if let Some((key, plan)) = self.pinned.waiting.remove(&acquire) {
            let message = format!(
                "no PostgreSQL connection was free within the pool's acquire timeout ({:?})",
                self.config.pool.acquire_timeout
            );
            self.answer_pinned(key, Err(EffectError::timeout(plan.effect(), message)));
        }
    }

    /// Pinned work granted its connection: start it.
    pub(super) fn start_pinned(&mut self, acquire: AcquireId, conn: ConnId) {
        let Some((key, plan)) = self.pinned.waiting.remove(&acquire) else {
            self.pool.release(self.now, acquire, Release::Clean);
            return;
        };
        let effect = plan.effect();
        let mut session = Session {
            acquire,
            conn,
            effect,
            cancelled: false,
            affected: Vec::new(),
            total: 0,
            error: None,
            migrations: Vec::new(),
            applied: Vec::new(),
        };
        let sent = match plan {
            SqlPlan::Begin => {
                self.pinned.next_tx += 1;
                let tx = self.pinned.next_tx;
                self.pinned.txs.insert(
                    tx,
                    Tx {
                        acquire,
                        conn,
                        begin: key.clone(),
                        ending: false,
                    },
                );
                self.pinned.begins.insert(key.clone(), tx);
                let begin = Step::Begin {
                    key: key.clone(),
                    tx,
                };
                if !self.send_pinned(conn, begin, |pg, now| pg.query(now, "BEGIN")) {
                    self.pinned.txs.remove(&tx);
                    self.pinned.begins.remove(&key);
                    self.pool.release(self.now, acquire, Release::Broken);
                    self.answer_pinned(key, Err(lost(effect)));
                }
                return;
            }
            SqlPlan::Batch { statements } => {
                session.total = statements.len();
                let mut sent =
                    self.send_pinned(conn, Step::BatchBegin { key: key.clone() }, |pg, now| {
                        pg.query(now, "BEGIN")
                    });
                for (index, s) in statements.iter().enumerate() {
                    let step = Step::BatchStatement {
                        key: key.clone(),
                        index,
                    };
                    sent &=
                        self.send_pinned(conn, step, |pg, now| pg.execute(now, &s.sql, &s.params));
                }
                sent &= self.send_pinned(conn, Step::SessionEnd { key: key.clone() }, |pg, now| {
                    pg.query(now, "COMMIT")
                });
                sent
            }
            SqlPlan::Migrate { migrations } => {
                session.migrations = migrations;
                let ledger = sql::migration_ledger_sql();
                let step = Step::MigrationLedger { key: key.clone() };
                self.send_pinned(conn, step, |pg, now| pg.query(now, &ledger))
            }
            other => {
                self.pool.release(self.now, acquire, Release::Clean);
                self.answer_pinned(
                    key,
                    Err(sql::protocol(
                        effect,
                        format!("{other:?} does not hold a connection"),
                    )),
                );
                return;
            }
        };
        if sent {
            self.pinned.sessions.insert(key, session);
        } else {
            self.pool.release(self.now, acquire, Release::Broken);
            self.answer_pinned(key, Err(lost(effect)));
        }
    }

    /// The program gave up `key`: a `Begin` whose transaction is open rolls it back;
    /// pinned work still waiting for a connection is dropped (`true`).
    pub(super) fn cancel_pinned(&mut self, key: &K) -> bool {
        let waiting = self
            .pinned
            .waiting
            .iter()
            .find(|(_, (k, _))| k == key)
            .map(|(a, _)| *a);
        if let Some(acquire) = waiting {
            self.pinned.waiting.remove(&acquire);
            self.pool.cancel_acquire(self.now, acquire);
            return true;
        }
        if let Some(session) = self.pinned.sessions.get_mut(key) {
            session.cancelled = true;
            return false;
        }
        if let Some(tx) = self.pinned.begins.remove(key) {
            self.end_abandoned(tx);
        }
        false
    }

    /// Rolls back `tx` if it is open: its program ended.
    fn end_abandoned(&mut self, tx: u64) {
        let Some(t) = self.pinned.txs.get_mut(&tx) else {
            return;
        };
        if t.ending {
            return;
        }
        t.ending = true;
        let conn = t.conn;
        let step = Step::Rollback { key: None, tx };
        if !self.send_pinned(conn, step, |pg, now| pg.query(now, "ROLLBACK")) {
            self.close_tx(tx, Release::Broken);
        }
    }

    /// A query on a pinned connection finished.
    pub(super) fn on_pinned_done(
        &mut self,
        conn: ConnId,
        step: Step<K>,
        result: Result<Vec<ResultSet>, PgError>,
    ) {
        match step {
            Step::Begin { key, tx } => {
                let ending = self.pinned.txs.get(&tx).is_none_or(|t| t.ending);
                match result {
                    Ok(_) if !ending => {
                        self.answer_pinned(key, Ok(DatabaseResponse::Begin(Transaction(tx))));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.pinned.begins.remove(&key);
                        self.close_tx(tx, release_after(&e));
                        if !ending {
                            self.answer_pinned(key, Err(e.to_effect_error("Database.Begin")));
                        }
                    }
                }
            }
            Step::Statement { key, effect, rows } => {
                let response = sql::finish_statement(effect, rows, result);
                self.answer_pinned(key, response);
            }
            Step::Commit { key, tx } => {
                let how = self.release_for(conn, &result);
                self.close_tx(tx, how);
                let response = match result {
                    Ok(sets) if sets.last().is_some_and(|s| s.tag == "ROLLBACK") => Err(
                        EffectError::new(
                            "Database.Commit",
                            ErrorKind::Service {
                                code: Some(IN_FAILED_SQL_TRANSACTION.to_owned()),
                            },
                            "a statement of the transaction failed: it was rolled back, not committed",
                        )
                        .with_retryable(false),
                    ),
                    Ok(_) => Ok(DatabaseResponse::Commit(())),
                    Err(e) => Err(e.to_effect_error("Database.Commit")),
                };
                self.answer_pinned(key, response);
            }
            Step::Rollback { key, tx } => {
                let how = self.release_for(conn, &result);
                self.close_tx(tx, how);
                if let Some(key) = key {
                    let response = result
                        .map(|_| DatabaseResponse::Rollback(()))
                        .map_err(|e| e.to_effect_error("Database.Rollback"));
                    self.answer_pinned(key, response);
                }
            }
            Step::BatchBegin { key } => self.note_failure(&key, result.err(), |e| {
                format!("the batch's BEGIN failed: {e}")
            }),
            Step::BatchStatement { key, index } => match result {
                Ok(sets) => {
                    if let Some(s) = self.pinned.sessions.get_mut(&key) {
                        let affected = sets.last().and_then(ResultSet::rows_affected);
                        s.affected.push(affected.unwrap_or(0));
                    }
                }
                Err(e) => {
                    let total = self.pinned.sessions.get(&key).map_or(0, |s| s.total);
                    self.note_failure(&key, Some(e), |e| {
                        format!("statement {} of {total}: {e}", index + 1)
                    });
                }
            },
            Step::MigrationLedger { key } => self.on_ledger(conn, key, result),
            Step::Migration { key, index } => {
                let Some(s) = self.pinned.sessions.get_mut(&key) else {
                    return;
                };
                match result {
                    Ok(_) => {
                        if let Some(m) = s.migrations.get(index) {
                            s.applied.push(m.version);
                        }
                    }
                    Err(e) => {
                        let (version, name) = s
                            .migrations
                            .get(index)
                            .map(|m| (m.version, m.name.clone()))
                            .unwrap_or_default();
                        self.note_failure(&key, Some(e), |e| {
                            format!("migration {version} ({name}): {e}")
                        });
                    }
                }
            }
            Step::SessionEnd { key } => {
                let how = self.release_for(conn, &result);
                let Some(s) = self.pinned.sessions.remove(&key) else {
                    return;
                };
                self.pool.release(self.now, s.acquire, how);
                if s.cancelled {
                    return;
                }
                let rolled_back = match &result {
                    Ok(sets) => sets.last().is_some_and(|s| s.tag == "ROLLBACK"),
                    Err(_) => true,
                };
                let response = match (s.error, result) {
                    (Some(e), _) => Err(e),
                    (None, Err(e)) => Err(e.to_effect_error(s.effect)),
                    (None, Ok(_)) if rolled_back => Err(sql::protocol(
                        s.effect,
                        "the server rolled the transaction back".into(),
                    )),
                    (None, Ok(_)) if s.effect == "Database.Batch" => {
                        Ok(DatabaseResponse::Batch(s.affected))
                    }
                    (None, Ok(_)) => Ok(DatabaseResponse::Migrate(s.applied)),
                };
                self.answer_pinned(key, response);
            }
        }
    }

    /// The ledger answered: send each pending migration, then `COMMIT` (or
    /// `ROLLBACK` if the ledger failed).
    fn on_ledger(&mut self, conn: ConnId, key: K, result: Result<Vec<ResultSet>, PgError>) {
        let applied = match result
            .map_err(|e| e.to_string())
            .and_then(|sets| sql::applied_versions(&sets))
        {
            Ok(applied) => applied,
            Err(e) => {
                if let Some(s) = self.pinned.sessions.get_mut(&key) {
                    s.error = Some(sql::protocol(
                        s.effect,
                        format!("the migrations ledger could not be read: {e}"),
                    ));
                }
                self.send_pinned(conn, Step::SessionEnd { key }, |pg, now| {
                    pg.query(now, "ROLLBACK")
                });
                return;
            }
        };
        let pending: Vec<(usize, String)> = self
            .pinned
            .sessions
            .get(&key)
            .map(|s| {
                s.migrations
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| !applied.contains(&m.version))
                    .map(|(i, m)| (i, sql::migration_step_sql(m)))
                    .collect()
            })
            .unwrap_or_default();
        for (index, text) in pending {
            let step = Step::Migration {
                key: key.clone(),
                index,
            };
            self.send_pinned(conn, step, |pg, now| pg.query(now, &text));
        }
        self.send_pinned(conn, Step::SessionEnd { key }, |pg, now| {
            pg.query(now, "COMMIT")
        });
    }

    /// Records the first failure of a batch or migration.
    fn note_failure(
        &mut self,
        key: &K,
        error: Option<PgError>,
        describe: impl FnOnce(&str) -> String,
    ) {
        let Some(error) = error else {
            return;
        };
        let Some(s) = self.pinned.sessions.get_mut(key) else {
            return;
        };
        if s.error.is_none() {
            let mut e = error.to_effect_error(s.effect);
            e.message = describe(&e.message);
            s.error = Some(e);
        }
    }

    /// Forgets `tx` and returns its connection.
    fn close_tx(&mut self, tx: u64, how: Release) {
        if let Some(t) = self.pinned.txs.remove(&tx) {
            self.pinned.begins.remove(&t.begin);
            self.pool.release(self.now, t.acquire, how);
        }
    }

    /// How to return `conn` after its transaction ended with `result`: clean only if
    /// the server says it is out of any transaction.
    fn release_for(&self, conn: ConnId, result: &Result<Vec<ResultSet>, PgError>) -> Release {
        let idle = self
            .conns
            .get(&conn)
            .and_then(|c| c.pg.as_ref())
            .is_some_and(|pg| pg.transaction_status() == TransactionStatus::Idle);
        match result {
            Err(e) if release_after(e) == Release::Broken => Release::Broken,
            _ if idle => Release::Clean,
            _ => Release::Broken,
        }
    }

    /// `conn` closed: its transactions and sessions are over (their queries already
    /// failed one by one).
    pub(super) fn pinned_conn_closed(&mut self, conn: ConnId) {
        let txs: Vec<u64> = self
            .pinned
            .txs
            .iter()
            .filter(|(_, t)| t.conn == conn)
            .map(|(id, _)| *id)
            .collect();
        for tx in txs {
            self.close_tx(tx, Release::Broken);
        }
        let sessions: Vec<K> = self
            .pinned
            .sessions
            .iter()
            .filter(|(_, s)| s.conn == conn)
            .map(|(k, _)| k.clone())
            .collect();
        for key in sessions {
            if let Some(s) = self.pinned.sessions.remove(&key) {
                self.pool.release(self.now, s.acquire, Release::Broken);
                if !s.cancelled {
                    let error = s.error.unwrap_or_else(|| lost(s.effect));
                    self.answer_pinned(key, Err(error));
                }
            }
        }
    }

    /// Shutting down: pinned work still waiting fails (retryable).
    pub(super) fn close_pinned(&mut self) {
        for (acquire, (key, plan)) in std::mem::take(&mut self.pinned.waiting) {
            self.pool.cancel_acquire(self.now, acquire);
            self.answer_pinned(
                key,
                Err(EffectError::new(
                    plan.effect(),
                    ErrorKind::Unavailable,
                    "the database client is shutting down",
                )),
            );
        }
    }

    /// Sends one query on `conn` for `step`; `false` if the connection is gone or
    /// refused it.
    fn send_pinned(
        &mut self,
        conn: ConnId,
        step: Step<K>,
        query: impl FnOnce(
            &mut crate::postgres::PgConnection,
            crate::Time,
        ) -> Result<crate::postgres::QueryId, PgError>,
    ) -> bool {
        let now = self.now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let Some(pg) = c.pg.as_mut() else {
            return false;
        };
        match query(pg, now) {
            Ok(id) => {
                c.queries.push(id, Role::Pinned(step));
                self.drive(conn);
                true
            }
            Err(_) => false,
        }
    }

    fn answer_pinned(&mut self, key: K, result: Result<DatabaseResponse, EffectError>) {
        self.outputs.push_back(Output::Answer {
            key,
            result: result.map(Reply::Database),
        });
    }
}

fn release_after(e: &PgError) -> Release {
    match e {
        PgError::Db(db) if !db.is_fatal() => Release::Clean,
        _ => Release::Broken,
    }
}

fn lost(effect: &'static str) -> EffectError {
    EffectError::connection_lost(effect, "the PostgreSQL connection closed")
}
