//! The runtime: shards on every core, a `Send` handle to start programs on them, and
//! graceful shutdown.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::thread;
use std::time::Duration;

use effectful::{
    Cx, Engine, EngineConfig, Event, Family, Fx, Program, ProgramError, ProgramId, Rng, Std, Time,
};
use tokio::sync::{Semaphore, TryAcquireError, oneshot};

use crate::clock::Clock;
use crate::interpreter::{Factory, Interpreter, LocalInbox, Replier, ShardContext};
use crate::offload::CpuPool;
use crate::shard::{Inbox, Report, Shard, ShardReport, SpawnJob};
use crate::stats::{RuntimeStats, ShardCounters};

/// Why a runtime could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two interpreters were registered for one family.
    #[error("two interpreters are registered for the {0} family; register one per family")]
    DuplicateFamily(&'static str),
    /// A family name that routing cannot use.
    #[error(
        "{0:?} is not a family name; use the part of the effect name before the dot \
         (\"Database\" for \"Database.GetUserById\")"
    )]
    BadFamilyName(&'static str),
    /// The OS refused a thread or a tokio runtime.
    #[error("could not start {what}: {source}; check the process's thread limit")]
    Os {
        /// What could not start.
        what: String,
        /// The OS's error.
        source: std::io::Error,
    },
    /// No engine seed was configured and the OS could not supply one.
    #[error(transparent)]
    Entropy(#[from] crate::entropy::EntropyError),
    /// A shard stopped before it was ready (an interpreter factory panicked).
    #[error("shard {0} stopped while starting; an interpreter factory panicked (see the log)")]
    ShardFailed(usize),
}

/// Why a program was not started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The runtime is shutting down and takes no new programs.
    #[error("the runtime is shutting down and takes no new programs")]
    ShuttingDown,
    /// Every shard's queue is full (only from `try_spawn`): wait, or use `spawn`,
    /// which waits for room.
    #[error(
        "every shard's queue of programs to start is full ({capacity} each); \
         retry later or use spawn(), which waits for room"
    )]
    Full {
        /// The queue capacity per shard.
        capacity: usize,
    },
}

/// How a shutdown went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Programs that ended on their own during the grace period.
    pub finished_in_grace: u64,
    /// Programs aborted when the grace period ran out (each reported
    /// `ProgramError::Aborted`).
    pub aborted: u64,
    /// Programs queued but not yet started when shutdown began (each reported
    /// `ProgramError::Aborted`, never run).
    pub refused: u64,
}

/// Configures and starts a [`Runtime`].
///
/// ```
/// use effectful_tokio::{Runtime, SystemInterpreter};
///
/// let runtime = Runtime::builder()
///     .shards(2)
///     .interpreter("System", |_| SystemInterpreter::new())
///     .build()
///     .expect("runtime");
/// let id = runtime.block_on(async {
///     let handle = runtime.handle().spawn(|fx| async move {
///         fx.perform(effectful::effect::GenerateUuid {}).await
///     }).await?;
///     Ok::<_, Box<dyn std::error::Error>>(handle.await??)
/// }).expect("a uuid");
/// assert_eq!(id.get_version_num(), 4);
/// runtime.shutdown(std::time::Duration::from_secs(1));
/// ```
pub struct RuntimeBuilder<F: Family = Std> {
    shards: usize,
    seed: Option<u64>,
    engine: EngineConfig,
    queue: usize,
    cpu_threads: Option<usize>,
    interpreters: Vec<(&'static str, Factory<F>)>,
}

impl<F: Family> Default for RuntimeBuilder<F> {
    fn default() -> Self {
        RuntimeBuilder {
            shards: thread::available_parallelism().map_or(1, |n| n.get()),
            seed: None,
            engine: EngineConfig::default(),
            queue: 1024,
            cpu_threads: None,
            interpreters: Vec::new(),
        }
    }
}

impl<F: Family> RuntimeBuilder<F>
where
    F::Response: Send,
{
    /// A builder with the defaults: one shard per core, a seed from the OS, a queue
    /// of 1,024 programs to start per shard, no interpreters.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many shards (OS threads, each with its own engine). At least one.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// The seed of the engines' randomness (retry jitter, `Fx::random_u64`). Without
    /// it the runtime draws one from the OS; either way it is logged at start, so it
    /// must never feed secrets.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The engines' configuration (program timeout, ...). Its seed is replaced by one
    /// derived per shard from [`seed`](Self::seed).
    pub fn engine(mut self, config: EngineConfig) -> Self {
        self.engine = config;
        self
    }

    /// What the server's settings say of the runtime: the engines' program timeout
    /// (`PROGRAM_TIMEOUT_SECONDS`) and how many shards (`SHARDS`, one per core when
    /// unset). Other engine settings stay as they are.
    #[cfg(feature = "server")]
    pub fn settings(mut self, settings: &crate::server::Settings) -> Self {
        self.engine.program_timeout = Some(settings.program_timeout);
        if let Some(shards) = settings.shards {
            self = self.shards(shards as usize);
        }
        self
    }

    /// How many programs may wait to start on each shard before `spawn` waits for
    /// room (and `try_spawn` refuses). At least one.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue = capacity.max(1);
        self
    }

    /// How many threads the process's CPU pool has (default: one per shard).
    pub fn cpu_threads(mut self, threads: usize) -> Self {
        self.cpu_threads = Some(threads.max(1));
        self
    }

    /// Registers the interpreter of `family` (the part of effect names before the
    /// dot: `"Database"`, `"System"`, or your own family's). `factory` builds one
    /// instance per shard, on that shard's thread; state it captures in an `Arc` is
    /// shared by every shard, which is how per-process limits (a pool's size) hold.
    pub fn interpreter<I: Interpreter<F>>(
        mut self,
        family: &'static str,
        factory: impl Fn(&ShardContext<F>) -> I + Send + Sync + 'static,
    ) -> Self {
        self.interpreters.push((
            family,
            Box::new(move |cx: &ShardContext<F>| Box::new(factory(cx)) as Box<dyn Interpreter<F>>),
        ));
        self
    }

    /// Starts the shards and the CPU pool; returns once every shard has built its
    /// interpreters.
    pub fn build(self) -> Result<Runtime<F>, BuildError> {
        let mut families = Vec::new();
        for (family, _) in &self.interpreters {
            if family.is_empty() || family.contains('.') {
                return Err(BuildError::BadFamilyName(family));
            }
            if families.contains(family) {
                return Err(BuildError::DuplicateFamily(family));
            }
            families.push(*family);
        }
        let families: Arc<[&'static str]> = families.into();
        let factories: Arc<[Factory<F>]> = self.interpreters.into_iter().map(|(_, f)| f).collect();
        let seed = match self.seed {
            Some(seed) => seed,
            None => crate::entropy::seed()?,
        };
        let clock = Clock::start();
        let (pool, pool_threads) = CpuPool::start(self.cpu_threads.unwrap_or(self.shards))
            .map_err(|source| BuildError::Os {
                what: "the CPU pool's threads".into(),
                source,
            })?;
        let counters: Vec<Arc<ShardCounters>> = (0..self.shards)
            .map(|_| Arc::new(ShardCounters::new(families.len())))
            .collect();
        let stats = RuntimeStats::new(families.clone(), counters.clone().into());
        let mut inboxes = Vec::new();
        let mut admissions = Vec::new();
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<usize, BuildError>>();
        for (index, counters) in counters.into_iter().enumerate() {
            let (replier, inbox) = Replier::channel();
            let admission = Arc::new(Semaphore::new(self.queue));
            inboxes.push(replier.clone());
            admissions.push(admission.clone());
            let engine_config = EngineConfig {
                seed: Rng::derive(seed, "tokio.shard", index as u64).next_u64(),
                ..self.engine.clone()
            };
            let families = families.clone();
            let factories = factories.clone();
            let pool = pool.clone();
            let stats = stats.clone();
            let ready = ready_tx.clone();
            let shards = self.shards;
            let spawned = thread::Builder::new()
                .name(format!("effectful-shard-{index}"))
                .spawn(move || {
                    let mut builder = tokio::runtime::Builder::new_current_thread();
                    builder.enable_time();
                    // WebSocket connections move to the shard serving them, and each
                    // shard's PostgreSQL client and Redis share own their sockets.
                    #[cfg(any(feature = "server", feature = "postgres", feature = "redis"))]
                    builder.enable_io();
                    let runtime = match builder.build() {
                        Ok(runtime) => runtime,
                        Err(source) => {
                            let what = format!("shard {index}'s tokio runtime");
                            let _ = ready.send(Err(BuildError::Os { what, source }));
                            return ShardReport::default();
                        }
                    };
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&runtime, async move {
                        let local_inbox = LocalInbox::new();
                        let context = ShardContext {
                            shard: index,
                            shards,
                            clock,
                            replier: replier.clone(),
                            local: local_inbox.clone(),
                            pool: pool.clone(),
                            stats,
                        };
                        let mut shard = Shard::new(
                            index,
                            Engine::new(engine_config),
                            clock,
                            families,
                            replier,
                            local_inbox,
                            inbox,
                            admission,
                            counters,
                            pool,
                        );
                        shard.interpreters = factories.iter().map(|f| f(&context)).collect();
                        drop(context);
                        let _ = ready.send(Ok(index));
                        drop(ready);
                        // A task of the local set, like the interpreters' tasks, so that
                        // handing work between them never goes through the runtime's
                        // park and clock.
                        match tokio::task::spawn_local(shard.run()).await {
                            Ok(report) => report,
                            Err(error) => {
                                tracing::error!(shard = index, %error, "shard's loop panicked");
                                ShardReport::default()
                            }
                        }
                    })
                });
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(source) => {
                    return Err(BuildError::Os {
                        what: format!("shard {index}'s thread"),
                        source,
                    });
                }
            }
        }
        drop(ready_tx);
        let mut ready = 0;
        while ready < self.shards {
            match ready_rx.recv() {
                Ok(Ok(_)) => ready += 1,
                Ok(Err(error)) => return Err(error),
                // A shard dropped its sender without a word: its factory panicked.
                Err(_) => return Err(BuildError::ShardFailed(ready)),
            }
        }
        tracing::info!(
            seed,
            shards = self.shards,
            families = ?families,
            "effectful runtime started (the seed fixes programs' jitter and random draws; rerun with .seed({seed}))"
        );
        Ok(Runtime {
            handle: Handle {
                shared: Arc::new(Shared {
                    inboxes,
                    admissions,
                    next: AtomicUsize::new(0),
                    shutting_down: AtomicBool::new(false),
                    clock,
                    queue: self.queue,
                    stats: stats.clone(),
                }),
            },
            threads,
            pool: Some(pool),
            pool_threads,
            seed,
            caller: OnceLock::new(),
        })
    }
}

/// Shards on every core, running programs and their interpreters.
///
/// Each shard is an OS thread with a current-thread tokio runtime that owns one
/// [`Engine`] (which is `!Send` by design) and one instance of every registered
/// interpreter. Programs are spread over the shards; answers come back to the shard
/// that asked. The driving loop is the engine's drain rule: after each input (a
/// program started, an answer, a timer), every output is handled in order: requests to
/// their family's interpreter, cancellations to the interpreter that holds the
/// effect, results to whoever waits for the program and, with every program's end,
/// to every interpreter. Then the shard sleeps until the engine's next deadline or the
/// next input.
///
/// Dropping a runtime shuts it down with no grace period.
pub struct Runtime<F: Family = Std> {
    handle: Handle<F>,
    threads: Vec<thread::JoinHandle<ShardReport>>,
    pool: Option<CpuPool>,
    pool_threads: Vec<thread::JoinHandle<()>>,
    seed: u64,
    /// Made on the first `block_on`.
    caller: OnceLock<tokio::runtime::Runtime>,
}

impl Runtime<Std> {
    /// A builder for a runtime of the built-in effects.
    pub fn builder() -> RuntimeBuilder<Std> {
        RuntimeBuilder::new()
    }
}

impl<F: Family> Runtime<F>
where
    F::Response: Send,
{
    /// A `Send` handle to start programs from anywhere.
    pub fn handle(&self) -> &Handle<F> {
        &self.handle
    }

    /// The engine seed in use (configured, or drawn from the OS and logged).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The runtime's counters.
    pub fn stats(&self) -> &RuntimeStats {
        &self.handle.shared.stats
    }

    /// Runs `future` to completion on the calling thread (for `main` functions and
    /// tests that are not already async). Never call it from inside an async context.
    ///
    /// # Panics
    /// If the OS refuses the small runtime it runs on, or if called from inside an
    /// async context (tokio forbids nesting).
    pub fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        let caller =
            self.caller.get_or_init(|| {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => panic!("could not start a tokio runtime for block_on: {error}"),
                }
            });
        caller.block_on(future)
    }

    /// Shuts down gracefully and waits until every shard has stopped: no new
    /// programs; every program waiting on `System.WaitForShutdown` is answered;
    /// running programs have `grace` to finish, then are aborted (each reports
    /// `ProgramError::Aborted`); programs queued but not started are reported aborted
    /// without running. Blocks the calling thread: from async code, call it through
    /// `spawn_blocking`, or call [`Handle::begin_shutdown`] and let the runtime drop.
    pub fn shutdown(mut self, grace: Duration) -> ShutdownReport {
        self.stop(grace)
    }
}

impl<F: Family> Runtime<F> {
    fn stop(&mut self, grace: Duration) -> ShutdownReport {
        self.handle.begin_shutdown(grace);
        let mut report = ShutdownReport::default();
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(shard) => {
                    report.finished_in_grace += shard.finished_in_grace;
                    report.aborted += shard.aborted;
                    report.refused += shard.refused;
                }
                Err(_) => tracing::error!("a shard's thread panicked while stopping"),
            }
        }
        self.pool = None;
        for thread in self.pool_threads.drain(..) {
            let _ = thread.join();
        }
        tracing::info!(?report, "effectful runtime stopped");
        report
    }
}

impl<F: Family> Drop for Runtime<F> {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop(Duration::ZERO);
        }
    }
}

struct Shared<F: Family> {
    /// Each shard's inbox (a [`Replier`] is a sender into it).
    inboxes: Vec<Replier<F>>,
    /// Each shard's permits for programs waiting to start: the queue's bound.
    admissions: Vec<Arc<Semaphore>>,
    next: AtomicUsize,
    shutting_down: AtomicBool,
    clock: Clock,
    queue: usize,
    stats: RuntimeStats,
}

/// Starts programs on a runtime's shards from any thread or task; cheap to clone.
///
/// Queues are bounded: [`spawn`](Self::spawn) waits for room (backpressure),
/// [`try_spawn`](Self::try_spawn) refuses. Once shutdown began, both refuse with
/// [`SpawnError::ShuttingDown`].
pub struct Handle<F: Family = Std> {
    shared: Arc<Shared<F>>,
}

impl<F: Family> Clone for Handle<F> {
    fn clone(&self) -> Self {
        Handle {
            shared: self.shared.clone(),
        }
    }
}

impl<F: Family> Handle<F> {
    /// Begins a graceful shutdown with `grace` for running programs (see
    /// [`Runtime::shutdown`]); returns at once. Later calls do nothing.
    pub fn begin_shutdown(&self, grace: Duration) {
        if self.shared.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        let deadline = self.shared.clock.now() + grace;
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "effectful runtime shutting down"
        );
        for (inbox, admission) in self.shared.inboxes.iter().zip(&self.shared.admissions) {
            // Spawners waiting for room learn at once; the shard from its inbox.
            admission.close();
            let _ = inbox.send(Inbox::Shutdown(deadline));
        }
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::SeqCst)
    }

    /// The runtime's counters.
    pub fn stats(&self) -> &RuntimeStats {
        &self.shared.stats
    }

    /// How many shards the runtime has.
    pub fn shards(&self) -> usize {
        self.shared.inboxes.len()
    }
}

impl<F: Family> std::fmt::Debug for Handle<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("shards", &self.shared.inboxes.len())
            .field("shutting_down", &self.is_shutting_down())
            .finish()
    }
}

impl<F: Family> Handle<F>
where
    F::Response: Send,
{
    /// Starts an async program on a shard, waiting for room in its queue;
    /// `make` is called there with the program's effect handle. Await the returned
    /// [`JoinHandle`] for the program's result.
    pub async fn spawn<T, Fut, Mk>(&self, make: Mk) -> Result<JoinHandle<T>, SpawnError>
    where
        Mk: FnOnce(Fx<F>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (job, join) = AsyncJob::new(make);
        self.send(Box::new(job)).await?;
        Ok(join)
    }

    /// Starts an async program if a shard has room now.
    pub fn try_spawn<T, Fut, Mk>(&self, make: Mk) -> Result<JoinHandle<T>, SpawnError>
    where
        Mk: FnOnce(Fx<F>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (job, join) = AsyncJob::new(make);
        self.try_send(Box::new(job))?;
        Ok(join)
    }

    /// Starts a hand-written program on a shard (built there by `make`), waiting for
    /// room in its queue.
    pub async fn spawn_program<P, Mk>(&self, make: Mk) -> Result<JoinHandle<P::Output>, SpawnError>
    where
        Mk: FnOnce() -> P + Send + 'static,
        P: Program<F> + 'static,
        P::Output: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = ProgramJob { make, tx };
        self.send(Box::new(job)).await?;
        Ok(JoinHandle { rx })
    }

    fn start(&self) -> usize {
        self.shared.next.fetch_add(1, Ordering::Relaxed) % self.shared.inboxes.len()
    }

    fn try_send(&self, job: Box<dyn SpawnJob<F>>) -> Result<(), SpawnError> {
        match self.admit_now()? {
            Some(shard) => self.enqueue(shard, job),
            None => Err(SpawnError::Full {
                capacity: self.shared.queue,
            }),
        }
    }

    async fn send(&self, job: Box<dyn SpawnJob<F>>) -> Result<(), SpawnError> {
        if let Some(shard) = self.admit_now()? {
            return self.enqueue(shard, job);
        }
        // Every queue is full: wait for room on the next shard in turn.
        let shard = self.start();
        match self.shared.admissions[shard].acquire().await {
            Ok(permit) => {
                permit.forget();
                self.enqueue(shard, job)
            }
            Err(_) => Err(SpawnError::ShuttingDown),
        }
    }

    /// Takes a permit from the first shard in turn that has room now.
    fn admit_now(&self) -> Result<Option<usize>, SpawnError> {
        if self.is_shutting_down() {
            return Err(SpawnError::ShuttingDown);
        }
        let start = self.start();
        let n = self.shared.inboxes.len();
        for k in 0..n {
            let shard = (start + k) % n;
            match self.shared.admissions[shard].try_acquire() {
                Ok(permit) => {
                    // The shard gives the permit back when it takes the program.
                    permit.forget();
                    return Ok(Some(shard));
                }
                Err(TryAcquireError::NoPermits) => {}
                Err(TryAcquireError::Closed) => return Err(SpawnError::ShuttingDown),
            }
        }
        Ok(None)
    }

    fn enqueue(&self, shard: usize, job: Box<dyn SpawnJob<F>>) -> Result<(), SpawnError> {
        self.shared.inboxes[shard]
            .send(Inbox::Spawn(job))
            .map_err(|_| SpawnError::ShuttingDown)
    }
}

/// The result of a program started on a runtime: await it.
///
/// Resolves exactly once per program: its output, or why it ended without one.
#[must_use = "a JoinHandle does nothing unless awaited; dropping it detaches the program"]
pub struct JoinHandle<T> {
    rx: oneshot::Receiver<Result<T, ProgramError>>,
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinHandle")
    }
}

impl<T> JoinHandle<T> {
    /// Waits on the calling thread (never from async code).
    pub fn blocking_join(self) -> Result<T, ProgramError> {
        self.rx
            .blocking_recv()
            .unwrap_or(Err(ProgramError::Aborted))
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, ProgramError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // A shard that vanished without reporting (its thread died) aborted the program.
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ProgramError::Aborted)))
    }
}

/// Where a program's output waits for its `Finished`, and who waits for both.
struct ResultSlot<T> {
    tx: Cell<Option<oneshot::Sender<Result<T, ProgramError>>>>,
    output: Cell<Option<T>>,
}

impl<T> ResultSlot<T> {
    fn new(tx: oneshot::Sender<Result<T, ProgramError>>) -> Rc<ResultSlot<T>> {
        Rc::new(ResultSlot {
            tx: Cell::new(Some(tx)),
            output: Cell::new(None),
        })
    }
}

impl<T> Report for ResultSlot<T> {
    fn report(&self, result: Result<(), ProgramError>) {
        let Some(tx) = self.tx.take() else { return };
        // A program that returned left its output here before its `Finished`.
        let result = result.and_then(|()| self.output.take().ok_or(ProgramError::Aborted));
        let _ = tx.send(result);
    }
}

struct AsyncJob<Mk, T> {
    make: Mk,
    tx: oneshot::Sender<Result<T, ProgramError>>,
}

impl<Mk, T> AsyncJob<Mk, T> {
    fn new(make: Mk) -> (AsyncJob<Mk, T>, JoinHandle<T>) {
        let (tx, rx) = oneshot::channel();
        (AsyncJob { make, tx }, JoinHandle { rx })
    }
}

impl<F, T, Fut, Mk> SpawnJob<F> for AsyncJob<Mk, T>
where
    F: Family,
    Mk: FnOnce(Fx<F>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    fn start(
        self: Box<Self>,
        engine: &mut Engine<(), F>,
        now: Time,
    ) -> (ProgramId, Rc<dyn Report>) {
        let slot = ResultSlot::new(self.tx);
        let output = slot.clone();
        let make = self.make;
        let program = engine.spawn_async(now, move |fx| {
            let future = make(fx);
            async move { output.output.set(Some(future.await)) }
        });
        (program, slot)
    }

    fn refuse(self: Box<Self>, error: ProgramError) {
        let _ = self.tx.send(Err(error));
    }
}

struct ProgramJob<Mk, T> {
    make: Mk,
    tx: oneshot::Sender<Result<T, ProgramError>>,
}

/// A hand-written program that reports its own output, as its last act.
struct Reporting<P: Program<F>, F: Family> {
    program: P,
    slot: Rc<ResultSlot<P::Output>>,
}

impl<P: Program<F>, F: Family> Program<F> for Reporting<P, F> {
    type Output = ();

    fn resume(&mut self, cx: &mut Cx<'_, F>, event: Event<F>) -> Poll<()> {
        self.program
            .resume(cx, event)
            .map(|output| self.slot.output.set(Some(output)))
    }
}

impl<F, P, Mk> SpawnJob<F> for ProgramJob<Mk, P::Output>
where
    F: Family,
    Mk: FnOnce() -> P + Send + 'static,
    P: Program<F> + 'static,
    P::Output: Send + 'static,
{
    fn start(
        self: Box<Self>,
        engine: &mut Engine<(), F>,
        now: Time,
    ) -> (ProgramId, Rc<dyn Report>) {
        let slot = ResultSlot::new(self.tx);
        let program = engine.spawn(
            now,
            Reporting {
                program: (self.make)(),
                slot: slot.clone(),
            },
        );
        (program, slot)
    }

    fn refuse(self: Box<Self>, error: ProgramError) {
        let _ = self.tx.send(Err(error));
    }
}
