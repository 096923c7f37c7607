//! The chat simulation: N clients joining the room, chatting, sending malformed and
//! unknown frames and leaving over a simulated duration, under faults, with the
//! invariants checked as each session ends (its transcript is checked and dropped:
//! memory follows the open sessions and the room, not the frames ever sent) and on
//! the room at the end, each check counted per [`Invariant`]. Used by the `simulate`
//! binary, its tests and the `sim/chat` bench.
//!
//! # Invariants
//! - every program finishes, before its deadline, without breaking the engine's rules;
//! - every frame the server sends is JSON of the protocol;
//! - the room holds no message twice (every scenario text is unique) and only what a
//!   client sent, under its own name;
//! - a `joined` history is the room's newest messages at the time of the join, at
//!   most the configured length, oldest first, consecutive in the room's order, and
//!   holds every message stored before the client asked to join;
//! - after its history, a client receives the room's messages in `seq` order with no
//!   gap and no repeat: **each message stored while it was joined reaches it exactly
//!   once, and all clients see the room in the same order**; each message it gets is
//!   one that was stored, as it was stored;
//! - and it does not fall behind: every message stored more than a grace period
//!   before its connection closed reached it. The grace period is 10 s (backoff and
//!   latency) plus the length of every outage, latency spike and restart in the
//!   fault plan (10 s each), since a session can only catch up once the database
//!   answers again.

use std::cell::RefCell;
use std::io::{self, Seek, Write};
use std::rc::Rc;
use std::time::Duration;

use effectful::effect::SharedRoomMessage;
use effectful::{ProgramError, Rng, Time, Timestamp};
use effectful_test::fake::{DEFAULT_WALL_EPOCH, wall_time};
use effectful_test::fault::FaultPlan;
use effectful_test::sim::{
    Connection, ConnectionEnd, SimConfig, SimReport, Simulation, Transcript,
};
use effectful_test::trace::TraceRecord;
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value;
use uuid::Uuid;

use crate::session::{ChatConfig, SessionEnd, chat_session};

/// One chat simulation run.
#[derive(Clone, Debug)]
pub struct ChatSimConfig {
    /// Fixes everything.
    pub seed: u64,
    /// How many clients (each with a name of its own).
    pub clients: u32,
    /// Clients start sessions within this much simulated time.
    pub duration: Duration,
    /// What goes wrong.
    pub faults: FaultPlan,
    /// Each program's deadline (the seed's 300 s).
    pub program_timeout: Duration,
    /// Keep a trace.
    pub record_trace: bool,
    /// The chat program's own configuration.
    pub chat: ChatConfig,
}

impl ChatSimConfig {
    /// `clients` clients for `duration`, no faults.
    pub fn new(seed: u64, clients: u32, duration: Duration) -> ChatSimConfig {
        ChatSimConfig {
            seed,
            clients,
            duration,
            faults: FaultPlan::none(),
            program_timeout: Duration::from_secs(300),
            record_trace: false,
            chat: ChatConfig::default(),
        }
    }

    /// Swarm testing: the seed also chooses the client count (1 to `max_clients`) and
    /// a fault plan of its own.
    pub fn swarm(seed: u64, max_clients: u32, duration: Duration) -> ChatSimConfig {
        let mut rng = Rng::derive(seed, "chat_sim.swarm", 0);
        let clients = 1 + rng.below(u64::from(max_clients.max(1))) as u32;
        let faults = FaultPlan::swarm_over(&mut rng, duration);
        ChatSimConfig {
            faults,
            ..ChatSimConfig::new(seed, clients, duration)
        }
    }
}

/// What one run produced.
#[derive(Debug)]
pub struct ChatRun {
    /// The simulator's counts.
    pub report: SimReport,
    /// How many checks each invariant made, and how many failed.
    pub checks: Checks,
    /// What failed, in words: must be empty. At most [`KEPT_PER_INVARIANT`] per
    /// invariant (the counts in `checks` are whole).
    pub violations: Vec<String>,
    /// Messages stored and seen by their own sender (each checked stored once).
    pub acked: usize,
    /// Room messages delivered live to clients (after their join), all checked.
    pub deliveries: usize,
    /// The trace, when recorded in memory (not when streamed).
    pub trace: Vec<TraceRecord>,
}

/// How many violations of one invariant a run keeps in words: a broken program can
/// break one rule on every frame, and the first few say what is wrong.
pub const KEPT_PER_INVARIANT: u64 = 20;

/// The rules a chat run is held to (the module docs say each in full).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invariant {
    /// Every program finishes, before its deadline, without breaking the engine's
    /// rules; checked once per program.
    ProgramsEnd,
    /// Every frame the server sends is JSON of the protocol; checked per frame.
    FramesAreProtocol,
    /// The room holds each message once, with `seq` 1, 2, 3, ..., each sent by the
    /// client whose name it bears; checked per stored message.
    RoomStoredOnce,
    /// A `joined` history is the room's newest messages at the join, as stored;
    /// checked per join.
    JoinHistory,
    /// Live messages arrive as stored, in `seq` order with no gap and no repeat;
    /// checked per delivered message.
    LiveInOrder,
    /// Every message stored more than the grace period before a session closed
    /// reached it; checked per session that joined.
    CaughtUp,
    /// The same seed twice gives the same trace (`simulate --check-determinism`);
    /// checked per seed.
    Deterministic,
}

impl Invariant {
    /// Every invariant, in report order.
    pub const ALL: [Invariant; 7] = [
        Invariant::ProgramsEnd,
        Invariant::FramesAreProtocol,
        Invariant::RoomStoredOnce,
        Invariant::JoinHistory,
        Invariant::LiveInOrder,
        Invariant::CaughtUp,
        Invariant::Deterministic,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::ProgramsEnd => "programs_end",
            Invariant::FramesAreProtocol => "frames_are_protocol",
            Invariant::RoomStoredOnce => "room_stored_once",
            Invariant::JoinHistory => "join_history",
            Invariant::LiveInOrder => "live_in_order",
            Invariant::CaughtUp => "caught_up",
            Invariant::Deterministic => "deterministic",
        }
    }

    /// What it holds, and what one check is, in a line.
    pub fn rule(self) -> &'static str {
        match self {
            Invariant::ProgramsEnd => {
                "every session program ends, before its deadline (one check per program)"
            }
            Invariant::FramesAreProtocol => {
                "every frame the server sends is protocol JSON (one per frame)"
            }
            Invariant::RoomStoredOnce => {
                "the room stores each message once, in seq order, as its sender sent it (one per stored message)"
            }
            Invariant::JoinHistory => {
                "the history on join is the room's newest messages, as stored (one per join)"
            }
            Invariant::LiveInOrder => {
                "each live message arrives as stored, next in seq order, no gap, no repeat (one per delivery)"
            }
            Invariant::CaughtUp => {
                "a session gets every message stored more than the grace period before it closed (one per session)"
            }
            Invariant::Deterministic => "the same seed twice gives the same trace (one per seed)",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How many checks each [`Invariant`] made, and how many of them failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checks {
    checked: [u64; Invariant::ALL.len()],
    failed: [u64; Invariant::ALL.len()],
}

impl Checks {
    /// Checks of `invariant` made.
    pub fn checked(&self, invariant: Invariant) -> u64 {
        self.checked[invariant.index()]
    }

    /// Checks of `invariant` that failed.
    pub fn failed(&self, invariant: Invariant) -> u64 {
        self.failed[invariant.index()]
    }

    /// Failed checks of every invariant.
    pub fn failures(&self) -> u64 {
        self.failed.iter().sum()
    }

    /// Counts one check of `invariant`; returns `ok`.
    pub fn record(&mut self, invariant: Invariant, ok: bool) -> bool {
        self.checked[invariant.index()] += 1;
        if !ok {
            self.failed[invariant.index()] += 1;
        }
        ok
    }

    /// Adds `n` checks of `invariant`, `failed` of them failed (counts read back
    /// from a report).
    pub fn add(&mut self, invariant: Invariant, n: u64, failed: u64) {
        let i = invariant.index();
        self.checked[i] = self.checked[i].saturating_add(n);
        self.failed[i] = self.failed[i].saturating_add(failed);
    }
}

impl std::ops::AddAssign for Checks {
    fn add_assign(&mut self, other: Checks) {
        for invariant in Invariant::ALL {
            let i = invariant.index();
            self.add(invariant, other.checked[i], other.failed[i]);
        }
    }
}

/// The chat program, as the simulator spawns it for each connection.
pub type ChatProgram = Box<
    dyn FnMut(
        u32,
        effectful::Fx,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<SessionEnd, effectful::EffectError>>>,
    >,
>;

/// The chat program as the simulator spawns it: one session per connection.
pub fn chat_program(
    config: Rc<ChatConfig>,
) -> impl FnMut(
    u32,
    effectful::Fx,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<SessionEnd, effectful::EffectError>>>,
> {
    move |_connection, fx| Box::pin(chat_session(fx, config.clone()))
}

/// One seed's simulation, set up and not run yet: every client's sessions are
/// scripted. Sessions are checked as they end (each transcript is checked and
/// dropped), so a run's memory follows the sessions open and the room, not every
/// frame ever sent.
pub struct ChatSim {
    sim: Simulation<Result<SessionEnd, effectful::EffectError>, ChatProgram>,
    checker: Rc<RefCell<Checker>>,
}

/// Runs one seed and checks the invariants.
pub fn run_chat(config: &ChatSimConfig) -> ChatRun {
    let mut chat = ChatSim::new(config);
    let report = chat.run();
    chat.check(report)
}

impl ChatSim {
    /// Scripts the clients' sessions, each checked as it ends.
    pub fn new(config: &ChatSimConfig) -> ChatSim {
        let mut chat = ChatSim::unchecked(config);
        let checker = chat.checker.clone();
        chat.sim.on_transcript(move |_, transcript, services| {
            checker
                .borrow_mut()
                .check_session(&transcript, services.database.room())
        });
        chat
    }

    /// Scripts the clients' sessions, whose transcripts are dropped as they end
    /// unchecked: the simulation alone, as the `sim/chat/clients_100` bench times it.
    /// [`check`](Self::check) then checks the programs and the room only.
    pub fn unchecked(config: &ChatSimConfig) -> ChatSim {
        let chat = Rc::new(config.chat.clone());
        let sim_config = SimConfig {
            seed: config.seed,
            program_timeout: Some(config.program_timeout),
            faults: config.faults.clone(),
            record_trace: config.record_trace,
            websocket: Default::default(),
        };
        let program: ChatProgram = Box::new(chat_program(chat));
        let mut sim = Simulation::new(sim_config, Vec::new(), program);
        sim.on_transcript(|_, _, _| {});
        let mut rng = Rng::derive(config.seed, "chat_sim.scenario", 0);
        for client in 0..config.clients {
            for connection in sessions(&mut rng, client, config) {
                sim.add_connection(connection);
            }
        }
        let checker = Checker::new(config.chat.history_length, grace(&config.faults));
        ChatSim {
            sim,
            checker: Rc::new(RefCell::new(checker)),
        }
    }

    /// Writes the trace to `out` as it is made instead of keeping it (see
    /// [`Simulation::stream_trace`]); [`ChatRun::trace`] is then empty.
    pub fn stream_trace(&mut self, out: impl Write + Seek + 'static) {
        self.sim.stream_trace(out);
    }

    /// The first write of a streamed trace that failed, if one did.
    pub fn trace_error(&self) -> Option<&io::Error> {
        self.sim.trace_error()
    }

    /// Runs the simulation to its end.
    pub fn run(&mut self) -> SimReport {
        self.sim.run()
    }

    /// Runs the simulation to its end unless `go_on` says to stop (it is asked every
    /// few thousand steps); `None` if it stopped: the run is unfinished and not worth
    /// checking.
    pub fn run_while(&mut self, mut go_on: impl FnMut() -> bool) -> Option<SimReport> {
        let mut steps = 0u32;
        while self.sim.step() {
            steps = steps.wrapping_add(1);
            if steps % 4096 == 0 && !go_on() {
                return None;
            }
        }
        // Nothing is left to happen: this only closes the trace.
        Some(self.sim.run())
    }

    /// Checks what is left to check once the run is over (the programs, the room,
    /// any session that never ended) and gives the whole account.
    pub fn check(self, report: SimReport) -> ChatRun {
        let ChatSim { sim, checker } = self;
        let mut checker = checker.borrow_mut();
        let room = sim.services().database.room();
        // A session whose program never ended was never handed over: check it too.
        for t in sim.transcripts() {
            if t.finished.is_none() {
                checker.check_session(t, room);
            }
        }
        checker.check_programs(&report, sim.results());
        checker.check_room(room);
        ChatRun {
            report,
            checks: checker.checks,
            violations: std::mem::take(&mut checker.violations),
            acked: checker.acked,
            deliveries: checker.deliveries,
            trace: sim.trace().to_vec(),
        }
    }
}

/// How long a session may take to deliver a stored message (see the module docs).
fn grace(faults: &FaultPlan) -> Duration {
    let windows = faults
        .outages
        .iter()
        .map(|o| o.window)
        .chain(faults.latency_spikes.iter().map(|s| s.window))
        .map(|w| w.until.since_epoch().saturating_sub(w.from.since_epoch()));
    let restarts = Duration::from_secs(10) * faults.restarts.len() as u32;
    Duration::from_secs(10) + windows.sum::<Duration>() + restarts
}

/// A client's name.
fn name(client: u32) -> String {
    let mut name = String::with_capacity(8);
    name.push('c');
    push_number(&mut name, client);
    name
}

/// Appends `n` in decimal (a run scripts thousands of lines: no `format!`).
fn push_number(out: &mut String, n: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// A client's sessions: each starts after the previous one's program is surely over
/// (its deadline has passed), so a client's sessions never overlap.
fn sessions(rng: &mut Rng, client: u32, config: &ChatSimConfig) -> Vec<Connection> {
    let mut out = Vec::new();
    let mut start = Duration::from_millis(rng.below(300_000));
    let mut session = 0;
    let sec = |rng: &mut Rng, lo: u64, hi: u64| {
        Duration::from_millis(lo * 1000 + rng.below((hi - lo) * 1000))
    };
    let join = ["{\"type\":\"join\",\"name\":\"", &name(client), "\"}"].concat();
    while start < config.duration {
        let mut messages = Vec::new();
        // Now and then a client speaks before it joins: an error, and it stays open.
        if rng.below(10) == 0 {
            messages.push((Duration::ZERO, send_frame(client, session, 99)));
        }
        messages.push((Duration::from_millis(rng.below(500)), join.clone()));
        let actions = 2 + rng.below(14);
        for k in 0..actions {
            let think = sec(rng, 0, 20);
            let text = match rng.below(20) {
                0..=16 => send_frame(client, session, k),
                17 => "{\"type\":\"send\"".to_string(),
                18 => "{\"type\":\"shout\",\"text\":\"hey\"}".to_string(),
                _ => join.clone(),
            };
            messages.push((think, text));
        }
        let end = match rng.below(20) {
            0..=11 => ConnectionEnd::Close {
                after: sec(rng, 0, 30),
            },
            12..=16 => ConnectionEnd::Vanish {
                after: sec(rng, 0, 5),
            },
            _ => ConnectionEnd::Linger,
        };
        out.push(Connection {
            client,
            connect_at: Time::ZERO + start,
            messages,
            end,
        });
        session += 1;
        start += config.program_timeout + Duration::from_secs(1) + sec(rng, 0, 600);
    }
    out
}

/// A `send` of a text unique to the client, its session and the line.
fn send_frame(client: u32, session: u32, k: u64) -> String {
    let mut line = String::with_capacity(64);
    line.push_str("{\"type\":\"send\",\"text\":\"hello #");
    for (i, n) in [u64::from(client), u64::from(session), k]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            line.push('-');
        }
        push_number(&mut line, n);
    }
    line.push_str("\"}");
    line
}

/// The text a `send` frame carries, if it is one.
fn sent_text(frame: &str) -> Option<String> {
    let value: Value = serde_json::from_str(frame).ok()?;
    (value.get("type")?.as_str()? == "send")
        .then(|| Some(value.get("text")?.as_str()?.to_string()))?
}

/// The invariant checker, fed each session as it ends and the room at the end. It
/// keeps only what later checks need: the room's index by id and each client's sent
/// texts (both of the room's size), and the counts.
struct Checker {
    history_length: u32,
    grace: Duration,
    /// Room messages by id (their index in the room), for the first `indexed`.
    by_id: FxHashMap<Uuid, u32>,
    indexed: usize,
    /// The texts each client (by name) sent in `send` frames.
    said: FxHashMap<String, FxHashSet<String>>,
    checks: Checks,
    violations: Vec<String>,
    acked: usize,
    deliveries: usize,
}

impl Checker {
    fn new(history_length: u32, grace: Duration) -> Checker {
        Checker {
            history_length,
            grace,
            by_id: FxHashMap::default(),
            indexed: 0,
            said: FxHashMap::default(),
            checks: Checks::default(),
            violations: Vec::new(),
            acked: 0,
            deliveries: 0,
        }
    }

    /// Counts a check of `invariant`; a failed one is kept in words while few of its
    /// kind are.
    fn check(&mut self, invariant: Invariant, ok: bool, what: impl FnOnce() -> String) {
        if !self.checks.record(invariant, ok) && self.checks.failed(invariant) <= KEPT_PER_INVARIANT
        {
            self.violations.push(what());
        }
    }

    /// Every program ended in time without breaking the engine's rules.
    fn check_programs(
        &mut self,
        report: &SimReport,
        results: &[Option<Result<Result<SessionEnd, effectful::EffectError>, ProgramError>>],
    ) {
        for (index, result) in results.iter().enumerate() {
            let broke = match result {
                Some(Err(e @ (ProgramError::ForeignAwait | ProgramError::Stalled))) => Some(e),
                _ => None,
            };
            self.check(Invariant::ProgramsEnd, broke.is_none(), || {
                format!("connection {index}: program broke: {broke:?}")
            });
        }
        let unfinished = report.unfinished;
        self.check(Invariant::ProgramsEnd, unfinished == 0, || {
            format!("{unfinished} programs never finished")
        });
        let late = report.late;
        self.check(Invariant::ProgramsEnd, late == 0, || {
            format!("{late} programs finished after their deadline")
        });
    }

    /// The room holds each text once, every one sent by the client whose name it
    /// bears, with `seq` 1, 2, 3, ...
    fn check_room(&mut self, room: &[SharedRoomMessage]) {
        let mut stored: FxHashMap<(&str, &str), usize> = FxHashMap::default();
        for m in room {
            *stored.entry((&m.name, &m.text)).or_default() += 1;
        }
        for (i, m) in room.iter().enumerate() {
            let count = stored.get(&(m.name.as_str(), m.text.as_str())).copied();
            let count = count.unwrap_or_default();
            let said = self
                .said
                .get(&m.name)
                .is_some_and(|texts| texts.contains(&m.text));
            let in_order = m.seq == i as u64 + 1;
            self.check(
                Invariant::RoomStoredOnce,
                in_order && count == 1 && said,
                || {
                    if !in_order {
                        format!("room message {} has seq {}", i + 1, m.seq)
                    } else if count != 1 {
                        format!("{}: message {:?} stored {count} times", m.name, m.text)
                    } else {
                        format!(
                            "room message {} ({:?} by {}) was never sent by that client",
                            m.seq, m.text, m.name
                        )
                    }
                },
            );
        }
    }

    /// Indexes the room's messages stored since the last call.
    fn index(&mut self, room: &[SharedRoomMessage]) {
        for (i, m) in room.iter().enumerate().skip(self.indexed) {
            self.by_id.insert(m.id, i as u32);
        }
        self.indexed = room.len();
    }

    /// Checks one session's frames; see the module docs.
    fn check_session(&mut self, t: &Transcript, room: &[SharedRoomMessage]) {
        self.index(room);
        let client = t.client;
        let me = name(client);
        let texts = self.said.entry(me.clone()).or_default();
        texts.extend(t.sent.iter().filter_map(|(_, line)| sent_text(line)));
        // The `seq` delivered last, once joined.
        let mut last: Option<u64> = None;
        for (at, line) in &t.received {
            let frame = serde_json::from_str::<Value>(line).ok();
            let kind = frame.as_ref().map_or(Frame::Other, Frame::of);
            let known = match kind {
                Frame::Error | Frame::Message => true,
                Frame::Joined => last.is_none(),
                Frame::Other => false,
            };
            self.check(Invariant::FramesAreProtocol, known, || {
                format!("client {client}: unexpected frame at {at}: {line:?}")
            });
            let (Some(frame), true) = (frame, known) else {
                continue;
            };
            match kind {
                Frame::Joined => {
                    last = Some(self.check_history(client, *at, &frame, t, room));
                }
                Frame::Message => {
                    let m = stored(&self.by_id, room, &frame);
                    let ok =
                        matches!((last, m), (Some(previous), Some(m)) if m.seq == previous + 1);
                    self.check(Invariant::LiveInOrder, ok, || match (last, m) {
                        (None, _) => format!("client {client}: a message before joining at {at}"),
                        (_, None) => format!(
                            "client {client}: got a message that is not stored as sent, at {at}: {line}"
                        ),
                        (Some(previous), Some(m)) => format!(
                            "client {client}: got seq {} after seq {previous} at {at} (a gap, a repeat or out of order)",
                            m.seq
                        ),
                    });
                    if let (Some(_), Some(m)) = (last, m) {
                        last = Some(m.seq);
                        self.deliveries += 1;
                        if m.name == me {
                            self.acked += 1;
                        }
                    }
                }
                Frame::Error | Frame::Other => {}
            }
        }
        if let Some(last) = last {
            self.check_caught_up(client, t, last, room);
        }
    }

    /// Checks a `joined` frame's history; returns the `seq` it ends at.
    fn check_history(
        &mut self,
        client: u32,
        at: Time,
        frame: &Value,
        t: &Transcript,
        room: &[SharedRoomMessage],
    ) -> u64 {
        let history = frame
            .get("history")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let seqs: Vec<Option<u64>> = history
            .iter()
            .map(|m| stored(&self.by_id, room, m).map(|m| m.seq))
            .collect();
        let as_stored = seqs.iter().all(Option::is_some) && frame.get("user_id").is_some();
        let seqs: Vec<u64> = seqs.into_iter().flatten().collect();
        let end = seqs.last().copied().unwrap_or(0);
        let expected = end.min(u64::from(self.history_length));
        let consecutive = seqs
            .iter()
            .enumerate()
            .all(|(i, s)| *s == end + 1 + i as u64 - seqs.len() as u64);
        let newest = seqs.len() as u64 == expected && consecutive;
        // Everything stored before the client asked to join is in it.
        let asked = t
            .sent
            .iter()
            .find(|(_, line)| line.contains("\"join\""))
            .map(|(asked, _)| wall_time(DEFAULT_WALL_EPOCH, *asked));
        let before = asked.map_or(0, |asked| {
            room.partition_point(|m| m.created_at < asked) as u64
        });
        let ok = as_stored && newest && end >= before;
        self.check(Invariant::JoinHistory, ok, || {
            if !as_stored {
                format!("client {client}: history at {at} holds a message not stored as sent")
            } else if !newest {
                format!(
                    "client {client}: history at {at} is not the newest {expected} messages up to seq {end}: {seqs:?}"
                )
            } else {
                format!(
                    "client {client}: history at {at} ends at seq {end}; {before} messages were stored before it asked"
                )
            }
        });
        end
    }

    /// Every message stored more than the grace period before the connection closed
    /// reached the client.
    fn check_caught_up(
        &mut self,
        client: u32,
        t: &Transcript,
        last: u64,
        room: &[SharedRoomMessage],
    ) {
        let Some(closed) = t.closed_at.or(t.finished) else {
            return;
        };
        let Some(by) = closed.since_epoch().checked_sub(self.grace) else {
            return;
        };
        let by: Timestamp = wall_time(DEFAULT_WALL_EPOCH, Time::ZERO + by);
        let owed = room.partition_point(|m| m.created_at <= by) as u64;
        let grace = self.grace;
        self.check(Invariant::CaughtUp, last >= owed, || {
            format!(
                "client {client}: connected until {closed}, got up to seq {last} of the {owed} stored more than {grace:?} before"
            )
        });
    }
}

/// What a frame from the server is, by its `type`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// `error`, with its `error` text.
    Error,
    Joined,
    Message,
    /// Anything else: not the protocol.
    Other,
}

impl Frame {
    fn of(frame: &Value) -> Frame {
        match frame.get("type").and_then(Value::as_str) {
            Some("error") if frame.get("error").and_then(Value::as_str).is_some() => Frame::Error,
            Some("joined") => Frame::Joined,
            Some("message") => Frame::Message,
            _ => Frame::Other,
        }
    }
}

/// The stored message a `message` frame (or a history entry) stands for, if it is
/// exactly as stored.
fn stored<'r>(
    by_id: &FxHashMap<Uuid, u32>,
    room: &'r [SharedRoomMessage],
    frame: &Value,
) -> Option<&'r SharedRoomMessage> {
    let field = |k: &str| frame.get(k).and_then(Value::as_str);
    let id = Uuid::parse_str(field("id")?).ok()?;
    let m = room.get(*by_id.get(&id)? as usize)?;
    let same = field("user_id") == Some(m.user_id.to_string().as_str())
        && field("name") == Some(m.name.as_str())
        && field("text") == Some(m.text.as_str())
        && field("created_at") == Some(m.created_at.to_string().as_str());
    same.then_some(m)
}
