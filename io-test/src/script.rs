//! Scripted scenarios: unit-test one program against an ordered list of expected
//! effects and the answers to give them.
//!
//! A [`Script`] says, step by step, which request the program must make and how the
//! driver answers it: with a typed output ([`Expect::respond`]), an infrastructure
//! error ([`Expect::fail`]), an answer that arrives only after some simulated time
//! ([`Expect::after`]), or no answer at all ([`Expect::never`]). [`Script::run`]
//! spawns the program on an [`Engine`] with a virtual clock, plays the steps, and
//! returns the program's value, or a [`ScriptFailure`] that shows what went wrong:
//! a line diff between the request a step expected and the one the program made,
//! steps left over, a request the script has no step for, or the program's own error.
//!
//! # Example
//! ```
//! use effectful::{EffectError, Fx, effect::*};
//! use effectful_test::script::{Script, assert_script};
//! use uuid::Uuid;
//!
//! /// Greets a user by name over the WebSocket.
//! async fn greet(fx: Fx, user_id: Uuid) -> Result<String, EffectError> {
//!     let name = match fx.perform(GetUserById { user_id }).await? {
//!         UserLookup::Found(user) => user.name,
//!         UserLookup::NotFound { .. } => "stranger".to_string(),
//!     };
//!     fx.perform(SendText { text: format!("hello {name}") }).await?;
//!     Ok(name)
//! }
//!
//! let user_id = Uuid::from_u128(7);
//! let ada = User { id: user_id, email: "ada@example.com".into(), name: "Ada".into() };
//!
//! // The happy path.
//! let script = Script::new()
//!     .expect(GetUserById { user_id })
//!     .respond(UserLookup::Found(ada))
//!     .expect(SendText { text: "hello Ada".into() })
//!     .respond(());
//! assert_eq!(assert_script(script, move |fx| greet(fx, user_id)), Ok("Ada".to_string()));
//!
//! // The database is down: the program reports the error and sends nothing.
//! let down = EffectError::connection_lost("Database.GetUserById", "connection refused");
//! let script = Script::new().expect(GetUserById { user_id }).fail(down.clone());
//! assert_eq!(script.run(move |fx| greet(fx, user_id)), Ok(Err(down)));
//!
//! // A script that expects the wrong greeting fails with a diff naming both texts.
//! let script = Script::new()
//!     .expect(GetUserById { user_id })
//!     .respond(UserLookup::NotFound { user_id, reason: NotFoundReason::Deleted })
//!     .expect(SendText { text: "hello Ada".into() })
//!     .respond(());
//! let failure = script.run(move |fx| greet(fx, user_id)).unwrap_err();
//! let message = failure.to_string();
//! assert!(message.contains(r#"-             text: "hello Ada","#), "{message}");
//! assert!(message.contains(r#"+             text: "hello stranger","#), "{message}");
//! ```
//!
//! # How requests meet steps
//! Each time the program stops to wait, the runner looks at the requests it has
//! outstanding and not yet matched. If the next step's request equals one of them
//! (the earliest made, when several are equal), that step answers it, and the runner
//! looks again. So when the program runs several effects at once (a join, a race,
//! `perform_all`), the script answers them **in script order, whatever order the
//! program asked in**. If no outstanding request equals the next step, the run fails
//! with [`ScriptFailure::Mismatch`] (or [`ScriptFailure::Exhausted`] when no steps
//! are left): every request the program makes needs a step, including the loser of a
//! race, which usually gets [`Expect::never`].
//!
//! When every outstanding request is matched and the program still waits, the virtual
//! clock jumps to the next event: a delayed answer ([`Expect::after`]) or one of the
//! program's timers (a sleep, a timeout, a retry delay, its deadline). On a tie the
//! program's timer fires first, so an answer delayed exactly as long as a timeout
//! arrives too late. An answer to an effect the program has cancelled is dropped,
//! and the cancelled request is listed in [`ScriptRun::cancelled`].

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use effectful::effect::*;
use effectful::{
    Effect, EffectError, EffectId, EmbedStd, Engine, EngineConfig, Excerpt, Family, Fx, Output,
    Program, ProgramError, ProgramId, Std, Time,
};

/// Builds a family's response from an effect's typed output: the inverse of
/// [`Effect::from_response`].
///
/// Implemented here for every built-in effect in every family that embeds them
/// ([`EmbedStd`]). For an effect of your own family, implement it by wrapping the
/// output in your response variant.
pub trait IntoResponse<F: Family>: Effect<F> {
    /// `output` as the family's response to this effect.
    fn into_response(output: Self::Output) -> F::Response;
}

macro_rules! into_response {
    ($( $Family:ident($Resp:ident) { $( $Effect:ident ),* $(,)? } )*) => {
        $( $(
            impl<F: EmbedStd> IntoResponse<F> for $Effect {
                fn into_response(output: Self::Output) -> F::Response {
                    F::embed_response(Response::$Family($Resp::$Effect(output)))
                }
            }
        )* )*
    };
}

into_response! {
    WebSocket(WebSocketResponse) { SendText, ReceiveText, Close }
    Database(DatabaseResponse) {
        GetUserById, ListUsers, CreateUser, UpdateUser, DeleteUser, SaveChatMessage,
        ListMessagesForUser,
    }
    Cache(CacheResponse) {
        GetCachedProfile, PutCachedProfile, DeleteCachedProfile, InvalidateCache,
        GetCachedValue, PutCachedValue,
    }
    Messaging(MessagingResponse) {
        PublishMessage, ConsumeMessage, AcknowledgeMessage, NegativeAcknowledge,
    }
    Storage(StorageResponse) { GetObject, PutObject, DeleteObject, ListObjects }
    Auth(AuthResponse) {
        ValidateToken, GenerateToken, RefreshToken, RevokeToken, GetUserByEmail,
        ValidatePassword, HashPassword,
    }
    System(SystemResponse) { GetCurrentTime, GenerateUuid, WaitForShutdown }
    Metrics(MetricsResponse) {
        IncrementCounter, SetGauge, ObserveHistogram, RecordSummary, QueryMetrics,
    }
}

/// How a step answers the request it matched.
enum Answer<F: Family> {
    Respond(F::Response),
    Fail(EffectError),
    Never,
}

/// One step: the request the program must make, and the answer it gets.
struct Step<F: Family> {
    request: F::Request,
    answer: Answer<F>,
    delay: Duration,
}

/// An ordered list of expected requests and their answers, for one program.
///
/// Build it with [`Script::new`] (built-in effects) or [`Script::default`] (any
/// family), then [`Script::expect`] followed by one of [`Expect`]'s answers per step.
/// Run it with [`Script::run`] (async programs) or [`Script::run_program`]
/// (hand-written ones); the [module documentation](self) says how requests are
/// matched to steps.
pub struct Script<F: Family = Std> {
    steps: Vec<Step<F>>,
    config: EngineConfig,
}

impl Script<Std> {
    /// An empty script for programs of the built-in family.
    pub fn new() -> Self {
        Script::default()
    }
}

impl<F: Family> Default for Script<F> {
    fn default() -> Self {
        Script {
            steps: Vec::new(),
            config: EngineConfig::default(),
        }
    }
}

impl<F: Family> fmt::Debug for Script<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps: Vec<&'static str> = self
            .steps
            .iter()
            .map(|s| F::request_name(&s.request))
            .collect();
        f.debug_struct("Script")
            .field("steps", &steps)
            .field("config", &self.config)
            .finish()
    }
}

impl<F: Family> Script<F> {
    /// Runs the program on an engine with this configuration (seed, program deadline)
    /// instead of the default one.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// The next step: the program must ask for `effect`. Say how to answer it with
    /// one of [`Expect`]'s methods.
    pub fn expect<E: Effect<F>>(self, effect: E) -> Expect<F, E> {
        Expect {
            script: self,
            request: effect.into_request(),
            delay: Duration::ZERO,
            effect: PhantomData,
        }
    }

    /// How many steps the script has.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the script has no steps: the program must finish without asking for
    /// any effect.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    fn push(mut self, request: F::Request, answer: Answer<F>, delay: Duration) -> Self {
        self.steps.push(Step {
            request,
            answer,
            delay,
        });
        self
    }
}

/// A step being written: the request is known, the answer is not yet.
///
/// Finish it with [`respond`](Self::respond), [`respond_raw`](Self::respond_raw),
/// [`fail`](Self::fail) or [`never`](Self::never); each gives the script back.
#[must_use = "the step is added to the script only once it is given an answer"]
pub struct Expect<F: Family, E> {
    script: Script<F>,
    request: F::Request,
    delay: Duration,
    effect: PhantomData<fn() -> E>,
}

impl<F: Family, E: Effect<F>> Expect<F, E> {
    /// Answers only after `delay` of simulated time has passed since the request
    /// was matched. A shorter timeout in the program fires first: the program sees
    /// its timeout, and the request is listed in [`ScriptRun::cancelled`].
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Answers with the effect's typed output.
    pub fn respond(self, output: E::Output) -> Script<F>
    where
        E: IntoResponse<F>,
    {
        self.respond_raw(E::into_response(output))
    }

    /// Answers with a response of the family as it is, even one that answers
    /// another effect (the program then sees a protocol error).
    pub fn respond_raw(self, response: F::Response) -> Script<F> {
        self.script
            .push(self.request, Answer::Respond(response), self.delay)
    }

    /// Answers with an infrastructure error.
    pub fn fail(self, error: EffectError) -> Script<F> {
        self.script
            .push(self.request, Answer::Fail(error), self.delay)
    }

    /// Never answers: the program must give up on the effect (a timeout, the loser
    /// of a race, its deadline), which cancels it. If nothing can ever wake the
    /// program, the run fails with [`ScriptFailure::Stuck`]. A delay set with
    /// [`after`](Self::after) does not matter here.
    pub fn never(self) -> Script<F> {
        self.script
            .push(self.request, Answer::Never, Duration::ZERO)
    }
}

/// What a successful run produced.
pub struct ScriptRun<O, F: Family = Std> {
    /// The program's value.
    pub output: O,
    /// The requests the program cancelled before they were answered (timeouts,
    /// race losers, effects scripted with [`Expect::never`]), in the order it
    /// cancelled them.
    pub cancelled: Vec<F::Request>,
    /// The simulated time that passed from the start to the program's end.
    pub elapsed: Duration,
}

impl<O: fmt::Debug, F: Family> fmt::Debug for ScriptRun<O, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptRun")
            .field("output", &self.output)
            .field("cancelled", &self.cancelled)
            .field("elapsed", &self.elapsed)
            .finish()
    }
}

/// Why a scripted run failed. Its `Display` is meant to be read in a test failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptFailure {
    /// The program asked for something other than what the next step expects.
    #[error(
        "step {step} expects {expected}, but the program asked for {got}{}; \
         fix the program or the step\n--- expected\n+++ got\n{diff}",
        also_outstanding(others)
    )]
    Mismatch {
        /// The step, counted from 1.
        step: usize,
        /// The name of the request the step expects (`Family.Effect`).
        expected: &'static str,
        /// The name of the outstanding request compared with it.
        got: &'static str,
        /// The names of the program's other outstanding, unmatched requests.
        others: Vec<&'static str>,
        /// The two requests, pretty-printed and compared line by line: `-` lines
        /// only in the expected one, `+` lines only in the program's. Bounded: a few
        /// common lines around each change, at most 60 lines, each cut to an
        /// [`Excerpt`] around where it differs.
        diff: String,
    },
    /// The program asked for something after the last step was used.
    #[error(
        "the program asked for {got} but the script is used up after {steps} steps; \
         add a step for it (`.never()` if the program should give up on it):\n{request}"
    )]
    Exhausted {
        /// How many steps the script has.
        steps: usize,
        /// The name of the request (`Family.Effect`).
        got: &'static str,
        /// The request, pretty-printed (at most 60 lines, each cut to an [`Excerpt`]).
        request: String,
    },
    /// The program finished while steps were left.
    #[error(
        "script not used up: {left} {} left, next: step {step} expects {expected}; \
         the program finished without asking for it:\n{request}",
        if *left == 1 { "step" } else { "steps" }
    )]
    Unused {
        /// How many steps were left.
        left: usize,
        /// The first step left, counted from 1.
        step: usize,
        /// The name of the request it expects (`Family.Effect`).
        expected: &'static str,
        /// That request, pretty-printed (at most 60 lines, each cut to an [`Excerpt`]).
        request: String,
    },
    /// The program ended with an error instead of a value.
    #[error("the program ended with an error after {steps} steps: {error}")]
    Program {
        /// How many steps it had used.
        steps: usize,
        /// Why it ended.
        error: ProgramError,
    },
    /// The program waits only for effects the script never answers, and has no
    /// timer that could wake it.
    #[error(
        "the program is stuck after {steps} steps: it waits for {} which the script \
         never answers, and no timer can wake it; give it a timeout or answer the step",
        waiting.join(", ")
    )]
    Stuck {
        /// How many steps it had used.
        steps: usize,
        /// The names of the requests it waits for.
        waiting: Vec<&'static str>,
    },
}

fn also_outstanding(others: &[&'static str]) -> String {
    match others {
        [] => String::new(),
        _ => format!(" (also outstanding: {})", others.join(", ")),
    }
}

impl<F: Family> Script<F>
where
    F::Request: PartialEq,
{
    /// Runs an async program against the script: `make` receives the program's
    /// effect handle and returns the future to run. Returns the program's value.
    pub fn run<O, Fut, Mk>(self, make: Mk) -> Result<O, ScriptFailure>
    where
        O: 'static,
        Mk: FnOnce(Fx<F>) -> Fut,
        Fut: Future<Output = O> + 'static,
    {
        self.play(make).map(|run| run.output)
    }

    /// Like [`run`](Self::run), but also reports what the program cancelled and how
    /// much simulated time passed.
    pub fn play<O, Fut, Mk>(self, make: Mk) -> Result<ScriptRun<O, F>, ScriptFailure>
    where
        O: 'static,
        Mk: FnOnce(Fx<F>) -> Fut,
        Fut: Future<Output = O> + 'static,
    {
        self.drive(|engine, now| engine.spawn_async(now, make))
    }

    /// Runs an async program against the script and returns its value; a failure
    /// panics with the [`ScriptFailure`]'s `Display` (what was expected, what came,
    /// a diff), not its `Debug` dump as `run(..).unwrap()` would. For use in tests.
    #[track_caller]
    pub fn assert_run<O, Fut, Mk>(self, make: Mk) -> O
    where
        O: 'static,
        Mk: FnOnce(Fx<F>) -> Fut,
        Fut: Future<Output = O> + 'static,
    {
        assert_script(self, make)
    }

    /// [`assert_run`](Self::assert_run) for a hand-written program.
    #[track_caller]
    pub fn assert_run_program<P>(self, program: P) -> P::Output
    where
        P: Program<F> + 'static,
        P::Output: 'static,
    {
        assert_script_program(self, program)
    }

    /// Runs a hand-written program against the script. Returns its value.
    pub fn run_program<P>(self, program: P) -> Result<P::Output, ScriptFailure>
    where
        P: Program<F> + 'static,
        P::Output: 'static,
    {
        self.play_program(program).map(|run| run.output)
    }

    /// Like [`run_program`](Self::run_program), but also reports what the program
    /// cancelled and how much simulated time passed.
    pub fn play_program<P>(self, program: P) -> Result<ScriptRun<P::Output, F>, ScriptFailure>
    where
        P: Program<F> + 'static,
        P::Output: 'static,
    {
        self.drive(|engine, now| engine.spawn(now, program))
    }

    fn drive<O: 'static>(
        self,
        spawn: impl FnOnce(&mut Engine<O, F>, Time) -> ProgramId,
    ) -> Result<ScriptRun<O, F>, ScriptFailure> {
        let mut engine = Engine::new(self.config);
        spawn(&mut engine, Time::ZERO);
        let mut player = Player::<F> {
            total: self.steps.len(),
            steps: self.steps.into_iter(),
            used: 0,
            open: Vec::new(),
            held: Vec::new(),
            due: Vec::new(),
            cancelled: Vec::new(),
        };
        loop {
            while let Some(output) = engine.poll_output() {
                match output {
                    Output::Request { id, request } => player.open.push((id, request)),
                    Output::Cancel { id } => player.cancel(id),
                    Output::Finished { result, .. } => return player.finish(result, engine.now()),
                }
            }
            if player.match_next(&mut engine)? {
                continue;
            }
            player.advance(&mut engine)?;
        }
    }
}

/// An answer scheduled for later.
struct Due<F: Family> {
    at: Time,
    id: EffectId,
    result: Result<F::Response, EffectError>,
}

/// The state of one scripted run.
struct Player<F: Family> {
    steps: std::vec::IntoIter<Step<F>>,
    total: usize,
    /// Steps matched so far.
    used: usize,
    /// Requests made and not yet matched to a step, in the order they were made.
    open: Vec<(EffectId, F::Request)>,
    /// Requests matched to a step whose answer is delayed or never comes.
    held: Vec<(EffectId, F::Request)>,
    /// Delayed answers, in the order they were scheduled.
    due: Vec<Due<F>>,
    cancelled: Vec<F::Request>,
}

impl<F: Family> Player<F>
where
    F::Request: PartialEq,
{
    /// Matches the next step against the open requests and answers it. `Ok(true)`:
    /// a step was used; `Ok(false)`: nothing is open, the clock may move.
    fn match_next<O: 'static>(&mut self, engine: &mut Engine<O, F>) -> Result<bool, ScriptFailure> {
        let Some(step) = self.steps.as_slice().first() else {
            return match self.open.first() {
                None => Ok(false),
                Some((_, request)) => Err(ScriptFailure::Exhausted {
                    steps: self.total,
                    got: F::request_name(request),
                    request: quote(&format!("{request:#?}")),
                }),
            };
        };
        let Some(position) = self
            .open
            .iter()
            .position(|(_, request)| *request == step.request)
        else {
            return match self.open.is_empty() {
                true => Ok(false),
                false => Err(self.mismatch(&step.request)),
            };
        };
        let Some(step) = self.steps.next() else {
            return Ok(false);
        };
        self.used += 1;
        let (id, request) = self.open.remove(position);
        let result = match step.answer {
            Answer::Respond(response) => Ok(response),
            Answer::Fail(error) => Err(error),
            Answer::Never => {
                self.held.push((id, request));
                return Ok(true);
            }
        };
        if step.delay.is_zero() {
            // Just seen outstanding and not cancelled since, so it is delivered.
            let _ = engine.handle_response(engine.now(), id, result);
        } else {
            self.held.push((id, request));
            self.due.push(Due {
                at: engine.now() + step.delay,
                id,
                result,
            });
        }
        Ok(true)
    }

    fn mismatch(&self, expected: &F::Request) -> ScriptFailure {
        let expected_name = F::request_name(expected);
        // Compare with the request most like the expected one: the same effect if any.
        let position = self
            .open
            .iter()
            .position(|(_, request)| F::request_name(request) == expected_name)
            .unwrap_or(0);
        let got = &self.open[position].1;
        let others = (self.open.iter().enumerate())
            .filter(|(i, _)| *i != position)
            .map(|(_, (_, request))| F::request_name(request))
            .collect();
        ScriptFailure::Mismatch {
            step: self.used + 1,
            expected: expected_name,
            got: F::request_name(got),
            others,
            diff: line_diff(&format!("{expected:#?}"), &format!("{got:#?}")),
        }
    }

    /// Moves the clock to the next delayed answer or program timer, whichever is
    /// first (the timer on a tie), and delivers it.
    fn advance<O: 'static>(&mut self, engine: &mut Engine<O, F>) -> Result<(), ScriptFailure> {
        let next_answer = (self.due.iter().enumerate())
            .min_by_key(|(i, due)| (due.at, *i))
            .map(|(i, due)| (i, due.at));
        match (next_answer, engine.poll_timeout()) {
            (Some((_, answer_at)), Some(timer_at)) if timer_at <= answer_at => {
                engine.handle_timeout(timer_at)
            }
            (None, Some(timer_at)) => engine.handle_timeout(timer_at),
            (Some((index, at)), _) => {
                let due = self.due.remove(index);
                self.held.retain(|(id, _)| *id != due.id);
                let _ = engine.handle_response(at, due.id, due.result);
            }
            (None, None) => {
                return Err(ScriptFailure::Stuck {
                    steps: self.used,
                    waiting: self
                        .held
                        .iter()
                        .map(|(_, request)| F::request_name(request))
                        .collect(),
                });
            }
        }
        Ok(())
    }

    fn cancel(&mut self, id: EffectId) {
        self.due.retain(|due| due.id != id);
        for list in [&mut self.open, &mut self.held] {
            if let Some(position) = list.iter().position(|(open, _)| *open == id) {
                let (_, request) = list.remove(position);
                self.cancelled.push(request);
            }
        }
    }

    fn finish<O>(
        mut self,
        result: Result<O, ProgramError>,
        now: Time,
    ) -> Result<ScriptRun<O, F>, ScriptFailure> {
        let output = result.map_err(|error| ScriptFailure::Program {
            steps: self.used,
            error,
        })?;
        let left = self.steps.len();
        if let Some(step) = self.steps.next() {
            return Err(ScriptFailure::Unused {
                left,
                step: self.used + 1,
                expected: F::request_name(&step.request),
                request: quote(&format!("{:#?}", step.request)),
            });
        }
        Ok(ScriptRun {
            output,
            cancelled: self.cancelled,
            elapsed: now - Time::ZERO,
        })
    }
}

/// Lines of context a diff keeps around each change.
const DIFF_CONTEXT: usize = 3;

/// The most lines a diff or a quoted request shows: a request can be megabytes long,
/// and a failure message must stay readable.
const MAX_SHOWN_LINES: usize = 60;

/// Above this many line pairs (once the common first and last lines are set aside),
/// a diff shows the differing middle as removed, then added, instead of comparing it.
const DIFF_LIMIT: usize = 1 << 20;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Same,
    Removed,
    Added,
}

/// `expected` and `got` compared line by line (longest common subsequence): lines
/// in both start with two spaces, lines only in `expected` with `- `, lines only in
/// `got` with `+ `.
///
/// Bounded whatever the texts: only [`DIFF_CONTEXT`] common lines are kept around
/// each change, at most [`MAX_SHOWN_LINES`] lines are shown, and each line is cut to
/// an [`Excerpt`] (a changed line around where it differs from its counterpart).
fn line_diff(expected: &str, got: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = got.lines().collect();
    let head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let tail = (a[head..].iter().rev())
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mut lines: Vec<(Mark, &str)> = Vec::with_capacity(a.len() + b.len());
    lines.extend(a[..head].iter().map(|text| (Mark::Same, *text)));
    diff_middle(
        &a[head..a.len() - tail],
        &b[head..b.len() - tail],
        &mut lines,
    );
    lines.extend(a[a.len() - tail..].iter().map(|text| (Mark::Same, *text)));
    render_diff(&lines)
}

/// The diff of two runs of lines that differ in their first and last lines.
fn diff_middle<'a>(a: &[&'a str], b: &[&'a str], lines: &mut Vec<(Mark, &'a str)>) {
    if a.len().saturating_mul(b.len()) > DIFF_LIMIT {
        lines.extend(a.iter().map(|text| (Mark::Removed, *text)));
        lines.extend(b.iter().map(|text| (Mark::Added, *text)));
        return;
    }
    // common[i][j]: the length of the longest common subsequence of a[i..] and b[j..].
    let mut common = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            common[i][j] = if a[i] == b[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            lines.push((Mark::Same, a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || common[i + 1][j] >= common[i][j + 1]) {
            lines.push((Mark::Removed, a[i]));
            i += 1;
        } else {
            lines.push((Mark::Added, b[j]));
            j += 1;
        }
    }
}

/// Writes a diff's lines, keeping common lines only near a change, cutting long
/// lines to excerpts and stopping after [`MAX_SHOWN_LINES`].
fn render_diff(lines: &[(Mark, &str)]) -> String {
    // How far each line is from the nearest change, up to DIFF_CONTEXT + 1.
    let far = DIFF_CONTEXT + 1;
    let mut distance = vec![far; lines.len()];
    let mut since = far;
    for (i, (mark, _)) in lines.iter().enumerate() {
        since = if *mark == Mark::Same {
            (since + 1).min(far)
        } else {
            0
        };
        distance[i] = since;
    }
    since = far;
    for (i, (mark, _)) in lines.iter().enumerate().rev() {
        since = if *mark == Mark::Same {
            (since + 1).min(far)
        } else {
            0
        };
        distance[i] = distance[i].min(since);
    }
    let mut out = String::new();
    let mut shown = 0;
    let mut hidden = 0;
    // The changed lines of the current block, to pair the k-th removed line with the
    // k-th added one.
    let mut block: (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
    let (mut removed, mut added) = (0, 0);
    for (i, (mark, text)) in lines.iter().enumerate() {
        if shown == MAX_SHOWN_LINES {
            let rest = lines.len() - i;
            out.push_str(&format!(
                "… and {rest} more lines (a diff shows at most {MAX_SHOWN_LINES})\n"
            ));
            return out;
        }
        if *mark == Mark::Same && distance[i] > DIFF_CONTEXT {
            hidden += 1;
            continue;
        }
        if hidden > 0 {
            out.push_str(&format!("  … {hidden} equal lines …\n"));
            hidden = 0;
        }
        if *mark != Mark::Same && (i == 0 || lines[i - 1].0 == Mark::Same) {
            block = change_block(&lines[i..]);
            (removed, added) = (0, 0);
        }
        let (prefix, excerpt) = match mark {
            Mark::Same => ("  ", Excerpt::head(text, Excerpt::DEFAULT_LIMIT)),
            Mark::Removed => {
                removed += 1;
                ("- ", line_excerpt(text, block.1.get(removed - 1)))
            }
            Mark::Added => {
                added += 1;
                ("+ ", line_excerpt(text, block.0.get(added - 1)))
            }
        };
        out.push_str(prefix);
        out.push_str(&excerpt.to_string());
        out.push('\n');
        shown += 1;
    }
    if hidden > 0 {
        out.push_str(&format!("  … {hidden} equal lines …\n"));
    }
    out
}

/// The removed and the added lines of the run of changes that `lines` starts with.
fn change_block<'a>(lines: &[(Mark, &'a str)]) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut block = (Vec::new(), Vec::new());
    for (mark, text) in lines.iter().take_while(|(mark, _)| *mark != Mark::Same) {
        match mark {
            Mark::Removed => block.0.push(*text),
            _ => block.1.push(*text),
        }
    }
    block
}

/// A changed line cut around where it differs from its counterpart, if it has one.
fn line_excerpt<'a>(text: &'a str, counterpart: Option<&&'a str>) -> Excerpt<'a> {
    match counterpart {
        Some(other) => Excerpt::pair(text, other, Excerpt::DEFAULT_LIMIT).0,
        None => Excerpt::head(text, Excerpt::DEFAULT_LIMIT),
    }
}

/// A pretty-printed request for a failure message: at most [`MAX_SHOWN_LINES`]
/// lines, each cut to an [`Excerpt`].
fn quote(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    for line in lines.by_ref().take(MAX_SHOWN_LINES) {
        out.push_str(&Excerpt::head(line, Excerpt::DEFAULT_LIMIT).to_string());
        out.push('\n');
    }
    let rest = lines.count();
    if rest > 0 {
        out.push_str(&format!("… and {rest} more lines\n"));
    }
    out
}

/// Runs an async program against `script` and returns its value; panics with the
/// [`ScriptFailure`]'s message if the run fails. For use in tests.
#[track_caller]
pub fn assert_script<F, O, Fut, Mk>(script: Script<F>, make: Mk) -> O
where
    F: Family,
    F::Request: PartialEq,
    O: 'static,
    Mk: FnOnce(Fx<F>) -> Fut,
    Fut: Future<Output = O> + 'static,
{
    match script.run(make) {
        Ok(output) => output,
        Err(failure) => panic!("scripted run failed: {failure}"),
    }
}

/// Runs a hand-written program against `script` and returns its value; panics with
/// the [`ScriptFailure`]'s message if the run fails. For use in tests.
#[track_caller]
pub fn assert_script_program<F, P>(script: Script<F>, program: P) -> P::Output
where
    F: Family,
    F::Request: PartialEq,
    P: Program<F> + 'static,
    P::Output: 'static,
{
    match script.run_program(program) {
        Ok(output) => output,
        Err(failure) => panic!("scripted run failed: {failure}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_diff_marks_removed_and_added_lines_around_common_ones() {
        let diff = line_diff("a\nb\nc\n", "a\nx\nc\nd\n");
        assert_eq!(diff, "  a\n- b\n+ x\n  c\n+ d\n");
    }

    #[test]
    fn equal_texts_have_no_marked_lines() {
        assert_eq!(line_diff("a\nb", "a\nb"), "  … 2 equal lines …\n");
    }

    #[test]
    fn a_diff_keeps_three_common_lines_around_a_change() {
        let expected: String = (0..20).map(|i| format!("line {i}\n")).collect();
        let got = expected.replace("line 10\n", "line ten\n");
        assert_eq!(
            line_diff(&expected, &got),
            "  … 7 equal lines …\n  line 7\n  line 8\n  line 9\n- line 10\n+ line ten\n  \
             line 11\n  line 12\n  line 13\n  … 6 equal lines …\n"
        );
    }

    #[test]
    fn a_line_that_differs_deep_inside_is_shown_around_the_difference() {
        let (a, b) = ("x".repeat(1 << 20), "x".repeat(1 << 20));
        let (expected, got) = (format!("text: \"{a}A{a}\""), format!("text: \"{b}B{b}\""));
        let diff = line_diff(&expected, &got);
        assert!(diff.len() < 1_000, "{} bytes", diff.len());
        let lines: Vec<&str> = diff.lines().collect();
        assert_eq!(lines.len(), 2, "{diff}");
        assert!(
            lines[0].starts_with("- [") && lines[0].contains("xA"),
            "{diff}"
        );
        assert!(
            lines[1].starts_with("+ [") && lines[1].contains("xB"),
            "{diff}"
        );
    }

    #[test]
    fn a_diff_of_many_changed_lines_stops_after_the_line_limit() {
        let expected: String = (0..5_000).map(|i| format!("a{i}\n")).collect();
        let got: String = (0..5_000).map(|i| format!("b{i}\n")).collect();
        let diff = line_diff(&expected, &got);
        assert_eq!(diff.lines().count(), MAX_SHOWN_LINES + 1, "{diff}");
        assert!(
            diff.ends_with("… and 9940 more lines (a diff shows at most 60)\n"),
            "{diff}"
        );
    }

    #[test]
    fn a_quoted_request_is_cut_in_lines_and_length() {
        let text: String = (0..100)
            .map(|i| format!("{i}: {}\n", "y".repeat(1_000)))
            .collect();
        let quoted = quote(&text);
        assert_eq!(quoted.lines().count(), MAX_SHOWN_LINES + 1);
        assert!(quoted.ends_with("… and 40 more lines\n"), "{quoted}");
        assert!(
            quoted.len() < MAX_SHOWN_LINES * 300,
            "{} bytes",
            quoted.len()
        );
    }
}
