//! Property tests: random programs on one engine, driven by a random driver, keep every
//! guarantee written on [`Engine`]; and schedules keep theirs.
//!
//! A case is one to five random programs — async trees of sequence, join, race,
//! timeout, retry, sleep, effects and the odd foreign future, or hand-written step
//! lists — an engine seed and program timeout, and a list of driver choices: which
//! outstanding request to answer and how (ok, retryable, fatal, wrong type), when to
//! move time and by how much (early, exact, late, the end of time), when to abort a
//! program or move its deadline, when to answer an effect nobody waits for. When the
//! choices run out the driver answers everything `Ok` and jumps to each deadline until
//! every program has finished. A run yields a trace (every input with its outcome,
//! every output) and what the programs saw (timers, retry attempts); each test checks
//! one guarantee over it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use effectful::effect::{
    GenerateUuid, GetCurrentTime, Request, Response, SystemRequest, SystemResponse,
};
use effectful::{
    Cx, Delivery, EffectError, EffectId, Either, Elapsed, Engine, EngineConfig, Event, Fx, Output,
    Program, ProgramError, ProgramId, Rng, Schedule, Std, Time, Timestamp, decode, duration_nanos,
    join, join_all, race, race_all,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use uuid::Uuid;

type Out = Result<u64, EffectError>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn time_minus(t: Time, d: Duration) -> Time {
    Time::from_nanos(t.as_nanos().saturating_sub(duration_nanos(d)))
}

// ---------------------------------------------------------------------------------------
// Random programs
// ---------------------------------------------------------------------------------------

/// The effect a leaf asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeafKind {
    Clock,
    Uuid,
}

impl LeafKind {
    fn name(self) -> &'static str {
        match self {
            LeafKind::Clock => "System.GetCurrentTime",
            LeafKind::Uuid => "System.GenerateUuid",
        }
    }
}

/// A program, as a tree the interpreter below turns into async code.
#[derive(Clone, Debug)]
enum Node {
    /// One effect.
    Leaf(LeafKind),
    /// `n` effects at once with `Fx::perform_all`.
    All(LeafKind, usize),
    Sleep(Duration),
    /// One effect retried by a schedule that is bounded by `.recurs(n)`, with `n` beside it.
    Retry(Box<Schedule>, u32, LeafKind),
    /// Children one after the other, stopping at the first error.
    Seq(Vec<Node>),
    Join(Vec<Node>),
    Race(Vec<Node>),
    Timeout(Duration, Box<Node>),
    /// A future that is not an effect: the program ends with `ForeignAwait` once it
    /// waits for nothing else.
    Foreign,
}

/// What an attempt or a retry ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Retryable,
    Fatal,
}

fn outcome<T>(result: &Result<T, EffectError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(e) if e.retryable => Outcome::Retryable,
        Err(_) => Outcome::Fatal,
    }
}

/// What a program saw, in the order it saw it (all programs of a run share one log).
#[derive(Clone, Debug, PartialEq)]
enum Record {
    /// A sleep that completed, or a timeout that elapsed. `order` numbers sleeps in the
    /// order they were armed; `driven` says a timer completed it (in `handle_timeout`),
    /// not a zero duration at once.
    Timer {
        program: ProgramId,
        what: &'static str,
        order: Option<u64>,
        driven: bool,
        armed: Time,
        deadline: Time,
        fired: Time,
    },
    Retry(RetryRecord),
    /// A hand-written program was resumed for something it was not waiting for.
    Unexpected {
        program: ProgramId,
        what: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
struct RetryRecord {
    program: ProgramId,
    schedule: Schedule,
    recurs: u32,
    start: Time,
    attempts: Vec<Attempt>,
    /// `None` while running, or when the retry was dropped (lost a race, timed out, aborted).
    result: Option<Outcome>,
}

#[derive(Clone, Debug, PartialEq)]
struct Attempt {
    start: Time,
    end: Option<(Time, Outcome)>,
}

/// What the programs of one run saw.
#[derive(Debug, Default)]
struct Book {
    records: Vec<Record>,
    /// Sleeps armed so far.
    sleeps: u64,
}

impl Book {
    /// Numbers a timer about to be armed.
    fn arm(log: &Log) -> u64 {
        let mut book = log.borrow_mut();
        book.sleeps += 1;
        book.sleeps
    }
}

type Log = Rc<RefCell<Book>>;

fn mix(acc: u64, v: u64) -> u64 {
    acc.wrapping_mul(31).wrapping_add(v)
}

async fn perform(fx: &Fx, kind: LeafKind) -> Out {
    match kind {
        LeafKind::Clock => fx
            .perform(GetCurrentTime {})
            .await
            .map(|t| t.unix_micros() as u64),
        LeafKind::Uuid => fx
            .perform(GenerateUuid {})
            .await
            .map(|u| u.as_u128() as u64),
    }
}

fn record_timer(
    fx: &Fx,
    log: &Log,
    what: &'static str,
    order: Option<u64>,
    armed: Time,
    d: Duration,
) {
    let record = Record::Timer {
        program: fx.program(),
        what,
        order,
        // Saturated at `Time::MAX`, a sleep is due at once and arms no timer.
        driven: armed + d > armed,
        armed,
        deadline: armed + d,
        fired: fx.now(),
    };
    log.borrow_mut().records.push(record);
}

fn with_retry<T>(log: &Log, index: usize, f: impl FnOnce(&mut RetryRecord) -> T) -> T {
    match &mut log.borrow_mut().records[index] {
        Record::Retry(r) => f(r),
        other => panic!("record {index} is not a retry: {other:?}"),
    }
}

async fn retry(fx: &Fx, schedule: &Schedule, recurs: u32, kind: LeafKind, log: &Log) -> Out {
    let index = {
        let records = &mut log.borrow_mut().records;
        records.push(Record::Retry(RetryRecord {
            program: fx.program(),
            schedule: schedule.clone(),
            recurs,
            start: fx.now(),
            attempts: Vec::new(),
            result: None,
        }));
        records.len() - 1
    };
    let result = fx
        .retry_with(schedule, move || async move {
            let attempt = with_retry(log, index, |r| {
                r.attempts.push(Attempt {
                    start: fx.now(),
                    end: None,
                });
                r.attempts.len() - 1
            });
            let result = perform(fx, kind).await;
            with_retry(log, index, |r| {
                r.attempts[attempt].end = Some((fx.now(), outcome(&result)))
            });
            result
        })
        .await;
    with_retry(log, index, |r| r.result = Some(outcome(&result)));
    result
}

type Boxed<'a> = Pin<Box<dyn Future<Output = Out> + 'a>>;

/// The tree as an async program.
fn interpret<'a>(fx: &'a Fx, node: &'a Node, log: &'a Log) -> Boxed<'a> {
    Box::pin(async move {
        match node {
            Node::Leaf(kind) => perform(fx, *kind).await,
            Node::Foreign => std::future::pending().await,
            Node::All(LeafKind::Clock, n) => fx
                .perform_all((0..*n).map(|_| GetCurrentTime {}))
                .await
                .into_iter()
                .try_fold(0, |acc, r| Ok(mix(acc, r?.unix_micros() as u64))),
            Node::All(LeafKind::Uuid, n) => fx
                .perform_all((0..*n).map(|_| GenerateUuid {}))
                .await
                .into_iter()
                .try_fold(0, |acc, r| Ok(mix(acc, r?.as_u128() as u64))),
            Node::Sleep(d) => {
                let armed = fx.now();
                let order = Book::arm(log);
                // The sleep arms its timer on its first poll, right here: no other
                // timer is armed in between.
                fx.sleep(*d).await;
                record_timer(fx, log, "sleep", Some(order), armed, *d);
                Ok(fx.now().as_nanos())
            }
            Node::Retry(schedule, recurs, kind) => retry(fx, schedule, *recurs, *kind, log).await,
            Node::Seq(children) => {
                let mut acc = 0;
                for child in children {
                    acc = mix(acc, interpret(fx, child, log).await?);
                }
                Ok(acc)
            }
            Node::Join(children) if children.len() == 2 => {
                let (a, b) = join(
                    interpret(fx, &children[0], log),
                    interpret(fx, &children[1], log),
                )
                .await;
                Ok(mix(a?, b?))
            }
            Node::Join(children) => join_all(children.iter().map(|c| interpret(fx, c, log)))
                .await
                .into_iter()
                .try_fold(0, |acc, r| Ok(mix(acc, r?))),
            Node::Race(children) if children.len() == 2 => {
                match race(
                    interpret(fx, &children[0], log),
                    interpret(fx, &children[1], log),
                )
                .await
                {
                    Either::Left(a) => a,
                    Either::Right(b) => b.map(|v| mix(v, 1)),
                }
            }
            Node::Race(children) => {
                let (index, result) =
                    race_all(children.iter().map(|c| interpret(fx, c, log))).await;
                result.map(|v| mix(v, index as u64))
            }
            Node::Timeout(d, child) => {
                let armed = fx.now();
                match fx.timeout(*d, interpret(fx, child, log)).await {
                    Ok(result) => result,
                    Err(Elapsed) => {
                        record_timer(fx, log, "timeout", None, armed, *d);
                        Err(EffectError::timeout("Test.Timeout", format!("{d:?}")))
                    }
                }
            }
        }
    })
}

/// One step of a hand-written program.
#[derive(Clone, Copy, Debug)]
enum HandStep {
    Effect(LeafKind),
    Sleep(Duration),
    /// An effect and a timer at once: the first to complete wins, the other is cancelled.
    Race(LeafKind, Duration),
}

/// A program of a case: async (a tree) or hand-written (a list of steps).
#[derive(Clone, Debug)]
enum Prog {
    Async(Node),
    Hand(Vec<HandStep>),
}

/// A hand-written program: its steps one after the other, through [`Cx`].
struct Hand {
    steps: Vec<HandStep>,
    next: usize,
    effect: Option<(EffectId, LeafKind)>,
    /// The timer, when it was armed, its deadline and its arm order.
    timer: Option<(EffectId, Time, Time, u64)>,
    acc: u64,
    log: Log,
}

fn value_of(kind: LeafKind, response: Response) -> Out {
    match kind {
        LeafKind::Clock => decode::<Std, GetCurrentTime>(response).map(|t| t.unix_micros() as u64),
        LeafKind::Uuid => decode::<Std, GenerateUuid>(response).map(|u| u.as_u128() as u64),
    }
}

impl Hand {
    fn unexpected(&self, cx: &Cx<'_>, what: String) {
        let program = cx.program();
        self.log
            .borrow_mut()
            .records
            .push(Record::Unexpected { program, what });
    }

    fn arm(&mut self, cx: &mut Cx<'_>, d: Duration) {
        let order = Book::arm(&self.log);
        let armed = cx.now();
        let id = cx.sleep(d);
        self.timer = Some((id, armed, armed + d, order));
    }
}

impl Program for Hand {
    type Output = Out;

    fn resume(&mut self, cx: &mut Cx<'_>, event: Event) -> Poll<Out> {
        match event {
            Event::Start => {}
            Event::Response { id, result } => match self.effect.take() {
                Some((waiting, kind)) if waiting == id => {
                    if let Some((timer, ..)) = self.timer.take() {
                        cx.cancel(timer);
                    }
                    match result.and_then(|response| value_of(kind, response)) {
                        Ok(v) => self.acc = mix(self.acc, v),
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                other => {
                    self.effect = other;
                    self.unexpected(cx, format!("a response to {id:?}"));
                }
            },
            Event::Timer { id } => match self.timer.take() {
                Some((timer, armed, deadline, order)) if timer == id => {
                    let record = Record::Timer {
                        program: cx.program(),
                        what: "hand-written sleep",
                        order: Some(order),
                        driven: true,
                        armed,
                        deadline,
                        fired: cx.now(),
                    };
                    self.log.borrow_mut().records.push(record);
                    if let Some((effect, _)) = self.effect.take() {
                        cx.cancel(effect);
                    }
                }
                other => {
                    self.timer = other;
                    self.unexpected(cx, format!("the timer {id:?}"));
                }
            },
        }
        if self.effect.is_some() || self.timer.is_some() {
            return Poll::Pending;
        }
        let Some(step) = self.steps.get(self.next).copied() else {
            return Poll::Ready(Ok(self.acc));
        };
        self.next += 1;
        match step {
            HandStep::Effect(kind) => self.effect = Some((cx.request(request(kind)), kind)),
            HandStep::Sleep(d) => self.arm(cx, d),
            HandStep::Race(kind, d) => {
                self.effect = Some((cx.request(request(kind)), kind));
                self.arm(cx, d);
            }
        }
        Poll::Pending
    }
}

fn request(kind: LeafKind) -> Request {
    match kind {
        LeafKind::Clock => Request::System(SystemRequest::GetCurrentTime(GetCurrentTime {})),
        LeafKind::Uuid => Request::System(SystemRequest::GenerateUuid(GenerateUuid {})),
    }
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// Any schedule the combinators can build, bounded or not.
fn schedule_strategy() -> impl Strategy<Value = Schedule> {
    let delay = || (0u64..=20).prop_map(ms);
    let fraction = prop_oneof![Just(0.0), Just(1.0), 0.0f64..=1.0];
    let base = prop_oneof![
        delay().prop_map(Schedule::exponential),
        delay().prop_map(Schedule::spaced),
        delay().prop_map(Schedule::fixed),
        (0u32..=4).prop_map(Schedule::recurs_only),
    ];
    base.prop_recursive(3, 8, 2, move |inner| {
        prop_oneof![
            (inner.clone(), fraction.clone()).prop_map(|(s, f)| s.jittered(f)),
            (inner.clone(), delay()).prop_map(|(s, max)| s.max_delay(max)),
            (inner.clone(), (0u64..=100).prop_map(ms)).prop_map(|(s, limit)| s.up_to(limit)),
            (inner.clone(), 0u32..=4).prop_map(|(s, n)| s.recurs(n)),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| a.and(b)),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| a.or(b)),
            (inner.clone(), inner).prop_map(|(a, b)| a.and_then(b)),
        ]
    })
}

fn leaf_kind() -> impl Strategy<Value = LeafKind> {
    prop_oneof![Just(LeafKind::Clock), Just(LeafKind::Uuid)]
}

/// Program trees of depth at most 4 and up to about 40 nodes.
fn node_strategy() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        8 => leaf_kind().prop_map(Node::Leaf),
        2 => (leaf_kind(), 0usize..=3).prop_map(|(k, n)| Node::All(k, n)),
        4 => (0u64..=50).prop_map(|d| Node::Sleep(ms(d))),
        1 => Just(Node::Foreign),
        4 => (schedule_strategy(), 0u32..=4, leaf_kind())
            .prop_map(|(s, n, k)| Node::Retry(Box::new(s.recurs(n)), n, k)),
    ];
    leaf.prop_recursive(4, 40, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 1..=4).prop_map(Node::Seq),
            vec(inner.clone(), 1..=4).prop_map(Node::Join),
            vec(inner.clone(), 1..=4).prop_map(Node::Race),
            ((0u64..=60).prop_map(ms), inner).prop_map(|(d, n)| Node::Timeout(d, Box::new(n))),
        ]
    })
}

fn hand_strategy() -> impl Strategy<Value = Vec<HandStep>> {
    let d = || (0u64..=50).prop_map(ms);
    let step = prop_oneof![
        leaf_kind().prop_map(HandStep::Effect),
        d().prop_map(HandStep::Sleep),
        (leaf_kind(), d()).prop_map(|(k, d)| HandStep::Race(k, d)),
    ];
    vec(step, 0..=6)
}

fn prog_strategy() -> impl Strategy<Value = Prog> {
    prop_oneof![
        4 => node_strategy().prop_map(Prog::Async),
        1 => hand_strategy().prop_map(Prog::Hand),
    ]
}

/// Everything a run depends on.
#[derive(Clone, Debug)]
struct Case {
    seed: u64,
    program_timeout: Option<Duration>,
    /// The engine's default per-effect time limit.
    effect_timeout: Option<Duration>,
    programs: Vec<Prog>,
    /// The driver's choices, decoded by [`Driver::step`]; past the end it plays safe.
    choices: Vec<u32>,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        proptest::option::of((1u64..=300).prop_map(ms)),
        proptest::option::of((0u64..=300).prop_map(ms)),
        vec(prog_strategy(), 1..=5),
        vec(any::<u32>(), 0..300),
    )
        .prop_map(
            |(seed, program_timeout, effect_timeout, programs, choices)| Case {
                seed,
                program_timeout,
                effect_timeout,
                programs,
                choices,
            },
        )
}

// ---------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------

/// How the driver answers a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    Retryable,
    Fatal,
    /// The response of the other effect (a protocol error in the program, not retryable).
    WrongType,
}

/// One entry of a run's trace: the driver's inputs (with what they returned) and the
/// engine's outputs, in order. The outputs after an input are the ones it caused.
#[derive(Clone, Debug, PartialEq)]
enum Ev {
    Spawn {
        program: ProgramId,
        at: Time,
    },
    Respond {
        id: EffectId,
        answer: Answer,
        at: Time,
        delivery: Delivery,
    },
    /// `handle_timeout(asked)`; `effective` is the `now` the engine used (it never goes
    /// back); `due_*` are `poll_timeout()` before and after; `outputs` how many it caused.
    Timeout {
        asked: Time,
        effective: Time,
        due_before: Option<Time>,
        due_after: Option<Time>,
        outputs: usize,
    },
    Abort {
        program: ProgramId,
        was_finished: bool,
        accepted: bool,
    },
    SetDeadline {
        program: ProgramId,
        deadline: Option<Time>,
        was_finished: bool,
        accepted: bool,
    },
    Request {
        id: EffectId,
        kind: LeafKind,
    },
    Cancel {
        id: EffectId,
    },
    Finished {
        program: ProgramId,
        result: Result<Out, ProgramError>,
        now: Time,
    },
}

impl Ev {
    fn is_output(&self) -> bool {
        matches!(
            self,
            Ev::Request { .. } | Ev::Cancel { .. } | Ev::Finished { .. }
        )
    }
}

/// Everything a run produced.
#[derive(Debug, PartialEq)]
struct Run {
    events: Vec<Ev>,
    /// `Debug` of every output, for the determinism check.
    raw: Vec<String>,
    records: Vec<Record>,
    steps: usize,
    /// Live programs were left with nothing to answer and no timer, or the step bound hit.
    hung: bool,
    programs_left: usize,
    due_at_end: Option<Time>,
    /// Programs still running after a `handle_timeout` at or past their deadline.
    missed_deadlines: Vec<(ProgramId, Time)>,
}

const MAX_STEPS: usize = 5_000;

struct Driver<'c> {
    case: &'c Case,
    engine: Engine<Out>,
    log: Log,
    now: Time,
    events: Vec<Ev>,
    raw: Vec<String>,
    /// Requests the driver has not answered and the engine has not cancelled, in issue order.
    outstanding: Vec<(EffectId, LeafKind)>,
    /// Ids answered or cancelled.
    closed: Vec<EffectId>,
    spawned: Vec<(ProgramId, Time)>,
    /// Each program's deadline as the driver set it.
    deadlines: BTreeMap<ProgramId, Option<Time>>,
    finished: HashSet<ProgramId>,
    next_program: usize,
    uuids: u128,
    missed_deadlines: Vec<(ProgramId, Time)>,
}

impl<'c> Driver<'c> {
    fn new(case: &'c Case) -> Self {
        let config = EngineConfig {
            seed: case.seed,
            program_timeout: case.program_timeout,
            effect_timeout: case.effect_timeout,
        };
        Driver {
            case,
            engine: Engine::new(config),
            log: Log::default(),
            now: Time::ZERO,
            events: Vec::new(),
            raw: Vec::new(),
            outstanding: Vec::new(),
            closed: Vec::new(),
            spawned: Vec::new(),
            deadlines: BTreeMap::new(),
            finished: HashSet::new(),
            next_program: 0,
            uuids: 0,
            missed_deadlines: Vec::new(),
        }
    }

    fn run(mut self) -> Run {
        self.spawn();
        let mut steps = 0;
        let mut hung = false;
        while self.next_program < self.case.programs.len()
            || self.finished.len() < self.spawned.len()
        {
            if steps == MAX_STEPS {
                hung = true;
                break;
            }
            let choice = self.case.choices.get(steps).copied();
            steps += 1;
            if !self.step(choice) {
                hung = true;
                break;
            }
        }
        let programs_left = self.engine.programs();
        let due_at_end = self.engine.poll_timeout();
        let records = self.log.borrow().records.clone();
        Run {
            events: self.events,
            raw: self.raw,
            records,
            steps,
            hung,
            programs_left,
            due_at_end,
            missed_deadlines: self.missed_deadlines,
        }
    }

    /// One driver action chosen by `choice`; `false` when nothing at all can be done.
    fn step(&mut self, choice: Option<u32>) -> bool {
        let Some(choice) = choice else {
            return self.play_safe();
        };
        let (op, arg) = (choice % 16, choice / 16);
        match op {
            0..=6 if !self.outstanding.is_empty() => {
                let index = arg as usize % self.outstanding.len();
                let answer = match (arg / 7) % 10 {
                    0..=5 => Answer::Ok,
                    6 | 7 => Answer::Retryable,
                    8 => Answer::Fatal,
                    _ => Answer::WrongType,
                };
                let at = match (arg / 70) % 4 {
                    // Time passes while the effect runs (timers may come due unhandled).
                    0 => {
                        self.now = self.now + ms(u64::from(arg % 7));
                        self.now
                    }
                    // A driver whose clock reading is behind the engine's.
                    1 => time_minus(self.now, ms(3)),
                    _ => self.now,
                };
                self.respond(index, answer, at);
            }
            7..=9 => {
                let base = self.engine.poll_timeout().unwrap_or(self.now);
                let asked = match arg % 3 {
                    0 => base,
                    1 => time_minus(base, ms(u64::from(1 + arg / 3 % 5))),
                    // Rarely, the end of time: every timer fires, every sleep is due at once.
                    _ if arg / 3 % 16 == 15 => Time::MAX,
                    _ => base + ms(u64::from(arg / 3 % 20)),
                };
                self.timeout(asked);
            }
            10 => {
                let program = self.spawned[(arg / 3) as usize % self.spawned.len()].0;
                match arg % 3 {
                    0 => self.abort(program),
                    _ => {
                        let deadline = match arg / 3 % 8 {
                            0 => None,
                            1 => Some(time_minus(self.now, ms(5))),
                            n => Some(self.now + ms(u64::from(n) * 15)),
                        };
                        self.set_deadline(program, deadline);
                    }
                }
            }
            11 | 12 if !self.closed.is_empty() => {
                let id = self.closed[arg as usize % self.closed.len()];
                self.respond_to(id, LeafKind::Clock, Answer::Ok, self.now);
            }
            13 if !self.closed.is_empty() || !self.outstanding.is_empty() => self.forge(arg),
            14 | 15 if self.next_program < self.case.programs.len() => self.spawn(),
            _ => return self.play_safe(),
        }
        true
    }

    /// Answer the oldest request `Ok`, else start the next program, else jump to the
    /// next deadline.
    fn play_safe(&mut self) -> bool {
        if !self.outstanding.is_empty() {
            self.respond(0, Answer::Ok, self.now);
        } else if self.next_program < self.case.programs.len() {
            self.spawn();
        } else if let Some(due) = self.engine.poll_timeout() {
            self.timeout(due);
        } else {
            return false;
        }
        true
    }

    fn spawn(&mut self) {
        let log = self.log.clone();
        let program = match self.case.programs[self.next_program].clone() {
            Prog::Async(tree) => self.engine.spawn_async(self.now, move |fx| async move {
                interpret(&fx, &tree, &log).await
            }),
            Prog::Hand(steps) => self.engine.spawn(
                self.now,
                Hand {
                    steps,
                    next: 0,
                    effect: None,
                    timer: None,
                    acc: 0,
                    log,
                },
            ),
        };
        self.next_program += 1;
        let at = self.engine.now();
        self.spawned.push((program, at));
        let deadline = self.case.program_timeout.map(|t| at + t);
        self.deadlines.insert(program, deadline);
        self.events.push(Ev::Spawn { program, at });
        self.drain();
    }

    fn respond(&mut self, index: usize, answer: Answer, at: Time) {
        let (id, kind) = self.outstanding[index];
        self.respond_to(id, kind, answer, at);
    }

    fn respond_to(&mut self, id: EffectId, kind: LeafKind, answer: Answer, at: Time) {
        let response = match answer {
            Answer::Ok => Ok(self.response(kind, at)),
            Answer::WrongType => Ok(self.response(
                match kind {
                    LeafKind::Clock => LeafKind::Uuid,
                    LeafKind::Uuid => LeafKind::Clock,
                },
                at,
            )),
            Answer::Retryable => Err(EffectError::connection_lost(kind.name(), "reset by peer")),
            Answer::Fatal => Err(EffectError::websocket_closed(kind.name(), 1006, "gone")),
        };
        let delivery = self.engine.handle_response(at, id, response);
        self.events.push(Ev::Respond {
            id,
            answer,
            at,
            delivery,
        });
        if let Some(position) = self.outstanding.iter().position(|(o, _)| *o == id) {
            self.outstanding.remove(position);
            self.closed.push(id);
        }
        self.drain();
    }

    fn response(&mut self, kind: LeafKind, at: Time) -> Response {
        match kind {
            LeafKind::Clock => {
                let micros = Timestamp::from_unix_micros((at.as_nanos() / 1_000) as i64);
                Response::System(SystemResponse::GetCurrentTime(micros))
            }
            LeafKind::Uuid => {
                self.uuids += 1;
                Response::System(SystemResponse::GenerateUuid(Uuid::from_u128(self.uuids)))
            }
        }
    }

    /// Answers an id the engine never issued: a known one with another slot,
    /// generation or program.
    fn forge(&mut self, arg: u32) {
        let known: Vec<EffectId> = self
            .closed
            .iter()
            .copied()
            .chain(self.outstanding.iter().map(|(id, _)| *id))
            .collect();
        let id = known[arg as usize % known.len()];
        let mut value = serde_json::to_value(id).expect("ids serialize");
        let bump = u64::from(1 + arg / 4 % 3);
        let field = match (arg / 12) % 4 {
            0 => &mut value["generation"],
            1 => &mut value["slot"],
            2 => &mut value["program"]["index"],
            _ => &mut value["program"]["generation"],
        };
        *field = serde_json::json!(field.as_u64().expect("ids are numbers") + bump);
        let forged: EffectId = serde_json::from_value(value).expect("a forged id deserializes");
        self.respond_to(forged, LeafKind::Uuid, Answer::Ok, self.now);
    }

    fn timeout(&mut self, asked: Time) {
        let due_before = self.engine.poll_timeout();
        let effective = asked.max(self.engine.now());
        self.engine.handle_timeout(asked);
        self.now = self.now.max(asked);
        let at = self.events.len();
        self.events.push(Ev::Timeout {
            asked,
            effective,
            due_before,
            due_after: None,
            outputs: 0,
        });
        let outputs = self.drain();
        let due_after = self.engine.poll_timeout();
        self.events[at] = Ev::Timeout {
            asked,
            effective,
            due_before,
            due_after,
            outputs,
        };
        for (program, deadline) in &self.deadlines {
            if !self.finished.contains(program) && deadline.is_some_and(|at| at <= effective) {
                self.missed_deadlines.push((*program, effective));
            }
        }
    }

    fn set_deadline(&mut self, program: ProgramId, deadline: Option<Time>) {
        let was_finished = self.finished.contains(&program);
        let accepted = self.engine.set_deadline(self.now, program, deadline);
        if accepted {
            self.deadlines.insert(program, deadline);
        }
        self.events.push(Ev::SetDeadline {
            program,
            deadline,
            was_finished,
            accepted,
        });
        self.drain();
    }

    fn abort(&mut self, program: ProgramId) {
        let was_finished = self.finished.contains(&program);
        let accepted = self.engine.abort(self.now, program);
        self.events.push(Ev::Abort {
            program,
            was_finished,
            accepted,
        });
        self.drain();
    }

    /// Takes every output (the drain rule); returns how many there were.
    fn drain(&mut self) -> usize {
        let mut count = 0;
        while let Some(output) = self.engine.poll_output() {
            count += 1;
            self.raw.push(format!("{output:?}"));
            match output {
                Output::Request { id, request } => {
                    let kind = match request {
                        Request::System(SystemRequest::GetCurrentTime(_)) => LeafKind::Clock,
                        Request::System(SystemRequest::GenerateUuid(_)) => LeafKind::Uuid,
                        other => {
                            panic!("the programs ask only for the time and uuids, not {other:?}")
                        }
                    };
                    self.outstanding.push((id, kind));
                    self.events.push(Ev::Request { id, kind });
                }
                Output::Cancel { id } => {
                    if let Some(position) = self.outstanding.iter().position(|(o, _)| *o == id) {
                        self.outstanding.remove(position);
                    }
                    self.closed.push(id);
                    self.events.push(Ev::Cancel { id });
                }
                Output::Finished { program, result } => {
                    self.finished.insert(program);
                    self.events.push(Ev::Finished {
                        program,
                        result,
                        now: self.engine.now(),
                    });
                }
            }
        }
        count
    }
}

fn run_case(case: &Case) -> Run {
    Driver::new(case).run()
}

// ---------------------------------------------------------------------------------------
// A model of schedules: their decisions without their random draws
// ---------------------------------------------------------------------------------------

/// Steps a schedule like [`Schedule::next`], but for each step gives the range its delay
/// can take whatever the random draws (`(lo, hi)` in nanoseconds), or `None` to stop.
/// Whether a schedule goes on never depends on its draws, so the model follows a real
/// run exactly given the same elapsed times.
struct Model<'s> {
    schedule: &'s Schedule,
    attempt: u32,
    switched: Vec<Option<(u32, Duration)>>,
}

impl<'s> Model<'s> {
    fn new(schedule: &'s Schedule) -> Self {
        Model {
            schedule,
            attempt: 0,
            switched: vec![None; and_then_nodes(schedule)],
        }
    }

    fn next(&mut self, elapsed: Duration) -> Option<(u64, u64)> {
        let mut node = 0;
        let bounds = decide(
            self.schedule,
            &mut self.switched,
            &mut node,
            self.attempt,
            elapsed,
        );
        if bounds.is_some() {
            self.attempt += 1;
        }
        bounds
    }
}

fn and_then_nodes(s: &Schedule) -> usize {
    match s {
        Schedule::Jittered { inner, .. } | Schedule::MaxDelay { inner, .. } => {
            and_then_nodes(inner)
        }
        Schedule::Both(a, b) | Schedule::Either(a, b) => and_then_nodes(a) + and_then_nodes(b),
        Schedule::AndThen(a, b) => 1 + and_then_nodes(a) + and_then_nodes(b),
        _ => 0,
    }
}

fn decide(
    s: &Schedule,
    switched: &mut [Option<(u32, Duration)>],
    node: &mut usize,
    attempt: u32,
    elapsed: Duration,
) -> Option<(u64, u64)> {
    match s {
        Schedule::Exponential { base, factor } => {
            let nanos = (duration_nanos(*base) as f64
                * factor.powi(attempt.min(i32::MAX as u32) as i32)) as u64;
            Some((nanos, nanos))
        }
        Schedule::Spaced(d) => Some((duration_nanos(*d), duration_nanos(*d))),
        Schedule::Fixed(period) => {
            let p = duration_nanos(*period);
            let nanos = if p == 0 {
                0
            } else {
                p - duration_nanos(elapsed) % p
            };
            Some((nanos, nanos))
        }
        Schedule::Recurs(n) => (attempt < *n).then_some((0, 0)),
        Schedule::UpTo(limit) => (elapsed < *limit).then_some((0, 0)),
        Schedule::Jittered { inner, fraction } => {
            let (lo, hi) = decide(inner, switched, node, attempt, elapsed)?;
            let f = if fraction.is_nan() {
                0.0
            } else {
                fraction.clamp(0.0, 1.0)
            };
            // The same float operations as the schedule, at the extremes of its draw.
            Some((
                (lo as f64 * (1.0 - f)) as u64,
                (hi as f64 * (1.0 - f + 2.0 * f)) as u64,
            ))
        }
        Schedule::MaxDelay { inner, max } => {
            let max = duration_nanos(*max);
            decide(inner, switched, node, attempt, elapsed)
                .map(|(lo, hi)| (lo.min(max), hi.min(max)))
        }
        Schedule::Both(a, b) => {
            let da = decide(a, switched, node, attempt, elapsed);
            let db = decide(b, switched, node, attempt, elapsed);
            let ((alo, ahi), (blo, bhi)) = (da?, db?);
            Some((alo.max(blo), ahi.max(bhi)))
        }
        Schedule::Either(a, b) => {
            let da = decide(a, switched, node, attempt, elapsed);
            let db = decide(b, switched, node, attempt, elapsed);
            match (da, db) {
                (Some((alo, ahi)), Some((blo, bhi))) => Some((alo.min(blo), ahi.min(bhi))),
                (x, y) => x.or(y),
            }
        }
        Schedule::AndThen(a, b) => {
            let me = *node;
            *node += 1;
            if switched[me].is_none() {
                let mut inner = *node;
                if let Some(bounds) = decide(a, switched, &mut inner, attempt, elapsed) {
                    *node += and_then_nodes(a) + and_then_nodes(b);
                    return Some(bounds);
                }
                switched[me] = Some((attempt, elapsed));
            }
            *node += and_then_nodes(a);
            let (at, since) = switched[me].unwrap_or((attempt, elapsed));
            decide(
                b,
                switched,
                node,
                attempt - at,
                elapsed.saturating_sub(since),
            )
        }
        other => panic!("the model does not know {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The invariants, as checks over a run
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdState {
    Outstanding,
    Answered,
    Cancelled,
}

/// Every request is answered (`Delivered`) once or cancelled once, never both; every
/// other answer is `Stale`; nothing is left outstanding once all programs are done.
fn check_requests(run: &Run) -> Result<(), TestCaseError> {
    let mut ids: HashMap<EffectId, IdState> = HashMap::new();
    for (i, ev) in run.events.iter().enumerate() {
        match ev {
            Ev::Request { id, .. } => {
                prop_assert!(
                    ids.insert(*id, IdState::Outstanding).is_none(),
                    "event {}: {:?} requested twice",
                    i,
                    id
                );
            }
            Ev::Cancel { id } => {
                let state = ids.get(id).copied();
                prop_assert_eq!(
                    state,
                    Some(IdState::Outstanding),
                    "event {}: cancel of {:?}",
                    i,
                    id
                );
                ids.insert(*id, IdState::Cancelled);
            }
            Ev::Respond { id, delivery, .. } => {
                let state = ids.get(id).copied();
                let expected = if state == Some(IdState::Outstanding) {
                    Delivery::Delivered
                } else {
                    Delivery::Stale
                };
                prop_assert_eq!(
                    *delivery,
                    expected,
                    "event {}: answer to {:?} in state {:?}",
                    i,
                    id,
                    state
                );
                if *delivery == Delivery::Delivered {
                    ids.insert(*id, IdState::Answered);
                }
            }
            _ => {}
        }
    }
    let left: Vec<_> = ids
        .iter()
        .filter(|(_, state)| **state == IdState::Outstanding)
        .collect();
    prop_assert!(
        left.is_empty(),
        "requests neither answered nor cancelled: {:?}",
        left
    );
    // Nor does an answer the engine called stale, or a cancelled timer, reach a program.
    let unexpected: Vec<&Record> = run
        .records
        .iter()
        .filter(|r| matches!(r, Record::Unexpected { .. }))
        .collect();
    prop_assert!(
        unexpected.is_empty(),
        "programs resumed for what they no longer wait for: {:?}",
        unexpected
    );
    Ok(())
}

/// Every spawned program finishes exactly once, asks for nothing afterwards, and the
/// engine ends empty; an abort is accepted exactly when the program still runs.
fn check_programs(run: &Run) -> Result<(), TestCaseError> {
    prop_assert!(!run.hung, "the run hung after {} steps", run.steps);
    let mut spawned = HashSet::new();
    let mut finished: HashMap<ProgramId, usize> = HashMap::new();
    for (i, ev) in run.events.iter().enumerate() {
        match ev {
            Ev::Spawn { program, .. } => prop_assert!(
                spawned.insert(*program),
                "event {}: {:?} spawned twice",
                i,
                program
            ),
            Ev::Finished { program, .. } => {
                prop_assert!(
                    spawned.contains(program),
                    "event {}: {:?} finished but was never spawned",
                    i,
                    program
                );
                let count = finished.entry(*program).or_default();
                *count += 1;
                prop_assert_eq!(*count, 1, "event {}: {:?} finished twice", i, program);
            }
            Ev::Request { id, .. } | Ev::Cancel { id } if finished.contains_key(&id.program()) => {
                prop_assert!(false, "event {}: {:?} after its program finished", i, ev);
            }
            Ev::Abort {
                program,
                was_finished,
                accepted,
            } => {
                prop_assert_eq!(
                    *accepted,
                    !*was_finished,
                    "event {}: abort of {:?}",
                    i,
                    program
                );
                let outputs: Vec<&Ev> = run.events[i + 1..]
                    .iter()
                    .take_while(|e| e.is_output())
                    .collect();
                if *accepted {
                    let last = outputs.last();
                    prop_assert!(
                        matches!(last, Some(Ev::Finished { program: p, result: Err(ProgramError::Aborted), .. }) if p == program),
                        "event {}: an accepted abort ends with the program's Finished, got {:?}",
                        i,
                        outputs
                    );
                } else {
                    prop_assert!(
                        outputs.is_empty(),
                        "event {}: a refused abort did something: {:?}",
                        i,
                        outputs
                    );
                }
            }
            Ev::SetDeadline {
                program,
                was_finished,
                accepted,
                ..
            } => {
                prop_assert_eq!(
                    *accepted,
                    !*was_finished,
                    "event {}: set_deadline of {:?}",
                    i,
                    program
                );
                prop_assert!(
                    !run.events.get(i + 1).is_some_and(Ev::is_output),
                    "event {}: set_deadline did something at once",
                    i
                );
            }
            _ => {}
        }
    }
    for program in &spawned {
        prop_assert_eq!(
            finished.get(program).copied(),
            Some(1),
            "{:?} never finished",
            program
        );
    }
    prop_assert_eq!(run.programs_left, 0);
    prop_assert_eq!(run.due_at_end, None);
    Ok(())
}

/// Timers never fire early and fire in deadline order, ties in the order they were
/// armed; `handle_timeout` does nothing before the next deadline and everything due at
/// it; program deadlines are spawn time plus the program timeout, and never missed.
fn check_timers(run: &Run, program_timeout: Option<Duration>) -> Result<(), TestCaseError> {
    let mut last_deadline: Option<Time> = None;
    let mut last_sleep: Option<(Time, u64)> = None;
    for record in &run.records {
        let Record::Timer {
            order,
            driven,
            deadline,
            fired,
            ..
        } = record
        else {
            continue;
        };
        prop_assert!(fired >= deadline, "fired early: {:?}", record);
        if !driven {
            continue; // an async zero-length sleep completes at once, without a timer
        }
        // Timers complete only in `handle_timeout`, in deadline order.
        if let Some(last) = last_deadline {
            prop_assert!(
                *deadline >= last,
                "fired out of order after a deadline of {:?}: {:?}",
                last,
                record
            );
        }
        last_deadline = Some(*deadline);
        if let Some(order) = *order {
            if let Some((at, before)) = last_sleep.filter(|(at, _)| at == deadline) {
                prop_assert!(
                    order > before,
                    "sleeps due at {:?} fired against the order they were armed: {:?}",
                    at,
                    record
                );
            }
            last_sleep = Some((*deadline, order));
        }
    }
    // Each program's deadline: spawn time plus the program timeout, until set otherwise.
    let mut deadlines: HashMap<ProgramId, Option<Time>> = HashMap::new();
    for (i, ev) in run.events.iter().enumerate() {
        match ev {
            Ev::Spawn { program, at } => {
                deadlines.insert(*program, program_timeout.map(|t| *at + t));
            }
            Ev::SetDeadline {
                program,
                deadline,
                accepted: true,
                ..
            } => {
                deadlines.insert(*program, *deadline);
            }
            Ev::Timeout {
                effective,
                due_before,
                due_after,
                outputs,
                ..
            } => {
                if due_before.is_none_or(|due| *effective < due) {
                    prop_assert_eq!(
                        *outputs,
                        0,
                        "event {}: an early handle_timeout did something: {:?}",
                        i,
                        ev
                    );
                }
                // Timers due at the call fire in it; a timer a program arms during the
                // call waits for the next one even if already due (a zero sleep), so
                // a timer can be left due only by a call that had timers to fire.
                prop_assert!(
                    due_after.is_none_or(|due| due > *effective)
                        || due_before.is_some_and(|due| due <= *effective),
                    "event {}: left a due timer it did not arm: {:?}",
                    i,
                    ev
                );
            }
            Ev::Finished {
                program,
                result: Err(ProgramError::DeadlineExceeded { deadline }),
                now,
            } => {
                prop_assert_eq!(
                    Some(*deadline),
                    deadlines.get(program).copied().flatten(),
                    "event {}: not the deadline the program was given: {:?}",
                    i,
                    ev
                );
                prop_assert!(
                    now >= deadline,
                    "event {}: the deadline fired early: {:?}",
                    i,
                    ev
                );
            }
            _ => {}
        }
    }
    prop_assert!(
        run.missed_deadlines.is_empty(),
        "programs outlived their deadline: {:?}",
        run.missed_deadlines
    );
    Ok(())
}

/// Each retry makes at most `recurs + 1` attempts, goes on exactly when its schedule
/// does, and waits at least the shortest delay the schedule could have drawn.
fn check_retries(run: &Run) -> Result<(), TestCaseError> {
    for record in &run.records {
        let Record::Retry(r) = record else { continue };
        prop_assert!(
            r.attempts.len() as u64 <= u64::from(r.recurs) + 1,
            "too many attempts: {:?}",
            r
        );
        if let Some(first) = r.attempts.first() {
            prop_assert_eq!(
                first.start,
                r.start,
                "the first attempt waits for nothing: {:?}",
                r
            );
        }
        if r.result.is_some() {
            prop_assert!(
                r.attempts.last().is_some_and(|a| a.end.is_some()),
                "a result without an attempt: {:?}",
                r
            );
        }
        let mut model = Model::new(&r.schedule);
        for (i, attempt) in r.attempts.iter().enumerate() {
            let next = r.attempts.get(i + 1);
            let Some((end, outcome)) = attempt.end else {
                prop_assert!(
                    next.is_none() && r.result.is_none(),
                    "attempt {} never ended: {:?}",
                    i,
                    r
                );
                break;
            };
            match outcome {
                Outcome::Ok | Outcome::Fatal => {
                    prop_assert!(
                        next.is_none(),
                        "attempt {} ended {:?} but was retried: {:?}",
                        i,
                        outcome,
                        r
                    );
                    prop_assert!(r.result.is_none_or(|result| result == outcome), "{:?}", r);
                }
                Outcome::Retryable => match (model.next(end - r.start), next) {
                    (None, next) => {
                        prop_assert!(
                            next.is_none(),
                            "retried after the schedule stopped: {:?}",
                            r
                        );
                        prop_assert_eq!(
                            r.result,
                            Some(Outcome::Retryable),
                            "gave up without saying so: {:?}",
                            r
                        );
                    }
                    (Some((lo, hi)), Some(next)) => {
                        let gap = duration_nanos(next.start - end);
                        // At the end of time a sleep is due at once: time saturates.
                        prop_assert!(
                            next.start >= end + Duration::from_nanos(lo),
                            "attempt {} came {} ns after a failure, the schedule allows {}..={}: {:?}",
                            i + 1,
                            gap,
                            lo,
                            hi,
                            r
                        );
                        // A zero delay yields to the driver: the next attempt starts
                        // at the driver's next `handle_timeout`, whenever it calls it
                        // (see `a_zero_delay_retry_yields_between_attempts`).
                        let _ = hi;
                    }
                    // Dropped while waiting for the next attempt.
                    (Some(_), None) => prop_assert!(
                        r.result.is_none(),
                        "stopped while the schedule goes on: {:?}",
                        r
                    ),
                },
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Engine properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn every_request_is_answered_once_or_cancelled_once_and_late_answers_are_stale(case in case_strategy()) {
        check_requests(&run_case(&case))?;
    }

    #[test]
    fn every_program_finishes_exactly_once_and_the_engine_ends_empty(case in case_strategy()) {
        check_programs(&run_case(&case))?;
    }

    #[test]
    fn timers_fire_in_deadline_order_and_never_early(case in case_strategy()) {
        check_timers(&run_case(&case), case.program_timeout)?;
    }

    #[test]
    fn retries_stay_within_their_schedule(case in case_strategy()) {
        check_retries(&run_case(&case))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_same_case_gives_the_same_trace(case in case_strategy()) {
        let first = run_case(&case);
        let second = run_case(&case);
        prop_assert_eq!(first, second);
    }
}

/// Guards the properties above against passing vacuously: over a fixed set of cases the
/// driver reaches every kind of event they are about.
#[test]
fn the_random_driver_reaches_every_kind_of_event() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = case_strategy();
    let mut seen: HashMap<&'static str, usize> = HashMap::new();
    for _ in 0..200 {
        let case = strategy
            .new_tree(&mut runner)
            .expect("cases generate")
            .current();
        let run = run_case(&case);
        let mut see = |what: &'static str| *seen.entry(what).or_default() += 1;
        for ev in &run.events {
            match ev {
                Ev::Respond {
                    delivery: Delivery::Stale,
                    ..
                } => see("stale answer"),
                Ev::Respond {
                    answer: Answer::Retryable,
                    delivery: Delivery::Delivered,
                    ..
                } => see("retryable error"),
                Ev::Respond {
                    answer: Answer::WrongType,
                    delivery: Delivery::Delivered,
                    ..
                } => see("wrong response"),
                Ev::Cancel { .. } => see("cancel"),
                Ev::Abort { accepted: true, .. } => see("abort"),
                Ev::Abort {
                    accepted: false, ..
                } => see("refused abort"),
                Ev::Timeout { outputs: 0, .. } => see("quiet handle_timeout"),
                Ev::SetDeadline { accepted: true, .. } => see("set deadline"),
                Ev::Timeout {
                    asked: Time::MAX, ..
                } => see("end of time"),
                Ev::Finished {
                    result: Err(ProgramError::ForeignAwait),
                    ..
                } => see("foreign await"),
                Ev::Finished {
                    result: Err(ProgramError::DeadlineExceeded { .. }),
                    ..
                } => see("deadline"),
                Ev::Finished {
                    result: Ok(Ok(_)), ..
                } => see("success"),
                Ev::Finished {
                    result: Ok(Err(_)), ..
                } => see("failure"),
                _ => {}
            }
        }
        for record in &run.records {
            match record {
                Record::Timer {
                    what: "timeout", ..
                } => see("timeout elapsed"),
                Record::Timer {
                    what: "hand-written sleep",
                    ..
                } => see("hand-written sleep"),
                Record::Timer { .. } => see("sleep"),
                Record::Retry(r) if r.attempts.len() > 1 => see("retried"),
                Record::Retry(r) if r.result == Some(Outcome::Retryable) => see("retry gave up"),
                Record::Retry(_) | Record::Unexpected { .. } => {}
            }
        }
    }
    for what in [
        "stale answer",
        "retryable error",
        "wrong response",
        "cancel",
        "abort",
        "refused abort",
        "quiet handle_timeout",
        "set deadline",
        "end of time",
        "foreign await",
        "hand-written sleep",
        "deadline",
        "success",
        "failure",
        "timeout elapsed",
        "sleep",
        "retried",
        "retry gave up",
    ] {
        assert!(
            seen.get(what).copied().unwrap_or(0) > 0,
            "no {what} in 200 cases: {seen:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Regressions found by the properties above
// ---------------------------------------------------------------------------------------

/// Found by `every_program_finishes_exactly_once_and_the_engine_ends_empty`: the loser
/// of a race is polled (and counts as waiting) before the winner completes and the loser
/// is dropped; the program then waits only on a foreign future and used to hang,
/// neither finished nor waiting for anything the driver could answer.
#[test]
fn a_foreign_future_left_alone_by_a_race_is_caught_instead_of_hanging() {
    let mut engine: Engine<Out> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |fx| async move {
        let winner = async {
            match race(perform(&fx, LeafKind::Clock), perform(&fx, LeafKind::Uuid)).await {
                Either::Left(v) | Either::Right(v) => v,
            }
        };
        let (value, ()) = join(winner, std::future::pending::<()>()).await;
        value
    });
    let mut driver: Vec<Output<Out>> = std::iter::from_fn(|| engine.poll_output()).collect();
    let ids: Vec<EffectId> = driver
        .drain(..)
        .filter_map(|o| match o {
            Output::Request { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 2);
    let uuid = Response::System(SystemResponse::GenerateUuid(Uuid::nil()));
    assert_eq!(
        engine.handle_response(Time::ZERO, ids[1], Ok(uuid)),
        Delivery::Delivered
    );
    let outputs: Vec<String> = std::iter::from_fn(|| engine.poll_output())
        .map(|o| format!("{o:?}"))
        .collect();
    assert_eq!(
        outputs,
        vec![
            format!("{:?}", Output::<Out>::Cancel { id: ids[0] }),
            format!(
                "{:?}",
                Output::<Out>::Finished {
                    program: ids[0].program(),
                    result: Err(ProgramError::ForeignAwait)
                }
            ),
        ]
    );
    assert_eq!(engine.programs(), 0);
    assert_eq!(engine.poll_timeout(), None);
}

// ---------------------------------------------------------------------------------------
// Schedule properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn recurs_n_allows_at_most_n_retries(schedule in schedule_strategy(), n in 0u32..=8, start in 0u64..=200, seed: u64) {
        prop_assert!(schedule.recurs(n).delays(ms(start), seed).len() <= n as usize);
        prop_assert_eq!(Schedule::recurs_only(n).delays(ms(start), seed), vec![Duration::ZERO; n as usize]);
    }

    #[test]
    fn jittered_delays_stay_within_their_fraction(
        base in 0u64..=1_000_000_000,
        exponential: bool,
        fraction in prop_oneof![Just(0.0), Just(1.0), 0.0f64..=1.0],
        n in 0u32..=16,
        seed: u64,
    ) {
        let d = Duration::from_nanos(base);
        let plain = if exponential { Schedule::exponential(d) } else { Schedule::spaced(d) };
        let jittered = plain.clone().jittered(fraction).recurs(n);
        let delays = jittered.delays(Duration::ZERO, seed);
        let unjittered = plain.recurs(n).delays(Duration::ZERO, seed);
        prop_assert_eq!(delays.len(), unjittered.len());
        for (delay, d) in delays.iter().zip(&unjittered) {
            let (delay, d) = (duration_nanos(*delay) as f64, duration_nanos(*d) as f64);
            prop_assert!(delay >= (d * (1.0 - fraction)).floor() - 1.0, "{} below {} - {}", delay, d, fraction);
            prop_assert!(delay <= (d * (1.0 + fraction)).ceil() + 1.0, "{} above {} + {}", delay, d, fraction);
        }
        prop_assert_eq!(delays, jittered.delays(Duration::ZERO, seed), "the draws come from the seed");
    }

    #[test]
    fn up_to_stops_once_the_elapsed_time_reaches_the_limit(
        schedule in schedule_strategy(),
        n in 0u32..=30,
        limit in (0u64..=200).prop_map(ms),
        start in (0u64..=50).prop_map(ms),
        step in (1u64..=50).prop_map(ms),
        seed: u64,
    ) {
        let plain = schedule.clone().recurs(n).delays(start, seed);
        let limited = schedule.recurs(n).up_to(limit).delays(start, seed);
        // Up-to draws nothing, so it cuts the same run short and changes nothing else.
        prop_assert!(limited.len() <= plain.len());
        prop_assert_eq!(&limited[..], &plain[..limited.len()]);
        let mut elapsed = start;
        for delay in &limited {
            prop_assert!(elapsed < limit, "a retry at {:?} with a limit of {:?}", elapsed, limit);
            elapsed += *delay;
        }
        if limited.len() < plain.len() {
            prop_assert!(elapsed >= limit, "stopped at {:?}, before the limit of {:?}", elapsed, limit);
        }
        let spaced = Schedule::spaced(step).up_to(limit).delays(Duration::ZERO, seed);
        prop_assert_eq!(spaced.len() as u128, limit.as_nanos().div_ceil(step.as_nanos()));
    }

    #[test]
    fn schedule_steps_fall_within_the_bounds_of_their_draws(
        schedule in schedule_strategy(),
        n in 0u32..=10,
        work in vec((0u64..=30).prop_map(ms), 12),
        seed: u64,
    ) {
        let schedule = schedule.recurs(n);
        let mut state = schedule.start();
        let mut rng = Rng::from_seed(seed);
        let mut model = Model::new(&schedule);
        let mut elapsed = Duration::ZERO;
        for extra in work {
            let real = schedule.next(&mut state, elapsed, &mut rng);
            match (real, model.next(elapsed)) {
                (None, None) => break,
                (Some(delay), Some((lo, hi))) => {
                    let delay_nanos = duration_nanos(delay);
                    prop_assert!(lo <= delay_nanos && delay_nanos <= hi, "{:?} outside {}..={} at {:?}", delay, lo, hi, elapsed);
                    // The next attempt fails after doing some work.
                    elapsed += delay + extra;
                }
                (real, model) => prop_assert!(false, "the schedule said {:?}, its bounds {:?}, at {:?}", real, model, elapsed),
            }
        }
    }
}
