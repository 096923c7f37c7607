//! Instructions per engine round trip, for `valgrind --tool=callgrind`: wall-clock
//! benches on a shared machine wander, instruction counts do not.
//!
//! ```text
//! cargo build --release -p effectful-benches --example stepcount
//! for n in 100000 200000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \
//!     target/release/examples/stepcount hand $n 2>&1 | grep refs
//! done   # (refs(200000) - refs(100000)) / 100000 = instructions per round trip
//! ```
//!
//! `hand` runs the hand-written `ClockLoop` of `core/step/state_machine`, `async` the
//! async program of `core/step/async_program`, `baseline` the same work without the
//! engine (`core/step/baseline_call`: build the request, answer it, decode, drop the
//! request): what is left of a round trip when the engine costs nothing; `floor` the
//! same round trip through the minimal engine of `core/step/floor_model`
//! (`effectful_benches::floor`: only the necessary work). `sizes`
//! prints the sizes of the values a round trip moves. With `NO_LIMIT` set, the engine's default per-effect timeout
//! is off. Differencing two runs cancels start-up and the engine's construction.
use effectful::effect::{GetCurrentTime, Request, Response};
use effectful::{Engine, EngineConfig, Event, Output, Std, Time, decode};
use effectful_benches::floor::{Floor, FloorClockLoop, next_floor_request};
use effectful_benches::step::{ClockLoop, answer, next_request};
use std::hint::black_box;

#[inline(never)]
fn run<O: 'static>(mut engine: Engine<O>, n: u64) {
    let (mut id, mut request) = next_request(&mut engine);
    for _ in 0..n {
        let response = answer(&request);
        let _ = engine.handle_response(Time::ZERO, id, Ok(response));
        (id, request) = next_request(&mut engine);
    }
    black_box(&engine);
}

/// `core/step/floor_model`'s loop: `run`'s, through the minimal engine.
#[inline(never)]
fn floor(n: u64) {
    let mut floor = Floor::new(EngineConfig::DEFAULT_EFFECT_TIMEOUT);
    floor.spawn(Box::new(FloorClockLoop { sum: 0 }));
    let (mut id, mut request) = next_floor_request(&mut floor);
    for _ in 0..n {
        let response = answer(&request);
        let _ = floor.handle_response(Time::ZERO, id, Ok(response));
        (id, request) = next_floor_request(&mut floor);
    }
    black_box(&floor);
}

/// `core/step/baseline_call`'s loop.
#[inline(never)]
fn baseline(n: u64) {
    let mut sum = 0i64;
    for _ in 0..n {
        let request: Request = black_box(GetCurrentTime {}).into();
        let response = answer(&request);
        if let Ok(t) = decode::<Std, GetCurrentTime>(response) {
            sum = sum.wrapping_add(t.unix_micros());
        }
    }
    black_box(sum);
}
fn main() {
    if std::env::args().nth(1).as_deref() == Some("sizes") {
        println!(
            "bytes: Request {}, Response {}, Result<Response> {}, Event {}, Output<i64> {}",
            std::mem::size_of::<Request>(),
            std::mem::size_of::<Response>(),
            std::mem::size_of::<Result<Response, effectful::EffectError>>(),
            std::mem::size_of::<Event>(),
            std::mem::size_of::<Output<i64>>(),
        );
        return;
    }
    let mut args = std::env::args().skip(1);
    let usage = "usage: stepcount (hand|async|baseline|floor) ROUND_TRIPS | stepcount sizes";
    let kind = args.next().expect(usage);
    let n: u64 = args.next().and_then(|n| n.parse().ok()).expect(usage);
    match kind.as_str() {
        "baseline" => return baseline(n),
        "floor" => return floor(n),
        _ => {}
    }
    let mut config = EngineConfig::default();
    if std::env::var("NO_LIMIT").is_ok() {
        config.effect_timeout = None;
    }
    let mut engine: Engine<i64> = Engine::new(config);
    if kind == "hand" {
        engine.spawn(Time::ZERO, ClockLoop { sum: 0 });
    } else {
        assert_eq!(kind, "async", "{usage}");
        engine.spawn_async(Time::ZERO, |fx| async move {
            let mut sum = 0i64;
            loop {
                match fx.perform(GetCurrentTime {}).await {
                    Ok(t) => sum = sum.wrapping_add(t.unix_micros()),
                    Err(_) => return sum,
                }
            }
        });
    }
    run(engine, n);
}
