//! The reconnect policy: backoff between attempts, a fresh start after success,
//! giving up when told a failure cannot be mended.

use std::time::Duration;

use effectful::redis::{Reconnect, ReconnectAction};
use effectful::{Rng, Schedule, Time};

#[test]
fn failures_back_off_and_success_starts_over() {
    let schedule = Schedule::exponential(Duration::from_millis(100));
    let mut r = Reconnect::new(Time::ZERO, schedule, Rng::from_seed(1));
    assert_eq!(r.poll_action(), Some(ReconnectAction::Connect));
    assert_eq!(r.poll_action(), None);
    let mut now = Time::ZERO;
    for expected_ms in [100, 200, 400] {
        r.handle_failed(now, true);
        let at = r.poll_timeout().expect("waiting");
        assert_eq!(at - now, Duration::from_millis(expected_ms));
        r.handle_timeout(Time::from_nanos(at.as_nanos() - 1));
        assert_eq!(r.poll_action(), None, "not before its time");
        r.handle_timeout(at);
        assert_eq!(r.poll_action(), Some(ReconnectAction::Connect));
        now = at;
    }
    assert_eq!(r.attempts(), 3);
    r.handle_connected(now);
    r.handle_failed(now, true);
    assert_eq!(
        r.poll_timeout().map(|at| at - now),
        Some(Duration::from_millis(100))
    );
}

#[test]
fn a_spent_schedule_or_a_hopeless_failure_gives_up() {
    let mut r = Reconnect::new(Time::ZERO, Schedule::recurs_only(1), Rng::from_seed(1));
    r.poll_action();
    r.handle_failed(Time::ZERO, true);
    assert_eq!(
        r.poll_action(),
        Some(ReconnectAction::Connect),
        "a zero delay connects at once"
    );
    r.handle_failed(Time::ZERO, true);
    assert_eq!(r.poll_action(), Some(ReconnectAction::GiveUp));
    assert_eq!(r.poll_timeout(), None);

    let mut r = Reconnect::new(Time::ZERO, Reconnect::default_schedule(), Rng::from_seed(1));
    r.poll_action();
    r.handle_failed(Time::ZERO, false);
    assert_eq!(r.poll_action(), Some(ReconnectAction::GiveUp));
}

#[test]
fn the_default_schedule_is_jittered_and_capped() {
    let delays = Reconnect::default_schedule().delays(Duration::ZERO, 3);
    assert_eq!(delays.len(), 10_000, "it never gives up by itself");
    assert!(delays.iter().all(|d| *d <= Duration::from_secs(5)));
    assert!(delays[0] >= Duration::from_millis(80) && delays[0] <= Duration::from_millis(120));
}
