//! The fault plan: error rates, lost answers, latency, dropped connections, and when an effect takes effect.

use super::*;

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
