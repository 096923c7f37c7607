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

/// A user's messages, oldest first. Output: the messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMessagesForUser {
    /// The author.
    pub user_id: Uuid,
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
        ListMessagesForUser => Vec<ChatMessage>,
    }
}
