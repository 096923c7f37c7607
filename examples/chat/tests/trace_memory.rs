//! `simulate --trace` writes the trace as it is made: a long run's memory does not
//! grow with its trace, and the file replays exactly.
//!
//! Alone in its own test binary: the peak memory of finished children
//! (`RUSAGE_CHILDREN`) is then that of this file's `simulate` runs only.

use std::process::{Command, Stdio};
use std::rc::Rc;

use effectful_chat::session::ChatConfig;
use effectful_chat::sim::chat_program;
use effectful_test::trace::{TraceRecord, read_trace, replay};
use nix::sys::resource::{UsageWho, getrusage};

/// Runs `simulate` with `args` (its output dropped) and returns the peak resident
/// memory, in KiB, of every child run so far.
fn simulate_peak_kib(args: &[&str]) -> i64 {
    let status = Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(args)
        .env_remove("EFFECTFUL_SEED")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the simulate binary runs");
    assert!(status.success(), "simulate {args:?}: {status}");
    getrusage(UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage")
        .max_rss()
}

#[test]
fn a_trace_written_as_it_runs_keeps_memory_flat_and_replays_exactly() {
    let dir = std::env::temp_dir().join(format!("simulate-trace-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (short, long) = (dir.join("10m.jsonl"), dir.join("100m.jsonl"));
    let run = |duration: &str, path: &std::path::Path| {
        let path = path.to_str().expect("a UTF-8 temp path");
        let args = [
            "--clients",
            "20",
            "--duration",
            duration,
            "--seed",
            "3",
            "--faults",
            "--overwrite",
            "--trace",
            path,
        ];
        simulate_peak_kib(&args)
    };
    let short_peak = run("600s", &short);
    // The peak of both runs: the longer one's if it needed more.
    let long_peak = run("6000s", &long);
    let size = |p: &std::path::Path| std::fs::metadata(p).expect("the trace file").len() as i64;
    let extra_trace_kib = (size(&long) - size(&short)) / 1024;
    assert!(
        extra_trace_kib > 8 * 1024,
        "the longer trace is only {extra_trace_kib} KiB longer"
    );
    // Holding the trace took more memory than its size on disk (38 MiB against 8 MiB
    // when measured); written as it goes, the run grows only by its room and checks.
    let grown = long_peak - short_peak;
    assert!(
        grown < extra_trace_kib / 4,
        "10 simulated minutes peaked at {short_peak} KiB, 100 at {long_peak} KiB: \
         {grown} KiB more for a trace {extra_trace_kib} KiB longer"
    );

    let file = std::fs::File::open(&long).expect("the trace file");
    let records = read_trace(std::io::BufReader::new(file), 1 << 20).expect("whole lines");
    assert!(matches!(records.last(), Some(TraceRecord::End { .. })));
    let program = chat_program(Rc::new(ChatConfig::default()));
    let stats = replay(&records, program).expect("the written trace replays");
    assert!(stats.inputs > 10_000 && stats.outputs > 10_000, "{stats:?}");
    std::fs::remove_dir_all(&dir).expect("temp dir removed");
}
