//! A shard: one OS thread, one current-thread tokio runtime, one [`Engine`] and the
//! interpreters that serve it. The driving loop is written here, once.

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
use rustc_hash::FxHashMap;
use tokio::sync::{Semaphore, mpsc};
use tracing::{Level, Span};

use crate::clock::Clock;
use crate::interpreter::{Answer, Interpreter, Replier, ShardCx};
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
    pub(crate) inbox: mpsc::UnboundedReceiver<Inbox<F>>,
    /// Permits for programs waiting in the inbox (the bound of the queue).
    pub(crate) admission: Arc<Semaphore>,
    pub(crate) counters: Arc<ShardCounters>,
    pub(crate) pool: CpuPool,
    inflight: FxHashMap<EffectId, Inflight>,
    waiters: Vec<Option<Waiter>>,
    inline: VecDeque<Answer<F>>,
    /// The end of the grace period, once shutdown began.
    grace: Option<Time>,
    report: ShardReport,
}

/// At most this many inbox items are taken in one wake before timers get a turn.
const INBOX_BATCH: usize = 256;

impl<F: Family> Shard<F> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        index: usize,
        engine: Engine<(), F>,
        clock: Clock,
        families: Arc<[&'static str]>,
        replier: Replier<F>,
        inbox: mpsc::UnboundedReceiver<Inbox<F>>,
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
            inbox,
            admission,
            counters,
            pool,
            inflight: FxHashMap::default(),
            waiters: Vec::new(),
            inline: VecDeque::new(),
            grace: None,
            report: ShardReport::default(),
        }
    }

    /// Runs until shutdown has begun and every program has ended.
    pub(crate) async fn run(mut self) -> ShardReport {
        let mut sleep = Box::pin(tokio::time::sleep_until(
            self.clock.instant(Time::MAX).into(),
        ));
        let mut armed: Option<Time> = None;
        loop {
            if self.grace.is_some() && self.engine.programs() == 0 {
                break;
            }
            let want = match (self.engine.poll_timeout(), self.grace) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if want != armed {
                if let Some(at) = want {
                    sleep.as_mut().reset(self.clock.instant(at).into());
                }
                armed = want;
            }
            let woken_by = poll_fn(|cx| {
                // The shard holds a sender itself: the inbox never ends while it runs.
                if let Poll::Ready(Some(item)) = self.inbox.poll_recv(cx) {
                    return Poll::Ready(Some(item));
                }
                if armed.is_some() && sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await;
            match woken_by {
                Some(item) => {
                    let now = self.clock.now();
                    self.take(now, item);
                    for _ in 1..INBOX_BATCH {
                        let Ok(item) = self.inbox.try_recv() else {
                            break;
                        };
                        self.take(now, item);
                    }
                }
                None => {
                    armed = None;
                    let now = self.clock.now();
                    if self.grace.is_some_and(|grace| now >= grace) {
                        self.abort_all(now);
                    }
                    self.engine.handle_timeout(now);
                    self.drain(now);
                }
            }
        }
        // Nothing more gets in; what is still queued is refused or, for answers, stale.
        self.inbox.close();
        while let Ok(item) = self.inbox.try_recv() {
            if let Inbox::Spawn(job) = item {
                self.report.refused += 1;
                job.refuse(ProgramError::Aborted);
            }
        }
        tracing::debug!(shard = self.index, ?self.report, "shard stopped");
        self.report
    }

    /// Handles one input from the inbox.
    fn take(&mut self, now: Time, item: Inbox<F>) {
        match item {
            Inbox::Answer(answer) => {
                self.deliver(now, answer);
                self.drain(now);
            }
            Inbox::Spawn(job) => {
                self.admission.add_permits(1);
                self.spawn(job);
            }
            Inbox::Shutdown(deadline) => self.begin_shutdown(now, deadline),
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
                    self.drain(now);
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
        self.drain(now);
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
            self.call(now, i, "shutdown_began", |interpreter, cx| {
                interpreter.shutdown_began(cx)
            });
        }
        self.deliver_inline(now);
        self.drain(now);
    }

    /// The grace period is over: every program still running ends as aborted.
    fn abort_all(&mut self, now: Time) {
        for index in 0..self.waiters.len() {
            if let Some(program) = self.waiters[index].as_ref().map(|w| w.program) {
                if self.engine.abort(now, program) {
                    self.report.aborted += 1;
                }
                self.drain(now);
            }
        }
    }

    /// The drain rule: every output, in order, before the next input. Inline answers
    /// go back into the engine as they come, so their programs resume in this drain.
    fn drain(&mut self, now: Time) {
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Request { id, request } => self.dispatch(now, id, request),
                Output::Cancel { id } => self.cancel(now, id),
                Output::Finished { program, result } => self.finished(now, program, result),
            }
            self.deliver_inline(now);
        }
    }

    fn deliver_inline(&mut self, now: Time) {
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

    fn dispatch(&mut self, now: Time, id: EffectId, request: F::Request) {
        let name = F::request_name(&request);
        let family = self.route(name);
        let index = family.unwrap_or(self.families.len());
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

    fn cancel(&mut self, now: Time, id: EffectId) {
        let Some(entry) = self.inflight.remove(&id) else {
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

    fn finished(&mut self, now: Time, program: ProgramId, result: Result<(), ProgramError>) {
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
    fn deliver(&mut self, now: Time, (id, result): Answer<F>) {
        let outcome = match &result {
            Ok(_) => EffectOutcome::Ok,
            Err(_) => EffectOutcome::Error,
        };
        let entry = self.inflight.remove(&id);
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
        let outcome = match self.engine.handle_response(now, id, result) {
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
        now: Time,
        family: usize,
        hook: &'static str,
        f: impl FnOnce(&mut dyn Interpreter<F>, &mut ShardCx<'_, F>),
    ) -> Option<String> {
        let Shard {
            interpreters,
            inline,
            replier,
            pool,
            index: shard,
            ..
        } = self;
        let mut cx = ShardCx {
            now,
            shard: *shard,
            inline,
            replier,
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

fn end_trace(trace: Option<Box<(Instant, Span)>>, outcome: EffectOutcome) {
    if let Some(trace) = trace {
        let (started, span) = *trace;
        let latency_us = started.elapsed().as_micros() as u64;
        tracing::debug!(parent: &span, latency_us, outcome = outcome.label(), "effect ended");
    }
}
