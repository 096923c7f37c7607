//! The Database fake: PostgreSQL tables `users` and `chat_messages`, and the chat
//! room's `chat_users` and `chat_room_messages`, in memory.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::effect::sqlstate::{FOREIGN_KEY_VIOLATION, UNIQUE_VIOLATION};
use crate::effect::{
    ChatMessage, ChatUser, CreateUserOutcome, DatabaseRequest, DatabaseResponse, DeleteOutcome,
    ListMessagesForUser, MessageCursor, MessagePage, NotFoundReason, PostRoomMessage, RoomMessage,
    Rows, SaveChatMessage, SharedRoomMessage, SqlValue, Transaction, UpdateUser, User, UserLookup,
    WaitRoomMessages, room_page_size,
};
use crate::{Effect, EffectError, EffectId, ErrorKind, Excerpt, Rng, Std, Time, Timestamp};
use rustc_hash::FxHashMap;
use uuid::Uuid;

use super::{DEFAULT_WALL_EPOCH, Performer, wall_time};

mod sql;
use sql::{SqlFailure, SqlTables};

#[derive(Clone, Debug)]
struct UserRow {
    user: User,
    password_hash: String,
}

/// PostgreSQL's `users` and `chat_messages` tables, with their constraints.
///
/// - `users.email` is unique (compared exactly, as a plain `UNIQUE` on `text` does):
///   `CreateUser` answers [`CreateUserOutcome::EmailTaken`], and `UpdateUser` to a
///   taken email fails with an [`EffectError`] of kind `Service { code: "23505" }`
///   ([`UNIQUE_VIOLATION`]), not retryable.
/// - Deleting a user frees its email, deletes its messages (`ON DELETE CASCADE`), and
///   remembers its id, so `GetUserById` and `UpdateUser` tell
///   [`NotFoundReason::Deleted`] from [`NotFoundReason::DoesNotExist`].
/// - `ListUsers` is ordered by id (PostgreSQL's `uuid` order, bytewise).
/// - `SaveChatMessage` draws the message id from the fake's [`Rng`] and stamps
///   `created_at` with `wall_epoch + now`; for a user that does not exist (or was
///   deleted) it fails like a foreign-key violation: `Service { code: "23503" }`
///   ([`FOREIGN_KEY_VIOLATION`]), not retryable.
/// - `ListMessagesForUser` answers one page, paging back from the newest, in history
///   order: `created_at`, then `id` (see [`MessageCursor`]); at most
///   [`ListMessagesForUser::page_size`] messages, found by binary search, so a reply
///   costs the page and not the whole history.
///
/// # The chat room
/// - `JoinChat` finds the chat user with that exact name or creates it (one user per
///   name, however the joins interleave).
/// - `PostRoomMessage` gives the message the next `seq` (1, 2, ...), draws its id
///   from the fake's [`Rng`] when the program gave none, and is idempotent on the id;
///   an unknown author fails like a foreign-key violation (23503), an id reused for
///   another author or text like a unique violation (23505).
/// - `RoomHistory` answers the newest messages, oldest first.
/// - `WaitRoomMessages` waits: through [`Services::handle`](super::Services::handle)
///   it comes back to the driver as [`Handled::WaitRoom`](super::Handled::WaitRoom),
///   and the driver calls [`FakeDatabase::wait_room`] with the effect's id, which
///   answers at once or parks the waiter. A post hands the new messages to every
///   parked waiter they are for, in the order they parked; the driver pulls them with
///   [`FakeDatabase::poll_room_handed_over`] after each request it applied (the drain
///   rule), and calls [`FakeDatabase::stop_waiting_room`] when a wait is cancelled.
///   Through [`FakeDatabase::handle`] directly, a wait answers what is there, even
///   nothing.
#[derive(Clone, Debug)]
pub struct FakeDatabase {
    rng: Rng,
    wall_epoch: Timestamp,
    users: BTreeMap<Uuid, UserRow>,
    by_email: BTreeMap<String, Uuid>,
    deleted: BTreeSet<Uuid>,
    /// Each user's messages in history order (looked up by user, never listed across
    /// users: the hash order never shows).
    messages: FxHashMap<Uuid, Vec<ChatMessage>>,
    /// Every stored message id (the primary key of `chat_messages`): its author and its
    /// place in the author's history.
    message_ids: FxHashMap<Uuid, (Uuid, MessageCursor)>,
    /// `chat_users`, by name.
    chat_users: BTreeMap<String, Uuid>,
    /// Chat users' names by id.
    chat_names: FxHashMap<Uuid, String>,
    /// `chat_room_messages` in `seq` order: `room[i].seq == i + 1`. Each stored once
    /// and shared with every answer that holds it.
    room: Vec<SharedRoomMessage>,
    /// The `seq` of each stored room message id.
    room_ids: FxHashMap<Uuid, u64>,
    /// Waits for room messages, in the order they parked.
    room_waiters: Vec<(EffectId, WaitRoomMessages)>,
    /// Room messages handed to waiters, not yet pulled by the driver.
    room_handed: VecDeque<(EffectId, Vec<SharedRoomMessage>)>,
    /// Users' own tables (`Query`, `Execute`, `Batch`, transactions, `Migrate`).
    sql: SqlTables,
}

impl FakeDatabase {
    /// Empty tables; ids come from `rng`.
    pub fn new(rng: Rng) -> FakeDatabase {
        FakeDatabase {
            rng,
            wall_epoch: DEFAULT_WALL_EPOCH,
            users: BTreeMap::new(),
            by_email: BTreeMap::new(),
            deleted: BTreeSet::new(),
            messages: FxHashMap::default(),
            message_ids: FxHashMap::default(),
            chat_users: BTreeMap::new(),
            chat_names: FxHashMap::default(),
            room: Vec::new(),
            room_ids: FxHashMap::default(),
            room_waiters: Vec::new(),
            room_handed: VecDeque::new(),
            sql: SqlTables::default(),
        }
    }

    /// The same database with `wall_epoch` as the wall-clock instant of [`Time::ZERO`].
    pub fn with_wall_epoch(mut self, wall_epoch: Timestamp) -> FakeDatabase {
        self.wall_epoch = wall_epoch;
        self
    }

    /// Answers one Database request at simulated time `now`. A transaction begun
    /// here belongs to no program: only its `Commit` or `Rollback` (or
    /// [`end_transaction`](Self::end_transaction)) ends it; drivers use
    /// [`handle_from`](Self::handle_from).
    pub fn handle(
        &mut self,
        now: Time,
        request: DatabaseRequest,
    ) -> Result<DatabaseResponse, EffectError> {
        self.answer(now, None, request)
    }

    /// Answers one Database request of `performer`'s program at simulated time
    /// `now`: an interactive transaction it begins is rolled back by
    /// [`program_ended`](Self::program_ended) if the program ends first, as the
    /// PostgreSQL interpreter rolls back a pinned connection's transaction.
    pub fn handle_from(
        &mut self,
        now: Time,
        performer: Performer,
        request: DatabaseRequest,
    ) -> Result<DatabaseResponse, EffectError> {
        self.answer(now, Some(performer), request)
    }

    /// `performer`'s program ended: the interactive transactions it began and left
    /// open are rolled back (returned, oldest first).
    pub fn program_ended(&mut self, performer: Performer) -> Vec<Transaction> {
        self.sql.end_program(performer)
    }

    fn answer(
        &mut self,
        now: Time,
        performer: Option<Performer>,
        request: DatabaseRequest,
    ) -> Result<DatabaseResponse, EffectError> {
        Ok(match request {
            DatabaseRequest::GetUserById(r) => {
                DatabaseResponse::GetUserById(self.get_user_by_id(r.user_id))
            }
            DatabaseRequest::ListUsers(r) => {
                DatabaseResponse::ListUsers(self.list_users(r.limit, r.offset))
            }
            DatabaseRequest::CreateUser(r) => {
                DatabaseResponse::CreateUser(self.create_user(r.email, r.name, r.password_hash))
            }
            DatabaseRequest::UpdateUser(r) => DatabaseResponse::UpdateUser(self.update_user(r)?),
            DatabaseRequest::DeleteUser(r) => {
                DatabaseResponse::DeleteUser(self.delete_user(r.user_id))
            }
            DatabaseRequest::SaveChatMessage(r) => DatabaseResponse::SaveChatMessage(
                self.save_chat_message(now, r.user_id, r.text, r.message_id)?,
            ),
            DatabaseRequest::ListMessagesForUser(r) => {
                DatabaseResponse::ListMessagesForUser(self.message_page(&r))
            }
            DatabaseRequest::JoinChat(r) => DatabaseResponse::JoinChat(self.join_chat(r.name)),
            DatabaseRequest::PostRoomMessage(r) => {
                DatabaseResponse::PostRoomMessage(self.post_room_message(now, r)?)
            }
            DatabaseRequest::RoomHistory(r) => {
                DatabaseResponse::RoomHistory(self.room_history(r.limit).to_vec())
            }
            DatabaseRequest::WaitRoomMessages(r) => {
                DatabaseResponse::WaitRoomMessages(self.room_after(r.after_seq, r.limit).to_vec())
            }
            request => return self.handle_sql(now, performer, request),
        })
    }

    /// Users' own SQL (see the module `sql` for the subset it knows).
    fn handle_sql(
        &mut self,
        now: Time,
        performer: Option<Performer>,
        request: DatabaseRequest,
    ) -> Result<DatabaseResponse, EffectError> {
        let effect = request.name();
        let now = wall_time(self.wall_epoch, now);
        let refuse = |sql: &str| {
            crate::effect::is_transaction_control(sql).then(|| {
                EffectError::new(
                    effect,
                    ErrorKind::Protocol,
                    "transaction control is refused here: use Database.Begin or Database.Batch",
                )
                .with_retryable(false)
            })
        };
        let failed = |e: SqlFailure| sql_error(effect, e);
        Ok(match request {
            DatabaseRequest::Query(q) => {
                if let Some(e) = refuse(&q.sql) {
                    return Err(e);
                }
                let out = self.sql.run(now, &q.sql, &q.params, q.tx).map_err(failed)?;
                DatabaseResponse::Query(Rows {
                    columns: out.columns,
                    rows: out.rows,
                })
            }
            DatabaseRequest::Execute(q) => {
                if let Some(e) = refuse(&q.sql) {
                    return Err(e);
                }
                let out = self.sql.run(now, &q.sql, &q.params, q.tx).map_err(failed)?;
                DatabaseResponse::Execute(out.affected)
            }
            DatabaseRequest::Batch(b) => {
                if let Some(e) = b.statements.iter().find_map(|s| refuse(&s.sql)) {
                    return Err(e);
                }
                let total = b.statements.len();
                let statements: Vec<(String, Vec<SqlValue>)> = b
                    .statements
                    .into_iter()
                    .map(|s| (s.sql, s.params))
                    .collect();
                let affected = self.sql.batch(now, &statements).map_err(|(i, e)| {
                    failed(SqlFailure {
                        code: e.code,
                        message: format!("statement {} of {total}: {}", i + 1, e.message),
                    })
                })?;
                DatabaseResponse::Batch(affected)
            }
            DatabaseRequest::Begin(_) => DatabaseResponse::Begin(self.sql.begin(performer)),
            DatabaseRequest::Commit(c) => {
                self.sql.commit(c.tx).map_err(failed)?;
                DatabaseResponse::Commit(())
            }
            DatabaseRequest::Rollback(r) => {
                self.sql.rollback(r.tx).map_err(failed)?;
                DatabaseResponse::Rollback(())
            }
            DatabaseRequest::Migrate(m) => {
                DatabaseResponse::Migrate(self.sql.migrate(now, &m.migrations).map_err(failed)?)
            }
            other => {
                return Err(EffectError::new(
                    other.name(),
                    ErrorKind::Protocol,
                    "not a request of users' own SQL",
                )
                .with_retryable(false));
            }
        })
    }

    /// The interactive transactions still open (`Database.Begin` without its
    /// `Commit` or `Rollback`).
    pub fn open_transactions(&self) -> Vec<Transaction> {
        self.sql.open_transactions()
    }

    /// Rolls back `tx` if it is still open, as a driver does when the program that
    /// began it ends. Returns whether it was open.
    pub fn end_transaction(&mut self, tx: Transaction) -> bool {
        self.sql.rollback(tx).is_ok()
    }

    /// Finds the chat user named `name`, or creates it (as `JoinChat` does).
    pub fn join_chat(&mut self, name: String) -> ChatUser {
        if let Some(&id) = self.chat_users.get(&name) {
            return ChatUser { id, name };
        }
        let id = loop {
            let id = self.rng.uuid_v4();
            if !self.chat_names.contains_key(&id) {
                break id;
            }
        };
        self.chat_users.insert(name.clone(), id);
        self.chat_names.insert(id, name.clone());
        ChatUser { id, name }
    }

    /// The room's newest `limit` messages (clamped to `1..=`[`MAX_ROOM_PAGE`]), oldest
    /// first.
    ///
    /// [`MAX_ROOM_PAGE`]: crate::effect::MAX_ROOM_PAGE
    pub fn room_history(&self, limit: u32) -> &[SharedRoomMessage] {
        let size = usize::try_from(room_page_size(limit)).unwrap_or(usize::MAX);
        &self.room[self.room.len().saturating_sub(size)..]
    }

    /// The room's messages after `after_seq`, oldest first, at most `limit` (clamped
    /// to `1..=`[`MAX_ROOM_PAGE`]); empty when there are none yet.
    ///
    /// [`MAX_ROOM_PAGE`]: crate::effect::MAX_ROOM_PAGE
    pub fn room_after(&self, after_seq: u64, limit: u32) -> &[SharedRoomMessage] {
        let start = usize::try_from(after_seq)
            .unwrap_or(usize::MAX)
            .min(self.room.len());
        let size = usize::try_from(room_page_size(limit)).unwrap_or(usize::MAX);
        &self.room[start..start.saturating_add(size).min(self.room.len())]
    }

    /// Every room message, in `seq` order, for checking a run.
    pub fn room(&self) -> &[SharedRoomMessage] {
        &self.room
    }

    /// The wait `id` for room messages: answered at once (`Some`, never empty) or
    /// parked until a post hands it messages (pull them with
    /// [`poll_room_handed_over`](Self::poll_room_handed_over)) or it stops waiting.
    pub fn wait_room(
        &mut self,
        id: EffectId,
        request: WaitRoomMessages,
    ) -> Option<Vec<SharedRoomMessage>> {
        let ready = self.room_after(request.after_seq, request.limit);
        if !ready.is_empty() {
            return Some(ready.to_vec());
        }
        self.room_waiters.push((id, request));
        None
    }

    /// The wait `id` stops (its effect was cancelled): returns whether it was parked.
    /// Nothing of it is left behind.
    pub fn stop_waiting_room(&mut self, id: EffectId) -> bool {
        match self.room_waiters.iter().position(|(w, _)| *w == id) {
            Some(i) => {
                self.room_waiters.remove(i);
                true
            }
            None => false,
        }
    }

    /// Every parked wait is dropped, as a restarted PostgreSQL drops its listener
    /// connections: their ids, in the order they parked (the driver fails them).
    pub fn drop_room_waiters(&mut self) -> Vec<EffectId> {
        std::mem::take(&mut self.room_waiters)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// How many waits for room messages are parked.
    pub fn room_waiting(&self) -> usize {
        self.room_waiters.len()
    }

    /// The next answer handed to a parked wait: its effect id and the messages.
    pub fn poll_room_handed_over(&mut self) -> Option<(EffectId, Vec<SharedRoomMessage>)> {
        self.room_handed.pop_front()
    }

    fn post_room_message(
        &mut self,
        now: Time,
        request: PostRoomMessage,
    ) -> Result<SharedRoomMessage, EffectError> {
        let PostRoomMessage {
            user_id,
            text,
            message_id,
        } = request;
        let name = <PostRoomMessage as Effect<Std>>::NAME;
        if let Some(id) = message_id {
            if let Some(&seq) = self.room_ids.get(&id) {
                let stored = usize::try_from(seq - 1).ok().and_then(|i| self.room.get(i));
                return match stored {
                    Some(m) if m.user_id == user_id && m.text == text => Ok(m.clone()),
                    _ => Err(EffectError::new(
                        name,
                        ErrorKind::Service {
                            code: Some(UNIQUE_VIOLATION.to_owned()),
                        },
                        format!(
                            "duplicate key value violates unique constraint \
                             \"chat_room_messages_id_key\": Key (id)=({id}) already exists."
                        ),
                    )),
                };
            }
        }
        let Some(author) = self.chat_names.get(&user_id) else {
            return Err(EffectError::new(
                name,
                ErrorKind::Service {
                    code: Some(FOREIGN_KEY_VIOLATION.to_owned()),
                },
                format!(
                    "insert or update on table \"chat_room_messages\" violates foreign key \
                     constraint \"chat_room_messages_user_id_fkey\": Key (user_id)=({user_id}) \
                     is not present in table \"chat_users\"."
                ),
            ));
        };
        let id = match message_id {
            Some(id) => id,
            None => loop {
                let id = self.rng.uuid_v4();
                if !self.room_ids.contains_key(&id) {
                    break id;
                }
            },
        };
        let seq = self.room.len() as u64 + 1;
        let message = SharedRoomMessage::new(RoomMessage {
            seq,
            id,
            user_id,
            name: author.clone(),
            text,
            created_at: wall_time(self.wall_epoch, now),
        });
        self.room_ids.insert(id, seq);
        self.room.push(message.clone());
        // Every parked wait this message is for gets it (and whatever else it is
        // owed), in the order they parked.
        let mut waiters = std::mem::take(&mut self.room_waiters);
        waiters.retain(|(waiter, wait)| {
            if wait.after_seq >= seq {
                return true;
            }
            let owed = self.room_after(wait.after_seq, wait.limit).to_vec();
            self.room_handed.push_back((*waiter, owed));
            false
        });
        self.room_waiters = waiters;
        Ok(message)
    }

    /// Inserts a user (as `CreateUser` does), for setting a scenario up.
    pub fn create_user(
        &mut self,
        email: String,
        name: String,
        password_hash: String,
    ) -> CreateUserOutcome {
        if self.by_email.contains_key(&email) {
            return CreateUserOutcome::EmailTaken { email };
        }
        let id = loop {
            let id = self.rng.uuid_v4();
            if !self.users.contains_key(&id) && !self.deleted.contains(&id) {
                break id;
            }
        };
        let user = User { id, email, name };
        self.by_email.insert(user.email.clone(), id);
        self.users.insert(
            id,
            UserRow {
                user: user.clone(),
                password_hash,
            },
        );
        CreateUserOutcome::Created(user)
    }

    /// The user with this id, or why there is none.
    pub fn get_user_by_id(&self, user_id: Uuid) -> UserLookup {
        match self.users.get(&user_id) {
            Some(row) => UserLookup::Found(row.user.clone()),
            None => UserLookup::NotFound {
                user_id,
                reason: self.not_found_reason(user_id),
            },
        }
    }

    /// The user with this email, if any (deleted users have none).
    pub fn user_by_email(&self, email: &str) -> Option<&User> {
        let id = self.by_email.get(email)?;
        self.users.get(id).map(|row| &row.user)
    }

    /// The stored password hash of a user.
    pub fn password_hash(&self, user_id: Uuid) -> Option<&str> {
        self.users
            .get(&user_id)
            .map(|row| row.password_hash.as_str())
    }

    /// Whether a user with this id existed and was deleted.
    pub fn is_deleted(&self, user_id: Uuid) -> bool {
        self.deleted.contains(&user_id)
    }

    /// Every current user, ordered by id.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values().map(|row| &row.user)
    }

    /// Every message of a user, in history order (`created_at`, then `id`), for
    /// checking a run; programs page through them with `ListMessagesForUser`.
    pub fn messages_for_user(&self, user_id: Uuid) -> &[ChatMessage] {
        self.messages.get(&user_id).map_or(&[], Vec::as_slice)
    }

    /// One page of a user's messages, as `ListMessagesForUser` answers it.
    pub fn message_page(&self, request: &ListMessagesForUser) -> MessagePage {
        let all = self.messages_for_user(request.user_id);
        let end = match request.before {
            Some(before) => all.partition_point(|m| m.cursor() < before),
            None => all.len(),
        };
        let size = usize::try_from(request.page_size()).unwrap_or(usize::MAX);
        let start = end.saturating_sub(size);
        MessagePage {
            messages: all[start..end].to_vec(),
            next: (start > 0).then(|| all[start].cursor()),
        }
    }

    /// How many chat messages are stored, over all users.
    pub fn message_count(&self) -> usize {
        self.messages.values().map(Vec::len).sum()
    }

    fn not_found_reason(&self, user_id: Uuid) -> NotFoundReason {
        if self.deleted.contains(&user_id) {
            NotFoundReason::Deleted
        } else {
            NotFoundReason::DoesNotExist
        }
    }

    fn list_users(&self, limit: u32, offset: u32) -> Vec<User> {
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        self.users
            .values()
            .skip(offset)
            .take(limit)
            .map(|row| row.user.clone())
            .collect()
    }

    fn update_user(&mut self, request: UpdateUser) -> Result<UserLookup, EffectError> {
        let UpdateUser {
            user_id,
            email,
            name,
        } = request;
        if !self.users.contains_key(&user_id) {
            return Ok(UserLookup::NotFound {
                user_id,
                reason: self.not_found_reason(user_id),
            });
        }
        if let Some(email) = &email {
            if self
                .by_email
                .get(email)
                .is_some_and(|owner| *owner != user_id)
            {
                return Err(EffectError::new(
                    <UpdateUser as Effect<Std>>::NAME,
                    ErrorKind::Service {
                        code: Some(UNIQUE_VIOLATION.to_owned()),
                    },
                    format!(
                        "duplicate key value violates unique constraint \"users_email_key\": \
                         Key (email)=({}) already exists.",
                        Excerpt::head(email, Excerpt::DEFAULT_LIMIT)
                    ),
                ));
            }
        }
        let Some(row) = self.users.get_mut(&user_id) else {
            return Ok(UserLookup::NotFound {
                user_id,
                reason: NotFoundReason::DoesNotExist,
            });
        };
        if let Some(email) = email {
            self.by_email.remove(&row.user.email);
            self.by_email.insert(email.clone(), user_id);
            row.user.email = email;
        }
        if let Some(name) = name {
            row.user.name = name;
        }
        Ok(UserLookup::Found(row.user.clone()))
    }

    fn delete_user(&mut self, user_id: Uuid) -> DeleteOutcome {
        match self.users.remove(&user_id) {
            Some(row) => {
                self.by_email.remove(&row.user.email);
                if let Some(gone) = self.messages.remove(&user_id) {
                    for message in gone {
                        self.message_ids.remove(&message.id);
                    }
                }
                self.deleted.insert(user_id);
                DeleteOutcome::Deleted
            }
            None => DeleteOutcome::NotFound,
        }
    }

    fn save_chat_message(
        &mut self,
        now: Time,
        user_id: Uuid,
        text: String,
        message_id: Option<Uuid>,
    ) -> Result<ChatMessage, EffectError> {
        if let Some(id) = message_id {
            if let Some(&(author, at)) = self.message_ids.get(&id) {
                let stored = self.messages_for_user(author);
                return match stored
                    .binary_search_by(|m| m.cursor().cmp(&at))
                    .ok()
                    .and_then(|i| stored.get(i))
                {
                    Some(stored) if stored.user_id == user_id && stored.text == text => {
                        Ok(stored.clone())
                    }
                    _ => Err(EffectError::new(
                        <SaveChatMessage as Effect<Std>>::NAME,
                        ErrorKind::Service {
                            code: Some(UNIQUE_VIOLATION.to_owned()),
                        },
                        format!(
                            "duplicate key value violates unique constraint \"chat_messages_pkey\": \
                             Key (id)=({id}) already exists."
                        ),
                    )),
                };
            }
        }
        if !self.users.contains_key(&user_id) {
            return Err(EffectError::new(
                <SaveChatMessage as Effect<Std>>::NAME,
                ErrorKind::Service {
                    code: Some(FOREIGN_KEY_VIOLATION.to_owned()),
                },
                format!(
                    "insert or update on table \"chat_messages\" violates foreign key constraint \
                     \"chat_messages_user_id_fkey\": Key (user_id)=({user_id}) is not present \
                     in table \"users\"."
                ),
            ));
        }
        let id = match message_id {
            Some(id) => id,
            None => self.rng.uuid_v4(),
        };
        let message = ChatMessage {
            id,
            user_id,
            text,
            created_at: wall_time(self.wall_epoch, now),
        };
        let cursor = message.cursor();
        self.message_ids.insert(id, (user_id, cursor));
        let messages = self.messages.entry(user_id).or_default();
        // History order. A driver may answer out of clock order, so this is not always
        // the end; ids are unique, so the place is.
        let at = messages.partition_point(|m| m.cursor() < cursor);
        messages.insert(at, message.clone());
        Ok(message)
    }
}

/// A failed statement as the PostgreSQL interpreter reports it: its SQLSTATE, not
/// retryable unless PostgreSQL says trying again may work.
fn sql_error(effect: &'static str, e: SqlFailure) -> EffectError {
    let retryable = matches!(
        e.code,
        crate::effect::sqlstate::SERIALIZATION_FAILURE | crate::effect::sqlstate::DEADLOCK_DETECTED
    );
    EffectError::new(
        effect,
        ErrorKind::Service {
            code: Some(e.code.to_owned()),
        },
        e.message,
    )
    .with_retryable(retryable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::{CreateUser, DeleteUser, GetUserById, ListUsers, MAX_MESSAGE_PAGE};

    fn db() -> FakeDatabase {
        FakeDatabase::new(Rng::from_seed(42))
    }

    fn performer(engine: u32, index: u32) -> Performer {
        Performer {
            engine,
            program: crate::ProgramId {
                index,
                generation: 0,
            },
        }
    }

    fn begin(db: &mut FakeDatabase, owner: Option<Performer>) -> Transaction {
        let request = DatabaseRequest::Begin(crate::effect::Begin {});
        let answer = match owner {
            Some(owner) => db.handle_from(Time::ZERO, owner, request),
            None => db.handle(Time::ZERO, request),
        };
        match answer {
            Ok(DatabaseResponse::Begin(tx)) => tx,
            other => panic!("expected a transaction, got {other:?}"),
        }
    }

    #[test]
    fn a_programs_end_rolls_back_only_the_transactions_that_program_left_open() {
        let mut db = db();
        let (ended, same_index_other_shard) = (performer(0, 1), performer(1, 1));
        let first = begin(&mut db, Some(ended));
        let committed = begin(&mut db, Some(ended));
        let second = begin(&mut db, Some(ended));
        let others = begin(&mut db, Some(same_index_other_shard));
        let unowned = begin(&mut db, None);
        let commit = DatabaseRequest::Commit(crate::effect::Commit { tx: committed });
        assert!(db.handle_from(Time::ZERO, ended, commit).is_ok());
        assert_eq!(db.program_ended(ended), vec![first, second]);
        assert_eq!(db.open_transactions(), vec![others, unowned]);
        assert_eq!(db.program_ended(ended), vec![]);
    }

    fn create(db: &mut FakeDatabase, email: &str) -> User {
        match db.create_user(email.into(), "Name".into(), "hash".into()) {
            CreateUserOutcome::Created(user) => user,
            other => panic!("expected created, got {other:?}"),
        }
    }

    fn handle(db: &mut FakeDatabase, now: Time, request: DatabaseRequest) -> DatabaseResponse {
        db.handle(now, request).expect("no error")
    }

    fn effect(n: u32) -> EffectId {
        EffectId {
            program: crate::ProgramId {
                index: n,
                generation: 0,
            },
            slot: 0,
            generation: 0,
        }
    }

    fn post(
        db: &mut FakeDatabase,
        user_id: Uuid,
        text: &str,
        id: Option<Uuid>,
    ) -> SharedRoomMessage {
        let request = PostRoomMessage {
            user_id,
            text: text.into(),
            message_id: id,
        };
        match db.handle(
            Time::from_secs(1),
            DatabaseRequest::PostRoomMessage(request),
        ) {
            Ok(DatabaseResponse::PostRoomMessage(m)) => m,
            other => panic!("expected a stored message, got {other:?}"),
        }
    }

    #[test]
    fn joining_finds_or_creates_one_user_per_name_and_posts_get_consecutive_seqs() {
        let mut db = db();
        let ada = db.join_chat("ada".into());
        assert_eq!(
            db.join_chat("ada".into()),
            ada,
            "a later join finds the user"
        );
        assert_ne!(
            db.join_chat("Ada".into()).id,
            ada.id,
            "names compare exactly"
        );
        let first = post(&mut db, ada.id, "one", None);
        let id = Uuid::from_u128(7);
        let second = post(&mut db, ada.id, "two", Some(id));
        assert_eq!((first.seq, second.seq), (1, 2));
        assert_eq!(second.name, "ada");
        // A retry of the same post answers the stored row; a reuse of its id for
        // another text is a unique violation; an unknown author a foreign-key one.
        assert_eq!(post(&mut db, ada.id, "two", Some(id)), second);
        let reuse = PostRoomMessage {
            user_id: ada.id,
            text: "other".into(),
            message_id: Some(id),
        };
        let err = db
            .handle(Time::ZERO, DatabaseRequest::PostRoomMessage(reuse))
            .unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::Service {
                code: Some("23505".into())
            }
        );
        let stranger = PostRoomMessage {
            user_id: Uuid::from_u128(9),
            text: "hi".into(),
            message_id: None,
        };
        let err = db
            .handle(Time::ZERO, DatabaseRequest::PostRoomMessage(stranger))
            .unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::Service {
                code: Some("23503".into())
            }
        );
        assert_eq!(db.room().len(), 2);
        let history: Vec<u64> = db.room_history(1).iter().map(|m| m.seq).collect();
        assert_eq!(history, [2]);
        assert_eq!(db.room_history(0).len(), 1, "a limit of 0 reads as 1");
    }

    #[test]
    fn a_parked_wait_gets_the_next_post_and_a_cancelled_one_leaves_nothing() {
        let mut db = db();
        let ada = db.join_chat("ada".into());
        let wait = |after_seq| WaitRoomMessages {
            after_seq,
            limit: 10,
        };
        assert_eq!(db.wait_room(effect(1), wait(0)), None);
        assert_eq!(db.wait_room(effect(2), wait(0)), None);
        assert!(db.stop_waiting_room(effect(2)));
        assert!(!db.stop_waiting_room(effect(2)), "stopped once");
        let m = post(&mut db, ada.id, "hello", None);
        assert_eq!(
            db.poll_room_handed_over(),
            Some((effect(1), vec![m.clone()]))
        );
        assert_eq!(
            db.poll_room_handed_over(),
            None,
            "the cancelled wait got nothing"
        );
        assert_eq!(db.room_waiting(), 0);
        // Something is there already: answered at once. A wait ahead of the room
        // stays parked until a message beyond it, and a restart drops it.
        assert_eq!(db.wait_room(effect(3), wait(0)), Some(vec![m]));
        assert_eq!(db.wait_room(effect(4), wait(1)), None);
        assert_eq!(db.drop_room_waiters(), [effect(4)]);
        post(&mut db, ada.id, "again", None);
        assert_eq!(db.poll_room_handed_over(), None);
    }

    #[test]
    fn every_wait_a_post_answers_holds_the_one_stored_message_not_a_copy() {
        let mut db = db();
        let ada = db.join_chat("ada".into());
        let wait = WaitRoomMessages {
            after_seq: 0,
            limit: 10,
        };
        for n in 1..=3 {
            assert_eq!(db.wait_room(effect(n), wait.clone()), None);
        }
        let stored = post(&mut db, ada.id, "hello", None);
        let mut answered = 0;
        while let Some((_, messages)) = db.poll_room_handed_over() {
            assert_eq!(messages.len(), 1);
            assert!(SharedRoomMessage::ptr_eq(&messages[0], &stored));
            answered += 1;
        }
        assert_eq!(answered, 3);
        let ready = db.wait_room(effect(4), wait).unwrap_or_default();
        assert!(SharedRoomMessage::ptr_eq(&ready[0], &stored));
        let history = db.room_history(50);
        assert!(SharedRoomMessage::ptr_eq(&history[0], &stored));
        let repeat = post(&mut db, ada.id, "hello", Some(stored.id));
        assert!(
            SharedRoomMessage::ptr_eq(&repeat, &stored),
            "a retried post"
        );
    }

    #[test]
    fn creating_a_user_with_a_taken_email_says_email_taken() {
        let mut db = db();
        create(&mut db, "a@x.io");
        let request = CreateUser {
            email: "a@x.io".into(),
            name: "B".into(),
            password_hash: "h".into(),
        };
        let response = handle(&mut db, Time::ZERO, DatabaseRequest::CreateUser(request));
        assert_eq!(
            response,
            DatabaseResponse::CreateUser(CreateUserOutcome::EmailTaken {
                email: "a@x.io".into()
            })
        );
        assert_eq!(db.users().count(), 1);
    }

    #[test]
    fn created_users_are_found_by_id_and_email_with_their_hash() {
        let mut db = db();
        let user = create(&mut db, "a@x.io");
        assert_eq!(db.get_user_by_id(user.id), UserLookup::Found(user.clone()));
        assert_eq!(db.user_by_email("a@x.io"), Some(&user));
        assert_eq!(db.password_hash(user.id), Some("hash"));
        assert_eq!(user.id.get_version_num(), 4);
    }

    #[test]
    fn updating_to_a_taken_email_fails_with_unique_violation_not_retryable() {
        let mut db = db();
        create(&mut db, "a@x.io");
        let b = create(&mut db, "b@x.io");
        let request = UpdateUser {
            user_id: b.id,
            email: Some("a@x.io".into()),
            name: Some("N".into()),
        };
        let err = db
            .handle(Time::ZERO, DatabaseRequest::UpdateUser(request))
            .unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::Service {
                code: Some("23505".into())
            }
        );
        assert!(!err.retryable);
        assert_eq!(err.effect, "Database.UpdateUser");
        // Nothing changed.
        assert_eq!(db.get_user_by_id(b.id), UserLookup::Found(b));
    }

    #[test]
    fn updating_email_and_name_frees_the_old_email() {
        let mut db = db();
        let a = create(&mut db, "a@x.io");
        let request = UpdateUser {
            user_id: a.id,
            email: Some("new@x.io".into()),
            name: Some("New".into()),
        };
        let response = handle(&mut db, Time::ZERO, DatabaseRequest::UpdateUser(request));
        let expected = User {
            id: a.id,
            email: "new@x.io".into(),
            name: "New".into(),
        };
        assert_eq!(
            response,
            DatabaseResponse::UpdateUser(UserLookup::Found(expected))
        );
        assert!(db.user_by_email("a@x.io").is_none());
        create(&mut db, "a@x.io");
    }

    #[test]
    fn updating_to_ones_own_email_is_not_a_conflict() {
        let mut db = db();
        let a = create(&mut db, "a@x.io");
        let request = UpdateUser {
            user_id: a.id,
            email: Some("a@x.io".into()),
            name: None,
        };
        let response = handle(&mut db, Time::ZERO, DatabaseRequest::UpdateUser(request));
        assert_eq!(response, DatabaseResponse::UpdateUser(UserLookup::Found(a)));
    }

    #[test]
    fn deleted_users_read_as_deleted_and_unknown_ids_as_does_not_exist() {
        let mut db = db();
        let a = create(&mut db, "a@x.io");
        let deleted = handle(
            &mut db,
            Time::ZERO,
            DatabaseRequest::DeleteUser(DeleteUser { user_id: a.id }),
        );
        assert_eq!(
            deleted,
            DatabaseResponse::DeleteUser(DeleteOutcome::Deleted)
        );
        let again = handle(
            &mut db,
            Time::ZERO,
            DatabaseRequest::DeleteUser(DeleteUser { user_id: a.id }),
        );
        assert_eq!(again, DatabaseResponse::DeleteUser(DeleteOutcome::NotFound));

        let lookup = handle(
            &mut db,
            Time::ZERO,
            DatabaseRequest::GetUserById(GetUserById { user_id: a.id }),
        );
        assert_eq!(
            lookup,
            DatabaseResponse::GetUserById(UserLookup::NotFound {
                user_id: a.id,
                reason: NotFoundReason::Deleted
            })
        );
        let unknown = Uuid::from_u128(1);
        assert_eq!(
            db.get_user_by_id(unknown),
            UserLookup::NotFound {
                user_id: unknown,
                reason: NotFoundReason::DoesNotExist
            }
        );
        let update = UpdateUser {
            user_id: a.id,
            email: None,
            name: Some("x".into()),
        };
        assert_eq!(
            handle(&mut db, Time::ZERO, DatabaseRequest::UpdateUser(update)),
            DatabaseResponse::UpdateUser(UserLookup::NotFound {
                user_id: a.id,
                reason: NotFoundReason::Deleted
            })
        );
        assert!(db.is_deleted(a.id));
        // The email is free again.
        create(&mut db, "a@x.io");
    }

    #[test]
    fn list_users_is_ordered_by_id_with_limit_and_offset() {
        let mut db = db();
        let mut ids: Vec<Uuid> = (0..5)
            .map(|i| create(&mut db, &format!("{i}@x.io")).id)
            .collect();
        ids.sort();
        let page = |db: &mut FakeDatabase, limit, offset| match handle(
            db,
            Time::ZERO,
            DatabaseRequest::ListUsers(ListUsers { limit, offset }),
        ) {
            DatabaseResponse::ListUsers(users) => {
                users.into_iter().map(|u| u.id).collect::<Vec<_>>()
            }
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(page(&mut db, 10, 0), ids);
        assert_eq!(page(&mut db, 2, 1), ids[1..3].to_vec());
        assert_eq!(page(&mut db, 0, 0), Vec::<Uuid>::new());
        assert_eq!(page(&mut db, 10, 4), ids[4..].to_vec());
        assert_eq!(page(&mut db, 10, 5), Vec::<Uuid>::new());
        assert_eq!(page(&mut db, u32::MAX, u32::MAX), Vec::<Uuid>::new());
        assert_eq!(page(&mut db, u32::MAX, 0).len(), 5);
    }

    #[test]
    fn saving_with_a_message_id_is_idempotent_and_a_reused_id_is_a_unique_violation() {
        let mut db = db();
        let a = create(&mut db, "a@x.io");
        let id = Uuid::from_u128(99);
        let save = |db: &mut FakeDatabase, text: &str, at| {
            db.handle(
                Time::from_secs(at),
                DatabaseRequest::SaveChatMessage(SaveChatMessage {
                    user_id: a.id,
                    text: text.into(),
                    message_id: Some(id),
                }),
            )
        };
        let first = save(&mut db, "once", 1).unwrap();
        let again = save(&mut db, "once", 5).unwrap();
        assert_eq!(
            first, again,
            "a retry returns the row stored the first time"
        );
        assert_eq!(db.messages_for_user(a.id).len(), 1);
        let err = save(&mut db, "other text", 6).unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::Service {
                code: Some(UNIQUE_VIOLATION.into())
            }
        );
        assert!(!err.retryable);
    }

    #[test]
    fn saved_messages_get_rng_ids_and_clock_timestamps() {
        let mut db = db();
        let a = create(&mut db, "a@x.io");
        let request = SaveChatMessage {
            user_id: a.id,
            text: "hi".into(),
            message_id: None,
        };
        let DatabaseResponse::SaveChatMessage(message) = handle(
            &mut db,
            Time::from_secs(90),
            DatabaseRequest::SaveChatMessage(request),
        ) else {
            panic!("expected a message");
        };
        assert_eq!(
            message.created_at.to_string(),
            "2026-01-01T00:01:30.000000Z"
        );
        assert_eq!(message.user_id, a.id);
        assert_eq!(message.id.get_version_num(), 4);
        assert_ne!(message.id, a.id);
    }

    /// Saves `text` for `user_id` at `secs`, under `id` when given.
    fn save(db: &mut FakeDatabase, secs: u64, user_id: Uuid, text: &str, id: Option<u128>) {
        db.handle(
            Time::from_secs(secs),
            DatabaseRequest::SaveChatMessage(SaveChatMessage {
                user_id,
                text: text.into(),
                message_id: id.map(Uuid::from_u128),
            }),
        )
        .expect("saved");
    }

    fn page(db: &mut FakeDatabase, request: ListMessagesForUser) -> MessagePage {
        match handle(
            db,
            Time::ZERO,
            DatabaseRequest::ListMessagesForUser(request),
        ) {
            DatabaseResponse::ListMessagesForUser(page) => page,
            other => panic!("expected a page, got {other:?}"),
        }
    }

    #[test]
    fn messages_are_listed_oldest_first_then_by_id() {
        let mut db = db();
        let a = create(&mut db, "a@x.io");
        let b = create(&mut db, "b@x.io");
        // A driver may answer effects out of clock order; the list still sorts by
        // time, and equal times by id (not by insertion, which PostgreSQL cannot see).
        save(&mut db, 5, a.id, "second", Some(1));
        save(&mut db, 1, a.id, "first", Some(9));
        save(&mut db, 5, a.id, "third", Some(2));
        save(&mut db, 2, b.id, "other user", None);
        let page = page(&mut db, ListMessagesForUser::latest(a.id, 10));
        let texts: Vec<&str> = page.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["first", "second", "third"]);
        assert_eq!(page.next, None, "the page reaches the oldest message");
        assert_eq!(db.message_count(), 4);
    }

    #[test]
    fn a_long_history_is_answered_one_bounded_page_at_a_time() {
        let mut db = db();
        let a = create(&mut db, "a@x.io");
        for i in 0..1000 {
            save(&mut db, i, a.id, &i.to_string(), None);
        }
        let all = db.messages_for_user(a.id).to_vec();
        assert_eq!(all.len(), 1000);

        let newest = page(&mut db, ListMessagesForUser::latest(a.id, 50));
        assert_eq!(newest.messages, all[950..]);
        assert_eq!(newest.next, Some(all[950].cursor()));

        let older = page(
            &mut db,
            ListMessagesForUser {
                before: newest.next,
                ..ListMessagesForUser::latest(a.id, 50)
            },
        );
        assert_eq!(older.messages, all[900..950]);

        // Too large a limit is clamped to the maximum; 0 reads as 1.
        let clamped = page(&mut db, ListMessagesForUser::latest(a.id, u32::MAX));
        assert_eq!(clamped.messages.len(), MAX_MESSAGE_PAGE as usize);
        assert_eq!(clamped.messages, all[1000 - MAX_MESSAGE_PAGE as usize..]);
        let one = page(&mut db, ListMessagesForUser::latest(a.id, 0));
        assert_eq!(one.messages, all[999..]);
        assert_eq!(one.next, Some(all[999].cursor()));
    }

    #[test]
    fn a_user_without_messages_gets_one_empty_last_page() {
        let mut db = db();
        let a = create(&mut db, "a@x.io");
        assert_eq!(
            page(&mut db, ListMessagesForUser::latest(a.id, 50)),
            MessagePage::default()
        );
        let nobody = ListMessagesForUser::latest(Uuid::from_u128(3), 50);
        assert_eq!(page(&mut db, nobody), MessagePage::default());
    }

    /// Walks `user`'s whole history back from the newest, `limit` at a time, saving
    /// `newer` more messages (later than any yet) after each page; returns the messages
    /// in the order the pages give them, oldest first.
    fn walk(db: &mut FakeDatabase, user: Uuid, limit: u32, newer: u64) -> Vec<ChatMessage> {
        let mut pages = Vec::new();
        let mut before = None;
        let mut clock = 1_000_000;
        loop {
            let request = ListMessagesForUser {
                user_id: user,
                limit,
                before,
            };
            let size = request.page_size() as usize;
            let page = page(db, request);
            assert!(page.messages.len() <= size, "a page holds at most {size}");
            if page.next.is_some() {
                assert_eq!(page.messages.len(), size, "only the last page is short");
            }
            for _ in 0..newer {
                clock += 1;
                save(db, clock, user, "newer", None);
            }
            if let (Some(next), Some(previous)) = (page.next, before) {
                assert!(next < previous, "each page moves the cursor back");
            }
            pages.push(page.messages);
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        pages.into_iter().rev().flatten().collect()
    }

    proptest::proptest! {
        /// Paging back walks the whole history once, oldest first, with no repeats and
        /// no gaps, whatever the limit, with ties in `created_at`, and while newer
        /// messages keep arriving between pages.
        #[test]
        fn paging_back_walks_the_whole_history_in_order_without_repeats_or_gaps(
            seed in proptest::prelude::any::<u64>(),
            times in proptest::collection::vec(0..50u64, 0..400),
            limit in 0..MAX_MESSAGE_PAGE + 20,
            newer in 0..3u64,
        ) {
            let mut db = FakeDatabase::new(Rng::from_seed(seed));
            let a = create(&mut db, "a@x.io");
            let b = create(&mut db, "b@x.io");
            for (i, secs) in times.iter().enumerate() {
                let author = if i % 5 == 4 { b.id } else { a.id };
                save(&mut db, *secs, author, &i.to_string(), None);
            }
            let before = db.messages_for_user(a.id).to_vec();
            proptest::prop_assert!(before.windows(2).all(|w| w[0].cursor() < w[1].cursor()));
            let walked = walk(&mut db, a.id, limit, newer);
            proptest::prop_assert_eq!(walked, before);
        }
    }

    #[test]
    fn saving_a_message_for_an_unknown_or_deleted_user_is_a_foreign_key_violation() {
        let mut db = db();
        let a = create(&mut db, "a@x.io");
        db.handle(
            Time::ZERO,
            DatabaseRequest::SaveChatMessage(SaveChatMessage {
                user_id: a.id,
                text: "x".into(),
                message_id: None,
            }),
        )
        .expect("saved");
        db.handle(
            Time::ZERO,
            DatabaseRequest::DeleteUser(DeleteUser { user_id: a.id }),
        )
        .expect("deleted");
        // ON DELETE CASCADE took the messages with the user.
        assert_eq!(db.message_count(), 0);
        for user_id in [a.id, Uuid::from_u128(7)] {
            let request = SaveChatMessage {
                user_id,
                text: "late".into(),
                message_id: None,
            };
            let err = db
                .handle(Time::ZERO, DatabaseRequest::SaveChatMessage(request))
                .unwrap_err();
            assert_eq!(
                err.kind,
                ErrorKind::Service {
                    code: Some("23503".into())
                }
            );
            assert!(!err.retryable);
            assert_eq!(err.effect, "Database.SaveChatMessage");
        }
        assert!(db.messages_for_user(a.id).is_empty());
    }

    #[test]
    fn the_same_seed_gives_the_same_ids() {
        let mut a = db();
        let mut b = db();
        assert_eq!(create(&mut a, "a@x.io").id, create(&mut b, "a@x.io").id);
    }
}
