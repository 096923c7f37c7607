//! Messaging: consumers waiting at the broker, acknowledgements lost and negative, redelivery.

use super::*;

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
