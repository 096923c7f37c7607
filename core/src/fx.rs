//! The effect handle of async programs and the futures it makes.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::combinator::{Either, race};
use crate::effect::{Effect, Family, Std, decode};
use crate::error::EffectError;
use crate::id::{EffectId, ProgramId};
use crate::mailbox::{Completion, Limit, Mailbox};
use crate::schedule::Schedule;
use crate::time::Time;

/// The effect handle an async program receives: every effect, timer and random number
/// the program uses goes through it.
///
/// ```
/// use effectful::{Engine, EngineConfig, Fx, Output, effect::{GetUserById, UserLookup}};
///
/// async fn greet(fx: Fx, user_id: uuid::Uuid) -> Result<String, effectful::EffectError> {
///     Ok(match fx.perform(GetUserById { user_id }).await? {
///         UserLookup::Found(user) => format!("hello, {}", user.name),
///         UserLookup::NotFound { .. } => "who are you?".to_string(),
///     })
/// }
///
/// let mut engine = Engine::new(EngineConfig::default());
/// engine.spawn_async(effectful::Time::ZERO, |fx| greet(fx, uuid::Uuid::nil()));
/// assert!(matches!(engine.poll_output(), Some(Output::Request { .. })));
/// ```
///
/// Awaiting anything that is not made by this handle (a tokio sleep, a channel,
/// tokio's `task::yield_now()` or any other future that wakes through the task's
/// waker) is detected as soon as the program waits on nothing else, and ends the
/// program with [`crate::ProgramError::ForeignAwait`] instead of hanging. To give
/// other programs a turn, await `fx.sleep(Duration::ZERO)`: it yields to the driver.
///
/// Async programs are compiled to state machines that live on the heap, but each
/// nested `.await` of an `async fn` adds to the stack while it is polled: deeply
/// recursive programs (thousands of nested calls) overflow the stack unless the
/// recursive call is boxed (`Box::pin(recurse(fx.clone(), n - 1)).await`).
pub struct Fx<F: Family = Std> {
    mailbox: Rc<RefCell<Mailbox<F>>>,
}

impl<F: Family> Clone for Fx<F> {
    fn clone(&self) -> Self {
        Fx {
            mailbox: self.mailbox.clone(),
        }
    }
}

/// The effect did not complete within its timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("timed out")]
pub struct Elapsed;

impl<F: Family> Fx<F> {
    pub(crate) fn new(mailbox: Rc<RefCell<Mailbox<F>>>) -> Self {
        Fx { mailbox }
    }

    /// Performs one effect: its typed output, or the infrastructure error.
    ///
    /// The engine's default per-effect timeout applies
    /// ([`EngineConfig::effect_timeout`](crate::EngineConfig::effect_timeout), unless
    /// the effect waits by nature, see
    /// [`Family::default_timeout_applies`](crate::Family::default_timeout_applies)):
    /// an answer that never comes fails the effect with a retryable `Timeout` and the
    /// driver is told to cancel it. Use [`perform_timeout`](Fx::perform_timeout) for a
    /// limit of its own, [`perform_untimed`](Fx::perform_untimed) for none.
    ///
    /// A timed-out effect may still have happened: retry reads, and writes that are
    /// idempotent (a save with its own id, a put, a delete); a write that is not (an
    /// insert the database names, a publish without a deduplication key) may happen
    /// twice if retried.
    pub fn perform<E: Effect<F>>(&self, effect: E) -> Perform<'_, E, F> {
        self.perform_limited(effect, Limit::Default)
    }

    /// Performs one effect with no time limit, whatever the engine's default.
    pub fn perform_untimed<E: Effect<F>>(&self, effect: E) -> Perform<'_, E, F> {
        self.perform_limited(effect, Limit::Never)
    }

    fn perform_limited<E: Effect<F>>(&self, effect: E, limit: Limit) -> Perform<'_, E, F> {
        Perform {
            fx: self,
            limit,
            state: PerformState::Ready(effect),
        }
    }

    /// Performs all `effects` at once and returns their results in the same order.
    ///
    /// Costs O(1) per completion however many effects are joined.
    pub fn perform_all<E: Effect<F>>(
        &self,
        effects: impl IntoIterator<Item = E>,
    ) -> PerformAll<'_, E, F> {
        PerformAll {
            fx: self,
            effects: effects.into_iter().collect(),
            ids: Vec::new(),
            results: Vec::new(),
            group: None,
            remaining: 0,
            scratch: Vec::new(),
        }
    }

    /// Completes once `d` has passed. A sleep of zero (or until a time that has
    /// passed) still yields to the driver: it completes at the driver's next
    /// `handle_timeout`, so a loop of them cannot stall the other programs.
    pub fn sleep(&self, d: Duration) -> Sleep<'_, F> {
        Sleep {
            fx: self,
            state: SleepState::After(d),
        }
    }

    /// Completes once `at` has passed (at once if it has).
    pub fn sleep_until(&self, at: Time) -> Sleep<'_, F> {
        Sleep {
            fx: self,
            state: SleepState::Until(at),
        }
    }

    /// Runs `fut`, but gives up after `d`: `Err(Elapsed)`, and whatever `fut` had
    /// outstanding is cancelled.
    ///
    /// `fut` may be any future of the program (several effects, a sub-program), and
    /// its output any type, so expiry is reported beside it as [`Elapsed`]. For one
    /// effect, [`perform_timeout`](Fx::perform_timeout) reports expiry in-band
    /// instead, as the retryable [`EffectError`] of kind `Timeout` that `retry`
    /// understands.
    pub async fn timeout<T>(
        &self,
        d: Duration,
        fut: impl Future<Output = T>,
    ) -> Result<T, Elapsed> {
        match race(fut, self.sleep(d)).await {
            Either::Left(value) => Ok(value),
            Either::Right(()) => Err(Elapsed),
        }
    }

    /// Performs one effect with a time limit of its own, instead of the engine's
    /// default; running out is a retryable [`EffectError`] of kind `Timeout`, and the
    /// driver is told to cancel the effect. An answer that arrives before the driver
    /// fires the limit wins. A limit of zero still asks, then gives up at the
    /// driver's next `handle_timeout`.
    pub fn perform_timeout<E: Effect<F>>(&self, effect: E, d: Duration) -> Perform<'_, E, F> {
        self.perform_limited(effect, Limit::After(d))
    }

    /// Performs one effect, retrying retryable errors as `schedule` allows.
    pub async fn retry<E: Effect<F> + Clone>(
        &self,
        schedule: &Schedule,
        effect: E,
    ) -> Result<E::Output, EffectError> {
        self.retry_with(schedule, || self.perform(effect.clone()))
            .await
    }

    /// Runs `attempt` until it succeeds, fails without being retryable, or `schedule`
    /// stops; between attempts it sleeps as long as the schedule says (a delay of
    /// zero still yields to the driver).
    pub async fn retry_with<T, Fut>(
        &self,
        schedule: &Schedule,
        mut attempt: impl FnMut() -> Fut,
    ) -> Result<T, EffectError>
    where
        Fut: Future<Output = Result<T, EffectError>>,
    {
        let start = self.now();
        let mut state = schedule.start();
        loop {
            let error = match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) if !error.retryable => return Err(error),
                Err(error) => error,
            };
            let elapsed = self.now() - start;
            let delay = {
                let mut mailbox = self.mailbox.borrow_mut();
                schedule.next(&mut state, elapsed, &mut mailbox.rng)
            };
            match delay {
                Some(delay) => self.sleep(delay).await,
                None => return Err(error),
            }
        }
    }

    /// The time of the input the engine is handling. Pure: it is the driver's `now`.
    pub fn now(&self) -> Time {
        self.mailbox.borrow().now
    }

    /// 64 bits from this program's seeded generator.
    pub fn random_u64(&self) -> u64 {
        self.mailbox.borrow_mut().rng.next_u64()
    }

    /// This program's id.
    pub fn program(&self) -> ProgramId {
        self.mailbox.borrow().program
    }

    fn mark_waiting(mailbox: &mut Mailbox<F>) {
        mailbox.waiting_marks += 1;
    }
}

enum PerformState<E> {
    Ready(E),
    Waiting(EffectId),
    Done,
}

/// The future of [`Fx::perform`]. Dropping it while it waits cancels the effect.
#[must_use = "an effect does nothing until awaited"]
pub struct Perform<'a, E: Effect<F>, F: Family = Std> {
    fx: &'a Fx<F>,
    limit: Limit,
    state: PerformState<E>,
}

// The effect value is moved out by value, never pinned.
impl<E: Effect<F>, F: Family> Unpin for Perform<'_, E, F> {}

impl<E: Effect<F>, F: Family> Future for Perform<'_, E, F> {
    type Output = Result<E::Output, EffectError>;

    /// Inlined into the program's own future: an `await` polls a `Perform` twice per
    /// round trip (the answer taken, the next effect asked), and as a call each poll
    /// paid its own prologue and the moves in and out (`stepcount async` 702 -> 673).
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut mailbox = this.fx.mailbox.borrow_mut();
        if let PerformState::Waiting(id) = this.state {
            return match mailbox.take(id) {
                Some(completion) => {
                    this.state = PerformState::Done;
                    Poll::Ready(decode_completion::<E, F>(completion))
                }
                None => {
                    Fx::mark_waiting(&mut mailbox);
                    Poll::Pending
                }
            };
        }
        match std::mem::replace(&mut this.state, PerformState::Done) {
            PerformState::Ready(effect) => {
                let id = mailbox.request(effect.into_request(), this.limit, E::NAME);
                if mailbox.closed() {
                    // The handle outlived its program: the effect failed at once.
                    return match mailbox.take(id) {
                        Some(completion) => Poll::Ready(decode_completion::<E, F>(completion)),
                        None => Poll::Pending,
                    };
                }
                this.state = PerformState::Waiting(id);
                Fx::mark_waiting(&mut mailbox);
                Poll::Pending
            }
            _ => panic!("effect future polled after it completed"),
        }
    }
}

fn decode_completion<E: Effect<F>, F: Family>(
    completion: Completion<F>,
) -> Result<E::Output, EffectError> {
    match completion {
        Completion::Response(result) => result.and_then(decode::<F, E>),
        Completion::Timer => Err(EffectError::mismatched_response(E::NAME, "timer")),
    }
}

impl<E: Effect<F>, F: Family> Drop for Perform<'_, E, F> {
    fn drop(&mut self) {
        if let PerformState::Waiting(id) = self.state {
            // If the engine holds the mailbox (it is tearing the program down), it
            // cancels every outstanding effect itself.
            if let Ok(mut mailbox) = self.fx.mailbox.try_borrow_mut() {
                mailbox.cancel(id);
            }
        }
    }
}

/// The future of [`Fx::perform_all`].
#[must_use = "effects do nothing until awaited"]
pub struct PerformAll<'a, E: Effect<F>, F: Family = Std> {
    fx: &'a Fx<F>,
    effects: Vec<E>,
    ids: Vec<EffectId>,
    results: Vec<Option<Result<E::Output, EffectError>>>,
    group: Option<u32>,
    remaining: usize,
    scratch: Vec<u32>,
}

impl<E: Effect<F>, F: Family> Unpin for PerformAll<'_, E, F> {}

impl<E: Effect<F>, F: Family> Future for PerformAll<'_, E, F> {
    type Output = Vec<Result<E::Output, EffectError>>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut mailbox = this.fx.mailbox.borrow_mut();
        let group = match this.group {
            Some(group) => group,
            None => {
                let group = mailbox.open_group();
                this.group = Some(group);
                let effects = std::mem::take(&mut this.effects);
                this.remaining = effects.len();
                this.ids.reserve(effects.len());
                this.results.resize_with(effects.len(), || None);
                for (position, effect) in effects.into_iter().enumerate() {
                    let id = mailbox.request_in_group(
                        effect.into_request(),
                        Limit::Default,
                        E::NAME,
                        Some((group, position as u32)),
                    );
                    this.ids.push(id);
                }
                group
            }
        };
        mailbox.drain_group(group, &mut this.scratch);
        for position in this.scratch.drain(..) {
            let id = this.ids[position as usize];
            if let Some(completion) = mailbox.take(id) {
                this.results[position as usize] = Some(decode_completion::<E, F>(completion));
                this.remaining -= 1;
            }
        }
        if this.remaining > 0 {
            Fx::mark_waiting(&mut mailbox);
            return Poll::Pending;
        }
        mailbox.close_group(group);
        this.group = None;
        this.ids.clear();
        let results = std::mem::take(&mut this.results);
        // Every position holds its result now; `flatten` alone would grow the
        // vector from empty (its size hint starts at 0), copying it each time.
        let mut answers = Vec::with_capacity(results.len());
        answers.extend(results.into_iter().flatten());
        Poll::Ready(answers)
    }
}

impl<E: Effect<F>, F: Family> Drop for PerformAll<'_, E, F> {
    fn drop(&mut self) {
        let Some(group) = self.group else { return };
        if let Ok(mut mailbox) = self.fx.mailbox.try_borrow_mut() {
            for (position, id) in self.ids.iter().enumerate() {
                if self.results[position].is_none() {
                    mailbox.cancel(*id);
                }
            }
            mailbox.close_group(group);
        }
    }
}

enum SleepState {
    After(Duration),
    Until(Time),
    Waiting(EffectId),
    Done,
}

/// The future of [`Fx::sleep`] and [`Fx::sleep_until`].
#[must_use = "a sleep does nothing until awaited"]
pub struct Sleep<'a, F: Family = Std> {
    fx: &'a Fx<F>,
    state: SleepState,
}

impl<F: Family> Future for Sleep<'_, F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut mailbox = this.fx.mailbox.borrow_mut();
        let at = match std::mem::replace(&mut this.state, SleepState::Done) {
            SleepState::After(d) => mailbox.now + d,
            SleepState::Until(at) => at,
            SleepState::Waiting(id) => {
                if mailbox.take(id).is_some() {
                    return Poll::Ready(());
                }
                this.state = SleepState::Waiting(id);
                Fx::mark_waiting(&mut mailbox);
                return Poll::Pending;
            }
            SleepState::Done => panic!("sleep polled after it completed"),
        };
        if mailbox.closed() {
            // The handle outlived its program: there is no driver to wait for.
            return Poll::Ready(());
        }
        this.state = SleepState::Waiting(mailbox.timer(at));
        Fx::mark_waiting(&mut mailbox);
        Poll::Pending
    }
}

impl<F: Family> Drop for Sleep<'_, F> {
    fn drop(&mut self) {
        if let SleepState::Waiting(id) = self.state {
            if let Ok(mut mailbox) = self.fx.mailbox.try_borrow_mut() {
                mailbox.cancel(id);
            }
        }
    }
}
