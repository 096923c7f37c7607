//! Database: users and chat messages (PostgreSQL tables `users` and `chat_messages`),
//! the chat room (tables `chat_users` and `chat_room_messages`), and users' own SQL
//! on their own tables ([`Query`], [`Execute`], [`Batch`], [`Begin`], [`Migrate`]:
//! see the `sql` section below).
//!
//! # The chat room
//! The chat application's one room has a total order: each stored message gets a
//! `seq` (1, 2, 3, ...) such that **commit order is `seq` order**, so a reader that has
//! seen every message up to `seq` = n and then asks for `seq > n` can never miss one
//! that commits later with a smaller `seq`. That is what lets a session catch up
//! after any failure (a dropped listener, a restarted Redis, a lost answer) with one
//! query by `seq`, and lets every client see the room in the same order.
//!
//! The tables, on PostgreSQL:
//! ```sql
//! CREATE TABLE chat_users (
//!     id         uuid PRIMARY KEY,
//!     name       text NOT NULL UNIQUE,
//!     created_at timestamptz NOT NULL DEFAULT now()
//! );
//! CREATE TABLE chat_room_messages (
//!     seq        bigint PRIMARY KEY,           -- 1, 2, 3, ... in commit order
//!     id         uuid NOT NULL UNIQUE,         -- chosen by the program: idempotent posts
//!     user_id    uuid NOT NULL REFERENCES chat_users (id) ON DELETE CASCADE,
//!     text       text NOT NULL,
//!     created_at timestamptz NOT NULL DEFAULT now()
//! );
//! ```
//! Chat users are not rows of `users`: a chat join has only a name, while `users`
//! needs a unique email and a password hash for the auth flows. Deriving a fake email
//! would put rows in `users` that a sign-up could collide with, and make "name" (not
//! unique in `users`) the key of a unique lookup. A table of its own keeps the unique
//! name where the chat needs it and leaves `users` to accounts.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::family;
use crate::time::Timestamp;

mod sql;
pub use sql::*;

/// A user row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user's id.
    pub id: Uuid,
    /// Unique among users.
    pub email: String,
    /// Display name.
    pub name: String,
}

/// A chat message row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The message's id.
    pub id: Uuid,
    /// Its author.
    pub user_id: Uuid,
    /// Its text.
    pub text: String,
    /// When the database stored it.
    pub created_at: Timestamp,
}

/// Why a user was not found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotFoundReason {
    /// No user ever had this id.
    DoesNotExist,
    /// The user was deleted.
    Deleted,
}

/// The domain outcome of looking a user up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserLookup {
    /// The user.
    Found(User),
    /// No such user.
    NotFound {
        /// The id that was looked up.
        user_id: Uuid,
        /// Why it was not found.
        reason: NotFoundReason,
    },
}

/// The domain outcome of creating a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CreateUserOutcome {
    /// The new user.
    Created(User),
    /// Another user already has this email (unique constraint).
    EmailTaken {
        /// The email that is taken.
        email: String,
    },
}

/// The domain outcome of deleting a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteOutcome {
    /// The row existed and is gone.
    Deleted,
    /// There was no such row.
    NotFound,
}

/// Look a user up by id. Output: [`UserLookup`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetUserById {
    /// The user's id.
    pub user_id: Uuid,
}

/// List users ordered by id. Output: the page of users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListUsers {
    /// At most this many users.
    pub limit: u32,
    /// Skip this many first.
    pub offset: u32,
}

/// Create a user. Output: [`CreateUserOutcome`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateUser {
    /// Unique among users.
    pub email: String,
    /// Display name.
    pub name: String,
    /// The password hash (see `Auth.HashPassword`).
    pub password_hash: String,
}

/// Change a user's email and/or name. Output: the updated user, or not found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateUser {
    /// The user's id.
    pub user_id: Uuid,
    /// The new email, if it changes.
    pub email: Option<String>,
    /// The new name, if it changes.
    pub name: Option<String>,
}

/// Delete a user. Output: [`DeleteOutcome`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteUser {
    /// The user's id.
    pub user_id: Uuid,
}

/// Store a chat message. Output: the stored [`ChatMessage`].
///
/// With `message_id` set the insert is idempotent (`ON CONFLICT (id) DO NOTHING`,
/// then the stored row): saving the same message again, say on a retry after a lost
/// answer, returns the row stored the first time instead of a duplicate. Reusing an
/// id for another author or text fails with a unique violation (SQLSTATE 23505).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveChatMessage {
    /// The author.
    pub user_id: Uuid,
    /// The text.
    pub text: String,
    /// The message's id, chosen by the program for idempotent retries; `None`: the
    /// database chooses.
    #[serde(default)]
    pub message_id: Option<Uuid>,
}

/// The most messages one [`ListMessagesForUser`] page holds. A larger `limit` is
/// clamped to it (not refused): the page then says where the rest starts, so nothing
/// is lost, and no reply grows with the whole history.
pub const MAX_MESSAGE_PAGE: u32 = 100;

/// A position in a user's message history.
///
/// History is ordered by `created_at`, then by `id` (PostgreSQL's `uuid` order,
/// bytewise), which is also this type's `Ord`. Message ids are unique, so the order is
/// total and a cursor names one place in it: paging by cursor (keyset paging) neither
/// repeats nor skips a message when newer ones arrive between pages, as paging by
/// offset would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageCursor {
    /// The `created_at` of the message at this position.
    pub created_at: Timestamp,
    /// The id of the message at this position.
    pub id: Uuid,
}

impl ChatMessage {
    /// This message's position in its author's history.
    pub fn cursor(&self) -> MessageCursor {
        MessageCursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// One page of a user's messages, paging back from the newest. Output:
/// [`MessagePage`].
///
/// The page holds the newest `limit` messages that come before `before` in history
/// order (see [`MessageCursor`]), or before the end when `before` is `None`, listed
/// oldest first. `limit` is clamped to `1..=`[`MAX_MESSAGE_PAGE`] (see
/// [`ListMessagesForUser::page_size`]). To walk a whole history, ask again with the
/// page's [`MessagePage::next`] as `before` until it is `None`.
///
/// On PostgreSQL: `WHERE user_id = $1 AND (created_at, id) < ($2, $3) ORDER BY
/// created_at DESC, id DESC LIMIT page_size + 1`, reversed; the extra row says whether
/// an older page exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMessagesForUser {
    /// The author.
    pub user_id: Uuid,
    /// At most this many messages (clamped to `1..=`[`MAX_MESSAGE_PAGE`]).
    pub limit: u32,
    /// Only messages before this position; `None`: the newest.
    #[serde(default)]
    pub before: Option<MessageCursor>,
}

impl ListMessagesForUser {
    /// The newest `limit` messages of a user (the first page).
    pub fn latest(user_id: Uuid, limit: u32) -> ListMessagesForUser {
        ListMessagesForUser {
            user_id,
            limit,
            before: None,
        }
    }

    /// How many messages the page holds at most: `limit` clamped to
    /// `1..=`[`MAX_MESSAGE_PAGE`]. A limit of 0 reads as 1, so a page is never empty
    /// while older messages remain.
    pub fn page_size(&self) -> u32 {
        self.limit.clamp(1, MAX_MESSAGE_PAGE)
    }
}

/// A page of a user's messages: the answer to [`ListMessagesForUser`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagePage {
    /// At most the page size, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Where the page of older messages ends: pass it as
    /// [`ListMessagesForUser::before`]. `None` when this page reaches the user's oldest
    /// message.
    pub next: Option<MessageCursor>,
}

/// A chat participant: a row of `chat_users`. Names are unique.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatUser {
    /// The user's id.
    pub id: Uuid,
    /// Unique among chat users (compared exactly).
    pub name: String,
}

/// A message of the chat room, with its author's name: a row of
/// `chat_room_messages` joined with `chat_users`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMessage {
    /// Its place in the room: 1 for the first message, then one more for each. Commit
    /// order is `seq` order (see [`PostRoomMessage`]).
    pub seq: u64,
    /// The message's id.
    pub id: Uuid,
    /// Its author.
    pub user_id: Uuid,
    /// Its author's name.
    pub name: String,
    /// Its text.
    pub text: String,
    /// When the database stored it.
    pub created_at: Timestamp,
}

/// A [`RoomMessage`] shared by everyone it is handed to: cloning one counts a
/// reference and copies no text, so a post that wakes a thousand waiting sessions
/// stores its message once, not a thousand times. It reads as the message
/// (`Deref`) and cannot be changed, so the encoding it may carry
/// ([`SharedRoomMessage::encoded`]) always matches it.
///
/// Serialised, compared and printed as the plain message: traces and replays are
/// the same as with a `RoomMessage`.
#[derive(Clone)]
pub struct SharedRoomMessage(Arc<Shared>);

struct Shared {
    message: RoomMessage,
    /// The first encoding asked for, by the name of its format.
    encoded: OnceLock<(&'static str, Box<str>)>,
}

impl SharedRoomMessage {
    /// Shares `message`.
    pub fn new(message: RoomMessage) -> Self {
        SharedRoomMessage(Arc::new(Shared {
            message,
            encoded: OnceLock::new(),
        }))
    }

    /// The message.
    pub fn message(&self) -> &RoomMessage {
        &self.0.message
    }

    /// The message as `encode` writes it in the format named `format` (a program's
    /// wire form, say): made once, by the first caller, and kept with the message
    /// for every holder of it, on any thread. One format is kept per message; a
    /// caller asking for another gets its own encoding, made afresh each time.
    pub fn encoded(
        &self,
        format: &'static str,
        encode: impl FnOnce(&RoomMessage) -> String,
    ) -> Cow<'_, str> {
        let mut encode = Some(encode);
        let (kept_format, kept) = self.0.encoded.get_or_init(|| {
            let made = encode
                .take()
                .map(|f| f(&self.0.message))
                .unwrap_or_default();
            (format, made.into_boxed_str())
        });
        match encode {
            // Another format was kept first: this caller's encoding is its own.
            Some(encode) if *kept_format != format => Cow::Owned(encode(&self.0.message)),
            _ => Cow::Borrowed(kept),
        }
    }

    /// Whether `a` and `b` are the same shared message (not only equal ones).
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl Deref for SharedRoomMessage {
    type Target = RoomMessage;

    fn deref(&self) -> &RoomMessage {
        &self.0.message
    }
}

impl From<RoomMessage> for SharedRoomMessage {
    fn from(message: RoomMessage) -> Self {
        SharedRoomMessage::new(message)
    }
}

impl PartialEq for SharedRoomMessage {
    fn eq(&self, other: &Self) -> bool {
        SharedRoomMessage::ptr_eq(self, other) || self.0.message == other.0.message
    }
}

impl Eq for SharedRoomMessage {}

impl fmt::Debug for SharedRoomMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.message.fmt(f)
    }
}

impl Serialize for SharedRoomMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.message.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedRoomMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RoomMessage::deserialize(deserializer).map(SharedRoomMessage::new)
    }
}

/// The most messages one [`RoomHistory`] or [`WaitRoomMessages`] answer holds; a
/// larger `limit` is clamped to it.
pub const MAX_ROOM_PAGE: u32 = MAX_MESSAGE_PAGE;

/// `limit` clamped to `1..=`[`MAX_ROOM_PAGE`].
pub fn room_page_size(limit: u32) -> u32 {
    limit.clamp(1, MAX_ROOM_PAGE)
}

/// Find or create the chat user with this name. Output: the [`ChatUser`].
///
/// The first join of a name creates the user; later joins find it; two concurrent
/// first joins of one name make one user. On PostgreSQL, in one statement pair
/// (autocommit is enough: the unique index arbitrates):
/// ```sql
/// INSERT INTO chat_users (id, name) VALUES ($new_id, $name) ON CONFLICT (name) DO NOTHING;
/// SELECT id, name FROM chat_users WHERE name = $name;
/// ```
/// The loser of a race inserts nothing and its `SELECT` finds the winner's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinChat {
    /// The name (the program checks its length and characters).
    pub name: String,
}

/// Store a message in the chat room. Output: the stored message, shared
/// ([`SharedRoomMessage`]: one pointer, so every response stays small).
///
/// Idempotent on `message_id` as [`SaveChatMessage`] is: posting the same id again
/// (say on a retry after a lost answer) returns the row stored the first time, with
/// its `seq`; reusing an id for another author or text fails with a unique violation
/// (SQLSTATE 23505), not retryable. An author that is not a chat user fails like a
/// foreign-key violation (SQLSTATE 23503), not retryable.
///
/// On PostgreSQL, one transaction, so that commit order is `seq` order and a listener
/// is woken only once the row is visible:
/// ```sql
/// BEGIN;
/// SELECT pg_advisory_xact_lock($room_lock_key);      -- posts to the room queue here
/// SELECT m.seq, m.id, m.user_id, u.name, m.text, m.created_at
///   FROM chat_room_messages m JOIN chat_users u ON u.id = m.user_id
///   WHERE m.id = $message_id;                        -- a retry: answer the stored row
/// INSERT INTO chat_room_messages (seq, id, user_id, text)
///   SELECT coalesce(max(seq), 0) + 1, $message_id, $user_id, $text FROM chat_room_messages
///   RETURNING seq, created_at;                       -- only when the SELECT found none
/// SELECT pg_notify('chat_room', seq::text);          -- delivered at COMMIT, not before
/// COMMIT;
/// ```
/// (`max(seq)` is an index lookup on the primary key; the advisory lock, held to
/// commit, makes the next post wait, so no `seq` commits after a larger one, which a
/// plain sequence would allow.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostRoomMessage {
    /// The author (a [`ChatUser`]).
    pub user_id: Uuid,
    /// The text.
    pub text: String,
    /// The message's id, chosen by the program for idempotent retries; `None`: the
    /// database chooses.
    #[serde(default)]
    pub message_id: Option<Uuid>,
}

/// The room's latest messages. Output: at most `limit` messages (clamped to
/// `1..=`[`MAX_ROOM_PAGE`]), the newest ones, oldest first.
///
/// On PostgreSQL: `SELECT .. FROM chat_room_messages m JOIN chat_users u ON u.id =
/// m.user_id ORDER BY m.seq DESC LIMIT $limit`, reversed. The last message's `seq` is
/// where a reader continues with [`WaitRoomMessages`] (0 for an empty room).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomHistory {
    /// At most this many (clamped to `1..=`[`MAX_ROOM_PAGE`]).
    pub limit: u32,
}

/// The room's messages after `after_seq`, oldest first, at most `limit` (clamped to
/// `1..=`[`MAX_ROOM_PAGE`]). Output: `Vec<`[`SharedRoomMessage`]`>`, never empty:
/// every wait answered by one post holds the same shared messages.
///
/// **Waits by nature** until at least one such message is stored, so the engine's
/// default per-effect timeout does not apply (see `Request::waits_by_nature`); a
/// program that wants a bound sets one. A cancelled wait leaves nothing behind.
///
/// On PostgreSQL: the interpreter keeps one connection listening on the room's
/// channel (one per schema). A wait is answered from the room's latest messages
/// when the interpreter has already read them; otherwise it runs
/// `SELECT .. WHERE m.seq > $after_seq ORDER BY m.seq LIMIT $limit` on that
/// connection (waits for the same `seq` share one query); if that is empty it parks
/// until the channel notifies, then runs again. A wait for messages after the newest
/// one the interpreter knows of parks at once. Since a message is committed before
/// its notification is delivered, and commit order is `seq` order, the query by
/// `seq` finds every message the wait is owed; a notification lost with a dropped
/// listener connection only delays the answer until the interpreter reconnects,
/// listens again and re-runs the query for every parked wait (it must, as
/// notifications sent while it was away are gone). If the connection cannot be
/// restored, the wait fails with a retryable error and the program asks again from
/// its last `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitRoomMessages {
    /// Only messages with a larger `seq`.
    pub after_seq: u64,
    /// At most this many (clamped to `1..=`[`MAX_ROOM_PAGE`]).
    pub limit: u32,
}

family! {
    /// The Database family's requests.
    Database: DatabaseRequest => DatabaseResponse {
        GetUserById => UserLookup,
        ListUsers => Vec<User>,
        CreateUser => CreateUserOutcome,
        UpdateUser => UserLookup,
        DeleteUser => DeleteOutcome,
        SaveChatMessage => ChatMessage,
        ListMessagesForUser => MessagePage,
        JoinChat => ChatUser,
        PostRoomMessage => SharedRoomMessage,
        RoomHistory => Vec<SharedRoomMessage>,
        WaitRoomMessages => Vec<SharedRoomMessage>,
        Query [boxed] => Rows,
        Execute [boxed] => u64,
        Batch => Vec<u64>,
        Begin => Transaction,
        Commit => (),
        Rollback => (),
        Migrate => Vec<i64>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> RoomMessage {
        RoomMessage {
            seq: 3,
            id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(2),
            name: "ada".into(),
            text: "hello \"room\"".into(),
            created_at: Timestamp::from_unix_micros(1_764_000_000_123_456),
        }
    }

    #[test]
    fn a_shared_message_serialises_as_the_plain_message_and_reads_back_equal() {
        let plain = message();
        let shared = SharedRoomMessage::new(plain.clone());
        let json = serde_json::to_string(&shared).unwrap_or_default();
        assert_eq!(json, serde_json::to_string(&plain).unwrap_or_default());
        let answer = DatabaseResponse::WaitRoomMessages(vec![shared.clone(), shared.clone()]);
        let text = serde_json::to_string(&answer).unwrap_or_default();
        let back: DatabaseResponse = serde_json::from_str(&text).expect("reads back");
        assert_eq!(back, answer);
        assert_eq!(*shared, plain);
    }

    #[test]
    fn an_encoding_is_made_once_and_kept_for_every_holder_of_the_message() {
        let shared = SharedRoomMessage::new(message());
        let holder = shared.clone();
        let mut made = 0;
        let mut encode = |m: &RoomMessage| {
            made += 1;
            format!("<{}>", m.text)
        };
        let first = shared.encoded("angle", &mut encode);
        let again = holder.encoded("angle", &mut encode);
        assert_eq!(first, "<hello \"room\">");
        assert!(matches!(again, Cow::Borrowed(_)));
        assert_eq!(first.as_ptr(), again.as_ptr(), "one encoding, kept");
        // Another format is made afresh, and does not replace the kept one.
        let other = holder.encoded("upper", |m| m.name.to_uppercase());
        assert_eq!(other, "ADA");
        assert!(matches!(other, Cow::Owned(_)));
        assert_eq!(shared.encoded("angle", &mut encode), first);
        assert_eq!(made, 1);
    }
}
