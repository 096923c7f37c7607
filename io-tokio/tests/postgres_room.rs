//! Chat room waits on the real PostgreSQL server: parked waits woken by a post's
//! NOTIFY, many waits on one query, waits served from what the service already read
//! (or parked without a query), a cancelled wait, a listener that dies (waits catch
//! up once it listens again), and concurrent first joins of one name. Each
//! test in a schema of its own.

use std::time::Duration;

use effectful::effect::{
    Execute, JoinChat, PostRoomMessage, SharedRoomMessage, SqlValue, WaitRoomMessages,
};
use effectful::{EffectError, Fx, join_all};
use effectful_tokio::Runtime;
use effectful_tokio::postgres::PgDatabase;

mod pg_support;

use pg_support::{Schema, psql, wait_until};

/// A schema of this test's own (dropped at the end; its pool's backends carry its
/// name as `application_name`), a pool and a runtime on it.
struct Room {
    schema: Schema,
    db: PgDatabase,
    runtime: Runtime,
}

impl Room {
    fn new(tag: &str) -> Room {
        let schema = Schema::new(&format!("room_{tag}"));
        let config = schema.config().pool_size(2, 6);
        let db = PgDatabase::start(config).expect("started");
        let runtime = db
            .register(Runtime::builder().shards(2))
            .build()
            .expect("runtime");
        Room {
            schema,
            db,
            runtime,
        }
    }

    /// Runs `program` to its end.
    fn run<T: Send + 'static, Fut: Future<Output = T> + 'static>(
        &self,
        program: impl FnOnce(Fx) -> Fut + Send + 'static,
    ) -> T {
        self.runtime.block_on(async {
            self.runtime
                .handle()
                .spawn(program)
                .await
                .expect("spawned")
                .await
                .expect("the program finished")
        })
    }

    /// Starts `n` programs that each wait for messages after `after_seq`.
    fn waiters(
        &self,
        n: usize,
        after_seq: u64,
    ) -> Vec<effectful_tokio::JoinHandle<Result<Vec<SharedRoomMessage>, EffectError>>> {
        self.runtime.block_on(async {
            let mut handles = Vec::new();
            for _ in 0..n {
                handles.push(
                    self.runtime
                        .handle()
                        .spawn(move |fx| async move {
                            fx.perform(WaitRoomMessages {
                                after_seq,
                                limit: 50,
                            })
                            .await
                        })
                        .await
                        .expect("spawned"),
                );
            }
            handles
        })
    }

    /// One wait for messages after `after_seq`, run to its answer.
    fn read_after(&self, after_seq: u64) -> Result<Vec<SharedRoomMessage>, EffectError> {
        self.run(move |fx| async move {
            fx.perform(WaitRoomMessages {
                after_seq,
                limit: 50,
            })
            .await
        })
    }

    fn post(&self, name: &'static str, text: &'static str) -> SharedRoomMessage {
        self.run(move |fx| async move {
            let user = fx
                .perform(JoinChat { name: name.into() })
                .await
                .expect("joined");
            fx.perform(PostRoomMessage {
                user_id: user.id,
                text: text.into(),
                message_id: None,
            })
            .await
            .expect("posted")
        })
    }

    /// The backend that listens on the room's channel: its last statement is the
    /// `LISTEN` (`effectful_listen_room()`), or a room wait's query (they run on the
    /// listener's connection).
    fn listener_filter(&self) -> String {
        format!(
            "application_name = '{}' AND (query LIKE 'SELECT effectful_listen_room()%' OR query LIKE '%WHERE m.seq > $1%')",
            self.schema.name
        )
    }

    fn listening(&self) -> bool {
        self.listeners() > 0
    }

    /// How many shards listen (each shard's client has its own listener).
    fn listeners(&self) -> usize {
        let count = psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE {}",
            self.listener_filter()
        ));
        count.parse::<usize>().expect("a count")
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.db.shutdown(Duration::from_secs(2));
    }
}

fn texts(result: Result<Vec<SharedRoomMessage>, EffectError>) -> Vec<String> {
    result
        .expect("the wait is answered")
        .into_iter()
        .map(|m| format!("{}:{}", m.seq, m.text))
        .collect()
}

#[test]
fn parked_waits_are_woken_by_a_post_and_each_gets_it_once() {
    let room = Room::new("wake");
    let waiting = room.waiters(40, 0);
    wait_until("the waits listen", || room.listening());
    // Nothing is posted yet: they are all still waiting.
    std::thread::sleep(Duration::from_millis(100));
    let posted = room.post("alice", "hello");
    assert_eq!(posted.seq, 1);
    room.runtime.block_on(async {
        for handle in waiting {
            let result = handle.await.expect("finished");
            assert_eq!(texts(result), ["1:hello"]);
        }
    });
    // Later waits after seq 1 wait for seq 2, and one after seq 0 is answered at once.
    let later = room.waiters(5, 1);
    let at_once = room.read_after(0);
    assert_eq!(texts(at_once), ["1:hello"]);
    room.post("bob", "two");
    room.runtime.block_on(async {
        for handle in later {
            assert_eq!(texts(handle.await.expect("finished")), ["2:two"]);
        }
    });
}

#[test]
fn a_cancelled_wait_leaves_the_others_waiting() {
    let room = Room::new("cancel");
    // Each program waits under a short timeout; the others wait as long as it takes.
    let given_up = room.run(|fx| async move {
        let waits = (0..10).map(|_| {
            let fx = fx.clone();
            async move {
                fx.timeout(
                    Duration::from_millis(200),
                    fx.perform(WaitRoomMessages {
                        after_seq: 0,
                        limit: 50,
                    }),
                )
                .await
            }
        });
        join_all(waits).await
    });
    assert!(
        given_up.iter().all(Result::is_err),
        "every wait gave up: {given_up:?}"
    );
    let waiting = room.waiters(3, 0);
    wait_until("the waits listen", || room.listening());
    room.post("carol", "after the cancels");
    room.runtime.block_on(async {
        for handle in waiting {
            assert_eq!(
                texts(handle.await.expect("finished")),
                ["1:after the cancels"]
            );
        }
    });
}

#[test]
fn waits_catch_up_after_the_listener_dies() {
    let room = Room::new("listener");
    let waiting = room.waiters(8, 0);
    wait_until("the waits listen", || room.listening());
    // Kill the listening backend and post at once, before the pool listens again:
    // the notification is lost, the waits catch up when the listener is back.
    psql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {}",
        room.listener_filter()
    ));
    psql(&format!(
        "SET search_path = {s}; \
         SELECT seq FROM {s}.effectful_post_room_message(\
            (SELECT id FROM {s}.effectful_join_chat('psql')), 'while nobody listened', NULL)",
        s = room.schema.name
    ));
    room.runtime.block_on(async {
        for handle in waiting {
            assert_eq!(
                texts(handle.await.expect("finished")),
                ["1:while nobody listened"]
            );
        }
    });
    wait_until("the listener is back", || room.listening());
}

/// While the room's table is renamed away every query for the room fails, so a wait
/// that is answered (or parks quietly) in that time was served without a query.
fn with_room_table_hidden<T>(room: &Room, during: impl FnOnce() -> T) -> T {
    let s = &room.schema.name;
    psql(&format!(
        "ALTER TABLE {s}.chat_room_messages RENAME TO hidden_messages"
    ));
    let result = during();
    psql(&format!(
        "ALTER TABLE {s}.hidden_messages RENAME TO chat_room_messages"
    ));
    result
}

#[test]
fn waits_for_messages_already_read_are_answered_without_a_query() {
    let room = Room::new("cached");
    for text in ["one", "two", "three"] {
        room.post("dora", text);
    }
    // Each shard's client keeps what its own queries read: one read on each shard.
    for _ in 0..2 {
        let first = room.read_after(0);
        assert_eq!(texts(first), ["1:one", "2:two", "3:three"]);
    }
    let answers = with_room_table_hidden(&room, || collect_answers(&room, room.waiters(40, 1)));
    assert_eq!(answers.len(), 40);
    for answer in answers {
        assert_eq!(texts(answer), ["2:two", "3:three"]);
    }
}

#[test]
fn waits_after_the_newest_message_park_without_a_query() {
    let room = Room::new("horizon");
    room.post("erin", "first");
    // These waits (one per shard) find nothing after seq 1 while their shard's
    // listener listens: every later post will notify, so waits after seq 1 need not
    // ask the server.
    let first = room.waiters(2, 1);
    wait_until("both shards' waits listen", || room.listeners() == 2);
    std::thread::sleep(Duration::from_millis(100));
    let later = with_room_table_hidden(&room, || {
        let later = room.waiters(20, 1);
        // Had they queried, they would have failed (the table is gone) and finished.
        std::thread::sleep(Duration::from_millis(300));
        let mut later = later;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for handle in &mut later {
            let polled = std::pin::Pin::new(handle).poll(&mut cx);
            assert!(
                polled.is_pending(),
                "the waits are parked, not answered: {polled:?}"
            );
        }
        later
    });
    room.post("erin", "second");
    room.runtime.block_on(async {
        for handle in first.into_iter().chain(later) {
            assert_eq!(texts(handle.await.expect("finished")), ["2:second"]);
        }
    });
}

/// Parks `n` waits after `after_seq` (spread over both shards), and waits until both
/// shards listen and the waits have had time to park.
fn parked_waiters(
    room: &Room,
    n: usize,
    after_seq: u64,
) -> Vec<effectful_tokio::JoinHandle<Result<Vec<SharedRoomMessage>, EffectError>>> {
    let waiting = room.waiters(n, after_seq);
    wait_until("both shards' waits listen", || room.listeners() == 2);
    std::thread::sleep(Duration::from_millis(200));
    waiting
}

fn collect_answers(
    room: &Room,
    waiting: Vec<effectful_tokio::JoinHandle<Result<Vec<SharedRoomMessage>, EffectError>>>,
) -> Vec<Result<Vec<SharedRoomMessage>, EffectError>> {
    room.runtime.block_on(async {
        let mut answers = Vec::new();
        for handle in waiting {
            answers.push(handle.await.expect("finished"));
        }
        answers
    })
}

/// A notification payload as `effectful_post_room_message` writes it (see
/// `effectful::postgres::database::room_notice`).
fn payload(seq: u64, author: &SharedRoomMessage, name: &str, text: &str) -> String {
    format!(
        "{seq} {} {} 1764683094123456 {} {name}{text}",
        uuid::Uuid::from_u128(0xfeed + u128::from(seq)),
        author.user_id,
        name.chars().count()
    )
}

#[test]
fn a_notification_from_the_process_own_backend_is_delivered_without_a_query() {
    let room = Room::new("trusted");
    let first = room.post("fay", "first");
    // Each shard reads message 1 (programs go to the shards in turn): a notified
    // message is believed only if it is the next after what its shard knows.
    for _ in 0..2 {
        let read = room.read_after(0);
        assert_eq!(texts(read), ["1:first"]);
    }
    let waiting = parked_waiters(&room, 20, 1);
    // Sent by a statement of a program, so by a backend of this process's pool (on
    // one shard; the other shard's listener trusts it as well): the waits on both
    // shards are answered from the payload, since a query would fail now.
    let payload = payload(2, &first, "fay", "from the pool");
    let answers = with_room_table_hidden(&room, || {
        let notified = room.run(move |fx| async move {
            fx.perform(Execute::new(
                "SELECT pg_notify(effectful_room_channel(), $1)",
                vec![SqlValue::Text(payload)],
            ))
            .await
        });
        assert_eq!(notified, Ok(1));
        collect_answers(&room, waiting)
    });
    assert_eq!(answers.len(), 20);
    for answer in answers {
        assert_eq!(texts(answer), ["2:from the pool"]);
    }
}

#[test]
fn a_strangers_notification_is_not_trusted_to_carry_a_message() {
    let room = Room::new("stranger");
    let first = room.post("gus", "first");
    let waiting = parked_waiters(&room, 4, 1);
    // psql's backend is not the pool's: its payload is taken only as "something
    // changed", so the waits read the room, and fail, since the table is hidden.
    let forged = payload(2, &first, "gus", "forged");
    let answers = with_room_table_hidden(&room, || {
        psql(&format!(
            "SET search_path = {}; SELECT pg_notify(effectful_room_channel(), '{forged}')",
            room.schema.name
        ));
        collect_answers(&room, waiting)
    });
    for answer in answers {
        assert!(
            answer.is_err(),
            "the wait read the (hidden) table instead of believing the payload: {answer:?}"
        );
    }
    // A real post after the table is back reaches new waits.
    let later = parked_waiters(&room, 4, 1);
    room.post("gus", "real");
    for answer in collect_answers(&room, later) {
        assert_eq!(texts(answer), ["2:real"]);
    }
}

#[test]
fn posts_reach_every_shard_as_stored_long_ones_included() {
    let room = Room::new("stored");
    room.post("hal", "first");
    let waiting = parked_waiters(&room, 6, 1);
    let posted = room.post("hal", "a message from the pool");
    let stored = psql(&format!(
        "SELECT seq || '|' || id || '|' || user_id || '|' || text || '|' || \
         (extract(epoch FROM created_at) * 1000000)::bigint FROM {}.chat_room_messages WHERE seq = 2",
        room.schema.name
    ));
    for answer in collect_answers(&room, waiting) {
        let got = answer.expect("answered");
        assert_eq!(got.len(), 1);
        let m = &got[0];
        assert_eq!(**m, *posted, "every shard delivers the stored message");
        assert_eq!(
            format!(
                "{}|{}|{}|{}|{}",
                m.seq,
                m.id,
                m.user_id,
                m.text,
                m.created_at.unix_micros()
            ),
            stored
        );
        assert_eq!(m.name, "hal");
    }
    // Too long for a notification (2,000 four-byte characters): its notification
    // names only its seq, and the waits read it.
    let waiting = parked_waiters(&room, 6, 2);
    let long: &'static str = "😀".repeat(2000).leak();
    room.post("hal", long);
    for answer in collect_answers(&room, waiting) {
        let got = answer.expect("answered");
        assert_eq!((got.len(), got[0].seq, got[0].text.as_str()), (1, 3, long));
    }
}

#[test]
fn concurrent_first_joins_of_one_name_make_one_user() {
    let room = Room::new("join");
    let ids = room.run(|fx| async move {
        let joins = (0..32).map(|_| {
            fx.perform(JoinChat {
                name: "dave".into(),
            })
        });
        join_all(joins).await
    });
    let first = ids[0].as_ref().expect("joined").id;
    assert!(
        ids.iter().all(|r| r.as_ref().map(|u| u.id) == Ok(first)),
        "{ids:?}"
    );
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM {}.chat_users WHERE name = 'dave'",
            room.schema.name
        )),
        "1"
    );
}
