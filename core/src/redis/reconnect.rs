//! `Reconnect`: when to connect again after a connection fails, as a sans-IO policy
//! over a [`Schedule`].

use std::time::Duration;

use crate::rng::Rng;
use crate::schedule::{Schedule, ScheduleState};
use crate::time::Time;

/// What the driver should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconnectAction {
    /// Open a new connection (then tell [`Reconnect::handle_connected`] or
    /// [`Reconnect::handle_failed`]).
    Connect,
    /// Stop trying: the schedule is spent, or the failure cannot be mended by retrying.
    GiveUp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A connection attempt is under way, or the connection is up.
    Busy,
    /// Waiting until the time to try again.
    Waiting(Time),
    /// Given up.
    Done,
}

/// Decides when to connect again after failures, with backoff from a [`Schedule`]
/// whose jitter draws from a seeded [`Rng`] the driver supplies.
///
/// - **inputs**: [`handle_connected`](Self::handle_connected) (a connection became
///   ready: the backoff starts over), [`handle_failed`](Self::handle_failed) (an
///   attempt failed or a connection broke), [`handle_timeout`](Self::handle_timeout).
/// - **outputs**: [`poll_action`](Self::poll_action), [`poll_timeout`](Self::poll_timeout).
///
/// Drain rule: after [`new`](Self::new) and after each input, drain `poll_action`,
/// then read `poll_timeout`.
///
/// ```
/// use std::time::Duration;
/// use effectful::{Rng, Schedule, Time};
/// use effectful::redis::{Reconnect, ReconnectAction};
///
/// let schedule = Schedule::exponential(Duration::from_millis(100)).recurs(2);
/// let mut r = Reconnect::new(Time::ZERO, schedule, Rng::from_seed(7));
/// assert_eq!(r.poll_action(), Some(ReconnectAction::Connect));
/// r.handle_failed(Time::ZERO, true);
/// assert_eq!(r.poll_action(), None);
/// assert_eq!(r.poll_timeout(), Some(Time::from_millis(100)));
/// r.handle_timeout(Time::from_millis(100));
/// assert_eq!(r.poll_action(), Some(ReconnectAction::Connect));
/// ```
#[derive(Clone, Debug)]
pub struct Reconnect {
    schedule: Schedule,
    state: ScheduleState,
    rng: Rng,
    /// When the current outage began (the first failure since the last success).
    outage_since: Option<Time>,
    phase: Phase,
    action: Option<ReconnectAction>,
    now: Time,
}

impl Reconnect {
    /// The backoff a pool uses unless told otherwise: 100 ms doubling, each delay
    /// ±20 %, at most 5 s apart, forever.
    pub fn default_schedule() -> Schedule {
        Schedule::exponential(Duration::from_millis(100))
            .jittered(0.2)
            .max_delay(Duration::from_secs(5))
    }

    /// A policy whose first action is to connect.
    pub fn new(now: Time, schedule: Schedule, rng: Rng) -> Reconnect {
        let state = schedule.start();
        Reconnect {
            schedule,
            state,
            rng,
            outage_since: None,
            phase: Phase::Busy,
            action: Some(ReconnectAction::Connect),
            now,
        }
    }

    /// A connection is up and ready: the next outage starts the backoff afresh.
    pub fn handle_connected(&mut self, now: Time) {
        self.advance(now);
        if self.phase == Phase::Done {
            return;
        }
        self.state = self.schedule.start();
        self.outage_since = None;
        self.phase = Phase::Busy;
    }

    /// A connection attempt failed, or a connection broke. `retryable` comes from
    /// [`ConnectionError::is_retryable`](super::ConnectionError::is_retryable); a
    /// failure that is not gives up at once.
    pub fn handle_failed(&mut self, now: Time, retryable: bool) {
        self.advance(now);
        if self.phase != Phase::Busy {
            return;
        }
        let since = *self.outage_since.get_or_insert(self.now);
        let delay = if retryable {
            self.schedule
                .next(&mut self.state, self.now - since, &mut self.rng)
        } else {
            None
        };
        match delay {
            Some(delay) => self.phase = Phase::Waiting(self.now + delay),
            None => {
                self.phase = Phase::Done;
                self.action = Some(ReconnectAction::GiveUp);
            }
        }
        self.handle_timeout(now);
    }

    /// Time has come: connects if the wait is over (harmless if early).
    pub fn handle_timeout(&mut self, now: Time) {
        self.advance(now);
        if let Phase::Waiting(at) = self.phase {
            if at <= self.now {
                self.phase = Phase::Busy;
                self.action = Some(ReconnectAction::Connect);
            }
        }
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<ReconnectAction> {
        self.action.take()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout), while waiting.
    pub fn poll_timeout(&self) -> Option<Time> {
        match self.phase {
            Phase::Waiting(at) => Some(at),
            _ => None,
        }
    }

    /// Retries scheduled in the current outage.
    pub fn attempts(&self) -> u32 {
        self.state.attempt()
    }

    fn advance(&mut self, now: Time) {
        self.now = self.now.max(now);
    }
}
