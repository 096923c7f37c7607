//! Interpreters: what performs the effects of one family on a shard.
//!
//! # The layering
//! Below a request there are three layers, and an interpreter is the thinnest:
//! 1. wire state machines in the core know bytes and time (`PgConnection`,
//!    `RedisConnection`, `WsSession`, the `Pool`);
//! 2. sans-IO **family adapters** in the core turn effects into protocol work and
//!    answers back; they own the pools and the table of pending requests, and
//!    multiplex many programs' effects onto shared pipelined connections;
//! 3. the **interpreter** (here) only moves bytes, time and answers between the
//!    adapter and the OS: it is handed each request of its family, answers it inline
//!    or later through a [`Replier`], hears each cancellation and each program's end.
//!
//! # One instance per shard, shared state per process
//! A runtime builds one interpreter per shard by calling the factory it was registered
//! with, on that shard's thread (so an interpreter may hold `Rc`s and spawn `!Send`
//! tasks with `tokio::task::spawn_local`). What must be per process (a pool of at most
//! 20 connections, an in-memory world) lives behind an `Arc` that the factory
//! captures: every shard's instance then shares it.
//!
//! # The cancellation contract
//! The engine tells the interpreter that a program no longer wants an answer
//! ([`Interpreter::cancel`]). An effect the interpreter has not started (still
//! queued: waiting for a connection, for a pool thread) must be dropped and never
//! performed; one already in flight may still complete, and its answer is then
//! recognised as stale and dropped. Either way, the program never sees it.
//!
//! # Writing one
//! ```
//! use effectful::{EffectError, EffectId, effect::{Request, Response}};
//! use effectful_tokio::{Interpreter, ShardCx};
//!
//! /// Answers every request with the same error: a stand-in for a service that is down.
//! struct Down;
//!
//! impl Interpreter for Down {
//!     fn perform(&mut self, cx: &mut ShardCx<'_>, id: EffectId, request: Request) {
//!         cx.answer(id, Err(EffectError::connection_lost(request.name(), "the service is down")));
//!     }
//! }
//! ```
//! Register it with [`RuntimeBuilder::interpreter`](crate::RuntimeBuilder::interpreter).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::task::Waker;

use effectful::effect::Request;
use effectful::{EffectError, EffectId, EmbedStd, Family, ProgramError, ProgramId, Std, Time};

use crate::clock::Clock;
use crate::inbox;
use crate::offload::{CpuPool, Offloaded};
use crate::shard::Inbox;
use crate::stats::RuntimeStats;

/// Performs the effects of one family on one shard.
///
/// Every method runs on the shard's thread, inside the driving loop: it must not
/// block. Work that waits (IO) goes to a task; work that computes for long (hashing)
/// goes to [`ShardCx::offload`].
pub trait Interpreter<F: Family = Std>: 'static {
    /// Performs `request`: answer it now with [`ShardCx::answer`], or later through a
    /// [`Replier`] (from a task, another thread, the CPU pool).
    fn perform(&mut self, cx: &mut ShardCx<'_, F>, id: EffectId, request: F::Request);

    /// The program no longer wants the answer to `id`: drop it if it has not started
    /// (see the module's cancellation contract). The default does nothing, which is
    /// right for interpreters that answer everything inline.
    fn cancel(&mut self, cx: &mut ShardCx<'_, F>, id: EffectId) {
        let _ = (cx, id);
    }

    /// `program` ended, however it ended: release what it held (a pinned transaction,
    /// a subscription). Called after the cancellations its end caused.
    fn program_finished(&mut self, cx: &mut ShardCx<'_, F>, program: ProgramId) {
        let _ = (cx, program);
    }

    /// `program` ended with `result` (`Ok(())` when it returned: its output goes to
    /// whoever waits for it). The default calls
    /// [`program_finished`](Self::program_finished); override it when the way a
    /// program ended matters (the WebSocket interpreter picks its close code from it).
    fn program_ended(
        &mut self,
        cx: &mut ShardCx<'_, F>,
        program: ProgramId,
        result: &Result<(), ProgramError>,
    ) {
        let _ = result;
        self.program_finished(cx, program);
    }

    /// The runtime began a graceful shutdown: answer what waits for it, and stop
    /// taking long work. Called once per shard.
    fn shutdown_began(&mut self, cx: &mut ShardCx<'_, F>) {
        let _ = cx;
    }
}

/// An answer on its way to a shard.
pub(crate) type Answer<F> = (EffectId, Result<<F as Family>::Response, EffectError>);

/// Answers effects of one shard from anywhere: a task, another thread, the CPU pool.
/// `Send` when the family's responses are.
pub struct Replier<F: Family = Std> {
    tx: inbox::Sender<Inbox<F>>,
}

impl<F: Family> Clone for Replier<F> {
    fn clone(&self) -> Self {
        Replier {
            tx: self.tx.clone(),
        }
    }
}

impl<F: Family> std::fmt::Debug for Replier<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replier")
    }
}

impl<F: Family> Replier<F> {
    pub(crate) fn channel() -> (Replier<F>, inbox::Receiver<Inbox<F>>) {
        let (tx, rx) = inbox::channel();
        (Replier { tx }, rx)
    }

    /// Puts anything in the shard's inbox; gives it back if the shard has stopped.
    pub(crate) fn send(&self, item: Inbox<F>) -> Result<(), Inbox<F>> {
        self.tx.send(item)
    }

    /// Hands the answer to `id` to its shard. Returns `false` if the shard has
    /// stopped (the answer is dropped, as a stale one would be).
    pub fn answer(&self, id: EffectId, result: Result<F::Response, EffectError>) -> bool {
        self.tx.send(Inbox::Answer((id, result))).is_ok()
    }
}

/// Delivers an answer into a shard's engine at once, when the shard is idle.
pub(crate) trait Resume<F: Family> {
    /// Delivers `answer` and runs the drain it causes; gives `answer` back when the
    /// shard is busy (its loop is handling an input, or one of its interpreters'
    /// hooks is running).
    fn resume(&self, answer: Answer<F>) -> Result<(), Answer<F>>;
}

/// Answers queued on the shard's own thread for its loop, with no channel between:
/// the shard drains them before its inbox, and sleeps on `waker` while both are empty.
pub(crate) struct LocalInbox<F: Family> {
    pub(crate) answers: RefCell<VecDeque<Answer<F>>>,
    /// The shard's task, registered while it waits.
    waker: RefCell<Option<Waker>>,
    /// The shard waits (registered `waker` and found `answers` empty): wake it once.
    waiting: Cell<bool>,
    /// The loop must look again though no answer is queued (see [`LocalInbox::nudge`]).
    nudged: Cell<bool>,
    /// The shard has stopped: answers are dropped.
    closed: Cell<bool>,
    /// The shard itself, for [`LocalReplier::answer_now`]; set while its loop runs.
    resume: RefCell<Option<Weak<dyn Resume<F>>>>,
}

impl<F: Family> LocalInbox<F> {
    pub(crate) fn new() -> Rc<LocalInbox<F>> {
        Rc::new(LocalInbox {
            answers: RefCell::new(VecDeque::new()),
            waker: RefCell::new(None),
            waiting: Cell::new(false),
            nudged: Cell::new(false),
            closed: Cell::new(false),
            resume: RefCell::new(None),
        })
    }

    pub(crate) fn set_resume(&self, shard: Weak<dyn Resume<F>>) {
        *self.resume.borrow_mut() = Some(shard);
    }

    /// Whether answers are queued (or the loop was nudged); if not, registers `waker`
    /// to be woken by the next.
    pub(crate) fn poll_ready(&self, waker: &Waker) -> bool {
        if !self.answers.borrow().is_empty() || self.nudged.replace(false) {
            return true;
        }
        let mut registered = self.waker.borrow_mut();
        if !registered.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *registered = Some(waker.clone());
        }
        self.waiting.set(true);
        false
    }

    pub(crate) fn pop(&self) -> Option<Answer<F>> {
        self.answers.borrow_mut().pop_front()
    }

    /// Wakes the shard's loop once, with nothing queued: answers delivered at once
    /// owe the engine a reading of the clock, and may have armed a timer earlier
    /// than the loop's sleep.
    pub(crate) fn nudge(&self) {
        self.nudged.set(true);
        self.wake();
    }

    fn wake(&self) {
        if self.waiting.replace(false) {
            if let Some(waker) = self.waker.borrow().as_ref() {
                waker.wake_by_ref();
            }
        }
    }

    /// The shard stopped: later answers are refused, queued ones dropped.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        self.answers.borrow_mut().clear();
        self.waker.borrow_mut().take();
        self.resume.borrow_mut().take();
    }
}

/// Answers effects of one shard from a task on that shard's thread (one spawned with
/// `tokio::task::spawn_local` by the interpreter), without the cross-thread channel of
/// [`Replier`]. Not `Send`; from other threads use a [`Replier`].
///
/// Two ways to answer:
/// - [`answer`](Self::answer) queues the answer for the shard's loop, which wakes
///   and delivers it: safe from anywhere on the thread;
/// - [`answer_now`](Self::answer_now) delivers it at once when the shard is idle:
///   the program resumes inside the call, and what it asks next is handed to its
///   interpreter before the call returns, with no task wake at all. The interpreter
///   hooks may then run inside the call, so the caller must not hold a borrow that
///   those hooks take (a `RefCell` it shares with its interpreter).
pub struct LocalReplier<F: Family = Std> {
    inbox: Rc<LocalInbox<F>>,
}

impl<F: Family> Clone for LocalReplier<F> {
    fn clone(&self) -> Self {
        LocalReplier {
            inbox: self.inbox.clone(),
        }
    }
}

impl<F: Family> std::fmt::Debug for LocalReplier<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalReplier")
    }
}

impl<F: Family> LocalReplier<F> {
    pub(crate) fn new(inbox: &Rc<LocalInbox<F>>) -> LocalReplier<F> {
        LocalReplier {
            inbox: inbox.clone(),
        }
    }

    /// Queues the answer to `id` for the shard's loop. Returns `false` if the shard
    /// has stopped (the answer is dropped, as a stale one would be).
    pub fn answer(&self, id: EffectId, result: Result<F::Response, EffectError>) -> bool {
        let inbox = &*self.inbox;
        if inbox.closed.get() {
            return false;
        }
        inbox.answers.borrow_mut().push_back((id, result));
        inbox.wake();
        true
    }

    /// Delivers the answer to `id` at once when the shard is idle: its program
    /// resumes inside this call, and the effects it asks for next reach their
    /// interpreters before this returns (answers queued earlier go first). When the
    /// shard is busy (this is called from inside one of its interpreters' hooks) the
    /// answer is queued as by [`answer`](Self::answer). Hold no borrow that this
    /// shard's interpreters take in their hooks while calling it. Returns `false` if
    /// the shard has stopped.
    pub fn answer_now(&self, id: EffectId, result: Result<F::Response, EffectError>) -> bool {
        let inbox = &*self.inbox;
        if inbox.closed.get() {
            return false;
        }
        let shard = inbox.resume.borrow().as_ref().and_then(Weak::upgrade);
        let answer = match shard {
            Some(shard) => match shard.resume((id, result)) {
                Ok(()) => return true,
                Err(answer) => answer,
            },
            None => (id, result),
        };
        inbox.answers.borrow_mut().push_back(answer);
        inbox.wake();
        true
    }
}

/// What an interpreter may do while the driver calls it.
pub struct ShardCx<'a, F: Family = Std> {
    /// The input's time; `None` until read for an answer taken without a reading.
    pub(crate) now: Cell<Option<Time>>,
    pub(crate) clock: &'a Clock,
    pub(crate) shard: usize,
    pub(crate) inline: &'a mut VecDeque<Answer<F>>,
    pub(crate) replier: &'a Replier<F>,
    pub(crate) local: &'a Rc<LocalInbox<F>>,
    pub(crate) pool: &'a CpuPool,
}

impl<F: Family> ShardCx<'_, F> {
    /// The time of the input being handled, on the runtime's [`Clock`] (for an
    /// answer the shard took without reading the clock, read at the first call).
    pub fn now(&self) -> Time {
        match self.now.get() {
            Some(now) => now,
            None => {
                let now = self.clock.now();
                self.now.set(Some(now));
                now
            }
        }
    }

    /// The shard this call runs on.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Answers `id` now: the program resumes in the same drain, with no task wake.
    pub fn answer(&mut self, id: EffectId, result: Result<F::Response, EffectError>) {
        self.inline.push_back((id, result));
    }

    /// A [`Replier`] to answer later.
    pub fn replier(&self) -> Replier<F> {
        self.replier.clone()
    }

    /// A [`LocalReplier`] to answer later from a task on this shard's thread.
    pub fn local_replier(&self) -> LocalReplier<F> {
        LocalReplier::new(self.local)
    }

    /// Computes the answer to `id` on the process's CPU pool, off this shard's
    /// thread. A panic in `work` answers an error. Cancel the returned handle from
    /// [`Interpreter::cancel`] to drop the work if it has not started.
    pub fn offload(
        &self,
        id: EffectId,
        effect: &'static str,
        work: impl FnOnce() -> Result<F::Response, EffectError> + Send + 'static,
    ) -> Offloaded
    where
        F::Response: Send,
    {
        let replier = self.replier.clone();
        self.pool.run(work, move |result| {
            let result = result.unwrap_or_else(|| {
                Err(EffectError::new(
                    effect,
                    effectful::ErrorKind::Unavailable,
                    "the interpreter's work panicked; see the log",
                )
                .with_retryable(false))
            });
            replier.answer(id, result);
        })
    }
}

/// What a factory knows about the shard it builds an interpreter for.
pub struct ShardContext<F: Family = Std> {
    pub(crate) shard: usize,
    pub(crate) shards: usize,
    pub(crate) clock: Clock,
    pub(crate) replier: Replier<F>,
    pub(crate) local: Rc<LocalInbox<F>>,
    pub(crate) pool: CpuPool,
    pub(crate) stats: RuntimeStats,
}

impl<F: Family> ShardContext<F> {
    /// This shard's index, in `0..shards()`.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// How many shards the runtime has.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The runtime's clock (one for every shard).
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// A [`Replier`] for this shard, for tasks the interpreter starts.
    pub fn replier(&self) -> Replier<F> {
        self.replier.clone()
    }

    /// A [`LocalReplier`] for this shard, for tasks the interpreter starts on the
    /// shard's thread (`spawn_local`): cheaper than a [`Replier`], not `Send`.
    pub fn local_replier(&self) -> LocalReplier<F> {
        LocalReplier::new(&self.local)
    }

    /// The process's CPU pool.
    pub fn pool(&self) -> &CpuPool {
        &self.pool
    }

    /// The runtime's counters (the Metrics interpreter reports them).
    pub fn stats(&self) -> &RuntimeStats {
        &self.stats
    }
}

/// A family that embeds the built-in one and can hand a built-in request back out, so
/// that the built-in interpreters serve it too.
///
/// Implemented for [`Std`]; implement it for your own family beside
/// [`EmbedStd`] (one `match`, the mirror of `project_response`).
pub trait SplitStd: EmbedStd {
    /// The built-in request inside `request`, or `request` back if it is one of the
    /// family's own.
    fn split_request(request: Self::Request) -> Result<Request, Self::Request>;
}

impl SplitStd for Std {
    #[inline]
    fn split_request(request: Request) -> Result<Request, Request> {
        Ok(request)
    }
}

/// Builds one shard's interpreter; called on that shard's thread.
pub(crate) type Factory<F> = Box<dyn Fn(&ShardContext<F>) -> Box<dyn Interpreter<F>> + Send + Sync>;

/// The error a built-in interpreter gives for a request of another family (routing
/// sent it the wrong request: a bug in a custom family's `request_name`).
pub(crate) fn misrouted<F: Family>(family: &str, request: &F::Request) -> EffectError {
    EffectError::new(
        F::request_name(request),
        effectful::ErrorKind::Protocol,
        format!(
            "the {family} interpreter was handed a request of another family; \
             check the family's request_name"
        ),
    )
    .with_retryable(false)
}
