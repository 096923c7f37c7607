//! Fault plans: what goes wrong in a simulation, and how slow things are.
//!
//! Every random draw comes from the simulation's seeded [`Rng`], so a plan plus a seed
//! fixes the run.

use std::time::Duration;

use effectful::effect::Request;
use effectful::{Rng, duration_nanos};
use serde::{Deserialize, Serialize};

/// One number per effect family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PerFamily<T> {
    /// WebSocket effects.
    pub websocket: T,
    /// Database effects.
    pub database: T,
    /// Cache effects.
    pub cache: T,
    /// Messaging effects.
    pub messaging: T,
    /// Storage effects.
    pub storage: T,
    /// Auth effects.
    pub auth: T,
    /// System effects.
    pub system: T,
    /// Metrics effects.
    pub metrics: T,
}

impl<T: Copy> PerFamily<T> {
    /// The same value for every family.
    pub fn all(value: T) -> PerFamily<T> {
        PerFamily {
            websocket: value,
            database: value,
            cache: value,
            messaging: value,
            storage: value,
            auth: value,
            system: value,
            metrics: value,
        }
    }

    /// The value for the family `request` belongs to.
    pub fn for_request(&self, request: &Request) -> T {
        match request {
            Request::WebSocket(_) => self.websocket,
            Request::Database(_) => self.database,
            Request::Cache(_) => self.cache,
            Request::Messaging(_) => self.messaging,
            Request::Storage(_) => self.storage,
            Request::Auth(_) => self.auth,
            Request::System(_) => self.system,
            Request::Metrics(_) => self.metrics,
        }
    }
}

/// How long a service takes to answer: `base`, plus a uniform draw in `[0, jitter]`,
/// plus `spike` with probability `spike_rate` (a slow query, a GC pause).
///
/// One draw is the whole round trip of an effect. The simulator splits it in two: the
/// service applies the effect after the first half (the request leg, rounded down to
/// the nanosecond), and the answer arrives after the rest (the response leg), so the
/// effect's write is visible to others before its answer reaches the program, and a
/// cancel that comes during the request leg stops it from being applied at all.
/// WebSocket effects and `ConsumeMessage` take effect when they are issued; for them
/// the draw is how long the frame takes to reach the client, or the answer to reach
/// the program.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// The least it takes.
    pub base: Duration,
    /// Uniform extra.
    pub jitter: Duration,
    /// How often a spike happens, in `[0, 1]`.
    pub spike_rate: f64,
    /// How long a spike adds.
    pub spike: Duration,
}

impl Latency {
    /// Always exactly `d`.
    pub const fn fixed(d: Duration) -> Latency {
        Latency {
            base: d,
            jitter: Duration::ZERO,
            spike_rate: 0.0,
            spike: Duration::ZERO,
        }
    }

    /// One draw.
    pub fn sample(&self, rng: &mut Rng) -> Duration {
        let jitter = rng.below(duration_nanos(self.jitter).saturating_add(1));
        let mut d = self.base.saturating_add(Duration::from_nanos(jitter));
        if self.spike_rate > 0.0 && rng.chance(self.spike_rate) {
            d = d.saturating_add(self.spike);
        }
        d
    }

    /// The longest a draw can be.
    pub fn max(&self) -> Duration {
        self.base
            .saturating_add(self.jitter)
            .saturating_add(self.spike)
    }
}

impl Default for Latency {
    fn default() -> Self {
        Latency::fixed(Duration::from_micros(500))
    }
}

/// What goes wrong, and how often.
///
/// Every draw comes from the simulation's seeded [`Rng`]. Latencies are split into a
/// request leg and a response leg (see [`Latency`]); an injected error is decided when
/// the effect is issued, so the effect is never applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultPlan {
    /// Probability that an effect fails with a retryable infrastructure error
    /// (connection lost) before the service sees it: decided when the effect is
    /// issued, and the answer comes after one latency draw. A `ConsumeMessage` that
    /// fails this way never reaches the broker, so it takes no message.
    ///
    /// The `websocket` rate is ignored: WebSocket failures are modelled by dropped
    /// connections only ([`FaultPlan::websocket_drop_rate`]), which fail every later
    /// WebSocket effect of that connection with its close code.
    pub error_rate: PerFamily<f64>,
    /// Probability that the service performs the effect but its answer is lost: the
    /// program only learns through its own timeout (or deadline). Drawn when the
    /// service applies the effect.
    ///
    /// Lost answers do not apply to `ConsumeMessage` (a consumer that stops waiting
    /// hands its message back), and the `websocket` rate is ignored, as for
    /// [`FaultPlan::error_rate`].
    pub lost_answer_rate: PerFamily<f64>,
    /// How long each family takes to answer: one draw per effect, split into a request
    /// leg and a response leg (see [`Latency`]).
    pub latency: PerFamily<Latency>,
    /// Probability, per client message, that the client's connection vanishes
    /// (close code 1006) right after sending it.
    pub websocket_drop_rate: f64,
    /// Probability that an acknowledgement is lost on its way to the broker, so that
    /// message (and only it) is delivered again after [`FaultPlan::ack_timeout`]
    /// (at-least-once delivery). The consumer is still told `Acknowledged`.
    pub duplicate_delivery_rate: f64,
    /// How long after a lost acknowledgement was sent the broker redelivers its
    /// message, if it is still in flight (Pulsar's per-message ack timeout).
    pub ack_timeout: Duration,
}

impl FaultPlan {
    /// Nothing goes wrong; every service answers in half a millisecond.
    pub fn none() -> FaultPlan {
        FaultPlan {
            error_rate: PerFamily::all(0.0),
            lost_answer_rate: PerFamily::all(0.0),
            latency: PerFamily::all(Latency::default()),
            websocket_drop_rate: 0.0,
            duplicate_delivery_rate: 0.0,
            ack_timeout: Duration::from_secs(30),
        }
    }

    /// The seed tutorial's world on a bad day: every family fails now and then,
    /// answers get lost, queries spike, clients vanish, acknowledgements get lost.
    pub fn chaos() -> FaultPlan {
        let ms = Duration::from_millis;
        let latency = |base, jitter, spike| Latency {
            base: ms(base),
            jitter: ms(jitter),
            spike_rate: 0.01,
            spike: ms(spike),
        };
        FaultPlan {
            error_rate: PerFamily {
                websocket: 0.0,
                ..PerFamily::all(0.02)
            },
            lost_answer_rate: PerFamily {
                websocket: 0.0,
                ..PerFamily::all(0.005)
            },
            latency: PerFamily {
                websocket: latency(1, 5, 200),
                database: latency(1, 4, 1_500),
                cache: latency(0, 1, 100),
                messaging: latency(1, 3, 300),
                storage: latency(5, 20, 1_000),
                auth: latency(0, 1, 50),
                system: Latency::fixed(Duration::ZERO),
                metrics: Latency::fixed(Duration::ZERO),
            },
            websocket_drop_rate: 0.01,
            duplicate_delivery_rate: 0.02,
            ack_timeout: Duration::from_secs(30),
        }
    }

    /// A plan drawn from `rng` (swarm testing): each family gets its own error and
    /// lost-answer rates (often zero, sometimes high) and its own latency.
    pub fn swarm(rng: &mut Rng) -> FaultPlan {
        let mut rate = |high: f64| match rng.below(4) {
            0 | 1 => 0.0,
            2 => rng.unit_f64() * high / 10.0,
            _ => rng.unit_f64() * high,
        };
        let error_rate = PerFamily {
            websocket: 0.0,
            database: rate(0.2),
            cache: rate(0.2),
            messaging: rate(0.2),
            storage: rate(0.2),
            auth: rate(0.2),
            system: rate(0.05),
            metrics: rate(0.2),
        };
        let lost_answer_rate = PerFamily {
            websocket: 0.0,
            database: rate(0.05),
            cache: rate(0.05),
            messaging: rate(0.05),
            storage: rate(0.05),
            auth: rate(0.05),
            system: 0.0,
            metrics: rate(0.05),
        };
        let websocket_drop_rate = rate(0.1);
        let duplicate_delivery_rate = rate(0.2);
        let mut latency = || Latency {
            base: Duration::from_micros(rng.below(5_000)),
            jitter: Duration::from_micros(rng.below(20_000)),
            spike_rate: rng.unit_f64() * 0.05,
            spike: Duration::from_millis(rng.below(3_000)),
        };
        FaultPlan {
            error_rate,
            lost_answer_rate,
            latency: PerFamily {
                websocket: latency(),
                database: latency(),
                cache: latency(),
                messaging: latency(),
                storage: latency(),
                auth: latency(),
                system: latency(),
                metrics: latency(),
            },
            websocket_drop_rate,
            duplicate_delivery_rate,
            ack_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_draws_stay_within_base_jitter_and_spike() {
        let l = Latency {
            base: Duration::from_millis(2),
            jitter: Duration::from_millis(3),
            spike_rate: 0.5,
            spike: Duration::from_secs(1),
        };
        let mut rng = Rng::from_seed(4);
        let draws: Vec<Duration> = (0..1000).map(|_| l.sample(&mut rng)).collect();
        assert!(draws.iter().all(|d| *d >= l.base && *d <= l.max()));
        assert!(
            draws.iter().any(|d| *d >= Duration::from_secs(1)),
            "spikes happen"
        );
        assert!(
            draws.iter().any(|d| *d < Duration::from_secs(1)),
            "and not always"
        );
    }

    #[test]
    fn swarm_plans_differ_by_seed_and_repeat_by_seed() {
        let a = FaultPlan::swarm(&mut Rng::from_seed(1));
        assert_eq!(a, FaultPlan::swarm(&mut Rng::from_seed(1)));
        assert_ne!(a, FaultPlan::swarm(&mut Rng::from_seed(2)));
    }
}
