//! Random schedules and a model of what they may do, shared by the engine properties
//! (`properties/`) and the schedule properties (`schedule_properties.rs`).
//!
//! Each of those test crates includes this file with `#[path]`; it is not part of
//! `support`'s exports.

use std::time::Duration;

use effectful::{Schedule, duration_nanos};
use proptest::prelude::*;

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Any schedule the combinators can build, bounded or not.
pub(crate) fn schedule_strategy() -> impl Strategy<Value = Schedule> {
    let delay = || (0u64..=20).prop_map(ms);
    let fraction = prop_oneof![Just(0.0), Just(1.0), 0.0f64..=1.0];
    let base = prop_oneof![
        delay().prop_map(Schedule::exponential),
        delay().prop_map(Schedule::spaced),
        delay().prop_map(Schedule::fixed),
        (0u32..=4).prop_map(Schedule::recurs_only),
    ];
    base.prop_recursive(3, 8, 2, move |inner| {
        prop_oneof![
            (inner.clone(), fraction.clone()).prop_map(|(s, f)| s.jittered(f)),
            (inner.clone(), delay()).prop_map(|(s, max)| s.max_delay(max)),
            (inner.clone(), (0u64..=100).prop_map(ms)).prop_map(|(s, limit)| s.up_to(limit)),
            (inner.clone(), 0u32..=4).prop_map(|(s, n)| s.recurs(n)),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| a.and(b)),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| a.or(b)),
            (inner.clone(), inner).prop_map(|(a, b)| a.and_then(b)),
        ]
    })
}

/// Steps a schedule like [`Schedule::next`], but for each step gives the range its delay
/// can take whatever the random draws (`(lo, hi)` in nanoseconds), or `None` to stop.
/// Whether a schedule goes on never depends on its draws, so the model follows a real
/// run exactly given the same elapsed times.
pub(crate) struct Model<'s> {
    schedule: &'s Schedule,
    attempt: u32,
    switched: Vec<Option<(u32, Duration)>>,
}

impl<'s> Model<'s> {
    pub(crate) fn new(schedule: &'s Schedule) -> Self {
        Model {
            schedule,
            attempt: 0,
            switched: vec![None; and_then_nodes(schedule)],
        }
    }

    pub(crate) fn next(&mut self, elapsed: Duration) -> Option<(u64, u64)> {
        let mut node = 0;
        let bounds = decide(
            self.schedule,
            &mut self.switched,
            &mut node,
            self.attempt,
            elapsed,
        );
        if bounds.is_some() {
            self.attempt += 1;
        }
        bounds
    }
}

fn and_then_nodes(s: &Schedule) -> usize {
    match s {
        Schedule::Jittered { inner, .. } | Schedule::MaxDelay { inner, .. } => {
            and_then_nodes(inner)
        }
        Schedule::Both(a, b) | Schedule::Either(a, b) => and_then_nodes(a) + and_then_nodes(b),
        Schedule::AndThen(a, b) => 1 + and_then_nodes(a) + and_then_nodes(b),
        _ => 0,
    }
}

fn decide(
    s: &Schedule,
    switched: &mut [Option<(u32, Duration)>],
    node: &mut usize,
    attempt: u32,
    elapsed: Duration,
) -> Option<(u64, u64)> {
    match s {
        Schedule::Exponential { base, factor } => {
            let nanos = (duration_nanos(*base) as f64
                * factor.powi(attempt.min(i32::MAX as u32) as i32)) as u64;
            Some((nanos, nanos))
        }
        Schedule::Spaced(d) => Some((duration_nanos(*d), duration_nanos(*d))),
        Schedule::Fixed(period) => {
            let p = duration_nanos(*period);
            let nanos = if p == 0 {
                0
            } else {
                p - duration_nanos(elapsed) % p
            };
            Some((nanos, nanos))
        }
        Schedule::Recurs(n) => (attempt < *n).then_some((0, 0)),
        Schedule::UpTo(limit) => (elapsed < *limit).then_some((0, 0)),
        Schedule::Jittered { inner, fraction } => {
            let (lo, hi) = decide(inner, switched, node, attempt, elapsed)?;
            let f = if fraction.is_nan() {
                0.0
            } else {
                fraction.clamp(0.0, 1.0)
            };
            // The same float operations as the schedule, at the extremes of its draw.
            Some((
                (lo as f64 * (1.0 - f)) as u64,
                (hi as f64 * (1.0 - f + 2.0 * f)) as u64,
            ))
        }
        Schedule::MaxDelay { inner, max } => {
            let max = duration_nanos(*max);
            decide(inner, switched, node, attempt, elapsed)
                .map(|(lo, hi)| (lo.min(max), hi.min(max)))
        }
        Schedule::Both(a, b) => {
            let da = decide(a, switched, node, attempt, elapsed);
            let db = decide(b, switched, node, attempt, elapsed);
            let ((alo, ahi), (blo, bhi)) = (da?, db?);
            Some((alo.max(blo), ahi.max(bhi)))
        }
        Schedule::Either(a, b) => {
            let da = decide(a, switched, node, attempt, elapsed);
            let db = decide(b, switched, node, attempt, elapsed);
            match (da, db) {
                (Some((alo, ahi)), Some((blo, bhi))) => Some((alo.min(blo), ahi.min(bhi))),
                (x, y) => x.or(y),
            }
        }
        Schedule::AndThen(a, b) => {
            let me = *node;
            *node += 1;
            if switched[me].is_none() {
                let mut inner = *node;
                if let Some(bounds) = decide(a, switched, &mut inner, attempt, elapsed) {
                    *node += and_then_nodes(a) + and_then_nodes(b);
                    return Some(bounds);
                }
                switched[me] = Some((attempt, elapsed));
            }
            *node += and_then_nodes(a);
            let (at, since) = switched[me].unwrap_or((attempt, elapsed));
            decide(
                b,
                switched,
                node,
                attempt - at,
                elapsed.saturating_sub(since),
            )
        }
        other => panic!("the model does not know {other:?}"),
    }
}
