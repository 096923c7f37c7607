//! Fault plans: what goes wrong in a simulation, and how slow things are.
//!
//! Every random draw comes from the simulation's seeded [`Rng`], so a plan plus a seed
//! fixes the run.

use std::time::Duration;

use effectful::effect::Request;
use effectful::{Rng, Time, duration_nanos};
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

/// A service behind an effect family, for faults that strike one service over time
/// (WebSocket clients have their own: [`DisconnectStorm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// The database (PostgreSQL).
    Database,
    /// The cache (Redis without persistence).
    Cache,
    /// The message broker (Pulsar).
    Messaging,
    /// Object storage (S3).
    Storage,
    /// The auth service.
    Auth,
    /// The system (clock, UUIDs).
    System,
    /// The metrics registry.
    Metrics,
}

impl Service {
    /// Every service, in declaration order.
    pub const ALL: [Service; 7] = [
        Service::Database,
        Service::Cache,
        Service::Messaging,
        Service::Storage,
        Service::Auth,
        Service::System,
        Service::Metrics,
    ];

    /// The service `request` goes to; `None` for WebSocket effects.
    pub fn of(request: &Request) -> Option<Service> {
        Some(match request {
            Request::WebSocket(_) => return None,
            Request::Database(_) => Service::Database,
            Request::Cache(_) => Service::Cache,
            Request::Messaging(_) => Service::Messaging,
            Request::Storage(_) => Service::Storage,
            Request::Auth(_) => Service::Auth,
            Request::System(_) => Service::System,
            Request::Metrics(_) => Service::Metrics,
        })
    }
}

/// A span of simulated time: from `from` (inclusive) until `until` (exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// When it starts.
    pub from: Time,
    /// When it is over.
    pub until: Time,
}

impl Window {
    /// The window from `from` until `until` (empty if `until <= from`).
    pub const fn new(from: Time, until: Time) -> Window {
        Window { from, until }
    }

    /// Whether `at` falls in the window.
    pub fn contains(&self, at: Time) -> bool {
        self.from <= at && at < self.until
    }
}

/// A service refuses connections for a while: every effect issued to it during
/// `window` fails with a retryable connection error after one latency draw, and is
/// never applied ("the database refuses connections from 30 s to 60 s").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outage {
    /// Which service.
    pub service: Service,
    /// When.
    pub window: Window,
}

/// A service is slow for a while: every effect issued to it during `window` takes
/// `extra` longer (added to its latency draw, split across both legs as the draw is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySpike {
    /// Which service.
    pub service: Service,
    /// When.
    pub window: Window,
    /// How much longer each effect takes.
    pub extra: Duration,
}

/// A service restarts at `at`, losing what the real one loses:
///
/// - every request on its way there and not yet applied fails with a retryable
///   connection error (it is never applied), whatever the service;
/// - the cache (Redis without persistence) loses every key;
/// - the broker keeps its topics and subscriptions (Pulsar persists them) but every
///   message in flight goes back for redelivery, as when its consumers' connections
///   drop;
/// - the database (PostgreSQL) keeps everything committed: it loses only what was in
///   flight; storage, auth, system and metrics keep their state likewise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restart {
    /// Which service.
    pub service: Service,
    /// When.
    pub at: Time,
}

/// At `at`, each open WebSocket connection vanishes (close code 1006) with
/// probability `fraction`: a load balancer restart, a network partition.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DisconnectStorm {
    /// When.
    pub at: Time,
    /// The share of open connections that drop, in `[0, 1]`.
    pub fraction: f64,
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
    /// Services that refuse connections for a while.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outages: Vec<Outage>,
    /// Services that are slow for a while.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_spikes: Vec<LatencySpike>,
    /// Services that restart, losing what the real service loses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<Restart>,
    /// Moments when many WebSocket clients drop at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disconnect_storms: Vec<DisconnectStorm>,
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
            outages: Vec::new(),
            latency_spikes: Vec::new(),
            restarts: Vec::new(),
            disconnect_storms: Vec::new(),
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
            outages: Vec::new(),
            latency_spikes: Vec::new(),
            restarts: Vec::new(),
            disconnect_storms: Vec::new(),
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
            outages: Vec::new(),
            latency_spikes: Vec::new(),
            restarts: Vec::new(),
            disconnect_storms: Vec::new(),
        }
    }
}

impl FaultPlan {
    /// The same plan with `service` refusing connections during `window`.
    pub fn with_outage(mut self, service: Service, window: Window) -> FaultPlan {
        self.outages.push(Outage { service, window });
        self
    }

    /// The same plan with `service` slower by `extra` during `window`.
    pub fn with_latency_spike(
        mut self,
        service: Service,
        window: Window,
        extra: Duration,
    ) -> FaultPlan {
        self.latency_spikes.push(LatencySpike {
            service,
            window,
            extra,
        });
        self
    }

    /// The same plan with `service` restarting at `at`.
    pub fn with_restart(mut self, service: Service, at: Time) -> FaultPlan {
        self.restarts.push(Restart { service, at });
        self
    }

    /// The same plan with a share `fraction` of open connections dropping at `at`.
    pub fn with_disconnect_storm(mut self, at: Time, fraction: f64) -> FaultPlan {
        self.disconnect_storms
            .push(DisconnectStorm { at, fraction });
        self
    }

    /// [`FaultPlan::swarm`], plus faults over time drawn within the first `horizon`
    /// of the run: often none, sometimes an outage, a latency spike, a restart or a
    /// disconnect storm (each drawn after the rates, so the rates are the same as
    /// `swarm` gives for the same generator).
    pub fn swarm_over(rng: &mut Rng, horizon: Duration) -> FaultPlan {
        let mut plan = FaultPlan::swarm(rng);
        let horizon = duration_nanos(horizon).max(1);
        let at = |rng: &mut Rng| Time::from_nanos(rng.below(horizon));
        let window = |rng: &mut Rng| {
            let from = at(rng);
            let length = Duration::from_millis(1_000 + rng.below(60_000));
            Window::new(from, from.saturating_add(length))
        };
        let service = |rng: &mut Rng| Service::ALL[rng.below(Service::ALL.len() as u64) as usize];
        if rng.below(4) == 0 {
            let (s, w) = (service(rng), window(rng));
            plan = plan.with_outage(s, w);
        }
        if rng.below(4) == 0 {
            let (s, w) = (service(rng), window(rng));
            let extra = Duration::from_millis(rng.below(5_000));
            plan = plan.with_latency_spike(s, w, extra);
        }
        if rng.below(4) == 0 {
            let (s, t) = (service(rng), at(rng));
            plan = plan.with_restart(s, t);
        }
        if rng.below(4) == 0 {
            let t = at(rng);
            let fraction = rng.unit_f64();
            plan = plan.with_disconnect_storm(t, fraction);
        }
        plan
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
