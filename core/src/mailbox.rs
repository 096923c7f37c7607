//! The per-program table of outstanding effects and timers, on the program's side:
//! [`crate::Fx`] (async programs) and [`crate::Cx`] (hand-written ones) write to it;
//! the engine reads it. It knows nothing of the engine.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use crate::effect::Family;
use crate::error::EffectError;
use crate::id::{EffectId, ProgramId};
use crate::rng::Rng;
use crate::time::Time;

/// How many timers a program may arm at one instant that are already due (a sleep of
/// zero, a retry without delay) before it counts as spinning. Each such timer yields
/// to the driver, so one input does bounded work; this bound ends a program that
/// would otherwise wake itself forever while time stands still.
pub(crate) const SPIN_LIMIT: u32 = 100_000;

/// What ended an outstanding slot.
#[derive(Debug)]
pub(crate) enum Completion<F: Family> {
    /// The driver answered the effect (or its time limit ran out).
    Response(Result<F::Response, EffectError>),
    /// The timer's deadline passed.
    Timer,
}

/// A slot's state. The completion of a `Ready` slot lives beside it, so that the
/// hot path (hand-written programs never store completions) moves no payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    Effect,
    Timer,
    Ready,
}

#[derive(Debug)]
struct Slot<F: Family> {
    generation: u32,
    state: SlotState,
    /// `(group, position)` for effects issued together by `Fx::perform_all`.
    group: Option<(u32, u32)>,
    /// Set exactly when `state` is `Ready`.
    completion: Option<Completion<F>>,
    /// For an effect with a time limit: its name and the limit, for the error.
    limit: Option<(&'static str, Duration)>,
}

/// What the engine needs to know about a slot it is about to complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Effect,
    Timer,
}

/// How long the engine waits for an effect's answer before failing it with a
/// retryable `Timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The engine's default per-effect timeout, if the family says it applies.
    Default,
    /// This long (the effect's own timeout).
    After(Duration),
    /// No limit: the program waits as long as it likes.
    Never,
}

/// What programs ask of the driver, in the order they asked; shared by every
/// mailbox of an engine so a request is moved once on its way out.
pub(crate) enum Emitted<F: Family> {
    /// A request, and when the engine's default limit runs out for it, if it applies.
    Request(EffectId, F::Request, Option<Time>),
    Cancel(EffectId),
}

/// The engine-wide queue of [`Emitted`] items.
pub(crate) type Emissions<F> = Rc<RefCell<VecDeque<Emitted<F>>>>;

pub(crate) struct Mailbox<F: Family> {
    pub(crate) program: ProgramId,
    pub(crate) now: Time,
    pub(crate) rng: Rng,
    /// Async programs keep completions in their slots until the future takes them;
    /// hand-written programs get them as events.
    pub(crate) stores_completions: bool,
    /// The program has ended: nothing it asks for is emitted any more.
    closed: bool,
    slots: Vec<Slot<F>>,
    free: Vec<u32>,
    /// Effects and timers waiting, not yet answered.
    outstanding: u32,
    /// Where requests and cancellations go.
    emissions: Emissions<F>,
    /// Newly armed timers and effect time limits, drained by the engine after each
    /// resume: a [`Kind::Timer`] fires as a timer, a [`Kind::Effect`] fails its effect.
    pub(crate) timers: Vec<(EffectId, Time, Kind)>,
    /// The engine's default per-effect time limit, and it in nanoseconds.
    default_limit: Option<(Duration, u64)>,
    /// How many effect futures reported "waiting" during the current poll.
    pub(crate) waiting_marks: u32,
    /// Timers armed already due at `due_now_at`, in a row.
    due_now: u32,
    due_now_at: Time,
    /// Positions completed per `perform_all` group, in completion order.
    groups: Vec<Vec<u32>>,
    free_groups: Vec<u32>,
}

impl<F: Family> Mailbox<F> {
    pub(crate) fn new(
        program: ProgramId,
        now: Time,
        rng: Rng,
        stores_completions: bool,
        default_limit: Option<Duration>,
        emissions: Emissions<F>,
    ) -> Self {
        Mailbox {
            program,
            now,
            rng,
            stores_completions,
            closed: false,
            slots: Vec::new(),
            free: Vec::new(),
            outstanding: 0,
            emissions,
            timers: Vec::new(),
            default_limit: default_limit.map(|d| (d, crate::time::duration_nanos(d))),
            waiting_marks: 0,
            due_now: 0,
            due_now_at: Time::ZERO,
            groups: Vec::new(),
            free_groups: Vec::new(),
        }
    }

    /// Takes a free slot (the one freed last first, so ids number as they always
    /// have) and fills it in one go.
    ///
    /// This and the other methods of a round trip are `#[inline(always)]`: they are
    /// instantiated in the driver's crate, where a plain `#[inline]` was not always
    /// followed (`stepcount hand` counted `request_in_group` and `emit` as calls).
    #[inline(always)]
    fn alloc(
        &mut self,
        state: SlotState,
        group: Option<(u32, u32)>,
        limit: Option<(&'static str, Duration)>,
    ) -> EffectId {
        if state != SlotState::Ready {
            self.outstanding += 1;
        }
        let (slot, generation) = match self.free.pop() {
            Some(slot) => {
                let s = &mut self.slots[slot as usize];
                s.state = state;
                s.group = group;
                s.limit = limit;
                (slot, s.generation)
            }
            None => {
                let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Slot {
                    generation: 0,
                    state,
                    group,
                    completion: None,
                    limit,
                });
                (slot, 0)
            }
        };
        EffectId {
            program: self.program,
            slot,
            generation,
        }
    }

    /// Frees a slot; `alloc` fills in its other fields when it is taken again.
    #[inline(always)]
    fn release(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        s.state = SlotState::Free;
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
    }

    /// The slot `id` names, if it is this program's and still of its generation: an
    /// id of another program is never this mailbox's business.
    #[inline]
    fn slot(&self, id: EffectId) -> Option<&Slot<F>> {
        if id.program != self.program {
            return None;
        }
        self.slots
            .get(id.slot as usize)
            .filter(|s| s.generation == id.generation)
    }

    /// The slot `id` names, if still of its generation, for an id known to be this
    /// program's: one the engine routed here by its program and generation, or one
    /// this mailbox's own futures hold. One check per part of the id, not two.
    #[inline(always)]
    fn own_slot_mut(&mut self, id: EffectId) -> Option<&mut Slot<F>> {
        debug_assert!(id.program == self.program);
        self.slots
            .get_mut(id.slot as usize)
            .filter(|s| s.generation == id.generation)
    }

    /// Issues a request; the engine emits it after this resume.
    #[inline(always)]
    pub(crate) fn request(
        &mut self,
        request: F::Request,
        limit: Limit,
        name: &'static str,
    ) -> EffectId {
        self.request_in_group(request, limit, name, None)
    }

    #[inline(always)]
    pub(crate) fn request_in_group(
        &mut self,
        request: F::Request,
        limit: Limit,
        name: &'static str,
        group: Option<(u32, u32)>,
    ) -> EffectId {
        if self.closed {
            return self.refuse(name, group);
        }
        // The default limit is the same for every effect and `now` never goes back, so
        // the engine keeps those in arming order in a queue of their own; an effect's
        // own limit is an ordinary timer.
        let limit = match limit {
            Limit::Default => match self.default_limit {
                Some((d, nanos)) if F::default_timeout_applies(&request) => {
                    let at = Time::from_nanos(self.now.as_nanos().saturating_add(nanos));
                    let id = self.alloc(SlotState::Effect, group, Some((name, d)));
                    return self.emit(id, request, Some(at));
                }
                _ => None,
            },
            Limit::Never => None,
            Limit::After(d) => Some(d),
        };
        let id = self.alloc(SlotState::Effect, group, limit.map(|d| (name, d)));
        if let Some(d) = limit {
            let at = self.now + d;
            self.arm(id, at, Kind::Effect);
        }
        self.emit(id, request, None)
    }

    #[inline(always)]
    fn emit(&mut self, id: EffectId, request: F::Request, default_at: Option<Time>) -> EffectId {
        self.emissions
            .borrow_mut()
            .push_back(Emitted::Request(id, request, default_at));
        id
    }

    /// The program has ended, yet something still holds its effect handle and asks:
    /// nothing is emitted; the effect fails at once.
    #[cold]
    fn refuse(&mut self, effect: &'static str, group: Option<(u32, u32)>) -> EffectId {
        let id = self.alloc(SlotState::Ready, group, None);
        let error = EffectError::new(
            effect,
            crate::ErrorKind::Unavailable,
            "its program has ended; an effect handle kept past its program's end performs nothing",
        )
        .with_retryable(false);
        self.slots[id.slot as usize].completion = Some(Completion::Response(Err(error)));
        if let Some((group, position)) = group {
            self.groups[group as usize].push(position);
        }
        id
    }

    /// Arms a timer that fires at `at`. A timer already due still waits for the
    /// driver's next `handle_timeout`, so a program never spins inside one input.
    pub(crate) fn timer(&mut self, at: Time) -> EffectId {
        let id = self.alloc(SlotState::Timer, None, None);
        self.arm(id, at, Kind::Timer);
        id
    }

    #[inline]
    fn arm(&mut self, id: EffectId, at: Time, kind: Kind) {
        if at <= self.now {
            if self.due_now_at == self.now {
                self.due_now = self.due_now.saturating_add(1);
            } else {
                self.due_now_at = self.now;
                self.due_now = 1;
            }
        }
        self.timers.push((id, at, kind));
    }

    /// The effect `id` ran out of time: the driver is told to cancel it, and the
    /// error to complete it with is returned. The caller has checked
    /// [`Mailbox::is_waiting`] for an effect.
    pub(crate) fn expire(&mut self, id: EffectId) -> EffectError {
        self.emissions.borrow_mut().push_back(Emitted::Cancel(id));
        let (effect, limit) = self.slots[id.slot as usize]
            .limit
            .unwrap_or(("an effect", Duration::ZERO));
        EffectError::timeout(
            effect,
            format!(
                "no answer within {limit:?}; it may still have happened (safe to retry only if \
                 the effect is idempotent)"
            ),
        )
    }

    /// Whether the program has ended (see [`Mailbox::close`]).
    #[inline]
    pub(crate) fn closed(&self) -> bool {
        self.closed
    }

    /// Whether the program has armed more already-due timers at one instant than
    /// [`SPIN_LIMIT`] allows.
    pub(crate) fn spinning(&self) -> Option<u32> {
        (self.due_now > SPIN_LIMIT).then_some(self.due_now)
    }

    /// Whether `id` is still waiting for a completion of `kind`. The engine found this
    /// mailbox by `id`'s program (see [`Mailbox::own_slot_mut`]).
    #[inline(always)]
    pub(crate) fn is_waiting(&self, id: EffectId, kind: Kind) -> bool {
        debug_assert!(id.program == self.program);
        let state = self
            .slots
            .get(id.slot as usize)
            .filter(|s| s.generation == id.generation)
            .map(|s| s.state);
        matches!(
            (state, kind),
            (Some(SlotState::Effect), Kind::Effect) | (Some(SlotState::Timer), Kind::Timer)
        )
    }

    /// Ends a waiting slot whose completion goes to the program as an event.
    /// The caller has checked [`Mailbox::is_waiting`].
    #[inline(always)]
    pub(crate) fn settle(&mut self, id: EffectId) {
        self.outstanding -= 1;
        self.release(id.slot);
    }

    /// Stores the completion of a waiting slot for the program's future to take.
    /// The caller has checked [`Mailbox::is_waiting`].
    #[inline(always)]
    pub(crate) fn store(&mut self, id: EffectId, completion: Completion<F>) {
        self.outstanding -= 1;
        let slot = &mut self.slots[id.slot as usize];
        slot.state = SlotState::Ready;
        slot.completion = Some(completion);
        if let Some((group, position)) = slot.group {
            self.groups[group as usize].push(position);
        }
    }

    /// Takes a stored completion, freeing the slot; `None` while still waiting.
    #[inline(always)]
    pub(crate) fn take(&mut self, id: EffectId) -> Option<Completion<F>> {
        let slot = self.own_slot_mut(id)?;
        if slot.state != SlotState::Ready {
            return None;
        }
        let completion = slot.completion.take();
        self.release(id.slot);
        completion
    }

    /// The program no longer wants `id`: a waiting effect is reported to the driver as
    /// cancelled; a timer or an unread completion is simply dropped. Returns whether
    /// `id` named one of this program's live slots (ids of other programs, and ids
    /// already answered or cancelled, are refused).
    pub(crate) fn cancel(&mut self, id: EffectId) -> bool {
        let Some(slot) = self.slot(id) else {
            return false;
        };
        match slot.state {
            SlotState::Free => return false,
            SlotState::Effect => {
                self.outstanding -= 1;
                self.emissions.borrow_mut().push_back(Emitted::Cancel(id));
            }
            SlotState::Timer => self.outstanding -= 1,
            SlotState::Ready => self.slots[id.slot as usize].completion = None,
        }
        self.release(id.slot);
        true
    }

    /// The program has ended: cancels everything still outstanding, and from now on
    /// emits nothing.
    pub(crate) fn close(&mut self) {
        for slot in 0..self.slots.len() as u32 {
            let generation = self.slots[slot as usize].generation;
            self.cancel(EffectId {
                program: self.program,
                slot,
                generation,
            });
        }
        self.closed = true;
        self.timers.clear();
    }

    /// Effects and timers still waiting for a completion.
    pub(crate) fn outstanding(&self) -> u32 {
        self.outstanding
    }

    /// A new group for `perform_all`.
    pub(crate) fn open_group(&mut self) -> u32 {
        match self.free_groups.pop() {
            Some(g) => g,
            None => {
                self.groups.push(Vec::new());
                (self.groups.len() - 1) as u32
            }
        }
    }

    /// Positions completed in `group` since the last call.
    pub(crate) fn drain_group(&mut self, group: u32, into: &mut Vec<u32>) {
        into.append(&mut self.groups[group as usize]);
    }

    pub(crate) fn close_group(&mut self, group: u32) {
        self.groups[group as usize].clear();
        self.free_groups.push(group);
    }
}
