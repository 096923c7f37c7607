//! The chat program under simulation: many seeds, faults, and the invariants.

use std::rc::Rc;
use std::time::Duration;

use effectful::Time;
use effectful::effect::{DatabaseRequest, PostRoomMessage};
use effectful_chat::session::{ChatConfig, HISTORY_LENGTH};
use effectful_chat::sim::{ChatSimConfig, chat_program, run_chat};
use effectful_test::fault::{FaultPlan, PerFamily, Service, Window};
use effectful_test::seed;
use effectful_test::sim::{Connection, ConnectionEnd, SimConfig, Simulation};
use effectful_test::trace::{
    DEFAULT_MAX_LINE, TraceRecord, first_divergence, read_trace, replay, write_trace,
};
use serde_json::Value;

/// 1,000 swarm seeds: each picks its client count (up to 12), its fault rates and its
/// latencies, and maybe an outage, a spike, a restart or a storm; 30 simulated
/// minutes each. `EFFECTFUL_SEED=<n>` reruns one seed.
#[test]
fn a_thousand_swarm_seeds_keep_every_invariant() {
    let seeds = seed::seeds_from_env(0..1000).expect("EFFECTFUL_SEED must be a number");
    let mut failures = Vec::new();
    let (mut effects, mut acked, mut deliveries, mut faults) = (0, 0, 0, 0);
    for s in seeds.clone() {
        let run = run_chat(&ChatSimConfig::swarm(s, 12, Duration::from_secs(1800)));
        effects += run.report.effects;
        acked += run.acked;
        deliveries += run.deliveries;
        faults += run.report.faults;
        if !run.violations.is_empty() {
            failures.push(format!(
                "{}\n  {}\n  {}",
                run.report,
                run.violations.join("\n  "),
                seed::reproduce_message(s, "cargo test -p effectful-chat --test sim a_thousand")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds broke an invariant:\n{}",
        failures.len(),
        seeds.end - seeds.start,
        failures.join("\n")
    );
    // The runs did real work: messages were stored, fanned out, and faults injected.
    if seeds.end - seeds.start >= 100 {
        assert!(effects > 100_000, "only {effects} effects");
        assert!(acked > 10_000, "only {acked} messages seen by their sender");
        assert!(deliveries > 2 * acked, "only {deliveries} deliveries");
        assert!(faults > 1_000, "only {faults} faults");
    }
}

#[test]
fn the_chaos_plan_with_a_hundred_clients_for_an_hour_keeps_every_invariant() {
    let mut config = ChatSimConfig::new(11, 100, Duration::from_secs(3600));
    config.faults = FaultPlan::chaos();
    let run = run_chat(&config);
    assert!(run.violations.is_empty(), "{:#?}", run.violations);
    assert!(run.report.faults > 100, "{}", run.report);
    assert!(run.acked > 1000, "{} acks", run.acked);
    assert!(
        run.deliveries > 10 * run.acked,
        "{} deliveries",
        run.deliveries
    );
}

/// The database restarts (dropping every listener) and goes away for a minute while
/// 40 clients chat: each connected client still gets every message once, in order.
#[test]
fn database_restarts_and_outages_lose_no_message_for_a_connected_client() {
    let mut config = ChatSimConfig::new(12, 40, Duration::from_secs(1800));
    for at in [300, 600, 601, 900, 1200] {
        config.faults = config
            .faults
            .with_restart(Service::Database, Time::from_secs(at));
    }
    let outage = Window::new(Time::from_secs(700), Time::from_secs(760));
    config.faults = config.faults.with_outage(Service::Database, outage);
    let run = run_chat(&config);
    assert!(run.violations.is_empty(), "{:#?}", run.violations);
    assert!(run.report.fault_kinds.restarts > 5, "{}", run.report);
    assert!(run.deliveries > 1000, "{} deliveries", run.deliveries);
}

/// Runs `config` with the chat program switched to `broken`: a violation that says
/// `caught` must be found. Then the same world with the default program is clean.
fn assert_caught(mut config: ChatSimConfig, broken: ChatConfig, caught: &[&str]) {
    config.chat = broken;
    let run = run_chat(&config);
    assert!(
        run.violations
            .iter()
            .any(|v| caught.iter().any(|c| v.contains(c))),
        "{:#?}",
        run.violations
    );
    config.chat = ChatConfig::default();
    let run = run_chat(&config);
    assert!(run.violations.is_empty(), "{:#?}", run.violations);
}

/// Lost answers to posts, retried without an idempotency key, store messages twice:
/// the invariant check must notice.
#[test]
fn retried_posts_without_idempotent_ids_are_caught_as_duplicates() {
    let mut config = ChatSimConfig::new(3, 30, Duration::from_secs(3600));
    config.faults.lost_answer_rate = PerFamily {
        database: 0.2,
        ..PerFamily::all(0.0)
    };
    let broken = ChatConfig {
        idempotent_saves: false,
        ..ChatConfig::default()
    };
    assert_caught(config, broken, &["stored 2 times", "stored 3 times"]);
}

/// A session that resumes from the room's newest message after a failed wait (as a
/// plain pub/sub listener does when it resubscribes) skips what was stored meanwhile:
/// the invariant check must notice.
#[test]
fn resuming_live_without_catching_up_is_caught_as_a_gap() {
    let mut config = ChatSimConfig::new(4, 40, Duration::from_secs(3600));
    config.faults.error_rate = PerFamily {
        database: 0.05,
        ..PerFamily::all(0.0)
    };
    let broken = ChatConfig {
        catch_up: false,
        ..ChatConfig::default()
    };
    assert_caught(config, broken, &["(a gap, a repeat or out of order)"]);
}

#[test]
fn the_same_seed_gives_the_same_trace_and_different_seeds_differ() {
    let traced = |seed| {
        let mut config = ChatSimConfig::new(seed, 20, Duration::from_secs(1200));
        config.faults = FaultPlan::chaos();
        config.record_trace = true;
        run_chat(&config).trace
    };
    let (a, b, c) = (traced(8), traced(8), traced(9));
    assert!(a.len() > 1000, "{} records", a.len());
    assert_eq!(first_divergence(&a, &b), None);
    // Past the start record (which names the seed), the runs themselves differ.
    assert!(first_divergence(&a[1..], &c[1..]).is_some());
}

#[test]
fn a_chat_trace_written_to_json_lines_replays_exactly() {
    let mut config = ChatSimConfig::new(21, 15, Duration::from_secs(900));
    config.faults = FaultPlan::chaos();
    config.record_trace = true;
    let run = run_chat(&config);
    let mut file = Vec::new();
    write_trace(&mut file, &run.trace).unwrap();
    let records = read_trace(file.as_slice(), DEFAULT_MAX_LINE).unwrap();
    assert_eq!(records, run.trace);
    let stats =
        replay(&records, chat_program(Rc::new(config.chat.clone()))).expect("the trace replays");
    assert!(stats.inputs > 500 && stats.outputs > 500, "{stats:?}");
}

#[test]
fn a_tampered_chat_trace_fails_replay_at_the_first_divergence() {
    let mut config = ChatSimConfig::new(22, 5, Duration::from_secs(600));
    config.record_trace = true;
    let mut records = run_chat(&config).trace;
    // Change one answer: the program then asks for something else than recorded.
    let index = records
        .iter()
        .position(|r| matches!(r, TraceRecord::Response { result: Ok(effectful::effect::Response::WebSocket(effectful::effect::WebSocketResponse::ReceiveText(t))), .. } if t.contains("\"join\"")))
        .expect("a client joined");
    if let TraceRecord::Response { result, .. } = &mut records[index] {
        *result = Ok(effectful::effect::Response::WebSocket(
            effectful::effect::WebSocketResponse::ReceiveText("{\"type\":\"shout\"}".into()),
        ));
    }
    let err = replay(&records, chat_program(Rc::new(config.chat.clone()))).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("record {}", index + 1)) && text.contains("JoinChat"),
        "{text}"
    );
}

/// The frames a client received, parsed.
fn frames(received: &[(Time, String)]) -> Vec<Value> {
    received
        .iter()
        .map(|(_, line)| serde_json::from_str(line).expect("the server speaks JSON"))
        .collect()
}

/// The protocol by example: a send before joining, a malformed frame and an unknown
/// type are errors and the connection stays open; a join shows the history; a send
/// reaches both clients, the sender included, once stored.
#[test]
fn two_clients_speak_the_json_protocol() {
    let program = chat_program(Rc::new(ChatConfig::default()));
    let mut sim = Simulation::new(SimConfig::new(30), Vec::new(), program);
    let s = Duration::from_secs;
    sim.add_connection(Connection {
        client: 0,
        connect_at: Time::from_secs(1),
        messages: vec![
            (s(0), r#"{"type":"send","text":"too early"}"#.into()),
            (s(1), "{not json".into()),
            (s(1), r#"{"type":"shout"}"#.into()),
            (s(1), r#"{"type":"join","name":"alice"}"#.into()),
            (s(1), r#"{"type":"send","text":"hello bob"}"#.into()),
        ],
        end: ConnectionEnd::Close { after: s(10) },
    });
    sim.add_connection(Connection {
        client: 1,
        connect_at: Time::from_secs(2),
        messages: vec![
            (s(0), r#"{"type":"join","name":"bob"}"#.into()),
            (s(5), r#"{"type":"send","text":"hi alice"}"#.into()),
            (s(1), r#"{"type":"join","name":"bob"}"#.into()),
        ],
        end: ConnectionEnd::Close { after: s(10) },
    });
    let report = sim.run();
    assert_eq!(report.unfinished, 0, "{report}");
    let transcripts = sim.transcripts();
    let alice = frames(&transcripts[0].received);
    let kinds: Vec<&str> = alice.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["error", "error", "error", "joined", "message", "message"]
    );
    assert_eq!(alice[0]["error"], "join first");
    assert!(alice[1]["error"].as_str().unwrap().starts_with("malformed"));
    assert!(alice[2]["error"].as_str().unwrap().contains("shout"));
    assert_eq!(alice[3]["history"], Value::Array(vec![]));
    assert_eq!(
        (alice[4]["name"].as_str(), alice[4]["text"].as_str()),
        (Some("alice"), Some("hello bob"))
    );
    assert_eq!(alice[4]["user_id"], alice[3]["user_id"]);
    assert_eq!(alice[5]["text"], "hi alice");
    let bob = frames(&transcripts[1].received);
    let kinds: Vec<&str> = bob.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["joined", "message", "message", "error"]);
    assert_eq!(
        bob[1], alice[4],
        "both see the same message, field for field"
    );
    assert_eq!(bob[2], alice[5]);
    assert!(
        bob[3]["error"]
            .as_str()
            .unwrap()
            .starts_with("already joined")
    );
    let stored = sim.services().database.room();
    assert_eq!(stored.len(), 2);
    assert_eq!(bob[1]["created_at"], stored[0].created_at.to_string());
}

/// A room where 1,000 things were said: a join shows one bounded page, the newest 50
/// messages oldest first, not everything ever said.
#[test]
fn history_of_a_long_conversation_is_the_last_fifty_messages_oldest_first() {
    let program = chat_program(Rc::new(ChatConfig::default()));
    let mut sim = Simulation::new(SimConfig::new(31), Vec::new(), program);
    let db = &mut sim.services_mut().database;
    let author = db.join_chat("long".into());
    for i in 0..1000 {
        let post = PostRoomMessage {
            user_id: author.id,
            text: format!("line {i}"),
            message_id: None,
        };
        db.handle(Time::from_secs(i), DatabaseRequest::PostRoomMessage(post))
            .expect("stored");
    }
    let newest: Vec<String> = db.room()[1000 - HISTORY_LENGTH as usize..]
        .iter()
        .map(|m| m.id.to_string())
        .collect();
    sim.add_connection(Connection {
        client: 0,
        connect_at: Time::from_secs(2000),
        messages: vec![(Duration::ZERO, r#"{"type":"join","name":"long"}"#.into())],
        end: ConnectionEnd::Close {
            after: Duration::from_secs(1),
        },
    });
    let report = sim.run();
    assert_eq!(report.unfinished, 0, "{report}");
    let transcripts = sim.transcripts();
    let joined = &frames(&transcripts[0].received)[0];
    assert_eq!(joined["type"], "joined");
    assert_eq!(joined["user_id"], author.id.to_string(), "the name's user");
    let history: Vec<&str> = joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(history, newest);
}
