//! The Database contract: the same cases on the fake and on PostgreSQL.

use std::time::Duration;

use effectful::effect::{
    Batch, Begin, Commit, CreateUser, CreateUserOutcome, DeleteOutcome, DeleteUser, Execute,
    FromRow, GetUserById, JoinChat, ListMessagesForUser, ListUsers, Migrate, PostRoomMessage,
    Query, Rollback, RoomHistory, RowError, RowRef, Rows, SaveChatMessage, SharedRoomMessage,
    SqlMigration, SqlValue, Statement, UpdateUser, User, UserLookup, WaitRoomMessages,
};
use effectful::{EffectError, ErrorKind, Fx, ProgramError};
use uuid::Uuid;

use super::ContractProgram;

/// A driver under test for [`check_database`].
pub trait DatabaseDriver {
    /// Runs `program` against a fresh, empty database (the Database family only) and
    /// returns its result. `case` names the case (for a schema name, a log line).
    fn run(&mut self, case: &str, program: ContractProgram) -> Result<Vec<String>, ProgramError>;

    /// Runs `programs` one after another (each once the previous one has ended) on
    /// one fresh, empty database, each with `deadline` as its program deadline, and
    /// returns their results in order.
    fn run_in_turn(
        &mut self,
        case: &str,
        deadline: Duration,
        programs: Vec<ContractProgram>,
    ) -> Vec<Result<Vec<String>, ProgramError>>;
}

/// An error as the contract sees it: kind, code, retryable (not the message, whose
/// wording is the server's).
fn error(e: &EffectError) -> String {
    let kind = match &e.kind {
        ErrorKind::Service { code } => format!("service {}", code.as_deref().unwrap_or("-")),
        other => other.to_string(),
    };
    format!("error {kind} retryable={} effect={}", e.retryable, e.effect)
}

async fn create(fx: &Fx, email: &str) -> Result<User, String> {
    match fx
        .perform(CreateUser {
            email: email.into(),
            name: format!("name of {email}"),
            password_hash: "hash".into(),
        })
        .await
    {
        Ok(CreateUserOutcome::Created(user)) => Ok(user),
        other => Err(format!("create {email}: {other:?}")),
    }
}

fn lookup(found: &Result<UserLookup, EffectError>, expected: Option<&User>) -> String {
    match found {
        Ok(UserLookup::Found(user)) if Some(user) == expected => "found the user".into(),
        Ok(UserLookup::Found(user)) => format!("found {} <{}>", user.name, user.email),
        Ok(UserLookup::NotFound { reason, .. }) => format!("not found: {reason:?}"),
        Err(e) => error(e),
    }
}

fn boxed<F, Fut>(f: F) -> ContractProgram
where
    F: FnOnce(Fx) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<String>, String>> + 'static,
{
    Box::new(move |fx: Fx| {
        Box::pin(async move { f(fx).await.unwrap_or_else(|e| vec![format!("failed: {e}")]) })
    })
}

fn users() -> ContractProgram {
    boxed(|fx| async move {
        let mut seen = Vec::new();
        let a = create(&fx, "a@x.io").await?;
        let b = create(&fx, "b@x.io").await?;
        seen.push(
            match fx
                .perform(CreateUser {
                    email: "a@x.io".into(),
                    name: "again".into(),
                    password_hash: "h".into(),
                })
                .await
            {
                Ok(CreateUserOutcome::EmailTaken { email }) => format!("email taken: {email}"),
                other => format!("{other:?}"),
            },
        );
        // Emails compare exactly, as a plain UNIQUE on text does.
        seen.push(match create(&fx, "A@x.io").await {
            Ok(_) => "A@x.io is another email".into(),
            Err(e) => e,
        });
        seen.push(lookup(
            &fx.perform(GetUserById { user_id: a.id }).await,
            Some(&a),
        ));
        let to_taken = fx
            .perform(UpdateUser {
                user_id: b.id,
                email: Some("a@x.io".into()),
                name: None,
            })
            .await;
        seen.push(lookup(&to_taken, None));
        let renamed = fx
            .perform(UpdateUser {
                user_id: b.id,
                email: Some("b@x.io".into()),
                name: Some("Bee ✓".into()),
            })
            .await;
        seen.push(lookup(&renamed, None));
        let unknown = Uuid::from_u128(0x5eed);
        seen.push(lookup(
            &fx.perform(GetUserById { user_id: unknown }).await,
            None,
        ));
        for _ in 0..2 {
            seen.push(match fx.perform(DeleteUser { user_id: a.id }).await {
                Ok(DeleteOutcome::Deleted) => "deleted".into(),
                Ok(DeleteOutcome::NotFound) => "delete: not found".into(),
                Err(e) => error(&e),
            });
        }
        seen.push(lookup(
            &fx.perform(GetUserById { user_id: a.id }).await,
            None,
        ));
        let update_deleted = fx
            .perform(UpdateUser {
                user_id: a.id,
                email: None,
                name: Some("x".into()),
            })
            .await;
        seen.push(lookup(&update_deleted, None));
        let update_unknown = fx
            .perform(UpdateUser {
                user_id: unknown,
                email: Some("b@x.io".into()),
                name: None,
            })
            .await;
        seen.push(lookup(&update_unknown, None));
        seen.push(match create(&fx, "a@x.io").await {
            Ok(_) => "a deleted user's email is free again".into(),
            Err(e) => e,
        });
        Ok(seen)
    })
}

fn list_users() -> ContractProgram {
    boxed(|fx| async move {
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(create(&fx, &format!("{i}@x.io")).await?.id);
        }
        ids.sort();
        let mut seen = Vec::new();
        for (limit, offset) in [
            (10, 0),
            (2, 1),
            (0, 0),
            (10, 4),
            (10, 5),
            (u32::MAX, u32::MAX),
        ] {
            let page = fx
                .perform(ListUsers { limit, offset })
                .await
                .map_err(|e| error(&e))?;
            let got: Vec<Uuid> = page.iter().map(|u| u.id).collect();
            let start = (offset as usize).min(ids.len());
            let end = start.saturating_add(limit as usize).min(ids.len());
            seen.push(format!(
                "limit {limit} offset {offset}: {} users, ordered by id: {}",
                got.len(),
                got == ids[start..end]
            ));
        }
        Ok(seen)
    })
}

fn messages() -> ContractProgram {
    boxed(|fx| async move {
        let a = create(&fx, "a@x.io").await?;
        let id = Uuid::from_u128(0x99);
        let save = |user_id, text: &str, message_id| {
            fx.perform(SaveChatMessage {
                user_id,
                text: text.into(),
                message_id,
            })
        };
        let mut seen = Vec::new();
        let first = save(a.id, "once ✓", Some(id))
            .await
            .map_err(|e| error(&e))?;
        seen.push(format!(
            "saved under the given id: {}, author kept: {}, text kept: {}",
            first.id == id,
            first.user_id == a.id,
            first.text == "once ✓"
        ));
        seen.push(match save(a.id, "once ✓", Some(id)).await {
            Ok(again) => format!("saved again: the first row: {}", again == first),
            Err(e) => error(&e),
        });
        for (user, text) in [(a.id, "other text"), (Uuid::from_u128(7), "once ✓")] {
            seen.push(match save(user, text, Some(id)).await {
                Ok(m) => format!("reused id saved: {m:?}"),
                Err(e) => error(&e),
            });
        }
        seen.push(match save(Uuid::from_u128(7), "nobody", None).await {
            Ok(m) => format!("saved for nobody: {m:?}"),
            Err(e) => error(&e),
        });
        let fresh = save(a.id, "", None).await.map_err(|e| error(&e))?;
        seen.push(format!(
            "an empty text saved under a new id: {}",
            fresh.id != id && fresh.text.is_empty()
        ));
        fx.perform(DeleteUser { user_id: a.id })
            .await
            .map_err(|e| error(&e))?;
        seen.push(match save(a.id, "late", None).await {
            Ok(m) => format!("saved for a deleted user: {m:?}"),
            Err(e) => error(&e),
        });
        let page = fx
            .perform(ListMessagesForUser::latest(a.id, 10))
            .await
            .map_err(|e| error(&e))?;
        seen.push(format!(
            "a deleted user's messages went with it: {}",
            page.messages.is_empty() && page.next.is_none()
        ));
        Ok(seen)
    })
}

fn paging() -> ContractProgram {
    boxed(|fx| async move {
        let a = create(&fx, "a@x.io").await?;
        let b = create(&fx, "b@x.io").await?;
        for i in 0..23 {
            let author = if i % 4 == 3 { b.id } else { a.id };
            fx.perform(SaveChatMessage {
                user_id: author,
                text: i.to_string(),
                message_id: None,
            })
            .await
            .map_err(|e| error(&e))?;
        }
        let mut seen = Vec::new();
        let mut walked = Vec::new();
        let mut before = None;
        loop {
            let page = fx
                .perform(ListMessagesForUser {
                    user_id: a.id,
                    limit: 7,
                    before,
                })
                .await
                .map_err(|e| error(&e))?;
            let ordered = page
                .messages
                .windows(2)
                .all(|w| w[0].cursor() < w[1].cursor());
            let next_is_first =
                page.next.is_none() || page.next == page.messages.first().map(|m| m.cursor());
            seen.push(format!(
                "page of {}, oldest first: {ordered}, more: {}, next is its oldest: {next_is_first}",
                page.messages.len(),
                page.next.is_some()
            ));
            walked.splice(0..0, page.messages);
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        let mut texts: Vec<u32> = walked
            .iter()
            .map(|m| m.text.parse().unwrap_or(u32::MAX))
            .collect();
        let all_a = walked.iter().all(|m| m.user_id == a.id);
        texts.sort_unstable();
        let expected: Vec<u32> = (0..23).filter(|i| i % 4 != 3).collect();
        seen.push(format!(
            "the walk saw each of the user's messages once: {}, only theirs: {all_a}",
            texts == expected
        ));
        for limit in [0, 1000] {
            let page = fx
                .perform(ListMessagesForUser::latest(a.id, limit))
                .await
                .map_err(|e| error(&e))?;
            seen.push(format!(
                "limit {limit}: {} messages, more: {}",
                page.messages.len(),
                page.next.is_some()
            ));
        }
        let nobody = fx
            .perform(ListMessagesForUser::latest(Uuid::from_u128(3), 10))
            .await
            .map_err(|e| error(&e))?;
        seen.push(format!(
            "a user with no messages: {} messages, more: {}",
            nobody.messages.len(),
            nobody.next.is_some()
        ));
        Ok(seen)
    })
}

fn room_line(messages: &[SharedRoomMessage]) -> String {
    messages
        .iter()
        .map(|m| format!("{}:{}:{}", m.seq, m.name, m.text))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The chat room: joins by name, posts in `seq` order with their errors, history and
/// waits that find messages already there (waiting itself is the drivers' own).
fn room() -> ContractProgram {
    boxed(|fx| async move {
        let mut seen = Vec::new();
        let join = |name: &str| fx.perform(JoinChat { name: name.into() });
        let alice = join("alice").await.map_err(|e| error(&e))?;
        let again = join("alice").await.map_err(|e| error(&e))?;
        let bob = join("Alice").await.map_err(|e| error(&e))?;
        seen.push(format!(
            "a name joins as one user: {}, names compare exactly: {}",
            alice == again,
            bob.id != alice.id
        ));
        let history = fx
            .perform(RoomHistory { limit: 50 })
            .await
            .map_err(|e| error(&e))?;
        seen.push(format!("an empty room: [{}]", room_line(&history)));
        let post = |user_id: Uuid, text: &str, message_id: Option<Uuid>| {
            fx.perform(PostRoomMessage {
                user_id,
                text: text.into(),
                message_id,
            })
        };
        let id = Uuid::from_u128(0x1234);
        let first = post(alice.id, "one", Some(id))
            .await
            .map_err(|e| error(&e))?;
        let repeat = post(alice.id, "one", Some(id))
            .await
            .map_err(|e| error(&e))?;
        seen.push(format!(
            "posted as seq {} under its id: {}, posted again: the same row: {}",
            first.seq,
            first.id == id,
            repeat == first
        ));
        for outcome in [
            post(bob.id, "one", Some(id)).await,
            post(alice.id, "other", Some(id)).await,
            post(Uuid::from_u128(9), "nobody", None).await,
        ] {
            seen.push(match outcome {
                Ok(m) => format!("posted seq {}", m.seq),
                Err(e) => error(&e),
            });
        }
        post(bob.id, "two", None).await.map_err(|e| error(&e))?;
        post(alice.id, "three", None).await.map_err(|e| error(&e))?;
        for limit in [50, 2, 0] {
            let history = fx
                .perform(RoomHistory { limit })
                .await
                .map_err(|e| error(&e))?;
            seen.push(format!("history {limit}: [{}]", room_line(&history)));
        }
        for (after_seq, limit) in [(0, 50), (1, 1), (2, 50)] {
            let found = fx
                .perform(WaitRoomMessages { after_seq, limit })
                .await
                .map_err(|e| error(&e))?;
            seen.push(format!(
                "after {after_seq} (limit {limit}): [{}]",
                room_line(&found)
            ));
        }
        Ok(seen)
    })
}

/// A row of the `points` table, decoded by the program's own type.
#[derive(Debug, PartialEq)]
struct Points {
    user_name: String,
    total: i64,
    note: Option<String>,
}

impl FromRow for Points {
    fn from_row(row: RowRef<'_>) -> Result<Self, RowError> {
        Ok(Points {
            user_name: row.get("user_name")?,
            total: row.get("total")?,
            note: row.get("note")?,
        })
    }
}

const POINTS_TABLE: &str = "CREATE TABLE points (user_name text PRIMARY KEY, \
    total bigint NOT NULL, note text, ratio double precision, ok boolean, \
    id uuid UNIQUE, seen timestamptz)";

const INSERT_POINTS: &str = "INSERT INTO points (user_name, total) VALUES ($1, $2)";

/// The statement that gives `name` a row of `total` points.
fn insert_points(name: &str, total: i64) -> Execute {
    Execute::new(INSERT_POINTS, vec![name.into(), total.into()])
}

fn sql<'a>(fx: &'a Fx, sql: &str, params: Vec<SqlValue>) -> effectful::Perform<'a, Query> {
    fx.perform(Query::new(sql, params))
}

fn exec<'a>(fx: &'a Fx, sql: &str, params: Vec<SqlValue>) -> effectful::Perform<'a, Execute> {
    fx.perform(Execute::new(sql, params))
}

fn totals(rows: &Result<Rows, EffectError>) -> String {
    match rows {
        Ok(rows) => match rows.decode::<Points>() {
            Ok(points) => points
                .iter()
                .map(|p| {
                    format!(
                        "{}={}{}",
                        p.user_name,
                        p.total,
                        p.note
                            .as_deref()
                            .map(|n| format!("({n})"))
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(" "),
            Err(e) => format!("decode: {e}"),
        },
        Err(e) => error(e),
    }
}

async fn all_points(fx: &Fx) -> String {
    totals(
        &sql(
            fx,
            "SELECT user_name, total, note FROM points ORDER BY user_name",
            vec![],
        )
        .await,
    )
}

fn count(result: &Result<u64, EffectError>) -> String {
    match result {
        Ok(n) => format!("{n} rows"),
        Err(e) => error(e),
    }
}

/// Users' own SQL: typed parameters and NULLs, rows decoded by `FromRow`, rows
/// affected, constraint violations as SQLSTATEs.
fn sql_queries() -> ContractProgram {
    boxed(|fx| async move {
        let mut seen = Vec::new();
        seen.push(count(&exec(&fx, POINTS_TABLE, vec![]).await));
        let id = Uuid::from_u128(0xabc);
        let at = effectful::Timestamp::from_unix_micros(1_700_000_000_000_000);
        let insert = "INSERT INTO points (user_name, total, note, ratio, ok, id, seen) \
            VALUES ($1, $2, $3, $4, $5, $6, $7)";
        seen.push(count(
            &exec(
                &fx,
                insert,
                vec![
                    "ada".into(),
                    10i64.into(),
                    SqlValue::Null,
                    0.5f64.into(),
                    true.into(),
                    id.into(),
                    at.into(),
                ],
            )
            .await,
        ));
        seen.push(count(
            &exec(
                &fx,
                "INSERT INTO points (user_name, total, note) VALUES ($1, $2, $3), ($4, $5, $6)",
                vec![
                    "bob".into(),
                    3i64.into(),
                    "new ✓".into(),
                    "cy".into(),
                    7i64.into(),
                    None::<String>.into(),
                ],
            )
            .await,
        ));
        seen.push(all_points(&fx).await);
        let typed = sql(
            &fx,
            "SELECT ratio, ok, id, seen, note FROM points WHERE user_name = $1",
            vec!["ada".into()],
        )
        .await;
        seen.push(match typed {
            Ok(rows) => format!(
                "columns {:?}, values {:?}",
                rows.columns,
                rows.rows.first().map(|r| r
                    == &vec![
                        SqlValue::Float(0.5),
                        SqlValue::Bool(true),
                        SqlValue::Uuid(id),
                        SqlValue::Timestamp(at),
                        SqlValue::Null,
                    ])
            ),
            Err(e) => error(&e),
        });
        seen.push(count(
            &exec(
                &fx,
                "UPDATE points SET total = total + $1 WHERE total >= $2",
                vec![5i64.into(), 7i64.into()],
            )
            .await,
        ));
        seen.push(totals(
            &sql(
                &fx,
                "SELECT user_name, total, note FROM points WHERE note IS NULL ORDER BY total DESC LIMIT $1",
                vec![1i64.into()],
            )
            .await,
        ));
        seen.push(count(
            &exec(
                &fx,
                "DELETE FROM points WHERE user_name = $1",
                vec!["cy".into()],
            )
            .await,
        ));
        // A NULL parameter matches nothing: `= NULL` is unknown, never true.
        seen.push(totals(
            &sql(
                &fx,
                "SELECT user_name, total, note FROM points WHERE note = $1",
                vec![SqlValue::Null],
            )
            .await,
        ));
        seen.push(count(
            &exec(
                &fx,
                insert,
                vec![
                    "ada".into(),
                    1i64.into(),
                    SqlValue::Null,
                    SqlValue::Null,
                    SqlValue::Null,
                    SqlValue::Null,
                    SqlValue::Null,
                ],
            )
            .await,
        ));
        seen.push(count(
            &exec(
                &fx,
                "INSERT INTO points (user_name, total, id) VALUES ($1, $2, $3)",
                vec!["dee".into(), 1i64.into(), id.into()],
            )
            .await,
        ));
        seen.push(count(
            &exec(
                &fx,
                "INSERT INTO points (user_name) VALUES ($1)",
                vec!["eve".into()],
            )
            .await,
        ));
        seen.push(count(
            &exec(&fx, "DELETE FROM nowhere WHERE a = $1", vec![1i64.into()]).await,
        ));
        seen.push(
            match sql(&fx, "SELECT count(*) FROM points", vec![]).await {
                Ok(rows) => format!("count {:?}", rows.row(0).map(|r| r.get::<i64>("count"))),
                Err(e) => error(&e),
            },
        );
        seen.push(match sql(&fx, "BEGIN", vec![]).await {
            Ok(_) => "BEGIN ran as a query".into(),
            Err(e) => format!(
                "{} retryable={}",
                match e.kind {
                    ErrorKind::Protocol => "refused",
                    _ => "other",
                },
                e.retryable
            ),
        });
        Ok(seen)
    })
}

/// A batch is all or nothing, and its error names the statement that failed.
fn sql_batch() -> ContractProgram {
    boxed(|fx| async move {
        let mut seen = Vec::new();
        exec(&fx, POINTS_TABLE, vec![])
            .await
            .map_err(|e| error(&e))?;
        let add = |name: &str, total: i64| {
            let Execute { sql, params, .. } = insert_points(name, total);
            Statement { sql, params }
        };
        let failing = fx
            .perform(Batch {
                statements: vec![add("ada", 1), add("bob", 2), add("ada", 3)],
            })
            .await;
        seen.push(match failing {
            Ok(n) => format!("committed {n:?}"),
            Err(e) => format!(
                "{}, names the statement: {}",
                error(&e),
                e.message.starts_with("statement 3 of 3:")
            ),
        });
        seen.push(format!(
            "after the failed batch: [{}]",
            all_points(&fx).await
        ));
        let ok = fx
            .perform(Batch {
                statements: vec![
                    add("ada", 1),
                    add("bob", 2),
                    Statement::new("UPDATE points SET total = total + $1", vec![10i64.into()]),
                ],
            })
            .await;
        seen.push(match ok {
            Ok(n) => format!("committed, rows affected {n:?}"),
            Err(e) => error(&e),
        });
        seen.push(format!("after: [{}]", all_points(&fx).await));
        Ok(seen)
    })
}

/// Interactive transactions: commit, rollback, and a failed statement that makes the
/// commit fail and roll back.
fn sql_transactions() -> ContractProgram {
    boxed(|fx| async move {
        let mut seen = Vec::new();
        exec(&fx, POINTS_TABLE, vec![])
            .await
            .map_err(|e| error(&e))?;
        let insert = insert_points;
        let tx = fx.perform(Begin {}).await.map_err(|e| error(&e))?;
        seen.push(count(&fx.perform(insert("ada", 1).within(tx)).await));
        seen.push(totals(
            &fx.perform(Query::new("SELECT user_name, total, note FROM points", vec![]).within(tx))
                .await,
        ));
        seen.push(match fx.perform(Commit { tx }).await {
            Ok(()) => "committed".into(),
            Err(e) => error(&e),
        });
        seen.push(format!("after commit: [{}]", all_points(&fx).await));
        seen.push(count(&fx.perform(insert("late", 1).within(tx)).await));

        let tx = fx.perform(Begin {}).await.map_err(|e| error(&e))?;
        seen.push(count(&fx.perform(insert("bob", 2).within(tx)).await));
        seen.push(match fx.perform(Rollback { tx }).await {
            Ok(()) => "rolled back".into(),
            Err(e) => error(&e),
        });
        seen.push(format!("after rollback: [{}]", all_points(&fx).await));

        let tx = fx.perform(Begin {}).await.map_err(|e| error(&e))?;
        seen.push(count(&fx.perform(insert("cy", 3).within(tx)).await));
        seen.push(count(&fx.perform(insert("ada", 4).within(tx)).await));
        seen.push(count(&fx.perform(insert("dee", 5).within(tx)).await));
        seen.push(match fx.perform(Commit { tx }).await {
            Ok(()) => "committed".into(),
            Err(e) => error(&e),
        });
        seen.push(format!(
            "after a failed transaction: [{}]",
            all_points(&fx).await
        ));
        Ok(seen)
    })
}

fn migration(version: i64, name: &str, sql: &str) -> SqlMigration {
    SqlMigration {
        version,
        name: name.into(),
        sql: sql.into(),
    }
}

/// Users' migrations: applied once each, in order, recorded; a failing one leaves
/// nothing of its call behind.
fn sql_migrations() -> ContractProgram {
    boxed(|fx| async move {
        let mut seen = Vec::new();
        let first = vec![
            migration(
                2,
                "seed",
                "INSERT INTO points (user_name, total) VALUES ('ada', 1)",
            ),
            migration(
                1,
                "points",
                "CREATE TABLE points (user_name text PRIMARY KEY, total bigint NOT NULL, note text);",
            ),
        ];
        let migrate = |migrations: Vec<SqlMigration>| fx.perform(Migrate { migrations });
        let show = |r: Result<Vec<i64>, EffectError>| match r {
            Ok(v) => format!("applied {v:?}"),
            Err(e) => format!(
                "{}, names it: {}",
                error(&e),
                e.message.contains("migration 4 (broken)")
            ),
        };
        seen.push(show(migrate(first.clone()).await));
        seen.push(show(migrate(first.clone()).await));
        let mut more = first.clone();
        more.push(migration(3, "bob", "INSERT INTO points (user_name, total) VALUES ('bob', 2); UPDATE points SET total = total + 1"));
        seen.push(show(migrate(more.clone()).await));
        let mut broken = more.clone();
        broken.push(migration(4, "broken", "INSERT INTO points (user_name, total) VALUES ('cy', 3); INSERT INTO points (user_name, total) VALUES ('ada', 9)"));
        broken.push(migration(
            5,
            "never",
            "INSERT INTO points (user_name, total) VALUES ('dee', 4)",
        ));
        seen.push(show(migrate(broken).await));
        seen.push(format!("points: [{}]", all_points(&fx).await));
        seen.push(
            match sql(
                &fx,
                "SELECT version, name FROM effectful_user_migrations ORDER BY version",
                vec![],
            )
            .await
            {
                Ok(rows) => rows
                    .iter()
                    .map(|r| {
                        format!(
                            "{}:{}",
                            r.get::<i64>("version").unwrap_or(-1),
                            r.get::<String>("name").unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                Err(e) => error(&e),
            },
        );
        Ok(seen)
    })
}

/// The SQL cases: their names, programs and observations.
pub fn sql_cases() -> Vec<(&'static str, ContractProgram, Vec<&'static str>)> {
    vec![
        (
            "sql_queries",
            sql_queries(),
            vec![
                "0 rows",
                "1 rows",
                "2 rows",
                "ada=10 bob=3(new ✓) cy=7",
                "columns [\"ratio\", \"ok\", \"id\", \"seen\", \"note\"], values Some(true)",
                "2 rows",
                "ada=15",
                "1 rows",
                "",
                "error service 23505 retryable=false effect=Database.Execute",
                "error service 23505 retryable=false effect=Database.Execute",
                "error service 23502 retryable=false effect=Database.Execute",
                "error service 42P01 retryable=false effect=Database.Execute",
                "count Some(Ok(2))",
                "refused retryable=false",
            ],
        ),
        (
            "sql_batch",
            sql_batch(),
            vec![
                "error service 23505 retryable=false effect=Database.Batch, names the statement: true",
                "after the failed batch: []",
                "committed, rows affected [1, 1, 2]",
                "after: [ada=11 bob=12]",
            ],
        ),
        (
            "sql_transactions",
            sql_transactions(),
            vec![
                "1 rows",
                "ada=1",
                "committed",
                "after commit: [ada=1]",
                "error service 25P02 retryable=false effect=Database.Execute",
                "1 rows",
                "rolled back",
                "after rollback: [ada=1]",
                "1 rows",
                "error service 23505 retryable=false effect=Database.Execute",
                "error service 25P02 retryable=false effect=Database.Execute",
                "error service 25P02 retryable=false effect=Database.Commit",
                "after a failed transaction: [ada=1]",
            ],
        ),
        (
            "sql_migrations",
            sql_migrations(),
            vec![
                "applied [1, 2]",
                "applied []",
                "applied [3]",
                "error service 23505 retryable=false effect=Database.Migrate, names it: true",
                "points: [ada=2 bob=3]",
                "1:points 2:seed 3:bob",
            ],
        ),
    ]
}

/// A program that ends inside a transaction (returning, or cancelled at its
/// deadline) leaves nothing, and the next program can write the same rows.
pub fn abandoned_transaction_programs() -> (Vec<ContractProgram>, Vec<&'static str>) {
    let setup = boxed(|fx| async move {
        exec(&fx, POINTS_TABLE, vec![])
            .await
            .map_err(|e| error(&e))?;
        Ok(vec!["created".into()])
    });
    let insert = |name: &'static str| insert_points(name, 1);
    let returns = boxed(move |fx| async move {
        let tx = fx.perform(Begin {}).await.map_err(|e| error(&e))?;
        let n = fx
            .perform(insert("ada").within(tx))
            .await
            .map_err(|e| error(&e))?;
        Ok(vec![format!("inserted {n}, returning without a commit")])
    });
    let cancelled = boxed(move |fx| async move {
        let tx = fx.perform(Begin {}).await.map_err(|e| error(&e))?;
        fx.perform(insert("bob").within(tx))
            .await
            .map_err(|e| error(&e))?;
        fx.sleep(Duration::from_secs(3600)).await;
        Ok(vec!["outlived its deadline".into()])
    });
    let check = boxed(move |fx| async move {
        let mut seen = vec![format!("left behind: [{}]", all_points(&fx).await)];
        for name in ["ada", "bob"] {
            seen.push(count(&fx.perform(insert(name)).await));
        }
        Ok(seen)
    });
    (
        vec![setup, returns, cancelled, check],
        vec![
            "created",
            "inserted 1, returning without a commit",
            "deadline exceeded",
            "left behind: []",
            "1 rows",
            "1 rows",
        ],
    )
}

/// Flattens the results of [`DatabaseDriver::run_in_turn`] for comparison.
fn flatten(results: Vec<Result<Vec<String>, ProgramError>>) -> Vec<String> {
    results
        .into_iter()
        .flat_map(|r| match r {
            Ok(seen) => seen,
            Err(ProgramError::DeadlineExceeded { .. }) => vec!["deadline exceeded".into()],
            Err(e) => vec![format!("program failed: {e}")],
        })
        .collect()
}

/// Every case: its name, its program, what it must observe.
pub fn database_cases() -> Vec<(&'static str, ContractProgram, Vec<&'static str>)> {
    let not_retryable = |code: &'static str, effect: &'static str| -> &'static str {
        match (code, effect) {
            ("23505", "UpdateUser") => {
                "error service 23505 retryable=false effect=Database.UpdateUser"
            }
            ("23505", "SaveChatMessage") => {
                "error service 23505 retryable=false effect=Database.SaveChatMessage"
            }
            ("23505", "PostRoomMessage") => {
                "error service 23505 retryable=false effect=Database.PostRoomMessage"
            }
            ("23503", "PostRoomMessage") => {
                "error service 23503 retryable=false effect=Database.PostRoomMessage"
            }
            _ => "error service 23503 retryable=false effect=Database.SaveChatMessage",
        }
    };
    vec![
        (
            "users",
            users(),
            vec![
                "email taken: a@x.io",
                "A@x.io is another email",
                "found the user",
                not_retryable("23505", "UpdateUser"),
                "found Bee ✓ <b@x.io>",
                "not found: DoesNotExist",
                "deleted",
                "delete: not found",
                "not found: Deleted",
                "not found: Deleted",
                "not found: DoesNotExist",
                "a deleted user's email is free again",
            ],
        ),
        (
            "list_users",
            list_users(),
            vec![
                "limit 10 offset 0: 5 users, ordered by id: true",
                "limit 2 offset 1: 2 users, ordered by id: true",
                "limit 0 offset 0: 0 users, ordered by id: true",
                "limit 10 offset 4: 1 users, ordered by id: true",
                "limit 10 offset 5: 0 users, ordered by id: true",
                "limit 4294967295 offset 4294967295: 0 users, ordered by id: true",
            ],
        ),
        (
            "messages",
            messages(),
            vec![
                "saved under the given id: true, author kept: true, text kept: true",
                "saved again: the first row: true",
                not_retryable("23505", "SaveChatMessage"),
                not_retryable("23505", "SaveChatMessage"),
                not_retryable("23503", "SaveChatMessage"),
                "an empty text saved under a new id: true",
                not_retryable("23503", "SaveChatMessage"),
                "a deleted user's messages went with it: true",
            ],
        ),
        (
            "paging",
            paging(),
            vec![
                "page of 7, oldest first: true, more: true, next is its oldest: true",
                "page of 7, oldest first: true, more: true, next is its oldest: true",
                "page of 4, oldest first: true, more: false, next is its oldest: true",
                "the walk saw each of the user's messages once: true, only theirs: true",
                "limit 0: 1 messages, more: true",
                "limit 1000: 18 messages, more: false",
                "a user with no messages: 0 messages, more: false",
            ],
        ),
        (
            "room",
            room(),
            vec![
                "a name joins as one user: true, names compare exactly: true",
                "an empty room: []",
                "posted as seq 1 under its id: true, posted again: the same row: true",
                not_retryable("23505", "PostRoomMessage"),
                not_retryable("23505", "PostRoomMessage"),
                not_retryable("23503", "PostRoomMessage"),
                "history 50: [1:alice:one 2:Alice:two 3:alice:three]",
                "history 2: [2:Alice:two 3:alice:three]",
                "history 0: [3:alice:three]",
                "after 0 (limit 50): [1:alice:one 2:Alice:two 3:alice:three]",
                "after 1 (limit 1): [2:Alice:two]",
                "after 2 (limit 50): [3:alice:three]",
            ],
        ),
    ]
}

/// Runs every case of the Database contract on `driver`; panics with the first case
/// whose observations differ, naming it.
pub fn check_database(driver: &mut impl DatabaseDriver) {
    for (name, program, expected) in database_cases().into_iter().chain(sql_cases()) {
        let seen = driver
            .run(name, program)
            .unwrap_or_else(|e| panic!("case {name}: the program failed: {e}"));
        assert_eq!(seen, expected, "case {name}: the observations differ");
    }
    let (programs, expected) = abandoned_transaction_programs();
    let seen = flatten(driver.run_in_turn("sql_abandoned", ABANDONED_DEADLINE, programs));
    assert_eq!(
        seen, expected,
        "case sql_abandoned: the observations differ"
    );
}

/// The program deadline of the abandoned-transaction case.
pub const ABANDONED_DEADLINE: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;
    use effectful::effect::{Request, Response};
    use effectful::memory::{Handled, Services};
    use effectful::{EngineConfig, Time, run_async};

    /// The fake, answering each effect at once in virtual time.
    struct Fake;

    /// Runs `program` on `services` with `config`, then rolls back what it left open
    /// (as a driver does when a program ends).
    fn run_on(
        services: &mut Services,
        config: EngineConfig,
        program: ContractProgram,
    ) -> Result<Vec<String>, ProgramError> {
        let result = {
            let mut handler = |request: Request| -> Result<Response, EffectError> {
                match services.handle(Time::ZERO, request) {
                    Handled::Done(result) => result,
                    // The cases wait only where messages are already there.
                    Handled::WaitRoom(wait) => Ok(Response::Database(
                        effectful::effect::DatabaseResponse::WaitRoomMessages(
                            services
                                .database
                                .room_after(wait.after_seq, wait.limit)
                                .to_vec(),
                        ),
                    )),
                    _ => Err(EffectError::unhandled("contract", vec!["Database".into()])),
                }
            };
            run_async(program, config, &mut handler)
        };
        for tx in services.database.open_transactions() {
            services.database.end_transaction(tx);
        }
        result
    }

    impl DatabaseDriver for Fake {
        fn run(
            &mut self,
            _case: &str,
            program: ContractProgram,
        ) -> Result<Vec<String>, ProgramError> {
            run_on(&mut Services::new(11), EngineConfig::default(), program)
        }

        fn run_in_turn(
            &mut self,
            _case: &str,
            deadline: Duration,
            programs: Vec<ContractProgram>,
        ) -> Vec<Result<Vec<String>, ProgramError>> {
            let mut services = Services::new(11);
            let config = EngineConfig {
                program_timeout: Some(deadline),
                ..EngineConfig::default()
            };
            programs
                .into_iter()
                .map(|p| run_on(&mut services, config.clone(), p))
                .collect()
        }
    }

    #[test]
    fn the_fake_database_keeps_the_database_contract() {
        check_database(&mut Fake);
    }
}
