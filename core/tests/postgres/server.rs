//! `PgConnection` against the real PostgreSQL 15 on 127.0.0.1:5432 (trust auth,
//! database `test`). Each test uses temporary tables and its own channel names, so
//! suites running beside it are never disturbed.

use std::time::Duration;

use effectful::Timestamp;
use effectful::postgres::{Date, Event, TransactionStatus, Type, TypeError, Value, sqlstate};
use uuid::Uuid;

use crate::harness::{Client, config};

fn text(set: &effectful::postgres::ResultSet, row: usize, col: usize) -> Option<String> {
    set.rows[row]
        .get::<Option<String>, _>(col)
        .expect("a text value")
}

#[test]
fn startup_reports_parameters_backend_key_and_idle_status() {
    let client = Client::connect();
    assert!(client.conn.is_ready());
    assert!(
        client
            .conn
            .parameter("server_version")
            .is_some_and(|v| v.starts_with("15")),
        "{:?}",
        client.conn.parameter("server_version")
    );
    assert_eq!(client.conn.parameter("client_encoding"), Some("UTF8"));
    assert!(client.conn.cancel_request().is_some());
    assert_eq!(client.conn.transaction_status(), TransactionStatus::Idle);
}

#[test]
fn a_simple_query_returns_every_statements_text_rows_and_tag() {
    let mut client = Client::connect();
    let sets = client
        .query("SELECT 1 AS one, 'x' AS ex, NULL::int AS nothing; SELECT generate_series(1, 3); ; CREATE TEMP TABLE t_simple (a int)")
        .unwrap();
    assert_eq!(
        sets.len(),
        3,
        "the empty statement between ';' sends nothing"
    );
    assert_eq!(sets[0].tag, "SELECT 1");
    assert_eq!(sets[0].columns[1].name, "ex");
    assert_eq!(text(&sets[0], 0, 0).as_deref(), Some("1"));
    assert_eq!(text(&sets[0], 0, 1).as_deref(), Some("x"));
    assert_eq!(text(&sets[0], 0, 2), None);
    assert_eq!(sets[0].rows[0].get::<i32, _>("one").unwrap(), 1);
    assert_eq!(sets[1].rows.len(), 3);
    assert_eq!(sets[1].rows_affected(), Some(3));
    assert_eq!(sets[2].tag, "CREATE TABLE");
    assert!(sets[2].columns.is_empty());
}

#[test]
fn an_empty_query_string_gives_one_empty_result() {
    let mut client = Client::connect();
    let sets = client.query("").unwrap();
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].tag, "");
}

#[test]
fn an_extended_query_binds_binary_parameters_and_reads_binary_results() {
    let mut client = Client::connect();
    let set = client
        .execute(
            "SELECT $1::int4 + 1 AS answer, $2::text || '!' AS shout",
            &[Value::Int4(41), "hey".into()],
        )
        .unwrap();
    assert_eq!(set.tag, "SELECT 1");
    assert_eq!(set.rows[0].get::<i32, _>("answer").unwrap(), 42);
    assert_eq!(set.rows[0].get::<String, _>(1).unwrap(), "hey!");
}

/// One column per listed type, a row of values, a row of NULLs, a row of arrays with
/// NULL items; everything comes back equal, and the server's own text for the values
/// whose printing we reproduce matches ours.
#[test]
fn every_listed_type_round_trips_with_nulls_and_arrays() {
    let mut client = Client::connect();
    client
        .query(
            "CREATE TEMP TABLE t_types (
                b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric,
                t text, v varchar(20), by bytea, u uuid, ts timestamptz, d date, j jsonb,
                ab bool[], ai2 int2[], ai4 int4[], ai8 int8[], af4 float4[], af8 float8[],
                an numeric[], at text[], av varchar[], aby bytea[], au uuid[],
                ats timestamptz[], ad date[], aj jsonb[]
            )",
        )
        .unwrap();
    let uuid = Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
    let ts = Timestamp::from_unix_micros(1_700_000_000_123_456);
    let date = Date::from_ymd(2024, 2, 29).unwrap();
    let scalars = vec![
        Value::Bool(true),
        Value::Int2(-32768),
        Value::Int4(i32::MAX),
        Value::Int8(i64::MIN),
        Value::Float4(1.5),
        Value::Float8(-2.25e100),
        Value::Numeric("-12345678901234567890.000123".into()),
        Value::Text("héllo, wörld".into()),
        Value::Text("varchar".into()),
        Value::Bytea(vec![0, 1, 254, 255]),
        Value::Uuid(uuid),
        Value::Timestamptz(ts),
        Value::Date(date),
        Value::Jsonb(r#"{"a": [1, 2, null]}"#.into()),
    ];
    let array = |element: Type, items: Vec<Value>| Value::Array { element, items };
    let arrays = vec![
        array(Type::BOOL, vec![Value::Bool(false), Value::Null]),
        array(Type::INT2, vec![Value::Int2(7), Value::Null]),
        array(
            Type::INT4,
            vec![Value::Int4(1), Value::Null, Value::Int4(3)],
        ),
        array(Type::INT8, vec![Value::Null, Value::Int8(9)]),
        array(Type::FLOAT4, vec![Value::Float4(0.25)]),
        array(Type::FLOAT8, vec![Value::Float8(1e-300), Value::Null]),
        array(
            Type::NUMERIC,
            vec![Value::Numeric("1.50".into()), Value::Null],
        ),
        array(
            Type::TEXT,
            vec![Value::Text("a".into()), Value::Null, Value::Text("".into())],
        ),
        array(Type::TEXT, vec![Value::Text("v".into())]),
        array(Type::BYTEA, vec![Value::Bytea(vec![9]), Value::Null]),
        array(Type::UUID, vec![Value::Uuid(uuid)]),
        array(Type::TIMESTAMPTZ, vec![Value::Timestamptz(ts), Value::Null]),
        array(Type::DATE, vec![Value::Date(date)]),
        array(Type::JSONB, vec![Value::Jsonb("[]".into()), Value::Null]),
    ];
    let empty_arrays: Vec<Value> = arrays
        .iter()
        .map(|a| match a {
            Value::Array { element, .. } => array(*element, vec![]),
            _ => unreachable!(),
        })
        .collect();
    let placeholders: Vec<String> = (1..=28).map(|i| format!("${i}")).collect();
    let insert = format!("INSERT INTO t_types VALUES ({})", placeholders.join(", "));
    let mut all: Vec<Value> = scalars.iter().chain(&arrays).cloned().collect();
    client.execute(&insert, &all).unwrap();
    client.execute(&insert, &vec![Value::Null; 28]).unwrap();
    let mut with_empty: Vec<Value> = scalars.clone();
    with_empty.extend(empty_arrays.iter().cloned());
    client.execute(&insert, &with_empty).unwrap();

    let set = client.execute("SELECT * FROM t_types", &[]).unwrap();
    assert_eq!(set.rows.len(), 3);
    // varchar and text[]-as-varchar[] come back as the column's own types.
    assert_eq!(set.columns[8].ty, Type::VARCHAR);
    assert_eq!(set.columns[22].ty, Type::VARCHAR_ARRAY);
    all[22] = array(Type::VARCHAR, vec![Value::Text("v".into())]);
    assert_eq!(set.rows[0].values().unwrap(), all);
    assert_eq!(set.rows[1].values().unwrap(), vec![Value::Null; 28]);
    let mut expected_empty = with_empty.clone();
    expected_empty[22] = array(Type::VARCHAR, vec![]);
    assert_eq!(set.rows[2].values().unwrap(), expected_empty);

    // Typed reads of the same row.
    let row = &set.rows[0];
    assert!(row.get::<bool, _>("b").unwrap());
    assert_eq!(row.get::<i64, _>("i4").unwrap(), i64::from(i32::MAX));
    assert_eq!(
        row.get::<String, _>("n").unwrap(),
        "-12345678901234567890.000123"
    );
    assert_eq!(row.get::<Vec<u8>, _>("by").unwrap(), vec![0, 1, 254, 255]);
    assert_eq!(row.get::<Uuid, _>("u").unwrap(), uuid);
    assert_eq!(row.get::<Timestamp, _>("ts").unwrap(), ts);
    assert_eq!(row.get::<Date, _>("d").unwrap(), date);
    assert_eq!(
        row.get::<Vec<Option<i32>>, _>("ai4").unwrap(),
        vec![Some(1), None, Some(3)]
    );
    assert_eq!(set.rows[1].get::<Option<i64>, _>("i8").unwrap(), None);

    // The server's own text for the same values (what psql -At prints).
    let printed = client
        .query("SELECT n, d, u, by, b, i8 FROM t_types ORDER BY i8 NULLS LAST LIMIT 1")
        .unwrap();
    let printed = &printed[0].rows[0];
    assert_eq!(
        printed.get::<String, _>(0).unwrap(),
        "-12345678901234567890.000123"
    );
    assert_eq!(printed.get::<String, _>(1).unwrap(), date.to_string());
    assert_eq!(printed.get::<String, _>(2).unwrap(), uuid.to_string());
    assert_eq!(printed.get::<String, _>(3).unwrap(), "\\x0001feff");
    assert_eq!(printed.get::<Vec<u8>, _>(3).unwrap(), vec![0, 1, 254, 255]);
    assert!(printed.get::<bool, _>(4).unwrap());
    assert_eq!(printed.get::<i64, _>(5).unwrap(), i64::MIN);
}

#[test]
fn numerics_print_exactly_as_the_server_prints_them() {
    let mut client = Client::connect();
    for n in [
        "0",
        "0.000",
        "-0.5",
        "10000.0001",
        "1e-20",
        "123456789012345678901234567890.5",
        "NaN",
        "-Infinity",
    ] {
        let binary = client
            .execute("SELECT $1::numeric", &[Value::Text(n.into())])
            .unwrap();
        let text = client.query(&format!("SELECT '{n}'::numeric")).unwrap();
        assert_eq!(
            binary.rows[0].get::<String, _>(0).unwrap(),
            text[0].rows[0].get::<String, _>(0).unwrap(),
            "{n}"
        );
    }
}

#[test]
fn a_mismatched_read_is_a_typed_error_naming_column_and_types() {
    let mut client = Client::connect();
    let set = client
        .execute("SELECT 'x'::text AS word, NULL::int8 AS nothing", &[])
        .unwrap();
    let err = set.rows[0].get::<i32, _>("word").unwrap_err();
    assert!(
        matches!(&err, TypeError::Mismatch { column, actual, rust } if column == "\"word\"" && actual == "text" && *rust == "i32"),
        "{err:?}"
    );
    let err = set.rows[0].get::<i64, _>("nothing").unwrap_err();
    assert!(matches!(err, TypeError::UnexpectedNull { .. }), "{err:?}");
    assert!(err.to_string().contains("Option"), "{err}");
    let err = set.rows[0].get::<i64, _>("missing").unwrap_err();
    assert!(
        matches!(err, TypeError::NoSuchColumn { count: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn a_thousand_pipelined_queries_come_back_in_order_with_their_rows() {
    let mut client = Client::connect();
    let now = client.now();
    let ids: Vec<_> = (0..1000i64)
        .map(|i| {
            client
                .conn
                .execute(now, "SELECT $1::int8 * 2 AS twice", &[Value::Int8(i)])
                .unwrap()
        })
        .collect();
    assert_eq!(client.conn.in_flight(), 1000);
    client.drain();
    let mut order = Vec::new();
    while order.len() < ids.len() {
        client.pump();
        while let Some(event) = client.events.pop_front() {
            if let Event::Done { id, result } = event {
                let sets = result.unwrap();
                order.push((id, sets[0].rows[0].get::<i64, _>(0).unwrap()));
            }
        }
    }
    let expected: Vec<_> = ids.iter().zip(0..).map(|(id, i)| (*id, i * 2)).collect();
    assert_eq!(order, expected);
    assert_eq!(client.conn.cached_statements(), 1);
}

#[test]
fn a_unique_violation_names_its_sqlstate_constraint_and_detail() {
    let mut client = Client::connect();
    client
        .query("CREATE TEMP TABLE t_users (email text CONSTRAINT t_users_email_key UNIQUE)")
        .unwrap();
    let insert = "INSERT INTO t_users (email) VALUES ($1)";
    client.execute(insert, &["a@example.com".into()]).unwrap();
    let err = client
        .execute(insert, &["a@example.com".into()])
        .unwrap_err();
    assert_eq!(err.code(), Some(sqlstate::UNIQUE_VIOLATION));
    let db = err.as_db().unwrap();
    assert_eq!(db.constraint.as_deref(), Some("t_users_email_key"));
    assert_eq!(db.table.as_deref(), Some("t_users"));
    assert!(
        db.detail
            .as_deref()
            .is_some_and(|d| d.contains("already exists")),
        "{db:?}"
    );
    assert!(!err.is_retryable());
    // The connection goes on.
    let set = client.execute("SELECT count(*) FROM t_users", &[]).unwrap();
    assert_eq!(set.rows[0].get::<i64, _>(0).unwrap(), 1);
}

#[test]
fn a_syntax_error_fails_only_its_own_pipelined_query() {
    let mut client = Client::connect();
    let now = client.now();
    let before = client.conn.execute(now, "SELECT 1", &[]).unwrap();
    let bad = client.conn.execute(now, "SELEC 2", &[]).unwrap();
    let bad_again = client.conn.execute(now, "SELEC 2", &[]).unwrap();
    let after = client.conn.query(now, "SELECT 3").unwrap();
    client.drain();
    assert!(client.wait(before).is_ok());
    assert_eq!(
        client.wait(bad).unwrap_err().code(),
        Some(sqlstate::SYNTAX_ERROR)
    );
    assert_eq!(
        client.wait(bad_again).unwrap_err().code(),
        Some(sqlstate::SYNTAX_ERROR)
    );
    assert_eq!(client.wait(after).unwrap()[0].tag, "SELECT 1");
    assert_eq!(
        client.conn.cached_statements(),
        1,
        "the failed statement is not cached"
    );
}

#[test]
fn transaction_status_follows_begin_failure_and_rollback() {
    let mut client = Client::connect();
    client.query("BEGIN").unwrap();
    assert_eq!(
        client.conn.transaction_status(),
        TransactionStatus::InTransaction
    );
    let err = client.execute("SELECT 1/0", &[]).unwrap_err();
    assert_eq!(err.code(), Some("22012"));
    assert_eq!(client.conn.transaction_status(), TransactionStatus::Failed);
    let err = client.execute("SELECT 1", &[]).unwrap_err();
    assert_eq!(err.code(), Some("25P02"), "in a failed transaction block");
    client.query("ROLLBACK").unwrap();
    assert_eq!(client.conn.transaction_status(), TransactionStatus::Idle);
    assert!(client.execute("SELECT 1", &[]).is_ok());
}

#[test]
fn notices_arrive_as_events() {
    let mut client = Client::connect();
    client
        .query("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        .unwrap();
    let notice = client
        .events
        .iter()
        .find_map(|e| match e {
            Event::Notice(n) => Some(n.clone()),
            _ => None,
        })
        .expect("a notice");
    assert_eq!(notice.message, "hello from plpgsql");
    assert_eq!(notice.severity, "NOTICE");
    assert_eq!(notice.code, "00000");
}

#[test]
fn listen_notify_delivers_notifications_as_events() {
    let mut listener = Client::connect();
    let mut sender = Client::connect();
    let channel = format!("effectful_core_{}", std::process::id());
    listener.query(&format!("LISTEN {channel}")).unwrap();
    sender
        .query(&format!("NOTIFY {channel}, 'first'; NOTIFY {channel}"))
        .unwrap();
    let first = listener.wait_notification();
    assert_eq!(first.channel, channel);
    assert_eq!(first.payload, "first");
    assert_eq!(
        Some(first.process_id),
        sender.conn.cancel_request().map(|c| c.process_id())
    );
    assert_eq!(listener.wait_notification().payload, "");
}

#[test]
fn a_cancel_request_stops_the_running_query_and_the_connection_goes_on() {
    let mut client = Client::connect();
    let id = client
        .conn
        .execute(client.now(), "SELECT pg_sleep(30)", &[])
        .unwrap();
    client.drain();
    // Wait until the server is running it.
    let pid = client.conn.cancel_request().unwrap().process_id();
    let mut watcher = Client::connect();
    loop {
        let set = watcher
            .execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                &[Value::Int4(pid)],
            )
            .unwrap();
        if set.rows[0].get::<i64, _>(0).unwrap() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    client.send_cancel(5432);
    let err = client.wait(id).unwrap_err();
    assert_eq!(err.code(), Some(sqlstate::QUERY_CANCELED));
    assert!(client.execute("SELECT 1", &[]).is_ok());
}

#[test]
fn the_command_timeout_asks_for_a_cancel_of_the_query_executing() {
    let config = config().command_timeout(Some(Duration::from_millis(200)));
    let mut client = Client::connect_to(5432, config).unwrap();
    let id = client
        .conn
        .execute(client.now(), "SELECT pg_sleep(10)", &[])
        .unwrap();
    client.drain();
    let cancel = loop {
        client.pump();
        let due = client.events.iter().find_map(|e| match e {
            Event::CancelDue { id: due, cancel } => Some((*due, *cancel)),
            _ => None,
        });
        if let Some(due) = due {
            break due;
        }
    };
    assert_eq!(cancel.0, id);
    client.send_cancel(5432);
    assert_eq!(
        client.wait(id).unwrap_err().code(),
        Some(sqlstate::QUERY_CANCELED)
    );
}

#[test]
fn discard_all_empties_the_statement_cache_and_statements_are_prepared_again() {
    let mut client = Client::connect();
    client.execute("SELECT 1", &[]).unwrap();
    client.execute("SELECT 2", &[]).unwrap();
    assert_eq!(client.conn.cached_statements(), 2);
    client.query("DISCARD ALL").unwrap();
    assert_eq!(client.conn.cached_statements(), 0);
    assert!(client.execute("SELECT 1", &[]).is_ok());
}

#[test]
fn a_full_statement_cache_closes_the_least_recently_used() {
    let mut client = Client::connect_to(5432, config().statement_cache_size(2)).unwrap();
    for round in 0..3 {
        for n in 0..5 {
            let set = client
                .execute(&format!("SELECT {n} + $1::int4"), &[Value::Int4(round)])
                .unwrap();
            assert_eq!(set.rows[0].get::<i32, _>(0).unwrap(), n + round);
        }
    }
    assert_eq!(client.conn.cached_statements(), 2);
    let set = client
        .execute("SELECT count(*) FROM pg_prepared_statements", &[])
        .unwrap();
    assert!(
        set.rows[0].get::<i64, _>(0).unwrap() <= 3,
        "closed statements are gone"
    );
}

#[test]
fn a_terminated_backend_closes_the_connection_with_a_retryable_error() {
    let mut victim = Client::connect();
    let pid = victim.conn.cancel_request().unwrap().process_id();
    let mut killer = Client::connect();
    killer
        .execute("SELECT pg_terminate_backend($1)", &[Value::Int4(pid)])
        .unwrap();
    let id = victim.conn.query(victim.now(), "SELECT 1").unwrap();
    victim.drain();
    let err = victim.wait(id).unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(victim.conn.is_closed());
    assert!(matches!(victim.events.back(), Some(Event::Closed(_))));
}
