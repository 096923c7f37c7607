//! The simulator's own behaviour: WebSocket clients, the fault plan, messaging, the
//! seeded scheduler, traces, and the clock and UUIDs the services hand out.
//!
//! Each test runs a small purpose-built program (`program(connection, fx)`) and checks
//! what its clients saw, what it returned, the report and the trace.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use effectful::effect::*;
use effectful::{EffectError, ErrorKind, Fx, ProgramError, Time, Timestamp, join, join_all};
use effectful_test::fake::{DEFAULT_WALL_EPOCH, wall_time};
use effectful_test::fault::{FaultPlan, Latency};
use effectful_test::sim::{
    Connection, ConnectionEnd, ConnectionState, SimConfig, SimReport, Simulation, Transcript,
};
use effectful_test::trace::{
    ClientEvent, DEFAULT_MAX_LINE, Fault, ReplayError, TraceReadError, TraceRecord,
    first_divergence, read_trace, replay, write_trace,
};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// The default latency of every family in `FaultPlan::none()`.
const DEFAULT_LATENCY: Duration = Duration::from_micros(500);

fn connection(connect_at: Time, messages: &[(Duration, &str)], end: ConnectionEnd) -> Connection {
    Connection {
        client: 0,
        connect_at,
        messages: messages
            .iter()
            .map(|(delay, text)| (*delay, (*text).to_string()))
            .collect(),
        end,
    }
}

/// A connection that only serves to spawn a program at `at` (the client says nothing
/// and closes a minute later).
fn quiet(at: Time) -> Connection {
    connection(at, &[], ConnectionEnd::Close { after: 60 * SEC })
}

fn texts(lines: &[(Time, String)]) -> Vec<&str> {
    lines.iter().map(|(_, text)| text.as_str()).collect()
}

fn close_code(error: &EffectError) -> Option<u16> {
    match error.kind {
        ErrorKind::WebSocketClosed { code, .. } => Some(code),
        _ => None,
    }
}

/// The result of the only connection's program.
fn only_result<O, P, Fut>(sim: &Simulation<O, P>) -> Result<O, ProgramError>
where
    O: Clone + std::fmt::Debug + 'static,
    P: FnMut(u32, Fx) -> Fut,
    Fut: Future<Output = O> + 'static,
{
    assert_eq!(sim.results().len(), 1);
    sim.results()[0].clone().expect("the program finished")
}

/// Echoes every client message until the connection ends; returns what it received
/// and the error that ended it.
async fn echo(_connection: u32, fx: Fx) -> (Vec<String>, EffectError) {
    let mut received = Vec::new();
    loop {
        let text = match fx.perform(ReceiveText {}).await {
            Ok(text) => text,
            Err(error) => return (received, error),
        };
        received.push(text.clone());
        if let Err(error) = fx.perform(SendText { text }).await {
            return (received, error);
        }
    }
}

/// How `echo` ended: what it received and the error that stopped it.
type EchoResult = Result<(Vec<String>, EffectError), ProgramError>;

/// Runs `echo` for one connection: its result, its transcript and the report.
fn run_echo(config: SimConfig, script: Connection) -> (EchoResult, Transcript, SimReport) {
    let mut sim = Simulation::new(config, vec![script], echo);
    let report = sim.run();
    (only_result(&sim), sim.transcripts()[0].clone(), report)
}

// ---------------------------------------------------------------------------------
// WebSocket clients
// ---------------------------------------------------------------------------------

#[test]
fn echoes_reach_the_client_in_send_order_even_when_latency_jitter_is_large() {
    let sent: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    let mut slowest = Duration::ZERO;
    for seed in 0..20 {
        let mut config = SimConfig::new(seed);
        config.faults.latency.websocket = Latency {
            base: MS,
            jitter: 500 * MS,
            spike_rate: 0.0,
            spike: Duration::ZERO,
        };
        let script = Connection {
            client: 0,
            connect_at: Time::from_secs(1),
            messages: sent.iter().map(|text| (MS, text.clone())).collect(),
            end: ConnectionEnd::Close { after: 2 * SEC },
        };
        let (result, t, report) = run_echo(config, script);
        let (received, error) = result.unwrap();
        assert_eq!(received, sent, "seed {seed}: the program reads in order");
        assert_eq!(close_code(&error), Some(1000), "seed {seed}: {error}");
        assert_eq!(texts(&t.sent), sent, "seed {seed}");
        assert_eq!(
            texts(&t.received),
            sent,
            "seed {seed}: echoes in send order"
        );
        assert!(
            t.received.windows(2).all(|w| w[0].0 < w[1].0),
            "seed {seed}: arrivals strictly increase: {:?}",
            t.received
        );
        for ((sent_at, _), (received_at, _)) in t.sent.iter().zip(&t.received) {
            slowest = slowest.max(*received_at - *sent_at);
        }
        assert_eq!((report.unfinished, report.late), (0, 0), "{report}");
    }
    // The jitter was large enough to reorder frames had the simulator let it.
    assert!(slowest > 100 * MS, "slowest echo took only {slowest:?}");
}

#[test]
fn a_client_that_vanishes_ends_a_waiting_receive_with_close_code_1006() {
    let script = connection(
        Time::from_secs(2),
        &[(SEC, "hello")],
        ConnectionEnd::Vanish { after: 3 * SEC },
    );
    let (result, t, report) = run_echo(SimConfig::new(1), script);
    let (received, error) = result.unwrap();
    assert_eq!(received, ["hello"]);
    assert_eq!(error.effect, "WebSocket.ReceiveText");
    assert!(
        matches!(error.kind, ErrorKind::WebSocketClosed { code: 1006, .. }),
        "{error}"
    );
    assert!(!error.retryable);
    assert_eq!(t.state, ConnectionState::Vanished);
    assert_eq!(texts(&t.received), ["hello"]);
    // The program ends the moment the client vanishes: 2 s + 1 s + 3 s.
    assert_eq!(t.finished, Some(Time::from_secs(6)));
    assert_eq!(report.unfinished, 0);
}

#[test]
fn a_client_close_ends_a_waiting_receive_with_close_code_1000() {
    let script = connection(
        Time::ZERO,
        &[(SEC, "a"), (SEC, "b")],
        ConnectionEnd::Close { after: SEC },
    );
    let (result, t, _) = run_echo(SimConfig::new(2), script);
    let (received, error) = result.unwrap();
    assert_eq!(received, ["a", "b"]);
    assert_eq!(error.effect, "WebSocket.ReceiveText");
    assert!(
        matches!(error.kind, ErrorKind::WebSocketClosed { code: 1000, .. }),
        "{error}"
    );
    assert_eq!(t.state, ConnectionState::ClosedByClient);
    assert_eq!(t.finished, Some(Time::from_secs(3)));
}

/// Reads client messages, spending 100 ms in the database after each; returns what it
/// read and the close code that ended it.
async fn slow_reader(_connection: u32, fx: Fx) -> (Vec<String>, Option<u16>) {
    let mut received = Vec::new();
    loop {
        match fx.perform(ReceiveText {}).await {
            Ok(text) => received.push(text),
            Err(error) => return (received, close_code(&error)),
        }
        fx.perform(ListUsers {
            limit: 1,
            offset: 0,
        })
        .await
        .expect("no faults are planned");
    }
}

#[test]
fn messages_a_client_sent_before_it_closed_or_vanished_reach_a_busy_program_first() {
    // The client sends a second message, then closes (or vanishes), while the program
    // is busy with the first. Frames arrive in order on one stream, so the program
    // reads the second message before it learns that the connection ended.
    // (Regression: the simulator used to drop the buffered message.)
    let ends = [
        (ConnectionEnd::Close { after: 10 * MS }, 1000),
        (ConnectionEnd::Vanish { after: 10 * MS }, 1006),
    ];
    for (end, code) in ends {
        let mut config = SimConfig::new(3);
        config.faults.latency.database = Latency::fixed(100 * MS);
        let script = connection(Time::ZERO, &[(SEC, "first"), (10 * MS, "second")], end);
        let mut sim = Simulation::new(config, vec![script], slow_reader);
        sim.run();
        let (received, closed_with) = only_result(&sim).unwrap();
        assert_eq!(received, ["first", "second"], "{end:?}");
        assert_eq!(closed_with, Some(code), "{end:?}");
        // The close is seen once the buffered message is handled: 1 s + 2 × 100 ms.
        let finished = sim.transcripts()[0].finished;
        assert_eq!(finished, Some(Time::from_millis(1_200)), "{end:?}");
    }
}

#[test]
fn send_text_after_the_client_vanished_fails_with_close_code_1006() {
    let script = connection(
        Time::ZERO,
        &[(SEC, "hi")],
        ConnectionEnd::Vanish { after: SEC },
    );
    let mut sim = Simulation::new(SimConfig::new(4), vec![script], |_, fx: Fx| async move {
        let text = fx.perform(ReceiveText {}).await?;
        fx.sleep(5 * SEC).await;
        fx.perform(SendText { text }).await
    });
    sim.run();
    let error = only_result(&sim).unwrap().unwrap_err();
    assert_eq!(error.effect, "WebSocket.SendText");
    assert_eq!(close_code(&error), Some(1006), "{error}");
    let t = &sim.transcripts()[0];
    assert_eq!(t.state, ConnectionState::Vanished);
    assert!(t.received.is_empty(), "{:?}", t.received);
}

#[test]
fn a_server_close_shows_as_closed_by_server_and_later_client_messages_are_not_delivered() {
    let script = connection(
        Time::ZERO,
        &[(SEC, "one"), (SEC, "two"), (SEC, "three")],
        ConnectionEnd::Close { after: SEC },
    );
    let mut sim = Simulation::new(SimConfig::new(5), vec![script], |_, fx: Fx| async move {
        let first = fx.perform(ReceiveText {}).await?;
        fx.perform(SendText {
            text: format!("bye after {first}"),
        })
        .await?;
        fx.perform(Close {
            reason: CloseReason::PolicyViolation("one message per session".into()),
        })
        .await?;
        // Whatever the client sends now never reaches the program.
        fx.perform(ReceiveText {}).await
    });
    sim.run();
    let error = only_result(&sim).unwrap().unwrap_err();
    assert_eq!(error.effect, "WebSocket.ReceiveText");
    assert_eq!(close_code(&error), Some(1008), "{error}");
    let t = &sim.transcripts()[0];
    assert_eq!(t.state, ConnectionState::ClosedByServer(1008));
    assert_eq!(texts(&t.sent), ["one"], "later messages are not sent");
    // A frame sent before the close still reaches the client.
    assert_eq!(texts(&t.received), ["bye after one"]);
}

#[test]
fn a_lingering_client_leaves_the_program_waiting_until_its_deadline() {
    let mut config = SimConfig::new(6);
    config.program_timeout = Some(Duration::from_secs(60));
    let script = connection(Time::from_secs(5), &[(SEC, "hello")], ConnectionEnd::Linger);
    let (result, t, report) = run_echo(config, script);
    assert_eq!(
        result,
        Err(ProgramError::DeadlineExceeded {
            deadline: Time::from_secs(65)
        })
    );
    // The program ended past its deadline with the connection open: the server closed
    // it with the seed tutorial's timeout code.
    assert_eq!(t.state, ConnectionState::ClosedByServer(1008));
    assert_eq!(texts(&t.received), ["hello"]);
    assert_eq!(t.finished, Some(Time::from_secs(65)));
    assert_eq!((report.late, report.unfinished), (0, 0), "{report}");
    assert_eq!(report.programs, 1);
    assert_eq!(report.simulated, Duration::from_secs(65));
}

#[test]
fn a_server_close_ends_a_receive_waiting_in_another_future_of_the_program() {
    // One future waits for a client message while another closes the connection: the
    // close ends the wait with the close code. (Regression: the receive hung until the
    // program's deadline.)
    let mut sim = Simulation::new(
        SimConfig::new(61),
        vec![quiet(Time::ZERO)],
        |_, fx: Fx| async move {
            let (received, closed) = join(fx.perform(ReceiveText {}), async {
                fx.sleep(SEC).await;
                fx.perform(Close {
                    reason: CloseReason::PolicyViolation("closing".into()),
                })
                .await
            })
            .await;
            (received, closed, fx.now())
        },
    );
    let report = sim.run();
    let (received, closed, ended_at) = only_result(&sim).unwrap();
    assert_eq!(closed, Ok(()));
    let error = received.unwrap_err();
    assert_eq!(error.effect, "WebSocket.ReceiveText");
    assert_eq!(close_code(&error), Some(1008), "{error}");
    assert_eq!(ended_at, Time::from_secs(1));
    assert_eq!(
        sim.transcripts()[0].state,
        ConnectionState::ClosedByServer(1008)
    );
    assert_eq!((report.unfinished, report.late), (0, 0), "{report}");
}

/// The close codes the server sent, by the trace.
fn server_close_in_trace(trace: &[TraceRecord]) -> Vec<u16> {
    trace
        .iter()
        .filter_map(|r| match r {
            TraceRecord::Client {
                event: ClientEvent::ClosedByServer(code),
                ..
            } => Some(*code),
            _ => None,
        })
        .collect()
}

#[test]
fn a_program_that_returns_with_its_connection_open_closes_it_with_1000_and_hears_no_more() {
    let mut config = SimConfig::new(62);
    config.record_trace = true;
    let script = connection(
        Time::ZERO,
        &[(SEC, "one"), (SEC, "two"), (SEC, "three")],
        ConnectionEnd::Close { after: SEC },
    );
    let mut sim = Simulation::new(config, vec![script], |_, fx: Fx| async move {
        // Returns an error value of its own: still a normal return for the server.
        fx.perform(ReceiveText {}).await?;
        Err::<(), _>(EffectError::connection_lost("Program.Done", "done"))
    });
    sim.run();
    assert!(
        only_result(&sim).unwrap().is_err(),
        "the program's own value"
    );
    let t = &sim.transcripts()[0];
    assert_eq!(t.state, ConnectionState::ClosedByServer(1000));
    assert_eq!(t.finished, Some(Time::from_secs(1)));
    assert_eq!(texts(&t.sent), ["one"], "later messages are not sent");
    assert_eq!(server_close_in_trace(sim.trace()), [1000]);
}

#[test]
fn a_program_past_its_deadline_closes_its_connection_with_1008() {
    let mut config = SimConfig::new(63);
    config.record_trace = true;
    config.program_timeout = Some(10 * SEC);
    let script = connection(Time::ZERO, &[(20 * SEC, "late")], ConnectionEnd::Linger);
    let mut sim = Simulation::new(config, vec![script], echo);
    sim.run();
    let result = only_result(&sim);
    assert!(
        matches!(result, Err(ProgramError::DeadlineExceeded { .. })),
        "{result:?}"
    );
    let t = &sim.transcripts()[0];
    assert_eq!(t.state, ConnectionState::ClosedByServer(1008));
    assert!(t.sent.is_empty(), "the message after the close is not sent");
    assert_eq!(server_close_in_trace(sim.trace()), [1008]);
}

#[test]
fn a_program_that_fails_with_its_connection_open_closes_it_with_1011() {
    let mut config = SimConfig::new(64);
    config.record_trace = true;
    let mut sim = Simulation::new(config, vec![quiet(Time::ZERO)], |_, fx: Fx| async move {
        fx.sleep(SEC).await;
        // Not an effect: the engine ends the program with ProgramError::ForeignAwait.
        std::future::pending::<()>().await;
    });
    sim.run();
    assert_eq!(only_result(&sim), Err(ProgramError::ForeignAwait));
    assert_eq!(
        sim.transcripts()[0].state,
        ConnectionState::ClosedByServer(1011)
    );
    assert_eq!(server_close_in_trace(sim.trace()), [1011]);
}

#[test]
fn a_program_that_ends_after_its_connection_closed_does_not_close_it_again() {
    let mut config = SimConfig::new(65);
    config.record_trace = true;
    let script = connection(
        Time::ZERO,
        &[(SEC, "hi")],
        ConnectionEnd::Close { after: SEC },
    );
    let mut sim = Simulation::new(config, vec![script], echo);
    sim.run();
    assert_eq!(sim.transcripts()[0].state, ConnectionState::ClosedByClient);
    assert!(server_close_in_trace(sim.trace()).is_empty());
}

// ---------------------------------------------------------------------------------
// The fault plan
// ---------------------------------------------------------------------------------

/// One effect of every family but WebSocket, each result reduced to success or error.
async fn one_effect_per_family(_connection: u32, fx: Fx) -> Vec<Result<&'static str, EffectError>> {
    fn named<T>(
        name: &'static str,
        result: Result<T, EffectError>,
    ) -> Result<&'static str, EffectError> {
        result.map(|_| name)
    }
    vec![
        named(
            "Database.CreateUser",
            fx.perform(CreateUser {
                email: "ada@example.com".into(),
                name: "Ada".into(),
                password_hash: "h".into(),
            })
            .await,
        ),
        named(
            "Database.ListUsers",
            fx.perform(ListUsers {
                limit: 10,
                offset: 0,
            })
            .await,
        ),
        named(
            "Cache.PutCachedValue",
            fx.perform(PutCachedValue {
                key: "k".into(),
                value: b"v".to_vec(),
                ttl_seconds: None,
            })
            .await,
        ),
        named(
            "Messaging.PublishMessage",
            fx.perform(PublishMessage {
                topic: "t".into(),
                payload: b"p".to_vec(),
                properties: Default::default(),
                dedup_key: None,
            })
            .await,
        ),
        named(
            "Storage.PutObject",
            fx.perform(PutObject {
                bucket: "b".into(),
                key: "k".into(),
                content: b"c".to_vec(),
                metadata: Default::default(),
                content_type: None,
            })
            .await,
        ),
        named(
            "Auth.HashPassword",
            fx.perform(HashPassword {
                password: "pw".into(),
            })
            .await,
        ),
        named("System.GenerateUuid", fx.perform(GenerateUuid {}).await),
        named(
            "Metrics.IncrementCounter",
            fx.perform(IncrementCounter {
                name: "hits".into(),
                labels: Default::default(),
                value: 1.0,
            })
            .await,
        ),
        named(
            "Database.GetUserById",
            fx.perform(GetUserById {
                user_id: uuid::Uuid::nil(),
            })
            .await,
        ),
    ]
}

#[test]
fn a_database_error_rate_of_one_fails_every_database_effect_and_only_those() {
    let mut config = SimConfig::new(7);
    config.faults.error_rate.database = 1.0;
    let mut sim = Simulation::new(config, vec![quiet(Time::ZERO)], one_effect_per_family);
    let report = sim.run();
    let results = only_result(&sim).unwrap();
    let mut failed = 0;
    for result in &results {
        match result {
            Ok(name) => assert!(!name.starts_with("Database."), "{name} succeeded"),
            Err(error) => {
                failed += 1;
                assert!(error.effect.starts_with("Database."), "{error}");
                assert_eq!(error.kind, ErrorKind::ConnectionLost, "{error}");
                assert!(error.retryable, "{error}");
            }
        }
    }
    assert_eq!(failed, 3, "{results:?}");
    assert_eq!(results.len(), 9);
    assert_eq!(report.faults, 3, "{report}");
    // The failure came before the service saw the request.
    assert_eq!(sim.services().database.users().count(), 0);
}

#[test]
fn a_lost_answer_times_out_the_program_although_the_service_applied_the_effect() {
    let mut config = SimConfig::new(8);
    config.faults.lost_answer_rate.database = 1.0;
    config.record_trace = true;
    let mut sim = Simulation::new(config, vec![quiet(Time::ZERO)], |_, fx: Fx| async move {
        let before = fx.now();
        let created = fx
            .perform_timeout(
                CreateUser {
                    email: "lost@example.com".into(),
                    name: "Lost".into(),
                    password_hash: "h".into(),
                },
                2 * SEC,
            )
            .await;
        (created, fx.now() - before)
    });
    let report = sim.run();
    let (created, waited) = only_result(&sim).unwrap();
    let error = created.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert_eq!(error.effect, "Database.CreateUser");
    assert!(error.retryable);
    assert_eq!(waited, 2 * SEC);
    assert!(
        sim.services()
            .database
            .user_by_email("lost@example.com")
            .is_some(),
        "the database stored the user even though the answer was lost"
    );
    assert_eq!(report.faults, 1);
    assert!(sim.trace().iter().any(|r| matches!(
        r,
        TraceRecord::Fault {
            fault: Fault::LostAnswer,
            ..
        }
    )));
    // The program gave up on the effect, so the engine cancelled it.
    assert!(
        sim.trace()
            .iter()
            .any(|r| matches!(r, TraceRecord::Cancel { .. }))
    );
}

#[test]
fn a_fixed_latency_advances_the_program_clock_by_exactly_that_per_effect() {
    let mut config = SimConfig::new(9);
    config.faults.latency.system = Latency::fixed(7 * MS);
    config.faults.latency.database = Latency::fixed(3 * MS);
    let mut sim = Simulation::new(
        config,
        vec![quiet(Time::from_secs(4))],
        |_, fx: Fx| async move {
            let mut steps = Vec::new();
            for _ in 0..3 {
                let before = fx.now();
                fx.perform(GetCurrentTime {}).await.unwrap();
                steps.push(("system", fx.now() - before));
                let before = fx.now();
                fx.perform(GenerateUuid {}).await.unwrap();
                steps.push(("system", fx.now() - before));
                let before = fx.now();
                fx.perform(ListUsers {
                    limit: 1,
                    offset: 0,
                })
                .await
                .unwrap();
                steps.push(("database", fx.now() - before));
            }
            (steps, fx.now())
        },
    );
    sim.run();
    let (steps, end) = only_result(&sim).unwrap();
    assert_eq!(steps.len(), 9);
    for (family, step) in &steps {
        let expected = if *family == "system" { 7 * MS } else { 3 * MS };
        assert_eq!(*step, expected, "{family}: {steps:?}");
    }
    assert_eq!(end, Time::from_secs(4) + 3 * (7 * MS + 7 * MS + 3 * MS));
}

#[test]
fn a_websocket_drop_rate_of_one_vanishes_the_client_right_after_its_first_message() {
    let mut config = SimConfig::new(10);
    config.faults.websocket_drop_rate = 1.0;
    let script = connection(
        Time::ZERO,
        &[(SEC, "first"), (SEC, "second"), (SEC, "third")],
        ConnectionEnd::Close { after: SEC },
    );
    let (result, t, report) = run_echo(config, script);
    let (received, error) = result.unwrap();
    assert_eq!(received, ["first"]);
    assert_eq!(close_code(&error), Some(1006), "{error}");
    assert_eq!(texts(&t.sent), ["first"]);
    assert_eq!(t.state, ConnectionState::Vanished);
    assert_eq!(t.finished, Some(Time::from_secs(1)));
    assert_eq!(report.faults, 1);
}

fn ada() -> CreateUser {
    CreateUser {
        email: "ada@example.com".into(),
        name: "Ada".into(),
        password_hash: "h".into(),
    }
}

#[test]
fn an_effect_takes_effect_halfway_through_its_latency_before_its_answer_arrives() {
    // The write takes 100 ms there and back, so the database has it at 50 ms; lookups
    // take 10 ms. A lookup applied at 45 ms misses it, one applied at 55 ms finds it
    // and is answered at 60 ms, long before the writer hears back at 100 ms.
    let mut config = SimConfig::new(71);
    config.faults.latency.database = Latency::fixed(100 * MS);
    config.faults.latency.auth = Latency::fixed(10 * MS);
    let connections = vec![quiet(Time::ZERO), quiet(Time::ZERO)];
    let mut sim = Simulation::new(config, connections, |connection, fx: Fx| async move {
        let mut seen = Vec::new();
        if connection == 0 {
            fx.perform(ada()).await.expect("no faults are planned");
            seen.push((fx.now(), "created"));
        } else {
            for at in [40, 50] {
                fx.sleep_until(Time::from_millis(at)).await;
                let lookup = fx
                    .perform(GetUserByEmail {
                        email: "ada@example.com".into(),
                    })
                    .await
                    .expect("no faults are planned");
                let found = matches!(lookup, EmailLookup::Found(_));
                seen.push((fx.now(), if found { "found" } else { "not found" }));
            }
        }
        seen
    });
    sim.run();
    let results: Vec<_> = sim
        .results()
        .iter()
        .map(|r| r.clone().expect("finished").expect("ok"))
        .collect();
    assert_eq!(results[0], [(Time::from_millis(100), "created")]);
    assert_eq!(
        results[1],
        [
            (Time::from_millis(50), "not found"),
            (Time::from_millis(60), "found")
        ]
    );
}

/// What became of a `CreateUser` the program gave up on.
struct GivenUp {
    /// What the program got.
    result: Result<CreateUserOutcome, EffectError>,
    /// Whether the database stored the user.
    stored: bool,
    /// The run's trace.
    trace: Vec<TraceRecord>,
}

/// Creates Ada with a 100 ms database latency, giving up after `timeout`.
fn create_with_timeout(seed: u64, timeout: Duration) -> GivenUp {
    let mut config = SimConfig::new(seed);
    config.faults.latency.database = Latency::fixed(100 * MS);
    config.record_trace = true;
    let mut sim = Simulation::new(config, vec![quiet(Time::ZERO)], |_, fx: Fx| async move {
        fx.perform_timeout(ada(), timeout).await
    });
    sim.run();
    GivenUp {
        result: only_result(&sim).expect("the program returned"),
        stored: sim
            .services()
            .database
            .user_by_email("ada@example.com")
            .is_some(),
        trace: sim.trace().to_vec(),
    }
}

/// The id of the only `Database.CreateUser` request in `trace`.
fn create_user_id(trace: &[TraceRecord]) -> effectful::EffectId {
    let ids: Vec<_> = trace
        .iter()
        .filter_map(|r| match r {
            TraceRecord::Request {
                id,
                request: Request::Database(DatabaseRequest::CreateUser(_)),
            } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids[0]
}

#[test]
fn a_request_cancelled_before_it_reaches_the_service_is_never_applied() {
    // Cancelled at 20 ms; it would have reached the database at 50 ms.
    let run = create_with_timeout(72, 20 * MS);
    let error = run.result.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert!(!run.stored, "the cancelled request was applied");
    let id = create_user_id(&run.trace);
    assert!(
        run.trace.contains(&TraceRecord::Cancel { id }),
        "the engine cancelled it"
    );
    assert!(
        !run.trace
            .iter()
            .any(|r| matches!(r, TraceRecord::Response { id: answered, .. } if *answered == id)),
        "a request never applied is never answered"
    );
}

#[test]
fn a_request_cancelled_after_it_reached_the_service_stays_applied_and_its_answer_is_stale() {
    // Applied at 50 ms, cancelled at 70 ms, answered at 100 ms.
    let run = create_with_timeout(73, 70 * MS);
    let error = run.result.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert!(run.stored, "the database keeps what it applied");
    let id = create_user_id(&run.trace);
    let answers: Vec<_> = run
        .trace
        .iter()
        .filter_map(|r| match r {
            TraceRecord::Response {
                at,
                id: answered,
                delivered,
                ..
            } if *answered == id => Some((*at, *delivered)),
            _ => None,
        })
        .collect();
    assert_eq!(answers, [(Time::from_millis(100), false)]);
}

#[test]
fn websocket_error_and_lost_answer_rates_do_not_fail_websocket_effects() {
    // WebSocket failures are dropped connections only.
    let mut config = SimConfig::new(74);
    config.faults.error_rate.websocket = 1.0;
    config.faults.lost_answer_rate.websocket = 1.0;
    let script = connection(
        Time::ZERO,
        &[(SEC, "a"), (SEC, "b")],
        ConnectionEnd::Close { after: SEC },
    );
    let (result, t, report) = run_echo(config, script);
    let (received, error) = result.unwrap();
    assert_eq!(received, ["a", "b"]);
    assert_eq!(close_code(&error), Some(1000), "{error}");
    assert_eq!(texts(&t.received), ["a", "b"]);
    assert_eq!(report.faults, 0, "{report}");
}

// ---------------------------------------------------------------------------------
// Messaging
// ---------------------------------------------------------------------------------

fn publish(topic: &str, payload: &str) -> PublishMessage {
    PublishMessage {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec(),
        properties: Default::default(),
        dedup_key: None,
    }
}

fn consume(subscription: &str, timeout_ms: u64) -> ConsumeMessage {
    ConsumeMessage {
        subscription: subscription.into(),
        timeout_ms,
    }
}

fn envelope(outcome: ConsumeOutcome) -> Envelope {
    match outcome {
        ConsumeOutcome::Message(envelope) => *envelope,
        ConsumeOutcome::Timeout => panic!("expected a message, got a timeout"),
    }
}

/// What a messaging program saw: each consume's answer, with when it came.
type Consumed = Vec<(Time, ConsumeOutcome)>;

/// What each connection's messaging program saw; every one finished without error.
fn consumed<P, Fut>(sim: &Simulation<Result<Consumed, EffectError>, P>) -> Vec<Consumed>
where
    P: FnMut(u32, Fx) -> Fut,
    Fut: Future<Output = Result<Consumed, EffectError>> + 'static,
{
    sim.results()
        .iter()
        .map(|r| {
            r.clone()
                .expect("finished")
                .expect("ok")
                .expect("no faults")
        })
        .collect()
}

#[test]
fn a_parked_consumer_is_woken_by_a_publish_from_another_connection() {
    let connections = vec![quiet(Time::ZERO), quiet(Time::from_secs(10))];
    let mut sim = Simulation::new(
        SimConfig::new(11),
        connections,
        |connection, fx: Fx| async move {
            let mut seen: Consumed = Vec::new();
            if connection == 0 {
                let outcome = fx.perform(consume("news/readers", 60_000)).await?;
                seen.push((fx.now(), outcome));
            } else {
                let published = fx.perform(publish("news", "hello")).await?;
                assert!(matches!(published, PublishOutcome::Published { .. }));
            }
            Ok::<_, EffectError>(seen)
        },
    );
    let report = sim.run();
    let results = consumed(&sim);
    let [(at, outcome)] = results[0].as_slice() else {
        panic!("expected one consume, got {:?}", results[0]);
    };
    let envelope = envelope(outcome.clone());
    assert_eq!(envelope.payload, b"hello");
    assert_eq!(envelope.topic, "news");
    assert_eq!(envelope.redelivery_count, 0);
    // Published at 10 s, in the broker half a latency later, delivered after the
    // messaging latency, long before 60 s.
    assert_eq!(
        *at,
        Time::from_secs(10) + DEFAULT_LATENCY / 2 + DEFAULT_LATENCY
    );
    assert_eq!(report.unfinished, 0);
}

#[test]
fn a_consumer_with_nothing_to_read_times_out_after_exactly_timeout_ms() {
    let mut sim = Simulation::new(
        SimConfig::new(12),
        vec![quiet(Time::from_secs(2))],
        |_, fx: Fx| async move {
            let before = fx.now();
            let outcome = fx.perform(consume("empty/readers", 1_234)).await;
            (outcome, fx.now() - before)
        },
    );
    sim.run();
    let (outcome, waited) = only_result(&sim).unwrap();
    assert_eq!(outcome, Ok(ConsumeOutcome::Timeout));
    assert_eq!(waited, Duration::from_millis(1_234));
}

#[test]
fn a_lost_acknowledgement_makes_the_same_message_arrive_again_after_the_ack_timeout() {
    let mut config = SimConfig::new(13);
    config.faults.duplicate_delivery_rate = 1.0;
    config.faults.ack_timeout = 30 * SEC;
    let mut sim = Simulation::new(config, vec![quiet(Time::ZERO)], |_, fx: Fx| async move {
        fx.perform(publish("jobs", "job-1")).await?;
        let first = envelope(fx.perform(consume("jobs/workers", 1_000)).await?);
        let acked_at = fx.now();
        let ack = fx
            .perform(AcknowledgeMessage {
                message_id: first.message_id.clone(),
            })
            .await?;
        let again = fx.perform(consume("jobs/workers", 120_000)).await?;
        Ok::<_, EffectError>((first, acked_at, ack, fx.now(), again))
    });
    sim.services_mut().broker.subscribe("jobs/workers");
    let report = sim.run();
    let (first, acked_at, ack, again_at, again) = only_result(&sim).unwrap().unwrap();
    assert_eq!(
        ack,
        AckOutcome::Acknowledged,
        "the consumer believes it acked"
    );
    let again = envelope(again);
    assert_eq!(again.message_id, first.message_id);
    assert_eq!(again.payload, b"job-1");
    assert_eq!(again.redelivery_count, 1);
    assert!(
        again_at >= acked_at + 30 * SEC,
        "{again_at} after {acked_at}"
    );
    assert!(
        again_at <= acked_at + 30 * SEC + MS,
        "{again_at} after {acked_at}"
    );
    assert!(report.faults >= 1, "{report}");
}

#[test]
fn a_negative_acknowledgement_redelivers_no_sooner_than_its_delay() {
    let mut sim = Simulation::new(
        SimConfig::new(14),
        vec![quiet(Time::ZERO)],
        |_, fx: Fx| async move {
            fx.perform(publish("jobs", "job-1")).await?;
            let first = envelope(fx.perform(consume("jobs/workers", 1_000)).await?);
            let nacked_at = fx.now();
            let nack = fx
                .perform(NegativeAcknowledge {
                    message_id: first.message_id.clone(),
                    delay_ms: 5_000,
                })
                .await?;
            let again = fx.perform(consume("jobs/workers", 60_000)).await?;
            Ok::<_, EffectError>((first, nacked_at, nack, fx.now(), again))
        },
    );
    sim.services_mut().broker.subscribe("jobs/workers");
    sim.run();
    let (first, nacked_at, nack, again_at, again) = only_result(&sim).unwrap().unwrap();
    assert_eq!(nack, AckOutcome::Acknowledged);
    let again = envelope(again);
    assert_eq!(again.message_id, first.message_id);
    assert_eq!(again.redelivery_count, 1);
    let delay = Duration::from_millis(5_000);
    assert!(
        again_at >= nacked_at + delay,
        "{again_at} after {nacked_at}"
    );
    assert!(
        again_at <= nacked_at + delay + MS,
        "{again_at} after {nacked_at}"
    );
}

#[test]
fn a_consumer_parked_before_a_negative_acknowledgement_gets_the_message_when_its_delay_passes() {
    // Connection 0 takes the message and hands it back at 5 s with a 1 s delay;
    // connection 1 of the same group has been waiting since 1 s.
    let connections = vec![quiet(Time::ZERO), quiet(Time::from_secs(1))];
    let mut sim = Simulation::new(
        SimConfig::new(15),
        connections,
        |connection, fx: Fx| async move {
            let mut seen: Consumed = Vec::new();
            if connection == 0 {
                fx.perform(publish("jobs", "job-1")).await?;
                let outcome = fx.perform(consume("jobs/workers", 1_000)).await?;
                seen.push((fx.now(), outcome.clone()));
                fx.sleep_until(Time::from_secs(5)).await;
                fx.perform(NegativeAcknowledge {
                    message_id: envelope(outcome).message_id,
                    delay_ms: 1_000,
                })
                .await?;
            } else {
                let outcome = fx.perform(consume("jobs/workers", 60_000)).await?;
                seen.push((fx.now(), outcome));
            }
            Ok::<_, EffectError>(seen)
        },
    );
    sim.services_mut().broker.subscribe("jobs/workers");
    sim.run();
    let results = consumed(&sim);
    let first = envelope(results[0][0].1.clone());
    let [(at, outcome)] = results[1].as_slice() else {
        panic!("expected one consume, got {:?}", results[1]);
    };
    let again = envelope(outcome.clone());
    assert_eq!(again.message_id, first.message_id);
    assert_eq!(again.redelivery_count, 1);
    // The nack reached the broker half a latency after 5 s; its 1 s delay ran from there.
    assert_eq!(
        *at,
        Time::from_secs(6) + DEFAULT_LATENCY / 2 + DEFAULT_LATENCY
    );
}

#[test]
fn a_lost_acknowledgement_redelivers_only_that_message_not_the_others_in_flight() {
    // Two messages in flight; only the first is acknowledged, and that ack is lost.
    // Its ack timeout brings back that message alone: the second stays in flight.
    // (Regression: a lost ack redelivered every message in flight.)
    let mut config = SimConfig::new(16);
    config.faults.duplicate_delivery_rate = 1.0;
    config.faults.ack_timeout = 30 * SEC;
    let mut sim = Simulation::new(config, vec![quiet(Time::ZERO)], |_, fx: Fx| async move {
        fx.perform(publish("jobs", "job-1")).await?;
        fx.perform(publish("jobs", "job-2")).await?;
        let first = envelope(fx.perform(consume("jobs/workers", 1_000)).await?);
        let second = envelope(fx.perform(consume("jobs/workers", 1_000)).await?);
        fx.perform(AcknowledgeMessage {
            message_id: first.message_id.clone(),
        })
        .await?;
        let again = envelope(fx.perform(consume("jobs/workers", 60_000)).await?);
        let then = fx.perform(consume("jobs/workers", 60_000)).await?;
        Ok::<_, EffectError>((first, second, again, then))
    });
    sim.services_mut().broker.subscribe("jobs/workers");
    let report = sim.run();
    let (first, second, again, then) = only_result(&sim).unwrap().unwrap();
    assert_eq!(again.message_id, first.message_id);
    assert_eq!(again.redelivery_count, 1);
    assert_eq!(then, ConsumeOutcome::Timeout, "job-2 was not redelivered");
    // Both are in flight: job-1 again, job-2 still.
    assert_eq!(sim.services().broker.in_flight("jobs/workers"), 2);
    assert_ne!(second.message_id, first.message_id);
    assert_eq!(report.faults, 1, "{report}");
}

#[test]
fn a_lost_answer_rate_does_not_apply_to_consumes_but_an_error_rate_fails_them_before_the_broker() {
    let run = |lost: f64, error: f64| {
        let mut config = SimConfig::new(17);
        config.faults.lost_answer_rate.messaging = lost;
        config.faults.error_rate.messaging = error;
        let mut sim = Simulation::new(config, vec![quiet(Time::ZERO)], |_, fx: Fx| async move {
            fx.perform_timeout(consume("jobs/workers", 1_000), 5 * SEC)
                .await
        });
        let broker = &mut sim.services_mut().broker;
        broker.subscribe("jobs/workers");
        broker.handle(
            Time::ZERO,
            MessagingRequest::PublishMessage(Box::new(publish("jobs", "job-1"))),
        );
        let report = sim.run();
        let in_flight = sim.services().broker.in_flight("jobs/workers");
        (only_result(&sim).unwrap(), in_flight, report.faults)
    };
    let (consumed, in_flight, faults) = run(1.0, 0.0);
    assert_eq!(envelope(consumed.unwrap()).payload, b"job-1");
    assert_eq!((in_flight, faults), (1, 0));
    let (consumed, in_flight, faults) = run(0.0, 1.0);
    assert_eq!(consumed.unwrap_err().kind, ErrorKind::ConnectionLost);
    assert_eq!((in_flight, faults), (0, 1), "the broker never saw it");
}

// ---------------------------------------------------------------------------------
// The seeded scheduler
// ---------------------------------------------------------------------------------

/// For each client message: four effects of different families at once, then a
/// batch of clock reads, then a reply. Tolerates every fault.
async fn concurrent_rounds(connection: u32, fx: Fx) -> Vec<String> {
    let mut log = Vec::new();
    let mut round = 0;
    while let Ok(text) = fx.perform(ReceiveText {}).await {
        round += 1;
        let ((user, id), (cached, published)) = join(
            join(
                fx.perform(CreateUser {
                    email: format!("c{connection}-r{round}@example.com"),
                    name: text.clone(),
                    password_hash: "h".into(),
                }),
                fx.perform(GenerateUuid {}),
            ),
            join(
                fx.perform(PutCachedValue {
                    key: format!("c{connection}"),
                    value: text.clone().into_bytes(),
                    ttl_seconds: Some(60),
                }),
                fx.perform(publish("rounds", &text)),
            ),
        )
        .await;
        let clocks = fx.perform_all((0..3).map(|_| GetCurrentTime {})).await;
        log.push(format!(
            "{} {} {} {} {} at {}",
            user.is_ok(),
            id.is_ok(),
            cached.is_ok(),
            published.is_ok(),
            clocks.iter().filter(|c| c.is_ok()).count(),
            fx.now()
        ));
        if fx.perform(SendText { text }).await.is_err() {
            break;
        }
    }
    log
}

fn chaos_trace(seed: u64) -> Vec<TraceRecord> {
    let mut config = SimConfig::new(seed);
    config.faults = FaultPlan::chaos();
    config.record_trace = true;
    let connections = (0..12)
        .map(|i| Connection {
            client: i,
            connect_at: Time::from_millis(u64::from(i) * 50),
            messages: (0..5).map(|m| (20 * MS, format!("msg {m}"))).collect(),
            end: ConnectionEnd::Close { after: SEC },
        })
        .collect();
    let mut sim = Simulation::new(config, connections, concurrent_rounds);
    let report = sim.run();
    assert_eq!((report.unfinished, report.late), (0, 0), "{report}");
    sim.trace().to_vec()
}

#[test]
fn the_same_seed_gives_the_same_trace_under_chaos() {
    let (a, b) = (chaos_trace(21), chaos_trace(21));
    assert!(a.len() > 500, "only {} records", a.len());
    assert_eq!(first_divergence(&a, &b), None);
}

#[test]
fn different_seeds_give_different_traces_beyond_the_start_record() {
    let (a, b) = (chaos_trace(21), chaos_trace(22));
    assert!(matches!(a[0], TraceRecord::Start { .. }));
    let (a, b) = (&a[1..], &b[1..]);
    // Both runs agree on the spawn, the first client message and the four requests it
    // causes; the first thing the seed changes is the first UUID the services draw.
    let uuid_answer = |r: &TraceRecord| match r {
        TraceRecord::Response {
            at,
            id,
            result: Ok(Response::System(SystemResponse::GenerateUuid(uuid))),
            delivered: true,
        } => Some((*at, *id, *uuid)),
        _ => None,
    };
    let first_uuid = a
        .iter()
        .position(|r| uuid_answer(r).is_some())
        .expect("the program drew a UUID");
    assert_eq!(first_uuid, 9, "{:#?}", &a[..=first_uuid]);
    let divergence = first_divergence(a, b).expect("the runs differ");
    assert_eq!(divergence.index, first_uuid, "{divergence}");
    assert_eq!(divergence.expected.as_ref(), Some(&a[first_uuid]));
    let (at_a, id_a, uuid_a) = uuid_answer(&a[first_uuid]).expect("a UUID answer");
    let (at_b, id_b, uuid_b) = divergence
        .got
        .as_ref()
        .and_then(uuid_answer)
        .expect("seed 22 got a UUID answer there too");
    assert_eq!((at_a, id_a), (at_b, id_b), "{divergence}");
    assert_ne!(uuid_a, uuid_b, "{divergence}");
}

/// Eight answers that all arrive at the same instant, in the order they came.
async fn simultaneous_answers(_connection: u32, fx: Fx) -> Vec<(usize, Time)> {
    let order = RefCell::new(Vec::new());
    join_all((0..8).map(|i| {
        let (fx, order) = (&fx, &order);
        async move {
            fx.perform(GenerateUuid {})
                .await
                .expect("no faults are planned");
            order.borrow_mut().push((i, fx.now()));
        }
    }))
    .await;
    order.into_inner()
}

fn answer_order(seed: u64) -> Vec<usize> {
    let mut config = SimConfig::new(seed);
    config.faults.latency.system = Latency::fixed(MS);
    let mut sim = Simulation::new(config, vec![quiet(Time::ZERO)], simultaneous_answers);
    sim.run();
    let arrivals = only_result(&sim).expect("the program ends on its own");
    assert!(
        arrivals.iter().all(|(_, at)| *at == Time::from_millis(1)),
        "every answer comes after exactly the fixed latency: {arrivals:?}"
    );
    let order: Vec<usize> = arrivals.into_iter().map(|(i, _)| i).collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..8).collect::<Vec<_>>(), "each answer once");
    order
}

#[test]
fn the_seed_decides_the_order_of_simultaneous_answers() {
    let (one, two) = (answer_order(1), answer_order(2));
    assert_ne!(one, two, "seeds 1 and 2 order the same answers differently");
    assert_eq!(one, answer_order(1), "and each seed keeps its order");
    // Not a fixed order either: neither is simply the order of the requests.
    assert!(
        one != (0..8).collect::<Vec<_>>() || two != (0..8).collect::<Vec<_>>(),
        "{one:?} {two:?}"
    );
}

// ---------------------------------------------------------------------------------
// Traces
// ---------------------------------------------------------------------------------

fn echo_trace() -> Vec<TraceRecord> {
    let mut config = SimConfig::new(31);
    config.record_trace = true;
    config.faults.latency.websocket = Latency {
        base: MS,
        jitter: 50 * MS,
        spike_rate: 0.0,
        spike: Duration::ZERO,
    };
    let connections = vec![
        connection(
            Time::ZERO,
            &[(MS, "a"), (MS, "b"), (MS, "c")],
            ConnectionEnd::Close { after: SEC },
        ),
        connection(
            Time::from_millis(2),
            &[(MS, "x"), (2 * MS, "y")],
            ConnectionEnd::Vanish { after: 10 * MS },
        ),
        connection(Time::from_millis(3), &[(MS, "z")], ConnectionEnd::Linger),
    ];
    let mut sim = Simulation::new(config, connections, echo);
    sim.run();
    sim.trace().to_vec()
}

#[test]
fn a_recorded_echo_trace_replays_through_json_lines() {
    let records = echo_trace();
    let mut file = Vec::new();
    write_trace(&mut file, &records).unwrap();
    let read = read_trace(file.as_slice(), DEFAULT_MAX_LINE).unwrap();
    assert_eq!(read, records);
    let stats = replay(&read, echo).expect("the trace replays");
    let inputs = records.iter().filter(|r| r.is_input()).count();
    let outputs = records.iter().filter(|r| r.is_output()).count();
    assert_eq!((stats.inputs, stats.outputs), (inputs, outputs));
    assert!(inputs > 10 && outputs > 10, "{stats:?}");
    // Every connection's program was spawned and finished.
    let finished = records
        .iter()
        .filter(|r| matches!(r, TraceRecord::Finished { .. }))
        .count();
    assert_eq!(finished, 3);
}

/// The first text the program sent in `records`: its record's index, and the text.
fn first_sent_text(records: &mut [TraceRecord]) -> (usize, &mut String) {
    records
        .iter_mut()
        .enumerate()
        .find_map(|(index, r)| match r {
            TraceRecord::Request {
                request: Request::WebSocket(WebSocketRequest::SendText(send)),
                ..
            } => Some((index, &mut send.text)),
            _ => None,
        })
        .expect("the program sent something")
}

#[test]
fn a_trace_with_one_request_altered_fails_replay_at_that_record() {
    let mut records = echo_trace();
    let (index, text) = first_sent_text(&mut records);
    *text = "something else".into();
    match replay(&records, echo) {
        Err(ReplayError::Divergence {
            index: at,
            expected,
            got,
        }) => {
            assert_eq!(at, index);
            assert!(expected.contains("something else"), "{expected}");
            assert!(!got.contains("something else"), "{got}");
        }
        other => panic!("expected a divergence at record {index}, got {other:?}"),
    }
}

#[test]
fn a_divergence_on_a_huge_record_quotes_bounded_excerpts_around_the_difference() {
    let records = echo_trace();
    // A 16 MiB text that differs from what the program sent only at its very end.
    let mut tampered = records.clone();
    let (index, text) = first_sent_text(&mut tampered);
    text.push_str(&"~".repeat(16 << 20));
    let error = replay(&tampered, echo).unwrap_err();
    let ReplayError::Divergence { index: at, .. } = error else {
        panic!("expected a divergence, got {error}");
    };
    assert_eq!(at, index);
    let message = error.to_string();
    assert!(message.len() < 1_000, "a {} byte message", message.len());
    assert!(
        message.contains("~~~~") && message.contains("bytes cut]"),
        "{message}"
    );

    let divergence = first_divergence(&records, &tampered).expect("they differ");
    let message = divergence.to_string();
    assert!(message.len() < 1_000, "a {} byte message", message.len());
    assert!(
        message.contains("~~~~") && message.contains("bytes cut]"),
        "{message}"
    );
}

#[test]
fn read_trace_refuses_a_line_over_the_limit_with_its_line_number() {
    let records = echo_trace();
    let mut file = Vec::new();
    write_trace(&mut file, &records).unwrap();
    let limit = file.split(|b| *b == b'\n').map(<[u8]>::len).max().unwrap() + 16;
    assert!(read_trace(file.as_slice(), limit).is_ok());
    file.extend(std::iter::repeat_n(b'x', limit + 1));
    file.push(b'\n');
    match read_trace(file.as_slice(), limit) {
        Err(TraceReadError::LineTooLong { line, limit: l }) => {
            assert_eq!(line, records.len() + 1);
            assert_eq!(l, limit);
        }
        other => panic!("expected a line too long, got {other:?}"),
    }
}

#[test]
fn read_trace_refuses_a_malformed_line_with_its_line_number() {
    let records = echo_trace();
    let mut file = Vec::new();
    write_trace(&mut file, &records).unwrap();
    let text = String::from_utf8(file).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = r#"{"kind":"teleport","at":3}"#;
    let broken = lines.join("\n");
    match read_trace(broken.as_bytes(), DEFAULT_MAX_LINE) {
        Err(TraceReadError::Malformed { line, message }) => {
            assert_eq!(line, 3);
            assert!(message.contains("teleport"), "{message}");
        }
        other => panic!("expected a malformed line, got {other:?}"),
    }
}

#[test]
fn a_trace_without_a_start_record_cannot_replay_and_the_error_says_how_to_record_one() {
    let records = echo_trace();
    let error = replay(&records[1..], echo).unwrap_err();
    assert!(matches!(error, ReplayError::NoStart), "{error}");
    assert!(
        error.to_string().contains(
            "record the trace with SimConfig::record_trace (its first line is a start record)"
        ),
        "{error}"
    );
    assert!(matches!(replay(&[], echo), Err(ReplayError::NoStart)));
}

fn end_records(records: &[TraceRecord]) -> usize {
    records
        .iter()
        .filter(|r| matches!(r, TraceRecord::End { .. }))
        .count()
}

#[test]
fn a_recorded_trace_ends_with_a_record_counting_the_ones_before_it() {
    let records = echo_trace();
    assert_eq!(
        records.last(),
        Some(&TraceRecord::End {
            records: records.len() as u64 - 1
        })
    );
    assert_eq!(end_records(&records), 1);
}

#[test]
fn a_trace_cut_at_any_line_boundary_fails_replay_saying_it_was_cut_short() {
    let records = echo_trace();
    let mut file = Vec::new();
    write_trace(&mut file, &records).unwrap();
    let lines: Vec<&[u8]> = file.split_inclusive(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), records.len());
    // Every whole-line prefix that still has its start record: the recorder could
    // have been killed after any line.
    for kept in 1..lines.len() {
        let cut = lines[..kept].concat();
        let read = read_trace(cut.as_slice(), DEFAULT_MAX_LINE).expect("whole lines read");
        match replay(&read, echo) {
            Err(ReplayError::Truncated { records }) => assert_eq!(records, kept),
            other => panic!("a trace cut after {kept} lines replayed as {other:?}"),
        }
    }
    let error = replay(&records[..records.len() - 1], echo).unwrap_err();
    assert!(error.to_string().contains("cut short"), "{error}");
}

#[test]
fn a_trace_with_a_lost_record_or_a_record_after_its_end_fails_replay() {
    let records = echo_trace();
    let mut lost = records.clone();
    lost.remove(5);
    match replay(&lost, echo) {
        Err(ReplayError::Miscounted { counted, found }) => {
            assert_eq!(
                (counted, found),
                (records.len() as u64 - 1, records.len() - 2)
            );
        }
        other => panic!("expected a miscount, got {other:?}"),
    }
    let mut joined = records.clone();
    joined.extend(records.iter().skip(1).cloned());
    match replay(&joined, echo) {
        Err(ReplayError::AfterEnd { index }) => assert_eq!(index, records.len()),
        other => panic!("expected a record after the end, got {other:?}"),
    }
}

#[test]
fn a_second_run_moves_the_end_record_to_the_new_end() {
    let mut config = SimConfig::new(3);
    config.record_trace = true;
    let mut sim = Simulation::new(config, vec![quiet(Time::ZERO)], echo);
    sim.run();
    let first = sim.trace().len();
    sim.add_connection(quiet(Time::from_secs(120)));
    sim.run();
    let records = sim.trace();
    assert!(records.len() > first);
    assert_eq!(end_records(records), 1);
    replay(records, echo).expect("the continued trace replays");
}

// ---------------------------------------------------------------------------------
// The clock and UUIDs
// ---------------------------------------------------------------------------------

#[test]
fn current_time_is_the_wall_clock_of_the_simulated_now() {
    let mut config = SimConfig::new(41);
    config.faults.latency.system = Latency::fixed(Duration::ZERO);
    let mut sim = Simulation::new(
        config,
        vec![quiet(Time::from_secs(3_600))],
        |_, fx: Fx| async move {
            let mut readings = Vec::new();
            for _ in 0..3 {
                let wall = fx.perform(GetCurrentTime {}).await.unwrap();
                readings.push((fx.now(), wall));
                fx.sleep(Duration::from_millis(90_250)).await;
            }
            readings
        },
    );
    sim.run();
    let readings = only_result(&sim).unwrap();
    for (now, wall) in &readings {
        assert_eq!(*wall, wall_time(DEFAULT_WALL_EPOCH, *now));
    }
    assert_eq!(readings[0].0, Time::from_secs(3_600));
    assert_eq!(
        readings[0].1,
        Timestamp::from_unix_secs(1_767_225_600 + 3_600)
    );
    assert_eq!(
        readings[2].1.to_string(),
        "2026-01-01T01:03:00.500000Z",
        "an hour plus two sleeps of 90.25 s"
    );
}

fn uuids(seed: u64) -> Vec<uuid::Uuid> {
    let connections = vec![quiet(Time::ZERO), quiet(Time::from_secs(1))];
    let mut sim = Simulation::new(SimConfig::new(seed), connections, |_, fx: Fx| async move {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(
                fx.perform(GenerateUuid {})
                    .await
                    .expect("no faults are planned"),
            );
        }
        ids
    });
    sim.run();
    sim.results()
        .iter()
        .flat_map(|r| r.clone().expect("finished").expect("ok"))
        .collect()
}

#[test]
fn uuids_come_from_the_seed() {
    let a = uuids(51);
    assert_eq!(a.len(), 6);
    assert!(a.iter().all(|u| u.get_version_num() == 4), "{a:?}");
    let mut distinct = a.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 6, "{a:?}");
    assert_eq!(a, uuids(51), "the same seed draws the same UUIDs");
    assert_ne!(a, uuids(52), "another seed draws others");
}

#[test]
fn a_message_handed_to_a_consumer_that_stopped_waiting_goes_back_to_the_broker() {
    let mut config = SimConfig::new(31);
    config.faults.latency.messaging = Latency::fixed(Duration::from_millis(100));
    let mut sim = Simulation::new(config, vec![quiet(Time::ZERO)], |_, fx: Fx| async move {
        fx.perform(publish("jobs", "job-1")).await?;
        // The broker hands the message over at once, but its answer takes 100 ms:
        // this consumer gives up after 50 ms.
        let gave_up = fx
            .perform_timeout(consume("jobs/workers", 10_000), Duration::from_millis(50))
            .await;
        let again = envelope(fx.perform(consume("jobs/workers", 10_000)).await?);
        Ok::<_, EffectError>((gave_up, again))
    });
    sim.services_mut().broker.subscribe("jobs/workers");
    sim.run();
    let (gave_up, again) = only_result(&sim).unwrap().unwrap();
    assert_eq!(gave_up.unwrap_err().kind, ErrorKind::Timeout);
    assert_eq!(
        again.payload, b"job-1",
        "the message was not lost with the abandoned consume"
    );
    assert_eq!(again.redelivery_count, 1);
    assert_eq!(sim.services().broker.in_flight("jobs/workers"), 1);
}
