//! Simulation benches: how fast the deterministic driver runs the chat program.
//!
//! - `sim/chat/clients_100`: 100 clients for 10 simulated minutes, chaos faults;
//!   throughput is simulated effects per second.
//! - `sim/chat/clients_1000_hour`: 1,000 clients for one simulated hour, chaos
//!   faults; the time per iteration is the wall time of one simulated hour.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use effectful_examples::chat_sim::{ChatSimConfig, run_chat};
use effectful_test::fault::FaultPlan;

fn config(clients: u32, duration: Duration) -> ChatSimConfig {
    let mut config = ChatSimConfig::new(1, clients, duration);
    config.faults = FaultPlan::chaos();
    config
}

fn chat(c: &mut Criterion) {
    let mut group = c.benchmark_group("sim/chat");

    let small = config(100, Duration::from_secs(600));
    let effects = run_chat(&small).report.effects;
    group.throughput(Throughput::Elements(effects));
    group.bench_function("clients_100", |b| {
        b.iter(|| {
            let run = run_chat(&small);
            assert!(run.violations.is_empty());
            run.report.effects
        })
    });

    let hour = config(1000, Duration::from_secs(3600));
    let effects = run_chat(&hour).report.effects;
    group.throughput(Throughput::Elements(effects));
    group.sample_size(10);
    group.bench_function("clients_1000_hour", |b| {
        b.iter(|| run_chat(&hour).report.effects)
    });
    group.finish();
}

criterion_group!(benches, chat);
criterion_main!(benches);
