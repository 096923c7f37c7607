//! [`Pool`]: which connection serves which holder, when to open, check and close
//! connections; a sans-IO state machine that never holds a connection itself.

mod config;

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap as HashMap;

pub use config::PoolConfig;

use crate::time::Time;

/// Names one connection of a pool; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Names one acquire; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AcquireId(pub u64);

/// How a holder uses its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Alongside other shared holders, each query pipelined in its own Sync unit:
    /// single statements and atomic batches.
    Shared,
    /// Alone, for as long as it holds it: an interactive transaction, `LISTEN`.
    Exclusive,
}

/// How a holder gives its connection back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// As it was handed out: reusable at once.
    Clean,
    /// The holder may have left session state (a transaction, `LISTEN`, `SET`): the
    /// pool asks for a reset before anyone else gets it.
    Dirty,
    /// The connection failed: the pool closes it and opens another if needed.
    Broken,
}

/// What the pool asks its driver to do, or tells an acquirer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolEvent {
    /// Open a new connection under this id; report with
    /// [`handle_opened`](Pool::handle_opened).
    Open {
        /// The new connection.
        conn: ConnId,
    },
    /// Reset the connection (roll back, `DISCARD ALL`) or check its health
    /// (`SELECT 1`); report with [`handle_reset`](Pool::handle_reset).
    Reset {
        /// The connection.
        conn: ConnId,
    },
    /// Close the connection; the pool has already forgotten it.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// The acquire got its connection.
    Acquired {
        /// The acquire.
        acquire: AcquireId,
        /// Its connection.
        conn: ConnId,
    },
    /// The acquire waited `acquire_timeout` without getting one; nothing is held for it.
    TimedOut {
        /// The acquire.
        acquire: AcquireId,
    },
}

/// The pool's figures at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolStatus {
    /// Connections open or opening.
    pub size: usize,
    /// Connections open and held by nobody.
    pub idle: usize,
    /// Connections held by at least one holder.
    pub in_use: usize,
    /// Acquires waiting.
    pub waiting: usize,
    /// Connections being opened.
    pub opening: usize,
    /// Connections being reset or checked.
    pub resetting: usize,
    /// `in_use / max_size`, from 0 to 1.
    pub utilisation: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Opening,
    Ready,
    Resetting,
}

#[derive(Debug)]
struct Slot {
    state: SlotState,
    shared: usize,
    exclusive: bool,
    created: Time,
    idle_since: Time,
    /// Close when next free (past its lifetime, or reported broken).
    retire: bool,
}

impl Slot {
    fn is_free(&self) -> bool {
        self.shared == 0 && !self.exclusive
    }
}

/// The slot of `conn`, if it is in `state` (a report about it in any other state is
/// stale).
fn slot_in(
    slots: &mut BTreeMap<ConnId, Slot>,
    conn: ConnId,
    state: SlotState,
) -> Option<&mut Slot> {
    slots.get_mut(&conn).filter(|s| s.state == state)
}

#[derive(Debug)]
struct Waiter {
    id: AcquireId,
    mode: Mode,
    deadline: Time,
}

/// A connection pool as a sans-IO state machine. It never touches a connection: it
/// decides, and its driver opens, resets and closes connections and routes holders'
/// work to the connection each was given.
///
/// Holders come in two [`Mode`]s: shared holders pipeline onto the same connection
/// (packed up to `max_shared_per_connection` per connection, so others stay free
/// for exclusive use and can expire), exclusive holders get a connection to
/// themselves.
///
/// # Methods by kind
/// - **Inputs** (each takes `now`): [`acquire`](Self::acquire),
///   [`cancel_acquire`](Self::cancel_acquire), [`release`](Self::release),
///   [`handle_opened`](Self::handle_opened), [`handle_reset`](Self::handle_reset),
///   [`handle_closed`](Self::handle_closed), [`handle_timeout`](Self::handle_timeout).
/// - **Outputs**: [`poll_event`](Self::poll_event), [`poll_timeout`](Self::poll_timeout).
/// - **Getters**: [`status`](Self::status), [`config`](Self::config).
///
/// # The drain rule
/// After every input, drain [`poll_event`](Self::poll_event) until `None`, then read
/// [`poll_timeout`](Self::poll_timeout) and call [`handle_timeout`](Self::handle_timeout)
/// no later than it (an early call is harmless).
///
/// # Guarantees
/// - Connections (open or opening) never exceed `max_size`.
/// - Every acquire ends exactly once: [`PoolEvent::Acquired`], [`PoolEvent::TimedOut`]
///   or a successful [`cancel_acquire`](Self::cancel_acquire). One that times out or is
///   cancelled holds nothing.
/// - Waiters are served first come, first served among those a freed connection can
///   serve.
/// - An exclusive holder shares its connection with no one.
/// - Idle connections above `min_size` close after `max_inactive_lifetime`; the pool
///   opens connections to keep `min_size` (after a failed open, no sooner than
///   `open_backoff`).
/// - A connection idle `check_after_idle` or released [`Release::Dirty`] is reset or
///   checked before its next holder gets it.
#[derive(Debug)]
pub struct Pool {
    config: PoolConfig,
    slots: BTreeMap<ConnId, Slot>,
    waiters: VecDeque<Waiter>,
    grants: HashMap<AcquireId, (ConnId, Mode)>,
    events: VecDeque<PoolEvent>,
    next_conn: u64,
    next_acquire: u64,
    open_blocked_until: Time,
    now: Time,
}

impl Pool {
    /// A pool that starts opening `min_size` connections at once.
    pub fn new(config: PoolConfig, now: Time) -> Pool {
        let mut pool = Pool {
            config,
            slots: BTreeMap::new(),
            waiters: VecDeque::new(),
            grants: HashMap::default(),
            events: VecDeque::new(),
            next_conn: 0,
            next_acquire: 0,
            open_blocked_until: Time::ZERO,
            now,
        };
        pool.maintain();
        pool
    }

    /// The settings.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The figures now.
    pub fn status(&self) -> PoolStatus {
        let count = |f: &dyn Fn(&Slot) -> bool| self.slots.values().filter(|s| f(s)).count();
        let in_use = count(&|s| !s.is_free());
        PoolStatus {
            size: self.slots.len(),
            idle: count(&|s| s.state == SlotState::Ready && s.is_free()),
            in_use,
            waiting: self.waiters.len(),
            opening: count(&|s| s.state == SlotState::Opening),
            resetting: count(&|s| s.state == SlotState::Resetting),
            utilisation: if self.config.max_size == 0 {
                0.0
            } else {
                in_use as f64 / self.config.max_size as f64
            },
        }
    }

    fn tick(&mut self, now: Time) {
        self.now = self.now.max(now);
    }

    // ---- outputs ----

    /// The next thing to do or to tell.
    pub fn poll_event(&mut self) -> Option<PoolEvent> {
        self.events.pop_front()
    }

    /// Takes `acquire`'s [`PoolEvent::Acquired`] when it is the one event waiting (the
    /// acquire just made was granted at once, nothing else happened): its holder can
    /// start without a round through [`poll_event`](Self::poll_event). `None` (and the
    /// events left as they are) otherwise.
    pub fn take_granted(&mut self, acquire: AcquireId) -> Option<ConnId> {
        match self.events.front() {
            Some(&PoolEvent::Acquired { acquire: a, conn })
                if a == acquire && self.events.len() == 1 =>
            {
                self.events.clear();
                Some(conn)
            }
            _ => None,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        let waiters = self.waiters.iter().map(|w| w.deadline);
        let above_min = self.slots.len() > self.config.min_size;
        let idle = self
            .slots
            .values()
            .filter(|s| s.state == SlotState::Ready && s.is_free())
            .flat_map(|s| {
                let inactive = above_min.then(|| s.idle_since + self.config.max_inactive_lifetime);
                let lifetime = self.config.max_lifetime.map(|l| s.created + l);
                inactive.into_iter().chain(lifetime)
            });
        let reopen = (self.now < self.open_blocked_until && self.open_deficit() > 0)
            .then_some(self.open_blocked_until);
        waiters.chain(idle).chain(reopen).min()
    }

    // ---- inputs ----

    /// Asks for a connection; the answer comes as [`PoolEvent::Acquired`] (perhaps at
    /// once) or [`PoolEvent::TimedOut`].
    pub fn acquire(&mut self, now: Time, mode: Mode) -> AcquireId {
        self.tick(now);
        self.next_acquire += 1;
        let id = AcquireId(self.next_acquire);
        self.waiters.push_back(Waiter {
            id,
            mode,
            deadline: self.now + self.config.acquire_timeout,
        });
        self.serve();
        self.maintain();
        id
    }

    /// Withdraws an acquire still waiting (its program ended). `false` if it is not
    /// waiting: already granted (then [`release`](Self::release) it), timed out or
    /// unknown.
    pub fn cancel_acquire(&mut self, now: Time, acquire: AcquireId) -> bool {
        self.tick(now);
        let before = self.waiters.len();
        self.waiters.retain(|w| w.id != acquire);
        before != self.waiters.len()
    }

    /// Gives back what `acquire` got. `false` if it holds nothing (never granted,
    /// already released).
    pub fn release(&mut self, now: Time, acquire: AcquireId, how: Release) -> bool {
        self.tick(now);
        let Some((conn, mode)) = self.grants.remove(&acquire) else {
            return false;
        };
        if let Some(slot) = self.slots.get_mut(&conn) {
            match mode {
                Mode::Shared => slot.shared = slot.shared.saturating_sub(1),
                Mode::Exclusive => slot.exclusive = false,
            }
            match how {
                Release::Clean => {}
                Release::Dirty => {
                    if slot.is_free() && slot.state == SlotState::Ready && !slot.retire {
                        slot.state = SlotState::Resetting;
                        self.events.push_back(PoolEvent::Reset { conn });
                    }
                }
                Release::Broken => slot.retire = true,
            }
            if slot.is_free() {
                slot.idle_since = self.now;
                let expired = self
                    .config
                    .max_lifetime
                    .is_some_and(|l| self.now >= slot.created + l);
                if (slot.retire || expired) && slot.state == SlotState::Ready {
                    self.close(conn);
                }
            }
        }
        self.serve();
        self.maintain();
        true
    }

    /// A connection asked for by [`PoolEvent::Open`] is ready (`ok`) or failed to
    /// open.
    pub fn handle_opened(&mut self, now: Time, conn: ConnId, ok: bool) {
        self.tick(now);
        let Some(slot) = slot_in(&mut self.slots, conn, SlotState::Opening) else {
            return;
        };
        if ok {
            slot.state = SlotState::Ready;
            slot.created = self.now;
            slot.idle_since = self.now;
        } else {
            self.slots.remove(&conn);
            self.open_blocked_until = self.now + self.config.open_backoff;
        }
        self.serve();
        self.maintain();
    }

    /// A reset or health check asked for by [`PoolEvent::Reset`] succeeded (`ok`) or
    /// failed (then the pool closes the connection).
    pub fn handle_reset(&mut self, now: Time, conn: ConnId, ok: bool) {
        self.tick(now);
        let Some(slot) = slot_in(&mut self.slots, conn, SlotState::Resetting) else {
            return;
        };
        slot.state = SlotState::Ready;
        slot.idle_since = self.now;
        if !ok || slot.retire {
            self.close(conn);
        }
        self.serve();
        self.maintain();
    }

    /// The connection died on its own (the server closed it, a protocol error). Its
    /// holders still [`release`](Self::release) it; the pool replaces it as needed.
    pub fn handle_closed(&mut self, now: Time, conn: ConnId) {
        self.tick(now);
        if self.slots.remove(&conn).is_some() {
            self.serve();
            self.maintain();
        }
    }

    /// Time has passed: acquires past their timeout fail, idle connections past their
    /// inactive lifetime (above `min_size`) or their lifetime close, and the pool
    /// opens what it needs.
    pub fn handle_timeout(&mut self, now: Time) {
        self.tick(now);
        let now = self.now;
        let mut timed_out = Vec::new();
        self.waiters.retain(|w| {
            let expired = now >= w.deadline;
            if expired {
                timed_out.push(w.id);
            }
            !expired
        });
        for acquire in timed_out {
            self.events.push_back(PoolEvent::TimedOut { acquire });
        }
        // Oldest-idle first, so the most recently used stay warm.
        let mut idle: Vec<(Time, ConnId)> = self
            .slots
            .iter()
            .filter(|(_, s)| s.state == SlotState::Ready && s.is_free())
            .map(|(id, s)| (s.idle_since, *id))
            .collect();
        idle.sort_unstable();
        for (idle_since, conn) in idle {
            let Some(slot) = self.slots.get(&conn) else {
                continue;
            };
            let expired = self
                .config
                .max_lifetime
                .is_some_and(|l| now >= slot.created + l);
            let inactive = self.slots.len() > self.config.min_size
                && now >= idle_since + self.config.max_inactive_lifetime;
            if expired || inactive {
                self.close(conn);
            }
        }
        self.serve();
        self.maintain();
    }

    // ---- the decisions ----

    fn close(&mut self, conn: ConnId) {
        if self.slots.remove(&conn).is_some() {
            self.events.push_back(PoolEvent::Close { conn });
        }
    }

    /// A connection that can take a holder in `mode` now.
    fn pick(&self, mode: Mode) -> Option<ConnId> {
        let usable = |s: &Slot| s.state == SlotState::Ready && !s.exclusive && !s.retire;
        match mode {
            Mode::Exclusive => self
                .slots
                .iter()
                .filter(|(_, s)| usable(s) && s.shared == 0)
                .max_by_key(|(id, s)| (s.idle_since, std::cmp::Reverse(**id)))
                .map(|(id, _)| *id),
            Mode::Shared => self
                .slots
                .iter()
                .filter(|(_, s)| usable(s) && s.shared < self.config.max_shared_per_connection)
                .max_by_key(|(id, s)| (s.shared, s.idle_since, std::cmp::Reverse(**id)))
                .map(|(id, _)| *id),
        }
    }

    /// Hands connections to waiters, oldest first, among those a connection can serve.
    fn serve(&mut self) {
        let mut i = 0;
        while i < self.waiters.len() {
            let mode = self.waiters[i].mode;
            let Some(conn) = self.pick(mode) else {
                i += 1;
                continue;
            };
            let now = self.now;
            let Some(slot) = self.slots.get_mut(&conn) else {
                i += 1;
                continue;
            };
            if slot.is_free() && now >= slot.idle_since + self.config.check_after_idle {
                // Idle long enough to have gone stale: check it first, try another.
                slot.state = SlotState::Resetting;
                self.events.push_back(PoolEvent::Reset { conn });
                continue;
            }
            match mode {
                Mode::Shared => slot.shared += 1,
                Mode::Exclusive => slot.exclusive = true,
            }
            let Some(waiter) = self.waiters.remove(i) else {
                break;
            };
            self.grants.insert(waiter.id, (conn, mode));
            self.events.push_back(PoolEvent::Acquired {
                acquire: waiter.id,
                conn,
            });
        }
    }

    /// How many more connections the pool wants: to reach `min_size`, and for the
    /// waiters no connection can serve (less those already opening or resetting).
    fn open_deficit(&self) -> usize {
        let size = self.slots.len();
        // The steady state (every acquire and release of a pipelined query asks):
        // nobody waits and `min_size` is open, so nothing is wanted.
        if self.waiters.is_empty() && size >= self.config.min_size {
            return 0;
        }
        let coming = self
            .slots
            .values()
            .filter(|s| s.state != SlotState::Ready)
            .count();
        let exclusive = self
            .waiters
            .iter()
            .filter(|w| w.mode == Mode::Exclusive)
            .count();
        let shared = self.waiters.len() - exclusive;
        let for_waiters = (exclusive
            + shared.div_ceil(self.config.max_shared_per_connection.max(1)))
        .saturating_sub(coming);
        let for_min = self.config.min_size.saturating_sub(size);
        for_min
            .max(for_waiters)
            .min(self.config.max_size.saturating_sub(size))
    }

    /// Opens what [`open_deficit`](Self::open_deficit) says, unless backing off.
    fn maintain(&mut self) {
        if self.now < self.open_blocked_until {
            return;
        }
        for _ in 0..self.open_deficit() {
            self.next_conn += 1;
            let conn = ConnId(self.next_conn);
            self.slots.insert(
                conn,
                Slot {
                    state: SlotState::Opening,
                    shared: 0,
                    exclusive: false,
                    created: self.now,
                    idle_since: self.now,
                    retire: false,
                },
            );
            self.events.push_back(PoolEvent::Open { conn });
        }
    }
}
