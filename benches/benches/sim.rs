//! Simulation benches: how fast the deterministic driver runs the chat program.
//!
//! - `sim/chat/clients_100`: 100 clients for 10 simulated minutes, chaos faults;
//!   throughput is simulated effects per second of [`ChatSim::run`], the simulation
//!   itself: scripting the clients is set up outside the timing, and the sessions'
//!   transcripts are dropped unchecked as they end ([`ChatSim::unchecked`]).
//! - `sim/chat/clients_100_checked`: the same seed end to end, as `simulate` runs it:
//!   script, simulate, check the invariants.
//! - `sim/chat/clients_1000_hour`: 1,000 clients for one simulated hour, chaos
//!   faults, end to end; the time per iteration is the wall time of one simulated hour.
//! - `sim/echo/clients_100`: a minimal program under the same simulator: the
//!   simulator's own cost per effect.

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use effectful_chat::sim::{ChatSim, ChatSimConfig, run_chat};
use effectful_test::fault::FaultPlan;

fn config(clients: u32, duration: Duration) -> ChatSimConfig {
    let mut config = ChatSimConfig::new(1, clients, duration);
    config.faults = FaultPlan::chaos();
    config
}

fn chat(c: &mut Criterion) {
    let mut group = c.benchmark_group("sim/chat");

    let small = config(100, Duration::from_secs(600));
    let run = run_chat(&small);
    assert!(run.violations.is_empty(), "{:?}", run.violations);
    group.throughput(Throughput::Elements(run.report.effects));
    group.bench_function("clients_100", |b| {
        b.iter_batched(
            || ChatSim::unchecked(&small),
            |mut chat| {
                let report = chat.run();
                // Dropped after the timing, with the rest of the batch.
                (chat, report)
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("clients_100_checked", |b| {
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

/// A minimal program (ask the clock, echo the line) under the same simulator, faults
/// and client load: the simulator's own cost per effect, without the chat program's.
fn echo(c: &mut Criterion) {
    use effectful::effect::{GetCurrentTime, ReceiveText, SendText};
    use effectful_test::sim::{Connection, ConnectionEnd, SimConfig, Simulation};

    async fn echo_session(_connection: u32, fx: effectful::Fx) -> u32 {
        let mut echoed = 0;
        while let Ok(text) = fx.perform(ReceiveText {}).await {
            let _ = fx.perform(GetCurrentTime {}).await;
            if fx.perform(SendText { text }).await.is_err() {
                break;
            }
            echoed += 1;
        }
        echoed
    }
    let connections = || -> Vec<Connection> {
        (0..100u32)
            .flat_map(|client| {
                (0..2u64).map(move |session| Connection {
                    client,
                    connect_at: effectful::Time::from_secs(u64::from(client) + session * 301),
                    messages: (0..30)
                        .map(|i| (Duration::from_secs(1 + i % 7), format!("line {i}")))
                        .collect(),
                    end: ConnectionEnd::Close {
                        after: Duration::from_secs(1),
                    },
                })
            })
            .collect()
    };
    let run = || {
        let config = SimConfig {
            faults: FaultPlan::chaos(),
            ..SimConfig::new(1)
        };
        let mut sim = Simulation::new(config, connections(), echo_session);
        sim.run().effects
    };
    let mut group = c.benchmark_group("sim/echo");
    group.throughput(Throughput::Elements(run()));
    group.bench_function("clients_100", |b| b.iter(run));
    group.finish();
}

criterion_group!(benches, chat, echo);
criterion_main!(benches);
