//! Simulates the chat server: N clients joining, chatting, reading history, renaming
//! and leaving over a simulated duration, under faults, and checks its invariants.
//!
//! ```text
//! cargo run --release -p effectful-chat --bin simulate -- \
//!     --clients 1000 --duration 3600s --seeds 0..10 --faults --trace /tmp/chat.trace.jsonl
//! ```
//!
//! Flags: `--clients N` (default 100), `--duration D` (`3600s`, `90m`, `1h`; default
//! 1h), `--seed N` or `--seeds A..B` (default: `EFFECTFUL_SEED`, else 0), `--faults`
//! (the chaos fault plan), `--swarm` (each seed picks its client count up to N and its
//! own faults), `--trace FILE` (write the trace of the first failing seed, or of the
//! last seed when all pass), `--check-determinism` (run each seed twice and compare
//! the traces). Exits non-zero on any invariant violation.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use effectful_chat::sim::{ChatSimConfig, run_chat};
use effectful_test::fault::FaultPlan;
use effectful_test::seed;
use effectful_test::trace::{first_divergence, write_trace};

struct Args {
    clients: u32,
    duration: Duration,
    seeds: std::ops::Range<u64>,
    faults: bool,
    swarm: bool,
    trace: Option<String>,
    check_determinism: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        clients: 100,
        duration: Duration::from_secs(3600),
        seeds: seed::seeds_from_env(0..1).map_err(|e| e.to_string())?,
        faults: false,
        swarm: false,
        trace: None,
        check_determinism: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--clients" => args.clients = value("--clients")?.parse().map_err(|e| format!("--clients: {e}"))?,
            "--duration" => args.duration = seed::parse_duration(&value("--duration")?).map_err(|e| e.to_string())?,
            "--seed" => {
                let n: u64 = value("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?;
                args.seeds = n..n.saturating_add(1);
            }
            "--seeds" => args.seeds = seed::parse_range(&value("--seeds")?).map_err(|e| e.to_string())?,
            "--faults" => args.faults = true,
            "--swarm" => args.swarm = true,
            "--trace" => args.trace = Some(value("--trace")?),
            "--check-determinism" => args.check_determinism = true,
            "--help" | "-h" => return Err("usage: simulate [--clients N] [--duration 3600s] [--seed N | --seeds A..B] [--faults] [--swarm] [--trace FILE] [--check-determinism]".into()),
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
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let (mut effects, mut simulated, mut violations, mut seeds_run, mut acked) =
        (0u64, Duration::ZERO, 0usize, 0u64, 0usize);
    let mut trace_written = None;
    for seed in args.seeds.clone() {
        let mut config = if args.swarm {
            ChatSimConfig::swarm(seed, args.clients, args.duration)
        } else {
            ChatSimConfig::new(seed, args.clients, args.duration)
        };
        if args.faults && !args.swarm {
            config.faults = FaultPlan::chaos();
        }
        config.record_trace = args.trace.is_some() || args.check_determinism;
        let mut run = run_chat(&config);
        if args.check_determinism {
            // The same seed again must give the very same trace.
            if let Some(divergence) = first_divergence(&run.trace, &run_chat(&config).trace) {
                run.violations
                    .push(format!("seed {seed} is not deterministic: {divergence}"));
            }
        }
        seeds_run += 1;
        effects += run.report.effects;
        simulated += run.report.simulated;
        acked += run.acked;
        let failed = !run.violations.is_empty();
        let last = seed + 1 == args.seeds.end;
        if let Some(path) = &args.trace {
            if (failed || last) && trace_written.is_none() {
                match std::fs::File::create(path)
                    .map(std::io::BufWriter::new)
                    .and_then(|f| write_trace(f, &run.trace))
                {
                    Ok(()) => trace_written = Some(path.clone()),
                    Err(e) => eprintln!("could not write the trace to {path}: {e}"),
                }
            }
        }
        if failed {
            violations += run.violations.len();
            eprintln!("{}", run.report);
            for v in run.violations.iter().take(20) {
                eprintln!("  violation: {v}");
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
            eprintln!(
                "{}",
                seed::reproduce_message(
                    seed,
                    &format!(
                        "cargo run --release -p effectful-chat --bin simulate -- --seed {seed} {flags} --trace seed-{seed}.trace.jsonl"
                    )
                )
            );
        }
    }
    let wall = started.elapsed();
    println!(
        "seeds run:                 {seeds_run} ({}..{})",
        args.seeds.start, args.seeds.end
    );
    println!(
        "clients per seed:          {}{}",
        args.clients,
        if args.swarm { " (at most; swarm)" } else { "" }
    );
    println!("simulated effects:         {effects}");
    println!("acknowledged messages:     {acked}");
    println!("wall time:                 {:.3} s", wall.as_secs_f64());
    println!(
        "simulated effects / s:     {:.0}",
        effects as f64 / wall.as_secs_f64().max(1e-9)
    );
    println!(
        "simulated time / wall:     {:.0}x",
        simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9)
    );
    println!("invariant violations:      {violations}");
    if let Some(path) = trace_written {
        println!("trace:                     {path}");
    }
    if violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
