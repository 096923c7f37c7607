//! One sleep that wakes its owner no later than a state machine's deadline.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};

use effectful::Time;
use tokio::time::Sleep;

use crate::clock::Clock;

/// A sleep that ends no later than the deadline its owner wants: a shard's engine,
/// a PostgreSQL client's service, a Redis connection, a WebSocket session (each
/// one's `poll_timeout()`).
///
/// It is re-armed only for a deadline earlier than the one armed, or when none is:
/// a later one leaves it as it is. Every query, batch or frame moves such a
/// deadline on (an effect's time limit, a command timeout, an idle timeout), and
/// resetting tokio's timer each time would cost more than the work itself. Armed
/// too early, it wakes the owner once for nothing: the owner calls
/// `handle_timeout`, which finds nothing due yet, and wants what is due then (the
/// sleep is no longer armed once it has fired, so that arms it).
///
/// It is polled only when it must be: after a poll, tokio keeps the task's waker
/// and wakes it when the sleep fires, so an owner that looks at it on every turn of
/// its loop pays for one poll per arming, not one per turn. One task must poll it
/// (tokio keeps the waker of the last poll only).
pub(crate) struct DeadlineSleep {
    clock: Clock,
    /// Made on the first arming (making one needs the runtime, an owner may be made
    /// outside it).
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the sleep ends, while it is armed.
    armed: Option<Time>,
    /// Reset since its last poll that reached the timer: it holds no waker of
    /// this arming yet.
    unpolled: bool,
}

impl DeadlineSleep {
    /// A sleep armed for nothing, on `clock`.
    pub(crate) fn new(clock: Clock) -> DeadlineSleep {
        DeadlineSleep {
            clock,
            sleep: None,
            armed: None,
            unpolled: false,
        }
    }

    /// When the sleep ends, if it is armed.
    pub(crate) fn armed(&self) -> Option<Time> {
        self.armed
    }

    /// Makes the sleep end no later than `at`: re-arms it if `at` is earlier than
    /// the armed deadline or none is armed. Nothing wanted leaves it as it is (an
    /// armed sleep then wakes the owner once for nothing).
    ///
    /// Returns whether it re-armed: the owner's task must then poll it (a timer task
    /// waiting elsewhere must be told to look).
    pub(crate) fn want(&mut self, at: Option<Time>) -> bool {
        let Some(at) = at else {
            return false;
        };
        if self.armed.is_some_and(|armed| at >= armed) {
            return false;
        }
        let instant: tokio::time::Instant = self.clock.instant(at).into();
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(instant),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(instant))),
        }
        self.armed = Some(at);
        self.unpolled = true;
        true
    }

    /// `Ready` once the armed deadline has come; the sleep is then disarmed. Never
    /// ready while disarmed (it needs no guard in a `select!`).
    pub(crate) fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(sleep) = self.sleep.as_mut().filter(|_| self.armed.is_some()) else {
            return Poll::Pending;
        };
        // Polled since it was armed: it holds this task's waker until it fires.
        if !self.unpolled && !sleep.is_elapsed() {
            return Poll::Pending;
        }
        // Out of tokio's cooperative budget, the poll does not reach the timer (and
        // leaves no waker with it): the next poll must reach it.
        let reaches_timer = tokio::task::coop::has_budget_remaining();
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.armed = None;
                self.unpolled = false;
                Poll::Ready(())
            }
            Poll::Pending => {
                self.unpolled = !reaches_timer;
                Poll::Pending
            }
        }
    }

    /// Resolves once the armed deadline has come (see
    /// [`poll_elapsed`](Self::poll_elapsed)); pending for good while disarmed.
    #[cfg_attr(not(any(feature = "redis", test)), allow(dead_code))]
    pub(crate) async fn elapsed(&mut self) {
        poll_fn(|cx| self.poll_elapsed(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::{Instant, timeout};

    use super::*;

    fn after(clock: &Clock, ms: u64) -> Time {
        clock.now() + Duration::from_millis(ms)
    }

    /// The OS instant of `at`, as tokio's.
    fn instant(clock: &Clock, at: Time) -> Instant {
        clock.instant(at).into()
    }

    #[tokio::test]
    async fn an_earlier_deadline_rearms_it_and_a_later_one_or_none_does_not() {
        let clock = Clock::start();
        let mut sleep = DeadlineSleep::new(clock);
        let (soon, later) = (after(&clock, 60_000), after(&clock, 120_000));
        assert!(sleep.want(Some(later)), "none was armed");
        assert!(sleep.want(Some(soon)), "earlier");
        assert!(!sleep.want(Some(later)), "later");
        assert!(!sleep.want(Some(soon)), "the same");
        assert!(!sleep.want(None), "nothing wanted");
        assert_eq!(sleep.armed(), Some(soon));
        let tokio_deadline = sleep.sleep.as_ref().map(|s| s.deadline());
        assert_eq!(tokio_deadline, Some(instant(&clock, soon)));
    }

    #[tokio::test]
    async fn it_fires_at_the_armed_time_and_is_then_disarmed() {
        let clock = Clock::start();
        let mut sleep = DeadlineSleep::new(clock);
        let at = after(&clock, 30);
        sleep.want(Some(at));
        timeout(Duration::from_secs(10), sleep.elapsed())
            .await
            .expect("fired within 10 s");
        assert!(Instant::now() >= instant(&clock, at), "not before its time");
        assert_eq!(sleep.armed(), None);
        assert!(sleep.want(Some(after(&clock, 60_000))), "armed again");
    }

    #[tokio::test]
    async fn a_deadline_already_past_fires_at_once() {
        let clock = Clock::start();
        let mut sleep = DeadlineSleep::new(clock);
        sleep.want(Some(Time::ZERO));
        timeout(Duration::from_secs(10), sleep.elapsed())
            .await
            .expect("fired");
    }

    #[tokio::test]
    async fn disarmed_it_never_fires() {
        let clock = Clock::start();
        let mut sleep = DeadlineSleep::new(clock);
        let never_armed = timeout(Duration::from_millis(50), sleep.elapsed()).await;
        assert!(never_armed.is_err(), "never armed");
        sleep.want(Some(after(&clock, 10)));
        timeout(Duration::from_secs(10), sleep.elapsed())
            .await
            .expect("fired");
        let fired = timeout(Duration::from_millis(50), sleep.elapsed()).await;
        assert!(fired.is_err(), "disarmed once it fired");
    }

    /// The owner's loop: a later deadline does not move the sleep, so it wakes at the
    /// earlier one; nothing is due, and what the owner wants then arms it again.
    #[tokio::test]
    async fn an_early_wake_is_reported_and_the_owner_looks_again() {
        let clock = Clock::start();
        let mut sleep = DeadlineSleep::new(clock);
        let (early, due) = (after(&clock, 20), after(&clock, 60_000));
        sleep.want(Some(early));
        assert!(
            !sleep.want(Some(due)),
            "a later deadline leaves it armed early"
        );
        timeout(Duration::from_secs(10), sleep.elapsed())
            .await
            .expect("woke at the early deadline");
        assert!(Instant::now() < instant(&clock, due), "before what is due");
        assert_eq!(sleep.armed(), None);
        assert!(sleep.want(Some(due)), "armed for what is due");
        assert_eq!(sleep.armed(), Some(due));
    }

    /// Polled once its task is out of cooperative budget, the sleep is not
    /// registered with the timer: it must not be skipped at the next poll, or the
    /// owner is never woken.
    #[tokio::test]
    async fn a_poll_refused_for_want_of_budget_is_made_again() {
        let clock = Clock::start();
        let mut sleep = DeadlineSleep::new(clock);
        sleep.want(Some(after(&clock, 20)));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..1000 {
            tx.send(()).expect("open");
        }
        poll_fn(|cx| {
            // Each message received spends a unit of the task's budget.
            while rx.poll_recv(cx).is_ready() {}
            assert!(!tokio::task::coop::has_budget_remaining(), "budget spent");
            assert!(sleep.poll_elapsed(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        timeout(Duration::from_secs(10), sleep.elapsed())
            .await
            .expect("woken when it fired");
    }
}
