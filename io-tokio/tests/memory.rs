//! Programs on the tokio runtime against the in-memory backends: one world for the
//! whole process, whatever shard a program runs on.

use std::time::Duration;

use effectful::effect::*;
use effectful::memory::Services;
use effectful::{EffectError, Fx, Schedule};
use effectful_tokio::memory::MemoryWorld;
use effectful_tokio::{Runtime, SystemInterpreter};

/// The README's program, word for word.
async fn greet(fx: Fx, user_id: uuid::Uuid) -> Result<String, EffectError> {
    // Cache first; a miss is a value, not an error.
    if let CacheLookup::Hit { value, .. } = fx.perform(GetCachedProfile { user_id }).await? {
        return Ok(format!("welcome back, {}", value.name));
    }
    // The database may be restarting: retry with backoff, each try bounded to 2 s.
    let retry = Schedule::exponential(Duration::from_millis(50))
        .jittered(0.2)
        .recurs(4);
    let user = fx
        .retry_with(&retry, || {
            fx.perform_timeout(GetUserById { user_id }, Duration::from_secs(2))
        })
        .await?;
    match user {
        UserLookup::Found(user) => {
            let profile = ProfileData {
                user_id,
                name: user.name.clone(),
                email: user.email,
            };
            fx.perform(PutCachedProfile {
                user_id,
                profile,
                ttl_seconds: 600,
            })
            .await?;
            Ok(format!("hello, {}", user.name))
        }
        UserLookup::NotFound { reason, .. } => Ok(format!("no such user ({reason:?})")),
    }
}

fn runtime(world: &MemoryWorld, shards: usize) -> Runtime {
    world
        .register(Runtime::builder().shards(shards).seed(9))
        .interpreter("System", |_| SystemInterpreter::new())
        .build()
        .expect("runtime")
}

fn seeded_world() -> (MemoryWorld, uuid::Uuid) {
    let world = MemoryWorld::with_services(Services::new(4));
    let created = world.with(|services| {
        services
            .database
            .create_user("ada@example.com".into(), "Ada".into(), "hash".into())
    });
    let CreateUserOutcome::Created(user) = created else {
        panic!("a fresh database takes the user: {created:?}");
    };
    (world, user.id)
}

#[test]
fn the_readme_greet_program_runs_on_tokio_against_the_in_memory_backends() {
    let (world, ada) = seeded_world();
    let runtime = runtime(&world, 2);
    let greetings = runtime.block_on(async {
        let mut greetings = Vec::new();
        // One after another, on alternating shards: the second finds the first's cache.
        for user in [ada, ada, uuid::Uuid::nil()] {
            let handle = runtime
                .handle()
                .spawn(move |fx| greet(fx, user))
                .await
                .expect("spawned");
            greetings.push(handle.await.expect("finished").expect("answered"));
        }
        greetings
    });
    assert_eq!(
        greetings,
        [
            "hello, Ada",
            "welcome back, Ada",
            "no such user (DoesNotExist)"
        ]
    );
    runtime.shutdown(Duration::ZERO);
}

fn consume(subscription: &str, timeout_ms: u64) -> ConsumeMessage {
    ConsumeMessage {
        subscription: subscription.into(),
        timeout_ms,
    }
}

fn publish(topic: &str, payload: &[u8]) -> PublishMessage {
    PublishMessage {
        topic: topic.into(),
        payload: payload.to_vec(),
        properties: Default::default(),
        dedup_key: None,
    }
}

#[test]
fn a_consumer_waiting_on_one_shard_gets_a_message_published_on_another() {
    let (world, _) = seeded_world();
    // Subscribe first, so the group sees what is published from now on.
    world.with(|s| s.broker.subscribe("room/reader"));
    let runtime = runtime(&world, 2);
    let (got, published) = runtime.block_on(async {
        let reader = runtime
            .handle()
            .spawn(|fx| async move {
                match fx.perform(consume("room/reader", 10_000)).await? {
                    ConsumeOutcome::Message(envelope) => {
                        fx.perform(AcknowledgeMessage {
                            message_id: envelope.message_id.clone(),
                        })
                        .await?;
                        Ok::<_, EffectError>(envelope.payload)
                    }
                    ConsumeOutcome::Timeout => Ok(b"timed out".to_vec()),
                }
            })
            .await
            .expect("spawned");
        // Round robin: the writer starts on the other shard.
        let writer = runtime
            .handle()
            .spawn(|fx| async move {
                fx.sleep(Duration::from_millis(20)).await;
                fx.perform(publish("room", b"hello")).await
            })
            .await
            .expect("spawned");
        (reader.await, writer.await)
    });
    assert!(matches!(
        published,
        Ok(Ok(PublishOutcome::Published { .. }))
    ));
    assert_eq!(got, Ok(Ok(b"hello".to_vec())));
    assert_eq!(world.with(|s| s.broker.unacknowledged("room/reader")), 0);
}

#[test]
fn a_consumer_that_gives_up_leaves_the_next_message_to_the_next_consumer() {
    let (world, _) = seeded_world();
    world.with(|s| s.broker.subscribe("room/reader"));
    let runtime = runtime(&world, 1);
    let (first, timed_out, second) = runtime.block_on(async {
        let impatient = runtime
            .handle()
            .spawn(|fx| async move {
                fx.timeout(
                    Duration::from_millis(20),
                    fx.perform(consume("room/reader", 10_000)),
                )
                .await
                .is_err()
            })
            .await
            .expect("spawned")
            .await;
        let quick = runtime
            .handle()
            .spawn(|fx| async move { fx.perform(consume("room/reader", 30)).await })
            .await
            .expect("spawned")
            .await;
        let patient = runtime
            .handle()
            .spawn(|fx| async move {
                fx.perform(publish("room", b"for the next one")).await?;
                fx.perform(consume("room/reader", 1_000)).await
            })
            .await
            .expect("spawned")
            .await;
        (impatient, quick, patient)
    });
    assert_eq!(first, Ok(true), "the first consumer gave up");
    assert_eq!(timed_out, Ok(Ok(ConsumeOutcome::Timeout)));
    let Ok(Ok(ConsumeOutcome::Message(envelope))) = second else {
        panic!("the message went to the consumer still waiting: {second:?}");
    };
    assert_eq!(envelope.payload, b"for the next one");
    assert_eq!(envelope.redelivery_count, 0);
}

#[test]
fn query_metrics_reports_the_programs_counters_and_the_runtimes_own() {
    let (world, _) = seeded_world();
    let runtime = runtime(&world, 1);
    let samples = runtime.block_on(async {
        let handle = runtime.handle().spawn(|fx| async move {
            fx.perform(IncrementCounter {
                name: "greetings_total".into(),
                labels: Labels::new(),
                value: 2.0,
            })
            .await?;
            fx.perform(QueryMetrics {
                name: None,
                labels: Labels::new(),
            })
            .await
        });
        handle.await.expect("spawned").await
    });
    let samples = samples.expect("finished").expect("answered");
    let value = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    };
    assert_eq!(value("greetings_total", &[]), Some(2.0));
    assert_eq!(
        value(
            "effectful_effects_total",
            &[("family", "Metrics"), ("outcome", "ok")]
        ),
        Some(1.0),
        "the increment was answered when the query ran"
    );
    assert_eq!(value("effectful_programs_in_progress", &[]), Some(1.0));
}
