//! The simulator's event queue: what happens next, and when.
//!
//! Events are ordered by time, then by a tie-break the seeded scheduler draws (so
//! simultaneous arrivals come in an order the seed decides), then by slot. The key is
//! packed into one `u128` and the events are kept out of the heap, so sifting compares
//! and moves 16 bytes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use effectful::effect::{Request, Response};
use effectful::{EffectError, EffectId, Time};

/// Something that happens at a simulated time.
pub(super) enum Event {
    /// A client connects: its program is spawned.
    Connect(u32),
    /// A client sends its scripted message `index`.
    ClientSend { connection: u32, index: usize },
    /// A client closes or vanishes, as its script says.
    ClientEnd(u32),
    /// A frame the server sent reaches its client.
    ClientReceive { connection: u32, text: String },
    /// A request reaches its service (the end of its request leg).
    Apply {
        id: EffectId,
        request: Request,
        /// How long its answer then takes to come back.
        response_leg: Duration,
    },
    /// An answer reaches the engine.
    Deliver {
        id: EffectId,
        result: Result<Response, EffectError>,
    },
    /// One of a custom family's own requests reaches its fake (its request is kept
    /// beside the queue, as the event cannot name the family's types).
    ApplyOwn {
        id: EffectId,
        response_leg: Duration,
    },
    /// The fake's answer to one of a custom family's own requests reaches the engine.
    DeliverOwn(EffectId),
    /// A parked consumer's `timeout_ms` has passed.
    ConsumeDeadline(EffectId),
    /// The ack timeout of one delivered message whose acknowledgement was lost.
    AckTimeout { message_id: String },
    /// The broker asked to be woken (a redelivery's time has come).
    BrokerWake,
    /// A job's spawn time has come.
    SpawnJob(u32),
    /// The fault plan's restart `n` happens.
    Restart(u32),
    /// The fault plan's disconnect storm `n` happens.
    Storm(u32),
}

/// Pending events, earliest first.
///
/// Events due at the current time (answers given at once) wait in a small queue of
/// their own, so that they do not sift through the whole queue; the next event is the
/// earlier head of the two, so the order is the same as with one queue.
#[derive(Default)]
pub(super) struct EventQueue {
    later: BinaryHeap<Reverse<EventKey>>,
    due_now: BinaryHeap<Reverse<EventKey>>,
    /// The events themselves, by slot.
    events: Vec<Option<Event>>,
    free: Vec<u32>,
}

impl EventQueue {
    /// Queues `event` at `at` (`now` is the current time) with the scheduler's
    /// `tie_break`; returns its slot, to [`withdraw`](Self::withdraw) it.
    pub(super) fn push(&mut self, now: Time, at: Time, tie_break: u32, event: Event) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.events[slot as usize] = Some(event);
                slot
            }
            None => {
                self.events.push(Some(event));
                (self.events.len() - 1) as u32
            }
        };
        let key = Reverse(EventKey::new(at, tie_break, slot));
        if at <= now {
            self.due_now.push(key);
        } else {
            self.later.push(key);
        }
        slot
    }

    /// Empties the event in `slot` before its time; its key stays queued and pops as
    /// nothing.
    pub(super) fn withdraw(&mut self, slot: u32) {
        self.events[slot as usize] = None;
    }

    /// The event waiting in `slot`, if it was not withdrawn.
    pub(super) fn get(&self, slot: u32) -> Option<&Event> {
        self.events.get(slot as usize).and_then(Option::as_ref)
    }

    /// The time of the earliest pending event.
    pub(super) fn next_at(&self) -> Option<Time> {
        self.next().map(|(key, _)| key.at())
    }

    /// Takes the earliest pending event: its time, and the event (`None`: it was
    /// withdrawn).
    pub(super) fn pop(&mut self) -> Option<(Time, Option<Event>)> {
        let (key, heap) = self.next()?;
        match heap {
            Heap::DueNow => self.due_now.pop(),
            Heap::Later => self.later.pop(),
        };
        let slot = key.slot();
        // The slot is free only once its heap entry is gone; an event withdrawn before
        // its time (a cancelled request) left it empty.
        self.free.push(slot);
        Some((key.at(), self.events[slot as usize].take()))
    }

    /// The earliest pending event's key, and which heap holds it.
    fn next(&self) -> Option<(EventKey, Heap)> {
        let now = self.due_now.peek().map(|Reverse(key)| (*key, Heap::DueNow));
        let later = self.later.peek().map(|Reverse(key)| (*key, Heap::Later));
        match (now, later) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

/// Which heap holds an event.
#[derive(Clone, Copy)]
enum Heap {
    DueNow,
    Later,
}

/// An event's place in the queue: its time, then a random tie-break, then its slot,
/// packed into one integer so that sifting compares and moves 16 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EventKey(u128);

impl EventKey {
    fn new(at: Time, tie_break: u32, slot: u32) -> EventKey {
        EventKey(u128::from(at.as_nanos()) << 64 | u128::from(tie_break) << 32 | u128::from(slot))
    }

    fn at(self) -> Time {
        Time::from_nanos((self.0 >> 64) as u64)
    }

    fn slot(self) -> u32 {
        self.0 as u32
    }
}
