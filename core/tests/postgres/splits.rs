//! The connection reads a byte stream, not packets: a recorded server conversation
//! split at any boundary gives the same events as the whole.

use effectful::postgres::{Event, PgConfig, Value};
use proptest::prelude::*;

use crate::scripted::{
    Script, auth_ok, command_complete, data_row, error, msg, ready, row_description, startup_tail,
};

/// The client's side: a startup, then a simple query, an extended query and a failing
/// query in flight together.
fn client() -> Script {
    let mut s = Script::new(PgConfig::new("postgres").database("test"));
    s.conn.query(s.now, "SELECT 'a', NULL").expect("admitted");
    s.conn
        .execute(s.now, "SELECT $1::int8", &[Value::Int8(5)])
        .expect("admitted");
    s.conn.query(s.now, "SELEC").expect("admitted");
    s
}

/// What the server says to it, in one stream.
fn recorded() -> Vec<u8> {
    let mut notification = 7i32.to_be_bytes().to_vec();
    notification.extend_from_slice(b"chan\0payload\0");
    [
        auth_ok(),
        startup_tail(),
        row_description(&[("a", 25, 0), ("b", 25, 0)]),
        data_row(&[Some(b"a"), None]),
        command_complete("SELECT 1"),
        ready(b'I'),
        msg(b'A', &notification),
        msg(b'1', &[]),
        msg(b't', &[0, 1, 0, 0, 0, 20]),
        row_description(&[("int8", 20, 0)]),
        msg(b'2', &[]),
        data_row(&[Some(&5i64.to_be_bytes())]),
        command_complete("SELECT 1"),
        ready(b'I'),
        error("ERROR", "42601", "syntax error", &[]),
        ready(b'I'),
    ]
    .concat()
}

fn events_for(chunks: &[&[u8]]) -> Vec<String> {
    let mut s = client();
    let mut out = Vec::new();
    for chunk in chunks {
        s.server(chunk);
        out.extend(s.events().iter().map(|e: &Event| format!("{e:?}")));
    }
    out
}

#[test]
fn a_recorded_stream_split_at_every_boundary_gives_the_same_events() {
    let stream = recorded();
    let whole = events_for(&[&stream]);
    assert_eq!(
        whole.len(),
        5,
        "Ready, Done, Notification, Done, Done: {whole:#?}"
    );
    for at in 0..=stream.len() {
        let (a, b) = stream.split_at(at);
        assert_eq!(events_for(&[a, b]), whole, "split at {at}");
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(events_for(&bytes), whole, "one byte at a time");
}

proptest! {
    #[test]
    fn a_recorded_stream_in_random_chunks_gives_the_same_events(
        cuts in proptest::collection::vec(0usize..2000, 0..12)
    ) {
        let stream = recorded();
        let whole = events_for(&[&stream]);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for cut in cuts {
            chunks.push(&stream[from..cut]);
            from = cut;
        }
        chunks.push(&stream[from..]);
        prop_assert_eq!(events_for(&chunks), whole);
    }
}
