//! The chat program under simulation: many seeds, faults, and the invariants.

use std::rc::Rc;
use std::time::Duration;

use effectful::Time;
use effectful::effect::{CreateUserOutcome, DatabaseRequest, SaveChatMessage};
use effectful_chat::session::{ChatConfig, HISTORY_LENGTH};
use effectful_chat::sim::{ChatSimConfig, chat_program, run_chat};
use effectful_test::fault::{FaultPlan, PerFamily};
use effectful_test::seed;
use effectful_test::sim::{Connection, ConnectionEnd, SimConfig, Simulation};
use effectful_test::trace::{
    DEFAULT_MAX_LINE, TraceRecord, first_divergence, read_trace, replay, write_trace,
};

/// 1,000 swarm seeds: each picks its client count (up to 12), its fault rates and its
/// latencies; 30 simulated minutes each. `EFFECTFUL_SEED=<n>` reruns one seed.
#[test]
fn a_thousand_swarm_seeds_keep_every_invariant() {
    let seeds = seed::seeds_from_env(0..1000).expect("EFFECTFUL_SEED must be a number");
    let mut failures = Vec::new();
    let (mut effects, mut acked, mut faults) = (0, 0, 0);
    for s in seeds.clone() {
        let run = run_chat(&ChatSimConfig::swarm(s, 12, Duration::from_secs(1800)));
        effects += run.report.effects;
        acked += run.acked;
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
    // The runs did real work: messages were acknowledged and faults were injected.
    if seeds.end - seeds.start >= 100 {
        assert!(effects > 100_000, "only {effects} effects");
        assert!(acked > 10_000, "only {acked} acknowledged messages");
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

/// Lost answers to saves, retried without an idempotency key, store messages twice:
/// the invariant check must notice.
#[test]
fn retried_saves_without_idempotent_ids_are_caught_as_duplicates() {
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

/// Publishes retried after a lost answer, without a deduplication key, reach the room
/// twice as new messages: the invariant check must notice.
#[test]
fn retried_publishes_without_a_dedup_key_are_caught_as_unmarked_duplicates() {
    let mut config = ChatSimConfig::new(4, 40, Duration::from_secs(3600));
    config.faults.lost_answer_rate = PerFamily {
        messaging: 0.3,
        ..PerFamily::all(0.0)
    };
    let broken = ChatConfig {
        dedup_publishes: false,
        ..ChatConfig::default()
    };
    assert_caught(config, broken, &["without a redelivery mark"]);
}

/// A program that neither invalidates on rename nor keeps to the 600 s TTL policy
/// serves stale profiles for a day: the invariant check must notice.
#[test]
fn stale_profiles_past_the_ttl_are_caught() {
    let config = ChatSimConfig::new(5, 30, Duration::from_secs(3 * 3600));
    let broken = ChatConfig {
        invalidate_on_rename: false,
        profile_ttl_seconds: 86_400,
        ..ChatConfig::default()
    };
    assert_caught(config, broken, &["past the"]);
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
        .position(|r| matches!(r, TraceRecord::Response { result: Ok(effectful::effect::Response::WebSocket(effectful::effect::WebSocketResponse::ReceiveText(t))), .. } if t.starts_with("history")))
        .expect("a client asked for history");
    if let TraceRecord::Response { result, .. } = &mut records[index] {
        *result = Ok(effectful::effect::Response::WebSocket(
            effectful::effect::WebSocketResponse::ReceiveText("profile".into()),
        ));
    }
    let err = replay(&records, chat_program(Rc::new(config.chat.clone()))).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("record {}", index + 1)) && text.contains("GetCachedProfile"),
        "{text}"
    );
}

/// A user who has said 1,000 things asks for history: the reply is one bounded page,
/// the newest 50 messages oldest first, not everything ever said.
#[test]
fn history_of_a_long_conversation_is_the_last_fifty_messages_oldest_first() {
    let program = chat_program(Rc::new(ChatConfig::default()));
    let mut sim = Simulation::new(SimConfig::new(31), Vec::new(), program);
    let db = &mut sim.services_mut().database;
    let CreateUserOutcome::Created(user) =
        db.create_user("long@chat.test".into(), "long".into(), "h".into())
    else {
        panic!("a fresh database takes the user");
    };
    for i in 0..1000 {
        let save = SaveChatMessage {
            user_id: user.id,
            text: format!("line {i}"),
            message_id: None,
        };
        db.handle(Time::from_secs(i), DatabaseRequest::SaveChatMessage(save))
            .expect("saved");
    }
    let all = db.messages_for_user(user.id);
    let newest: Vec<String> = all[all.len() - HISTORY_LENGTH as usize..]
        .iter()
        .map(|m| m.id.to_string())
        .collect();
    sim.add_connection(Connection {
        client: 0,
        connect_at: Time::from_secs(2000),
        messages: vec![
            (Duration::ZERO, format!("login {}", user.id)),
            (Duration::from_secs(1), "history".into()),
        ],
        end: ConnectionEnd::Close {
            after: Duration::from_secs(1),
        },
    });
    let report = sim.run();
    assert_eq!(report.unfinished, 0, "{report}");
    let transcripts = sim.transcripts();
    let reply = transcripts[0]
        .received
        .iter()
        .find_map(|(_, line)| line.strip_prefix("history "))
        .expect("a history reply");
    assert_eq!(reply, format!("{HISTORY_LENGTH} {}", newest.join(",")));
}
