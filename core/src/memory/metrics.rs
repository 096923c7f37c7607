//! The Metrics fake: a Prometheus-like registry of counters, gauges, histograms and
//! summaries.

use std::collections::{BTreeMap, BTreeSet};

use crate::effect::{
    Labels, MetricFailure, MetricOutcome, MetricSample, MetricsRequest, MetricsResponse,
    QueryMetrics,
};

/// The default most series (label combinations) one metric may have.
pub const DEFAULT_MAX_SERIES: usize = 1000;

/// The type of a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricKind {
    /// Only goes up, by `IncrementCounter`.
    Counter,
    /// Set to any value by `SetGauge`.
    Gauge,
    /// Observations by `ObserveHistogram`: a sum and a count.
    Histogram,
    /// Observations by `RecordSummary`: a sum and a count.
    Summary,
}

/// Why [`FakeMetrics::register`] refused a metric.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The name is not a Prometheus metric name.
    #[error("{name:?} is not a valid metric name; use [a-zA-Z_:][a-zA-Z0-9_:]*")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// A label name is not a Prometheus label name.
    #[error("{label:?} is not a valid label name; use [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidLabelName {
        /// The label name.
        label: String,
    },
    /// The name is taken by a metric of another type or with other label names.
    #[error("metric {name:?} is already registered with another type or other label names")]
    AlreadyRegistered {
        /// The name.
        name: String,
    },
}

#[derive(Clone, Debug)]
struct Series {
    value: f64,
    count: u64,
}

#[derive(Clone, Debug)]
struct Metric {
    kind: MetricKind,
    label_names: BTreeSet<String>,
    series: BTreeMap<Labels, Series>,
}

/// A Prometheus-like registry.
///
/// A metric is registered with a type and its label names
/// ([`register`](FakeMetrics::register)); a registry built
/// [`permissive`](FakeMetrics::permissive) registers a metric on its first use instead,
/// with that use's type and label names. Recording answers
/// [`MetricOutcome::Failed`] with, checked in this order:
/// - [`MetricFailure::NotRegistered`]: no metric of this name (in a permissive
///   registry, only when the name is not a valid metric name);
/// - [`MetricFailure::TypeMismatch`]: the metric has another type;
/// - [`MetricFailure::InvalidLabels`]: the label names differ from the registered ones,
///   or one does not match `[a-zA-Z_][a-zA-Z0-9_]*`;
/// - [`MetricFailure::InvalidValue`]: NaN, an infinity, or a negative counter
///   increment;
/// - [`MetricFailure::CardinalityLimit`]: the use would create a series beyond the
///   metric's limit ([`DEFAULT_MAX_SERIES`] unless set with
///   [`with_max_series`](FakeMetrics::with_max_series)).
///
/// A counter adds, a gauge takes the value, histograms and summaries add to their sum
/// and count. `QueryMetrics` answers the series of the named metric (or all) that carry
/// every queried label, sorted by name then labels.
#[derive(Clone, Debug)]
pub struct FakeMetrics {
    permissive: bool,
    max_series: usize,
    metrics: BTreeMap<String, Metric>,
}

impl Default for FakeMetrics {
    fn default() -> FakeMetrics {
        FakeMetrics::new()
    }
}

impl FakeMetrics {
    /// An empty registry where every metric must be registered before use.
    pub fn new() -> FakeMetrics {
        FakeMetrics {
            permissive: false,
            max_series: DEFAULT_MAX_SERIES,
            metrics: BTreeMap::new(),
        }
    }

    /// An empty registry that registers a metric on its first use.
    pub fn permissive() -> FakeMetrics {
        FakeMetrics {
            permissive: true,
            ..FakeMetrics::new()
        }
    }

    /// The same registry allowing at most `max_series` series per metric.
    pub fn with_max_series(mut self, max_series: usize) -> FakeMetrics {
        self.max_series = max_series;
        self
    }

    /// Registers `name` as a metric of `kind` with `label_names`. Registering the same
    /// metric again is harmless.
    pub fn register<I, S>(
        &mut self,
        name: &str,
        kind: MetricKind,
        label_names: I,
    ) -> Result<(), RegisterError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        if !is_metric_name(name) {
            return Err(RegisterError::InvalidName {
                name: name.to_owned(),
            });
        }
        let label_names: BTreeSet<String> = label_names.into_iter().map(Into::into).collect();
        if let Some(label) = label_names.iter().find(|l| !is_label_name(l)) {
            return Err(RegisterError::InvalidLabelName {
                label: label.clone(),
            });
        }
        match self.metrics.get(name) {
            Some(metric) if metric.kind == kind && metric.label_names == label_names => Ok(()),
            Some(_) => Err(RegisterError::AlreadyRegistered {
                name: name.to_owned(),
            }),
            None => {
                self.metrics.insert(
                    name.to_owned(),
                    Metric {
                        kind,
                        label_names,
                        series: BTreeMap::new(),
                    },
                );
                Ok(())
            }
        }
    }

    /// Answers one Metrics request.
    pub fn handle(&mut self, request: MetricsRequest) -> MetricsResponse {
        match request {
            MetricsRequest::IncrementCounter(r) => MetricsResponse::IncrementCounter(self.record(
                MetricKind::Counter,
                r.name,
                r.labels,
                r.value,
            )),
            MetricsRequest::SetGauge(r) => {
                MetricsResponse::SetGauge(self.record(MetricKind::Gauge, r.name, r.labels, r.value))
            }
            MetricsRequest::ObserveHistogram(r) => MetricsResponse::ObserveHistogram(self.record(
                MetricKind::Histogram,
                r.name,
                r.labels,
                r.value,
            )),
            MetricsRequest::RecordSummary(r) => MetricsResponse::RecordSummary(self.record(
                MetricKind::Summary,
                r.name,
                r.labels,
                r.value,
            )),
            MetricsRequest::QueryMetrics(r) => MetricsResponse::QueryMetrics(self.query(&r)),
        }
    }

    /// The current sample of one series.
    pub fn sample(&self, name: &str, labels: &Labels) -> Option<MetricSample> {
        let series = self.metrics.get(name)?.series.get(labels)?;
        Some(MetricSample {
            name: name.to_owned(),
            labels: labels.clone(),
            value: series.value,
            count: series.count,
        })
    }

    /// The type `name` is registered with.
    pub fn kind(&self, name: &str) -> Option<MetricKind> {
        self.metrics.get(name).map(|m| m.kind)
    }

    /// Every registered metric's name, in name order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.metrics.keys().map(String::as_str)
    }

    /// Every series of metric `name` (all of them when `None`), as samples.
    pub fn series(&self, name: Option<&str>) -> Vec<MetricSample> {
        self.query(&QueryMetrics {
            name: name.map(str::to_owned),
            labels: Labels::default(),
        })
    }

    /// How many series metric `name` has.
    pub fn series_count(&self, name: &str) -> usize {
        self.metrics.get(name).map_or(0, |m| m.series.len())
    }

    /// The samples `query` asks for, sorted by name then labels.
    pub fn query(&self, query: &QueryMetrics) -> Vec<MetricSample> {
        let metrics: Box<dyn Iterator<Item = (&String, &Metric)>> = match &query.name {
            Some(name) => Box::new(self.metrics.get_key_value(name).into_iter()),
            None => Box::new(self.metrics.iter()),
        };
        metrics
            .flat_map(|(name, metric)| {
                metric
                    .series
                    .iter()
                    .filter(|(labels, _)| {
                        query.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
                    })
                    .map(move |(labels, series)| MetricSample {
                        name: name.clone(),
                        labels: labels.clone(),
                        value: series.value,
                        count: series.count,
                    })
            })
            .collect()
    }

    fn record(
        &mut self,
        kind: MetricKind,
        name: String,
        labels: Labels,
        value: f64,
    ) -> MetricOutcome {
        match self.try_record(kind, name, labels, value) {
            Ok(()) => MetricOutcome::Recorded,
            Err(failure) => MetricOutcome::Failed(failure),
        }
    }

    fn try_record(
        &mut self,
        kind: MetricKind,
        name: String,
        labels: Labels,
        value: f64,
    ) -> Result<(), MetricFailure> {
        if !self.metrics.contains_key(&name) {
            if !self.permissive || !is_metric_name(&name) {
                return Err(MetricFailure::NotRegistered);
            }
            if !labels.keys().all(|l| is_label_name(l)) {
                return Err(MetricFailure::InvalidLabels);
            }
            let label_names = labels.keys().cloned().collect();
            self.metrics.insert(
                name.clone(),
                Metric {
                    kind,
                    label_names,
                    series: BTreeMap::new(),
                },
            );
        }
        let Some(metric) = self.metrics.get_mut(&name) else {
            return Err(MetricFailure::NotRegistered);
        };
        if metric.kind != kind {
            return Err(MetricFailure::TypeMismatch);
        }
        if !labels.keys().all(|l| is_label_name(l)) || !labels.keys().eq(metric.label_names.iter())
        {
            return Err(MetricFailure::InvalidLabels);
        }
        if !value.is_finite() || (kind == MetricKind::Counter && value < 0.0) {
            return Err(MetricFailure::InvalidValue);
        }
        if !metric.series.contains_key(&labels) && metric.series.len() >= self.max_series {
            return Err(MetricFailure::CardinalityLimit);
        }
        let series = metric.series.entry(labels).or_insert(Series {
            value: 0.0,
            count: 0,
        });
        match kind {
            MetricKind::Counter => series.value += value,
            MetricKind::Gauge => series.value = value,
            MetricKind::Histogram | MetricKind::Summary => {
                series.value += value;
                series.count = series.count.saturating_add(1);
            }
        }
        Ok(())
    }
}

/// Whether `name` matches `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `label` matches `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(label: &str) -> bool {
    let mut chars = label.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::{IncrementCounter, ObserveHistogram, RecordSummary, SetGauge};

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn inc(metrics: &mut FakeMetrics, name: &str, l: &[(&str, &str)], value: f64) -> MetricOutcome {
        let request = IncrementCounter {
            name: name.into(),
            labels: labels(l),
            value,
        };
        match metrics.handle(MetricsRequest::IncrementCounter(request)) {
            MetricsResponse::IncrementCounter(outcome) => outcome,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn gauge(
        metrics: &mut FakeMetrics,
        name: &str,
        l: &[(&str, &str)],
        value: f64,
    ) -> MetricOutcome {
        let request = SetGauge {
            name: name.into(),
            labels: labels(l),
            value,
        };
        match metrics.handle(MetricsRequest::SetGauge(request)) {
            MetricsResponse::SetGauge(outcome) => outcome,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn query(
        metrics: &mut FakeMetrics,
        name: Option<&str>,
        l: &[(&str, &str)],
    ) -> Vec<MetricSample> {
        let request = QueryMetrics {
            name: name.map(Into::into),
            labels: labels(l),
        };
        match metrics.handle(MetricsRequest::QueryMetrics(request)) {
            MetricsResponse::QueryMetrics(samples) => samples,
            other => panic!("unexpected {other:?}"),
        }
    }

    const RECORDED: MetricOutcome = MetricOutcome::Recorded;

    fn failed(failure: MetricFailure) -> MetricOutcome {
        MetricOutcome::Failed(failure)
    }

    #[test]
    fn metrics_unregistered_name_fails_as_not_registered() {
        let mut metrics = FakeMetrics::new();
        assert_eq!(
            inc(&mut metrics, "hits", &[], 1.0),
            failed(MetricFailure::NotRegistered)
        );
        assert!(query(&mut metrics, None, &[]).is_empty());
    }

    #[test]
    fn metrics_counter_adds_gauge_sets_histogram_and_summary_sum_and_count() {
        let mut metrics = FakeMetrics::new();
        metrics
            .register("hits", MetricKind::Counter, ["route"])
            .expect("registered");
        metrics
            .register("temp", MetricKind::Gauge, Vec::<String>::new())
            .expect("registered");
        metrics
            .register("latency", MetricKind::Histogram, ["route"])
            .expect("registered");
        metrics
            .register("size", MetricKind::Summary, Vec::<String>::new())
            .expect("registered");
        assert_eq!(inc(&mut metrics, "hits", &[("route", "/")], 1.0), RECORDED);
        assert_eq!(inc(&mut metrics, "hits", &[("route", "/")], 2.5), RECORDED);
        assert_eq!(gauge(&mut metrics, "temp", &[], 5.0), RECORDED);
        assert_eq!(gauge(&mut metrics, "temp", &[], -3.0), RECORDED);
        for value in [0.5, 1.5] {
            let request = ObserveHistogram {
                name: "latency".into(),
                labels: labels(&[("route", "/")]),
                value,
            };
            assert_eq!(
                metrics.handle(MetricsRequest::ObserveHistogram(request)),
                MetricsResponse::ObserveHistogram(RECORDED)
            );
            let request = RecordSummary {
                name: "size".into(),
                labels: Labels::new(),
                value,
            };
            assert_eq!(
                metrics.handle(MetricsRequest::RecordSummary(request)),
                MetricsResponse::RecordSummary(RECORDED)
            );
        }
        let sample = |m: &FakeMetrics, name, l: &[(&str, &str)]| {
            m.sample(name, &labels(l)).map(|s| (s.value, s.count))
        };
        assert_eq!(sample(&metrics, "hits", &[("route", "/")]), Some((3.5, 0)));
        assert_eq!(sample(&metrics, "temp", &[]), Some((-3.0, 0)));
        assert_eq!(
            sample(&metrics, "latency", &[("route", "/")]),
            Some((2.0, 2))
        );
        assert_eq!(sample(&metrics, "size", &[]), Some((2.0, 2)));
    }

    #[test]
    fn metrics_use_with_another_type_is_a_type_mismatch() {
        let mut metrics = FakeMetrics::new();
        metrics
            .register("hits", MetricKind::Counter, Vec::<String>::new())
            .expect("registered");
        assert_eq!(
            gauge(&mut metrics, "hits", &[], 1.0),
            failed(MetricFailure::TypeMismatch)
        );
        assert_eq!(metrics.kind("hits"), Some(MetricKind::Counter));
    }

    #[test]
    fn metrics_labels_must_match_the_registered_names() {
        let mut metrics = FakeMetrics::new();
        metrics
            .register("hits", MetricKind::Counter, ["method", "route"])
            .expect("registered");
        let invalid = failed(MetricFailure::InvalidLabels);
        assert_eq!(inc(&mut metrics, "hits", &[("route", "/")], 1.0), invalid);
        assert_eq!(
            inc(
                &mut metrics,
                "hits",
                &[("route", "/"), ("method", "GET"), ("extra", "x")],
                1.0
            ),
            invalid
        );
        assert_eq!(
            inc(
                &mut metrics,
                "hits",
                &[("route", "/"), ("verb", "GET")],
                1.0
            ),
            invalid
        );
        assert_eq!(
            inc(
                &mut metrics,
                "hits",
                &[("route", "/"), ("method", "GET")],
                1.0
            ),
            RECORDED
        );
        assert_eq!(metrics.series_count("hits"), 1);
    }

    #[test]
    fn metrics_malformed_label_names_are_invalid_labels_even_when_permissive() {
        let mut metrics = FakeMetrics::permissive();
        for bad in ["", "1abc", "a-b", "a b", "é"] {
            assert_eq!(
                inc(&mut metrics, "hits", &[(bad, "x")], 1.0),
                failed(MetricFailure::InvalidLabels),
                "{bad:?}"
            );
        }
        assert_eq!(
            metrics.kind("hits"),
            None,
            "nothing registered by a failed use"
        );
        assert_eq!(inc(&mut metrics, "hits", &[("_ok_1", "x")], 1.0), RECORDED);
    }

    #[test]
    fn metrics_register_refuses_bad_names_and_conflicting_registrations() {
        let mut metrics = FakeMetrics::new();
        assert_eq!(
            metrics.register("bad-name", MetricKind::Counter, Vec::<String>::new()),
            Err(RegisterError::InvalidName {
                name: "bad-name".into()
            })
        );
        assert_eq!(
            metrics.register("ok", MetricKind::Counter, ["0bad"]),
            Err(RegisterError::InvalidLabelName {
                label: "0bad".into()
            })
        );
        metrics
            .register("ns:ok_total", MetricKind::Counter, ["a"])
            .expect("registered");
        metrics
            .register("ns:ok_total", MetricKind::Counter, ["a"])
            .expect("registering again is harmless");
        assert_eq!(
            metrics.register("ns:ok_total", MetricKind::Gauge, ["a"]),
            Err(RegisterError::AlreadyRegistered {
                name: "ns:ok_total".into()
            })
        );
        assert_eq!(
            metrics.register("ns:ok_total", MetricKind::Counter, ["b"]),
            Err(RegisterError::AlreadyRegistered {
                name: "ns:ok_total".into()
            })
        );
    }

    #[test]
    fn metrics_nan_infinite_and_negative_counter_increments_are_invalid_values() {
        let mut metrics = FakeMetrics::permissive();
        let invalid = failed(MetricFailure::InvalidValue);
        assert_eq!(inc(&mut metrics, "hits", &[], -1.0), invalid);
        assert_eq!(inc(&mut metrics, "hits", &[], f64::NAN), invalid);
        assert_eq!(inc(&mut metrics, "hits", &[], f64::INFINITY), invalid);
        assert_eq!(gauge(&mut metrics, "temp", &[], f64::NEG_INFINITY), invalid);
        assert_eq!(gauge(&mut metrics, "temp", &[], f64::NAN), invalid);
        assert_eq!(inc(&mut metrics, "hits", &[], 0.0), RECORDED);
        assert_eq!(
            metrics.sample("hits", &Labels::new()).map(|s| s.value),
            Some(0.0)
        );
    }

    #[test]
    fn metrics_new_series_beyond_the_limit_hit_the_cardinality_limit() {
        let mut metrics = FakeMetrics::permissive().with_max_series(2);
        assert_eq!(inc(&mut metrics, "hits", &[("user", "a")], 1.0), RECORDED);
        assert_eq!(inc(&mut metrics, "hits", &[("user", "b")], 1.0), RECORDED);
        assert_eq!(
            inc(&mut metrics, "hits", &[("user", "c")], 1.0),
            failed(MetricFailure::CardinalityLimit)
        );
        // Existing series still record.
        assert_eq!(inc(&mut metrics, "hits", &[("user", "a")], 1.0), RECORDED);
        assert_eq!(metrics.series_count("hits"), 2);
        assert_eq!(FakeMetrics::new().max_series, 1000);
    }

    #[test]
    fn metrics_permissive_registers_on_first_use_with_that_uses_type_and_labels() {
        let mut metrics = FakeMetrics::permissive();
        assert_eq!(inc(&mut metrics, "hits", &[("route", "/")], 1.0), RECORDED);
        assert_eq!(metrics.kind("hits"), Some(MetricKind::Counter));
        assert_eq!(
            gauge(&mut metrics, "hits", &[("route", "/")], 1.0),
            failed(MetricFailure::TypeMismatch)
        );
        assert_eq!(
            inc(&mut metrics, "hits", &[], 1.0),
            failed(MetricFailure::InvalidLabels)
        );
        assert_eq!(
            inc(&mut metrics, "bad name", &[], 1.0),
            failed(MetricFailure::NotRegistered)
        );
    }

    #[test]
    fn metrics_query_filters_by_name_and_label_subset_sorted_by_name_then_labels() {
        let mut metrics = FakeMetrics::permissive();
        inc(
            &mut metrics,
            "b_total",
            &[("route", "/z"), ("code", "200")],
            1.0,
        );
        inc(
            &mut metrics,
            "b_total",
            &[("route", "/a"), ("code", "500")],
            1.0,
        );
        inc(
            &mut metrics,
            "b_total",
            &[("route", "/a"), ("code", "200")],
            1.0,
        );
        gauge(&mut metrics, "a_gauge", &[("code", "200")], 7.0);
        let keys = |samples: Vec<MetricSample>| -> Vec<(String, Vec<String>)> {
            samples
                .into_iter()
                .map(|s| (s.name, s.labels.into_values().collect()))
                .collect()
        };
        let all = keys(query(&mut metrics, None, &[]));
        let expected = [
            ("a_gauge", vec!["200"]),
            ("b_total", vec!["200", "/a"]),
            ("b_total", vec!["200", "/z"]),
            ("b_total", vec!["500", "/a"]),
        ];
        let expected: Vec<(String, Vec<String>)> = expected
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
            .collect();
        assert_eq!(all, expected);
        let ok = keys(query(&mut metrics, None, &[("code", "200")]));
        assert_eq!(
            ok,
            [
                expected[0].clone(),
                expected[1].clone(),
                expected[2].clone()
            ]
        );
        let named = keys(query(&mut metrics, Some("b_total"), &[("route", "/a")]));
        assert_eq!(named, [expected[1].clone(), expected[3].clone()]);
        assert!(query(&mut metrics, Some("missing"), &[]).is_empty());
        assert!(query(&mut metrics, None, &[("code", "404")]).is_empty());
    }
}
