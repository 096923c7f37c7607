//! Syscalls, instructions and CPU time per query of `pg/pipelined_select` (64 lookups
//! in flight on one connection), for either client: on a shared machine the
//! wall-clock benches wander, counts do not.
//!
//! ```text
//! cargo build --release -p effectful-benches --example pgcount
//! for n in 200 400; do
//!   strace -c -f -o /tmp/st.$n target/release/examples/pgcount ours $n
//! done   # (calls(400) - calls(200)) / (200 * 64) = syscalls per query
//! for n in 200 400; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \
//!     target/release/examples/pgcount ours $n 2>&1 | grep refs
//! done   # (refs(400) - refs(200)) / (200 * 64) = client instructions per query
//! ```
//!
//! `ours` runs effectful the whole way (engine, Database adapter, pool, driver);
//! `peer` runs tokio-postgres. Each prints the process's CPU time per query over its
//! rounds (after the connection is open and the statement prepared). Needs
//! PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`).
#[path = "../src/pg_pipeline.rs"]
mod pg_pipeline;

use effectful_benches::cpu::process_cpu_nanos;
use pg_pipeline::{IN_FLIGHT, Ours, Peer};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: pgcount (ours|peer) ROUNDS";
    let kind = args.next().expect(usage);
    let rounds: u64 = args.next().and_then(|n| n.parse().ok()).expect(usage);
    let id = uuid::Uuid::from_u128(0xbe);
    // The peer makes the schema (and drops it at the end) for both.
    let peer = Peer::connect();
    let cpu = match kind.as_str() {
        "ours" => {
            let ours = Ours::start();
            let before = process_cpu_nanos();
            ours.rounds(rounds, id);
            process_cpu_nanos() - before
        }
        "peer" => {
            let before = process_cpu_nanos();
            for _ in 0..rounds {
                peer.round(id);
            }
            process_cpu_nanos() - before
        }
        _ => panic!("{usage}"),
    };
    let queries = rounds * IN_FLIGHT as u64;
    println!(
        "{kind}: {queries} queries, {:.2} µs CPU per query",
        cpu as f64 / queries as f64 / 1000.0
    );
}
