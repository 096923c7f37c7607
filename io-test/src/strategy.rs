//! proptest strategies for simulations: fault plans (with faults over time), latencies,
//! client connections, and spawn times for programs with no connection.
//!
//! With them, a property test of your own program is a few lines: let proptest choose
//! the world, run the simulation, assert what must always hold. A failing case shrinks
//! to a small world and prints it.
//!
//! ```
//! use effectful::{EffectError, Fx, effect::*};
//! use effectful_test::sim::{SimConfig, Simulation};
//! use effectful_test::strategy;
//! use proptest::prelude::*;
//!
//! /// Echoes each line back, upper-cased, until the client goes away.
//! async fn shout(_connection: u32, fx: Fx) -> Result<(), EffectError> {
//!     while let Ok(line) = fx.perform(ReceiveText {}).await {
//!         fx.perform(SendText { text: line.to_uppercase() }).await?;
//!     }
//!     Ok(())
//! }
//!
//! proptest! {
//!     #![proptest_config(ProptestConfig::with_cases(16))]
//!     // In a test file, put #[test] here.
//!     fn every_line_that_arrives_comes_back_shouted(
//!         seed in any::<u64>(),
//!         faults in strategy::fault_plan(),
//!         connections in strategy::connections(1..8, "[a-z]{1,8}"),
//!     ) {
//!         let config = SimConfig { faults, ..SimConfig::new(seed) };
//!         let mut sim = Simulation::new(config, connections, shout);
//!         let report = sim.run();
//!         prop_assert_eq!(report.unfinished, 0);
//!         for t in sim.transcripts() {
//!             // What came back is a prefix of what was sent, shouted, in order.
//!             for ((_, sent), (_, got)) in t.sent.iter().zip(&t.received) {
//!                 prop_assert_eq!(got, &sent.to_uppercase());
//!             }
//!         }
//!     }
//! }
//! # fn main() { every_line_that_arrives_comes_back_shouted(); }
//! ```

use std::time::Duration;

use effectful::Time;
use proptest::collection::vec;
use proptest::prelude::*;

use crate::fault::{FaultPlan, Latency, Outage, PerFamily, Restart, Service, Window};
use crate::sim::{Connection, ConnectionEnd};

/// A latency: up to 20 ms base, 50 ms jitter, occasional spikes up to 3 s.
pub fn latency() -> impl Strategy<Value = Latency> {
    (
        0u64..20_000,
        0u64..50_000,
        prop_oneof![3 => Just(0.0), 1 => 0.0..0.1f64],
        0u64..3_000,
    )
        .prop_map(|(base, jitter, spike_rate, spike)| Latency {
            base: Duration::from_micros(base),
            jitter: Duration::from_micros(jitter),
            spike_rate,
            spike: Duration::from_millis(spike),
        })
}

/// A probability that is often zero, sometimes small, now and then high.
pub fn rate(high: f64) -> impl Strategy<Value = f64> {
    prop_oneof![2 => Just(0.0), 1 => 0.0..high / 10.0, 1 => 0.0..high]
}

fn per_family<S: Strategy>(make: impl Fn() -> S) -> impl Strategy<Value = PerFamily<S::Value>> {
    (
        make(),
        make(),
        make(),
        make(),
        make(),
        make(),
        make(),
        make(),
    )
        .prop_map(
            |(websocket, database, cache, messaging, storage, auth, system, metrics)| PerFamily {
                websocket,
                database,
                cache,
                messaging,
                storage,
                auth,
                system,
                metrics,
            },
        )
}

/// A fault plan: per-family error and lost-answer rates (never on WebSocket effects,
/// whose failures are modelled by dropped connections), latencies, dropped
/// connections and lost acknowledgements.
pub fn fault_plan() -> impl Strategy<Value = FaultPlan> {
    (
        per_family(|| rate(0.3)),
        per_family(|| rate(0.05)),
        per_family(latency),
        rate(0.1),
        rate(0.3),
        1u64..60,
    )
        .prop_map(
            |(
                mut error_rate,
                mut lost_answer_rate,
                latency,
                websocket_drop_rate,
                duplicate_delivery_rate,
                ack_timeout,
            )| {
                error_rate.websocket = 0.0;
                lost_answer_rate.websocket = 0.0;
                FaultPlan {
                    error_rate,
                    lost_answer_rate,
                    latency,
                    websocket_drop_rate,
                    duplicate_delivery_rate,
                    ack_timeout: Duration::from_secs(ack_timeout),
                    ..FaultPlan::none()
                }
            },
        )
}

/// How a connection ends.
pub fn connection_end() -> impl Strategy<Value = ConnectionEnd> {
    prop_oneof![
        3 => (0u64..5_000).prop_map(|ms| ConnectionEnd::Close { after: Duration::from_millis(ms) }),
        2 => (0u64..5_000).prop_map(|ms| ConnectionEnd::Vanish { after: Duration::from_millis(ms) }),
        1 => Just(ConnectionEnd::Linger),
    ]
}

/// One connection of `client`, connecting in the first minute, sending up to 20
/// messages drawn from `message` with up to 10 s between them.
pub fn connection(
    client: u32,
    message: impl Strategy<Value = String>,
) -> impl Strategy<Value = Connection> {
    (
        0u64..60_000,
        vec((0u64..10_000, message), 0..20),
        connection_end(),
    )
        .prop_map(move |(start, messages, end)| Connection {
            client,
            connect_at: Time::from_millis(start),
            messages: messages
                .into_iter()
                .map(|(ms, text)| (Duration::from_millis(ms), text))
                .collect(),
            end,
        })
}

/// Connections of distinct clients `0..n`, with `n` drawn from `count`.
pub fn connections(
    count: std::ops::Range<usize>,
    message: impl Strategy<Value = String> + Clone,
) -> impl Strategy<Value = Vec<Connection>> {
    count.prop_flat_map(move |n| {
        (0..n as u32)
            .map(|client| connection(client, message.clone()))
            .collect::<Vec<_>>()
    })
}

/// Spawn times for `count` programs with no connection, each within `horizon`; they
/// shrink towards fewer programs, all at time zero.
pub fn spawn_times(
    count: std::ops::Range<usize>,
    horizon: Duration,
) -> impl Strategy<Value = Vec<Time>> {
    let max = u64::try_from(horizon.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    vec((0..max).prop_map(Time::from_millis), count)
}

/// A service (never WebSocket: its faults are drops and storms).
pub fn service() -> impl Strategy<Value = Service> {
    proptest::sample::select(Service::ALL.to_vec())
}

/// A window starting within `horizon` and lasting up to a minute; it shrinks towards
/// a short window at time zero.
pub fn window(horizon: Duration) -> impl Strategy<Value = Window> {
    let max = u64::try_from(horizon.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    (0..max, 0u64..60_000).prop_map(|(from, length)| {
        let from = Time::from_millis(from);
        Window::new(from, from.saturating_add(Duration::from_millis(length)))
    })
}

/// Up to `max` outages and up to `max` restarts within `horizon`, added to `plan`;
/// they shrink towards none.
pub fn timed_faults(
    plan: FaultPlan,
    max: usize,
    horizon: Duration,
) -> impl Strategy<Value = FaultPlan> {
    let most = u64::try_from(horizon.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    (
        vec((service(), window(horizon)), 0..=max),
        vec((service(), 0..most), 0..=max),
    )
        .prop_map(move |(outages, restarts)| FaultPlan {
            outages: outages
                .into_iter()
                .map(|(service, window)| Outage { service, window })
                .collect(),
            restarts: restarts
                .into_iter()
                .map(|(service, at)| Restart {
                    service,
                    at: Time::from_millis(at),
                })
                .collect(),
            ..plan.clone()
        })
}
