//! Counters per family and outcome, and per program outcome, kept per shard (so that
//! shards never share a cache line) and summed on read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use effectful::ProgramError;
use effectful::effect::{Labels, MetricSample};

/// The family label of requests that no interpreter handles.
pub const UNHANDLED: &str = "unhandled";

#[derive(Debug, Default)]
pub(crate) struct FamilyCounters {
    requested: AtomicU64,
    ok: AtomicU64,
    error: AtomicU64,
    cancelled: AtomicU64,
    stale: AtomicU64,
}

/// How an effect's life ended, as the counters see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EffectOutcome {
    Ok,
    Error,
    Cancelled,
    Stale,
}

impl EffectOutcome {
    pub(crate) fn label(self) -> &'static str {
        match self {
            EffectOutcome::Ok => "ok",
            EffectOutcome::Error => "error",
            EffectOutcome::Cancelled => "cancelled",
            EffectOutcome::Stale => "stale",
        }
    }
}

pub(crate) const PROGRAM_OUTCOMES: [&str; 7] = [
    "ok",
    "deadline_exceeded",
    "aborted",
    "panicked",
    "foreign_await",
    "stalled",
    "other",
];

pub(crate) fn program_outcome(result: &Result<(), ProgramError>) -> usize {
    match result {
        Ok(()) => 0,
        Err(ProgramError::DeadlineExceeded { .. }) => 1,
        Err(ProgramError::Aborted) => 2,
        Err(ProgramError::Panicked { .. }) => 3,
        Err(ProgramError::ForeignAwait) => 4,
        Err(ProgramError::Stalled) => 5,
        Err(_) => 6,
    }
}

/// One shard's counters. Only its shard writes them.
#[derive(Debug)]
pub(crate) struct ShardCounters {
    /// One per registered family, then one for [`UNHANDLED`].
    families: Box<[FamilyCounters]>,
    spawned: AtomicU64,
    finished: [AtomicU64; PROGRAM_OUTCOMES.len()],
}

impl ShardCounters {
    pub(crate) fn new(families: usize) -> ShardCounters {
        ShardCounters {
            families: (0..=families).map(|_| FamilyCounters::default()).collect(),
            spawned: AtomicU64::new(0),
            finished: Default::default(),
        }
    }

    /// Only the shard writes its counters, so a plain load and store suffice: no
    /// locked read-modify-write (about 20 cycles each, twice per effect) on the hot
    /// path. Readers on other threads see each value whole.
    #[inline]
    fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    pub(crate) fn requested(&self, family: usize) {
        Self::bump(&self.families[family].requested);
    }

    pub(crate) fn ended(&self, family: usize, outcome: EffectOutcome) {
        let f = &self.families[family];
        Self::bump(match outcome {
            EffectOutcome::Ok => &f.ok,
            EffectOutcome::Error => &f.error,
            EffectOutcome::Cancelled => &f.cancelled,
            EffectOutcome::Stale => &f.stale,
        });
    }

    pub(crate) fn spawned(&self) {
        Self::bump(&self.spawned);
    }

    pub(crate) fn finished(&self, result: &Result<(), ProgramError>) {
        Self::bump(&self.finished[program_outcome(result)]);
    }
}

/// A live view of a runtime's counters, cheap to clone and `Send`: read it from
/// anywhere (a `/metrics` handler, a test).
#[derive(Clone, Debug)]
pub struct RuntimeStats {
    families: Arc<[&'static str]>,
    shards: Arc<[Arc<ShardCounters>]>,
}

/// Effects of one family, by how they ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EffectCounts {
    /// The family (`"unhandled"` for requests no interpreter handles).
    pub family: &'static str,
    /// Requests handed to the interpreter.
    pub requested: u64,
    /// Answered with a response, and delivered.
    pub ok: u64,
    /// Answered with an error, and delivered.
    pub error: u64,
    /// Cancelled by the engine before an answer was delivered.
    pub cancelled: u64,
    /// Answered after the program stopped waiting: dropped.
    pub stale: u64,
}

/// The counters summed over every shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// One entry per registered family, then `"unhandled"`.
    pub effects: Vec<EffectCounts>,
    /// Programs started.
    pub spawned: u64,
    /// Programs ended, by outcome (`ok`, `deadline_exceeded`, `aborted`, `panicked`,
    /// `foreign_await`, `stalled`, `other`).
    pub finished: Vec<(&'static str, u64)>,
}

impl StatsSnapshot {
    /// Programs running (started and not yet ended).
    pub fn running(&self) -> u64 {
        let ended: u64 = self.finished.iter().map(|(_, n)| n).sum();
        self.spawned.saturating_sub(ended)
    }

    /// The counts of `family`, if it is registered.
    pub fn family(&self, family: &str) -> Option<&EffectCounts> {
        self.effects.iter().find(|c| c.family == family)
    }

    /// Programs that ended with `outcome`.
    pub fn finished(&self, outcome: &str) -> u64 {
        self.finished
            .iter()
            .find(|(o, _)| *o == outcome)
            .map_or(0, |(_, n)| *n)
    }

    /// The counters as metric samples, the way the Metrics family reports them:
    /// `effectful_effects_total{family, outcome}`, `effectful_programs_total{outcome}`
    /// and `effectful_programs_in_progress`.
    pub fn samples(&self) -> Vec<MetricSample> {
        let sample = |name: &str, labels: &[(&str, &str)], value: u64| MetricSample {
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Labels>(),
            value: value as f64,
            count: 0,
        };
        let mut out = Vec::new();
        for c in &self.effects {
            for (outcome, n) in [
                (EffectOutcome::Ok, c.ok),
                (EffectOutcome::Error, c.error),
                (EffectOutcome::Cancelled, c.cancelled),
                (EffectOutcome::Stale, c.stale),
            ] {
                out.push(sample(
                    "effectful_effects_total",
                    &[("family", c.family), ("outcome", outcome.label())],
                    n,
                ));
            }
        }
        for (outcome, n) in &self.finished {
            out.push(sample(
                "effectful_programs_total",
                &[("outcome", outcome)],
                *n,
            ));
        }
        out.push(sample(
            "effectful_programs_in_progress",
            &[],
            self.running(),
        ));
        out
    }
}

impl RuntimeStats {
    pub(crate) fn new(families: Arc<[&'static str]>, shards: Arc<[Arc<ShardCounters>]>) -> Self {
        RuntimeStats { families, shards }
    }

    /// The counters now, summed over every shard.
    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let names = self.families.iter().copied().chain([UNHANDLED]);
        let effects = names
            .enumerate()
            .map(|(i, family)| {
                let mut counts = EffectCounts {
                    family,
                    ..EffectCounts::default()
                };
                for shard in self.shards.iter() {
                    let f = &shard.families[i];
                    counts.requested += load(&f.requested);
                    counts.ok += load(&f.ok);
                    counts.error += load(&f.error);
                    counts.cancelled += load(&f.cancelled);
                    counts.stale += load(&f.stale);
                }
                counts
            })
            .collect();
        let finished = PROGRAM_OUTCOMES
            .iter()
            .enumerate()
            .map(|(i, outcome)| {
                (
                    *outcome,
                    self.shards.iter().map(|s| load(&s.finished[i])).sum(),
                )
            })
            .collect();
        StatsSnapshot {
            effects,
            spawned: self.shards.iter().map(|s| load(&s.spawned)).sum(),
            finished,
        }
    }
}
