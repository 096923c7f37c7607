//! Programs with no connection (jobs spawned at chosen times), mixed with connection
//! programs, and stepping through a run.

use super::*;
use effectful_test::trace::replay_with_jobs;

/// A job that writes `job/<n>` to the cache and returns `n` and when it wrote.
async fn writer(n: u64, fx: Fx) -> Result<u64, EffectError> {
    let key = format!("job/{n}");
    fx.perform(PutCachedValue {
        key,
        value: vec![n as u8],
        ttl_seconds: None,
    })
    .await?;
    Ok(n)
}

#[test]
fn jobs_spawn_at_their_times_without_connections_and_each_has_its_result() {
    let mut sim = Simulation::without_connections(SimConfig::new(3));
    for n in 0..4u64 {
        sim.spawn_at(Time::from_secs(10 * n), format!("writer {n}"), move |fx| {
            writer(n, fx)
        });
    }
    let report = sim.run();
    assert_eq!(report.programs, 4);
    assert_eq!(report.unfinished, 0);
    let starts: Vec<Option<Time>> = sim.jobs().map(|j| j.started).collect();
    assert_eq!(
        starts,
        (0..4)
            .map(|n| Some(Time::from_secs(10 * n)))
            .collect::<Vec<_>>()
    );
    for (n, result) in sim.job_results().iter().enumerate() {
        assert!(
            matches!(result, Some(Ok(Ok(k))) if *k == n as u64),
            "{result:?}"
        );
    }
    assert!(sim.transcripts().is_empty());
}

#[test]
fn jobs_and_connection_programs_run_side_by_side_with_separate_results() {
    let connections = vec![quiet(Time::from_secs(1))];
    let mut sim = Simulation::new(SimConfig::new(5), connections, |c, fx| {
        writer(100 + u64::from(c), fx)
    });
    let job = sim.spawn_at(Time::from_secs(2), "background", |fx| writer(7, fx));
    let report = sim.run();
    assert_eq!(report.programs, 2);
    assert!(matches!(sim.results()[0], Some(Ok(Ok(100)))));
    assert!(matches!(sim.job_results()[job as usize], Some(Ok(Ok(7)))));
    assert!(sim.services().cache.peek(sim.now(), "job/7").is_some());
}

#[test]
fn a_job_gets_a_closed_websocket_error_because_it_has_no_connection() {
    let mut sim = Simulation::without_connections(SimConfig::new(1));
    sim.spawn_at(Time::ZERO, "talker", |fx: Fx| async move {
        fx.perform(SendText { text: "hi".into() }).await
    });
    sim.run();
    let Some(Ok(Err(error))) = &sim.job_results()[0] else {
        panic!("expected a WebSocket error, got {:?}", sim.job_results()[0]);
    };
    assert_eq!(close_code(error), Some(1006));
}

#[test]
fn a_trace_with_jobs_replays_with_replay_with_jobs_and_is_refused_by_plain_replay() {
    let mut config = SimConfig::new(9);
    config.record_trace = true;
    config.faults = FaultPlan::chaos();
    let mut sim = Simulation::new(config, vec![quiet(Time::from_secs(1))], |c, fx| {
        writer(u64::from(c), fx)
    });
    for n in 0..5u64 {
        sim.spawn_at(Time::from_millis(300 * n), "w", move |fx| writer(n, fx));
    }
    sim.run();
    let trace = sim.trace().to_vec();
    assert!(
        trace
            .iter()
            .any(|r| matches!(r, TraceRecord::SpawnJob { job: 4, .. }))
    );
    let stats = replay_with_jobs(
        &trace,
        |c, fx| writer(u64::from(c), fx),
        |n, fx| writer(u64::from(n), fx),
    )
    .expect("the trace replays");
    assert!(stats.inputs > 5);
    let refused = replay(&trace, |c, fx| writer(u64::from(c), fx));
    assert!(
        matches!(refused, Err(ReplayError::JobWithoutProgram { .. })),
        "{refused:?}"
    );
}

#[test]
fn run_until_stops_at_the_given_time_so_a_test_can_assert_mid_run() {
    let mut sim = Simulation::without_connections(SimConfig::new(2));
    for n in 0..3u64 {
        sim.spawn_at(Time::from_secs(60 * n), "w", move |fx| writer(n, fx));
    }
    sim.run_until(Time::from_secs(30));
    assert_eq!(sim.now(), Time::from_secs(30));
    assert!(sim.services().cache.peek(sim.now(), "job/0").is_some());
    assert!(sim.services().cache.peek(sim.now(), "job/1").is_none());
    assert!(sim.job_results()[1].is_none());
    let report = sim.run();
    assert_eq!(report.programs, 3);
    assert!(sim.services().cache.peek(sim.now(), "job/2").is_some());
}

#[test]
fn stepping_reaches_the_same_end_as_running() {
    let make = || {
        let mut config = SimConfig::new(11);
        config.record_trace = true;
        let mut sim = Simulation::new(config, vec![quiet(Time::from_secs(1))], |c, fx| {
            writer(u64::from(c), fx)
        });
        sim.spawn_at(Time::from_secs(3), "w", |fx| writer(3, fx));
        sim
    };
    let mut run = make();
    let report = run.run();
    let mut stepped = make();
    let mut steps = 0;
    while stepped.step() {
        steps += 1;
    }
    assert!(steps > 3);
    assert!(!stepped.step(), "nothing is left after the last step");
    assert_eq!(stepped.run(), report);
    assert_eq!(first_divergence(run.trace(), stepped.trace()), None);
}

/// A job that begins a transaction, inserts `name` in it and ends without a commit:
/// by returning, or by panicking.
async fn abandons(name: &'static str, panics: bool, fx: Fx) -> Result<u64, EffectError> {
    let tx = fx.perform(Begin {}).await?;
    let inserted = fx
        .perform(
            Execute::new(
                "INSERT INTO points (name) VALUES ($1)",
                vec![SqlValue::Text(name.into())],
            )
            .within(tx),
        )
        .await?;
    assert!(!panics, "{name} panics inside its transaction");
    Ok(inserted)
}

#[test]
fn a_transaction_left_open_is_rolled_back_when_its_program_ends_however_it_ends() {
    let mut sim = Simulation::without_connections(SimConfig::new(4));
    sim.spawn_at(Time::ZERO, "setup", |fx: Fx| async move {
        fx.perform(Execute::new(
            "CREATE TABLE points (name text PRIMARY KEY)",
            vec![],
        ))
        .await
    });
    sim.spawn_at(Time::from_secs(1), "returns", |fx| {
        abandons("ada", false, fx)
    });
    sim.spawn_at(Time::from_secs(2), "panics", |fx| abandons("bob", true, fx));
    // Were either left open, this insert would meet its uncommitted write.
    let check = sim.spawn_at(Time::from_secs(3), "check", |fx: Fx| async move {
        fx.perform(Execute::new(
            "INSERT INTO points (name) VALUES ('ada'), ('bob')",
            vec![],
        ))
        .await?;
        let rows = fx
            .perform(Query::new("SELECT count(*) FROM points", vec![]))
            .await?;
        match rows.rows.as_slice() {
            [row] => match row.as_slice() {
                [SqlValue::Int(n)] => Ok(*n as u64),
                other => panic!("count(*) gave {other:?}"),
            },
            other => panic!("count(*) gave {other:?}"),
        }
    });
    let report = sim.run();
    assert_eq!(report.unfinished, 0);
    assert!(matches!(sim.job_results()[1], Some(Ok(Ok(1)))));
    assert!(matches!(
        sim.job_results()[2],
        Some(Err(ProgramError::Panicked { .. }))
    ));
    assert!(
        matches!(sim.job_results()[check as usize], Some(Ok(Ok(2)))),
        "the check: {:?}",
        sim.job_results()[check as usize]
    );
    assert!(sim.services().database.open_transactions().is_empty());
}
