//! PostgreSQL: effectful's whole way (engine, Database adapter, pool, driver) beside
//! tokio-postgres, on the same server in the same run.
//!
//! - `pg/pipelined_select`: the same prepared single-row SELECT (the Database
//!   adapter's `GetUserById` statement) with 64 in flight on one connection, each in
//!   its own Sync unit on both sides; wall time, throughput in queries.
//! - `pg/pipelined_select_cpu`: the same, measured in the process's CPU time (the
//!   server's backend may bound the wall time; this shows the client's own cost).
//! - `pg/decode_datarow`: the client's decode of one server response (BindComplete,
//!   DataRow, CommandComplete, ReadyForQuery) into typed values, beside the bare
//!   `postgres-protocol` parse of the same bytes.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`); it works in a
//! schema of its own, dropped at the end.

#[path = "../src/pg_pipeline.rs"]
mod pg_pipeline;

use std::time::{Duration, Instant};

use criterion::measurement::Measurement;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use effectful::Time;
use effectful::postgres::{Event, PgConfig, PgConnection, Value};
use effectful_benches::cpu::ProcessCpu;
use pg_pipeline::{IN_FLIGHT, Ours, Peer, lookup_sql};

/// Elapsed wall time, or the process's CPU time when `cpu`.
struct Clock {
    cpu: bool,
}

impl Clock {
    fn time<R>(&self, f: impl FnOnce() -> R) -> Duration {
        let (wall, cpu) = (Instant::now(), effectful_benches::cpu::process_cpu_nanos());
        std::hint::black_box(f());
        if self.cpu {
            Duration::from_nanos(effectful_benches::cpu::process_cpu_nanos().saturating_sub(cpu))
        } else {
            wall.elapsed()
        }
    }
}

fn pipelined<M: Measurement<Value = Duration>>(
    group: &mut BenchmarkGroup<'_, M>,
    clock: Clock,
    ours: &Ours,
    peer: &Peer,
) {
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    let id = uuid::Uuid::from_u128(0xbe);
    group.bench_function("effectful", |b| {
        b.iter_custom(|iters| clock.time(|| ours.rounds(iters, id)))
    });
    group.bench_function("tokio_postgres", |b| {
        b.iter_custom(|iters| {
            clock.time(|| {
                for _ in 0..iters {
                    peer.round(id);
                }
            })
        })
    });
}

fn pipelined_select(c: &mut Criterion) {
    let peer = Peer::connect();
    let ours = Ours::start();
    let mut group = c.benchmark_group("pg/pipelined_select");
    pipelined(&mut group, Clock { cpu: false }, &ours, &peer);
    group.finish();
}

fn pipelined_select_cpu(c: &mut Criterion<ProcessCpu>) {
    assert!(
        effectful_benches::cpu::available(),
        "pg/pipelined_select_cpu reads /proc/self/task/*/schedstat (Linux)"
    );
    let peer = Peer::connect();
    let ours = Ours::start();
    let mut group = c.benchmark_group("pg/pipelined_select_cpu");
    pipelined(&mut group, Clock { cpu: true }, &ours, &peer);
    group.finish();
}

/// A connection past its startup with the lookup prepared and cached, and the bytes
/// of one answer to it.
fn decode_fixture() -> (PgConnection, Vec<u8>, Vec<u8>) {
    let mut conn = PgConnection::new(PgConfig::new("bench"), [0; 18], Time::ZERO);
    let _ = conn.poll_transmit();
    conn.handle_input(Time::ZERO, b"R\0\0\0\x08\0\0\0\0Z\0\0\0\x05I");
    while conn.poll_event().is_some() {}
    let msg = |tag: u8, body: &[u8]| {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    };
    // RowDescription: id uuid, email text, name text, deleted bool.
    let mut desc = 4u16.to_be_bytes().to_vec();
    for (name, oid) in [
        ("id", 2950u32),
        ("email", 25),
        ("name", 25),
        ("deleted", 16),
    ] {
        desc.extend_from_slice(name.as_bytes());
        desc.push(0);
        desc.extend_from_slice(&0u32.to_be_bytes());
        desc.extend_from_slice(&0u16.to_be_bytes());
        desc.extend_from_slice(&oid.to_be_bytes());
        desc.extend_from_slice(&(-1i16).to_be_bytes());
        desc.extend_from_slice(&(-1i32).to_be_bytes());
        desc.extend_from_slice(&1u16.to_be_bytes());
    }
    let mut row = 4u16.to_be_bytes().to_vec();
    for value in [
        &uuid::Uuid::from_u128(0xabc).as_bytes()[..],
        b"ada@example.com",
        b"Ada Lovelace",
        &[0u8],
    ] {
        row.extend_from_slice(&(value.len() as i32).to_be_bytes());
        row.extend_from_slice(value);
    }
    let answer: Vec<u8> = [
        msg(b'2', b""),
        msg(b'D', &row),
        msg(b'C', b"SELECT 1\0"),
        msg(b'Z', b"I"),
    ]
    .concat();
    // Prepare once: ParseComplete, ParameterDescription, RowDescription, then the answer.
    let first: Vec<u8> = [
        msg(b'1', b""),
        msg(b't', &[0, 1, 0, 0, 0x0b, 0x86]),
        msg(b'T', &desc),
        answer.clone(),
    ]
    .concat();
    (conn, first, answer)
}

fn decode_datarow(c: &mut Criterion) {
    let (mut conn, first, answer) = decode_fixture();
    let sql = lookup_sql();
    let params = [Value::Uuid(uuid::Uuid::nil())];
    conn.execute(Time::ZERO, sql, &params).expect("sent");
    conn.handle_input(Time::ZERO, &first);
    let mut prepared = false;
    while let Some(event) = conn.poll_event() {
        prepared |= matches!(event, Event::Done { result: Ok(_), .. });
    }
    assert!(
        prepared,
        "the fixture's first answer prepares the statement"
    );
    let mut group = c.benchmark_group("pg/decode_datarow");
    group.throughput(Throughput::Elements(1));
    group.bench_function("effectful", |b| {
        b.iter(|| {
            conn.execute(Time::ZERO, sql, &params).expect("sent");
            let _ = conn.poll_transmit();
            conn.handle_input(Time::ZERO, &answer);
            let Some(Event::Done {
                result: Ok(sets), ..
            }) = conn.poll_event()
            else {
                panic!("one answer");
            };
            let row = &sets[0].rows[0];
            let id: uuid::Uuid = row.get(0).expect("uuid");
            let email: String = row.get(1).expect("text");
            let name: String = row.get(2).expect("text");
            let deleted: bool = row.get(3).expect("bool");
            std::hint::black_box((id, email, name, deleted));
        })
    });
    group.bench_function("postgres_protocol", |b| {
        use fallible_iterator::FallibleIterator;
        use postgres_protocol::message::backend::Message;
        use postgres_protocol::types;
        b.iter(|| {
            let mut buf = bytes::BytesMut::from(&answer[..]);
            let mut out = None;
            while let Some(message) = Message::parse(&mut buf).expect("parsed") {
                if let Message::DataRow(body) = message {
                    let ranges: Vec<_> = body.ranges().collect().expect("ranges");
                    let raw = body.buffer();
                    let get = |i: usize| &raw[ranges[i].clone().expect("not null")];
                    let id = uuid::Uuid::from_bytes(types::uuid_from_sql(get(0)).expect("uuid"));
                    let email = types::text_from_sql(get(1)).expect("text").to_owned();
                    let name = types::text_from_sql(get(2)).expect("text").to_owned();
                    let deleted = types::bool_from_sql(get(3)).expect("bool");
                    out = Some((id, email, name, deleted));
                }
            }
            std::hint::black_box(out);
        })
    });
    group.finish();
}

criterion_group!(benches, pipelined_select, decode_datarow);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ProcessCpu);
    targets = pipelined_select_cpu
}
criterion_main!(benches, cpu);
