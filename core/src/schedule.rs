//! Retry schedules: pure step functions of attempt, elapsed time and a seeded RNG.
//!
//! ```
//! use std::time::Duration;
//! use effectful::Schedule;
//!
//! // 10 ms, 20 ms, 40 ms, ... each ±20 %, at most 5 retries, never past 30 s.
//! let s = Schedule::exponential(Duration::from_millis(10))
//!     .jittered(0.2)
//!     .recurs(5)
//!     .up_to(Duration::from_secs(30));
//! let delays = s.delays(Duration::ZERO, 1);
//! assert_eq!(delays.len(), 5);
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::time::duration_nanos;

/// When to try again after a failure, and when to give up.
///
/// A schedule is data (serializable, comparable); [`Schedule::start`] makes the little
/// state a run of it needs, and [`Schedule::next`] is the step: given the time elapsed
/// since the first attempt, the delay before the next attempt, or `None` to stop.
///
/// Combinators nest at most [`Schedule::MAX_DEPTH`] deep: the builder methods panic
/// past it (a programming error, named at the call), and a schedule nested deeper by
/// hand or by a decoder never retries ([`Schedule::next`] answers `None`; check one
/// from outside with [`Schedule::check_depth`]). Dropping a schedule never recurses,
/// however deep it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Schedule {
    /// `base * factor^n` before retry `n` (from 0), forever.
    Exponential {
        /// The first delay.
        base: Duration,
        /// Growth per retry.
        #[serde(with = "crate::effect::float")]
        factor: f64,
    },
    /// The same delay before every retry, forever.
    Spaced(Duration),
    /// Retries on a fixed grid of `period` since the first attempt, forever: the delay
    /// is whatever is left until the next multiple of `period`.
    Fixed(Duration),
    /// At most `n` retries, with no delay of its own.
    Recurs(u32),
    /// Retries while less than this has elapsed since the first attempt, with no delay
    /// of its own.
    UpTo(Duration),
    /// The inner schedule's delays scaled by a uniform factor in `[1 - f, 1 + f]`
    /// drawn from the program's seeded RNG.
    Jittered {
        /// The schedule to jitter.
        inner: Box<Schedule>,
        /// The fraction `f`, clamped to `[0, 1]`.
        #[serde(with = "crate::effect::float")]
        fraction: f64,
    },
    /// The inner schedule's delays, capped.
    MaxDelay {
        /// The schedule to cap.
        inner: Box<Schedule>,
        /// The longest delay.
        max: Duration,
    },
    /// Retries while both do, with the longer delay.
    Both(Box<Schedule>, Box<Schedule>),
    /// Retries while either does, with the shorter delay of those that go on.
    Either(Box<Schedule>, Box<Schedule>),
    /// The first schedule until it stops, then the second from its start.
    AndThen(Box<Schedule>, Box<Schedule>),
}

/// The state of one run of a [`Schedule`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    attempt: u32,
    /// The schedule's depth was checked (at the first failure).
    #[serde(default)]
    checked: bool,
    /// For each `AndThen` node (in pre-order), when it switched to its second schedule:
    /// `(attempt, elapsed)`.
    switched: Vec<Option<(u32, Duration)>>,
}

impl ScheduleState {
    /// Retries decided so far.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// A schedule nests its combinators deeper than [`Schedule::MAX_DEPTH`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "retry schedule nests {depth} combinators deep, more than the {max} allowed; \
     build it flatter (one recurs/up_to at the outside is enough)"
)]
pub struct ScheduleTooDeep {
    /// How deep the schedule is.
    pub depth: usize,
    /// The limit, [`Schedule::MAX_DEPTH`].
    pub max: usize,
}

impl Schedule {
    /// How deep combinators may nest (a real policy is a handful deep).
    pub const MAX_DEPTH: usize = 64;

    /// How many schedules deep the deepest leaf is (a leaf alone is 1). Walks the
    /// tree without recursion.
    pub fn depth(&self) -> usize {
        let mut deepest = 0;
        let mut stack = vec![(self, 1usize)];
        while let Some((node, depth)) = stack.pop() {
            deepest = deepest.max(depth);
            match node {
                Schedule::Jittered { inner, .. } | Schedule::MaxDelay { inner, .. } => {
                    stack.push((inner, depth + 1));
                }
                Schedule::Both(a, b) | Schedule::Either(a, b) | Schedule::AndThen(a, b) => {
                    stack.push((a, depth + 1));
                    stack.push((b, depth + 1));
                }
                _ => {}
            }
        }
        deepest
    }

    /// `Ok` if this schedule nests no deeper than [`Schedule::MAX_DEPTH`].
    pub fn check_depth(&self) -> Result<(), ScheduleTooDeep> {
        let depth = self.depth();
        if depth > Self::MAX_DEPTH {
            return Err(ScheduleTooDeep {
                depth,
                max: Self::MAX_DEPTH,
            });
        }
        Ok(())
    }

    #[track_caller]
    fn bounded(self) -> Schedule {
        if let Err(too_deep) = self.check_depth() {
            panic!("{too_deep}");
        }
        self
    }

    /// `base`, `2 base`, `4 base`, ...
    pub fn exponential(base: Duration) -> Schedule {
        Schedule::Exponential { base, factor: 2.0 }
    }

    /// `d` before every retry.
    pub fn spaced(d: Duration) -> Schedule {
        Schedule::Spaced(d)
    }

    /// Retries aligned on multiples of `period` since the first attempt.
    pub fn fixed(period: Duration) -> Schedule {
        Schedule::Fixed(period)
    }

    /// `n` immediate retries.
    pub fn recurs_only(n: u32) -> Schedule {
        Schedule::Recurs(n)
    }

    /// This schedule, but at most `n` retries.
    #[track_caller]
    pub fn recurs(self, n: u32) -> Schedule {
        self.and(Schedule::Recurs(n))
    }

    /// This schedule, but only while less than `limit` has elapsed.
    #[track_caller]
    pub fn up_to(self, limit: Duration) -> Schedule {
        self.and(Schedule::UpTo(limit))
    }

    /// This schedule with each delay scaled by a random factor in `[1 - f, 1 + f]`.
    #[track_caller]
    pub fn jittered(self, fraction: f64) -> Schedule {
        Schedule::Jittered {
            inner: Box::new(self),
            fraction,
        }
        .bounded()
    }

    /// This schedule with no delay longer than `max`.
    #[track_caller]
    pub fn max_delay(self, max: Duration) -> Schedule {
        Schedule::MaxDelay {
            inner: Box::new(self),
            max,
        }
        .bounded()
    }

    /// Retries while both schedules do, waiting the longer delay.
    #[track_caller]
    pub fn and(self, other: Schedule) -> Schedule {
        Schedule::Both(Box::new(self), Box::new(other)).bounded()
    }

    /// Retries while either schedule does, waiting the shorter delay.
    #[track_caller]
    pub fn or(self, other: Schedule) -> Schedule {
        Schedule::Either(Box::new(self), Box::new(other)).bounded()
    }

    /// This schedule until it stops, then `next`.
    #[track_caller]
    pub fn and_then(self, next: Schedule) -> Schedule {
        Schedule::AndThen(Box::new(self), Box::new(next)).bounded()
    }

    /// Fresh state for one run. It costs nothing until the first failure (most runs
    /// never retry): [`next`](Schedule::next) sizes it then.
    pub fn start(&self) -> ScheduleState {
        ScheduleState {
            attempt: 0,
            checked: false,
            switched: Vec::new(),
        }
    }

    /// The delay before the next attempt after a failure, or `None` to give up.
    /// `elapsed` is the time since the first attempt began.
    pub fn next(
        &self,
        state: &mut ScheduleState,
        elapsed: Duration,
        rng: &mut Rng,
    ) -> Option<Duration> {
        if !state.checked {
            // Once per run, at the first failure: stepping recurses, so a schedule
            // nested past the limit (by hand, or decoded) stops instead.
            if self.check_depth().is_err() {
                return None;
            }
            state.checked = true;
        }
        if state.switched.len() != self.and_then_nodes() {
            state.switched = vec![None; self.and_then_nodes()];
        }
        let mut node = 0;
        let attempt = state.attempt;
        let delay = self.decide(&mut state.switched, &mut node, attempt, elapsed, rng);
        if delay.is_some() {
            state.attempt = state.attempt.saturating_add(1);
        }
        delay
    }

    /// Every delay this schedule gives when each attempt fails at once (for docs,
    /// tests and dry runs); stops after 10 000 delays for schedules that never end.
    pub fn delays(&self, elapsed_start: Duration, seed: u64) -> Vec<Duration> {
        let mut rng = Rng::from_seed(seed);
        let mut state = self.start();
        let mut elapsed = elapsed_start;
        let mut out = Vec::new();
        while out.len() < 10_000 {
            match self.next(&mut state, elapsed, &mut rng) {
                Some(d) => {
                    elapsed = elapsed.saturating_add(d);
                    out.push(d);
                }
                None => break,
            }
        }
        out
    }

    fn and_then_nodes(&self) -> usize {
        match self {
            Schedule::Exponential { .. }
            | Schedule::Spaced(_)
            | Schedule::Fixed(_)
            | Schedule::Recurs(_)
            | Schedule::UpTo(_) => 0,
            Schedule::Jittered { inner, .. } | Schedule::MaxDelay { inner, .. } => {
                inner.and_then_nodes()
            }
            Schedule::Both(a, b) | Schedule::Either(a, b) => {
                a.and_then_nodes() + b.and_then_nodes()
            }
            Schedule::AndThen(a, b) => 1 + a.and_then_nodes() + b.and_then_nodes(),
        }
    }

    fn decide(
        &self,
        switched: &mut [Option<(u32, Duration)>],
        node: &mut usize,
        attempt: u32,
        elapsed: Duration,
        rng: &mut Rng,
    ) -> Option<Duration> {
        match self {
            Schedule::Exponential { base, factor } => {
                let nanos =
                    duration_nanos(*base) as f64 * factor.powi(attempt.min(i32::MAX as u32) as i32);
                Some(nanos_f64(nanos))
            }
            Schedule::Spaced(d) => Some(*d),
            Schedule::Fixed(period) => {
                let p = duration_nanos(*period);
                if p == 0 {
                    return Some(Duration::ZERO);
                }
                let into = duration_nanos(elapsed) % p;
                Some(Duration::from_nanos(p - into))
            }
            Schedule::Recurs(n) => (attempt < *n).then_some(Duration::ZERO),
            Schedule::UpTo(limit) => (elapsed < *limit).then_some(Duration::ZERO),
            Schedule::Jittered { inner, fraction } => {
                let d = inner.decide(switched, node, attempt, elapsed, rng)?;
                let f = if fraction.is_nan() {
                    0.0
                } else {
                    fraction.clamp(0.0, 1.0)
                };
                let scale = 1.0 - f + 2.0 * f * rng.unit_f64();
                Some(nanos_f64(duration_nanos(d) as f64 * scale))
            }
            Schedule::MaxDelay { inner, max } => inner
                .decide(switched, node, attempt, elapsed, rng)
                .map(|d| d.min(*max)),
            Schedule::Both(a, b) => {
                // Both sides always step, so the RNG is drawn the same way whatever they decide.
                let da = a.decide(switched, node, attempt, elapsed, rng);
                let db = b.decide(switched, node, attempt, elapsed, rng);
                Some(da?.max(db?))
            }
            Schedule::Either(a, b) => {
                let da = a.decide(switched, node, attempt, elapsed, rng);
                let db = b.decide(switched, node, attempt, elapsed, rng);
                match (da, db) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                }
            }
            Schedule::AndThen(a, b) => {
                let me = *node;
                *node += 1;
                let a_nodes = a.and_then_nodes();
                if switched[me].is_none() {
                    let mut inner = *node;
                    if let Some(d) = a.decide(switched, &mut inner, attempt, elapsed, rng) {
                        *node += a_nodes;
                        // b keeps its node numbering even when it does not run.
                        *node += b.and_then_nodes();
                        return Some(d);
                    }
                    switched[me] = Some((attempt, elapsed));
                }
                *node += a_nodes;
                let (at, since) = switched[me].unwrap_or((attempt, elapsed));
                b.decide(
                    switched,
                    node,
                    attempt - at,
                    elapsed.saturating_sub(since),
                    rng,
                )
            }
        }
    }
}

impl Drop for Schedule {
    /// Takes the tree apart without recursion, so that no schedule, however deep,
    /// overflows the stack when it goes.
    fn drop(&mut self) {
        let mut stack = Vec::new();
        let take = |node: &mut Schedule, stack: &mut Vec<Schedule>| match node {
            Schedule::Jittered { inner, .. } | Schedule::MaxDelay { inner, .. } => {
                stack.push(std::mem::replace(&mut **inner, Schedule::Recurs(0)));
            }
            Schedule::Both(a, b) | Schedule::Either(a, b) | Schedule::AndThen(a, b) => {
                stack.push(std::mem::replace(&mut **a, Schedule::Recurs(0)));
                stack.push(std::mem::replace(&mut **b, Schedule::Recurs(0)));
            }
            _ => {}
        };
        take(self, &mut stack);
        while let Some(mut node) = stack.pop() {
            take(&mut node, &mut stack);
        }
    }
}

fn nanos_f64(nanos: f64) -> Duration {
    // `as` saturates (and maps NaN to 0): no panic on hostile factors.
    Duration::from_nanos(nanos as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    #[should_panic(expected = "more than the 64 allowed")]
    fn a_builder_nesting_past_the_depth_limit_panics_saying_so() {
        let mut s = Schedule::spaced(MS);
        for _ in 0..100 {
            s = s.max_delay(MS);
        }
    }

    #[test]
    fn a_schedule_nested_100_000_deep_by_hand_stops_instead_of_overflowing_and_drops() {
        let mut s = Schedule::spaced(MS);
        for _ in 0..100_000 {
            s = Schedule::MaxDelay {
                inner: Box::new(s),
                max: MS,
            };
        }
        assert_eq!(s.depth(), 100_001);
        let error = s.check_depth().unwrap_err();
        assert!(error.to_string().contains("100001"), "{error}");
        let mut state = s.start();
        assert_eq!(
            s.next(&mut state, Duration::ZERO, &mut Rng::from_seed(0)),
            None
        );
        drop(s);
    }

    #[test]
    fn a_schedule_at_the_depth_limit_still_steps() {
        let mut s = Schedule::spaced(MS);
        for _ in 1..Schedule::MAX_DEPTH {
            s = s.max_delay(MS);
        }
        assert_eq!(s.depth(), Schedule::MAX_DEPTH);
        assert_eq!(s.delays(Duration::ZERO, 0).first(), Some(&MS));
    }

    #[test]
    fn exponential_doubles_and_recurs_bounds_the_count() {
        let s = Schedule::exponential(10 * MS).recurs(4);
        assert_eq!(
            s.delays(Duration::ZERO, 0),
            vec![10 * MS, 20 * MS, 40 * MS, 80 * MS]
        );
    }

    #[test]
    fn spaced_repeats_and_up_to_stops_on_elapsed_time() {
        let s = Schedule::spaced(100 * MS).up_to(350 * MS);
        // Attempts at 0, 100, 200, 300 ms elapsed keep going; at 400 it stops.
        assert_eq!(s.delays(Duration::ZERO, 0), vec![100 * MS; 4]);
    }

    #[test]
    fn fixed_aligns_to_the_grid() {
        let s = Schedule::fixed(100 * MS).recurs(2);
        let mut st = s.start();
        let mut rng = Rng::from_seed(0);
        assert_eq!(s.next(&mut st, 30 * MS, &mut rng), Some(70 * MS));
        assert_eq!(s.next(&mut st, 250 * MS, &mut rng), Some(50 * MS));
        assert_eq!(s.next(&mut st, 300 * MS, &mut rng), None);
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_is_seeded() {
        let s = Schedule::spaced(100 * MS).jittered(0.25).recurs(200);
        let a = s.delays(Duration::ZERO, 9);
        assert_eq!(a, s.delays(Duration::ZERO, 9));
        assert_ne!(a, s.delays(Duration::ZERO, 10));
        assert!(a.iter().all(|d| *d >= 75 * MS && *d <= 125 * MS), "{a:?}");
    }

    #[test]
    fn and_then_switches_when_the_first_stops() {
        let s = Schedule::spaced(MS)
            .recurs(2)
            .and_then(Schedule::exponential(10 * MS).recurs(2));
        assert_eq!(s.delays(Duration::ZERO, 0), vec![MS, MS, 10 * MS, 20 * MS]);
    }

    #[test]
    fn or_takes_the_shorter_while_either_goes_on() {
        let s = Schedule::spaced(50 * MS)
            .recurs(1)
            .or(Schedule::spaced(80 * MS).recurs(3));
        assert_eq!(s.delays(Duration::ZERO, 0), vec![50 * MS, 80 * MS, 80 * MS]);
    }

    #[test]
    fn max_delay_caps_and_hostile_factors_do_not_panic() {
        let s = Schedule::Exponential {
            base: Duration::MAX,
            factor: f64::INFINITY,
        }
        .max_delay(MS)
        .recurs(3);
        assert_eq!(s.delays(Duration::ZERO, 0), vec![MS; 3]);
        let nan = Schedule::Exponential {
            base: MS,
            factor: f64::NAN,
        }
        .jittered(f64::NAN)
        .recurs(1);
        assert_eq!(nan.delays(Duration::ZERO, 0).len(), 1);
    }

    #[test]
    fn schedules_round_trip_through_json() {
        let s = Schedule::exponential(MS)
            .jittered(0.1)
            .and_then(Schedule::spaced(MS))
            .up_to(MS);
        let back: Schedule = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
