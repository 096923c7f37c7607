//! The connection's story on scripted bytes: handshakes, pipelining, typed errors,
//! timeouts and the connection's end.

use std::time::Duration;

use effectful::Time;
use effectful::redis::{
    CommandError, ConnectionError, Event, HandshakeStep, Password, Protocol, ProtocolError,
    Redirect, RedisConfig, RedisConnection, SendError, ServerErrorKind, Value,
};

use crate::support::{HELLO_REPLY, bulk, cmd, events, resp2, resp3, transmit};

fn resp(parts: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for p in parts {
        out.extend_from_slice(format!("${}\r\n{p}\r\n", p.len()).as_bytes());
    }
    out
}

#[test]
fn resp3_handshake_sends_hello_with_auth_and_name_then_select() {
    let mut config = RedisConfig::default();
    config.username = Some("app".into());
    config.password = Some(Password::new("s3cret"));
    config.client_name = Some("worker-1".into());
    config.db = 2;
    let mut conn = RedisConnection::new(config, Time::ZERO);
    // A command sent before the handshake ends is pipelined behind it.
    let get = conn.send(Time::ZERO, &cmd(&["GET", "k"])).unwrap();
    let mut expected = resp(&["HELLO", "3", "AUTH", "app", "s3cret", "SETNAME", "worker-1"]);
    expected.extend(resp(&["SELECT", "2"]));
    expected.extend(resp(&["GET", "k"]));
    assert_eq!(transmit(&mut conn), expected);
    assert!(!conn.is_ready());

    let mut reply = HELLO_REPLY.to_vec();
    reply.extend_from_slice(b"+OK\r\n$1\r\nv\r\n");
    conn.handle_input(Time::from_millis(1), &reply);
    let evs = events(&mut conn);
    let Event::Ready { protocol, server } = &evs[0] else {
        panic!("Ready first, got {evs:?}")
    };
    assert_eq!(*protocol, Protocol::Resp3);
    let server = server.as_ref().expect("HELLO's answer");
    assert_eq!(
        (server.version.as_str(), server.proto, server.id),
        ("7.0.15", 3, 19)
    );
    assert_eq!(
        evs[1],
        Event::Reply {
            id: get,
            result: Ok(bulk("v"))
        }
    );
    assert_eq!((conn.protocol(), conn.db()), (Protocol::Resp3, 2));
}

#[test]
fn resp3_password_alone_authenticates_as_default() {
    let mut config = RedisConfig::default();
    config.password = Some(Password::new("pw"));
    let mut conn = RedisConnection::new(config, Time::ZERO);
    assert_eq!(
        transmit(&mut conn),
        resp(&["HELLO", "3", "AUTH", "default", "pw"])
    );
}

#[test]
fn resp2_handshake_uses_auth_with_password_or_user_and_password() {
    let mut config = RedisConfig::default();
    config.protocol = Protocol::Resp2;
    config.password = Some(Password::new("pw"));
    let mut conn = RedisConnection::new(config.clone(), Time::ZERO);
    assert_eq!(transmit(&mut conn), resp(&["AUTH", "pw"]));
    conn.handle_input(Time::ZERO, b"+OK\r\n");
    assert_eq!(
        events(&mut conn),
        vec![Event::Ready {
            protocol: Protocol::Resp2,
            server: None
        }]
    );

    config.username = Some("alice".into());
    config.client_name = Some("n".into());
    let mut conn = RedisConnection::new(config, Time::ZERO);
    let mut expected = resp(&["AUTH", "alice", "pw"]);
    expected.extend(resp(&["CLIENT", "SETNAME", "n"]));
    assert_eq!(transmit(&mut conn), expected);
    conn.handle_input(Time::ZERO, b"+OK\r\n");
    assert!(!conn.is_ready(), "still waiting for CLIENT SETNAME");
    conn.handle_input(Time::ZERO, b"+OK\r\n");
    assert!(conn.is_ready());
}

#[test]
fn a_wrong_password_closes_the_connection_and_fails_what_was_queued() {
    let mut config = RedisConfig::default();
    config.password = Some(Password::new("wrong"));
    let mut conn = RedisConnection::new(config, Time::ZERO);
    let queued = conn.send(Time::ZERO, &cmd(&["PING"])).unwrap();
    transmit(&mut conn);
    conn.handle_input(
        Time::ZERO,
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    let evs = events(&mut conn);
    assert_eq!(
        evs[0],
        Event::Reply {
            id: queued,
            result: Err(CommandError::ConnectionClosed { sent: true })
        }
    );
    let Event::Closed(ConnectionError::Handshake { step, error }) = &evs[1] else {
        panic!("Closed by the handshake, got {evs:?}")
    };
    assert_eq!(*step, HandshakeStep::Hello);
    assert_eq!(error.kind(), &ServerErrorKind::WrongPass);
    assert!(
        !ConnectionError::Handshake {
            step: *step,
            error: error.clone()
        }
        .is_retryable()
    );
    assert!(conn.is_closed());
    assert_eq!(
        conn.send(Time::ZERO, &cmd(&["PING"])),
        Err(SendError::Closed)
    );
}

#[test]
fn a_server_without_resp3_is_told_apart_with_a_hint() {
    let mut conn = RedisConnection::new(RedisConfig::default(), Time::ZERO);
    transmit(&mut conn);
    conn.handle_input(Time::ZERO, b"-ERR unknown command 'HELLO'\r\n");
    let Some(Event::Closed(e)) = conn.poll_event() else {
        panic!("closed")
    };
    assert!(e.to_string().contains("protocol=2"), "{e}");
}

#[test]
fn a_database_out_of_range_fails_the_select_step() {
    let mut config = RedisConfig::default();
    config.protocol = Protocol::Resp2;
    config.db = 99;
    let mut conn = RedisConnection::new(config, Time::ZERO);
    assert_eq!(transmit(&mut conn), resp(&["SELECT", "99"]));
    conn.handle_input(Time::ZERO, b"-ERR DB index is out of range\r\n");
    assert!(matches!(
        conn.poll_event(),
        Some(Event::Closed(ConnectionError::Handshake {
            step: HandshakeStep::Select,
            ..
        }))
    ));
}

#[test]
fn pipelined_replies_are_matched_in_the_order_sent() {
    let mut conn = resp2();
    let ids: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|k| conn.send(Time::ZERO, &cmd(&["GET", k])).unwrap())
        .collect();
    assert_eq!(conn.in_flight(), 3);
    conn.handle_input(Time::ZERO, b"$1\r\n1\r\n$-1\r\n$1\r\n3\r\n");
    assert_eq!(
        events(&mut conn),
        vec![
            Event::Reply {
                id: ids[0],
                result: Ok(bulk("1"))
            },
            Event::Reply {
                id: ids[1],
                result: Ok(Value::Nil)
            },
            Event::Reply {
                id: ids[2],
                result: Ok(bulk("3"))
            },
        ]
    );
    assert_eq!(conn.in_flight(), 0);
}

#[test]
fn server_errors_are_typed() {
    let cases: &[(&[u8], ServerErrorKind)] = &[
        (b"-ERR syntax error\r\n", ServerErrorKind::Err),
        (
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            ServerErrorKind::WrongType,
        ),
        (
            b"-NOAUTH Authentication required.\r\n",
            ServerErrorKind::NoAuth,
        ),
        (
            b"-WRONGPASS invalid username-password pair\r\n",
            ServerErrorKind::WrongPass,
        ),
        (
            b"-NOPERM this user has no permissions to run the 'get' command\r\n",
            ServerErrorKind::NoPerm,
        ),
        (
            b"-MOVED 3999 127.0.0.1:6381\r\n",
            ServerErrorKind::Moved(Redirect {
                slot: 3999,
                address: "127.0.0.1:6381".into(),
            }),
        ),
        (
            b"-ASK 3999 127.0.0.1:6381\r\n",
            ServerErrorKind::Ask(Redirect {
                slot: 3999,
                address: "127.0.0.1:6381".into(),
            }),
        ),
        (b"-MOVED nonsense\r\n", ServerErrorKind::Other),
        (
            b"-LOADING Redis is loading the dataset in memory\r\n",
            ServerErrorKind::Loading,
        ),
        (
            b"-BUSY Redis is busy running a script\r\n",
            ServerErrorKind::Busy,
        ),
        (
            b"-TRYAGAIN Multiple keys request during rehashing\r\n",
            ServerErrorKind::TryAgain,
        ),
        (
            b"-CLUSTERDOWN The cluster is down\r\n",
            ServerErrorKind::ClusterDown,
        ),
        (
            b"-MASTERDOWN Link with MASTER is down\r\n",
            ServerErrorKind::MasterDown,
        ),
        (
            b"-READONLY You can't write against a read only replica.\r\n",
            ServerErrorKind::ReadOnly,
        ),
        (
            b"-NOSCRIPT No matching script.\r\n",
            ServerErrorKind::NoScript,
        ),
        (
            b"-EXECABORT Transaction discarded\r\n",
            ServerErrorKind::ExecAbort,
        ),
        (
            b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
            ServerErrorKind::Oom,
        ),
        (
            b"-NOPROTO unsupported protocol version\r\n",
            ServerErrorKind::NoProto,
        ),
        (
            b"-BUSYGROUP Consumer Group name already exists\r\n",
            ServerErrorKind::Other,
        ),
        (b"!21\r\nSYNTAX invalid syntax\r\n", ServerErrorKind::Other),
    ];
    for (bytes, kind) in cases {
        let mut conn = resp2();
        let id = conn.send(Time::ZERO, &cmd(&["X"])).unwrap();
        conn.handle_input(Time::ZERO, bytes);
        let Some(Event::Reply {
            id: got,
            result: Err(CommandError::Server(e)),
        }) = conn.poll_event()
        else {
            panic!("a server error for {bytes:?}")
        };
        assert_eq!(got, id);
        assert_eq!(e.kind(), kind, "{bytes:?}");
        assert!(
            !conn.is_closed(),
            "a server error leaves the connection open"
        );
    }
}

#[test]
fn server_errors_say_what_to_do_and_whether_to_retry() {
    let noauth = effectful::redis::ServerError::parse("NOAUTH Authentication required.");
    assert_eq!(noauth.code(), "NOAUTH");
    assert!(
        noauth.to_string().contains("redis://:PASSWORD@host"),
        "{noauth}"
    );
    assert!(!noauth.is_retryable());
    assert!(effectful::redis::ServerError::parse("LOADING loading").is_retryable());
    assert!(!effectful::redis::ServerError::parse("WRONGTYPE x").is_retryable());
}

#[test]
fn a_command_past_its_timeout_fails_and_its_late_reply_is_dropped() {
    let mut conn = resp2();
    let slow = conn
        .send(Time::ZERO, &cmd(&["DEBUG", "SLEEP", "6"]))
        .unwrap();
    let next = conn.send(Time::from_secs(1), &cmd(&["PING"])).unwrap();
    assert_eq!(conn.poll_timeout(), Some(Time::from_secs(5)));
    conn.handle_timeout(Time::from_secs(4));
    assert_eq!(conn.poll_event(), None, "early timeouts do nothing");
    conn.handle_timeout(Time::from_secs(5));
    assert_eq!(
        events(&mut conn),
        vec![Event::Reply {
            id: slow,
            result: Err(CommandError::TimedOut {
                after: Duration::from_secs(5)
            })
        }]
    );
    assert_eq!(conn.poll_timeout(), Some(Time::from_secs(6)));
    assert_eq!((conn.in_flight(), conn.timed_out_in_flight()), (2, 1));
    conn.handle_input(Time::from_millis(5_500), b"+OK\r\n+PONG\r\n");
    assert_eq!(
        events(&mut conn),
        vec![Event::Reply {
            id: next,
            result: Ok(Value::Simple("PONG".into()))
        }]
    );
    assert_eq!(conn.poll_timeout(), None);
    assert_eq!((conn.in_flight(), conn.timed_out_in_flight()), (0, 0));
}

#[test]
fn an_unanswered_handshake_closes_the_connection() {
    let mut conn = RedisConnection::new(RedisConfig::default(), Time::ZERO);
    assert_eq!(conn.poll_timeout(), Some(Time::from_secs(5)));
    conn.handle_timeout(Time::from_secs(5));
    assert_eq!(
        conn.poll_event(),
        Some(Event::Closed(ConnectionError::HandshakeTimedOut {
            step: HandshakeStep::Hello,
            after: Duration::from_secs(5)
        }))
    );
    assert_eq!(conn.poll_timeout(), None);
}

#[test]
fn a_disconnect_tells_each_waiting_command_whether_it_was_sent() {
    let mut conn = resp2();
    let sent = conn.send(Time::ZERO, &cmd(&["INCR", "n"])).unwrap();
    transmit(&mut conn);
    let unsent = conn.send(Time::ZERO, &cmd(&["INCR", "n"])).unwrap();
    conn.handle_disconnect(Time::ZERO);
    assert_eq!(
        events(&mut conn),
        vec![
            Event::Reply {
                id: sent,
                result: Err(CommandError::ConnectionClosed { sent: true })
            },
            Event::Reply {
                id: unsent,
                result: Err(CommandError::ConnectionClosed { sent: false })
            },
            Event::Closed(ConnectionError::Lost),
        ]
    );
    assert_eq!(transmit(&mut conn), b"", "nothing is written after the end");
    conn.handle_input(Time::ZERO, b"+OK\r\n");
    assert_eq!(conn.poll_event(), None, "nothing is read after the end");
}

#[test]
fn a_reply_with_nothing_waiting_is_a_protocol_error() {
    let mut conn = resp2();
    conn.handle_input(Time::ZERO, b"+OK\r\n");
    assert!(matches!(
        conn.poll_event(),
        Some(Event::Closed(ConnectionError::Protocol(
            ProtocolError::Unexpected(_)
        )))
    ));
}

#[test]
fn commands_that_break_reply_matching_are_refused() {
    let mut conn = resp2();
    for parts in [
        &["MONITOR"][..],
        &["sync"],
        &["PSYNC", "?", "-1"],
        &["client", "reply", "off"],
    ] {
        assert!(matches!(
            conn.send(Time::ZERO, &cmd(parts)),
            Err(SendError::Unsupported { .. })
        ));
    }
    assert!(conn.send(Time::ZERO, &cmd(&["CLIENT", "ID"])).is_ok());
}

#[test]
fn a_command_sent_as_parts_is_written_and_sorted_as_the_same_command_would_be() {
    let (mut by_parts, mut by_command) = (resp2(), resp2());
    let refused = |r: Result<_, SendError>| matches!(r, Err(SendError::Unsupported { .. }));
    // Refused alike: one by its name, one by its first argument (given in pieces).
    assert!(refused(by_parts.send_parts(Time::ZERO, b"monitor", &[])));
    assert!(refused(by_parts.send_parts(
        Time::ZERO,
        b"CLIENT",
        &[&[b"re", b"ply"], &[b"off"]]
    )));
    assert!(refused(
        by_command.send(Time::ZERO, &cmd(&["CLIENT", "REPLY", "OFF"]))
    ));
    by_parts
        .send_parts(Time::ZERO, b"GET", &[&[b"app:", b"k"]])
        .unwrap();
    by_parts
        .send_parts(Time::ZERO, b"SELECT", &[&[b"1", b"2"]])
        .unwrap();
    by_command
        .send(Time::ZERO, &cmd(&["GET", "app:k"]))
        .unwrap();
    by_command
        .send(Time::ZERO, &cmd(&["SELECT", "12"]))
        .unwrap();
    assert_eq!(transmit(&mut by_parts), transmit(&mut by_command));
    for conn in [&mut by_parts, &mut by_command] {
        conn.handle_input(Time::ZERO, b"$1\r\nv\r\n+OK\r\n");
        assert_eq!(conn.db(), 12, "SELECT read from its pieces");
    }
}

#[test]
fn too_many_commands_in_flight_are_refused() {
    let mut config = RedisConfig::default();
    config.protocol = Protocol::Resp2;
    config.max_pending = 2;
    let mut conn = RedisConnection::new(config, Time::ZERO);
    conn.send(Time::ZERO, &cmd(&["PING"])).unwrap();
    conn.send(Time::ZERO, &cmd(&["PING"])).unwrap();
    assert_eq!(
        conn.send(Time::ZERO, &cmd(&["PING"])),
        Err(SendError::TooManyPending { max: 2 })
    );
}

#[test]
fn select_hello_and_reset_change_the_connection_when_they_succeed() {
    let mut conn = resp2();
    conn.send(Time::ZERO, &cmd(&["SELECT", "3"])).unwrap();
    conn.send(Time::ZERO, &cmd(&["SELECT", "4"])).unwrap();
    conn.handle_input(Time::ZERO, b"+OK\r\n-ERR DB index is out of range\r\n");
    assert_eq!(conn.db(), 3);
    conn.send(Time::ZERO, &cmd(&["HELLO", "3"])).unwrap();
    conn.handle_input(Time::ZERO, HELLO_REPLY);
    assert_eq!(conn.protocol(), Protocol::Resp3);
    conn.send(Time::ZERO, &cmd(&["RESET"])).unwrap();
    conn.handle_input(Time::ZERO, b"+RESET\r\n");
    assert_eq!((conn.protocol(), conn.db()), (Protocol::Resp2, 0));
}

#[test]
fn close_fails_waiting_commands_and_ends_the_connection() {
    let mut conn = resp3();
    let id = conn.send(Time::ZERO, &cmd(&["PING"])).unwrap();
    conn.close(Time::ZERO);
    assert_eq!(
        events(&mut conn),
        vec![
            Event::Reply {
                id,
                result: Err(CommandError::ConnectionClosed { sent: false })
            },
            Event::Closed(ConnectionError::Closed),
        ]
    );
}

#[test]
fn secrets_never_show_in_debug_output() {
    let mut config = RedisConfig::default();
    config.password = Some(Password::new("hunter2"));
    let conn = RedisConnection::new(config.clone(), Time::ZERO);
    for text in [
        format!("{config:?}"),
        format!("{conn:?}"),
        format!("{:?}", cmd(&["AUTH", "u", "hunter2"])),
        format!("{:?}", cmd(&["HELLO", "3", "AUTH", "u", "hunter2"])),
        format!("{:?}", cmd(&["CONFIG", "SET", "requirepass", "hunter2"])),
    ] {
        assert!(!text.contains("hunter2"), "{text}");
    }
}
