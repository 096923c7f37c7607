//! `/metrics` in Prometheus text format: the runtime's counters (read at each
//! scrape), the duration of programs the server ran, and gauges that the pool and
//! WebSocket code sets.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::RuntimeStats;

/// Labels of a pool gauge: which pool (`"database"`, `"redis"`).
pub type PoolLabels = [(&'static str, String); 1];

/// The server's metrics; cheap to clone, shared by every handler.
///
/// Exposed (names as Prometheus shows them):
/// - `effectful_effects_total{family, outcome}` and
///   `effectful_programs_total{outcome}`: counters, from the runtime;
/// - `effectful_programs_in_progress`: gauge, from the runtime;
/// - `effectful_program_duration_seconds`: histogram of the programs the server ran
///   for HTTP requests (route label);
/// - `effectful_pool_utilization{pool}`: gauge, 0 to 1, set by pool code through
///   [`ServerMetrics::set_pool_utilization`];
/// - `effectful_websocket_sessions_open`: gauge, moved by the WebSocket route through
///   [`ServerMetrics::websocket_sessions`].
#[derive(Clone)]
pub struct ServerMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    durations: Family<[(&'static str, String); 1], Histogram>,
    pools: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    websocket_sessions: Gauge,
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerMetrics")
    }
}

#[derive(Debug)]
struct RuntimeCollector(RuntimeStats);

impl Collector for RuntimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.snapshot();
        let counter = ConstCounter::new(0u64);
        let mut effects = encoder.encode_descriptor(
            "effectful_effects",
            "Effects handled, by family and how they ended",
            None,
            counter.metric_type(),
        )?;
        for c in &snapshot.effects {
            for (outcome, n) in [
                ("ok", c.ok),
                ("error", c.error),
                ("cancelled", c.cancelled),
                ("stale", c.stale),
            ] {
                let labels = [("family", c.family), ("outcome", outcome)];
                ConstCounter::new(n).encode(effects.encode_family(&labels)?)?;
            }
        }
        let mut programs = encoder.encode_descriptor(
            "effectful_programs",
            "Programs ended, by outcome",
            None,
            counter.metric_type(),
        )?;
        for (outcome, n) in &snapshot.finished {
            let labels = [("outcome", *outcome)];
            ConstCounter::new(*n).encode(programs.encode_family(&labels)?)?;
        }
        let running = ConstGauge::new(i64::try_from(snapshot.running()).unwrap_or(i64::MAX));
        let progress = encoder.encode_descriptor(
            "effectful_programs_in_progress",
            "Programs started and not yet ended",
            None,
            running.metric_type(),
        )?;
        running.encode(progress)
    }
}

/// Buckets for program durations, in seconds: 1 ms to 5 minutes (the default
/// program timeout).
const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0,
];

impl ServerMetrics {
    /// Metrics over `stats` (a runtime's counters, read at each scrape).
    pub fn new(stats: RuntimeStats) -> ServerMetrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(RuntimeCollector(stats)));
        let durations =
            Family::<[(&'static str, String); 1], Histogram>::new_with_constructor(|| {
                Histogram::new(DURATION_BUCKETS)
            });
        registry.register(
            "effectful_program_duration_seconds",
            "How long programs run for HTTP requests took, by route",
            durations.clone(),
        );
        let pools = Family::<PoolLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "effectful_pool_utilization",
            "Share of each connection pool in use, 0 to 1",
            pools.clone(),
        );
        let websocket_sessions = Gauge::default();
        registry.register(
            "effectful_websocket_sessions_open",
            "WebSocket sessions open now",
            websocket_sessions.clone(),
        );
        ServerMetrics {
            inner: Arc::new(Inner {
                registry,
                durations,
                pools,
                websocket_sessions,
            }),
        }
    }

    /// Records how long a program run for `route` took.
    pub fn observe_program(&self, route: &str, seconds: f64) {
        self.inner
            .durations
            .get_or_create(&[("route", route.to_string())])
            .observe(seconds);
    }

    /// Sets the share (0 to 1) of `pool`'s connections in use.
    pub fn set_pool_utilization(&self, pool: &str, share: f64) {
        self.inner
            .pools
            .get_or_create(&[("pool", pool.to_string())])
            .set(share.clamp(0.0, 1.0));
    }

    /// The gauge of open WebSocket sessions: `inc()` when one opens, `dec()` when it
    /// closes.
    pub fn websocket_sessions(&self) -> &Gauge {
        &self.inner.websocket_sessions
    }

    /// Everything, in Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug in a
        // collector, and the scrape then shows what was written before it.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry)
        {
            tracing::error!(error = %e, "could not encode metrics");
        }
        out
    }
}
