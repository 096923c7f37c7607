//! A shard: one OS thread, one current-thread tokio runtime, one [`Engine`] and the
//! interpreters that serve it. The driving loop is written here, once.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use effectful::{
    Delivery, EffectError, EffectId, Engine, ErrorKind, Family, Output, ProgramError, ProgramId,
    Time, panic_message,
};
use tokio::sync::Semaphore;
use tracing::{Level, Span};

use crate::clock::Clock;
use crate::deadline::DeadlineSleep;
use crate::inbox;
use crate::interpreter::{Answer, Interpreter, LocalInbox, Replier, Resume, ShardCx};
use crate::offload::CpuPool;
use crate::stats::{self, EffectOutcome, ShardCounters, UNHANDLED};

/// What reaches a shard from outside its loop, in one queue: answers from
/// interpreters' tasks, programs to start, the start of shutdown.
pub(crate) enum Inbox<F: Family> {
    /// The answer to an effect.
    Answer(Answer<F>),
    /// A program to start (its admission permit was taken by the handle).
    Spawn(Box<dyn SpawnJob<F>>),
    /// Shutdown began; running programs have until this time.
    Shutdown(Time),
}

/// A program on its way to a shard, with whoever waits for its result.
pub(crate) trait SpawnJob<F: Family>: Send {
    /// Starts the program; returns its id and how to report its end.
    fn start(self: Box<Self>, engine: &mut Engine<(), F>, now: Time)
    -> (ProgramId, Rc<dyn Report>);
    /// Reports the program as ended without running it (the runtime is stopping).
    fn refuse(self: Box<Self>, error: ProgramError);
}

/// Reports a program's end to whoever waits for it. A program that returns leaves
/// its output beside the report, which sends it once the shard has handled the
/// program's `Finished` (so counters and interpreters have heard of it first).
pub(crate) trait Report {
    fn report(&self, result: Result<(), ProgramError>);
}

struct Waiter {
    program: ProgramId,
    report: Rc<dyn Report>,
    span: Option<Span>,
}

/// An effect handed to an interpreter and not yet ended.
struct Inflight {
    /// The interpreter's index (`families.len()`: unhandled).
    family: usize,
    /// When it started and its span, when debug tracing is on.
    trace: Option<Box<(Instant, Span)>>,
}

/// Effects handed to interpreters and not yet ended, by program index and slot: the
/// engine's ids are dense and reused, so a table costs less per effect than a map.
#[derive(Default)]
struct InflightTable {
    programs: Vec<Vec<Option<(EffectId, Inflight)>>>,
}

impl InflightTable {
    fn insert(&mut self, id: EffectId, entry: Inflight) {
        let (program, slot) = (id.program().index() as usize, id.slot() as usize);
        if self.programs.len() <= program {
            self.programs.resize_with(program + 1, Vec::new);
        }
        let slots = &mut self.programs[program];
        if slots.len() <= slot {
            slots.resize_with(slot + 1, || None);
        }
        slots[slot] = Some((id, entry));
    }

    /// The entry of exactly `id` (not of an earlier or later use of its slot).
    fn remove(&mut self, id: EffectId) -> Option<Inflight> {
        let slot = self
            .programs
            .get_mut(id.program().index() as usize)?
            .get_mut(id.slot() as usize)?;
        match slot {
            Some((held, _)) if *held == id => slot.take().map(|(_, entry)| entry),
            _ => None,
        }
    }
}

/// The routes of request names already seen, by the name's address and length:
/// `request_name` gives `&'static str`s, and those name one string for good, so a
/// hit costs no string comparison. Direct-mapped; a collision only costs a lookup.
#[derive(Default)]
struct RouteMemo {
    entries: [Option<(&'static str, usize)>; ROUTE_MEMO],
}

const ROUTE_MEMO: usize = 16;

impl RouteMemo {
    fn place(name: &'static str) -> usize {
        (name.as_ptr() as usize >> 3) % ROUTE_MEMO
    }

    fn get(&self, name: &'static str) -> Option<usize> {
        match self.entries[Self::place(name)] {
            Some((held, index)) if std::ptr::eq(held, name) => Some(index),
            _ => None,
        }
    }

    fn put(&mut self, name: &'static str, index: usize) {
        self.entries[Self::place(name)] = Some((name, index));
    }
}

/// How a shard's run ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ShardReport {
    /// Programs that ended on their own after shutdown began.
    pub(crate) finished_in_grace: u64,
    /// Programs aborted when the grace period ran out.
    pub(crate) aborted: u64,
    /// Programs queued but never started, reported as aborted.
    pub(crate) refused: u64,
}

pub(crate) struct Shard<F: Family> {
    pub(crate) index: usize,
    pub(crate) engine: Engine<(), F>,
    pub(crate) clock: Clock,
    pub(crate) families: Arc<[&'static str]>,
    pub(crate) interpreters: Vec<Box<dyn Interpreter<F>>>,
    pub(crate) replier: Replier<F>,
    /// Answers from tasks on this thread ([`crate::LocalReplier`]), taken before the inbox.
    local: Rc<LocalInbox<F>>,
    pub(crate) inbox: inbox::Receiver<Inbox<F>>,
    /// Permits for programs waiting in the inbox (the bound of the queue).
    pub(crate) admission: Arc<Semaphore>,
    pub(crate) counters: Arc<ShardCounters>,
    pub(crate) pool: CpuPool,
    inflight: InflightTable,
    routes: RouteMemo,
    waiters: Vec<Option<Waiter>>,
    inline: VecDeque<Answer<F>>,
    /// The end of the grace period, once shutdown began.
    grace: Option<Time>,
    /// The loop's sleep, until the engine's deadline or the grace period's end.
    sleep: DeadlineSleep,
    report: ShardReport,
}

/// The time of the input being handled, or `None` for an answer taken without
/// reading the clock (see [`Resume`]); interpreters read it then if they need it.
type Reading = Option<Time>;

/// At most this many inbox items are taken in one wake before timers get a turn.
const INBOX_BATCH: usize = 256;

/// What woke the shard's loop.
enum Woken {
    /// Answers from tasks on the shard's thread.
    Local,
    /// Items in the inbox (taken into the batch).
    Inbox,
    /// The sleep until the engine's deadline or the grace period's end.
    Timer,
}

impl<F: Family> Shard<F> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        index: usize,
        engine: Engine<(), F>,
        clock: Clock,
        families: Arc<[&'static str]>,
        replier: Replier<F>,
        local: Rc<LocalInbox<F>>,
        inbox: inbox::Receiver<Inbox<F>>,
        admission: Arc<Semaphore>,
        counters: Arc<ShardCounters>,
        pool: CpuPool,
    ) -> Shard<F> {
        Shard {
            index,
            engine,
            clock,
            families,
            interpreters: Vec::new(),
            replier,
            local,
            inbox,
            admission,
            counters,
            pool,
            inflight: InflightTable::default(),
            routes: RouteMemo::default(),
            waiters: Vec::new(),
            inline: VecDeque::new(),
            grace: None,
            sleep: DeadlineSleep::new(clock),
            report: ShardReport::default(),
        }
    }

    /// Runs until shutdown has begun and every program has ended.
    ///
    /// The shard's state is shared with its [`LocalInbox`], so that an answer given
    /// with [`crate::LocalReplier::answer_now`] while the loop waits resumes its
    /// program at once, inside that call (see [`Resume`]).
    pub(crate) async fn run(self) -> ShardReport {
        let local = self.local.clone();
        let shard = Rc::new(RefCell::new(self));
        let resume: Rc<dyn Resume<F>> = shard.clone();
        local.set_resume(Rc::downgrade(&resume));
        drop(resume);
        let mut batch: Vec<Inbox<F>> = Vec::with_capacity(INBOX_BATCH);
        loop {
            {
                let mut this = shard.borrow_mut();
                if this.grace.is_some() && this.engine.programs() == 0 {
                    break;
                }
                this.rearm();
            }
            let woken_by = poll_fn(|cx| {
                // Answers from this thread first: they cost no channel.
                if local.poll_ready(cx.waker()) {
                    return Poll::Ready(Woken::Local);
                }
                let mut this = shard.borrow_mut();
                // Everything queued (up to a batch) comes out in one call; an empty
                // inbox costs one atomic load.
                if this
                    .inbox
                    .poll_recv_many(cx, &mut batch, INBOX_BATCH)
                    .is_ready()
                {
                    return Poll::Ready(Woken::Inbox);
                }
                // The sleep keeps this task's waker from its last poll: it is polled
                // again only after a reset or once it has fired.
                if this.sleep.poll_elapsed(cx).is_ready() {
                    return Poll::Ready(Woken::Timer);
                }
                Poll::Pending
            })
            .await;
            let mut this = shard.borrow_mut();
            match woken_by {
                Woken::Local => {
                    let now = this.clock.now();
                    // The reading owed for answers taken without one since the
                    // last turn (see `Resume`): timers they armed move on.
                    this.engine.tick(now);
                    this.take_local(Some(now));
                }
                Woken::Inbox => {
                    let now = this.clock.now();
                    for item in batch.drain(..) {
                        this.take(Some(now), item);
                    }
                }
                Woken::Timer => {
                    let now = this.clock.now();
                    if this.grace.is_some_and(|grace| now >= grace) {
                        this.abort_all(now);
                    }
                    this.engine.handle_timeout(now);
                    this.drain(Some(now));
                }
            }
        }
        local.close();
        let mut this = shard.borrow_mut();
        // Nothing more gets in; what is still queued is refused or, for answers, stale.
        for item in this.inbox.close() {
            if let Inbox::Spawn(job) = item {
                this.report.refused += 1;
                job.refuse(ProgramError::Aborted);
            }
        }
        tracing::debug!(shard = this.index, ?this.report, "shard stopped");
        this.report
    }

    /// Re-arms the loop's sleep if the engine's deadline or the grace period's end
    /// is earlier ([`DeadlineSleep`]: every effect moves the engine's deadline on by
    /// its time limit, 30 s by default, and only an earlier one resets the timer).
    /// `timer_bound` is a cheap lower bound of `poll_timeout`: when it is no earlier
    /// than the armed sleep, neither is the deadline, and the engine need not be
    /// asked.
    fn rearm(&mut self) {
        if !self.wants_earlier_sleep() {
            return;
        }
        let want = match (self.engine.poll_timeout(), self.grace) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.sleep.want(want);
    }

    /// Whether something may be due before the armed sleep (cheap: no pruning).
    fn wants_earlier_sleep(&self) -> bool {
        let bound = match (self.engine.timer_bound(), self.grace) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        bound.is_some_and(|bound| self.sleep.armed().is_none_or(|armed| bound < armed))
    }

    /// Takes the answers queued on this thread, up to a batch.
    fn take_local(&mut self, now: Reading) {
        for _ in 0..INBOX_BATCH {
            let Some(answer) = self.local.pop() else {
                break;
            };
            self.take(now, Inbox::Answer(answer));
        }
    }

    /// Handles one input from the inbox.
    fn take(&mut self, now: Reading, item: Inbox<F>) {
        match item {
            Inbox::Answer(answer) => {
                self.deliver(now, answer);
                self.drain(now);
            }
            Inbox::Spawn(job) => {
                self.admission.add_permits(1);
                self.spawn(job);
            }
            Inbox::Shutdown(deadline) => {
                let now = now.unwrap_or_else(|| self.clock.now());
                self.begin_shutdown(now, deadline)
            }
        }
    }

    fn spawn(&mut self, job: Box<dyn SpawnJob<F>>) {
        if self.grace.is_some() {
            self.report.refused += 1;
            job.refuse(ProgramError::Aborted);
            return;
        }
        let now = self.clock.now();
        let engine = &mut self.engine;
        // A panic while making the program (in the closure given to spawn) loses that
        // program, whose JoinHandle then reports it aborted; the shard goes on.
        let (program, report) =
            match panic::catch_unwind(AssertUnwindSafe(|| job.start(engine, now))) {
                Ok(started) => started,
                Err(payload) => {
                    let message = panic_message(&*payload);
                    tracing::error!(shard = self.index, %message, "making a program panicked");
                    self.drain(Some(now));
                    return;
                }
            };
        self.counters.spawned();
        let span = tracing::enabled!(Level::DEBUG).then(|| {
            tracing::debug_span!("program", shard = self.index, %program, outcome = tracing::field::Empty)
        });
        let index = program.index() as usize;
        if self.waiters.len() <= index {
            self.waiters.resize_with(index + 1, || None);
        }
        self.waiters[index] = Some(Waiter {
            program,
            report,
            span,
        });
        self.drain(Some(now));
    }

    /// Stops taking programs, refuses the queued ones, and tells the interpreters
    /// (which answer every `WaitForShutdown`). Programs then have until `deadline`.
    fn begin_shutdown(&mut self, now: Time, deadline: Time) {
        if self.grace.is_some() {
            return;
        }
        self.grace = Some(deadline);
        // Programs already queued are refused as they come out of the inbox.
        self.admission.close();
        tracing::debug!(
            shard = self.index,
            programs = self.engine.programs(),
            "shutdown began"
        );
        for i in 0..self.interpreters.len() {
            self.call(Some(now), i, "shutdown_began", |interpreter, cx| {
                interpreter.shutdown_began(cx)
            });
        }
        self.deliver_inline(Some(now));
        self.drain(Some(now));
    }

    /// The grace period is over: every program still running ends as aborted.
    fn abort_all(&mut self, now: Time) {
        for index in 0..self.waiters.len() {
            if let Some(program) = self.waiters[index].as_ref().map(|w| w.program) {
                if self.engine.abort(now, program) {
                    self.report.aborted += 1;
                }
                self.drain(Some(now));
            }
        }
    }

    /// The drain rule: every output, in order, before the next input. Inline answers
    /// go back into the engine as they come, so their programs resume in this drain.
    fn drain(&mut self, now: Reading) {
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Request { id, request } => self.dispatch(now, id, request),
                Output::Cancel { id } => self.cancel(now, id),
                Output::Finished { program, result } => self.finished(now, program, result),
            }
            self.deliver_inline(now);
        }
    }

    fn deliver_inline(&mut self, now: Reading) {
        while let Some(answer) = self.inline.pop_front() {
            self.deliver(now, answer);
        }
    }

    /// The interpreter of the family `name` (`Family.Effect`) belongs to.
    fn route(&self, name: &str) -> Option<usize> {
        let bytes = name.as_bytes();
        self.families.iter().position(|family| {
            bytes.len() > family.len()
                && bytes[family.len()] == b'.'
                && bytes.starts_with(family.as_bytes())
        })
    }

    fn dispatch(&mut self, now: Reading, id: EffectId, request: F::Request) {
        let name = F::request_name(&request);
        let index = match self.routes.get(name) {
            Some(index) => index,
            None => {
                let index = self.route(name).unwrap_or(self.families.len());
                self.routes.put(name, index);
                index
            }
        };
        let family = (index < self.families.len()).then_some(index);
        self.counters.requested(index);
        let trace = tracing::enabled!(Level::DEBUG).then(|| {
            let parent = self
                .waiter(id.program())
                .and_then(|w| w.span.as_ref()?.id());
            let family = self.families.get(index).copied().unwrap_or(UNHANDLED);
            let span = tracing::debug_span!(parent: parent, "effect", family, effect = name, %id);
            Box::new((Instant::now(), span))
        });
        self.inflight.insert(
            id,
            Inflight {
                family: index,
                trace,
            },
        );
        let Some(family) = family else {
            let available = self.families.iter().map(|f| f.to_string()).collect();
            self.inline
                .push_back((id, Err(EffectError::unhandled(name, available))));
            return;
        };
        let panicked = self.call(now, family, "perform", |interpreter, cx| {
            interpreter.perform(cx, id, request)
        });
        if let Some(message) = panicked {
            self.inline.push_back((
                id,
                Err(EffectError::new(
                    name,
                    ErrorKind::Unavailable,
                    format!("the interpreter panicked: {message}"),
                )
                .with_retryable(false)),
            ));
        }
    }

    fn cancel(&mut self, now: Reading, id: EffectId) {
        let Some(entry) = self.inflight.remove(id) else {
            return;
        };
        self.counters.ended(entry.family, EffectOutcome::Cancelled);
        end_trace(entry.trace, EffectOutcome::Cancelled);
        if entry.family < self.interpreters.len() {
            self.call(now, entry.family, "cancel", |interpreter, cx| {
                interpreter.cancel(cx, id)
            });
        }
    }

    fn finished(&mut self, now: Reading, program: ProgramId, result: Result<(), ProgramError>) {
        self.counters.finished(&result);
        if self.grace.is_some() && !matches!(result, Err(ProgramError::Aborted)) {
            self.report.finished_in_grace += 1;
        }
        let waiter = self
            .waiters
            .get_mut(program.index() as usize)
            .and_then(|slot| slot.take_if(|w| w.program == program));
        for i in 0..self.interpreters.len() {
            self.call(now, i, "program_ended", |interpreter, cx| {
                interpreter.program_ended(cx, program, &result)
            });
        }
        if let Some(waiter) = waiter {
            if let Some(span) = &waiter.span {
                span.record(
                    "outcome",
                    stats::PROGRAM_OUTCOMES[stats::program_outcome(&result)],
                );
            }
            waiter.report.report(result);
        }
    }

    /// An answer reaches the engine. Stale answers are dropped there.
    fn deliver(&mut self, now: Reading, (id, result): Answer<F>) {
        let outcome = match &result {
            Ok(_) => EffectOutcome::Ok,
            Err(_) => EffectOutcome::Error,
        };
        let entry = self.inflight.remove(id);
        let family = match &entry {
            Some(entry) => entry.family,
            None => {
                let name = match &result {
                    Ok(response) => F::response_name(response),
                    Err(error) => &error.effect,
                };
                self.route(name).unwrap_or(self.families.len())
            }
        };
        let delivery = match now {
            Some(now) => self.engine.handle_response(now, id, result),
            None => self.engine.handle_response_unclocked(id, result),
        };
        let outcome = match delivery {
            Delivery::Delivered => outcome,
            Delivery::Stale => EffectOutcome::Stale,
        };
        self.counters.ended(family, outcome);
        end_trace(entry.and_then(|e| e.trace), outcome);
    }

    fn waiter(&self, program: ProgramId) -> Option<&Waiter> {
        self.waiters
            .get(program.index() as usize)?
            .as_ref()
            .filter(|w| w.program == program)
    }

    /// Calls one interpreter's hook; a panic there is logged, and the shard goes on.
    /// Returns the panic's message if it panicked.
    fn call(
        &mut self,
        now: Reading,
        family: usize,
        hook: &'static str,
        f: impl FnOnce(&mut dyn Interpreter<F>, &mut ShardCx<'_, F>),
    ) -> Option<String> {
        let Shard {
            interpreters,
            inline,
            replier,
            local,
            pool,
            clock,
            index: shard,
            ..
        } = self;
        let mut cx = ShardCx {
            now: Cell::new(now),
            clock,
            shard: *shard,
            inline,
            replier,
            local,
            pool,
        };
        let interpreter = &mut *interpreters[family];
        let payload = panic::catch_unwind(AssertUnwindSafe(|| f(interpreter, &mut cx))).err()?;
        let message = panic_message(&*payload);
        tracing::error!(
            shard = self.index,
            family = self.families[family],
            hook,
            %message,
            "interpreter panicked"
        );
        Some(message)
    }
}

impl<F: Family> Resume<F> for RefCell<Shard<F>> {
    fn resume(&self, answer: Answer<F>) -> Result<(), Answer<F>> {
        // Busy: the loop is handling an input, or an interpreter's hook is running
        // (and answered from inside it). The answer then waits in the local queue.
        let Ok(mut shard) = self.try_borrow_mut() else {
            return Err(answer);
        };
        // The clock is not read per answer: the engine takes the answer without a
        // time. Answers queued before this one go first.
        shard.take_local(None);
        shard.take(None, Inbox::Answer(answer));
        // So a reading is owed, and the loop, which owns the clock, the sleep and
        // the end of shutdown, gives it at its next turn (one wake per burst of
        // answers: a nudge to a loop already woken only sets a flag), re-arming
        // its sleep if what ran armed an earlier deadline.
        debug_assert!(shard.engine.wants_time());
        shard.local.nudge();
        Ok(())
    }
}

fn end_trace(trace: Option<Box<(Instant, Span)>>, outcome: EffectOutcome) {
    if let Some(trace) = trace {
        let (started, span) = *trace;
        let latency_us = started.elapsed().as_micros() as u64;
        tracing::debug!(parent: &span, latency_us, outcome = outcome.label(), "effect ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use effectful::effect::{GenerateUuid, Request, Response, SystemResponse};
    use effectful::{EngineConfig, Std};

    fn next_id(engine: &mut Engine<(), Std>) -> EffectId {
        match engine.poll_output() {
            Some(Output::Request { id, .. }) => id,
            _ => panic!("the program asks for one effect at a time"),
        }
    }

    /// Two uses of one slot (the second after the first was answered), and an id
    /// of another program.
    fn ids() -> (EffectId, EffectId, EffectId) {
        let mut engine: Engine<(), Std> = Engine::new(EngineConfig::default());
        let asker = |fx: effectful::Fx<Std>| async move {
            loop {
                let _ = fx.perform(GenerateUuid {}).await;
            }
        };
        engine.spawn_async(Time::ZERO, asker);
        let first = next_id(&mut engine);
        let answer = Response::System(SystemResponse::GenerateUuid(uuid::Uuid::nil()));
        let _ = engine.handle_response(Time::ZERO, first, Ok(answer));
        let reused = next_id(&mut engine);
        engine.spawn_async(Time::ZERO, asker);
        let other = next_id(&mut engine);
        (first, reused, other)
    }

    fn entry(family: usize) -> Inflight {
        Inflight {
            family,
            trace: None,
        }
    }

    #[test]
    fn the_inflight_table_gives_back_only_the_exact_effect_it_holds() {
        let (first, reused, other) = ids();
        assert_eq!(first.slot(), reused.slot(), "the slot is reused");
        assert_ne!(first, reused);
        let mut table = InflightTable::default();
        table.insert(first, entry(1));
        table.insert(other, entry(2));
        assert!(table.remove(reused).is_none(), "a later use of the slot");
        assert_eq!(table.remove(first).map(|e| e.family), Some(1));
        assert!(table.remove(first).is_none(), "removed once");
        table.insert(reused, entry(3));
        assert!(table.remove(first).is_none(), "an earlier use of the slot");
        assert_eq!(table.remove(reused).map(|e| e.family), Some(3));
        assert_eq!(table.remove(other).map(|e| e.family), Some(2));
    }

    #[test]
    fn the_route_memo_answers_only_for_the_names_it_was_given() {
        let uuid = Std::request_name(&Request::from(GenerateUuid {}));
        let mut memo = RouteMemo::default();
        assert_eq!(memo.get(uuid), None);
        memo.put(uuid, 4);
        assert_eq!(memo.get(uuid), Some(4));
        assert_eq!(memo.get("Cache.GetCachedValue"), None);
    }
}
