//! The chat simulation: N clients joining the room, chatting, sending malformed and
//! unknown frames and leaving over a simulated duration, under faults, with the
//! invariants checked at the end. Used by the `simulate` binary, its tests and the
//! `sim/chat` bench.
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

use std::rc::Rc;
use std::time::Duration;

use effectful::effect::RoomMessage;
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
    /// Invariant violations: must be empty.
    pub violations: Vec<String>,
    /// Messages stored and seen by their own sender (each checked stored once).
    pub acked: usize,
    /// Room messages delivered live to clients (after their join), all checked.
    pub deliveries: usize,
    /// The trace, when recorded.
    pub trace: Vec<TraceRecord>,
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
/// scripted.
pub struct ChatSim {
    sim: Simulation<Result<SessionEnd, effectful::EffectError>, ChatProgram>,
    history_length: u32,
    grace: Duration,
}

/// Runs one seed and checks the invariants.
pub fn run_chat(config: &ChatSimConfig) -> ChatRun {
    let mut chat = ChatSim::new(config);
    let report = chat.run();
    chat.check(report)
}

impl ChatSim {
    /// Scripts the clients' sessions.
    pub fn new(config: &ChatSimConfig) -> ChatSim {
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
        let mut rng = Rng::derive(config.seed, "chat_sim.scenario", 0);
        for client in 0..config.clients {
            for connection in sessions(&mut rng, client, config) {
                sim.add_connection(connection);
            }
        }
        ChatSim {
            sim,
            history_length: config.chat.history_length,
            grace: grace(&config.faults),
        }
    }

    /// Runs the simulation to its end.
    pub fn run(&mut self) -> SimReport {
        self.sim.run()
    }

    /// Checks the invariants on what the run did.
    pub fn check(self, report: SimReport) -> ChatRun {
        let ChatSim {
            sim,
            history_length,
            grace,
        } = self;
        let mut violations = Vec::new();
        if report.unfinished > 0 {
            violations.push(format!("{} programs never finished", report.unfinished));
        }
        if report.late > 0 {
            violations.push(format!(
                "{} programs finished after their deadline",
                report.late
            ));
        }
        for (index, result) in sim.results().iter().enumerate() {
            if let Some(Err(e @ (ProgramError::ForeignAwait | ProgramError::Stalled))) = result {
                violations.push(format!("connection {index}: program broke: {e}"));
            }
        }
        let room = sim.services().database.room();
        let transcripts = sim.transcripts();
        check_room(room, &transcripts, &mut violations);
        let by_id: FxHashMap<Uuid, &RoomMessage> = room.iter().map(|m| (m.id, m)).collect();
        let rules = Rules {
            room,
            by_id: &by_id,
            history_length,
            grace,
        };
        let (mut acked, mut deliveries) = (0, 0);
        for t in &transcripts {
            let seen = rules.check_session(t, &mut violations);
            acked += seen.own;
            deliveries += seen.live;
        }
        ChatRun {
            report,
            violations,
            acked,
            deliveries,
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

/// The room holds each text once, every one sent by the client whose name it bears,
/// with `seq` 1, 2, 3, ...
fn check_room(room: &[RoomMessage], transcripts: &[&Transcript], violations: &mut Vec<String>) {
    let mut said: FxHashMap<String, FxHashSet<String>> = FxHashMap::default();
    for t in transcripts {
        let texts = said.entry(name(t.client)).or_default();
        texts.extend(t.sent.iter().filter_map(|(_, line)| sent_text(line)));
    }
    let mut stored: FxHashMap<(&str, &str), usize> = FxHashMap::default();
    for (i, m) in room.iter().enumerate() {
        if m.seq != i as u64 + 1 {
            violations.push(format!("room message {} has seq {}", i + 1, m.seq));
        }
        *stored.entry((&m.name, &m.text)).or_default() += 1;
        if !said
            .get(&m.name)
            .is_some_and(|texts| texts.contains(&m.text))
        {
            violations.push(format!(
                "room message {} ({:?} by {}) was never sent by that client",
                m.seq, m.text, m.name
            ));
        }
    }
    let mut duplicates: Vec<_> = stored.into_iter().filter(|(_, n)| *n > 1).collect();
    duplicates.sort_unstable();
    for ((name, text), count) in duplicates {
        violations.push(format!("{name}: message {text:?} stored {count} times"));
    }
}

/// What the checks hold sessions to.
struct Rules<'a> {
    room: &'a [RoomMessage],
    by_id: &'a FxHashMap<Uuid, &'a RoomMessage>,
    history_length: u32,
    grace: Duration,
}

/// What one session saw.
#[derive(Default)]
struct Seen {
    /// Its own messages it got back.
    own: usize,
    /// Room messages delivered live.
    live: usize,
}

impl Rules<'_> {
    /// Checks one session's frames; see the module docs.
    fn check_session(&self, t: &Transcript, violations: &mut Vec<String>) -> Seen {
        let client = t.client;
        let me = name(client);
        let mut seen = Seen::default();
        // The `seq` delivered last, once joined.
        let mut last: Option<u64> = None;
        for (at, line) in &t.received {
            let Ok(frame) = serde_json::from_str::<Value>(line) else {
                violations.push(format!("client {client}: not JSON at {at}: {line:?}"));
                continue;
            };
            match frame.get("type").and_then(Value::as_str) {
                Some("error") if frame.get("error").and_then(Value::as_str).is_some() => {}
                Some("joined") if last.is_none() => {
                    last = Some(self.check_history(client, *at, &frame, t, violations));
                }
                Some("message") => {
                    let Some(previous) = last else {
                        violations
                            .push(format!("client {client}: a message before joining at {at}"));
                        continue;
                    };
                    let Some(m) = self.stored(&frame) else {
                        violations.push(format!(
                            "client {client}: got a message that is not stored as sent, at {at}: {line}"
                        ));
                        continue;
                    };
                    if m.seq != previous + 1 {
                        violations.push(format!(
                            "client {client}: got seq {} after seq {previous} at {at} (a gap, a repeat or out of order)",
                            m.seq
                        ));
                    }
                    last = Some(m.seq);
                    seen.live += 1;
                    if m.name == me {
                        seen.own += 1;
                    }
                }
                _ => violations.push(format!("client {client}: unexpected frame at {at}: {line}")),
            }
        }
        if let Some(last) = last {
            self.check_caught_up(client, t, last, violations);
        }
        seen
    }

    /// The stored message a `message` frame (or a history entry) stands for, if it is
    /// exactly as stored.
    fn stored(&self, frame: &Value) -> Option<&RoomMessage> {
        let field = |k: &str| frame.get(k).and_then(Value::as_str);
        let id = Uuid::parse_str(field("id")?).ok()?;
        let m = *self.by_id.get(&id)?;
        let same = field("user_id") == Some(m.user_id.to_string().as_str())
            && field("name") == Some(m.name.as_str())
            && field("text") == Some(m.text.as_str())
            && field("created_at") == Some(m.created_at.to_string().as_str());
        same.then_some(m)
    }

    /// Checks a `joined` frame's history; returns the `seq` it ends at.
    fn check_history(
        &self,
        client: u32,
        at: Time,
        frame: &Value,
        t: &Transcript,
        violations: &mut Vec<String>,
    ) -> u64 {
        let history = frame
            .get("history")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let seqs: Vec<Option<u64>> = history
            .iter()
            .map(|m| self.stored(m).map(|m| m.seq))
            .collect();
        if seqs.iter().any(Option::is_none) || frame.get("user_id").is_none() {
            violations.push(format!(
                "client {client}: history at {at} holds a message not stored as sent"
            ));
        }
        let seqs: Vec<u64> = seqs.into_iter().flatten().collect();
        let end = seqs.last().copied().unwrap_or(0);
        let expected = end.min(u64::from(self.history_length));
        let consecutive = seqs
            .iter()
            .enumerate()
            .all(|(i, s)| *s == end + 1 + i as u64 - seqs.len() as u64);
        if seqs.len() as u64 != expected || !consecutive {
            violations.push(format!(
                "client {client}: history at {at} is not the newest {expected} messages up to seq {end}: {seqs:?}"
            ));
        }
        // Everything stored before the client asked to join is in it.
        let asked = t
            .sent
            .iter()
            .find(|(_, line)| line.contains("\"join\""))
            .map(|(asked, _)| wall_time(DEFAULT_WALL_EPOCH, *asked));
        if let Some(asked) = asked {
            let before = self.room.partition_point(|m| m.created_at < asked) as u64;
            if end < before {
                violations.push(format!(
                    "client {client}: history at {at} ends at seq {end}; {before} messages were stored before it asked"
                ));
            }
        }
        end
    }

    /// Every message stored more than the grace period before the connection closed
    /// reached the client.
    fn check_caught_up(
        &self,
        client: u32,
        t: &Transcript,
        last: u64,
        violations: &mut Vec<String>,
    ) {
        let Some(closed) = t.closed_at.or(t.finished) else {
            return;
        };
        let Some(by) = closed.since_epoch().checked_sub(self.grace) else {
            return;
        };
        let by: Timestamp = wall_time(DEFAULT_WALL_EPOCH, Time::ZERO + by);
        let owed = self.room.partition_point(|m| m.created_at <= by) as u64;
        if last < owed {
            violations.push(format!(
                "client {client}: connected until {closed}, got up to seq {last} of the {owed} stored more than {:?} before",
                self.grace
            ));
        }
    }
}
