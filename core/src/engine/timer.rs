//! The engine's timers: effect timers (sleeps, timeouts, retry delays) and program
//! deadlines, in one queue. The outside sees only the earliest deadline.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::id::{EffectId, ProgramId};
use crate::time::Time;

/// What a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerTarget {
    /// A program's timer (a sleep, a retry delay, the sleep of `Fx::timeout`).
    Timer(EffectId),
    /// An effect's time limit: the effect fails with a `Timeout` if still waiting.
    Limit(EffectId),
    /// A program's deadline.
    Deadline(ProgramId),
}

/// How many first-in first-out lanes the queue keeps beside its heap.
const LANES: usize = 4;

/// A min-queue of timers, earliest first; ties fire in the order they were armed.
///
/// Most timers are armed a fixed time from now (a timeout per attempt, a deadline per
/// program), and now never goes back, so they come in time order. A timer no earlier
/// than the last one of a lane joins that lane in O(1) (the lane whose last timer is
/// the latest such one); any other timer goes to a binary heap. The earliest timer
/// is the earliest of the lanes' first timers and the heap's top, kept at hand.
///
/// Timers whose program or effect is gone stay in the queue until they reach the head
/// and are discarded there (lazy deletion keeps cancellation O(1)), or until the
/// queue has doubled since it last shed them: then the owner [`retain`]s the live
/// ones, which costs O(1) per timer armed and keeps the queue within about twice the
/// live timers (every effect arms a time limit, most answered long before it).
///
/// [`retain`]: TimerQueue::retain
#[derive(Debug)]
pub(crate) struct TimerQueue {
    lanes: [VecDeque<Timer>; LANES],
    heap: BinaryHeap<Reverse<Timer>>,
    /// The earliest timer and where it is.
    head: Option<(Timer, Place)>,
    armed: u64,
    len: usize,
    /// Shed dead timers once `len` reaches this.
    compact_at: usize,
}

/// The smallest queue worth shedding dead timers from.
const COMPACT_MIN: usize = 64;

impl Default for TimerQueue {
    fn default() -> Self {
        TimerQueue {
            lanes: Default::default(),
            heap: BinaryHeap::new(),
            head: None,
            armed: 0,
            len: 0,
            compact_at: COMPACT_MIN,
        }
    }
}

/// One armed timer: ordered by time, then by the order it was armed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at: Time,
    armed: u64,
    target: TimerTarget,
}

#[derive(Clone, Copy, Debug)]
enum Place {
    Lane(usize),
    Heap,
}

impl TimerQueue {
    pub(crate) fn push(&mut self, at: Time, target: TimerTarget) {
        self.armed += 1;
        let timer = Timer {
            at,
            armed: self.armed,
            target,
        };
        let mut fit: Option<(usize, Time)> = None;
        let mut empty = None;
        for (i, lane) in self.lanes.iter().enumerate() {
            match lane.back() {
                // `armed` only grows: a timer at the same time as a lane's last comes
                // after it.
                Some(last) if last.at <= at && fit.is_none_or(|(_, best)| last.at > best) => {
                    fit = Some((i, last.at));
                }
                None if empty.is_none() => empty = Some(i),
                _ => {}
            }
        }
        let place = match fit.map(|(i, _)| i).or(empty) {
            Some(i) => {
                self.lanes[i].push_back(timer);
                Place::Lane(i)
            }
            None => {
                self.heap.push(Reverse(timer));
                Place::Heap
            }
        };
        if self.head.is_none_or(|(head, _)| timer < head) {
            self.head = Some((timer, place));
        }
        self.len += 1;
    }

    /// Whether the queue has grown enough since it last shed dead timers.
    #[inline]
    pub(crate) fn wants_compaction(&self) -> bool {
        self.len >= self.compact_at
    }

    /// Keeps only the timers `live` says are live, in the same order.
    pub(crate) fn retain(&mut self, mut live: impl FnMut(Time, TimerTarget) -> bool) {
        for lane in &mut self.lanes {
            lane.retain(|timer| live(timer.at, timer.target));
        }
        self.heap
            .retain(|Reverse(timer)| live(timer.at, timer.target));
        self.len = self.heap.len() + self.lanes.iter().map(VecDeque::len).sum::<usize>();
        self.compact_at = (self.len * 2).max(COMPACT_MIN);
        self.head = self.find_head();
    }

    pub(crate) fn peek(&self) -> Option<(Time, TimerTarget)> {
        self.head.map(|(timer, _)| (timer.at, timer.target))
    }

    /// How many timers were ever armed: a timer armed after this reading compares
    /// greater in [`TimerQueue::armed_after`].
    pub(crate) fn armed_so_far(&self) -> u64 {
        self.armed
    }

    /// Moves every timer armed after `mark` (a reading of
    /// [`TimerQueue::armed_so_far`]) `late` nanoseconds later. Within a lane those
    /// are the back ones, and they stay in order; the heap is rebuilt only if it
    /// holds one.
    pub(crate) fn delay_armed_after(&mut self, mark: u64, late: u64) {
        if self.armed <= mark || late == 0 {
            return;
        }
        let delay = |timer: &mut Timer| {
            timer.at = Time::from_nanos(timer.at.as_nanos().saturating_add(late));
        };
        for lane in &mut self.lanes {
            for timer in lane.iter_mut().rev() {
                if timer.armed <= mark {
                    break;
                }
                delay(timer);
            }
        }
        if self.heap.iter().any(|Reverse(timer)| timer.armed > mark) {
            let mut timers = std::mem::take(&mut self.heap).into_vec();
            for Reverse(timer) in &mut timers {
                if timer.armed > mark {
                    delay(timer);
                }
            }
            self.heap = BinaryHeap::from(timers);
        }
        self.head = self.find_head();
    }

    /// Whether the earliest timer was armed after `mark` (a reading of
    /// [`TimerQueue::armed_so_far`]).
    pub(crate) fn armed_after(&self, mark: u64) -> bool {
        self.head.is_some_and(|(timer, _)| timer.armed > mark)
    }

    pub(crate) fn pop(&mut self) -> Option<(Time, TimerTarget)> {
        let (timer, place) = self.head?;
        match place {
            Place::Lane(i) => {
                self.lanes[i].pop_front();
            }
            Place::Heap => {
                self.heap.pop();
            }
        }
        self.head = self.find_head();
        self.len -= 1;
        Some((timer.at, timer.target))
    }

    fn find_head(&self) -> Option<(Timer, Place)> {
        let mut head = self.heap.peek().map(|Reverse(timer)| (*timer, Place::Heap));
        for (i, lane) in self.lanes.iter().enumerate() {
            if let Some(&timer) = lane.front() {
                if head.is_none_or(|(best, _)| timer < best) {
                    head = Some((timer, Place::Lane(i)));
                }
            }
        }
        head
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn target(n: u32) -> TimerTarget {
        TimerTarget::Deadline(ProgramId {
            index: n,
            generation: 0,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the order of pushes and pops, timers come out by time, and ties in
        /// the order they were armed: as a stable sort of them would give them.
        #[test]
        fn pops_in_time_then_arming_order(
            ops in prop::collection::vec(prop_oneof![
                3 => (0u64..60).prop_map(Some),
                1 => Just(None),
            ], 0..300),
            drift in 0u64..5,
        ) {
            let mut queue = TimerQueue::default();
            let mut reference: Vec<(u64, u32)> = Vec::new();
            let mut now = 0;
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Some(offset) => {
                        // Mostly a fixed delay from a clock that moves on, some anywhere.
                        now += drift;
                        let at = if offset % 3 == 0 { now + 20 } else { offset };
                        queue.push(Time::from_nanos(at), target(n as u32));
                        reference.push((at, n as u32));
                    }
                    None => {
                        reference.sort_by_key(|(at, _)| *at);
                        let expected = (!reference.is_empty()).then(|| reference.remove(0));
                        let expected = expected.map(|(at, n)| (Time::from_nanos(at), target(n)));
                        prop_assert_eq!(queue.peek(), expected);
                        prop_assert_eq!(queue.pop(), expected);
                    }
                }
                prop_assert_eq!(queue.len(), reference.len());
            }
            reference.sort_by_key(|(at, _)| *at);
            for (at, n) in reference {
                prop_assert_eq!(queue.pop(), Some((Time::from_nanos(at), target(n))));
            }
            prop_assert_eq!(queue.pop(), None);
            prop_assert_eq!(queue.peek(), None);
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(u64),
        Pop,
        /// Remember how many timers have been armed.
        Mark,
        /// Move those armed since the mark this much later.
        Delay(u64),
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Timers armed after a mark and then moved later (by the engine after
        /// answers without a time) still come out by time, ties in arming order,
        /// whether they sat in a lane or in the heap.
        #[test]
        fn delayed_timers_still_pop_in_time_then_arming_order(
            ops in prop::collection::vec(prop_oneof![
                4 => (0u64..60).prop_map(Op::Push),
                2 => Just(Op::Pop),
                1 => Just(Op::Mark),
                1 => (0u64..40).prop_map(Op::Delay),
            ], 0..300),
        ) {
            let mut queue = TimerQueue::default();
            let mut reference: Vec<(u64, u32)> = Vec::new();
            // The queue's mark, and the first op whose timer moves.
            let (mut mark, mut first_moved) = (0, 0);
            for (n, op) in ops.into_iter().enumerate() {
                let n = n as u32;
                match op {
                    Op::Push(at) => {
                        queue.push(Time::from_nanos(at), target(n));
                        reference.push((at, n));
                    }
                    Op::Pop => {
                        reference.sort_by_key(|(at, _)| *at);
                        let expected = (!reference.is_empty()).then(|| reference.remove(0));
                        let expected = expected.map(|(at, n)| (Time::from_nanos(at), target(n)));
                        prop_assert_eq!(queue.peek(), expected);
                        prop_assert_eq!(queue.pop(), expected);
                    }
                    Op::Mark => {
                        mark = queue.armed_so_far();
                        first_moved = n + 1;
                    }
                    Op::Delay(late) => {
                        queue.delay_armed_after(mark, late);
                        for (at, armed) in &mut reference {
                            if *armed >= first_moved {
                                *at += late;
                            }
                        }
                        // Ties keep arming order: sort by time, then by `n`.
                        reference.sort_by_key(|&(at, n)| (at, n));
                    }
                }
                prop_assert_eq!(queue.len(), reference.len());
            }
            reference.sort_by_key(|&(at, n)| (at, n));
            for (at, n) in reference {
                prop_assert_eq!(queue.pop(), Some((Time::from_nanos(at), target(n))));
            }
            prop_assert_eq!(queue.pop(), None);
        }
    }

    #[test]
    fn timers_armed_in_time_order_never_reach_the_heap() {
        let mut queue = TimerQueue::default();
        for i in 0..100 {
            queue.push(Time::from_nanos(i * 10 + 2_000), target(0));
            queue.push(Time::from_nanos(i * 10 + 300_000), target(1));
        }
        assert!(queue.heap.is_empty());
        assert_eq!(queue.len(), 200);
        assert_eq!(queue.pop(), Some((Time::from_nanos(2_000), target(0))));
        assert_eq!(queue.peek(), Some((Time::from_nanos(2_010), target(0))));
    }
}
