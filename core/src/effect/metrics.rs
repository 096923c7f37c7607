//! Metrics: counters, gauges, histograms and summaries (Prometheus-like).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::family;

/// Label names and values.
pub type Labels = BTreeMap<String, String>;

/// Why a metric was not recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricFailure {
    /// No metric of this name is registered.
    NotRegistered,
    /// The metric exists with another type.
    TypeMismatch,
    /// The labels do not match the metric's label names, or are malformed.
    InvalidLabels,
    /// The value is not allowed (negative counter increment, NaN).
    InvalidValue,
    /// Too many label combinations for this metric.
    CardinalityLimit,
    /// The collector itself failed.
    CollectorError,
}

/// The domain outcome of recording a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricOutcome {
    /// Recorded.
    Recorded,
    /// Not recorded.
    Failed(MetricFailure),
}

/// One series' current value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    /// Metric name.
    pub name: String,
    /// The series' labels.
    pub labels: Labels,
    /// Counter or gauge value; for histograms and summaries, the sum of observations.
    #[serde(with = "super::float")]
    pub value: f64,
    /// For histograms and summaries, the number of observations.
    pub count: u64,
}

/// Add to a counter. Output: [`MetricOutcome`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncrementCounter {
    /// Metric name.
    pub name: String,
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
    /// How much to add (at least 0).
    #[serde(with = "super::float")]
    pub value: f64,
}

/// Set a gauge. Output: [`MetricOutcome`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetGauge {
    /// Metric name.
    pub name: String,
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
    /// The new value.
    #[serde(with = "super::float")]
    pub value: f64,
}

/// Observe a value in a histogram. Output: [`MetricOutcome`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObserveHistogram {
    /// Metric name.
    pub name: String,
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
    /// The observation.
    #[serde(with = "super::float")]
    pub value: f64,
}

/// Observe a value in a summary. Output: [`MetricOutcome`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordSummary {
    /// Metric name.
    pub name: String,
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
    /// The observation.
    #[serde(with = "super::float")]
    pub value: f64,
}

/// Read series back. Output: the matching samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryMetrics {
    /// Only this metric, if given.
    pub name: Option<String>,
    /// Only series carrying all these labels.
    #[serde(default)]
    pub labels: Labels,
}

family! {
    /// The Metrics family's requests.
    Metrics: MetricsRequest => MetricsResponse {
        IncrementCounter => MetricOutcome,
        SetGauge => MetricOutcome,
        ObserveHistogram => MetricOutcome,
        RecordSummary => MetricOutcome,
        QueryMetrics => Vec<MetricSample>,
    }
}
