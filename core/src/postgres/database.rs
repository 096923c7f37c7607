//! The Database family on PostgreSQL, sans IO: each [`DatabaseRequest`] becomes one
//! statement with binary parameters ([`DatabasePlan`]), and that statement's result
//! becomes the [`DatabaseResponse`] the in-memory `FakeDatabase` would give, with the
//! same domain outcomes and the same errors.
//!
//! # Tables
//! [`MIGRATIONS`] creates them (idempotent, each applied once and recorded in
//! `effectful_migrations`; [`migration_sql`] is the one simple query a driver runs on
//! its first connection):
//!
//! ```sql
//! users         (id uuid PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL,
//!                password_hash text NOT NULL, created_at timestamptz NOT NULL)
//! deleted_users (id uuid PRIMARY KEY, deleted_at timestamptz NOT NULL)
//! chat_messages (id uuid PRIMARY KEY, user_id uuid NOT NULL REFERENCES users ON DELETE CASCADE,
//!                text text NOT NULL, created_at timestamptz NOT NULL)
//! ```
//! and, for the chat room (migration 2):
//! ```sql
//! chat_users         (id uuid PRIMARY KEY, name text NOT NULL UNIQUE, created_at timestamptz)
//! chat_room_messages (seq bigint PRIMARY KEY, id uuid NOT NULL UNIQUE,
//!                     user_id uuid NOT NULL REFERENCES chat_users ON DELETE CASCADE,
//!                     text text NOT NULL, created_at timestamptz NOT NULL)
//! effectful_join_chat(name)               -- insert or find, whatever the race
//! effectful_post_room_message(user, text, id)  -- under an advisory lock until
//!                                              -- commit: seq order is commit order;
//!                                              -- NOTIFY effectful_chat_room
//! ```
//! Since migration 5 the notification carries the stored message ([`room_notice`]
//! reads it).
//! `deleted_users` remembers deleted ids, so a lookup tells
//! [`NotFoundReason::Deleted`] from [`NotFoundReason::DoesNotExist`].
//!
//! # Semantics (the same as the fake's)
//! - `CreateUser` with a taken email answers [`CreateUserOutcome::EmailTaken`] (the
//!   unique violation 23505 on `users_email_key`); ids come from `gen_random_uuid()`.
//! - `UpdateUser` to a taken email fails with `Service { code: "23505" }`, not
//!   retryable; on a missing user it answers `NotFound` with its reason.
//! - `DeleteUser` deletes the user's messages too and records the id.
//! - `SaveChatMessage` with a `message_id` is idempotent (`ON CONFLICT (id) DO
//!   NOTHING`, then the stored row); the same id with another author or text fails
//!   with 23505; a missing author fails with 23503.
//! - `ListMessagesForUser` pages back by keyset as its docs say.
//! - `JoinChat` finds or creates the chat user of that exact name; concurrent first
//!   joins make one user. `PostRoomMessage` is idempotent on its id (another author
//!   or text under it fails with 23505, an unknown author with 23503).
//!   `RoomHistory` and `WaitRoomMessages` read by `seq`; an empty
//!   `WaitRoomMessages` answer is not sent: [`PgService`](super::PgService) parks
//!   the wait until the room's channel notifies.
//!
//! # Adding an effect
//! One arm in [`plan`] (the SQL and its parameters, and a [`Decode`] variant carrying
//! what the answer needs from the request), one arm in [`DatabasePlan::finish`] that
//! reads the rows, and, for a new table, one more entry in [`MIGRATIONS`] (never edit
//! an applied one: add the next version).
//!
//! ```
//! use effectful::effect::{DatabaseRequest, GetUserById};
//! use effectful::postgres::database;
//! use uuid::Uuid;
//!
//! let plan = database::plan(&DatabaseRequest::GetUserById(GetUserById { user_id: Uuid::nil() }));
//! assert_eq!(plan.effect(), "Database.GetUserById");
//! assert!(plan.sql().contains("deleted_users"));
//! assert_eq!(plan.params().len(), 1);
//! ```

use uuid::Uuid;

use super::error::{PgError, TypeError};
use super::row::{ResultSet, Row};
use super::value::Value;
use crate::effect::sqlstate::UNIQUE_VIOLATION;
use crate::effect::{
    ChatMessage, ChatUser, CreateUserOutcome, DatabaseRequest, DatabaseResponse, DeleteOutcome,
    MessagePage, NotFoundReason, RoomMessage, SharedRoomMessage, User, UserLookup, room_page_size,
};
use crate::{EffectError, ErrorKind};

/// One schema migration: applied once, in version order, recorded by version.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// Its place in the order; never reused.
    pub version: i32,
    /// What it does, recorded beside the version.
    pub name: &'static str,
    /// The statements (run inside a PL/pgSQL block, so no transaction control).
    pub sql: &'static str,
}

/// The tables of the Database family, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
    version: 1,
    name: "users, deleted_users, chat_messages",
    sql: "CREATE TABLE IF NOT EXISTS users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL,
    name text NOT NULL,
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email)
);
CREATE TABLE IF NOT EXISTS deleted_users (
    id uuid PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS chat_messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    text text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chat_messages_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS chat_messages_history ON chat_messages (user_id, created_at DESC, id DESC);",
    },
    Migration {
        version: 2,
        name: "chat room: chat_users, chat_room_messages, join and post functions",
        sql: "CREATE TABLE IF NOT EXISTS chat_users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chat_users_name_key UNIQUE (name)
);
CREATE TABLE IF NOT EXISTS chat_room_messages (
    seq bigint PRIMARY KEY,
    id uuid NOT NULL,
    user_id uuid NOT NULL,
    text text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chat_room_messages_id_key UNIQUE (id),
    CONSTRAINT chat_room_messages_user_id_fkey FOREIGN KEY (user_id) REFERENCES chat_users (id) ON DELETE CASCADE
);
CREATE OR REPLACE FUNCTION effectful_join_chat(p_name text)
RETURNS TABLE (id uuid, name text)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
BEGIN
    LOOP
        -- Each statement sees what committed before it: a join that lost the race
        -- to insert finds the winner's row on the next try.
        RETURN QUERY INSERT INTO chat_users AS u (name) VALUES (p_name)
            ON CONFLICT (name) DO NOTHING RETURNING u.id, u.name;
        IF FOUND THEN RETURN; END IF;
        RETURN QUERY SELECT u.id, u.name FROM chat_users u WHERE u.name = p_name;
        IF FOUND THEN RETURN; END IF;
    END LOOP;
END
$fn$;
CREATE OR REPLACE FUNCTION effectful_post_room_message(p_user uuid, p_text text, p_id uuid)
RETURNS TABLE (seq bigint, id uuid, user_id uuid, name text, text text, created_at timestamptz)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    stored chat_room_messages%ROWTYPE;
BEGIN
    -- One poster at a time until commit: seq order is commit order, so a reader
    -- that has seen seq n and asks for seq > n never misses a later commit.
    PERFORM pg_advisory_xact_lock(7306916140405421670);
    SELECT * INTO stored FROM chat_room_messages m WHERE m.id = p_id;
    IF FOUND THEN
        IF stored.user_id <> p_user OR stored.text <> p_text THEN
            RAISE unique_violation USING
                MESSAGE = format('duplicate key value violates unique constraint \"chat_room_messages_id_key\": Key (id)=(%s) already exists.', p_id),
                CONSTRAINT = 'chat_room_messages_id_key';
        END IF;
    ELSE
        INSERT INTO chat_room_messages AS m (seq, id, user_id, text)
        VALUES ((SELECT COALESCE(max(c.seq), 0) + 1 FROM chat_room_messages c),
                COALESCE(p_id, gen_random_uuid()), p_user, p_text)
        RETURNING * INTO stored;
        PERFORM pg_notify('effectful_chat_room', stored.seq::text);
    END IF;
    RETURN QUERY SELECT stored.seq, stored.id, stored.user_id, u.name, stored.text, stored.created_at
        FROM chat_users u WHERE u.id = stored.user_id;
END
$fn$;",
    },
    Migration {
        version: 3,
        name: "storage: effectful_objects, effectful_object_versions",
        sql: super::storage::MIGRATION_SQL,
    },
    // Rooms in different schemas of one database were one room to LISTEN/NOTIFY and
    // to the posters' lock: each schema's room now has a channel and a lock of its own.
    Migration {
        version: 4,
        name: "chat room: a channel and a post lock per schema",
        sql: "CREATE OR REPLACE FUNCTION effectful_room_channel() RETURNS text
LANGUAGE sql STABLE AS $fn$
    SELECT 'effectful_chat_room_' || left(md5(current_schema()), 16)
$fn$;
CREATE OR REPLACE FUNCTION effectful_listen_room() RETURNS text
LANGUAGE plpgsql AS $fn$
DECLARE
    channel text := effectful_room_channel();
BEGIN
    EXECUTE format('LISTEN %I', channel);
    RETURN channel;
END
$fn$;
CREATE OR REPLACE FUNCTION effectful_post_room_message(p_user uuid, p_text text, p_id uuid)
RETURNS TABLE (seq bigint, id uuid, user_id uuid, name text, text text, created_at timestamptz)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    stored chat_room_messages%ROWTYPE;
BEGIN
    -- One poster per room (schema) at a time until commit: seq order is commit
    -- order, so a reader that has seen seq n and asks for seq > n never misses a
    -- later commit.
    PERFORM pg_advisory_xact_lock(730691614, hashtext(current_schema()));
    SELECT * INTO stored FROM chat_room_messages m WHERE m.id = p_id;
    IF FOUND THEN
        IF stored.user_id <> p_user OR stored.text <> p_text THEN
            RAISE unique_violation USING
                MESSAGE = format('duplicate key value violates unique constraint \"chat_room_messages_id_key\": Key (id)=(%s) already exists.', p_id),
                CONSTRAINT = 'chat_room_messages_id_key';
        END IF;
    ELSE
        INSERT INTO chat_room_messages AS m (seq, id, user_id, text)
        VALUES ((SELECT COALESCE(max(c.seq), 0) + 1 FROM chat_room_messages c),
                COALESCE(p_id, gen_random_uuid()), p_user, p_text)
        RETURNING * INTO stored;
        PERFORM pg_notify(effectful_room_channel(), stored.seq::text);
    END IF;
    RETURN QUERY SELECT stored.seq, stored.id, stored.user_id, u.name, stored.text, stored.created_at
        FROM chat_users u WHERE u.id = stored.user_id;
END
$fn$;",
    },
    // A post's notification carries the stored message (see `room_notice`), so that
    // listeners of this process deliver it without reading the room again.
    Migration {
        version: 5,
        name: "chat room: a post's notification carries its message",
        sql: "CREATE OR REPLACE FUNCTION effectful_post_room_message(p_user uuid, p_text text, p_id uuid)
RETURNS TABLE (seq bigint, id uuid, user_id uuid, name text, text text, created_at timestamptz)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    stored chat_room_messages%ROWTYPE;
    author chat_users.name%TYPE;
    payload varchar;
BEGIN
    -- One poster per room (schema) at a time until commit: seq order is commit
    -- order, so a reader that has seen seq n and asks for seq > n never misses a
    -- later commit, and notifications come in seq order.
    PERFORM pg_advisory_xact_lock(730691614, hashtext(current_schema()));
    SELECT * INTO stored FROM chat_room_messages m WHERE m.id = p_id;
    IF FOUND THEN
        IF stored.user_id <> p_user OR stored.text <> p_text THEN
            RAISE unique_violation USING
                MESSAGE = format('duplicate key value violates unique constraint \"chat_room_messages_id_key\": Key (id)=(%s) already exists.', p_id),
                CONSTRAINT = 'chat_room_messages_id_key';
        END IF;
    ELSE
        INSERT INTO chat_room_messages AS m (seq, id, user_id, text)
        VALUES ((SELECT COALESCE(max(c.seq), 0) + 1 FROM chat_room_messages c),
                COALESCE(p_id, gen_random_uuid()), p_user, p_text)
        RETURNING * INTO stored;
        SELECT u.name INTO author FROM chat_users u WHERE u.id = stored.user_id;
        -- seq, id, author's id, created_at in microseconds since 1970, the name's
        -- length in characters, then the name and the text; just the seq if that
        -- would not fit in a notification (under 8000 bytes).
        payload := concat_ws(' ', stored.seq, stored.id, stored.user_id,
            (extract(epoch FROM stored.created_at) * 1000000)::bigint,
            char_length(author)) || ' ' || author || stored.text;
        -- (In UTF-8 databases only: elsewhere char_length may count bytes, and a
        -- text need not be valid UTF-8.)
        IF payload IS NULL OR octet_length(payload) >= 8000
                OR getdatabaseencoding() <> 'UTF8' THEN
            payload := stored.seq::text;
        END IF;
        PERFORM pg_notify(effectful_room_channel(), payload);
    END IF;
    RETURN QUERY SELECT stored.seq, stored.id, stored.user_id, u.name, stored.text, stored.created_at
        FROM chat_users u WHERE u.id = stored.user_id;
END
$fn$;",
    },
];

/// What a notification on the room's channel says, read from its payload.
#[derive(Clone, Debug, PartialEq)]
pub enum RoomNotice {
    /// The stored message itself (what `effectful_post_room_message` sends since
    /// migration 5, when it fits in a notification).
    Message(RoomMessage),
    /// Only the message's `seq` (a text too long to carry, or an older server).
    Seq(u64),
    /// Anything else: something changed, no more is known.
    Unknown,
}

/// Reads a room notification's payload: `seq`, the message's id, its author's id, its
/// `created_at` in microseconds since 1970, the name's length in characters, one
/// space, then the name and the text with nothing between them; or `seq` alone.
/// Anyone may `NOTIFY` on the channel: what this reads is to be trusted only as far
/// as its sender is (see [`OwnBackends`](super::OwnBackends)).
pub fn room_notice(payload: &str) -> RoomNotice {
    fn message(payload: &str) -> Option<RoomMessage> {
        let mut fields = payload.splitn(6, ' ');
        let seq = fields.next()?.parse::<u64>().ok().filter(|s| *s > 0)?;
        let id = Uuid::try_parse(fields.next()?).ok()?;
        let user_id = Uuid::try_parse(fields.next()?).ok()?;
        let micros = fields.next()?.parse::<i64>().ok()?;
        let name_chars = fields.next()?.parse::<usize>().ok()?;
        let rest = fields.next()?;
        // Where the name's characters end: a character's start, or the very end.
        let split = rest
            .char_indices()
            .map(|(at, _)| at)
            .chain([rest.len()])
            .nth(name_chars)?;
        let (name, text) = rest.split_at(split);
        Some(RoomMessage {
            seq,
            id,
            user_id,
            name: name.to_owned(),
            text: text.to_owned(),
            created_at: crate::Timestamp::from_unix_micros(micros),
        })
    }
    if let Some(m) = message(payload) {
        return RoomNotice::Message(m);
    }
    match payload.parse::<u64>() {
        Ok(seq) if seq > 0 => RoomNotice::Seq(seq),
        _ => RoomNotice::Unknown,
    }
}

/// The first half of the advisory-lock key (`pg_advisory_xact_lock(MIGRATION_LOCK,
/// hashtext(current_schema()))`) that serialises the migrations of one schema across
/// processes. The second half is the schema's, so services in different schemas of one
/// database migrate independently: one slow or stuck migration never holds up
/// another schema's start.
pub const MIGRATION_LOCK: i32 = 0x6566_6d67; // "efmg"

/// The one simple query that applies `migrations` not yet recorded, in one
/// transaction under the schema's advisory lock (so two processes starting together
/// apply each once). Idempotent: running it again changes nothing.
pub fn migration_sql(migrations: &[Migration]) -> String {
    let mut sql = format!(
        "BEGIN;\nSELECT pg_advisory_xact_lock({MIGRATION_LOCK}, hashtext(current_schema()));\n\
         CREATE TABLE IF NOT EXISTS effectful_migrations (\n    version int PRIMARY KEY,\n    \
         name text NOT NULL,\n    applied_at timestamptz NOT NULL DEFAULT now()\n);\n"
    );
    for m in migrations {
        let name = m.name.replace('\'', "''");
        sql.push_str(&format!(
            "DO $effectful$ BEGIN\nIF NOT EXISTS (SELECT 1 FROM effectful_migrations WHERE version = {v}) THEN\n{body}\n\
             INSERT INTO effectful_migrations (version, name) VALUES ({v}, '{name}');\nEND IF;\nEND $effectful$;\n",
            v = m.version,
            body = m.sql,
        ));
    }
    sql.push_str("COMMIT;");
    sql
}

/// How to read a statement's result back into a response, with what the request
/// said that the answer needs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Decode {
    /// A `users` row (or none) and whether the id is in `deleted_users`.
    Lookup {
        /// The id looked up.
        user_id: Uuid,
        /// `UpdateUser` rather than `GetUserById`.
        update: bool,
    },
    /// `users` rows.
    Users,
    /// The created user, or the email that is taken.
    Created {
        /// The email asked for.
        email: String,
    },
    /// The count of deleted rows.
    Deleted,
    /// The stored message, checked against the request when the id was given.
    Saved {
        /// The author asked for.
        user_id: Uuid,
        /// The text asked for.
        text: String,
        /// The id asked for, if any.
        message_id: Option<Uuid>,
    },
    /// Messages newest first, one more than the page holds.
    Page {
        /// The page size.
        size: usize,
    },
    /// The chat user found or created.
    ChatUser,
    /// The room message posted (or found again under its id).
    Posted,
    /// The room's newest messages, newest first.
    RoomHistory,
    /// The room's messages after a `seq`, oldest first; none means the service waits
    /// for the next post (see [`Decode::room_wait`]).
    RoomAfter {
        /// The `seq` asked after.
        after_seq: u64,
        /// The page size asked for.
        limit: u32,
    },
    /// Users' own SQL: planned by [`super::sql::SqlPlan`], never here.
    NotPlannedHere,
}

impl Decode {
    /// For `WaitRoomMessages`, what it waits after (`seq` and page size): an empty
    /// answer then means "wait for the next post", not "answer nothing".
    pub fn room_wait(&self) -> Option<(u64, u32)> {
        match self {
            Decode::RoomAfter { after_seq, limit } => Some((*after_seq, *limit)),
            _ => None,
        }
    }
}

/// One request as a statement: SQL, binary parameters, and how to read the answer.
#[derive(Clone, Debug)]
pub struct DatabasePlan {
    effect: &'static str,
    sql: &'static str,
    params: Params,
    decode: Decode,
}

/// The most parameters a Database statement binds.
const MAX_PARAMS: usize = 4;

/// A plan's parameters, kept inline: a plan allocates nothing for them.
#[derive(Clone, Debug)]
struct Params {
    len: usize,
    values: [Value; MAX_PARAMS],
}

impl Params {
    /// `values`, in order (at most [`MAX_PARAMS`], checked when compiled).
    fn of<const N: usize>(values: [Value; N]) -> Params {
        const { assert!(N <= MAX_PARAMS) };
        let mut given = values.into_iter();
        Params {
            len: N,
            values: std::array::from_fn(|_| given.next().unwrap_or(Value::Null)),
        }
    }

    fn as_slice(&self) -> &[Value] {
        &self.values[..self.len]
    }
}

const USER_LOOKUP: &str = "SELECT u.id, u.email, u.name, \
    EXISTS (SELECT 1 FROM deleted_users d WHERE d.id = $1) AS deleted \
    FROM (SELECT 1) AS one LEFT JOIN users u ON u.id = $1";

const UPDATE_USER: &str = "WITH u AS (UPDATE users SET email = COALESCE($2::text, email), \
    name = COALESCE($3::text, name) WHERE id = $1 RETURNING id, email, name) \
    SELECT u.id, u.email, u.name, \
    EXISTS (SELECT 1 FROM deleted_users d WHERE d.id = $1) AS deleted \
    FROM (SELECT 1) AS one LEFT JOIN u ON true";

const LIST_USERS: &str = "SELECT id, email, name FROM users ORDER BY id LIMIT $1 OFFSET $2";

const CREATE_USER: &str =
    "INSERT INTO users (email, name, password_hash) VALUES ($1, $2, $3) RETURNING id, email, name";

const DELETE_USER: &str = "WITH d AS (DELETE FROM users WHERE id = $1 RETURNING id), \
    r AS (INSERT INTO deleted_users (id) SELECT id FROM d ON CONFLICT (id) DO NOTHING) \
    SELECT count(*) FROM d";

const SAVE_MESSAGE: &str = "INSERT INTO chat_messages (user_id, text) VALUES ($1, $2) \
    RETURNING id, user_id, text, created_at";

/// The inserted row, or the row already stored under the id (the statement's
/// snapshot does not see its own insert, so exactly one branch gives a row).
const SAVE_MESSAGE_WITH_ID: &str = "WITH ins AS (INSERT INTO chat_messages (id, user_id, text) \
    VALUES ($3, $1, $2) ON CONFLICT (id) DO NOTHING RETURNING id, user_id, text, created_at) \
    SELECT id, user_id, text, created_at FROM ins \
    UNION ALL SELECT id, user_id, text, created_at FROM chat_messages \
    WHERE id = $3 AND NOT EXISTS (SELECT 1 FROM ins)";

const LATEST_MESSAGES: &str = "SELECT id, user_id, text, created_at FROM chat_messages \
    WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2";

const MESSAGES_BEFORE: &str = "SELECT id, user_id, text, created_at FROM chat_messages \
    WHERE user_id = $1 AND (created_at, id) < ($3, $4) \
    ORDER BY created_at DESC, id DESC LIMIT $2";

const JOIN_CHAT: &str = "SELECT id, name FROM effectful_join_chat($1)";

const POST_ROOM_MESSAGE: &str = "SELECT seq, id, user_id, name, text, created_at \
    FROM effectful_post_room_message($1, $2, $3)";

const ROOM_HISTORY: &str = "SELECT m.seq, m.id, m.user_id, u.name, m.text, m.created_at \
    FROM chat_room_messages m JOIN chat_users u ON u.id = m.user_id \
    ORDER BY m.seq DESC LIMIT $1";

const ROOM_AFTER: &str = "SELECT m.seq, m.id, m.user_id, u.name, m.text, m.created_at \
    FROM chat_room_messages m JOIN chat_users u ON u.id = m.user_id \
    WHERE m.seq > $1 ORDER BY m.seq LIMIT $2";

/// What [`plan`] gives for users' own SQL, which [`super::sql::SqlPlan`] plans: a
/// statement the server refuses.
const NOT_PLANNED_HERE: &str =
    "SELECT 'users'' own SQL is planned by effectful::postgres::sql::SqlPlan'::int";

/// The one result set an extended query gives, or a protocol error saying how many
/// the server sent instead.
pub(super) fn one_result(
    effect: &'static str,
    mut sets: Vec<ResultSet>,
) -> Result<ResultSet, EffectError> {
    match sets.len() {
        1 => Ok(sets.remove(0)),
        n => Err(protocol(
            effect,
            format!("expected one result, the server sent {n}"),
        )),
    }
}

/// The start of the channel a room post notifies (in its transaction), for waiting
/// readers: the rest names the room's schema (`effectful_room_channel()`).
pub const ROOM_CHANNEL: &str = "effectful_chat_room_";

/// Listens on the room's channel (the schema's own), from the connection's
/// `search_path`.
pub const LISTEN_ROOM: &str = "SELECT effectful_listen_room()";

/// The statement that performs `request`.
pub fn plan(request: &DatabaseRequest) -> DatabasePlan {
    let effect = request.name();
    let (sql, params, decode) = match request {
        DatabaseRequest::GetUserById(r) => (
            USER_LOOKUP,
            Params::of([Value::Uuid(r.user_id)]),
            Decode::Lookup {
                user_id: r.user_id,
                update: false,
            },
        ),
        DatabaseRequest::ListUsers(r) => (
            LIST_USERS,
            Params::of([
                Value::Int8(i64::from(r.limit)),
                Value::Int8(i64::from(r.offset)),
            ]),
            Decode::Users,
        ),
        DatabaseRequest::CreateUser(r) => (
            CREATE_USER,
            Params::of([
                Value::Text(r.email.clone()),
                Value::Text(r.name.clone()),
                Value::Text(r.password_hash.clone()),
            ]),
            Decode::Created {
                email: r.email.clone(),
            },
        ),
        DatabaseRequest::UpdateUser(r) => (
            UPDATE_USER,
            Params::of([
                Value::Uuid(r.user_id),
                text_or_null(&r.email),
                text_or_null(&r.name),
            ]),
            Decode::Lookup {
                user_id: r.user_id,
                update: true,
            },
        ),
        DatabaseRequest::DeleteUser(r) => (
            DELETE_USER,
            Params::of([Value::Uuid(r.user_id)]),
            Decode::Deleted,
        ),
        DatabaseRequest::SaveChatMessage(r) => {
            let (user, text) = (Value::Uuid(r.user_id), Value::Text(r.text.clone()));
            let (sql, params) = match r.message_id {
                Some(id) => (
                    SAVE_MESSAGE_WITH_ID,
                    Params::of([user, text, Value::Uuid(id)]),
                ),
                None => (SAVE_MESSAGE, Params::of([user, text])),
            };
            (
                sql,
                params,
                Decode::Saved {
                    user_id: r.user_id,
                    text: r.text.clone(),
                    message_id: r.message_id,
                },
            )
        }
        DatabaseRequest::ListMessagesForUser(r) => {
            let size = r.page_size();
            let (user, limit) = (Value::Uuid(r.user_id), Value::Int8(i64::from(size) + 1));
            let (sql, params) = match r.before {
                Some(before) => (
                    MESSAGES_BEFORE,
                    Params::of([
                        user,
                        limit,
                        Value::Timestamptz(before.created_at),
                        Value::Uuid(before.id),
                    ]),
                ),
                None => (LATEST_MESSAGES, Params::of([user, limit])),
            };
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            (sql, params, Decode::Page { size })
        }
        DatabaseRequest::JoinChat(r) => (
            JOIN_CHAT,
            Params::of([Value::Text(r.name.clone())]),
            Decode::ChatUser,
        ),
        DatabaseRequest::PostRoomMessage(r) => (
            POST_ROOM_MESSAGE,
            Params::of([
                Value::Uuid(r.user_id),
                Value::Text(r.text.clone()),
                r.message_id.map_or(Value::Null, Value::Uuid),
            ]),
            Decode::Posted,
        ),
        DatabaseRequest::RoomHistory(r) => (
            ROOM_HISTORY,
            Params::of([Value::Int8(i64::from(room_page_size(r.limit)))]),
            Decode::RoomHistory,
        ),
        // Users' own SQL is planned by `super::sql::SqlPlan`; here it is a statement
        // that fails, so a plan of it can never run as something else.
        DatabaseRequest::Query(_)
        | DatabaseRequest::Execute(_)
        | DatabaseRequest::Batch(_)
        | DatabaseRequest::Begin(_)
        | DatabaseRequest::Commit(_)
        | DatabaseRequest::Rollback(_)
        | DatabaseRequest::Migrate(_) => (NOT_PLANNED_HERE, Params::of([]), Decode::NotPlannedHere),
        DatabaseRequest::WaitRoomMessages(r) => (
            ROOM_AFTER,
            Params::of([
                Value::Int8(i64::try_from(r.after_seq).unwrap_or(i64::MAX)),
                Value::Int8(i64::from(room_page_size(r.limit))),
            ]),
            Decode::RoomAfter {
                after_seq: r.after_seq,
                limit: room_page_size(r.limit),
            },
        ),
    };
    DatabasePlan {
        effect,
        sql,
        params,
        decode,
    }
}

/// A text parameter typed `text` even when NULL, so the statement is prepared once.
fn text_or_null(value: &Option<String>) -> Value {
    match value {
        Some(v) => Value::Text(v.clone()),
        None => Value::Null,
    }
}

impl DatabasePlan {
    /// The effect's name (`Database.GetUserById`), for errors.
    pub fn effect(&self) -> &'static str {
        self.effect
    }

    /// The SQL, run with the extended protocol (prepared once per connection).
    pub fn sql(&self) -> &'static str {
        self.sql
    }

    /// The parameters, bound in binary.
    pub fn params(&self) -> &[Value] {
        self.params.as_slice()
    }

    /// How the answer is read.
    pub fn decode(&self) -> &Decode {
        &self.decode
    }

    /// The response from the statement's outcome (its result sets, one for an
    /// extended query) or the error that ended it.
    pub fn finish(
        self,
        outcome: Result<Vec<ResultSet>, PgError>,
    ) -> Result<DatabaseResponse, EffectError> {
        let effect = self.effect;
        let set = match outcome {
            Ok(sets) => one_result(effect, sets)?,
            Err(e) => {
                if let Decode::Created { email } = &self.decode {
                    let db = e.as_db();
                    if db.is_some_and(|d| {
                        d.code == UNIQUE_VIOLATION
                            && d.constraint.as_deref() == Some("users_email_key")
                    }) {
                        return Ok(DatabaseResponse::CreateUser(
                            CreateUserOutcome::EmailTaken {
                                email: email.clone(),
                            },
                        ));
                    }
                }
                return Err(e.to_effect_error(effect));
            }
        };
        let bad = |e: TypeError| protocol(effect, format!("an unexpected row: {e}"));
        Ok(match self.decode {
            Decode::Lookup { user_id, update } => {
                let row = set
                    .rows
                    .first()
                    .ok_or_else(|| protocol(effect, "the lookup returned no row".into()))?;
                let lookup = match row.get::<Option<Uuid>, _>(0).map_err(bad)? {
                    Some(_) => UserLookup::Found(user(row).map_err(bad)?),
                    None => UserLookup::NotFound {
                        user_id,
                        reason: if row.get::<bool, _>(3).map_err(bad)? {
                            NotFoundReason::Deleted
                        } else {
                            NotFoundReason::DoesNotExist
                        },
                    },
                };
                if update {
                    DatabaseResponse::UpdateUser(lookup)
                } else {
                    DatabaseResponse::GetUserById(lookup)
                }
            }
            Decode::Users => DatabaseResponse::ListUsers(
                set.rows
                    .iter()
                    .map(user)
                    .collect::<Result<_, _>>()
                    .map_err(bad)?,
            ),
            Decode::Created { .. } => {
                let row = set
                    .rows
                    .first()
                    .ok_or_else(|| protocol(effect, "the insert returned no row".into()))?;
                DatabaseResponse::CreateUser(CreateUserOutcome::Created(user(row).map_err(bad)?))
            }
            Decode::Deleted => {
                let count = match set.rows.first() {
                    Some(row) => row.get::<i64, _>(0).map_err(bad)?,
                    None => 0,
                };
                DatabaseResponse::DeleteUser(if count > 0 {
                    DeleteOutcome::Deleted
                } else {
                    DeleteOutcome::NotFound
                })
            }
            Decode::Saved {
                user_id,
                text,
                message_id,
            } => {
                let Some(row) = set.rows.first() else {
                    // Another save of the same id committed between our snapshot and
                    // our insert: saving again finds its row.
                    return Err(EffectError::new(
                        effect,
                        ErrorKind::Unavailable,
                        "a concurrent save of the same message id won the race; save again to get the stored row",
                    ));
                };
                let stored = message(row).map_err(bad)?;
                if message_id.is_some() && (stored.user_id != user_id || stored.text != text) {
                    return Err(EffectError::new(
                        effect,
                        ErrorKind::Service {
                            code: Some(UNIQUE_VIOLATION.to_owned()),
                        },
                        format!(
                            "duplicate key value violates unique constraint \"chat_messages_pkey\": \
                             Key (id)=({}) already exists.",
                            stored.id
                        ),
                    ));
                }
                DatabaseResponse::SaveChatMessage(stored)
            }
            Decode::Page { size } => {
                let mut messages = set
                    .rows
                    .iter()
                    .take(size)
                    .map(message)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(bad)?;
                messages.reverse();
                let more = set.rows.len() > size;
                DatabaseResponse::ListMessagesForUser(MessagePage {
                    next: if more {
                        messages.first().map(ChatMessage::cursor)
                    } else {
                        None
                    },
                    messages,
                })
            }
            Decode::ChatUser => {
                let row = set
                    .rows
                    .first()
                    .ok_or_else(|| protocol(effect, "the join returned no row".into()))?;
                DatabaseResponse::JoinChat(ChatUser {
                    id: row.get(0).map_err(bad)?,
                    name: row.get(1).map_err(bad)?,
                })
            }
            Decode::Posted => {
                let row = set
                    .rows
                    .first()
                    .ok_or_else(|| protocol(effect, "the post returned no row".into()))?;
                DatabaseResponse::PostRoomMessage(room_message(row).map_err(bad)?)
            }
            Decode::RoomHistory => {
                let mut messages = set
                    .rows
                    .iter()
                    .map(room_message)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(bad)?;
                messages.reverse();
                DatabaseResponse::RoomHistory(messages)
            }
            Decode::NotPlannedHere => {
                return Err(protocol(
                    effect,
                    "users' own SQL is planned by effectful::postgres::sql::SqlPlan".into(),
                ));
            }
            Decode::RoomAfter { .. } => DatabaseResponse::WaitRoomMessages(
                set.rows
                    .iter()
                    .map(room_message)
                    .collect::<Result<_, _>>()
                    .map_err(bad)?,
            ),
        })
    }
}

/// A protocol error (the server answered what the statement cannot give): never
/// retryable.
pub(crate) fn protocol(effect: &'static str, message: String) -> EffectError {
    EffectError::new(effect, ErrorKind::Protocol, message).with_retryable(false)
}

fn user(row: &Row) -> Result<User, TypeError> {
    Ok(User {
        id: row.get(0)?,
        email: row.get(1)?,
        name: row.get(2)?,
    })
}

fn room_message(row: &Row) -> Result<SharedRoomMessage, TypeError> {
    let seq: i64 = row.get(0)?;
    Ok(SharedRoomMessage::new(RoomMessage {
        seq: u64::try_from(seq).unwrap_or_default(),
        id: row.get(1)?,
        user_id: row.get(2)?,
        name: row.get(3)?,
        text: row.get(4)?,
        created_at: row.get(5)?,
    }))
}

fn message(row: &Row) -> Result<ChatMessage, TypeError> {
    Ok(ChatMessage {
        id: row.get(0)?,
        user_id: row.get(1)?,
        text: row.get(2)?,
        created_at: row.get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::{ListMessagesForUser, MessageCursor, SaveChatMessage, UpdateUser};

    #[test]
    fn every_migration_is_recorded_and_guarded_by_its_version() {
        let sql = migration_sql(MIGRATIONS);
        assert!(sql.starts_with("BEGIN;"));
        assert!(sql.ends_with("COMMIT;"));
        for m in MIGRATIONS {
            assert!(sql.contains(&format!("WHERE version = {}", m.version)));
            assert!(sql.contains(&format!("VALUES ({}, '", m.version)));
        }
        let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    }

    #[test]
    fn a_room_notice_reads_the_message_or_its_seq_and_refuses_anything_else() {
        let id = Uuid::from_u128(0xab);
        let user = Uuid::from_u128(0xcd);
        let payload = format!("12 {id} {user} 1764683094123456 5 zoë a two words");
        let RoomNotice::Message(m) = room_notice(&payload) else {
            panic!("a whole payload is a message: {payload}");
        };
        assert_eq!((m.seq, m.id, m.user_id), (12, id, user));
        assert_eq!(
            m.name, "zoë a",
            "the length is in characters, spaces included"
        );
        assert_eq!(m.text, " two words");
        assert_eq!(m.created_at.unix_micros(), 1_764_683_094_123_456);
        let empty_text = format!("3 {id} {user} -5 2 éé");
        match room_notice(&empty_text) {
            RoomNotice::Message(m) => assert_eq!((m.name.as_str(), m.text.as_str()), ("éé", "")),
            other => panic!("{other:?}"),
        }
        assert_eq!(room_notice("41"), RoomNotice::Seq(41));
        for bad in [
            "",
            "0",
            "-1",
            "x",
            "41 ",
            &format!("0 {id} {user} 1 1 ab"),
            &format!("4 {id} {user} 1 3 ab"),
            &format!("4 not-a-uuid {user} 1 1 ab"),
            &format!("4 {id} {user} 1.5 1 ab"),
            &format!("4 {id} {user} 1 99999999999999999999 ab"),
        ] {
            assert!(
                !matches!(room_notice(bad), RoomNotice::Message(_)),
                "{bad:?} is no message"
            );
        }
        assert_eq!(
            room_notice(&format!("4 {id} {user} 1 3 ab")),
            RoomNotice::Unknown
        );
    }

    #[test]
    fn a_page_asks_for_one_more_row_than_it_holds_and_a_cursor_adds_two_parameters() {
        let user_id = Uuid::from_u128(5);
        let first = plan(&DatabaseRequest::ListMessagesForUser(
            ListMessagesForUser::latest(user_id, 1000),
        ));
        assert_eq!(first.params()[1], Value::Int8(101));
        assert_eq!(first.sql(), LATEST_MESSAGES);
        let cursor = MessageCursor {
            created_at: crate::Timestamp::from_unix_micros(7),
            id: Uuid::from_u128(9),
        };
        let next = plan(&DatabaseRequest::ListMessagesForUser(ListMessagesForUser {
            before: Some(cursor),
            ..ListMessagesForUser::latest(user_id, 0)
        }));
        assert_eq!(next.params()[1], Value::Int8(2));
        assert_eq!(next.params().len(), 4);
    }

    #[test]
    fn an_update_binds_a_missing_field_as_null_and_a_save_binds_its_id_third() {
        let update = plan(&DatabaseRequest::UpdateUser(UpdateUser {
            user_id: Uuid::from_u128(1),
            email: None,
            name: Some("n".into()),
        }));
        assert_eq!(update.params()[1], Value::Null);
        assert_eq!(update.params()[2], Value::Text("n".into()));
        let save = plan(&DatabaseRequest::SaveChatMessage(SaveChatMessage {
            user_id: Uuid::from_u128(1),
            text: "t".into(),
            message_id: Some(Uuid::from_u128(2)),
        }));
        assert_eq!(save.params()[2], Value::Uuid(Uuid::from_u128(2)));
        assert_eq!(save.effect(), "Database.SaveChatMessage");
    }

    #[test]
    fn a_closed_connection_is_a_retryable_connection_loss() {
        let plan = plan(&DatabaseRequest::DeleteUser(crate::effect::DeleteUser {
            user_id: Uuid::nil(),
        }));
        let err = plan
            .finish(Err(PgError::Closed(
                super::super::ClosedReason::ServerHungUp,
            )))
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::ConnectionLost);
        assert!(err.retryable);
        assert_eq!(err.effect, "Database.DeleteUser");
    }
}
