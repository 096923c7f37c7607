//! `Pool`: worked examples, then properties under random acquires, releases, opens,
//! resets, deaths and the passing of time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use effectful::Time;
use effectful::postgres::{AcquireId, ConnId, Mode, Pool, PoolConfig, PoolEvent, Release};
use proptest::prelude::*;

fn drain(pool: &mut Pool) -> Vec<PoolEvent> {
    std::iter::from_fn(|| pool.poll_event()).collect()
}

fn opens(events: &[PoolEvent]) -> Vec<ConnId> {
    events
        .iter()
        .filter_map(|e| match e {
            PoolEvent::Open { conn } => Some(*conn),
            _ => None,
        })
        .collect()
}

/// A pool whose first `min_size` connections are open.
fn warm(config: PoolConfig) -> (Pool, Vec<ConnId>) {
    let mut pool = Pool::new(config, Time::ZERO);
    let conns = opens(&drain(&mut pool));
    for c in &conns {
        pool.handle_opened(Time::ZERO, *c, true);
    }
    assert!(drain(&mut pool).is_empty());
    (pool, conns)
}

fn granted(events: &[PoolEvent], acquire: AcquireId) -> Option<ConnId> {
    events.iter().find_map(|e| match e {
        PoolEvent::Acquired { acquire: a, conn } if *a == acquire => Some(*conn),
        _ => None,
    })
}

#[test]
fn the_defaults_are_the_seeds() {
    let config = PoolConfig::default();
    assert_eq!((config.min_size, config.max_size), (5, 20));
    assert_eq!(config.command_timeout, Duration::from_secs(60));
    assert_eq!(config.max_inactive_lifetime, Duration::from_secs(300));
}

#[test]
fn a_new_pool_opens_min_size_connections() {
    let mut pool = Pool::new(PoolConfig::default(), Time::ZERO);
    assert_eq!(opens(&drain(&mut pool)).len(), 5);
    let status = pool.status();
    assert_eq!((status.size, status.opening, status.idle), (5, 5, 0));
}

#[test]
fn an_acquire_is_served_at_once_by_an_idle_connection() {
    let (mut pool, conns) = warm(PoolConfig::default().size(1, 2));
    let a = pool.acquire(Time::ZERO, Mode::Exclusive);
    assert_eq!(
        drain(&mut pool),
        vec![PoolEvent::Acquired {
            acquire: a,
            conn: conns[0]
        }]
    );
    let status = pool.status();
    assert_eq!((status.in_use, status.idle), (1, 0));
    assert!((status.utilisation - 0.5).abs() < 1e-9);
}

/// `take_granted` takes an acquire's grant only when it is the one event waiting:
/// a waiter not yet served gets `None`, and so does a grant queued behind other
/// events, which all stay queued in order.
#[test]
fn a_grant_is_taken_at_once_only_when_it_is_the_one_event_waiting() {
    let (mut pool, conns) = warm(PoolConfig::default().size(2, 2));
    let a = pool.acquire(Time::ZERO, Mode::Exclusive);
    let a_conn = pool.take_granted(a).expect("an idle connection");
    let b = pool.acquire(Time::ZERO, Mode::Exclusive);
    let b_conn = pool.take_granted(b).expect("the other idle connection");
    assert_eq!(BTreeSet::from([a_conn, b_conn]), BTreeSet::from_iter(conns));
    assert!(drain(&mut pool).is_empty(), "taken, not queued as well");
    assert_eq!(pool.status().in_use, 2, "held as granted acquires are");

    // Both connections held: c waits.
    let c = pool.acquire(Time::ZERO, Mode::Exclusive);
    assert_eq!(pool.take_granted(c), None);
    assert_eq!(granted(&drain(&mut pool), c), None);

    // b's connection breaks (its close is queued), then a's is freed for c: c's
    // grant comes behind the close and stays there.
    assert!(pool.release(Time::ZERO, b, Release::Broken));
    assert!(pool.release(Time::ZERO, a, Release::Clean));
    assert_eq!(pool.take_granted(c), None);
    let events = drain(&mut pool);
    assert_eq!(events.first(), Some(&PoolEvent::Close { conn: b_conn }));
    assert_eq!(granted(&events, c), Some(a_conn));
}

#[test]
fn waiters_beyond_max_size_are_served_first_come_first_served() {
    let (mut pool, conns) = warm(PoolConfig::default().size(1, 1));
    let t = Time::from_secs(1);
    let holder = pool.acquire(t, Mode::Exclusive);
    let first = pool.acquire(t, Mode::Exclusive);
    let second = pool.acquire(t, Mode::Exclusive);
    assert_eq!(granted(&drain(&mut pool), holder), Some(conns[0]));
    assert_eq!(pool.status().waiting, 2);
    assert_eq!(pool.status().size, 1, "never above max_size");
    pool.release(t, holder, Release::Clean);
    assert_eq!(
        drain(&mut pool),
        vec![PoolEvent::Acquired {
            acquire: first,
            conn: conns[0]
        }]
    );
    pool.release(t, first, Release::Clean);
    assert_eq!(granted(&drain(&mut pool), second), Some(conns[0]));
}

#[test]
fn a_timed_out_acquire_leaks_nothing() {
    let config = PoolConfig::default()
        .size(1, 1)
        .acquire_timeout(Duration::from_secs(2));
    let (mut pool, _) = warm(config);
    let holder = pool.acquire(Time::ZERO, Mode::Exclusive);
    let waiter = pool.acquire(Time::ZERO, Mode::Exclusive);
    drain(&mut pool);
    assert_eq!(pool.poll_timeout(), Some(Time::from_secs(2)));
    pool.handle_timeout(Time::from_secs(1));
    assert!(drain(&mut pool).is_empty(), "early: nothing");
    pool.handle_timeout(Time::from_secs(2));
    assert_eq!(
        drain(&mut pool),
        vec![PoolEvent::TimedOut { acquire: waiter }]
    );
    pool.release(Time::from_secs(3), holder, Release::Clean);
    assert!(
        drain(&mut pool).is_empty(),
        "the timed-out acquire gets nothing"
    );
    assert!(!pool.release(Time::from_secs(3), waiter, Release::Clean));
    let status = pool.status();
    assert_eq!((status.in_use, status.idle, status.waiting), (0, 1, 0));
}

#[test]
fn a_cancelled_acquire_is_never_served() {
    let (mut pool, _) = warm(PoolConfig::default().size(1, 1));
    let holder = pool.acquire(Time::ZERO, Mode::Exclusive);
    let waiter = pool.acquire(Time::ZERO, Mode::Exclusive);
    drain(&mut pool);
    assert!(pool.cancel_acquire(Time::ZERO, waiter));
    assert!(!pool.cancel_acquire(Time::ZERO, waiter));
    pool.release(Time::ZERO, holder, Release::Clean);
    assert!(drain(&mut pool).is_empty());
}

#[test]
fn shared_holders_pipeline_onto_one_connection_up_to_the_limit() {
    let (mut pool, conns) = warm(
        PoolConfig::default()
            .size(2, 2)
            .max_shared_per_connection(3),
    );
    let ids: Vec<_> = (0..4)
        .map(|_| pool.acquire(Time::ZERO, Mode::Shared))
        .collect();
    let events = drain(&mut pool);
    let on: Vec<_> = ids.iter().map(|a| granted(&events, *a).unwrap()).collect();
    assert_eq!(on[0], on[1]);
    assert_eq!(on[1], on[2]);
    assert_ne!(on[2], on[3], "the fourth goes to the other connection");
    assert!(conns.contains(&on[3]));
    // An exclusive acquire now waits: both connections are in shared use.
    let ex = pool.acquire(Time::ZERO, Mode::Exclusive);
    assert!(drain(&mut pool).is_empty());
    pool.release(Time::ZERO, ids[3], Release::Clean);
    assert_eq!(granted(&drain(&mut pool), ex), Some(on[3]));
}

#[test]
fn idle_connections_above_min_size_close_after_the_inactive_lifetime() {
    let config = PoolConfig::default()
        .size(1, 3)
        .max_inactive_lifetime(Duration::from_secs(300))
        .check_after_idle(Duration::from_secs(10_000));
    let (mut pool, _) = warm(config);
    let a = pool.acquire(Time::ZERO, Mode::Exclusive);
    let b = pool.acquire(Time::ZERO, Mode::Exclusive);
    let c = pool.acquire(Time::ZERO, Mode::Exclusive);
    for conn in opens(&drain(&mut pool)) {
        pool.handle_opened(Time::ZERO, conn, true);
    }
    drain(&mut pool);
    assert_eq!(pool.status().in_use, 3);
    for x in [a, b, c] {
        pool.release(Time::from_secs(10), x, Release::Clean);
    }
    assert_eq!(pool.poll_timeout(), Some(Time::from_secs(310)));
    pool.handle_timeout(Time::from_secs(310));
    let closed = drain(&mut pool)
        .iter()
        .filter(|e| matches!(e, PoolEvent::Close { .. }))
        .count();
    assert_eq!(closed, 2);
    assert_eq!(pool.status().size, 1, "min_size stays");
}

#[test]
fn a_dirty_release_is_reset_before_reuse_and_a_failed_reset_replaces_the_connection() {
    let (mut pool, conns) = warm(PoolConfig::default().size(1, 1));
    let a = pool.acquire(Time::ZERO, Mode::Exclusive);
    drain(&mut pool);
    pool.release(Time::ZERO, a, Release::Dirty);
    assert_eq!(drain(&mut pool), vec![PoolEvent::Reset { conn: conns[0] }]);
    let b = pool.acquire(Time::ZERO, Mode::Exclusive);
    assert!(drain(&mut pool).is_empty(), "waits for the reset");
    pool.handle_reset(Time::ZERO, conns[0], false);
    let events = drain(&mut pool);
    assert_eq!(events[0], PoolEvent::Close { conn: conns[0] });
    let new = opens(&events);
    assert_eq!(new.len(), 1);
    pool.handle_opened(Time::ZERO, new[0], true);
    assert_eq!(granted(&drain(&mut pool), b), Some(new[0]));
}

#[test]
fn a_broken_connection_is_closed_and_replaced_to_keep_min_size() {
    let (mut pool, conns) = warm(PoolConfig::default().size(2, 4));
    let a = pool.acquire(Time::ZERO, Mode::Shared);
    let conn = granted(&drain(&mut pool), a).unwrap();
    assert!(conns.contains(&conn));
    pool.release(Time::ZERO, a, Release::Broken);
    let events = drain(&mut pool);
    assert_eq!(events[0], PoolEvent::Close { conn });
    assert_eq!(opens(&events).len(), 1);
    assert_eq!(pool.status().size, 2);
}

#[test]
fn a_connection_that_dies_on_its_own_is_replaced() {
    let (mut pool, conns) = warm(PoolConfig::default().size(2, 4));
    pool.handle_closed(Time::ZERO, conns[0]);
    assert_eq!(opens(&drain(&mut pool)).len(), 1);
}

#[test]
fn a_failed_open_waits_for_the_backoff_before_opening_again() {
    let mut pool = Pool::new(PoolConfig::default().size(1, 1), Time::ZERO);
    let first = opens(&drain(&mut pool));
    pool.handle_opened(Time::ZERO, first[0], false);
    assert!(drain(&mut pool).is_empty());
    assert_eq!(pool.poll_timeout(), Some(Time::from_secs(1)));
    pool.handle_timeout(Time::from_secs(1));
    assert_eq!(opens(&drain(&mut pool)).len(), 1);
}

#[test]
fn a_connection_past_its_lifetime_is_replaced_when_idle() {
    let config = PoolConfig::default()
        .size(1, 1)
        .max_lifetime(Some(Duration::from_secs(60)))
        .check_after_idle(Duration::from_secs(10_000));
    let (mut pool, conns) = warm(config);
    let a = pool.acquire(Time::ZERO, Mode::Exclusive);
    drain(&mut pool);
    pool.handle_timeout(Time::from_secs(61));
    assert!(drain(&mut pool).is_empty(), "in use: kept until released");
    pool.release(Time::from_secs(62), a, Release::Clean);
    let events = drain(&mut pool);
    assert_eq!(events[0], PoolEvent::Close { conn: conns[0] });
    assert_eq!(opens(&events).len(), 1);
}

#[test]
fn a_connection_idle_for_long_is_checked_before_it_is_handed_out() {
    let config = PoolConfig::default()
        .size(1, 1)
        .check_after_idle(Duration::from_secs(30));
    let (mut pool, conns) = warm(config);
    let a = pool.acquire(Time::from_secs(31), Mode::Shared);
    assert_eq!(drain(&mut pool), vec![PoolEvent::Reset { conn: conns[0] }]);
    pool.handle_reset(Time::from_secs(31), conns[0], true);
    assert_eq!(granted(&drain(&mut pool), a), Some(conns[0]));
}

// ---- properties ----

#[derive(Clone, Debug)]
enum Op {
    Acquire(bool),
    Release(usize, u8),
    Cancel(usize),
    Opened(usize, bool),
    Reset(usize, bool),
    Died(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<bool>().prop_map(Op::Acquire),
        3 => (any::<usize>(), 0u8..3).prop_map(|(i, h)| Op::Release(i, h)),
        1 => any::<usize>().prop_map(Op::Cancel),
        3 => (any::<usize>(), prop::bool::weighted(0.85)).prop_map(|(i, ok)| Op::Opened(i, ok)),
        2 => (any::<usize>(), prop::bool::weighted(0.85)).prop_map(|(i, ok)| Op::Reset(i, ok)),
        1 => any::<usize>().prop_map(Op::Died),
        2 => (0u64..400_000).prop_map(Op::Advance),
    ]
}

/// The driver's view, checked against every event.
#[derive(Default)]
struct Model {
    waiting: BTreeSet<AcquireId>,
    held: BTreeMap<AcquireId, (ConnId, Mode)>,
    ended: BTreeSet<AcquireId>,
    opening: BTreeSet<ConnId>,
    resetting: BTreeSet<ConnId>,
    known: BTreeSet<ConnId>,
}

impl Model {
    fn apply(&mut self, events: Vec<PoolEvent>) -> Result<(), TestCaseError> {
        for e in events {
            match e {
                PoolEvent::Open { conn } => {
                    prop_assert!(self.known.insert(conn), "ids are never reused");
                    self.opening.insert(conn);
                }
                PoolEvent::Reset { conn } => {
                    prop_assert!(self.known.contains(&conn));
                    prop_assert!(
                        !self.held.values().any(|(c, _)| *c == conn),
                        "a connection is reset only when nobody holds it"
                    );
                    self.resetting.insert(conn);
                }
                PoolEvent::Close { conn } => {
                    prop_assert!(
                        !self.held.values().any(|(c, _)| *c == conn),
                        "a connection is closed only when nobody holds it"
                    );
                    self.resetting.remove(&conn);
                    self.opening.remove(&conn);
                }
                PoolEvent::Acquired { acquire, conn } => {
                    prop_assert!(self.waiting.remove(&acquire), "granted once, while waiting");
                    prop_assert!(!self.opening.contains(&conn) && !self.resetting.contains(&conn));
                    let others: Vec<Mode> = self
                        .held
                        .values()
                        .filter(|(c, _)| *c == conn)
                        .map(|(_, m)| *m)
                        .collect();
                    prop_assert!(
                        !others.contains(&Mode::Exclusive),
                        "an exclusive holder shares with no one"
                    );
                    self.held.insert(acquire, (conn, Mode::Shared));
                    // Mode is filled in by the caller, who knows what it asked.
                    self.ended.insert(acquire);
                }
                PoolEvent::TimedOut { acquire } => {
                    prop_assert!(
                        self.waiting.remove(&acquire),
                        "times out once, while waiting"
                    );
                    prop_assert!(self.ended.insert(acquire));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn pick<T: Copy>(set: impl IntoIterator<Item = T>, i: usize) -> Option<T> {
    let v: Vec<T> = set.into_iter().collect();
    (!v.is_empty()).then(|| v[i % v.len()])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_pool_never_exceeds_max_size_never_leaks_and_keeps_min_size(
        min in 0usize..4,
        extra in 1usize..4,
        shared_limit in 1usize..4,
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let config = PoolConfig::default()
            .size(min, min + extra)
            .acquire_timeout(Duration::from_secs(5))
            .max_inactive_lifetime(Duration::from_secs(60))
            .max_lifetime(Some(Duration::from_secs(600)))
            .check_after_idle(Duration::from_secs(30))
            .max_shared_per_connection(shared_limit);
        let max = config.max_size;
        let mut now = Time::ZERO;
        let mut pool = Pool::new(config, now);
        let mut model = Model::default();
        let mut modes = BTreeMap::new();
        model.apply(drain(&mut pool))?;
        for op in ops {
            match op {
                Op::Acquire(exclusive) => {
                    let mode = if exclusive { Mode::Exclusive } else { Mode::Shared };
                    let id = pool.acquire(now, mode);
                    model.waiting.insert(id);
                    modes.insert(id, mode);
                }
                Op::Release(i, how) => {
                    if let Some(id) = pick(model.held.keys().copied(), i) {
                        let how = [Release::Clean, Release::Dirty, Release::Broken][how as usize];
                        prop_assert!(pool.release(now, id, how));
                        model.held.remove(&id);
                    }
                }
                Op::Cancel(i) => {
                    if let Some(id) = pick(model.waiting.iter().copied(), i) {
                        prop_assert!(pool.cancel_acquire(now, id));
                        model.waiting.remove(&id);
                        model.ended.insert(id);
                    }
                }
                Op::Opened(i, ok) => {
                    if let Some(conn) = pick(model.opening.iter().copied(), i) {
                        model.opening.remove(&conn);
                        pool.handle_opened(now, conn, ok);
                    }
                }
                Op::Reset(i, ok) => {
                    if let Some(conn) = pick(model.resetting.iter().copied(), i) {
                        model.resetting.remove(&conn);
                        pool.handle_reset(now, conn, ok);
                    }
                }
                Op::Died(i) => {
                    let live: Vec<ConnId> = model.known.iter().copied()
                        .filter(|c| !model.opening.contains(c)).collect();
                    if let Some(conn) = pick(live, i) {
                        model.resetting.remove(&conn);
                        pool.handle_closed(now, conn);
                    }
                }
                Op::Advance(ms) => {
                    now = now + Duration::from_millis(ms);
                    pool.handle_timeout(now);
                }
            }
            let events = drain(&mut pool);
            model.apply(events)?;
            for (id, (_, mode)) in model.held.iter_mut() {
                *mode = modes[id];
            }
            let exclusive_conns: Vec<ConnId> = model.held.values()
                .filter(|(_, m)| *m == Mode::Exclusive).map(|(c, _)| *c).collect();
            for c in &exclusive_conns {
                prop_assert_eq!(model.held.values().filter(|(x, _)| x == c).count(), 1,
                    "an exclusive holder shares with no one");
            }
            let status = pool.status();
            prop_assert!(status.size <= max, "size {} above max {}", status.size, max);
            prop_assert_eq!(status.waiting, model.waiting.len());
            if status.waiting > 0 {
                prop_assert!(pool.poll_timeout().is_some(), "a waiter always has a deadline");
            }
        }

        // Wind down: every holder releases, every open and reset succeeds, and time
        // passes past every timeout.
        for id in model.held.keys().copied().collect::<Vec<_>>() {
            prop_assert!(pool.release(now, id, Release::Clean));
        }
        model.held.clear();
        for _ in 0..8 {
            let events = drain(&mut pool);
            model.apply(events)?;
            for id in model.held.keys().copied().collect::<Vec<_>>() {
                prop_assert!(pool.release(now, id, Release::Clean));
                model.held.remove(&id);
            }
            for conn in std::mem::take(&mut model.opening) {
                pool.handle_opened(now, conn, true);
            }
            for conn in std::mem::take(&mut model.resetting) {
                pool.handle_reset(now, conn, true);
            }
            now = now + Duration::from_secs(700);
            pool.handle_timeout(now);
        }
        let events = drain(&mut pool);
        model.apply(events)?;
        for conn in std::mem::take(&mut model.opening) {
            pool.handle_opened(now, conn, true);
        }
        model.apply(drain(&mut pool))?;
        let status = pool.status();
        prop_assert!(model.waiting.is_empty(), "every acquire ended");
        prop_assert_eq!(status.in_use, 0, "nothing leaked");
        prop_assert_eq!(status.size, min, "back to min_size once idle ones expire");
        prop_assert_eq!(status.idle + status.resetting, min);
    }
}
