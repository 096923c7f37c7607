//! Consumers waiting at the fake broker: a `ConsumeMessage` that finds nothing parks
//! there until a message comes for it or it gives up.
//!
//! The broker never reads a clock: its driver says when time has come
//! ([`FakeBroker::wake`]), and pulls what the broker owes it, following the drain
//! rule written on [`FakeBroker`].

use std::collections::VecDeque;
use std::time::Duration;

use crate::effect::{ConsumeMessage, Envelope};
use crate::{EffectId, Time};

use super::FakeBroker;

/// What became of a consumer's request ([`FakeBroker::consume`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Consumed {
    /// A message was available: it is in flight now, for this consumer.
    Message(Envelope),
    /// Nothing was available: the consumer waits at the broker.
    Parked {
        /// When it gives up (its `timeout_ms` from now): the driver then calls
        /// [`FakeBroker::stop_waiting`] and, if it was still waiting, answers
        /// `ConsumeOutcome::Timeout`.
        timeout_at: Time,
        /// When a message of its subscription that waits for redelivery becomes
        /// available, if one does: the driver calls [`FakeBroker::wake`] then.
        redelivery_at: Option<Time>,
    },
}

/// A consumer waiting at the broker.
#[derive(Clone, Debug)]
struct Parked {
    id: EffectId,
    request: ConsumeMessage,
}

/// The consumers waiting at one broker, and the outputs the broker owes its driver.
#[derive(Clone, Debug, Default)]
pub(super) struct Parking {
    /// In the order they parked: the first to park is served first.
    parked: Vec<Parked>,
    /// Messages handed to parked consumers, not yet pulled by the driver.
    handed_over: VecDeque<(EffectId, Envelope)>,
    /// Times the driver must wake the broker at, not yet pulled.
    wake_at: VecDeque<Time>,
}

impl FakeBroker {
    /// The consumer `id` asks for a message at `now`: it gets one at once, or parks
    /// until a publish, a negative acknowledgement, a redelivery
    /// ([`redeliver`](Self::redeliver), [`redeliver_unacked`](Self::redeliver_unacked),
    /// or the time of one that waited) hands it one, or until it gives up.
    pub fn consume(&mut self, now: Time, id: EffectId, request: ConsumeMessage) -> Consumed {
        if let Some(envelope) = self.try_consume(now, &request) {
            return Consumed::Message(envelope);
        }
        let timeout_at = now + Duration::from_millis(request.timeout_ms);
        // Its own subscription's next redelivery is the only one that can wake it.
        let redelivery_at = self
            .next_redelivery_for(&request.subscription)
            .map(|at| at.max(now));
        self.parking.parked.push(Parked { id, request });
        Consumed::Parked {
            timeout_at,
            redelivery_at,
        }
    }

    /// The consumer `id` stops waiting: its time is up, or its program cancelled the
    /// effect. Returns whether it was still waiting.
    pub fn stop_waiting(&mut self, id: EffectId) -> bool {
        let parked = &mut self.parking.parked;
        match parked.iter().position(|p| p.id == id) {
            Some(i) => {
                parked.remove(i);
                true
            }
            None => false,
        }
    }

    /// Time `now` has come: hands every message now available to the consumers
    /// waiting for it, in the order they parked (pull them with
    /// [`poll_handed_over`](Self::poll_handed_over)).
    pub fn wake(&mut self, now: Time) {
        // Taken out while `try_consume` borrows the broker; put back, buffer and all.
        let mut parked = std::mem::take(&mut self.parking.parked);
        let mut i = 0;
        while i < parked.len() {
            match self.try_consume(now, &parked[i].request) {
                Some(envelope) => {
                    let served = parked.remove(i);
                    self.parking.handed_over.push_back((served.id, envelope));
                }
                None => i += 1,
            }
        }
        self.parking.parked = parked;
    }

    /// Hands the delivery `message_id` back at once and wakes the consumers: its ack
    /// timeout passed with no acknowledgement (Pulsar redelivers only that message),
    /// or its consumer stopped waiting before the message reached it (a real client
    /// library returns what it received but never passed on). An id not in flight is
    /// ignored.
    pub fn redeliver(&mut self, now: Time, message_id: &str) {
        self.negative_acknowledge(now, message_id, 0);
        self.wake(now);
    }

    /// The next message handed to a waiting consumer: the consumer's effect id and
    /// the message, now in flight for it.
    pub fn poll_handed_over(&mut self) -> Option<(EffectId, Envelope)> {
        self.parking.handed_over.pop_front()
    }

    /// The next time the driver must [`wake`](Self::wake) the broker at: when a
    /// negatively acknowledged message becomes available again.
    pub fn poll_wake_at(&mut self) -> Option<Time> {
        self.parking.wake_at.pop_front()
    }

    /// How many consumers wait.
    pub fn waiting(&self) -> usize {
        self.parking.parked.len()
    }

    /// Asks to be woken at `at`, if it is later than `now`.
    pub(super) fn wake_later(&mut self, now: Time, at: Time) {
        if at > now {
            self.parking.wake_at.push_back(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProgramId;
    use crate::effect::{MessagingRequest, NegativeAcknowledge, PublishMessage};

    fn effect(n: u32) -> EffectId {
        EffectId {
            program: ProgramId {
                index: n,
                generation: 0,
            },
            slot: 0,
            generation: 0,
        }
    }

    fn consume(subscription: &str, timeout_ms: u64) -> ConsumeMessage {
        ConsumeMessage {
            subscription: subscription.into(),
            timeout_ms,
        }
    }

    fn publish(broker: &mut FakeBroker, now: Time, payload: &str) {
        let request = PublishMessage {
            topic: "jobs".into(),
            payload: payload.as_bytes().to_vec(),
            properties: Default::default(),
            dedup_key: None,
        };
        broker.handle(now, MessagingRequest::PublishMessage(Box::new(request)));
    }

    fn handed_over(broker: &mut FakeBroker) -> Vec<(EffectId, String)> {
        std::iter::from_fn(|| broker.poll_handed_over())
            .map(|(id, envelope)| (id, String::from_utf8(envelope.payload).unwrap()))
            .collect()
    }

    #[test]
    fn a_consumer_that_finds_nothing_parks_until_its_timeout() {
        let mut broker = FakeBroker::new();
        let now = Time::from_secs(1);
        assert_eq!(
            broker.consume(now, effect(1), consume("jobs/workers", 250)),
            Consumed::Parked {
                timeout_at: Time::from_millis(1_250),
                redelivery_at: None
            }
        );
        assert_eq!(broker.waiting(), 1);
        assert!(broker.stop_waiting(effect(1)), "its time is up");
        assert!(!broker.stop_waiting(effect(1)), "and it stopped once");
        publish(&mut broker, now, "late");
        assert_eq!(handed_over(&mut broker), [], "nobody waits any more");
    }

    #[test]
    fn a_publish_serves_waiting_consumers_in_the_order_they_parked() {
        let mut broker = FakeBroker::new();
        for n in [3, 1, 2] {
            broker.consume(Time::ZERO, effect(n), consume("jobs/workers", 1_000));
        }
        publish(&mut broker, Time::ZERO, "a");
        publish(&mut broker, Time::ZERO, "b");
        assert_eq!(
            handed_over(&mut broker),
            [(effect(3), "a".into()), (effect(1), "b".into())]
        );
        assert_eq!(broker.waiting(), 1);
        assert_eq!(broker.in_flight("jobs/workers"), 2);
    }

    /// A broker whose one message, "job", is in flight for consumer 1.
    fn one_job_in_flight() -> (FakeBroker, Envelope) {
        let mut broker = FakeBroker::new();
        broker.subscribe("jobs/workers");
        publish(&mut broker, Time::ZERO, "job");
        match broker.consume(Time::ZERO, effect(1), consume("jobs/workers", 10_000)) {
            Consumed::Message(first) => (broker, first),
            other => panic!("a message was waiting, got {other:?}"),
        }
    }

    #[test]
    fn a_delayed_nack_asks_for_a_wake_that_serves_the_waiting_consumer() {
        let (mut broker, first) = one_job_in_flight();
        let nack = NegativeAcknowledge {
            message_id: first.message_id,
            delay_ms: 500,
        };
        broker.handle(Time::ZERO, MessagingRequest::NegativeAcknowledge(nack));
        assert_eq!(broker.poll_wake_at(), Some(Time::from_millis(500)));
        assert_eq!(broker.poll_wake_at(), None);
        // A consumer that parks meanwhile learns when the redelivery comes.
        assert_eq!(
            broker.consume(
                Time::from_millis(100),
                effect(2),
                consume("jobs/workers", 10_000)
            ),
            Consumed::Parked {
                timeout_at: Time::from_millis(10_100),
                redelivery_at: Some(Time::from_millis(500))
            }
        );
        broker.wake(Time::from_millis(499));
        assert_eq!(handed_over(&mut broker), [], "too early");
        broker.wake(Time::from_millis(500));
        assert_eq!(handed_over(&mut broker), [(effect(2), "job".into())]);
    }

    #[test]
    fn a_redelivered_message_goes_to_a_waiting_consumer_with_a_higher_count() {
        let (mut broker, first) = one_job_in_flight();
        broker.consume(Time::ZERO, effect(2), consume("jobs/workers", 10_000));
        broker.redeliver(Time::from_secs(1), &first.message_id);
        let (id, again) = broker.poll_handed_over().expect("handed over");
        assert_eq!((id, again.redelivery_count), (effect(2), 1));
        assert_eq!(again.message_id, first.message_id);
        broker.redeliver(Time::from_secs(1), "msg-99@jobs/workers");
        assert_eq!(broker.poll_handed_over(), None, "an unknown id is ignored");
    }

    #[test]
    fn a_consumer_crash_serves_the_waiting_consumers() {
        let mut broker = FakeBroker::new();
        broker.subscribe("jobs/workers");
        publish(&mut broker, Time::ZERO, "job");
        broker.consume(Time::ZERO, effect(1), consume("jobs/workers", 10_000));
        broker.consume(Time::ZERO, effect(2), consume("jobs/workers", 10_000));
        assert_eq!(broker.redeliver_unacked(Time::from_secs(1)), 1);
        assert_eq!(handed_over(&mut broker), [(effect(2), "job".into())]);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Publish(usize),
        Consume(usize, u32),
        StopWaiting(u32),
        Nack(usize, u64),
        Advance(u64),
    }

    const TOPICS: [&str; 2] = ["a", "b"];
    const SUBSCRIPTIONS: [&str; 3] = ["a/x", "a/y", "b/x"];

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0..TOPICS.len()).prop_map(Op::Publish),
            (0..SUBSCRIPTIONS.len(), 0u32..8).prop_map(|(s, n)| Op::Consume(s, n)),
            (0u32..8).prop_map(Op::StopWaiting),
            (0usize..16, 0u64..300).prop_map(|(i, d)| Op::Nack(i, d)),
            (0u64..400).prop_map(Op::Advance),
        ]
    }

    proptest::proptest! {
        /// Driven by its drain rule, the broker never keeps a consumer waiting while a
        /// message is available to it, and serves each waiting consumer at most once.
        #[test]
        fn no_consumer_waits_while_a_message_is_available_to_it(
            ops in proptest::collection::vec(op(), 0..80)
        ) {
            let mut broker = FakeBroker::new();
            let mut now = Time::ZERO;
            let mut parked: Vec<(EffectId, &str)> = Vec::new();
            let mut delivered: Vec<String> = Vec::new();
            for op in ops {
                match op {
                    Op::Publish(t) => {
                        let request = PublishMessage {
                            topic: TOPICS[t].into(),
                            payload: b"m".to_vec(),
                            properties: Default::default(),
                            dedup_key: None,
                        };
                        broker.handle(now, MessagingRequest::PublishMessage(Box::new(request)));
                    }
                    Op::Consume(s, n) => {
                        let id = effect(n);
                        if parked.iter().any(|(p, _)| *p == id) {
                            continue;
                        }
                        match broker.consume(now, id, consume(SUBSCRIPTIONS[s], 60_000)) {
                            Consumed::Message(envelope) => delivered.push(envelope.message_id),
                            Consumed::Parked { .. } => parked.push((id, SUBSCRIPTIONS[s])),
                        }
                    }
                    Op::StopWaiting(n) => {
                        let was = parked.iter().position(|(p, _)| *p == effect(n));
                        proptest::prop_assert_eq!(broker.stop_waiting(effect(n)), was.is_some());
                        if let Some(i) = was {
                            parked.remove(i);
                        }
                    }
                    Op::Nack(i, delay_ms) => {
                        if let Some(message_id) = delivered.get(i).cloned() {
                            let nack = NegativeAcknowledge { message_id, delay_ms };
                            broker.handle(now, MessagingRequest::NegativeAcknowledge(nack));
                        }
                    }
                    Op::Advance(ms) => {
                        now = now + std::time::Duration::from_millis(ms);
                        broker.wake(now);
                    }
                }
                while let Some((id, envelope)) = broker.poll_handed_over() {
                    let i = parked.iter().position(|(p, _)| *p == id);
                    proptest::prop_assert!(i.is_some(), "{id} was served but not waiting");
                    if let Some(i) = i {
                        parked.remove(i);
                    }
                    delivered.push(envelope.message_id);
                }
                while broker.poll_wake_at().is_some() {}
                proptest::prop_assert_eq!(broker.waiting(), parked.len());
                for (id, subscription) in &parked {
                    proptest::prop_assert!(
                        !broker.has_available(now, subscription),
                        "{id} waits on {subscription} with a message available"
                    );
                }
            }
        }
    }
}
