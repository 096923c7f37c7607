//! The engine: hosts many programs, routes their effects out and the answers back.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::effect::{Family, Std};
use crate::error::{EffectError, ProgramError};
use crate::fx::Fx;
use crate::program::{Cx, Event, Program};
use crate::rng::Rng;
use crate::time::Time;

mod id;
pub(crate) mod mailbox;
mod timer;

pub use id::{EffectId, ProgramId};
use mailbox::{Completion, Emissions, Emitted, Kind, Mailbox};
use timer::{TimerQueue, TimerTarget};

/// How an engine behaves; part of what makes a run reproducible.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// Seeds every program's random number generator (retry jitter, `Fx::random_u64`).
    pub seed: u64,
    /// The deadline given to each program at spawn, relative to its start
    /// (the seed tutorial's 300 s program timeout). `None`: no deadline.
    pub program_timeout: Option<Duration>,
}

/// What the engine asks of its driver.
///
/// Exhaustive on purpose: a driver that compiles handles every kind of output.
#[derive(Debug)]
pub enum Output<O, F: Family = Std> {
    /// Perform `request` and answer with [`Engine::handle_response`] under `id`.
    Request {
        /// Quote this id in the answer.
        id: EffectId,
        /// The effect to perform.
        request: F::Request,
    },
    /// The program no longer wants the answer to `id`: stop working on it if you can.
    /// An answer that arrives anyway is recognised as stale and dropped.
    Cancel {
        /// The effect to cancel.
        id: EffectId,
    },
    /// A program ended. Reported exactly once per program.
    Finished {
        /// The program.
        program: ProgramId,
        /// Its output, or why it ended without one.
        result: Result<O, ProgramError>,
    },
}

/// Whether the engine took an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Delivery {
    /// The answer reached its program.
    Delivered,
    /// Nobody is waiting for it any more: the effect was cancelled, already answered,
    /// or its program has ended. Dropped.
    Stale,
}

/// The engine's view of one hosted program, whichever way it was written.
trait Host<O, F: Family> {
    /// Runs the program for one event at `now`. Returns its poll and whether it is
    /// stuck: waiting with nothing that could ever wake it.
    fn resume(
        &mut self,
        mailbox: &RefCell<Mailbox<F>>,
        now: Time,
        event: Event<F>,
    ) -> (Poll<O>, Stuck);
}

/// Why a waiting program can never be resumed, if it cannot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stuck {
    No,
    /// An async program awaits only futures that are not effects.
    ForeignAwait,
    /// A hand-written program has nothing outstanding.
    Stalled,
}

struct Handwritten<P>(P);

impl<O, F: Family, P: Program<F, Output = O>> Host<O, F> for Handwritten<P> {
    #[inline]
    fn resume(
        &mut self,
        mailbox: &RefCell<Mailbox<F>>,
        now: Time,
        event: Event<F>,
    ) -> (Poll<O>, Stuck) {
        let mut mailbox = mailbox.borrow_mut();
        mailbox.now = now;
        let poll = self.0.resume(
            &mut Cx {
                mailbox: &mut mailbox,
            },
            event,
        );
        let stuck = if poll.is_pending() && mailbox.outstanding() == 0 {
            Stuck::Stalled
        } else {
            Stuck::No
        };
        (poll, stuck)
    }
}

struct Async<Fut>(Pin<Box<Fut>>);

impl<O, F: Family, Fut: Future<Output = O>> Host<O, F> for Async<Fut> {
    #[inline]
    fn resume(
        &mut self,
        mailbox: &RefCell<Mailbox<F>>,
        now: Time,
        _event: Event<F>,
    ) -> (Poll<O>, Stuck) {
        {
            let mut mailbox = mailbox.borrow_mut();
            mailbox.now = now;
            mailbox.waiting_marks = 0;
        }
        let poll = self
            .0
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        // Stuck when no effect future waits, or nothing is outstanding: a future that
        // marked itself waiting may have been dropped later in the same poll (the
        // loser of a race), and then nothing can ever resume the program.
        let mailbox = mailbox.borrow();
        let stuck =
            if poll.is_pending() && (mailbox.waiting_marks == 0 || mailbox.outstanding() == 0) {
                Stuck::ForeignAwait
            } else {
                Stuck::No
            };
        (poll, stuck)
    }
}

struct Live<O, F: Family> {
    host: Box<dyn Host<O, F>>,
    mailbox: Rc<RefCell<Mailbox<F>>>,
    deadline: Option<Time>,
}

struct Entry<O, F: Family> {
    generation: u32,
    live: Option<Live<O, F>>,
}

/// Hosts many programs at once, sans-IO.
///
/// The engine never performs an effect, reads a clock or draws OS randomness: the
/// driver performs the requests it emits, answers them in any order, and tells it the
/// time with every input.
///
/// # Methods, by kind
/// - **application calls**: [`spawn`](Self::spawn), [`spawn_async`](Self::spawn_async),
///   [`set_deadline`](Self::set_deadline), [`abort`](Self::abort);
/// - **inputs**: [`handle_response`](Self::handle_response),
///   [`handle_timeout`](Self::handle_timeout); each takes `now`, which never goes
///   backwards (an earlier `now` is treated as the latest one seen);
/// - **outputs**: [`poll_output`](Self::poll_output) (requests, cancellations,
///   results) and [`poll_timeout`](Self::poll_timeout) (the one deadline);
/// - **getters**: [`now`](Self::now), [`programs`](Self::programs),
///   [`outstanding`](Self::outstanding), [`timers_armed`](Self::timers_armed).
///
/// # The drain rule
/// After each application call or input, call `poll_output` until it returns `None`,
/// then `poll_timeout`, before waiting for the next input. Programs run eagerly inside
/// the call that woke them, so their outputs are already queued, in order.
///
/// # Guarantees
/// - every [`Output::Request`] is either answered (an answer is
///   [`Delivery::Delivered`] at most once) or followed by exactly one
///   [`Output::Cancel`], never both;
/// - every spawned program produces exactly one [`Output::Finished`];
/// - a timer never fires before its deadline, and timers fire in deadline order
///   (ties in the order they were armed);
/// - the same inputs give the same outputs.
pub struct Engine<O, F: Family = Std> {
    config: EngineConfig,
    now: Time,
    programs: Vec<Entry<O, F>>,
    free: Vec<u32>,
    live: usize,
    spawned: u64,
    /// Requests and cancellations, in the order programs made them.
    emissions: Emissions<F>,
    /// Finished programs, reported after the emissions that precede them.
    finished: VecDeque<(ProgramId, Result<O, ProgramError>)>,
    timers: TimerQueue,
}

impl<O: 'static, F: Family> Engine<O, F> {
    /// An engine with no programs.
    pub fn new(config: EngineConfig) -> Self {
        Engine {
            config,
            now: Time::ZERO,
            programs: Vec::new(),
            free: Vec::new(),
            live: 0,
            spawned: 0,
            emissions: Emissions::default(),
            finished: VecDeque::new(),
            timers: TimerQueue::default(),
        }
    }

    /// The latest `now` the engine was given.
    pub fn now(&self) -> Time {
        self.now
    }

    /// How many programs are running.
    pub fn programs(&self) -> usize {
        self.live
    }

    /// How many effects and timers a program is waiting for (`None`: not running).
    pub fn outstanding(&self, program: ProgramId) -> Option<u32> {
        self.live_entry(program)
            .map(|live| live.mailbox.borrow().outstanding())
    }

    /// Starts a hand-written program; it runs until it first waits.
    pub fn spawn<P>(&mut self, now: Time, program: P) -> ProgramId
    where
        P: Program<F, Output = O> + 'static,
    {
        let (index, generation, mailbox) = self.reserve(now, false);
        self.install(index, Box::new(Handwritten(program)), mailbox);
        self.resume(index, Event::Start);
        ProgramId { index, generation }
    }

    /// Starts an async program: `make` receives the program's effect handle and returns
    /// the future to run. It runs until it first waits.
    pub fn spawn_async<Fut, Mk>(&mut self, now: Time, make: Mk) -> ProgramId
    where
        Mk: FnOnce(Fx<F>) -> Fut,
        Fut: Future<Output = O> + 'static,
    {
        let (index, generation, mailbox) = self.reserve(now, true);
        let fut = make(Fx::new(mailbox.clone()));
        self.install(index, Box::new(Async(Box::pin(fut))), mailbox);
        self.resume(index, Event::Start);
        ProgramId { index, generation }
    }

    fn reserve(&mut self, now: Time, stores: bool) -> (u32, u32, Rc<RefCell<Mailbox<F>>>) {
        self.advance(now);
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.programs.push(Entry {
                    generation: 0,
                    live: None,
                });
                u32::try_from(self.programs.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let generation = self.programs[index as usize].generation;
        let id = ProgramId { index, generation };
        let rng = Rng::derive(self.config.seed, "engine.program", self.spawned);
        self.spawned += 1;
        let mailbox = Rc::new(RefCell::new(Mailbox::new(
            id,
            self.now,
            rng,
            stores,
            self.emissions.clone(),
        )));
        (index, generation, mailbox)
    }

    fn install(&mut self, index: u32, host: Box<dyn Host<O, F>>, mailbox: Rc<RefCell<Mailbox<F>>>) {
        let deadline = self.config.program_timeout.map(|t| self.now + t);
        let generation = self.programs[index as usize].generation;
        if let Some(at) = deadline {
            self.timers
                .push(at, TimerTarget::Deadline(ProgramId { index, generation }));
        }
        self.programs[index as usize].live = Some(Live {
            host,
            mailbox,
            deadline,
        });
        self.live += 1;
    }

    /// Sets (or clears) a running program's deadline. Returns `false` if it is not running.
    pub fn set_deadline(&mut self, program: ProgramId, deadline: Option<Time>) -> bool {
        let Some(live) = self.live_entry_mut(program) else {
            return false;
        };
        live.deadline = deadline;
        if let Some(at) = deadline {
            self.timers.push(at, TimerTarget::Deadline(program));
        }
        true
    }

    /// Ends a running program now with [`ProgramError::Aborted`], cancelling what it
    /// has outstanding. Returns `false` if it is not running.
    pub fn abort(&mut self, now: Time, program: ProgramId) -> bool {
        self.advance(now);
        if self.live_entry(program).is_none() {
            return false;
        }
        self.finish(program.index, Err(ProgramError::Aborted));
        true
    }

    /// The driver's answer to the effect `id`.
    pub fn handle_response(
        &mut self,
        now: Time,
        id: EffectId,
        result: Result<F::Response, EffectError>,
    ) -> Delivery {
        self.advance(now);
        let Some(live) = self.live_entry(id.program) else {
            return Delivery::Stale;
        };
        let mut mailbox = live.mailbox.borrow_mut();
        if !mailbox.is_waiting(id, Kind::Effect) {
            return Delivery::Stale;
        }
        let event = if mailbox.stores_completions {
            mailbox.store(id, Completion::Response(result));
            Event::Start // async programs take the stored completion themselves
        } else {
            mailbox.settle(id);
            Event::Response { id, result }
        };
        drop(mailbox);
        self.resume(id.program.index, event);
        Delivery::Delivered
    }

    /// Fires every timer due at `now`. Harmless when called early.
    pub fn handle_timeout(&mut self, now: Time) {
        self.advance(now);
        while let Some((at, target)) = self.timers.peek() {
            if at > self.now {
                break;
            }
            self.timers.pop();
            match target {
                TimerTarget::Effect(id) => self.fire_timer(id),
                TimerTarget::Deadline(program) => {
                    if self
                        .live_entry(program)
                        .is_some_and(|live| live.deadline == Some(at))
                    {
                        self.finish(
                            program.index,
                            Err(ProgramError::DeadlineExceeded { deadline: at }),
                        );
                    }
                }
            }
        }
    }

    /// The next thing the driver must do, if any.
    #[inline]
    pub fn poll_output(&mut self) -> Option<Output<O, F>> {
        // Requests and cancellations first: a program's Finished must follow the
        // cancellations its end caused, and nothing a program emits can depend on
        // another program's end.
        match self.emissions.borrow_mut().pop_front() {
            Some(Emitted::Request(id, request)) => return Some(Output::Request { id, request }),
            Some(Emitted::Cancel(id)) => return Some(Output::Cancel { id }),
            None => {}
        }
        let (program, result) = self.finished.pop_front()?;
        Some(Output::Finished { program, result })
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next, if any timer is armed.
    pub fn poll_timeout(&mut self) -> Option<Time> {
        while let Some((at, target)) = self.timers.peek() {
            if self.timer_is_live(at, target) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// The earliest armed timer, live or not, without checking: never later than
    /// what [`poll_timeout`](Self::poll_timeout) answers. A driver that has other
    /// work due before it need not ask `poll_timeout` yet.
    pub fn timer_bound(&self) -> Option<Time> {
        self.timers.peek().map(|(at, _)| at)
    }

    /// Armed timers, including ones not yet discarded after their program moved on.
    pub fn timers_armed(&self) -> usize {
        self.timers.len()
    }

    fn timer_is_live(&self, at: Time, target: TimerTarget) -> bool {
        match target {
            TimerTarget::Effect(id) => self
                .live_entry(id.program)
                .is_some_and(|live| live.mailbox.borrow().is_waiting(id, Kind::Timer)),
            TimerTarget::Deadline(program) => self
                .live_entry(program)
                .is_some_and(|live| live.deadline == Some(at)),
        }
    }

    fn advance(&mut self, now: Time) {
        self.now = self.now.max(now);
    }

    fn live_entry(&self, program: ProgramId) -> Option<&Live<O, F>> {
        let entry = self.programs.get(program.index as usize)?;
        (entry.generation == program.generation)
            .then_some(entry.live.as_ref())
            .flatten()
    }

    fn live_entry_mut(&mut self, program: ProgramId) -> Option<&mut Live<O, F>> {
        let entry = self.programs.get_mut(program.index as usize)?;
        if entry.generation != program.generation {
            return None;
        }
        entry.live.as_mut()
    }

    fn fire_timer(&mut self, id: EffectId) {
        let Some(live) = self.live_entry(id.program) else {
            return;
        };
        let mut mailbox = live.mailbox.borrow_mut();
        if !mailbox.is_waiting(id, Kind::Timer) {
            return;
        }
        let event = if mailbox.stores_completions {
            mailbox.store(id, Completion::Timer);
            Event::Start
        } else {
            mailbox.settle(id);
            Event::Timer { id }
        };
        drop(mailbox);
        self.resume(id.program.index, event);
    }

    /// Runs one program for one event and collects what it asked for.
    #[inline(always)]
    fn resume(&mut self, index: u32, event: Event<F>) {
        let Some(live) = self.programs[index as usize].live.as_mut() else {
            return;
        };
        let now = self.now;
        // A panicking program ends alone: the others on this engine keep running.
        let resumed = panic::catch_unwind(AssertUnwindSafe(|| {
            live.host.resume(&live.mailbox, now, event)
        }));
        let (poll, stuck) = match resumed {
            Ok(resumed) => resumed,
            Err(payload) => {
                let message = match (
                    payload.downcast_ref::<&str>(),
                    payload.downcast_ref::<String>(),
                ) {
                    (Some(text), _) => (*text).to_string(),
                    (_, Some(text)) => text.clone(),
                    _ => "a panic with a non-text payload".to_string(),
                };
                self.finish(index, Err(ProgramError::Panicked { message }));
                return;
            }
        };
        {
            let mut mailbox = live.mailbox.borrow_mut();
            if !mailbox.timers.is_empty() {
                for (id, at) in mailbox.timers.drain(..) {
                    self.timers.push(at, TimerTarget::Effect(id));
                }
            }
        }
        match (poll, stuck) {
            (Poll::Ready(output), _) => self.finish(index, Ok(output)),
            (Poll::Pending, Stuck::No) => {}
            (Poll::Pending, Stuck::ForeignAwait) => {
                self.finish(index, Err(ProgramError::ForeignAwait))
            }
            (Poll::Pending, Stuck::Stalled) => self.finish(index, Err(ProgramError::Stalled)),
        }
    }

    /// Ends a running program: drops it, cancels what it left outstanding, reports it.
    fn finish(&mut self, index: u32, result: Result<O, ProgramError>) {
        let entry = &mut self.programs[index as usize];
        let Some(live) = entry.live.take() else {
            return;
        };
        let program = ProgramId {
            index,
            generation: entry.generation,
        };
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(index);
        self.live -= 1;
        // Dropping the program drops its effect futures, which cancel themselves.
        drop(live.host);
        live.mailbox.borrow_mut().cancel_all();
        self.finished.push_back((program, result));
    }
}
