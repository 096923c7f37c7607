//! The effect handle of async programs and the futures it makes.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::combinator::{Either, race};
use crate::effect::{Effect, Family, Std, decode};
use crate::engine::mailbox::{Completion, Mailbox};
use crate::engine::{EffectId, ProgramId};
use crate::error::EffectError;
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
/// Awaiting anything that is not made by this handle (a tokio sleep, a channel) is
/// detected as soon as the program waits on nothing else, and ends the program with
/// [`crate::ProgramError::ForeignAwait`] instead of hanging.
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
    pub fn perform<E: Effect<F>>(&self, effect: E) -> Perform<'_, E, F> {
        Perform {
            fx: self,
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

    /// Completes once `d` has passed.
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

    /// Performs one effect with a time limit; running out is a retryable
    /// [`EffectError`] of kind `Timeout`, and the effect is cancelled.
    ///
    /// The same as [`timeout`](Fx::timeout) around [`perform`](Fx::perform), in one
    /// future: the effect and its timer are armed together and checked together.
    /// Dropping the future before it completes cancels both.
    pub fn perform_timeout<E: Effect<F>>(
        &self,
        effect: E,
        d: Duration,
    ) -> PerformTimeout<'_, E, F> {
        PerformTimeout {
            fx: self,
            limit: d,
            state: PerformTimeoutState::Ready(effect),
        }
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
    /// stops; between attempts it sleeps as long as the schedule says.
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
    state: PerformState<E>,
}

// The effect value is moved out by value, never pinned.
impl<E: Effect<F>, F: Family> Unpin for Perform<'_, E, F> {}

impl<E: Effect<F>, F: Family> Future for Perform<'_, E, F> {
    type Output = Result<E::Output, EffectError>;

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
                this.state = PerformState::Waiting(mailbox.request(effect.into_request()));
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

enum PerformTimeoutState<E> {
    Ready(E),
    Waiting { effect: EffectId, timer: EffectId },
    Done,
}

/// The future of [`Fx::perform_timeout`].
#[must_use = "an effect does nothing until awaited"]
pub struct PerformTimeout<'a, E: Effect<F>, F: Family = Std> {
    fx: &'a Fx<F>,
    limit: Duration,
    state: PerformTimeoutState<E>,
}

// The effect value is moved out by value, never pinned.
impl<E: Effect<F>, F: Family> Unpin for PerformTimeout<'_, E, F> {}

impl<E: Effect<F>, F: Family> PerformTimeout<'_, E, F> {
    fn elapsed(&self) -> EffectError {
        EffectError::timeout(E::NAME, format!("no answer within {:?}", self.limit))
    }
}

impl<E: Effect<F>, F: Family> Future for PerformTimeout<'_, E, F> {
    type Output = Result<E::Output, EffectError>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut mailbox = this.fx.mailbox.borrow_mut();
        match std::mem::replace(&mut this.state, PerformTimeoutState::Done) {
            PerformTimeoutState::Ready(effect) => {
                let effect = mailbox.request(effect.into_request());
                let at = mailbox.now + this.limit;
                if at <= mailbox.now {
                    // No time at all: asked, and given up at once.
                    mailbox.cancel(effect);
                    drop(mailbox);
                    return Poll::Ready(Err(this.elapsed()));
                }
                let timer = mailbox.timer(at);
                this.state = PerformTimeoutState::Waiting { effect, timer };
                Fx::mark_waiting(&mut mailbox);
                Poll::Pending
            }
            PerformTimeoutState::Waiting { effect, timer } => {
                // The answer wins a tie with the timer, as in `timeout`.
                if let Some(completion) = mailbox.take(effect) {
                    mailbox.cancel(timer);
                    return Poll::Ready(decode_completion::<E, F>(completion));
                }
                if mailbox.take(timer).is_some() {
                    mailbox.cancel(effect);
                    drop(mailbox);
                    return Poll::Ready(Err(this.elapsed()));
                }
                this.state = PerformTimeoutState::Waiting { effect, timer };
                Fx::mark_waiting(&mut mailbox);
                Poll::Pending
            }
            PerformTimeoutState::Done => panic!("effect future polled after it completed"),
        }
    }
}

impl<E: Effect<F>, F: Family> Drop for PerformTimeout<'_, E, F> {
    fn drop(&mut self) {
        if let PerformTimeoutState::Waiting { effect, timer } = self.state {
            // If the engine holds the mailbox (it is tearing the program down), it
            // cancels every outstanding effect itself.
            // The timer first, as `timeout(race(perform, sleep))` dropped them: the
            // mailbox reuses the slot freed last first, so this order keeps later ids.
            if let Ok(mut mailbox) = self.fx.mailbox.try_borrow_mut() {
                mailbox.cancel(timer);
                mailbox.cancel(effect);
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
                    let id = mailbox
                        .request_in_group(effect.into_request(), Some((group, position as u32)));
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
        Poll::Ready(results.into_iter().flatten().collect())
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
        if at <= mailbox.now {
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
