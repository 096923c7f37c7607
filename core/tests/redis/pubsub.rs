//! Pub/sub on both protocols: confirmations answer the command, messages become
//! events, and RESP3 pushes never take a reply's place.

use effectful::Time;
use effectful::redis::{Event, Message, SubscriptionChange, SubscriptionKind, Value};

use crate::support::{bulk, cmd, events, resp2, resp3};

fn message(channel: &str, payload: &str) -> Event {
    Event::Message(Message {
        kind: SubscriptionKind::Channel,
        pattern: None,
        channel: channel.into(),
        payload: payload.into(),
    })
}

fn change(kind: SubscriptionKind, subscribed: bool, channel: Option<&str>, count: i64) -> Event {
    Event::Subscription(SubscriptionChange {
        kind,
        subscribed,
        channel: channel.map(Into::into),
        count,
    })
}

fn confirmation(kind: &str, channel: Value, count: i64) -> Value {
    Value::Array(vec![bulk(kind), channel, Value::Int(count)])
}

#[test]
fn resp2_subscribe_is_answered_once_per_channel_then_messages_flow() {
    let mut conn = resp2();
    let sub = conn
        .send(Time::ZERO, &cmd(&["SUBSCRIBE", "a", "b"]))
        .unwrap();
    conn.handle_input(
        Time::ZERO,
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
    );
    assert_eq!(
        events(&mut conn),
        vec![
            change(SubscriptionKind::Channel, true, Some("a"), 1),
            change(SubscriptionKind::Channel, true, Some("b"), 2),
            Event::Reply {
                id: sub,
                result: Ok(Value::Array(vec![
                    confirmation("subscribe", bulk("a"), 1),
                    confirmation("subscribe", bulk("b"), 2),
                ]))
            },
        ]
    );
    assert_eq!(conn.subscriptions().count(SubscriptionKind::Channel), 2);

    // A message, then PING's odd RESP2 subscribed-mode answer, then a pattern message.
    let ping = conn.send(Time::ZERO, &cmd(&["PING"])).unwrap();
    let psub = conn.send(Time::ZERO, &cmd(&["PSUBSCRIBE", "n*"])).unwrap();
    conn.handle_input(
        Time::ZERO,
        b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n\
*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:3\r\n\
*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$3\r\nyes\r\n",
    );
    assert_eq!(
        events(&mut conn),
        vec![
            message("a", "hi"),
            Event::Reply {
                id: ping,
                result: Ok(Value::Array(vec![bulk("pong"), bulk("")]))
            },
            change(SubscriptionKind::Pattern, true, Some("n*"), 3),
            Event::Reply {
                id: psub,
                result: Ok(Value::Array(vec![confirmation(
                    "psubscribe",
                    bulk("n*"),
                    3
                )]))
            },
            Event::Message(Message {
                kind: SubscriptionKind::Pattern,
                pattern: Some(b"n*".to_vec()),
                channel: b"news".to_vec(),
                payload: b"yes".to_vec(),
            }),
        ]
    );
}

#[test]
fn resp2_unsubscribe_from_everything_waits_for_every_channel() {
    let mut conn = resp2();
    conn.send(Time::ZERO, &cmd(&["SUBSCRIBE", "a", "b"]))
        .unwrap();
    conn.handle_input(
        Time::ZERO,
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
    );
    events(&mut conn);
    let unsub = conn.send(Time::ZERO, &cmd(&["UNSUBSCRIBE"])).unwrap();
    let lrange = conn
        .send(Time::ZERO, &cmd(&["LRANGE", "l", "0", "-1"]))
        .unwrap();
    conn.handle_input(Time::ZERO, b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n");
    assert_eq!(
        events(&mut conn),
        vec![change(SubscriptionKind::Channel, false, Some("b"), 1)],
        "one of two confirmations: UNSUBSCRIBE is not answered yet"
    );
    // The last confirmation, then a list that merely looks like a message: no longer
    // subscribed, it is LRANGE's reply.
    conn.handle_input(
        Time::ZERO,
        b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n*3\r\n$7\r\nmessage\r\n$1\r\nx\r\n$1\r\ny\r\n",
    );
    let evs = events(&mut conn);
    assert_eq!(
        evs[0],
        change(SubscriptionKind::Channel, false, Some("a"), 0)
    );
    assert!(
        matches!(&evs[1], Event::Reply { id, result: Ok(Value::Array(v)) } if *id == unsub && v.len() == 2)
    );
    assert_eq!(
        evs[2],
        Event::Reply {
            id: lrange,
            result: Ok(Value::Array(vec![bulk("message"), bulk("x"), bulk("y")]))
        }
    );
    assert!(conn.subscriptions().is_empty());
}

#[test]
fn unsubscribe_with_no_subscriptions_is_answered_once_with_no_channel() {
    let mut conn = resp2();
    let id = conn.send(Time::ZERO, &cmd(&["PUNSUBSCRIBE"])).unwrap();
    conn.handle_input(Time::ZERO, b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n");
    assert_eq!(
        events(&mut conn),
        vec![
            change(SubscriptionKind::Pattern, false, None, 0),
            Event::Reply {
                id,
                result: Ok(Value::Array(vec![confirmation(
                    "punsubscribe",
                    Value::Nil,
                    0
                )]))
            },
        ]
    );
}

#[test]
fn resp3_pushes_are_routed_out_before_replies_are_matched() {
    let mut conn = resp3();
    let sub = conn.send(Time::ZERO, &cmd(&["SUBSCRIBE", "a"])).unwrap();
    let get = conn.send(Time::ZERO, &cmd(&["GET", "k"])).unwrap();
    let incr = conn.send(Time::ZERO, &cmd(&["INCR", "n"])).unwrap();
    // Confirmation, a message before GET's reply, an invalidation push between the
    // two replies, and another message after.
    conn.handle_input(
        Time::ZERO,
        b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n\
>3\r\n$7\r\nmessage\r\n$1\r\na\r\n$3\r\none\r\n\
$1\r\nv\r\n\
>2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n\
:7\r\n\
>3\r\n$7\r\nmessage\r\n$1\r\na\r\n$3\r\ntwo\r\n",
    );
    assert_eq!(
        events(&mut conn),
        vec![
            change(SubscriptionKind::Channel, true, Some("a"), 1),
            Event::Reply {
                id: sub,
                result: Ok(Value::Array(vec![confirmation("subscribe", bulk("a"), 1)]))
            },
            message("a", "one"),
            Event::Reply {
                id: get,
                result: Ok(bulk("v"))
            },
            Event::Push(Value::Push(vec![
                bulk("invalidate"),
                Value::Array(vec![bulk("k")])
            ])),
            Event::Reply {
                id: incr,
                result: Ok(Value::Int(7))
            },
            message("a", "two"),
        ]
    );
}

#[test]
fn resp3_arrays_that_look_like_messages_are_replies() {
    let mut conn = resp3();
    let id = conn
        .send(Time::ZERO, &cmd(&["LRANGE", "l", "0", "-1"]))
        .unwrap();
    conn.handle_input(Time::ZERO, b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n");
    assert_eq!(
        events(&mut conn),
        vec![Event::Reply {
            id,
            result: Ok(Value::Array(vec![bulk("message"), bulk("a"), bulk("b")]))
        }]
    );
}

#[test]
fn a_subscribe_refused_by_the_server_is_answered_with_its_error() {
    let mut conn = resp3();
    let id = conn
        .send(Time::ZERO, &cmd(&["SUBSCRIBE", "secret"]))
        .unwrap();
    conn.handle_input(
        Time::ZERO,
        b"-NOPERM this user has no permissions to access the 'secret' channel\r\n",
    );
    assert!(matches!(
        conn.poll_event(),
        Some(Event::Reply { id: got, result: Err(_) }) if got == id
    ));
    assert!(conn.subscriptions().is_empty());
}

#[test]
fn a_subscription_the_server_ends_on_its_own_is_an_event() {
    let mut conn = resp3();
    conn.send(Time::ZERO, &cmd(&["SSUBSCRIBE", "s"])).unwrap();
    conn.handle_input(Time::ZERO, b">3\r\n$10\r\nssubscribe\r\n$1\r\ns\r\n:1\r\n");
    events(&mut conn);
    assert_eq!(conn.subscriptions().count(SubscriptionKind::Shard), 1);
    // The slot moved: the server unsubscribes us, unasked.
    conn.handle_input(
        Time::ZERO,
        b">3\r\n$12\r\nsunsubscribe\r\n$1\r\ns\r\n:0\r\n",
    );
    assert_eq!(
        events(&mut conn),
        vec![change(SubscriptionKind::Shard, false, Some("s"), 0)]
    );
    assert!(conn.subscriptions().is_empty());
    // An unasked subscription is told but not believed.
    conn.handle_input(Time::ZERO, b">3\r\n$9\r\nsubscribe\r\n$1\r\nz\r\n:1\r\n");
    assert_eq!(events(&mut conn).len(), 1);
    assert!(conn.subscriptions().is_empty());
}
