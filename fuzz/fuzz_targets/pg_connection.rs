//! Bytes from a PostgreSQL server are outside input: fed to `PgConnection` in each
//! state (before TLS, during authentication, with queries in flight), in chunks of
//! any size, they must never panic, never hold more than the configured limits, and
//! answer every submitted query exactly once.
#![no_main]

use std::collections::BTreeSet;

use effectful::Time;
use effectful::postgres::{Event, PgConfig, PgConnection, TlsMode, Value};
use libfuzzer_sys::fuzz_target;

const STARTUP_DONE: &[u8] = b"R\0\0\0\x08\0\0\0\0K\0\0\0\x0c\0\0\0\x01\0\0\0\x02Z\0\0\0\x05I";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((&chunk, input)) = rest.split_first() else {
        return;
    };
    let mut config = PgConfig::new("fuzz")
        .password("pw")
        .max_message_len(64 * 1024)
        .max_result_bytes(256 * 1024)
        .max_scram_iterations(16);
    if mode % 4 == 1 {
        config = config.tls(TlsMode::Prefer);
    }
    let mut conn = PgConnection::new(config, [7; 18], Time::ZERO);
    let mut submitted = BTreeSet::new();
    if mode % 4 == 2 {
        conn.handle_input(Time::ZERO, STARTUP_DONE);
    }
    if mode % 4 >= 2 {
        for sql in ["SELECT 1; SELECT 2", "LISTEN x"] {
            submitted.extend(conn.query(Time::ZERO, sql).ok());
        }
        submitted.extend(conn.execute(Time::ZERO, "SELECT $1", &[Value::Int4(1)]).ok());
        submitted.extend(conn.execute(Time::ZERO, "SELECT $1", &[Value::Null]).ok());
    }
    let mut done = BTreeSet::new();
    let chunk = usize::from(chunk).max(1);
    for (i, piece) in input.chunks(chunk).enumerate() {
        let now = Time::from_millis(i as u64);
        conn.handle_input(now, piece);
        if i % 7 == 6 {
            conn.handle_tls_ready(now);
        }
        conn.handle_timeout(Time::from_secs(i as u64));
        while conn.poll_transmit().is_some() {}
        while let Some(event) = conn.poll_event() {
            if let Event::Done { id, result } = event {
                assert!(submitted.contains(&id), "Done for a query never submitted");
                assert!(done.insert(id), "Done twice for one query");
                for set in result.iter().flatten() {
                    for row in &set.rows {
                        let _ = row.values();
                        for c in 0..row.len() {
                            let _ = row.get::<Vec<Option<String>>, _>(c);
                            let _ = row.get::<Vec<Option<i64>>, _>(c);
                            let _ = row.get::<Option<String>, _>(c);
                        }
                    }
                }
            }
        }
    }
    conn.handle_eof(Time::MAX);
    while let Some(event) = conn.poll_event() {
        if let Event::Done { id, .. } = event {
            assert!(done.insert(id), "Done twice for one query");
        }
    }
    assert_eq!(done, submitted, "every query answered exactly once");
});
