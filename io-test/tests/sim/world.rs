//! Seeding the fakes before a run and reading every one of them back after it.

use std::collections::BTreeMap;

use super::*;
use effectful_test::fake::FakeCache;

/// A job that reads the seeded `config` key and acts on every service with it.
async fn reporter(fx: Fx) -> Result<(), EffectError> {
    let value = match fx
        .perform(GetCachedValue {
            key: "config".into(),
        })
        .await?
    {
        CacheLookup::Hit { value, .. } => value,
        other => {
            return Err(EffectError::mismatched_response(
                "Test.Reporter",
                &format!("{other:?}"),
            ));
        }
    };
    fx.perform(PublishMessage {
        topic: "events".into(),
        payload: value.clone(),
        properties: BTreeMap::new(),
        dedup_key: None,
    })
    .await?;
    fx.perform(PutObject {
        bucket: "reports".into(),
        key: "r1".into(),
        content: value,
        metadata: BTreeMap::new(),
        content_type: None,
    })
    .await?;
    fx.perform(IncrementCounter {
        name: "reports".into(),
        labels: Default::default(),
        value: 1.0,
    })
    .await?;
    Ok(())
}

#[test]
fn a_seeded_cache_entry_with_a_ttl_is_read_by_a_job_and_every_fake_reads_back() {
    let mut sim = Simulation::without_connections(SimConfig::new(4));
    let services = sim.services_mut();
    services
        .cache
        .seed(Time::ZERO, "config", b"v1".to_vec(), Some(60))
        .expect("a positive ttl is accepted");
    services.broker.subscribe("events/audit");
    let user =
        match services
            .database
            .create_user("a@example.com".into(), "A".into(), "hash".into())
        {
            CreateUserOutcome::Created(user) => user,
            other => panic!("{other:?}"),
        };
    let token = services
        .auth
        .issue(Time::ZERO, user.id, BTreeMap::new(), 3600);
    sim.spawn_at(Time::from_secs(10), "reporter", reporter);
    sim.run();
    assert!(
        matches!(sim.job_results()[0], Some(Ok(Ok(())))),
        "{:?}",
        sim.job_results()
    );

    let now = Time::from_secs(20);
    let services = sim.services();
    let keys: Vec<(&str, Option<Time>)> = services.cache.keys(now).collect();
    assert_eq!(keys, vec![("config", Some(Time::from_secs(60)))]);
    assert_eq!(
        services.cache.keys(Time::from_secs(60)).count(),
        0,
        "expired at 60 s"
    );
    let published: Vec<_> = services.broker.published("events").collect();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].payload, b"v1");
    assert_eq!(services.broker.topics().collect::<Vec<_>>(), vec!["events"]);
    assert_eq!(services.broker.unacknowledged("events/audit"), 1);
    let objects: Vec<_> = services.storage.objects("reports").collect();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].1.content, b"v1");
    let tokens: Vec<_> = services.auth.tokens().collect();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].token, token);
    assert_eq!(tokens[0].user_id, user.id);
    assert_eq!(services.database.users().count(), 1);
    let series = services.metrics.series(Some("reports"));
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].value, 1.0);
}

#[test]
fn a_zero_ttl_seed_is_refused_as_redis_refuses_set_ex_0() {
    let mut cache = FakeCache::new();
    let error = cache
        .seed(Time::ZERO, "k", vec![], Some(0))
        .expect_err("EX 0 is refused");
    assert!(!error.retryable);
    assert_eq!(cache.keys(Time::ZERO).count(), 0);
}

#[test]
fn a_cache_restart_loses_every_key_and_forgets_it_was_there() {
    let mut cache = FakeCache::new();
    cache.seed(Time::ZERO, "a", vec![1], None).expect("seeded");
    cache
        .seed(Time::ZERO, "b", vec![2], Some(5))
        .expect("seeded");
    cache.restart();
    assert_eq!(cache.keys(Time::ZERO).count(), 0);
    assert_eq!(cache.peek(Time::ZERO, "a"), None);
}
