//! Database: users and chat messages (PostgreSQL tables `users` and `chat_messages`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::family;
use crate::time::Timestamp;

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
    }
}
