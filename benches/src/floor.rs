//! The floor of a `core/step` round trip: a minimal engine that does only the work an
//! engine must do for one effect, and nothing else, measured beside the real one
//! (`core/step/floor_model`, `stepcount floor`) so the gap between the two is the
//! bookkeeping the engine has left.
//!
//! The necessary work, and how the model does it:
//! - **identify the effect and check it is current**: a table of programs and, per
//!   program, a table of effect slots, each with a generation (an answer names program,
//!   program generation, slot and slot generation, as an [`EffectId`] does);
//! - **queue what programs ask for** until the driver takes it: a first-in first-out
//!   queue of `(id, request)`, since a program may ask for several effects at once;
//! - **keep each effect's time limit**: the default limit is the same for every effect
//!   and time never goes back, so deadlines queue first-in first-out; an answer in
//!   asking order leaves from the front;
//! - **isolate a panic**: `catch_unwind` around each resume;
//! - **run the program**: a dyn call, since an engine hosts programs of many types.
//!
//! It has no timers, cancellation, deadlines, async programs or stuck detection: each
//! of those costs the real engine something on this path, which is the point of
//! comparing.
//!
//! # What remains, per round trip (`stepcount`, callgrind)
//!
//! `stepcount floor` 390 instructions, `hand` 527, `async` 677, `baseline` 71 (the
//! same work with no engine at all: build the request, answer it, decode, drop it).
//! Answers without a time cost the timed path 4 of these (whether the engine is
//! stale, as time is given and as a default limit is armed); the breakdown below was
//! counted before them.
//! The engine's own instructions by side, hand-written program (the model's in
//! brackets), and why each instruction beyond the model is there:
//! - **output** (`poll_output` and the driver's match), 121 (38): the emission
//!   queue is an `Rc<RefCell>` shared with every program's mailbox, since an async
//!   program's `Fx` asks while the engine does not hold it (a borrow flag set and
//!   reset, 4); the effect's default limit is queued as its request leaves, with
//!   the check whether the queue wants shedding (about 25; queued as the request is
//!   made instead, as the model does, it saved 9 here but cost 31 per effect of
//!   `core/join/perform_all_100`, whose loop then pushed it);
//!   `Output` has three variants and the request is moved out through stack
//!   temporaries, not straight from the queue into the caller's value (about 40:
//!   112 bytes copied three times); the model returns the queued tuple itself.
//! - **request** (`Cx::request`, inside the program's resume less `decode`), 138
//!   (122): a slot keeps the effect's name and limit for the timeout's message (4
//!   stores); the ended-program check; whether the family's default limit applies to
//!   this request; the outstanding count (stuck detection); the queue's borrow; the
//!   80-byte request copied through two temporaries on its way into the queue.
//! - **answer** (the driver's loop and `handle_response` less the program), 210
//!   (176): the mailbox's `RefCell` borrow (the `Rc` an async program's `Fx` shares);
//!   which kind of program it is; the outstanding count and the mailbox's `now`;
//!   after the resume, the stuck check (nothing outstanding), whether timers were
//!   armed, and the match on the result; the answer moved into the `Event` through
//!   a temporary (about 12).
//!
//! An async program (`async`, 150 over `hand`) stores the answer in its slot for
//! the future to take (two more 88-byte moves and their checks), polls its
//! `Perform` twice (once to take the answer, once to ask again: the second poll is
//! where a lazy future asks, so it cannot be folded into the first without asking
//! before the `await`), borrows the mailbox in each, matches the effect's `Limit`
//! at run time (the future holds it as data), and counts its waiting futures for
//! the foreign-await check.
//!
//! At about 7.5 instructions per ns (the model's 390 in 52 ns), 25 ns is about 190
//! instructions and 50 ns about 375: below the model for the first, at it for the
//! second. With this API a round trip moves an 80-byte request out and an 88-byte
//! answer in across three calls (`handle_response`, the resume, `poll_output`), and
//! the compiler copies each of them two or three times on the way; the targets
//! need requests and answers of a few words (the large variants boxed, so a round
//! trip's values are about 32 bytes) and answers and outputs passed in batches, a
//! change of every driver's and hand-written program's code.
//!
//! [`EffectId`]: effectful::EffectId

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::task::Poll;
use std::time::Duration;

use effectful::effect::{GetCurrentTime, Request, Response};
use effectful::{EffectError, Std, Time, decode};

/// An effect of the model: as [`effectful::EffectId`], four words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloorId {
    program: u32,
    program_generation: u32,
    slot: u32,
    generation: u32,
}

/// A program hosted by the model.
pub trait FloorProgram {
    /// Handles an answer (`None`: the start).
    fn resume(
        &mut self,
        cx: &mut FloorCx<'_>,
        answer: Option<Result<Response, EffectError>>,
    ) -> Poll<i64>;
}

#[derive(Clone, Copy)]
struct Slot {
    generation: u32,
    waiting: bool,
}

/// One program's effect slots.
#[derive(Default)]
struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

/// What a program can do while it is resumed: ask for an effect.
pub struct FloorCx<'a> {
    program: (u32, u32),
    slots: &'a mut Slots,
    requests: &'a mut VecDeque<(FloorId, Request)>,
    limits: &'a mut VecDeque<(Time, FloorId)>,
    deadline: Time,
}

impl FloorCx<'_> {
    /// Asks for `request` under the default time limit.
    #[inline]
    pub fn request(&mut self, request: Request) -> FloorId {
        let slot = match self.slots.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.slots.push(Slot {
                    generation: 0,
                    waiting: false,
                });
                (self.slots.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots.slots[slot as usize];
        s.waiting = true;
        let id = FloorId {
            program: self.program.0,
            program_generation: self.program.1,
            slot,
            generation: s.generation,
        };
        self.limits.push_back((self.deadline, id));
        self.requests.push_back((id, request));
        id
    }
}

struct Entry {
    generation: u32,
    program: Option<(Box<dyn FloorProgram>, Slots)>,
}

/// The model engine.
pub struct Floor {
    now: Time,
    limit: Duration,
    programs: Vec<Entry>,
    requests: VecDeque<(FloorId, Request)>,
    limits: VecDeque<(Time, FloorId)>,
}

impl Floor {
    /// A model with the engine's default per-effect limit.
    pub fn new(limit: Duration) -> Self {
        Floor {
            now: Time::ZERO,
            limit,
            programs: Vec::new(),
            requests: VecDeque::new(),
            limits: VecDeque::new(),
        }
    }

    /// Starts `program`.
    pub fn spawn(&mut self, program: Box<dyn FloorProgram>) {
        let index = self.programs.len() as u32;
        self.programs.push(Entry {
            generation: 0,
            program: Some((program, Slots::default())),
        });
        self.resume(index, None);
    }

    /// The next request, if any.
    #[inline]
    pub fn poll_request(&mut self) -> Option<(FloorId, Request)> {
        self.requests.pop_front()
    }

    /// The driver's answer to `id`; whether it was current.
    #[inline]
    pub fn handle_response(
        &mut self,
        now: Time,
        id: FloorId,
        result: Result<Response, EffectError>,
    ) -> bool {
        self.now = self.now.max(now);
        let Some(entry) = self.programs.get_mut(id.program as usize) else {
            return false;
        };
        if entry.generation != id.program_generation {
            return false;
        }
        let Some((_, slots)) = entry.program.as_mut() else {
            return false;
        };
        let Some(slot) = slots.slots.get_mut(id.slot as usize) else {
            return false;
        };
        if !slot.waiting || slot.generation != id.generation {
            return false;
        }
        slot.waiting = false;
        slot.generation = slot.generation.wrapping_add(1);
        slots.free.push(id.slot);
        if self.limits.front().is_some_and(|&(_, front)| front == id) {
            self.limits.pop_front();
        }
        self.resume(id.program, Some(result));
        true
    }

    #[inline]
    fn resume(&mut self, index: u32, answer: Option<Result<Response, EffectError>>) {
        let entry = &mut self.programs[index as usize];
        let Some((program, slots)) = entry.program.as_mut() else {
            return;
        };
        let mut cx = FloorCx {
            program: (index, entry.generation),
            slots,
            requests: &mut self.requests,
            limits: &mut self.limits,
            deadline: self.now.saturating_add(self.limit),
        };
        let resumed = panic::catch_unwind(AssertUnwindSafe(|| program.resume(&mut cx, answer)));
        if !matches!(resumed, Ok(Poll::Pending)) {
            entry.program = None;
            entry.generation = entry.generation.wrapping_add(1);
        }
    }
}

/// `ClockLoop` for the model: asks for the time forever, adding up what it gets.
pub struct FloorClockLoop {
    /// The sum of the answers so far.
    pub sum: i64,
}

impl FloorProgram for FloorClockLoop {
    fn resume(
        &mut self,
        cx: &mut FloorCx<'_>,
        answer: Option<Result<Response, EffectError>>,
    ) -> Poll<i64> {
        if let Some(result) = answer {
            match result.and_then(decode::<Std, GetCurrentTime>) {
                Ok(t) => self.sum = self.sum.wrapping_add(t.unix_micros()),
                Err(_) => return Poll::Ready(self.sum),
            }
        }
        cx.request(GetCurrentTime {}.into());
        Poll::Pending
    }
}

/// The request the model emits next; its program always asks for one.
pub fn next_floor_request(floor: &mut Floor) -> (FloorId, Request) {
    match floor.poll_request() {
        Some(next) => next,
        None => unreachable!("the program always asks for the next effect"),
    }
}
