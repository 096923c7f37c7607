//! The Database adapter (`effectful::postgres::database`) against the real server, in
//! a schema of its own (dropped at the end): every request goes plan → extended query
//! → finish, as the drivers run it, and answers as the in-memory fake does.

use effectful::effect::{
    CreateUser, CreateUserOutcome, DatabaseRequest, DatabaseResponse, DeleteOutcome, DeleteUser,
    GetUserById, ListMessagesForUser, ListUsers, MessagePage, NotFoundReason, SaveChatMessage,
    UpdateUser, User, UserLookup,
};
use effectful::effect::{JoinChat, PostRoomMessage};
use effectful::postgres::database::{self, MIGRATIONS, RoomNotice};
use effectful::{EffectError, ErrorKind};
use uuid::Uuid;

use crate::harness::{Client, START_SERVER, config};

/// A connection whose `search_path` is a fresh schema, dropped when done.
struct Schema {
    client: Client,
    name: String,
}

impl Schema {
    fn new(tag: &str) -> Schema {
        let name = format!("effectful_pg_core_{tag}_{}", std::process::id());
        let mut admin = Client::connect();
        admin
            .query(&format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            ))
            .expect("create the test schema");
        let client = Client::connect_to(5432, config().options(format!("-c search_path={name}")))
            .unwrap_or_else(|e| panic!("{e}\n{START_SERVER}"));
        Schema { client, name }
    }

    fn run(&mut self, request: DatabaseRequest) -> Result<DatabaseResponse, EffectError> {
        let plan = database::plan(&request);
        let outcome = self
            .client
            .execute(plan.sql(), plan.params())
            .map(|set| vec![set]);
        plan.finish(outcome)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect_to(5432, config()) {
            let _ = admin.query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

fn create(s: &mut Schema, email: &str) -> User {
    match s.run(DatabaseRequest::CreateUser(CreateUser {
        email: email.into(),
        name: "n".into(),
        password_hash: "h".into(),
    })) {
        Ok(DatabaseResponse::CreateUser(CreateUserOutcome::Created(user))) => user,
        other => panic!("expected a new user, got {other:?}"),
    }
}

fn code(err: &EffectError) -> Option<&str> {
    match &err.kind {
        ErrorKind::Service { code } => code.as_deref(),
        _ => None,
    }
}

#[test]
fn migrations_are_idempotent_and_recorded_once() {
    let mut s = Schema::new("migrate");
    let sql = database::migration_sql(MIGRATIONS);
    s.client.query(&sql).expect("first run");
    s.client.query(&sql).expect("a second run changes nothing");
    let recorded = s
        .client
        .query("SELECT count(*) FROM effectful_migrations")
        .expect("the record");
    assert_eq!(
        recorded[0].rows[0].get::<String, _>(0).unwrap(),
        MIGRATIONS.len().to_string()
    );
}

#[test]
fn users_behave_as_the_fake_says() {
    let mut s = Schema::new("users");
    s.client
        .query(&database::migration_sql(MIGRATIONS))
        .expect("migrations");
    let a = create(&mut s, "a@x.io");
    let b = create(&mut s, "b@x.io");
    assert_eq!(
        s.run(DatabaseRequest::CreateUser(CreateUser {
            email: "a@x.io".into(),
            name: "other".into(),
            password_hash: "h".into(),
        }))
        .unwrap(),
        DatabaseResponse::CreateUser(CreateUserOutcome::EmailTaken {
            email: "a@x.io".into()
        })
    );
    assert_eq!(
        s.run(DatabaseRequest::GetUserById(GetUserById { user_id: a.id }))
            .unwrap(),
        DatabaseResponse::GetUserById(UserLookup::Found(a.clone()))
    );
    // Update to a taken email: a unique violation, not retryable.
    let err = s
        .run(DatabaseRequest::UpdateUser(UpdateUser {
            user_id: b.id,
            email: Some("a@x.io".into()),
            name: None,
        }))
        .unwrap_err();
    assert_eq!(code(&err), Some("23505"), "{err}");
    assert!(!err.retryable);
    // Update of the name only keeps the email; the own email is not "taken".
    let renamed = s
        .run(DatabaseRequest::UpdateUser(UpdateUser {
            user_id: b.id,
            email: Some("b@x.io".into()),
            name: Some("bee".into()),
        }))
        .unwrap();
    assert_eq!(
        renamed,
        DatabaseResponse::UpdateUser(UserLookup::Found(User {
            name: "bee".into(),
            ..b.clone()
        }))
    );
    let mut ids = vec![a.id, b.id];
    ids.sort();
    match s
        .run(DatabaseRequest::ListUsers(ListUsers {
            limit: u32::MAX,
            offset: 0,
        }))
        .unwrap()
    {
        DatabaseResponse::ListUsers(users) => {
            assert_eq!(users.iter().map(|u| u.id).collect::<Vec<_>>(), ids)
        }
        other => panic!("{other:?}"),
    }
    // Delete: Deleted, then NotFound; lookups tell Deleted from DoesNotExist.
    let delete = || DatabaseRequest::DeleteUser(DeleteUser { user_id: a.id });
    assert_eq!(
        s.run(delete()).unwrap(),
        DatabaseResponse::DeleteUser(DeleteOutcome::Deleted)
    );
    assert_eq!(
        s.run(delete()).unwrap(),
        DatabaseResponse::DeleteUser(DeleteOutcome::NotFound)
    );
    for (user_id, reason) in [
        (a.id, NotFoundReason::Deleted),
        (Uuid::from_u128(1), NotFoundReason::DoesNotExist),
    ] {
        let expected = UserLookup::NotFound { user_id, reason };
        assert_eq!(
            s.run(DatabaseRequest::GetUserById(GetUserById { user_id }))
                .unwrap(),
            DatabaseResponse::GetUserById(expected.clone())
        );
        assert_eq!(
            s.run(DatabaseRequest::UpdateUser(UpdateUser {
                user_id,
                email: None,
                name: Some("x".into()),
            }))
            .unwrap(),
            DatabaseResponse::UpdateUser(expected)
        );
    }
    // The deleted user's email is free again.
    create(&mut s, "a@x.io");
}

#[test]
fn messages_are_idempotent_by_id_refer_to_users_and_page_back_by_keyset() {
    let mut s = Schema::new("messages");
    s.client
        .query(&database::migration_sql(MIGRATIONS))
        .expect("migrations");
    let a = create(&mut s, "a@x.io");
    let save = |s: &mut Schema, user_id: Uuid, text: &str, id: Option<u128>| {
        s.run(DatabaseRequest::SaveChatMessage(SaveChatMessage {
            user_id,
            text: text.into(),
            message_id: id.map(Uuid::from_u128),
        }))
    };
    let first = save(&mut s, a.id, "once", Some(99)).unwrap();
    assert_eq!(save(&mut s, a.id, "once", Some(99)).unwrap(), first);
    let err = save(&mut s, a.id, "other text", Some(99)).unwrap_err();
    assert_eq!(code(&err), Some("23505"), "{err}");
    assert!(!err.retryable);
    let err = save(&mut s, Uuid::from_u128(7), "x", None).unwrap_err();
    assert_eq!(code(&err), Some("23503"), "{err}");
    assert!(!err.retryable);
    assert_eq!(err.effect, "Database.SaveChatMessage");

    for i in 0..25 {
        save(&mut s, a.id, &i.to_string(), None).expect("saved");
    }
    // Walk back 10 at a time: 26 messages in history order, no repeats, no gaps.
    let mut walked = Vec::new();
    let mut before = None;
    loop {
        let page = match s
            .run(DatabaseRequest::ListMessagesForUser(ListMessagesForUser {
                user_id: a.id,
                limit: 10,
                before,
            }))
            .unwrap()
        {
            DatabaseResponse::ListMessagesForUser(page) => page,
            other => panic!("{other:?}"),
        };
        assert!(page.messages.len() <= 10);
        assert!(
            page.messages
                .windows(2)
                .all(|w| w[0].cursor() < w[1].cursor())
        );
        walked.splice(0..0, page.messages.iter().cloned());
        match page.next {
            Some(next) => {
                assert_eq!(Some(next), page.messages.first().map(|m| m.cursor()));
                before = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(walked.len(), 26);
    assert!(walked.windows(2).all(|w| w[0].cursor() < w[1].cursor()));
    assert_eq!(walked.iter().filter(|m| m.text == "once").count(), 1);

    // Deleting the user takes the messages with it (ON DELETE CASCADE).
    s.run(DatabaseRequest::DeleteUser(DeleteUser { user_id: a.id }))
        .unwrap();
    assert_eq!(
        s.run(DatabaseRequest::ListMessagesForUser(
            ListMessagesForUser::latest(a.id, 10)
        ))
        .unwrap(),
        DatabaseResponse::ListMessagesForUser(MessagePage::default())
    );
}

#[test]
fn a_room_posts_notification_carries_the_stored_message_when_it_fits() {
    let mut s = Schema::new("notice");
    s.client
        .query(&database::migration_sql(MIGRATIONS))
        .expect("migrations");
    // The posting connection listens too: a session hears its own notifications.
    s.client
        .query(database::LISTEN_ROOM)
        .expect("listening on the room's channel");
    let user = match s.run(DatabaseRequest::JoinChat(JoinChat {
        name: "zoë 2 ü".into(),
    })) {
        Ok(DatabaseResponse::JoinChat(user)) => user,
        other => panic!("joined: {other:?}"),
    };
    let post = |s: &mut Schema, text: String| match s.run(DatabaseRequest::PostRoomMessage(
        PostRoomMessage {
            user_id: user.id,
            text,
            message_id: None,
        },
    )) {
        Ok(DatabaseResponse::PostRoomMessage(stored)) => stored,
        other => panic!("posted: {other:?}"),
    };
    let stored = post(&mut s, " hello, wörld 😀 ".into());
    let notified = s.client.wait_notification();
    assert!(notified.channel.starts_with(database::ROOM_CHANNEL));
    assert_eq!(
        Some(notified.process_id),
        s.client.conn.cancel_request().map(|k| k.process_id()),
        "sent by the posting backend"
    );
    assert_eq!(
        database::room_notice(&notified.payload),
        RoomNotice::Message((*stored).clone()),
        "the payload reads as the stored message: {:?}",
        notified.payload
    );
    // 2,000 four-byte characters do not fit in a notification: the post still
    // succeeds, whole, and its notification names only its seq.
    let long = "😀".repeat(2000);
    let stored = post(&mut s, long.clone());
    assert_eq!(stored.text, long);
    assert_eq!(
        database::room_notice(&s.client.wait_notification().payload),
        RoomNotice::Seq(stored.seq)
    );
}
