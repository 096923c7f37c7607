//! Faults over time: outage windows, latency spike windows, backend restarts and
//! disconnect storms; and a non-chat program swept over 1,000 seeds with outages.

use effectful::Rng;
use effectful_test::fault::{Service, Window};

use super::*;

fn put(key: &str) -> PutCachedValue {
    PutCachedValue {
        key: key.into(),
        value: vec![1],
        ttl_seconds: None,
    }
}

fn create_user(n: u64) -> CreateUser {
    CreateUser {
        email: format!("u{n}@example.com"),
        name: format!("u{n}"),
        password_hash: "h".into(),
    }
}

fn secs(s: u64) -> Time {
    Time::from_secs(s)
}

#[test]
fn a_database_outage_window_refuses_effects_issued_inside_it_and_only_those() {
    let mut config = SimConfig::new(1);
    config.record_trace = true;
    config.faults =
        FaultPlan::none().with_outage(Service::Database, Window::new(secs(30), secs(60)));
    let mut sim = Simulation::without_connections(config);
    for (n, at) in [(0, 29), (1, 30), (2, 59), (3, 60)] {
        sim.spawn_at(secs(at), "creator", move |fx: Fx| async move {
            fx.perform(create_user(n)).await
        });
    }
    let report = sim.run();
    let ok: Vec<bool> = sim
        .job_results()
        .iter()
        .map(|r| matches!(r, Some(Ok(Ok(_)))))
        .collect();
    assert_eq!(ok, vec![true, false, false, true]);
    for refused in &sim.job_results()[1..3] {
        let Some(Ok(Err(error))) = refused else {
            panic!("{refused:?}")
        };
        assert!(error.retryable, "an outage is worth retrying: {error}");
    }
    assert_eq!(report.faults, 2);
    assert_eq!(
        sim.services().database.users().count(),
        2,
        "refused ones never applied"
    );
    let outages = sim
        .trace()
        .iter()
        .filter(|r| {
            matches!(
                r,
                TraceRecord::Fault {
                    fault: Fault::Outage,
                    ..
                }
            )
        })
        .count();
    assert_eq!(outages, 2);
}

#[test]
fn a_latency_spike_window_slows_only_its_service_inside_the_window() {
    let extra = Duration::from_secs(2);
    let mut config = SimConfig::new(1);
    config.faults = FaultPlan::none().with_latency_spike(
        Service::Cache,
        Window::new(secs(10), secs(20)),
        extra,
    );
    let mut sim = Simulation::without_connections(config);
    for (n, at) in [(0u64, 5u64), (1, 15), (2, 25)] {
        sim.spawn_at(secs(at), "writer", move |fx: Fx| async move {
            fx.perform(put(&format!("k{n}"))).await
        });
    }
    sim.spawn_at(secs(15), "db", |fx: Fx| async move {
        fx.perform(create_user(9)).await.map(|_| ())
    });
    sim.run();
    let took: Vec<Duration> = sim
        .jobs()
        .map(|j| j.finished.expect("finished") - j.started.expect("started"))
        .collect();
    assert_eq!(
        took,
        vec![
            DEFAULT_LATENCY,
            DEFAULT_LATENCY + extra,
            DEFAULT_LATENCY,
            DEFAULT_LATENCY
        ]
    );
}

#[test]
fn a_cache_restart_loses_every_key_and_fails_requests_on_their_way() {
    let mut config = SimConfig::new(1);
    config.faults = FaultPlan::none().with_restart(Service::Cache, secs(10));
    config.faults.latency.cache = Latency::fixed(2 * SEC);
    let mut sim = Simulation::without_connections(config);
    sim.services_mut()
        .cache
        .seed(Time::ZERO, "seeded", vec![1], None)
        .expect("seeded");
    // Issued at 9.5 s: it would be applied at 10.5 s, after the restart.
    sim.spawn_at(Time::from_millis(9_500), "late", |fx: Fx| async move {
        fx.perform(put("late")).await
    });
    sim.spawn_at(secs(11), "after", |fx: Fx| async move {
        fx.perform(put("after")).await
    });
    sim.run();
    let Some(Ok(Err(error))) = &sim.job_results()[0] else {
        panic!("{:?}", sim.job_results()[0])
    };
    assert!(error.retryable);
    assert!(matches!(sim.job_results()[1], Some(Ok(Ok(())))));
    let keys: Vec<&str> = sim
        .services()
        .cache
        .keys(sim.now())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys,
        vec!["after"],
        "the restart lost the seeded key; the late put never landed"
    );
}

#[test]
fn a_database_restart_keeps_what_was_committed_and_aborts_what_was_in_flight() {
    let mut config = SimConfig::new(1);
    config.faults = FaultPlan::none().with_restart(Service::Database, secs(10));
    config.faults.latency.database = Latency::fixed(2 * SEC);
    let mut sim = Simulation::without_connections(config);
    sim.spawn_at(secs(1), "committed", |fx: Fx| async move {
        fx.perform(create_user(1)).await.map(|_| ())
    });
    sim.spawn_at(Time::from_millis(9_500), "in flight", |fx: Fx| async move {
        fx.perform(create_user(2)).await.map(|_| ())
    });
    let report = sim.run();
    assert!(matches!(sim.job_results()[0], Some(Ok(Ok(())))));
    assert!(matches!(sim.job_results()[1], Some(Ok(Err(_)))));
    let emails: Vec<&str> = sim
        .services()
        .database
        .users()
        .map(|u| u.email.as_str())
        .collect();
    assert_eq!(emails, vec!["u1@example.com"]);
    assert_eq!(report.faults, 1);
    assert_eq!(report.fault_kinds.restarts, 1);
}

#[test]
fn a_disconnect_storm_of_fraction_one_drops_every_open_connection_at_its_time() {
    let mut config = SimConfig::new(1);
    config.faults = FaultPlan::none().with_disconnect_storm(secs(5), 1.0);
    let connections = vec![
        connection(secs(1), &[], ConnectionEnd::Linger),
        connection(secs(2), &[], ConnectionEnd::Linger),
        connection(secs(6), &[], ConnectionEnd::Close { after: SEC }),
    ];
    let mut sim = Simulation::new(config, connections, |_, fx: Fx| async move {
        fx.perform(ReceiveText {}).await
    });
    let report = sim.run();
    let states: Vec<ConnectionState> = sim.transcripts().iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        vec![
            ConnectionState::Vanished,
            ConnectionState::Vanished,
            ConnectionState::ClosedByClient
        ]
    );
    assert_eq!(report.faults, 2);
    assert_eq!(report.fault_kinds.dropped_connections, 2);
    for t in &sim.transcripts()[..2] {
        assert_eq!(t.finished, Some(secs(5)));
    }
}

#[test]
fn swarm_over_draws_timed_faults_inside_the_horizon_and_repeats_by_seed() {
    let horizon = Duration::from_secs(600);
    let plans: Vec<FaultPlan> = (0..200)
        .map(|s| FaultPlan::swarm_over(&mut Rng::from_seed(s), horizon))
        .collect();
    assert!(plans.iter().any(|p| !p.outages.is_empty()));
    assert!(plans.iter().any(|p| !p.latency_spikes.is_empty()));
    assert!(plans.iter().any(|p| !p.restarts.is_empty()));
    assert!(plans.iter().any(|p| !p.disconnect_storms.is_empty()));
    assert!(
        plans
            .iter()
            .any(|p| p.outages.is_empty() && p.restarts.is_empty())
    );
    let end = Time::ZERO + horizon;
    assert!(
        plans
            .iter()
            .all(|p| p.outages.iter().all(|o| o.window.from < end)
                && p.restarts.iter().all(|r| r.at < end))
    );
    assert_eq!(
        plans[7],
        FaultPlan::swarm_over(&mut Rng::from_seed(7), horizon)
    );
}

/// A points-awarding worker: awards `job`'s points once, retrying through outages,
/// with an idempotent write (the key is the job), and returns how many tries it took.
async fn award(job: u32, fx: Fx) -> Result<u32, EffectError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match fx.perform(put(&format!("points/{job}"))).await {
            Ok(()) => break,
            Err(e) if e.retryable && tries < 50 => fx.sleep(Duration::from_secs(1)).await,
            Err(e) => return Err(e),
        }
    }
    fx.perform(IncrementCounter {
        name: "awards".into(),
        labels: Default::default(),
        value: 1.0,
    })
    .await?;
    Ok(tries)
}

#[test]
fn a_background_worker_survives_cache_outage_windows_over_1000_seeds() {
    for seed in 0..1000u64 {
        let mut rng = Rng::from_seed(seed);
        let from = secs(rng.below(60));
        let window = Window::new(from, from + Duration::from_secs(1 + rng.below(30)));
        let mut config = SimConfig::new(seed);
        config.faults = FaultPlan::none().with_outage(Service::Cache, window);
        let mut sim = Simulation::without_connections(config);
        let jobs = 1 + rng.below(8) as u32;
        for job in 0..jobs {
            sim.spawn_at(secs(rng.below(90)), "award", move |fx| award(job, fx));
        }
        let report = sim.run();
        let rerun = format!("seed {seed} (window {window:?})");
        assert_eq!(report.unfinished, 0, "{rerun}");
        assert_eq!(report.late, 0, "{rerun}");
        for (job, result) in sim.job_results().iter().enumerate() {
            let Some(Ok(Ok(tries))) = result else {
                panic!("{rerun}: job {job} ended with {result:?}")
            };
            let started = sim
                .jobs()
                .nth(job)
                .and_then(|j| j.started)
                .expect("started");
            assert_eq!(*tries > 1, window.contains(started), "{rerun}: job {job}");
            assert!(
                sim.services()
                    .cache
                    .peek(sim.now(), &format!("points/{job}"))
                    .is_some(),
                "{rerun}: job {job} was awarded but its points are missing"
            );
        }
        let awards = sim.services().metrics.series(Some("awards"));
        assert_eq!(
            awards.first().map(|s| s.value),
            Some(f64::from(jobs)),
            "{rerun}"
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// The points worker, as a property over spawn times and timed faults: every job
    /// ends, and every job that says it awarded points left them in the cache unless a
    /// cache restart came after it started.
    #[test]
    fn the_points_worker_keeps_its_promise_under_any_outages_and_restarts(
        seed in proptest::prelude::any::<u64>(),
        times in effectful_test::strategy::spawn_times(1..6, Duration::from_secs(120)),
        faults in effectful_test::strategy::timed_faults(FaultPlan::none(), 2, Duration::from_secs(120)),
    ) {
        let last_cache_restart = faults
            .restarts
            .iter()
            .filter(|r| r.service == Service::Cache)
            .map(|r| r.at)
            .max();
        let mut sim = Simulation::without_connections(SimConfig { faults, ..SimConfig::new(seed) });
        for (job, at) in times.iter().enumerate() {
            let job = job as u32;
            sim.spawn_at(*at, "award", move |fx| award(job, fx));
        }
        let report = sim.run();
        proptest::prop_assert_eq!(report.unfinished, 0);
        for (job, result) in sim.job_results().iter().enumerate() {
            let started = sim.jobs().nth(job).and_then(|j| j.started);
            if let (Some(Ok(Ok(_))), Some(started)) = (result, started) {
                // A cache restart after the job started may have wiped what it wrote.
                let wiped = last_cache_restart.is_some_and(|at| at >= started);
                let kept = sim.services().cache.peek(sim.now(), &format!("points/{job}")).is_some();
                proptest::prop_assert!(kept || wiped, "job {} awarded but its points are gone", job);
            }
        }
    }
}
