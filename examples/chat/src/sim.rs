//! The chat simulation: N clients joining, chatting, reading history, renaming and
//! leaving over a simulated duration, under faults, with the invariants checked at the
//! end. Used by the `simulate` binary, its tests and the `sim/chat` bench.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use effectful::effect::ChatMessage;
use effectful::{ProgramError, Rng, Time};
use effectful_test::fault::FaultPlan;
use effectful_test::sim::{
    Connection, ConnectionEnd, SimConfig, SimReport, Simulation, Transcript,
};
use effectful_test::trace::TraceRecord;
use rustc_hash::{FxHashMap, FxHashSet};
use uuid::Uuid;

use crate::session::{ChatConfig, SessionEnd, chat_session};

/// One chat simulation run.
#[derive(Clone, Debug)]
pub struct ChatSimConfig {
    /// Fixes everything.
    pub seed: u64,
    /// How many clients (users).
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

/// The cache policy the invariants hold the program to: profiles live 600 s (the
/// seed tutorial's `CACHE_TTL_PROFILE`).
pub const PROFILE_TTL_POLICY: Duration = Duration::from_secs(600);

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
    /// Acknowledged messages checked.
    pub acked: usize,
    /// The trace, when recorded.
    pub trace: Vec<TraceRecord>,
}

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

/// The chat program, as the simulator spawns it for each connection.
pub type ChatProgram = Box<
    dyn FnMut(
        u32,
        effectful::Fx,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<SessionEnd, effectful::EffectError>>>,
    >,
>;

/// One seed's simulation, set up and not run yet: the users are in the database and
/// every client's sessions are scripted.
pub struct ChatSim {
    sim: Simulation<Result<SessionEnd, effectful::EffectError>, ChatProgram>,
    users: Vec<Uuid>,
    history_length: u32,
}

/// Runs one seed and checks the invariants.
pub fn run_chat(config: &ChatSimConfig) -> ChatRun {
    let mut chat = ChatSim::new(config);
    let report = chat.run();
    chat.check(report)
}

impl ChatSim {
    /// Seeds the database with the clients' users and scripts their sessions.
    pub fn new(config: &ChatSimConfig) -> ChatSim {
        let chat = Rc::new(config.chat.clone());
        let sim_config = SimConfig {
            seed: config.seed,
            program_timeout: Some(config.program_timeout),
            faults: config.faults.clone(),
            record_trace: config.record_trace,
        };
        let program: ChatProgram = Box::new(chat_program(chat));
        let mut sim = Simulation::new(sim_config, Vec::new(), program);
        let mut rng = Rng::derive(config.seed, "chat_sim.scenario", 0);
        let mut users = Vec::with_capacity(config.clients as usize);
        for client in 0..config.clients {
            let outcome = sim.services_mut().database.create_user(
                format!("c{client}@chat.test"),
                name(client, 0),
                "fake$seed".into(),
            );
            let user_id = match outcome {
                effectful::effect::CreateUserOutcome::Created(user) => user.id,
                effectful::effect::CreateUserOutcome::EmailTaken { .. } => Uuid::nil(),
            };
            users.push(user_id);
            for connection in sessions(&mut rng, client, user_id, config) {
                sim.add_connection(connection);
            }
        }
        ChatSim {
            sim,
            users,
            history_length: config.chat.history_length,
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
            users,
            history_length,
        } = self;
        let ttl = PROFILE_TTL_POLICY;
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
        let transcripts = sim.transcripts();
        let stored = stored_messages(&users, sim.services(), &mut violations);
        let acked = check_acknowledged(&transcripts, &users, &stored, &mut violations);
        let received = received_by_client(&transcripts);
        check_profiles(&received, ttl, &mut violations);
        check_inbox(&received, &stored, &mut violations);
        check_history(&received, &users, &stored, history_length, &mut violations);
        ChatRun {
            report,
            violations,
            acked,
            trace: sim.trace().to_vec(),
        }
    }
}

/// A client's name after its `version`-th rename.
fn name(client: u32, version: u32) -> String {
    let mut name = String::with_capacity(16);
    name.push('c');
    push_number(&mut name, client);
    name.push_str("-v");
    push_number(&mut name, version);
    name
}

fn version_of(name: &str) -> Option<u32> {
    let (rest, version) = name.rsplit_once('v')?;
    rest.ends_with('-').then(|| version.parse().ok())?
}

/// The nonce of a client's `k`-th line in its `session`-th session.
fn nonce(client: u32, session: u32, k: u64) -> String {
    let mut nonce = String::with_capacity(24);
    nonce.push('c');
    push_number(&mut nonce, client);
    nonce.push_str("-s");
    push_number(&mut nonce, session);
    nonce.push_str("-m");
    push_number(&mut nonce, k);
    nonce
}

/// Appends `n` in decimal (a run scripts thousands of lines: no `format!`).
fn push_number(out: &mut String, n: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// A client's sessions: each starts after the previous one's program is surely over
/// (its deadline has passed), so a client's operations never overlap.
fn sessions(rng: &mut Rng, client: u32, user_id: Uuid, config: &ChatSimConfig) -> Vec<Connection> {
    let mut out = Vec::new();
    let mut start = Duration::from_millis(rng.below(300_000));
    let mut version = 0;
    let mut session = 0;
    let sec = |rng: &mut Rng, lo: u64, hi: u64| {
        Duration::from_millis(lo * 1000 + rng.below((hi - lo) * 1000))
    };
    while start < config.duration {
        let mut messages = vec![(
            Duration::from_millis(rng.below(500)),
            [
                "login ",
                user_id
                    .hyphenated()
                    .encode_lower(&mut Uuid::encode_buffer()),
            ]
            .concat(),
        )];
        let actions = 2 + rng.below(14);
        for k in 0..actions {
            let think = sec(rng, 0, 20);
            let text = match rng.below(20) {
                0..=9 => {
                    // Unique per client, session and line: the checks rely on that.
                    let mut line = String::with_capacity(64);
                    line.push_str("say ");
                    line.push_str(&nonce(client, session, k));
                    line.push_str(" hello #");
                    for (i, n) in [u64::from(client), u64::from(session), k]
                        .into_iter()
                        .enumerate()
                    {
                        if i > 0 {
                            line.push('-');
                        }
                        push_number(&mut line, n);
                    }
                    line
                }
                10..=12 => "history".to_string(),
                13..=14 => {
                    version += 1;
                    ["rename ", &name(client, version)].concat()
                }
                15..=16 => "inbox".to_string(),
                _ => "profile".to_string(),
            };
            messages.push((think, text));
        }
        let end = match rng.below(20) {
            0..=11 => {
                messages.push((sec(rng, 0, 5), "bye".into()));
                ConnectionEnd::Close {
                    after: Duration::from_secs(1),
                }
            }
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

/// Every stored message by id; no user has the same text stored twice (every text
/// the scenario sends is unique).
fn stored_messages<'a>(
    users: &[Uuid],
    services: &'a effectful_test::fake::Services,
    violations: &mut Vec<String>,
) -> FxHashMap<Uuid, &'a ChatMessage> {
    let mut stored = FxHashMap::default();
    for user in users {
        let messages = services.database.messages_for_user(*user);
        let mut texts: BTreeMap<&str, usize> = BTreeMap::new();
        for m in messages {
            *texts.entry(m.text.as_str()).or_default() += 1;
        }
        for (text, count) in texts {
            if count > 1 {
                violations.push(format!(
                    "user {user}: message {text:?} stored {count} times"
                ));
            }
        }
        stored.extend(messages.iter().map(|m| (m.id, m)));
    }
    stored
}

/// Every acknowledged message is stored under the acknowledged id, by its author, with
/// the text the client sent.
fn check_acknowledged(
    transcripts: &[&Transcript],
    users: &[Uuid],
    stored: &FxHashMap<Uuid, &ChatMessage>,
    violations: &mut Vec<String>,
) -> usize {
    let mut acked = 0;
    for t in transcripts {
        let Some(user) = users.get(t.client as usize) else {
            continue;
        };
        let said: FxHashMap<&str, &str> = t
            .sent
            .iter()
            .filter_map(|(_, line)| line.strip_prefix("say ")?.split_once(' '))
            .collect();
        for (_, line) in &t.received {
            let Some(rest) = line.strip_prefix("ack ") else {
                continue;
            };
            acked += 1;
            let Some((nonce, id)) = rest
                .split_once(' ')
                .and_then(|(n, id)| Some((n, Uuid::parse_str(id).ok()?)))
            else {
                violations.push(format!("client {}: malformed ack {line:?}", t.client));
                continue;
            };
            match (stored.get(&id), said.get(nonce)) {
                (Some(m), Some(text)) if m.text == *text && m.user_id == *user => {}
                (None, _) => violations.push(format!(
                    "client {}: acknowledged message {nonce} ({id}) was lost",
                    t.client
                )),
                (_, None) => violations.push(format!(
                    "client {}: ack for {nonce}, which it never said",
                    t.client
                )),
                (Some(m), _) => violations.push(format!(
                    "client {}: acknowledged message {nonce} stored as {m:?}",
                    t.client
                )),
            }
        }
    }
    acked
}

/// Every line each client received, in the order it received them.
fn received_by_client<'a>(transcripts: &[&'a Transcript]) -> BTreeMap<u32, Vec<(Time, &'a str)>> {
    let mut by_client: BTreeMap<u32, Vec<(Time, &str)>> = BTreeMap::new();
    for t in transcripts {
        by_client
            .entry(t.client)
            .or_default()
            .extend(t.received.iter().map(|(at, line)| (*at, line.as_str())));
    }
    // A client's sessions follow one another, so its lines are mostly in order
    // already; a stable sort keeps same-time lines in the order they were received.
    for lines in by_client.values_mut() {
        lines.sort_by_key(|(at, _)| *at);
    }
    by_client
}

/// Room deliveries are real messages, and a repeated delivery is marked as one:
/// every `inbox` id is a stored message, and a client that sees an id again sees a
/// redelivery count above zero.
fn check_inbox(
    received: &BTreeMap<u32, Vec<(Time, &str)>>,
    stored: &FxHashMap<Uuid, &ChatMessage>,
    violations: &mut Vec<String>,
) {
    for (&client, lines) in received {
        let mut seen = FxHashSet::default();
        for &(at, line) in lines {
            let Some(rest) = line.strip_prefix("inbox ") else {
                continue;
            };
            if rest == "empty" {
                continue;
            }
            let parsed = rest.split_once(' ').and_then(|(id, count)| {
                Some((Uuid::parse_str(id).ok()?, count.parse::<u32>().ok()?))
            });
            let Some((id, redeliveries)) = parsed else {
                violations.push(format!(
                    "client {client}: malformed inbox line {line:?} at {at}"
                ));
                continue;
            };
            if !stored.contains_key(&id) {
                violations.push(format!(
                    "client {client}: inbox delivered {id}, which was never stored"
                ));
            }
            if !seen.insert(id) && redeliveries == 0 {
                violations.push(format!(
                    "client {client}: {id} delivered again at {at} without a redelivery mark"
                ));
            }
        }
    }
}

/// No profile is served from the cache past its TTL after an update: once a rename to
/// version `v` is acknowledged at `t`, an older name may be served only until
/// `t + TTL`, and a name read fresh from the database is never older.
fn check_profiles(
    received: &BTreeMap<u32, Vec<(Time, &str)>>,
    ttl: Duration,
    violations: &mut Vec<String>,
) {
    for (&client, lines) in received {
        // (version, when its rename was acknowledged)
        let mut renames: Vec<(u32, Time)> = Vec::new();
        for &(at, line) in lines {
            if let Some(new) = line.strip_prefix("renamed ") {
                if let Some(v) = version_of(new) {
                    renames.push((v, at));
                }
                continue;
            }
            let (served, fresh) = if let Some(rest) = line.strip_prefix("profile ") {
                match rest.rsplit_once(' ') {
                    Some((name, how)) => (name, how == "fresh"),
                    None => continue,
                }
            } else if let Some(name) = line.strip_prefix("welcome ") {
                (name, false)
            } else {
                continue;
            };
            let Some(v) = version_of(served) else {
                continue;
            };
            // The first acknowledged rename that made `v` stale.
            let Some(&(newer, since)) = renames.iter().find(|(r, _)| *r > v) else {
                continue;
            };
            if fresh {
                violations.push(format!("client {client}: database served {served} at {at} after rename to v{newer} at {since}"));
            } else if at > since + ttl {
                violations.push(format!("client {client}: cache served {served} at {at}, past the {ttl:?} TTL after rename to v{newer} at {since}"));
            }
        }
    }
}

/// History replies are bounded and true: each holds at most the configured number of
/// ids (its count says how many), every one a message stored by the client's own user,
/// in history order (`created_at`, then id) without repeats.
fn check_history(
    received: &BTreeMap<u32, Vec<(Time, &str)>>,
    users: &[Uuid],
    stored: &FxHashMap<Uuid, &ChatMessage>,
    history_length: u32,
    violations: &mut Vec<String>,
) {
    for (&client, lines) in received {
        let Some(user) = users.get(client as usize) else {
            continue;
        };
        for &(at, line) in lines {
            let Some(rest) = line.strip_prefix("history ") else {
                continue;
            };
            let (count, ids) = rest.split_once(' ').unwrap_or((rest, ""));
            let ids: Option<Vec<Uuid>> = match ids {
                "" => Some(Vec::new()),
                ids => ids.split(',').map(|id| Uuid::parse_str(id).ok()).collect(),
            };
            let (Ok(count), Some(ids)) = (count.parse::<usize>(), ids) else {
                violations.push(format!(
                    "client {client}: malformed history line {line:?} at {at}"
                ));
                continue;
            };
            if count != ids.len() || count > history_length as usize {
                violations.push(format!(
                    "client {client}: history at {at} says {count} and holds {} ids; at most {history_length} allowed",
                    ids.len()
                ));
            }
            let mut previous = None;
            for id in ids {
                let Some(m) = stored.get(&id).filter(|m| m.user_id == *user) else {
                    violations.push(format!(
                        "client {client}: history at {at} lists {id}, not a stored message of its user"
                    ));
                    continue;
                };
                if previous.is_some_and(|p| p >= m.cursor()) {
                    violations.push(format!(
                        "client {client}: history at {at} lists {id} out of order or twice"
                    ));
                }
                previous = Some(m.cursor());
            }
        }
    }
}
