//! The Messaging fake: a Pulsar-like broker with topics, consumer groups and
//! acknowledgements.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::effect::{
    AckOutcome, ConsumeMessage, ConsumeOutcome, Envelope, MessagingRequest, MessagingResponse,
    PublishMessage, PublishOutcome,
};
use crate::{Time, Timestamp};
use rustc_hash::FxHashMap;

use super::parking::Parking;
use super::{DEFAULT_WALL_EPOCH, wall_time};

/// The default largest payload the broker accepts: 5 MiB (Pulsar's default
/// `maxMessageSize`).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 5 * 1024 * 1024;

const PUBLISH_ID_PREFIX: &str = "msg-";

#[derive(Debug)]
struct Published {
    seq: u64,
    topic: String,
    payload: Vec<u8>,
    properties: BTreeMap<String, String>,
    publish_time: Timestamp,
}

#[derive(Clone, Debug)]
struct Delivery {
    message: Arc<Published>,
    redelivery_count: u32,
    /// While in flight with an ack timeout: when it is handed back unacknowledged.
    ack_by: Option<Time>,
}

/// One consumer group: where it is in its topic's log, what waits for redelivery, and
/// what it received but has not acknowledged.
#[derive(Clone, Debug)]
struct Group {
    topic: String,
    /// The index in the topic's log of the next message never delivered to this group
    /// (a cursor, as Pulsar keeps one per subscription over the topic's ledger).
    cursor: usize,
    /// Handed back (negative acknowledgement, crash), by (available at, publish seq).
    redeliveries: BTreeMap<(Time, u64), Delivery>,
    /// The time each message in `redeliveries` becomes available, by publish seq.
    redelivery_at: BTreeMap<u64, Time>,
    /// Delivered and not acknowledged, by publish seq.
    in_flight: BTreeMap<u64, Delivery>,
    /// With an ack timeout: in-flight deliveries by (ack deadline, publish seq). An
    /// entry whose delivery was acknowledged or handed back since is stale, and
    /// skipped (its deadline no longer matches the delivery's `ack_by`).
    ack_deadlines: BTreeMap<(Time, u64), ()>,
}

impl Group {
    fn new(topic: String, cursor: usize) -> Group {
        Group {
            topic,
            cursor,
            redeliveries: BTreeMap::new(),
            redelivery_at: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            ack_deadlines: BTreeMap::new(),
        }
    }

    fn schedule_redelivery(&mut self, at: Time, mut delivery: Delivery) {
        delivery.redelivery_count = delivery.redelivery_count.saturating_add(1);
        delivery.ack_by = None;
        let seq = delivery.message.seq;
        self.redelivery_at.insert(seq, at);
        self.redeliveries.insert((at, seq), delivery);
    }

    /// The next delivery at `now`: a redelivery whose time has come, else the next
    /// message of `log` (the group's topic's log).
    fn next_available(&mut self, now: Time, log: &[Arc<Published>]) -> Option<Delivery> {
        self.hand_back_overdue(now);
        if let Some(entry) = self.redeliveries.first_entry() {
            if entry.key().0 <= now {
                let delivery = entry.remove();
                self.redelivery_at.remove(&delivery.message.seq);
                return Some(delivery);
            }
        }
        let message = Arc::clone(log.get(self.cursor)?);
        self.cursor += 1;
        Some(Delivery {
            message,
            redelivery_count: 0,
            ack_by: None,
        })
    }

    /// Hands back every in-flight delivery whose ack deadline is at or before `now`
    /// (its consumer died or forgot it): available again from its deadline.
    fn hand_back_overdue(&mut self, now: Time) {
        while let Some(entry) = self.ack_deadlines.first_entry() {
            let (deadline, seq) = *entry.key();
            if deadline > now {
                return;
            }
            entry.remove();
            if self.in_flight.get(&seq).and_then(|d| d.ack_by) == Some(deadline) {
                if let Some(delivery) = self.in_flight.remove(&seq) {
                    self.schedule_redelivery(deadline, delivery);
                }
            }
        }
    }

    /// The soonest time a message becomes available again: a redelivery, or an
    /// in-flight delivery's ack deadline.
    fn next_return(&self) -> Option<Time> {
        let redelivery = self.redeliveries.first_key_value().map(|((at, _), _)| *at);
        let deadline = self.ack_deadlines.first_key_value().map(|((at, _), _)| *at);
        match (redelivery, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Messages of `log` never delivered to this group.
    fn backlog(&self, log: &[Arc<Published>]) -> usize {
        log.len().saturating_sub(self.cursor)
    }
}

/// One message as [`FakeBroker::published`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedMessage<'a> {
    /// The id `PublishMessage` answered (`msg-{n}`).
    pub message_id: String,
    /// Its payload.
    pub payload: &'a [u8],
    /// Its properties.
    pub properties: &'a BTreeMap<String, String>,
    /// When it was published (wall clock).
    pub publish_time: Timestamp,
}

/// A Pulsar-like broker: topics, consumer groups, acknowledgements and redelivery.
///
/// # Subscriptions
/// A subscription is named `"{topic}/{group}"`, split at the **last** `/`, so topics
/// with slashes work (`persistent://public/default/chat/workers` is group `workers`
/// of topic `persistent://public/default/chat`); a name without `/` names the topic
/// itself. A subscription starts to exist on its first `ConsumeMessage`, or earlier
/// with [`subscribe`](FakeBroker::subscribe), and receives every message published to
/// its topic from then on (Pulsar's `Latest` initial position). Each group gets its
/// own copy of every message; within a group, each message goes to one consumer.
///
/// # Delivery
/// A consumer gets, in this order, the message waiting for redelivery whose time has
/// come (soonest first), then the next new message in publish order. A delivered
/// message is in flight until acknowledged. `NegativeAcknowledge` hands an in-flight
/// message back, available again no sooner than `now + delay_ms`, with
/// `redelivery_count + 1`; [`redeliver_unacked`](FakeBroker::redeliver_unacked)
/// does the same at once for everything in flight, as a consumer crash would. With an
/// [ack timeout](FakeBroker::with_ack_timeout), a delivery not acknowledged within it
/// is handed back at its deadline the same way (its consumer died or forgot it).
///
/// # On Redis
/// The Redis adapter (`effectful::redis::MessagingAdapter`, on Redis Streams) keeps
/// these promises; the contract `effectful_test::contract::check_messaging` runs the
/// same cases on both. What Redis could not keep changed the fake: a delivery nobody
/// acknowledges comes again after the ack timeout (`XCLAIM` of an entry idle that
/// long), so the fake got [`with_ack_timeout`](FakeBroker::with_ack_timeout); the
/// contract runs both with the same one. Without it (the default, which the
/// simulator uses) a delivery stays in flight until acknowledged or handed back.
/// Message ids differ in form (Redis: `{stream entry id}@{subscription}`), and Redis
/// sees time on its own clock.
///
/// # Message ids
/// `PublishOutcome::Published` answers `msg-{n}`, unique per broker. Acknowledgements
/// carry no subscription, so the id in an [`Envelope`] names the delivery to one group:
/// `msg-{n}@{subscription}`, the same on every redelivery. Acknowledge and negatively
/// acknowledge with that id. `AcknowledgeMessage` answers
/// [`AckOutcome::UnknownMessage`] for an id that is not in flight or waiting for
/// redelivery (never delivered, already acknowledged, malformed);
/// `NegativeAcknowledge` only knows messages in flight.
///
/// # Waiting
/// [`handle`](FakeBroker::handle) never waits: for `ConsumeMessage` it answers
/// [`ConsumeOutcome::Timeout`] when nothing is available. A driver that lets
/// consumers wait calls [`consume`](FakeBroker::consume) instead: the consumer gets a
/// message at once or parks at the broker until a publish to its topic, a negative
/// acknowledgement, a [`redeliver`](FakeBroker::redeliver) or
/// [`redeliver_unacked`](FakeBroker::redeliver_unacked), or the time of a waiting
/// redelivery ([`wake`](FakeBroker::wake)) makes a message available; or until it
/// [stops waiting](FakeBroker::stop_waiting) (its time is up, its effect was
/// cancelled).
///
/// **Drain rule**: after each call that may hand messages over (`handle`, `consume`,
/// `wake`, `redeliver`, `redeliver_unacked`), the driver drains
/// [`poll_handed_over`](FakeBroker::poll_handed_over) (answer each consumer with its
/// message) and [`poll_wake_at`](FakeBroker::poll_wake_at) (wake the broker at each
/// time) until `None`.
///
/// A payload larger than the limit ([`DEFAULT_MAX_PAYLOAD_BYTES`] unless set with
/// [`with_max_payload_bytes`](FakeBroker::with_max_payload_bytes)) or an empty topic
/// name is answered with [`PublishOutcome::Rejected`].
#[derive(Clone, Debug)]
pub struct FakeBroker {
    wall_epoch: Timestamp,
    max_payload_bytes: usize,
    ack_timeout: Option<Duration>,
    next_seq: u64,
    groups: BTreeMap<String, Group>,
    /// Every message published, per topic, in publish order (retained: groups read it
    /// through their cursors).
    topics: BTreeMap<String, Vec<Arc<Published>>>,
    /// Accepted deduplication keys per topic, and the publish sequence number each
    /// one got (looked up, never iterated: the hash order never shows).
    dedup: BTreeMap<String, FxHashMap<String, u64>>,
    /// Consumers waiting for a message, and what the driver has yet to pull.
    pub(super) parking: Parking,
}

impl Default for FakeBroker {
    fn default() -> FakeBroker {
        FakeBroker::new()
    }
}

impl FakeBroker {
    /// A broker with no topics and no subscriptions.
    pub fn new() -> FakeBroker {
        FakeBroker {
            wall_epoch: DEFAULT_WALL_EPOCH,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            ack_timeout: None,
            next_seq: 1,
            groups: BTreeMap::new(),
            topics: BTreeMap::new(),
            dedup: BTreeMap::new(),
            parking: Parking::default(),
        }
    }

    /// The same broker with `wall_epoch` as the wall-clock instant of [`Time::ZERO`].
    pub fn with_wall_epoch(mut self, wall_epoch: Timestamp) -> FakeBroker {
        self.wall_epoch = wall_epoch;
        self
    }

    /// The same broker refusing payloads larger than `max_payload_bytes`.
    pub fn with_max_payload_bytes(mut self, max_payload_bytes: usize) -> FakeBroker {
        self.max_payload_bytes = max_payload_bytes;
        self
    }

    /// The same broker handing back every delivery not acknowledged within
    /// `ack_timeout` of its delivery, as a consumer crash would (Pulsar's
    /// `ackTimeout`; the Redis adapter, `effectful::redis::MessagingAdapter`, keeps the
    /// same promise with its own ack timeout). Without
    /// it, a delivery stays in flight until acknowledged or handed back.
    ///
    pub fn with_ack_timeout(mut self, ack_timeout: Duration) -> FakeBroker {
        self.ack_timeout = Some(ack_timeout);
        self
    }

    /// Answers one Messaging request at simulated time `now`; `ConsumeMessage` is
    /// answered without waiting (see [`try_consume`](FakeBroker::try_consume)). A
    /// publish or a negative acknowledgement wakes the waiting consumers; a negative
    /// acknowledgement with a delay also asks to be woken when the delay ends (see
    /// the drain rule on [`FakeBroker`]).
    pub fn handle(&mut self, now: Time, request: MessagingRequest) -> MessagingResponse {
        match request {
            MessagingRequest::PublishMessage(r) => {
                let outcome = self.publish(now, *r);
                self.wake(now);
                MessagingResponse::PublishMessage(outcome)
            }
            MessagingRequest::ConsumeMessage(r) => {
                MessagingResponse::ConsumeMessage(match self.try_consume(now, &r) {
                    Some(envelope) => ConsumeOutcome::Message(envelope.into()),
                    None => ConsumeOutcome::Timeout,
                })
            }
            MessagingRequest::AcknowledgeMessage(r) => {
                MessagingResponse::AcknowledgeMessage(self.acknowledge(&r.message_id))
            }
            MessagingRequest::NegativeAcknowledge(r) => {
                let outcome = self.negative_acknowledge(now, &r.message_id, r.delay_ms);
                self.wake(now);
                // Asked whatever the outcome: a wake with nothing to hand over is
                // harmless.
                self.wake_later(now, now.saturating_add(Duration::from_millis(r.delay_ms)));
                MessagingResponse::NegativeAcknowledge(outcome)
            }
        }
    }

    /// Creates `subscription` (named `"{topic}/{group}"`) if it does not exist, so it
    /// receives every message published from now on.
    pub fn subscribe(&mut self, subscription: &str) {
        if !self.groups.contains_key(subscription) {
            let topic = topic_of(subscription);
            let cursor = self.topics.get(topic).map_or(0, Vec::len);
            self.groups.insert(
                subscription.to_owned(),
                Group::new(topic.to_owned(), cursor),
            );
        }
    }

    /// The messages published to `topic` so far, in publish order (every one, acked or
    /// not: the broker retains its topics).
    pub fn published(&self, topic: &str) -> impl Iterator<Item = PublishedMessage<'_>> {
        self.topics
            .get(topic)
            .into_iter()
            .flatten()
            .map(|m| PublishedMessage {
                message_id: format!("msg-{}", m.seq),
                payload: &m.payload,
                properties: &m.properties,
                publish_time: m.publish_time,
            })
    }

    /// Every topic a message was published to, in name order.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }

    /// The next message available to `request.subscription` at `now`, now in flight;
    /// `None` if there is none yet. Subscribes on first use.
    pub fn try_consume(&mut self, now: Time, request: &ConsumeMessage) -> Option<Envelope> {
        self.subscribe(&request.subscription);
        let group = self.groups.get_mut(&request.subscription)?;
        let log = self.topics.get(&group.topic).map_or(&[][..], Vec::as_slice);
        let mut delivery = group.next_available(now, log)?;
        let message = Arc::clone(&delivery.message);
        let redelivery_count = delivery.redelivery_count;
        let ack_by = self.ack_timeout.map(|t| now.saturating_add(t));
        if let Some(deadline) = ack_by {
            group.ack_deadlines.insert((deadline, message.seq), ());
        }
        delivery.ack_by = ack_by;
        group.in_flight.insert(message.seq, delivery);
        if let Some(deadline) = ack_by {
            self.wake_later(now, deadline);
        }
        Some(Envelope {
            message_id: delivery_id(message.seq, &request.subscription),
            payload: message.payload.clone(),
            properties: message.properties.clone(),
            publish_time: message.publish_time,
            topic: message.topic.clone(),
            redelivery_count,
        })
    }

    /// The soonest time a message waiting for redelivery becomes available, over all
    /// subscriptions (it may be in the past if nobody consumed it yet).
    pub fn next_redelivery(&self) -> Option<Time> {
        self.groups.values().filter_map(Group::next_return).min()
    }

    /// The soonest time a message of `subscription` waiting for redelivery becomes
    /// available (it may be in the past if nobody consumed it yet).
    pub fn next_redelivery_for(&self, subscription: &str) -> Option<Time> {
        self.groups.get(subscription)?.next_return()
    }

    fn log(&self, group: &Group) -> &[Arc<Published>] {
        self.topics.get(&group.topic).map_or(&[][..], Vec::as_slice)
    }

    /// Whether `subscription` has a message available at `now`.
    pub fn has_available(&self, now: Time, subscription: &str) -> bool {
        self.groups.get(subscription).is_some_and(|g| {
            g.backlog(self.log(g)) > 0 || g.next_return().is_some_and(|at| at <= now)
        })
    }

    /// Simulates a crash of every consumer: all messages in flight, in every
    /// subscription, become available again at `now` with `redelivery_count + 1`, and
    /// wake the waiting consumers. Returns how many.
    pub fn redeliver_unacked(&mut self, now: Time) -> usize {
        let names: Vec<String> = self.groups.keys().cloned().collect();
        let count = names
            .iter()
            .map(|name| self.return_in_flight(now, name))
            .sum();
        self.wake(now);
        count
    }

    /// Simulates a crash of the consumers of `subscription`: its messages in flight
    /// become available again at `now` with `redelivery_count + 1`, and wake the
    /// waiting consumers. Returns how many.
    pub fn redeliver_unacked_for(&mut self, now: Time, subscription: &str) -> usize {
        let count = self.return_in_flight(now, subscription);
        self.wake(now);
        count
    }

    fn return_in_flight(&mut self, now: Time, subscription: &str) -> usize {
        let Some(group) = self.groups.get_mut(subscription) else {
            return 0;
        };
        let in_flight = std::mem::take(&mut group.in_flight);
        let count = in_flight.len();
        for delivery in in_flight.into_values() {
            group.schedule_redelivery(now, delivery);
        }
        count
    }

    /// How many messages `subscription` has delivered and not acknowledged.
    pub fn in_flight(&self, subscription: &str) -> usize {
        self.groups
            .get(subscription)
            .map_or(0, |g| g.in_flight.len())
    }

    /// How many messages `subscription` has not acknowledged: never delivered,
    /// waiting for redelivery, or in flight.
    pub fn unacknowledged(&self, subscription: &str) -> usize {
        self.groups.get(subscription).map_or(0, |g| {
            g.backlog(self.log(g)) + g.redeliveries.len() + g.in_flight.len()
        })
    }

    /// The names of every subscription, in order.
    pub fn subscriptions(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(String::as_str)
    }

    fn publish(&mut self, now: Time, request: PublishMessage) -> PublishOutcome {
        if request.topic.is_empty() {
            return PublishOutcome::Rejected {
                reason: "the topic name is empty".to_owned(),
            };
        }
        if request.payload.len() > self.max_payload_bytes {
            return PublishOutcome::Rejected {
                reason: format!(
                    "the payload of {} bytes exceeds the limit of {} bytes",
                    request.payload.len(),
                    self.max_payload_bytes
                ),
            };
        }
        let first = request.dedup_key.as_ref().and_then(|key| {
            let keys = self.dedup.get(&request.topic)?;
            keys.get(key)
        });
        if let Some(first) = first {
            return PublishOutcome::Published {
                message_id: publish_id(*first),
            };
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(key) = request.dedup_key {
            match self.dedup.get_mut(&request.topic) {
                Some(keys) => {
                    keys.insert(key, seq);
                }
                None => {
                    let keys = FxHashMap::from_iter([(key, seq)]);
                    self.dedup.insert(request.topic.clone(), keys);
                }
            }
        }
        let message = Arc::new(Published {
            seq,
            topic: request.topic,
            payload: request.payload,
            properties: request.properties,
            publish_time: wall_time(self.wall_epoch, now),
        });
        // Appended once: every group of the topic reads it through its cursor.
        match self.topics.get_mut(&message.topic) {
            Some(log) => log.push(message),
            None => {
                self.topics.insert(message.topic.clone(), vec![message]);
            }
        }
        PublishOutcome::Published {
            message_id: publish_id(seq),
        }
    }

    fn acknowledge(&mut self, message_id: &str) -> AckOutcome {
        let Some((seq, group)) = self.find(message_id) else {
            return AckOutcome::UnknownMessage;
        };
        if group.in_flight.remove(&seq).is_some() {
            return AckOutcome::Acknowledged;
        }
        match group.redelivery_at.remove(&seq) {
            Some(at) => {
                group.redeliveries.remove(&(at, seq));
                AckOutcome::Acknowledged
            }
            None => AckOutcome::UnknownMessage,
        }
    }

    pub(super) fn negative_acknowledge(
        &mut self,
        now: Time,
        message_id: &str,
        delay_ms: u64,
    ) -> AckOutcome {
        let Some((seq, group)) = self.find(message_id) else {
            return AckOutcome::UnknownMessage;
        };
        let Some(delivery) = group.in_flight.remove(&seq) else {
            return AckOutcome::UnknownMessage;
        };
        group.schedule_redelivery(
            now.saturating_add(Duration::from_millis(delay_ms)),
            delivery,
        );
        AckOutcome::Acknowledged
    }

    /// The publish sequence number and group a delivery id names.
    fn find(&mut self, message_id: &str) -> Option<(u64, &mut Group)> {
        let (publish_id, subscription) = message_id.split_once('@')?;
        let seq = publish_id.strip_prefix(PUBLISH_ID_PREFIX)?.parse().ok()?;
        Some((seq, self.groups.get_mut(subscription)?))
    }
}

/// `msg-{seq}@{subscription}`: a delivery of publish `seq` to one group.
fn delivery_id(seq: u64, subscription: &str) -> String {
    let mut id = String::with_capacity(PUBLISH_ID_PREFIX.len() + 21 + subscription.len());
    push_publish_id(&mut id, seq);
    id.push('@');
    id.push_str(subscription);
    id
}

/// `msg-{seq}`: the id `PublishMessage` answers.
fn publish_id(seq: u64) -> String {
    let mut id = String::with_capacity(PUBLISH_ID_PREFIX.len() + 20);
    push_publish_id(&mut id, seq);
    id
}

/// Appends `msg-{seq}` without `format!`: every publish and every delivery makes an
/// id, and `format!` costs several times more.
fn push_publish_id(id: &mut String, seq: u64) {
    id.push_str(PUBLISH_ID_PREFIX);
    id.push_str(itoa::Buffer::new().format(seq));
}

/// The topic of a subscription named `"{topic}/{group}"`.
fn topic_of(subscription: &str) -> &str {
    subscription
        .rsplit_once('/')
        .map_or(subscription, |(topic, _)| topic)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::{AcknowledgeMessage, NegativeAcknowledge};

    #[test]
    fn publish_ids_are_the_sequence_number_in_decimal() {
        assert_eq!(publish_id(0), "msg-0");
        assert_eq!(publish_id(7), "msg-7");
        assert_eq!(publish_id(u64::MAX), "msg-18446744073709551615");
        assert_eq!(delivery_id(1_234_567, "t/g"), "msg-1234567@t/g");
        // A delivery id always names its group, even an empty one.
        assert_eq!(delivery_id(3, ""), "msg-3@");
    }

    fn publish(broker: &mut FakeBroker, now: Time, topic: &str, payload: &[u8]) -> PublishOutcome {
        let request = PublishMessage {
            topic: topic.into(),
            payload: payload.to_vec(),
            properties: BTreeMap::new(),
            dedup_key: None,
        };
        match broker.handle(now, MessagingRequest::PublishMessage(Box::new(request))) {
            MessagingResponse::PublishMessage(outcome) => outcome,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn consume(broker: &mut FakeBroker, now: Time, subscription: &str) -> Option<Envelope> {
        broker.try_consume(
            now,
            &ConsumeMessage {
                subscription: subscription.into(),
                timeout_ms: 100,
            },
        )
    }

    fn payload(envelope: Option<Envelope>) -> Vec<u8> {
        envelope.expect("a message").payload
    }

    fn ack(broker: &mut FakeBroker, id: &str) -> AckOutcome {
        match broker.handle(
            Time::ZERO,
            MessagingRequest::AcknowledgeMessage(AcknowledgeMessage {
                message_id: id.into(),
            }),
        ) {
            MessagingResponse::AcknowledgeMessage(outcome) => outcome,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn nack(broker: &mut FakeBroker, now: Time, id: &str, delay_ms: u64) -> AckOutcome {
        let request = NegativeAcknowledge {
            message_id: id.into(),
            delay_ms,
        };
        match broker.handle(now, MessagingRequest::NegativeAcknowledge(request)) {
            MessagingResponse::NegativeAcknowledge(outcome) => outcome,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn broker_delivers_in_publish_order_with_topic_and_publish_time() {
        let mut broker = FakeBroker::new();
        broker.subscribe("chat/workers");
        publish(&mut broker, Time::from_secs(1), "chat", b"one");
        publish(&mut broker, Time::from_secs(2), "chat", b"two");
        let first = consume(&mut broker, Time::from_secs(3), "chat/workers").expect("a message");
        assert_eq!(first.payload, b"one");
        assert_eq!(first.topic, "chat");
        assert_eq!(first.redelivery_count, 0);
        assert_eq!(
            first.publish_time.to_string(),
            "2026-01-01T00:00:01.000000Z"
        );
        assert_eq!(
            payload(consume(&mut broker, Time::from_secs(3), "chat/workers")),
            b"two"
        );
        assert_eq!(
            consume(&mut broker, Time::from_secs(3), "chat/workers"),
            None
        );
    }

    #[test]
    fn broker_subscription_gets_only_messages_published_after_it_subscribed() {
        let mut broker = FakeBroker::new();
        publish(&mut broker, Time::ZERO, "chat", b"before");
        assert_eq!(consume(&mut broker, Time::ZERO, "chat/late"), None);
        publish(&mut broker, Time::ZERO, "chat", b"after");
        assert_eq!(
            payload(consume(&mut broker, Time::ZERO, "chat/late")),
            b"after"
        );
    }

    #[test]
    fn broker_each_group_gets_every_message_and_members_share_a_group() {
        let mut broker = FakeBroker::new();
        broker.subscribe("chat/a");
        broker.subscribe("chat/b");
        broker.subscribe("other/a");
        publish(&mut broker, Time::ZERO, "chat", b"1");
        publish(&mut broker, Time::ZERO, "chat", b"2");
        // Two consumers of group a share its messages; group b gets its own copies.
        assert_eq!(payload(consume(&mut broker, Time::ZERO, "chat/a")), b"1");
        assert_eq!(payload(consume(&mut broker, Time::ZERO, "chat/a")), b"2");
        assert_eq!(payload(consume(&mut broker, Time::ZERO, "chat/b")), b"1");
        assert_eq!(payload(consume(&mut broker, Time::ZERO, "chat/b")), b"2");
        assert_eq!(consume(&mut broker, Time::ZERO, "other/a"), None);
        assert_eq!(
            broker.subscriptions().collect::<Vec<_>>(),
            ["chat/a", "chat/b", "other/a"]
        );
    }

    #[test]
    fn broker_subscription_topic_is_everything_before_the_last_slash() {
        let mut broker = FakeBroker::new();
        broker.subscribe("persistent://public/default/chat/workers");
        broker.subscribe("plain");
        publish(
            &mut broker,
            Time::ZERO,
            "persistent://public/default/chat",
            b"x",
        );
        publish(&mut broker, Time::ZERO, "plain", b"y");
        let envelope = consume(
            &mut broker,
            Time::ZERO,
            "persistent://public/default/chat/workers",
        )
        .expect("a message");
        assert_eq!(envelope.topic, "persistent://public/default/chat");
        assert_eq!(payload(consume(&mut broker, Time::ZERO, "plain")), b"y");
    }

    #[test]
    fn broker_ack_removes_and_a_second_or_unknown_ack_says_unknown_message() {
        let mut broker = FakeBroker::new();
        broker.subscribe("t/g");
        let PublishOutcome::Published {
            message_id: published,
        } = publish(&mut broker, Time::ZERO, "t", b"x")
        else {
            panic!("expected published");
        };
        // Not delivered yet: acknowledging it is unknown.
        assert_eq!(
            ack(&mut broker, &format!("{published}@t/g")),
            AckOutcome::UnknownMessage
        );
        let envelope = consume(&mut broker, Time::ZERO, "t/g").expect("a message");
        assert_eq!(envelope.message_id, format!("{published}@t/g"));
        assert_eq!(broker.in_flight("t/g"), 1);
        assert_eq!(
            ack(&mut broker, &envelope.message_id),
            AckOutcome::Acknowledged
        );
        assert_eq!(
            ack(&mut broker, &envelope.message_id),
            AckOutcome::UnknownMessage
        );
        assert_eq!(broker.unacknowledged("t/g"), 0);
        for bogus in ["", "nope", "msg-x@t/g", "msg-1@missing", &published] {
            assert_eq!(
                ack(&mut broker, bogus),
                AckOutcome::UnknownMessage,
                "{bogus}"
            );
            assert_eq!(
                nack(&mut broker, Time::ZERO, bogus, 0),
                AckOutcome::UnknownMessage,
                "{bogus}"
            );
        }
    }

    #[test]
    fn broker_message_ids_are_unique() {
        let mut broker = FakeBroker::new();
        let ids: Vec<PublishOutcome> = (0..3)
            .map(|_| publish(&mut broker, Time::ZERO, "t", b"x"))
            .collect();
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[1], ids[2]);
        assert_ne!(ids[0], ids[2]);
    }

    #[test]
    fn broker_nack_redelivers_after_the_delay_with_a_higher_count() {
        let mut broker = FakeBroker::new();
        broker.subscribe("t/g");
        publish(&mut broker, Time::ZERO, "t", b"x");
        let envelope = consume(&mut broker, Time::ZERO, "t/g").expect("a message");
        assert_eq!(
            nack(&mut broker, Time::from_secs(1), &envelope.message_id, 500),
            AckOutcome::Acknowledged
        );
        assert_eq!(broker.in_flight("t/g"), 0);
        assert_eq!(broker.next_redelivery(), Some(Time::from_millis(1_500)));
        assert!(!broker.has_available(Time::from_millis(1_499), "t/g"));
        assert_eq!(consume(&mut broker, Time::from_millis(1_499), "t/g"), None);
        assert!(broker.has_available(Time::from_millis(1_500), "t/g"));
        let again = consume(&mut broker, Time::from_millis(1_500), "t/g").expect("redelivered");
        assert_eq!(again.message_id, envelope.message_id);
        assert_eq!(again.redelivery_count, 1);
        assert_eq!(broker.next_redelivery(), None);
        // A message not in flight cannot be negatively acknowledged twice.
        assert_eq!(
            nack(&mut broker, Time::from_secs(2), &again.message_id, 0),
            AckOutcome::Acknowledged
        );
        assert_eq!(
            nack(&mut broker, Time::from_secs(2), &again.message_id, 0),
            AckOutcome::UnknownMessage
        );
        assert_eq!(
            consume(&mut broker, Time::from_secs(2), "t/g")
                .expect("again")
                .redelivery_count,
            2
        );
    }

    #[test]
    fn broker_ack_of_a_message_waiting_for_redelivery_cancels_the_redelivery() {
        let mut broker = FakeBroker::new();
        broker.subscribe("t/g");
        publish(&mut broker, Time::ZERO, "t", b"x");
        let envelope = consume(&mut broker, Time::ZERO, "t/g").expect("a message");
        nack(&mut broker, Time::ZERO, &envelope.message_id, 1_000);
        assert_eq!(
            ack(&mut broker, &envelope.message_id),
            AckOutcome::Acknowledged
        );
        assert_eq!(broker.next_redelivery(), None);
        assert_eq!(consume(&mut broker, Time::from_secs(5), "t/g"), None);
    }

    #[test]
    fn broker_redeliveries_that_are_due_come_before_new_messages() {
        let mut broker = FakeBroker::new();
        broker.subscribe("t/g");
        publish(&mut broker, Time::ZERO, "t", b"first");
        let first = consume(&mut broker, Time::ZERO, "t/g").expect("a message");
        publish(&mut broker, Time::ZERO, "t", b"second");
        nack(&mut broker, Time::ZERO, &first.message_id, 0);
        assert_eq!(payload(consume(&mut broker, Time::ZERO, "t/g")), b"first");
        assert_eq!(payload(consume(&mut broker, Time::ZERO, "t/g")), b"second");
    }

    #[test]
    fn broker_consumer_crash_makes_in_flight_messages_available_again() {
        let mut broker = FakeBroker::new();
        broker.subscribe("t/a");
        broker.subscribe("t/b");
        publish(&mut broker, Time::ZERO, "t", b"1");
        publish(&mut broker, Time::ZERO, "t", b"2");
        for _ in 0..2 {
            consume(&mut broker, Time::ZERO, "t/a").expect("a message");
        }
        let b1 = consume(&mut broker, Time::ZERO, "t/b").expect("a message");
        assert_eq!(broker.redeliver_unacked_for(Time::from_secs(1), "t/a"), 2);
        assert_eq!(broker.in_flight("t/b"), 1);
        let again: Vec<(Vec<u8>, u32)> = (0..2)
            .map(|_| consume(&mut broker, Time::from_secs(1), "t/a").expect("redelivered"))
            .map(|e| (e.payload, e.redelivery_count))
            .collect();
        assert_eq!(again, [(b"1".to_vec(), 1), (b"2".to_vec(), 1)]);
        assert_eq!(broker.redeliver_unacked(Time::from_secs(2)), 3);
        let b1_again = consume(&mut broker, Time::from_secs(2), "t/b").expect("redelivered");
        assert_eq!(
            (b1_again.message_id, b1_again.redelivery_count),
            (b1.message_id, 1)
        );
        assert_eq!(broker.unacknowledged("t/a"), 2);
    }

    #[test]
    fn broker_with_an_ack_timeout_hands_back_what_a_consumer_never_acknowledged() {
        let mut broker = FakeBroker::new().with_ack_timeout(Duration::from_secs(1));
        broker.subscribe("t/g");
        publish(&mut broker, Time::ZERO, "t", b"x");
        publish(&mut broker, Time::ZERO, "t", b"y");
        let first = consume(&mut broker, Time::ZERO, "t/g").expect("a message");
        let second = consume(&mut broker, Time::ZERO, "t/g").expect("a message");
        assert_eq!(broker.poll_wake_at(), Some(Time::from_secs(1)));
        assert_eq!(
            ack(&mut broker, &second.message_id),
            AckOutcome::Acknowledged
        );
        assert_eq!(consume(&mut broker, Time::from_millis(999), "t/g"), None);
        assert!(broker.has_available(Time::from_secs(1), "t/g"));
        let again = consume(&mut broker, Time::from_secs(1), "t/g").expect("handed back");
        assert_eq!(
            (again.message_id.as_str(), again.redelivery_count),
            (first.message_id.as_str(), 1)
        );
        // The acknowledged one's deadline passes without effect.
        assert_eq!(
            consume(&mut broker, Time::from_secs(5), "t/g").map(|e| e.payload),
            Some(b"x".to_vec())
        );
        assert_eq!(consume(&mut broker, Time::from_secs(5), "t/g"), None);
    }

    #[test]
    fn broker_rejects_payloads_over_the_limit_and_empty_topics() {
        let mut broker = FakeBroker::new().with_max_payload_bytes(4);
        broker.subscribe("t/g");
        assert!(matches!(
            publish(&mut broker, Time::ZERO, "t", b"1234"),
            PublishOutcome::Published { .. }
        ));
        let PublishOutcome::Rejected { reason } = publish(&mut broker, Time::ZERO, "t", b"12345")
        else {
            panic!("expected a rejection");
        };
        assert!(
            reason.contains("5 bytes") && reason.contains("limit of 4"),
            "{reason}"
        );
        assert!(matches!(
            publish(&mut broker, Time::ZERO, "", b""),
            PublishOutcome::Rejected { .. }
        ));
        assert_eq!(broker.unacknowledged("t/g"), 1);
        assert_eq!(FakeBroker::new().max_payload_bytes, 5 * 1024 * 1024);
    }

    #[test]
    fn broker_handle_answers_timeout_when_nothing_is_available() {
        let mut broker = FakeBroker::new();
        let request = ConsumeMessage {
            subscription: "t/g".into(),
            timeout_ms: 5_000,
        };
        assert_eq!(
            broker.handle(
                Time::ZERO,
                MessagingRequest::ConsumeMessage(request.clone())
            ),
            MessagingResponse::ConsumeMessage(ConsumeOutcome::Timeout)
        );
        publish(&mut broker, Time::ZERO, "t", b"x");
        let MessagingResponse::ConsumeMessage(ConsumeOutcome::Message(envelope)) =
            broker.handle(Time::ZERO, MessagingRequest::ConsumeMessage(request))
        else {
            panic!("expected a message");
        };
        assert_eq!(envelope.payload, b"x");
    }

    #[test]
    fn a_publish_with_a_key_the_topic_has_seen_is_not_stored_again() {
        let mut broker = FakeBroker::new();
        broker.subscribe("room/readers");
        let keyed = |key: &str| PublishMessage {
            topic: "room".into(),
            payload: b"m".to_vec(),
            properties: BTreeMap::new(),
            dedup_key: Some(key.into()),
        };
        let publish = |broker: &mut FakeBroker, request| match broker.handle(
            Time::ZERO,
            MessagingRequest::PublishMessage(Box::new(request)),
        ) {
            MessagingResponse::PublishMessage(PublishOutcome::Published { message_id }) => {
                message_id
            }
            other => panic!("unexpected {other:?}"),
        };
        let first = publish(&mut broker, keyed("k1"));
        assert_eq!(
            publish(&mut broker, keyed("k1")),
            first,
            "the retry answers with the first id"
        );
        assert_ne!(publish(&mut broker, keyed("k2")), first);
        assert!(consume(&mut broker, Time::ZERO, "room/readers").is_some());
        assert!(consume(&mut broker, Time::ZERO, "room/readers").is_some());
        assert!(
            consume(&mut broker, Time::ZERO, "room/readers").is_none(),
            "k1 was stored once"
        );
    }
}
