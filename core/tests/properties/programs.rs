//! Random programs: async trees and hand-written step lists that record what they saw,
//! and the strategies that generate them and whole cases.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use effectful::effect::{GenerateUuid, GetCurrentTime, Request, Response, SystemRequest};
use effectful::{
    Cx, EffectError, EffectId, Either, Elapsed, Engine, Event, Fx, Program, ProgramId, Schedule,
    Std, Time, decode, join, join_all, race, race_all,
};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::schedules::{ms, schedule_strategy};

pub(crate) type Out = Result<u64, EffectError>;

/// The effect a leaf asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeafKind {
    Clock,
    Uuid,
}

impl LeafKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            LeafKind::Clock => "System.GetCurrentTime",
            LeafKind::Uuid => "System.GenerateUuid",
        }
    }
}

/// A program, as a tree the interpreter below turns into async code.
#[derive(Clone, Debug)]
pub(crate) enum Node {
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
pub(crate) enum Outcome {
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
pub(crate) enum Record {
    /// A sleep that completed, or a timeout that elapsed. `order` numbers sleeps in the
    /// order they were armed; `driven` says a timer completed it (in `handle_timeout`),
    /// not a zero duration at once.
    Timer {
        program: ProgramId,
        what: &'static str,
        order: Option<u64>,
        driven: bool,
        armed: Time,
        /// The stretch of answers without a time it was armed in (0: none): the
        /// input that ends the stretch moves its deadline on (`Run::shifts`).
        stretch: u64,
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
pub(crate) struct RetryRecord {
    pub(crate) program: ProgramId,
    pub(crate) schedule: Schedule,
    pub(crate) recurs: u32,
    pub(crate) start: Time,
    pub(crate) attempts: Vec<Attempt>,
    /// `None` while running, or when the retry was dropped (lost a race, timed out, aborted).
    pub(crate) result: Option<Outcome>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Attempt {
    pub(crate) start: Time,
    pub(crate) end: Option<(Time, Outcome)>,
}

/// What the programs of one run saw.
#[derive(Debug, Default)]
pub(crate) struct Book {
    pub(crate) records: Vec<Record>,
    /// Sleeps armed so far.
    sleeps: u64,
    /// The stretch of answers without a time the engine is in (0: none), set by the
    /// driver.
    pub(crate) stretch: u64,
}

impl Book {
    /// Numbers a timer about to be armed.
    fn arm(log: &Log) -> u64 {
        let mut book = log.borrow_mut();
        book.sleeps += 1;
        book.sleeps
    }
}

pub(crate) type Log = Rc<RefCell<Book>>;

fn mix(acc: u64, v: u64) -> u64 {
    acc.wrapping_mul(31).wrapping_add(v)
}

pub(crate) async fn perform(fx: &Fx, kind: LeafKind) -> Out {
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
    (armed, stretch): (Time, u64),
    d: Duration,
) {
    let record = Record::Timer {
        program: fx.program(),
        what,
        order,
        // Saturated at `Time::MAX`, a sleep is due at once and arms no timer.
        driven: armed + d > armed,
        armed,
        stretch,
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
                let armed = (fx.now(), log.borrow().stretch);
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
                let armed = (fx.now(), log.borrow().stretch);
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
pub(crate) enum HandStep {
    Effect(LeafKind),
    Sleep(Duration),
    /// An effect and a timer at once: the first to complete wins, the other is cancelled.
    Race(LeafKind, Duration),
}

/// A program of a case: async (a tree) or hand-written (a list of steps).
#[derive(Clone, Debug)]
pub(crate) enum Prog {
    Async(Node),
    Hand(Vec<HandStep>),
}

impl Prog {
    /// Starts the program on `engine` at `now`; it writes what it sees to `log`.
    pub(crate) fn spawn(self, engine: &mut Engine<Out>, now: Time, log: Log) -> ProgramId {
        match self {
            Prog::Async(tree) => {
                engine.spawn_async(
                    now,
                    move |fx| async move { interpret(&fx, &tree, &log).await },
                )
            }
            Prog::Hand(steps) => engine.spawn(
                now,
                Hand {
                    steps,
                    next: 0,
                    effect: None,
                    timer: None,
                    acc: 0,
                    log,
                },
            ),
        }
    }
}

/// A hand-written program: its steps one after the other, through [`Cx`].
struct Hand {
    steps: Vec<HandStep>,
    next: usize,
    effect: Option<(EffectId, LeafKind)>,
    /// The timer, when it was armed, its deadline and its arm order.
    timer: Option<(EffectId, (Time, u64), Time, u64)>,
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
        let stretch = self.log.borrow().stretch;
        self.timer = Some((id, (armed, stretch), armed + d, order));
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
                Some((timer, (armed, stretch), deadline, order)) if timer == id => {
                    let record = Record::Timer {
                        program: cx.program(),
                        what: "hand-written sleep",
                        order: Some(order),
                        driven: true,
                        armed,
                        stretch,
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
pub(crate) struct Case {
    pub(crate) seed: u64,
    pub(crate) program_timeout: Option<Duration>,
    /// The engine's default per-effect time limit.
    pub(crate) effect_timeout: Option<Duration>,
    pub(crate) programs: Vec<Prog>,
    /// The driver's choices, decoded by the driver's `step`; past the end it plays safe.
    pub(crate) choices: Vec<u32>,
}

pub(crate) fn case_strategy() -> impl Strategy<Value = Case> {
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
