//! The per-program table of outstanding effects and timers, shared between the engine
//! and the program (through [`crate::Fx`] for async programs, [`crate::Cx`] for
//! hand-written ones).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use crate::effect::Family;
use crate::engine::id::{EffectId, ProgramId};
use crate::error::EffectError;
use crate::rng::Rng;
use crate::time::Time;

/// What ended an outstanding slot.
#[derive(Debug)]
pub(crate) enum Completion<F: Family> {
    /// The driver answered the effect.
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
}

/// What the engine needs to know about a slot it is about to complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Effect,
    Timer,
}

/// What programs ask of the driver, in the order they asked; shared by every
/// mailbox of an engine so a request is moved once on its way out.
pub(crate) enum Emitted<F: Family> {
    Request(EffectId, F::Request),
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
    slots: Vec<Slot<F>>,
    free: Vec<u32>,
    /// Effects and timers waiting, not yet answered.
    outstanding: u32,
    /// Where requests and cancellations go.
    emissions: Emissions<F>,
    /// Newly armed timers, drained by the engine after each resume.
    pub(crate) timers: Vec<(EffectId, Time)>,
    /// How many effect futures reported "waiting" during the current poll.
    pub(crate) waiting_marks: u32,
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
        emissions: Emissions<F>,
    ) -> Self {
        Mailbox {
            program,
            now,
            rng,
            stores_completions,
            slots: Vec::new(),
            free: Vec::new(),
            outstanding: 0,
            emissions,
            timers: Vec::new(),
            waiting_marks: 0,
            groups: Vec::new(),
            free_groups: Vec::new(),
        }
    }

    #[inline]
    fn alloc(&mut self, state: SlotState, group: Option<(u32, u32)>) -> EffectId {
        self.outstanding += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                let s = &mut self.slots[slot as usize];
                s.state = state;
                s.group = group;
                slot
            }
            None => {
                let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Slot {
                    generation: 0,
                    state,
                    group,
                    completion: None,
                });
                slot
            }
        };
        EffectId {
            program: self.program,
            slot,
            generation: self.slots[slot as usize].generation,
        }
    }

    #[inline]
    fn release(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        s.state = SlotState::Free;
        s.group = None;
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
    }

    #[inline]
    fn slot(&self, id: EffectId) -> Option<&Slot<F>> {
        self.slots
            .get(id.slot as usize)
            .filter(|s| s.generation == id.generation)
    }

    /// Issues a request; the engine emits it after this resume.
    #[inline]
    pub(crate) fn request(&mut self, request: F::Request) -> EffectId {
        self.request_in_group(request, None)
    }

    #[inline]
    pub(crate) fn request_in_group(
        &mut self,
        request: F::Request,
        group: Option<(u32, u32)>,
    ) -> EffectId {
        let id = self.alloc(SlotState::Effect, group);
        self.emissions
            .borrow_mut()
            .push_back(Emitted::Request(id, request));
        id
    }

    /// Arms a timer that fires at `at`.
    pub(crate) fn timer(&mut self, at: Time) -> EffectId {
        let id = self.alloc(SlotState::Timer, None);
        self.timers.push((id, at));
        id
    }

    /// Whether `id` is still waiting for a completion of `kind`.
    #[inline]
    pub(crate) fn is_waiting(&self, id: EffectId, kind: Kind) -> bool {
        matches!(
            (self.slot(id).map(|s| s.state), kind),
            (Some(SlotState::Effect), Kind::Effect) | (Some(SlotState::Timer), Kind::Timer)
        )
    }

    /// Ends a waiting slot whose completion goes to the program as an event.
    /// The caller has checked [`Mailbox::is_waiting`].
    #[inline]
    pub(crate) fn settle(&mut self, id: EffectId) {
        self.outstanding -= 1;
        self.release(id.slot);
    }

    /// Stores the completion of a waiting slot for the program's future to take.
    /// The caller has checked [`Mailbox::is_waiting`].
    #[inline]
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
    #[inline]
    pub(crate) fn take(&mut self, id: EffectId) -> Option<Completion<F>> {
        let slot = self
            .slots
            .get_mut(id.slot as usize)
            .filter(|s| s.generation == id.generation)?;
        if slot.state != SlotState::Ready {
            return None;
        }
        let completion = slot.completion.take();
        self.release(id.slot);
        completion
    }

    /// The program no longer wants `id`: a waiting effect is reported to the driver as
    /// cancelled; a timer or an unread completion is simply dropped.
    pub(crate) fn cancel(&mut self, id: EffectId) {
        let Some(slot) = self.slot(id) else { return };
        match slot.state {
            SlotState::Free => return,
            SlotState::Effect => {
                self.outstanding -= 1;
                self.emissions.borrow_mut().push_back(Emitted::Cancel(id));
            }
            SlotState::Timer => self.outstanding -= 1,
            SlotState::Ready => self.slots[id.slot as usize].completion = None,
        }
        self.release(id.slot);
    }

    /// Cancels everything still outstanding (the program has ended).
    pub(crate) fn cancel_all(&mut self) {
        for slot in 0..self.slots.len() as u32 {
            let generation = self.slots[slot as usize].generation;
            self.cancel(EffectId {
                program: self.program,
                slot,
                generation,
            });
        }
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
