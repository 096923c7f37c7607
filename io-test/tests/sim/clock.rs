//! The clock and the UUIDs the services hand out.

use super::*;

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
