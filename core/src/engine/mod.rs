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
use crate::error::{EffectError, ProgramError, panic_message};
use crate::fx::Fx;
use crate::id::{EffectId, ProgramId};
use crate::mailbox::{Completion, Emissions, Emitted, Kind, Mailbox};
use crate::program::{Cx, Event, Program};
use crate::rng::Rng;
use crate::time::Time;

mod timer;

use timer::{TimerQueue, TimerTarget};

/// How an engine behaves; part of what makes a run reproducible.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// Seeds every program's random number generator (retry jitter, `Fx::random_u64`).
    /// Never a source of secrets: it is logged, written in traces and replayed.
    pub seed: u64,
    /// The deadline given to each program at spawn, relative to its start
    /// (the seed tutorial's 300 s program timeout). `None`: no deadline.
    pub program_timeout: Option<Duration>,
    /// How long an effect may go unanswered before it fails with a retryable
    /// `Timeout` error and the driver is told to cancel it (default 30 s), so a lost
    /// answer costs one effect rather than the whole program's deadline. It applies
    /// to request/response effects, not to waits that are long by nature (see
    /// [`Family::default_timeout_applies`]); an effect may set its own limit
    /// ([`Fx::perform_timeout`], [`Cx::request_timeout`]) or none
    /// ([`Fx::perform_untimed`]). `None`: no default limit.
    #[serde(default = "EngineConfig::default_effect_timeout")]
    pub effect_timeout: Option<Duration>,
}

impl EngineConfig {
    /// The default per-effect timeout: 30 s.
    pub const DEFAULT_EFFECT_TIMEOUT: Duration = Duration::from_secs(30);

    fn default_effect_timeout() -> Option<Duration> {
        Some(Self::DEFAULT_EFFECT_TIMEOUT)
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            seed: 0,
            program_timeout: None,
            effect_timeout: Self::default_effect_timeout(),
        }
    }
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
///
/// The engine knows which of the two it hosts (`Mailbox::stores_completions`) and
/// calls only that one's method; the other is never called.
trait Host<O, F: Family> {
    /// A hand-written program handles `event`. The engine holds the borrow of its
    /// mailbox, taken once per wake, and moves the event in: the answer's payload
    /// goes from the driver's call to the program with no stop on the way.
    fn handle(&mut self, mailbox: &mut Mailbox<F>, event: Event<F>) -> Poll<O>;
    /// An async program is polled once; its futures take their completions from
    /// the mailbox themselves, so the mailbox is not borrowed meanwhile.
    fn poll(&mut self) -> Poll<O>;
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

/// What one wake of a program gave: its poll, whether it is stuck (waiting with
/// nothing that could ever wake it), and whether it armed timers the engine must
/// collect; or the payload of its panic.
type Resumed<O> = std::thread::Result<(Poll<O>, Stuck, bool)>;

struct Handwritten<P>(P);

impl<O, F: Family, P: Program<F, Output = O>> Host<O, F> for Handwritten<P> {
    #[inline]
    fn handle(&mut self, mailbox: &mut Mailbox<F>, event: Event<F>) -> Poll<O> {
        self.0.resume(&mut Cx { mailbox }, event)
    }

    fn poll(&mut self) -> Poll<O> {
        // Never called: hand-written programs are woken with events.
        Poll::Pending
    }
}

struct Async<Fut>(Pin<Box<Fut>>);

impl<O, F: Family, Fut: Future<Output = O>> Host<O, F> for Async<Fut> {
    fn handle(&mut self, _mailbox: &mut Mailbox<F>, _event: Event<F>) -> Poll<O> {
        // Never called: async programs take stored completions when polled.
        Poll::Pending
    }

    #[inline]
    fn poll(&mut self) -> Poll<O> {
        self.0
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
    }
}

/// Runs a hand-written program for one event, its mailbox borrowed by the caller,
/// who has set the mailbox's `now` before making the event: a store into the
/// mailbox between the two made the answer go through a second copy on its way
/// into the program (`stepcount hand`).
#[inline(always)]
fn handle_event<O, F: Family>(
    host: &mut dyn Host<O, F>,
    mailbox: &mut Mailbox<F>,
    event: Event<F>,
) -> Resumed<O> {
    // A panicking program ends alone: the others on this engine keep running.
    panic::catch_unwind(AssertUnwindSafe(|| {
        let poll = host.handle(mailbox, event);
        let stuck = if poll.is_pending() && mailbox.outstanding() == 0 {
            Stuck::Stalled
        } else {
            Stuck::No
        };
        (poll, stuck, !mailbox.timers.is_empty())
    }))
}

/// Readies an async program's mailbox for a poll at `now`, in the borrow its caller
/// already holds (one borrow per input, not one more per poll).
#[inline(always)]
fn ready_to_poll<F: Family>(mailbox: &mut Mailbox<F>, now: Time) {
    mailbox.now = now;
    mailbox.waiting_marks = 0;
}

/// Polls an async program once; its mailbox was readied with [`ready_to_poll`].
#[inline(always)]
fn poll_async<O, F: Family>(
    host: &mut dyn Host<O, F>,
    mailbox: &RefCell<Mailbox<F>>,
) -> Resumed<O> {
    let poll = panic::catch_unwind(AssertUnwindSafe(|| host.poll()))?;
    // Stuck when no effect future waits, or nothing is outstanding: a future that
    // marked itself waiting may have been dropped later in the same poll (the
    // loser of a race), and then nothing can ever resume the program.
    let mailbox = mailbox.borrow();
    let stuck = if poll.is_pending() && (mailbox.waiting_marks == 0 || mailbox.outstanding() == 0) {
        Stuck::ForeignAwait
    } else {
        Stuck::No
    };
    Ok((poll, stuck, !mailbox.timers.is_empty()))
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
///   [`handle_timeout`](Self::handle_timeout), [`tick`](Self::tick); every input and
///   application call takes `now`, which never goes backwards (an earlier `now` is
///   treated as the latest one seen), except
///   [`handle_response_unclocked`](Self::handle_response_unclocked), an answer whose
///   time the driver has not read (the timers it arms are moved on at the next
///   `now`);
/// - **outputs**: [`poll_output`](Self::poll_output) (requests, cancellations,
///   results) and [`poll_timeout`](Self::poll_timeout) (the one deadline);
/// - **getters**: [`now`](Self::now), [`programs`](Self::programs),
///   [`outstanding`](Self::outstanding), [`timers_armed`](Self::timers_armed),
///   [`wants_time`](Self::wants_time),
///   [`timer_bound`](Self::timer_bound) (a cheap lower bound of `poll_timeout`, for
///   drivers that have other work due and need not prune the timers yet).
///
/// # The drain rule
/// After each application call or input, call `poll_output` until it returns `None`,
/// then `poll_timeout`, before waiting for the next input. Programs run eagerly inside
/// the call that woke them, so their outputs are already queued, in order. Each input
/// does bounded work whatever a program does: a timer that is already due when it is
/// armed (a sleep of zero, a retry without delay) fires at the next `handle_timeout`,
/// never inside the call that armed it.
///
/// # Guarantees
/// - every [`Output::Request`] is either answered (an answer is
///   [`Delivery::Delivered`] at most once) or followed by exactly one
///   [`Output::Cancel`], never both; an effect whose time limit ran out is cancelled
///   this way and its program gets a retryable `Timeout` error;
/// - every spawned program produces exactly one [`Output::Finished`], after the
///   cancellations its end caused, even when it panics (while running or while being
///   dropped); an ended program emits nothing more, even through an effect handle
///   kept past its end;
/// - a timer never fires before its deadline (one armed after an answer without a
///   time counts from the next time given), and timers fire in deadline order
///   (ties in the order they were armed);
/// - `timer_bound() <= poll_timeout()` whenever both are set, and `timer_bound()` is
///   `None` only when `poll_timeout()` is;
/// - the same inputs give the same outputs.
///
/// # One engine per thread
/// The engine is deliberately `!Send`: programs share their state with the engine
/// through `Rc`, and a driver runs one engine per thread (a shard), as a
/// thread-per-core server does. It cannot be moved to another thread:
///
/// ```compile_fail
/// use effectful::{Engine, EngineConfig};
/// let engine: Engine<()> = Engine::new(EngineConfig::default());
/// std::thread::spawn(move || drop(engine)); // error: `Rc<..>` cannot be sent
/// ```
///
/// A program that panics ends alone (with [`ProgramError::Panicked`]) only when
/// panics unwind: build with `panic = "unwind"` (Rust's default). Under
/// `panic = "abort"` a panicking program takes the process down.
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
    /// Effects under the default time limit, in arming order, which is time order
    /// (one limit for all, and `now` never goes back): when each runs out, and its
    /// name for the error. Answered ones are shed from the front as new ones come.
    limits: VecDeque<(Time, EffectId)>,
    /// Shed answered limits from the whole queue once it is this long.
    limits_compact_at: usize,
    /// Answers came without a time ([`handle_response_unclocked`]) since the latest
    /// input with one: timers armed since count from `now` for the moment, and are
    /// moved on at the next input with a time by however much later it is.
    ///
    /// [`handle_response_unclocked`]: Engine::handle_response_unclocked
    stale: bool,
    /// `timers.armed_so_far()` when the engine went stale: timers armed after it move.
    stale_mark: u64,
    /// How many limits were armed while stale, the back ones of `limits`. Pops from
    /// the front do not lower it (kept off the hot path): once they reach the
    /// stale ones, every limit left is stale, so `min(stale_limits, len)` is exact.
    stale_limits: usize,
}

/// The shortest limit queue worth shedding answered limits from as a whole.
const LIMITS_COMPACT_MIN: usize = 64;

/// The body of both answer inputs ([`Engine::handle_response`] and
/// [`Engine::handle_response_unclocked`]): the answer to `$id` reaches its program at
/// the engine's `now`; evaluates to the [`Delivery`], and returns `Stale` from the
/// enclosing function. A macro, not a function: through a function, even one inlined
/// always, the compiler copied the 88-byte answer once more on its way
/// (`stepcount hand` 537 instructions against 527, `core/step/state_machine` 6 %
/// slower).
/// `complete` written out for the hot path: the answer moves straight into the
/// program's event or its slot, with no intermediate `Completion`.
macro_rules! respond {
    ($engine:ident, $id:ident, $result:ident) => {{
        let now = $engine.now;
        let resumed = {
            let Some(live) = $engine.live_entry_mut($id.program) else {
                return Delivery::Stale;
            };
            let mut mailbox = live.mailbox.borrow_mut();
            if !mailbox.is_waiting($id, Kind::Effect) {
                return Delivery::Stale;
            }
            if mailbox.stores_completions {
                mailbox.store($id, Completion::Response($result));
                ready_to_poll(&mut mailbox, now);
                drop(mailbox);
                poll_async(live.host.as_mut(), &live.mailbox)
            } else {
                mailbox.now = now;
                mailbox.settle($id);
                let event = Event::Response {
                    id: $id,
                    result: $result,
                };
                handle_event(live.host.as_mut(), &mut mailbox, event)
            }
        };
        $engine.leave_limit_queue($id, Kind::Effect);
        $engine.after_resume($id.program.index, resumed);
        Delivery::Delivered
    }};
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
            limits: VecDeque::new(),
            limits_compact_at: LIMITS_COMPACT_MIN,
            stale: false,
            stale_mark: 0,
            stale_limits: 0,
        }
    }

    /// The configuration this engine was made with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
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
        self.start(index);
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
        self.start(index);
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
            self.config.effect_timeout,
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
        self.compact_timers();
    }

    /// Sets (or clears) a running program's deadline. Returns `false` if it is not
    /// running. A deadline at or before `now` ends the program at the next
    /// [`handle_timeout`](Self::handle_timeout).
    pub fn set_deadline(&mut self, now: Time, program: ProgramId, deadline: Option<Time>) -> bool {
        self.advance(now);
        let Some(live) = self.live_entry_mut(program) else {
            return false;
        };
        live.deadline = deadline;
        if let Some(at) = deadline {
            self.timers.push(at, TimerTarget::Deadline(program));
            self.compact_timers();
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
        respond!(self, id, result)
    }

    /// The driver's answer to the effect `id`, given without reading the clock: for a
    /// driver that answers in bursts and reads its clock once per burst rather than
    /// once per answer.
    ///
    /// The answer happened at some time no earlier than [`now`](Self::now), which
    /// the program sees as its time. Every timer armed from here until the next input
    /// with a time (any other input, or [`tick`](Self::tick)) counts from `now` for
    /// the moment; that next input moves each one on by however much later than
    /// `now` it is. So such a timer fires late by at most the time until the driver
    /// next tells the engine the time, never early. While
    /// [`wants_time`](Self::wants_time) is true the driver should do so soon
    /// (the tokio driver does it at its loop's next turn).
    pub fn handle_response_unclocked(
        &mut self,
        id: EffectId,
        result: Result<F::Response, EffectError>,
    ) -> Delivery {
        if !self.stale {
            self.stale = true;
            self.stale_mark = self.timers.armed_so_far();
        }
        respond!(self, id, result)
    }

    /// Tells the engine the time, with no other input: timers armed since an
    /// answer without a time move on (see
    /// [`handle_response_unclocked`](Self::handle_response_unclocked)). Nothing runs
    /// and nothing fires; timers that are due wait for
    /// [`handle_timeout`](Self::handle_timeout).
    pub fn tick(&mut self, now: Time) {
        self.advance(now);
    }

    /// Whether an answer came without a time since the latest input with one (see
    /// [`handle_response_unclocked`](Self::handle_response_unclocked)).
    #[inline]
    pub fn wants_time(&self) -> bool {
        self.stale
    }

    /// Fires every timer due at `now`: program timers, effect time limits and
    /// program deadlines. Harmless when called early.
    ///
    /// A timer that a program arms while this call runs waits for the next call,
    /// even if it is already due (a retry without delay): one input does bounded
    /// work, and [`poll_timeout`](Self::poll_timeout) then says it is due.
    pub fn handle_timeout(&mut self, now: Time) {
        self.advance(now);
        let mark = self.timers.armed_so_far();
        loop {
            // Default limits are armed only as requests leave (`poll_output`), never
            // during this call; they go before timers due at the same time.
            if let Some(&(at, id)) = self.limits.front() {
                let timer_first = self.timers.peek().is_some_and(|(t, _)| t < at);
                if at <= self.now && !timer_first {
                    self.limits.pop_front();
                    self.complete(id, Kind::Effect, |mailbox| {
                        Completion::Response(Err(mailbox.expire(id)))
                    });
                    continue;
                }
            }
            let Some((at, target)) = self.timers.peek() else {
                break;
            };
            if at > self.now || self.timers.armed_after(mark) {
                break;
            }
            self.timers.pop();
            match target {
                TimerTarget::Timer(id) => {
                    self.complete(id, Kind::Timer, |_| Completion::Timer);
                }
                TimerTarget::Limit(id) => {
                    self.complete(id, Kind::Effect, |mailbox| {
                        Completion::Response(Err(mailbox.expire(id)))
                    });
                }
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

    /// Completes `id` if it is still waiting as a `kind`, and resumes its program.
    /// Returns whether it was waiting.
    fn complete(
        &mut self,
        id: EffectId,
        kind: Kind,
        completion: impl FnOnce(&mut Mailbox<F>) -> Completion<F>,
    ) -> bool {
        let now = self.now;
        let resumed = {
            let Some(live) = self.live_entry_mut(id.program) else {
                return false;
            };
            let mut mailbox = live.mailbox.borrow_mut();
            if !mailbox.is_waiting(id, kind) {
                return false;
            }
            let completion = completion(&mut mailbox);
            if mailbox.stores_completions {
                // Async programs take the stored completion themselves.
                mailbox.store(id, completion);
                ready_to_poll(&mut mailbox, now);
                drop(mailbox);
                poll_async(live.host.as_mut(), &live.mailbox)
            } else {
                mailbox.now = now;
                mailbox.settle(id);
                let event = match completion {
                    Completion::Response(result) => Event::Response { id, result },
                    Completion::Timer => Event::Timer { id },
                };
                handle_event(live.host.as_mut(), &mut mailbox, event)
            }
        };
        self.leave_limit_queue(id, kind);
        self.after_resume(id.program.index, resumed);
        true
    }

    /// Effects answered in the order they were asked (one program at a time, the
    /// common case) leave the limit queue here, without a lookup; the others are
    /// shed when the queue's front or the whole queue is next looked at.
    #[inline]
    fn leave_limit_queue(&mut self, id: EffectId, kind: Kind) {
        if kind == Kind::Effect && self.limits.front().is_some_and(|&(_, front)| front == id) {
            self.limits.pop_front();
        }
    }

    /// The next thing the driver must do, if any.
    #[inline]
    pub fn poll_output(&mut self) -> Option<Output<O, F>> {
        // Requests and cancellations first: a program's Finished must follow the
        // cancellations its end caused, and nothing a program emits can depend on
        // another program's end.
        let emitted = self.emissions.borrow_mut().pop_front();
        match emitted {
            Some(Emitted::Request(id, request, default_limit)) => {
                if let Some(at) = default_limit {
                    self.arm_default_limit(at, id);
                }
                return Some(Output::Request { id, request });
            }
            Some(Emitted::Cancel(id)) => return Some(Output::Cancel { id }),
            None => {}
        }
        let (program, result) = self.finished.pop_front()?;
        Some(Output::Finished { program, result })
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next, if any timer is armed.
    pub fn poll_timeout(&mut self) -> Option<Time> {
        let timer = loop {
            let Some((at, target)) = self.timers.peek() else {
                break None;
            };
            if Self::timer_is_live(&self.programs, at, target) {
                break Some(at);
            }
            self.timers.pop();
        };
        self.shed_answered_limits();
        let limit = self.limits.front().map(|&(at, _)| at);
        match (timer, limit) {
            (Some(t), Some(l)) => Some(t.min(l)),
            (t, l) => t.or(l),
        }
    }

    /// Queues an effect's default limit; sheds answered ones from the whole queue
    /// once it has doubled, so the queue stays within about twice the effects still
    /// waiting (an answer in asking order leaves at once, in `complete`).
    #[inline]
    fn arm_default_limit(&mut self, at: Time, id: EffectId) {
        if self.limits.len() >= self.limits_compact_at {
            let programs = &self.programs;
            // The stale limits are the back ones: count those that stay.
            let first_stale = self.limits.len().saturating_sub(self.stale_limits);
            let (mut index, mut stale_kept) = (0, 0);
            self.limits.retain(|&(_, id)| {
                let keep = Self::effect_is_waiting(programs, id);
                stale_kept += usize::from(keep && index >= first_stale);
                index += 1;
                keep
            });
            self.stale_limits = stale_kept;
            self.limits_compact_at = (self.limits.len() * 2).max(LIMITS_COMPACT_MIN);
        }
        self.limits.push_back((at, id));
        self.stale_limits += usize::from(self.stale);
    }

    #[inline]
    fn shed_answered_limits(&mut self) {
        while let Some(&(_, id)) = self.limits.front() {
            if Self::effect_is_waiting(&self.programs, id) {
                break;
            }
            self.limits.pop_front();
        }
    }

    #[inline]
    fn effect_is_waiting(programs: &[Entry<O, F>], id: EffectId) -> bool {
        programs
            .get(id.program.index as usize)
            .filter(|entry| entry.generation == id.program.generation)
            .and_then(|entry| entry.live.as_ref())
            .is_some_and(|live| live.mailbox.borrow().is_waiting(id, Kind::Effect))
    }

    /// The earliest armed timer, live or not, without checking: never later than
    /// what [`poll_timeout`](Self::poll_timeout) answers, and `None` only when it
    /// answers `None`. A driver that has other work due before it need not ask
    /// `poll_timeout` yet.
    pub fn timer_bound(&self) -> Option<Time> {
        let timer = self.timers.peek().map(|(at, _)| at);
        let limit = self.limits.front().map(|&(at, _)| at);
        match (timer, limit) {
            (Some(t), Some(l)) => Some(t.min(l)),
            (t, l) => t.or(l),
        }
    }

    /// Armed timers, including ones not yet discarded after their program moved on
    /// (at most about twice the live ones: the queue sheds the others as it grows).
    pub fn timers_armed(&self) -> usize {
        self.timers.len() + self.limits.len()
    }

    fn timer_is_live(programs: &[Entry<O, F>], at: Time, target: TimerTarget) -> bool {
        let live = |program: ProgramId| {
            programs
                .get(program.index as usize)
                .filter(|entry| entry.generation == program.generation)
                .and_then(|entry| entry.live.as_ref())
        };
        match target {
            TimerTarget::Timer(id) => live(id.program)
                .is_some_and(|live| live.mailbox.borrow().is_waiting(id, Kind::Timer)),
            TimerTarget::Limit(id) => live(id.program)
                .is_some_and(|live| live.mailbox.borrow().is_waiting(id, Kind::Effect)),
            TimerTarget::Deadline(program) => {
                live(program).is_some_and(|live| live.deadline == Some(at))
            }
        }
    }

    /// Sheds timers whose program or effect moved on, once the queue has grown enough
    /// that doing so costs O(1) per timer armed.
    #[inline]
    fn compact_timers(&mut self) {
        if self.timers.wants_compaction() {
            let programs = &self.programs;
            self.timers
                .retain(|at, target| Self::timer_is_live(programs, at, target));
        }
    }

    #[inline]
    fn advance(&mut self, now: Time) {
        if self.stale {
            self.catch_up(now);
        }
        self.now = self.now.max(now);
    }

    /// The first time given after answers without one: timers armed since move on
    /// by how much later than `self.now` it is, so none counts from before it was
    /// armed. They keep their order (all move by the same amount, and each was armed
    /// after every timer that does not move).
    #[cold]
    fn catch_up(&mut self, now: Time) {
        self.stale = false;
        let late = now.as_nanos().saturating_sub(self.now.as_nanos());
        let stale_limits = std::mem::take(&mut self.stale_limits).min(self.limits.len());
        if late == 0 {
            return;
        }
        let len = self.limits.len();
        for (at, _) in self.limits.range_mut(len - stale_limits..) {
            *at = Time::from_nanos(at.as_nanos().saturating_add(late));
        }
        self.timers.delay_armed_after(self.stale_mark, late);
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

    /// Runs a program just installed until it first waits.
    fn start(&mut self, index: u32) {
        let now = self.now;
        let Some(live) = self.programs[index as usize].live.as_mut() else {
            return;
        };
        let resumed = {
            let mut mailbox = live.mailbox.borrow_mut();
            if mailbox.stores_completions {
                ready_to_poll(&mut mailbox, now);
                drop(mailbox);
                poll_async(live.host.as_mut(), &live.mailbox)
            } else {
                mailbox.now = now;
                handle_event(live.host.as_mut(), &mut mailbox, Event::Start)
            }
        };
        self.after_resume(index, resumed);
    }

    /// After one wake of a program: collects the timers it armed, and ends it if it
    /// returned, panicked, spins or can never be woken again.
    #[inline(always)]
    fn after_resume(&mut self, index: u32, resumed: Resumed<O>) {
        let (poll, stuck, armed) = match resumed {
            Ok(resumed) => resumed,
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                self.finish(index, Err(ProgramError::Panicked { message }));
                return;
            }
        };
        let spinning = if armed {
            let Some(live) = self.programs[index as usize].live.as_ref() else {
                return;
            };
            let mut mailbox = live.mailbox.borrow_mut();
            for (id, at, kind) in mailbox.timers.drain(..) {
                let target = match kind {
                    Kind::Timer => TimerTarget::Timer(id),
                    Kind::Effect => TimerTarget::Limit(id),
                };
                self.timers.push(at, target);
            }
            drop(mailbox);
            self.compact_timers();
            let Some(live) = self.programs[index as usize].live.as_ref() else {
                return;
            };
            live.mailbox.borrow().spinning()
        } else {
            None
        };
        match (poll, stuck, spinning) {
            (Poll::Ready(output), _, _) => self.finish(index, Ok(output)),
            (Poll::Pending, _, Some(wakes)) => {
                self.finish(index, Err(ProgramError::Spinning { wakes }))
            }
            (Poll::Pending, Stuck::No, None) => {}
            (Poll::Pending, Stuck::ForeignAwait, None) => {
                self.finish(index, Err(ProgramError::ForeignAwait))
            }
            (Poll::Pending, Stuck::Stalled, None) => self.finish(index, Err(ProgramError::Stalled)),
        }
    }

    /// Ends a running program: drops it, cancels what it left outstanding, reports it.
    fn finish(&mut self, index: u32, mut result: Result<O, ProgramError>) {
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
        // Dropping the program drops its effect futures, which cancel themselves. A
        // destructor that panics does not escape: the program still ends once.
        let Live { host, mailbox, .. } = live;
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| drop(host))) {
            let message = format!(
                "while being dropped after it ended ({}): {}",
                match &result {
                    Ok(_) => "it had returned".to_string(),
                    Err(error) => error.to_string(),
                },
                panic_message(payload.as_ref())
            );
            let ended = std::mem::replace(&mut result, Err(ProgramError::Panicked { message }));
            // Its output goes too; a panic dropping that one is the same program's.
            let _ = panic::catch_unwind(AssertUnwindSafe(|| drop(ended)));
        }
        mailbox.borrow_mut().close();
        self.finished.push_back((program, result));
    }
}

impl<O, F: Family> Drop for Engine<O, F> {
    /// Drops the programs still running one by one, so that one whose destructor
    /// panics does not take the driver down with it.
    fn drop(&mut self) {
        for entry in &mut self.programs {
            if let Some(live) = entry.live.take() {
                let _ = panic::catch_unwind(AssertUnwindSafe(|| drop(live)));
            }
        }
    }
}
