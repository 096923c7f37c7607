//! Simulates the chat server: N clients joining the room, chatting, sending bad
//! frames and leaving over a simulated duration, under faults, and checks its
//! invariants.
//!
//! ```text
//! cargo run --release -p effectful-chat --bin simulate -- \
//!     --clients 1000 --duration 3600s --seeds 0..10 --faults --trace /tmp/chat.trace.jsonl
//! ```
//!
//! `--help` lists every flag. Everything is checked before the first seed runs: a bad
//! flag, `--clients 0`, `--duration 0s`, `--faults` with `--swarm`, a trace file that
//! exists (without `--overwrite`) or cannot be created exits with status 2 at once.
//! Exits 1 on any invariant violation, 130 when Ctrl-C stopped it (after printing the
//! report of the seeds done). `--merge` adds up the `--json` reports of shards.

mod report;

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Seek};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use effectful_chat::sim::{ChatSim, ChatSimConfig, Checks, Invariant};
use effectful_test::fault::FaultPlan;
use effectful_test::seed;
use effectful_test::sim::FaultCounts;
use effectful_test::trace::{first_divergence, write_trace};
use indicatif::{ProgressBar, ProgressStyle};
use report::{Definitions, Report, Seeds, invariant_rows};

struct Args {
    clients: u32,
    duration: Duration,
    seeds: std::ops::Range<u64>,
    faults: bool,
    swarm: bool,
    trace: Option<String>,
    overwrite: bool,
    check_determinism: bool,
    json: bool,
    /// `(k, n)`: run the k-th (1-based) of n slices of the seed range.
    shard: Option<(u64, u64)>,
}

const HELP: &str = "\
simulate: run the chat server against simulated clients and in-memory services, and
check its invariants (every message is stored once; each reaches every joined client
exactly once, in the room's order; history on join is the newest messages; every
session ends, ...).

USAGE:
    simulate [FLAGS]

FLAGS:
    --clients N           clients per seed (default 100; at least 1)
    --duration D          simulated time per seed: 3600s, 90m, 1h, 250ms (default 1h; more than 0)
    --seed N              run one seed (default: EFFECTFUL_SEED, else 0)
    --seeds A..B          run seeds A to B-1
    --shard K/N           run only the K-th of N equal slices of the seed range (1 <= K <= N),
                          to spread a sweep over machines; add the shards' counts to merge them
    --faults              the chaos fault plan (errors, lost answers, spikes, drops, lost acks)
    --swarm               each seed draws its client count (up to N) and its own faults,
                          outages, restarts and disconnect storms included (not with --faults)
    --trace FILE          write the trace of the first failing seed, or of the last seed when
                          all pass; FILE must not exist yet (see --overwrite). Written as the
                          seed runs (memory stays flat); a run stopped early leaves a trace
                          that replay refuses as cut short. With --check-determinism the
                          seed's two traces are held in memory to compare them
    --overwrite           let --trace replace an existing file
    --check-determinism   run each seed twice and compare the traces
    --json                print the report as one JSON object on stdout
    --merge FILE...       add up the --json reports of shards of one sweep into one report
                          (with --json, as JSON); reports of different settings or
                          overlapping seeds are refused
    -h, --help            print this help and exit

A run too large for the machine's free memory is refused, saying how much it needs.
Progress goes to stderr: a bar on a terminal, a line every 2 s otherwise. Ctrl-C stops
the run and prints the report of the seeds done (a second Ctrl-C quits at once).
Exit status: 0 all invariants held, 1 a violation, 2 bad flags or reports, 130 Ctrl-C.

The report names each invariant with how many checks it made and how many failed,
whether faults were on and how many of each kind were injected.
\"acknowledged messages\" counts chat messages that came back to their own sender
through the room once stored (the sender's acknowledgement); \"deliveries\" counts room
messages delivered live to joined clients. The checker verifies each is stored exactly
once, as sent, and arrives in the room's order with no gap and no repeat.
";

/// What `parse` asks `main` to do.
enum Parsed {
    Run(Args),
    /// Merge these reports; print JSON if the flag says so.
    Merge(Vec<String>, bool),
    Help,
}

fn parse() -> Result<Parsed, String> {
    let mut args = Args {
        clients: 100,
        duration: Duration::from_secs(3600),
        seeds: seed::seeds_from_env(0..1).map_err(|e| e.to_string())?,
        faults: false,
        swarm: false,
        trace: None,
        overwrite: false,
        check_determinism: false,
        json: false,
        shard: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--clients" => {
                args.clients = value("--clients")?
                    .parse()
                    .map_err(|e| format!("--clients: {e}"))?
            }
            "--duration" => {
                args.duration =
                    seed::parse_duration(&value("--duration")?).map_err(|e| e.to_string())?
            }
            "--seed" => {
                let n: u64 = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?;
                args.seeds = n..n.saturating_add(1);
            }
            "--seeds" => {
                args.seeds = seed::parse_range(&value("--seeds")?).map_err(|e| e.to_string())?
            }
            "--faults" => args.faults = true,
            "--swarm" => args.swarm = true,
            "--trace" => args.trace = Some(value("--trace")?),
            "--check-determinism" => args.check_determinism = true,
            "--overwrite" => args.overwrite = true,
            "--json" => args.json = true,
            "--shard" => args.shard = Some(parse_shard(&value("--shard")?)?),
            "--help" | "-h" => return Ok(Parsed::Help),
            "--merge" => {
                let mut files = Vec::new();
                for arg in it.by_ref() {
                    match arg.as_str() {
                        "--json" => args.json = true,
                        flag if flag.starts_with("--") => {
                            return Err(format!(
                                "--merge takes report files (and --json), not {flag}"
                            ));
                        }
                        _ => files.push(arg),
                    }
                }
                if files.is_empty() {
                    return Err(
                        "--merge needs the report files to merge, e.g. --merge shard-*.json".into(),
                    );
                }
                return Ok(Parsed::Merge(files, args.json));
            }
            other => return Err(format!("unknown flag {other}; try --help")),
        }
    }
    if args.seeds.is_empty() {
        return Err(format!(
            "seed range {}..{} is empty, so nothing would run; pass --seed N with N below {} or --seeds A..B with A < B",
            args.seeds.start,
            args.seeds.end,
            u64::MAX
        ));
    }
    if args.clients == 0 {
        return Err("--clients 0 would simulate nobody; pass --clients 1 or more".into());
    }
    if args.duration.is_zero() {
        return Err(
            "--duration 0 would simulate nothing; pass a positive duration, e.g. 60s".into(),
        );
    }
    if args.faults && args.swarm {
        return Err(
            "--faults and --swarm both choose the faults: --swarm draws each seed's own; pass one of them"
                .into(),
        );
    }
    if let Some(available) = available_memory() {
        let needed = estimated_memory(args.clients, args.duration);
        if needed > available {
            return Err(format!(
                "{} clients for {} s would need about {} MiB, but only {} MiB is available; \
                 simulate fewer clients or a shorter duration",
                args.clients,
                args.duration.as_secs(),
                needed >> 20,
                available >> 20
            ));
        }
    }
    if let Some((k, n)) = args.shard {
        let len = args.seeds.end - args.seeds.start;
        let start = args.seeds.start + slice_point(len, k - 1, n);
        let end = args.seeds.start + slice_point(len, k, n);
        args.seeds = start..end;
    }
    Ok(Parsed::Run(args))
}

/// A generous estimate of one seed's peak memory: measured at about 1.7 KiB per client
/// for a minute and 11 bytes more per client for each further simulated second (the
/// transcripts, the fakes' data), doubled.
fn estimated_memory(clients: u32, duration: Duration) -> u64 {
    let per_client = 2 * (1_800 + 11 * duration.as_secs());
    u64::from(clients).saturating_mul(per_client)
}

/// The memory the machine has free (`MemAvailable` in `/proc/meminfo`); `None` where
/// that cannot be read, and then no run is refused for its size.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Where slice `k` of `n` starts in a range of `len` seeds.
fn slice_point(len: u64, k: u64, n: u64) -> u64 {
    (u128::from(len) * u128::from(k) / u128::from(n)) as u64
}

/// `K/N` with 1 <= K <= N.
fn parse_shard(text: &str) -> Result<(u64, u64), String> {
    let bad = || format!("--shard {text:?}: write K/N with 1 <= K <= N, e.g. --shard 2/8");
    let (k, n) = text.split_once('/').ok_or_else(bad)?;
    let k: u64 = k.trim().parse().map_err(|_| bad())?;
    let n: u64 = n.trim().parse().map_err(|_| bad())?;
    if k == 0 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}

/// Opens the trace file before anything runs, so a path that cannot be written fails
/// at once; an existing file is replaced only with `--overwrite`.
fn open_trace(path: &str, overwrite: bool) -> Result<File, String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => format!(
            "--trace {path}: the file exists; pass --overwrite to replace it, or choose another path"
        ),
        _ => format!("--trace {path}: cannot create it: {e}"),
    })
}

/// Where the run stands, shown on stderr as it goes.
enum Progress {
    /// A bar, when stderr is a terminal.
    Bar(ProgressBar),
    /// A line every few seconds otherwise.
    Lines { last: Instant },
}

impl Progress {
    fn new(total: u64) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::Lines {
                last: Instant::now(),
            };
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{bar:40} {pos}/{len} seeds, {msg} [{elapsed_precise}, about {eta} left]",
        );
        if let Ok(style) = style {
            bar.set_style(style);
        }
        bar.set_message("0 violations");
        Progress::Bar(bar)
    }

    /// One more seed is done.
    fn seed_done(&mut self, done: u64, total: u64, violations: u64, started: Instant) {
        match self {
            Progress::Bar(bar) => {
                bar.set_position(done);
                bar.set_message(format!("{violations} violations"));
            }
            Progress::Lines { last } => {
                if last.elapsed() >= Duration::from_secs(2) {
                    *last = Instant::now();
                    eprintln!(
                        "progress: {done}/{total} seeds, {violations} violations, {:.0} s",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }

    /// Prints `text` on stderr without tearing the bar.
    fn say(&self, text: &str) {
        match self {
            Progress::Bar(bar) => bar.suspend(|| eprintln!("{text}")),
            Progress::Lines { .. } => eprintln!("{text}"),
        }
    }

    fn finish(self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Set by Ctrl-C: the run stops and reports the seeds done. A second Ctrl-C quits at
/// once.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let installed = ctrlc::set_handler(move || {
        if set.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    if let Err(e) = installed {
        eprintln!("warning: Ctrl-C will not print the report so far: {e}");
    }
    flag
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Merge(files, json)) => return merge(&files, json),
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let mut trace_file = match args.trace.as_deref().map(|p| open_trace(p, args.overwrite)) {
        None => None,
        Some(Ok(file)) => Some(file),
        Some(Err(message)) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let interrupted = interrupt_flag();
    let started = Instant::now();
    let (mut effects, mut simulated, mut seeds_run, mut acked, mut faults) =
        (0u64, Duration::ZERO, 0u64, 0u64, 0u64);
    let mut failed_seeds = 0u64;
    let mut deliveries = 0u64;
    let mut checks = Checks::default();
    let mut fault_kinds = FaultCounts::default();
    let mut trace_written = None;
    let total = args.seeds.end - args.seeds.start;
    let mut progress = Progress::new(total);
    let go_on = || !interrupted.load(Ordering::Relaxed);
    for seed in args.seeds.clone() {
        if !go_on() {
            break;
        }
        let mut config = if args.swarm {
            ChatSimConfig::swarm(seed, args.clients, args.duration)
        } else {
            ChatSimConfig::new(seed, args.clients, args.duration)
        };
        if args.faults && !args.swarm {
            config.faults = FaultPlan::chaos();
        }
        // Without --check-determinism (which compares two traces in memory), the
        // trace goes to its file as it is made: a seed that passes and is not the
        // last is then cut away, so the file holds the seed the help promises.
        let streamed = match (&trace_file, args.check_determinism) {
            (Some(file), false) => Some(file),
            _ => None,
        };
        config.record_trace = args.trace.is_some() || args.check_determinism;
        // A seed Ctrl-C cut short is not counted: the report is of the seeds done. Its
        // streamed trace stays without its end record: replay refuses it.
        let Some((mut run, trace_error)) = run_seed(&config, streamed, go_on) else {
            break;
        };
        if args.check_determinism {
            // The same seed again must give the very same trace.
            let Some((again, _)) = run_seed(&config, None, go_on) else {
                break;
            };
            let divergence = first_divergence(&run.trace, &again.trace);
            run.checks
                .record(Invariant::Deterministic, divergence.is_none());
            if let Some(divergence) = divergence {
                run.violations
                    .push(format!("seed {seed} is not deterministic: {divergence}"));
            }
        }
        seeds_run += 1;
        effects += run.report.effects;
        simulated += run.report.simulated;
        acked += run.acked as u64;
        deliveries += run.deliveries as u64;
        faults += run.report.faults;
        fault_kinds += run.report.fault_kinds;
        checks += run.checks;
        let failed = run.checks.failures() > 0;
        let last = seed + 1 == args.seeds.end;
        if let (Some(path), Some(file)) = (&args.trace, &mut trace_file) {
            if failed || last {
                // A streamed trace is in the file already; a compared one goes now.
                let written = match (trace_error, args.check_determinism) {
                    (Some(e), _) => Err(e),
                    (None, false) => Ok(()),
                    (None, true) => file
                        .try_clone()
                        .map(BufWriter::new)
                        .and_then(|f| write_trace(f, &run.trace))
                        .map_err(|e| e.to_string()),
                };
                match written {
                    Ok(()) => trace_written = Some(path.clone()),
                    Err(e) => progress.say(&format!("could not write the trace to {path}: {e}")),
                }
                trace_file = None;
            } else if !args.check_determinism {
                // Cut the passing seed's trace away for the next seed's.
                if let Err(e) = file.set_len(0).and_then(|()| file.rewind()) {
                    progress.say(&format!("could not write the trace to {path}: {e}"));
                    trace_file = None;
                }
            }
        }
        if failed {
            failed_seeds += 1;
            let mut text = run.report.to_string();
            for v in run.violations.iter().take(20) {
                text.push_str(&format!("\n  violation: {v}"));
            }
            let flags = format!(
                "--clients {} --duration {}ms{}{}{}",
                args.clients,
                args.duration.as_millis(),
                if args.faults { " --faults" } else { "" },
                if args.swarm { " --swarm" } else { "" },
                if args.check_determinism {
                    " --check-determinism"
                } else {
                    ""
                }
            );
            text.push('\n');
            text.push_str(&seed::reproduce_message(
                seed,
                &format!(
                    "cargo run --release -p effectful-chat --bin simulate -- --seed {seed} {flags} --trace seed-{seed}.trace.jsonl"
                ),
            ));
            progress.say(&text);
        }
        progress.seed_done(seeds_run, total, checks.failures(), started);
    }
    progress.finish();
    let stopped = interrupted.load(Ordering::Relaxed);
    if stopped {
        eprintln!(
            "interrupted by Ctrl-C after {seeds_run} of {total} seeds; the report covers those"
        );
    }
    let report = Report {
        seeds: Seeds {
            start: args.seeds.start,
            end: args.seeds.end,
            run: seeds_run,
        },
        clients: args.clients,
        duration_ms: args.duration.as_millis() as u64,
        swarm: args.swarm,
        faults: if args.swarm {
            "swarm"
        } else if args.faults {
            "chaos"
        } else {
            "none"
        }
        .to_owned(),
        check_determinism: args.check_determinism,
        interrupted: stopped,
        faults_injected: faults,
        fault_kinds,
        invariants: invariant_rows(&checks, args.check_determinism),
        effects,
        acknowledged: acked,
        deliveries,
        definitions: Definitions::default(),
        simulated_ns: simulated.as_nanos() as u64,
        wall_s: started.elapsed().as_secs_f64(),
        failed_seeds,
        violations: checks.failures(),
        trace: trace_written,
    };
    print_report(&report, args.json);
    exit_status(&report)
}

/// One seed, checked, with its trace written to `trace` as it is made if given (and
/// the first write that failed); `None` if `go_on` said to stop before it ended.
fn run_seed(
    config: &ChatSimConfig,
    trace: Option<&File>,
    go_on: impl FnMut() -> bool,
) -> Option<(effectful_chat::sim::ChatRun, Option<String>)> {
    let mut chat = ChatSim::new(config);
    if let Some(file) = trace {
        match file.try_clone() {
            Ok(file) => chat.stream_trace(file),
            Err(e) => {
                let report = chat.run_while(go_on)?;
                return Some((chat.check(report), Some(e.to_string())));
            }
        }
    }
    let report = chat.run_while(go_on)?;
    let error = chat.trace_error().map(|e| e.to_string());
    Some((chat.check(report), error))
}

fn print_report(report: &Report, json: bool) {
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
}

/// 130 if interrupted (as a shell reports Ctrl-C), 1 on a violation, 0 otherwise.
fn exit_status(report: &Report) -> ExitCode {
    if report.interrupted {
        ExitCode::from(130)
    } else if report.violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `--merge`: one report from the reports of a sweep's shards.
fn merge(files: &[String], json: bool) -> ExitCode {
    match report::merge(files) {
        Ok(report) => {
            print_report(&report, json);
            if report.violations > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}
