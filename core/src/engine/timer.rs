//! The engine's timers: effect timers (sleeps, timeouts, retry delays) and program
//! deadlines, in one queue. The outside sees only the earliest deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::engine::id::{EffectId, ProgramId};
use crate::time::Time;

/// What a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerTarget {
    /// A program's sleep or timeout.
    Effect(EffectId),
    /// A program's deadline.
    Deadline(ProgramId),
}

/// A min-queue of timers, earliest first; ties fire in the order they were armed.
///
/// Timers whose program or effect is gone stay in the queue until they reach the head
/// and are discarded there (lazy deletion keeps cancellation O(1)).
#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    heap: BinaryHeap<Reverse<(Time, u64, TimerTarget)>>,
    armed: u64,
}

impl TimerQueue {
    pub(crate) fn push(&mut self, at: Time, target: TimerTarget) {
        self.armed += 1;
        self.heap.push(Reverse((at, self.armed, target)));
    }

    pub(crate) fn peek(&self) -> Option<(Time, TimerTarget)> {
        self.heap
            .peek()
            .map(|Reverse((at, _, target))| (*at, *target))
    }

    pub(crate) fn pop(&mut self) -> Option<(Time, TimerTarget)> {
        self.heap.pop().map(|Reverse((at, _, target))| (at, target))
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}
