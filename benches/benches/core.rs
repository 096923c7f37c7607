//! Core engine benches: the cost of one effect round trip (request out, response in).
//!
//! - `core/step/state_machine`: a hand-written [`Program`] asking for one effect at a time;
//! - `core/step/async_program`: the same as an `async` block awaiting `fx.perform`;
//! - `core/step/baseline_call`: the same work as a direct function call, no engine;
//! - `core/step/floor_model`: the same round trip through a minimal engine that does
//!   only the necessary work (`effectful_benches::floor`): the floor the engine is
//!   measured against;
//! - `core/join/*`: one program joining 100 effects, reported per effect.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use effectful::effect::{GetCurrentTime, Request};
use effectful::{EffectId, Engine, EngineConfig, Output, Std, Time, decode, join_all};
use effectful_benches::floor::{Floor, FloorClockLoop, next_floor_request};
use effectful_benches::step::{ClockLoop, answer, next_request};

/// One round trip per iteration: answer the outstanding request, take the next one.
fn round_trips<O: 'static>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut engine: Engine<O>,
) {
    let (mut id, mut request) = next_request(&mut engine);
    c.bench_function(name, |b| {
        b.iter(|| {
            let response = answer(&request);
            let _ = engine.handle_response(Time::ZERO, id, Ok(response));
            (id, request) = next_request(&mut engine);
        })
    });
    black_box(&engine);
}

fn step(c: &mut Criterion) {
    let mut group = c.benchmark_group("core/step");
    group.throughput(Throughput::Elements(1));

    let mut engine: Engine<i64> = Engine::new(EngineConfig::default());
    engine.spawn(Time::ZERO, ClockLoop { sum: 0 });
    round_trips(&mut group, "state_machine", engine);

    let mut engine: Engine<i64> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        let mut sum = 0i64;
        loop {
            match fx.perform(GetCurrentTime {}).await {
                Ok(t) => sum = sum.wrapping_add(t.unix_micros()),
                Err(_) => return sum,
            }
        }
    });
    round_trips(&mut group, "async_program", engine);

    let mut floor = Floor::new(EngineConfig::DEFAULT_EFFECT_TIMEOUT);
    floor.spawn(Box::new(FloorClockLoop { sum: 0 }));
    let (mut id, mut request) = next_floor_request(&mut floor);
    group.bench_function("floor_model", |b| {
        b.iter(|| {
            let response = answer(&request);
            let _ = floor.handle_response(Time::ZERO, id, Ok(response));
            (id, request) = next_floor_request(&mut floor);
        })
    });
    black_box(&floor);

    group.bench_function("baseline_call", |b| {
        let mut sum = 0i64;
        b.iter(|| {
            let request: Request = black_box(GetCurrentTime {}).into();
            let response = answer(&request);
            if let Ok(t) = decode::<Std, GetCurrentTime>(response) {
                sum = sum.wrapping_add(t.unix_micros());
            }
        });
        black_box(sum);
    });
    group.finish();
}

const JOINED: usize = 100;

/// One join of 100 effects per iteration: take all requests, answer all.
fn joins<O: 'static>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut engine: Engine<O>,
) {
    let mut pending: Vec<(EffectId, Request)> = Vec::with_capacity(JOINED);
    while let Some(Output::Request { id, request }) = engine.poll_output() {
        pending.push((id, request));
    }
    assert_eq!(pending.len(), JOINED);
    c.bench_function(name, |b| {
        b.iter(|| {
            for (id, request) in pending.drain(..) {
                let _ = engine.handle_response(Time::ZERO, id, Ok(answer(&request)));
            }
            while let Some(Output::Request { id, request }) = engine.poll_output() {
                pending.push((id, request));
            }
        })
    });
}

fn join(c: &mut Criterion) {
    let mut group = c.benchmark_group("core/join");
    group.throughput(Throughput::Elements(JOINED as u64));

    let mut engine: Engine<usize> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        let mut n = 0usize;
        loop {
            n = n.wrapping_add(
                fx.perform_all((0..JOINED).map(|_| GetCurrentTime {}))
                    .await
                    .len(),
            );
        }
    });
    joins(&mut group, "perform_all_100", engine);

    let mut engine: Engine<usize> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        let mut n = 0usize;
        loop {
            n = n.wrapping_add(
                join_all((0..JOINED).map(|_| fx.perform(GetCurrentTime {})))
                    .await
                    .len(),
            );
        }
    });
    joins(&mut group, "join_all_100", engine);
    group.finish();
}

criterion_group!(benches, step, join);
criterion_main!(benches);
