//! The Messaging family on Redis Streams, sans IO: each effect becomes one `EVAL`
//! (Lua, atomic), and [`Consumers`] parks waiting consumers in the adapter so that no
//! wait holds a connection. The semantics are the fake broker's
//! ([`FakeBroker`](crate::memory::FakeBroker) with an ack timeout); the contract
//! suite `effectful_test::contract::check_messaging` holds both to them.
//!
//! # Keys (under the prefix)
//! - `stream:{topic}`: the topic, a stream; each entry holds `payload`, `time` (the
//!   server's clock in µs) and one `p:{name}` field per property. Entries are never
//!   trimmed (the fake retains its topics too).
//! - a subscription `"{topic}/{group}"` is the consumer group named by the whole
//!   subscription on its topic's stream (split at the last `/`, as in the fake),
//!   created at `$` by its first consume: it receives what is published from then on.
//! - `delayed:{subscription}`: a sorted set of negatively acknowledged entry ids by
//!   the server time (ms) they are due again.
//! - `dedup:{topic length}:{topic}:{key}`: the entry id a deduplication key got
//!   (`SET` in the same script as the `XADD`, so a retried publish answers the first
//!   id and stores nothing).
//! - the pub/sub channel `wake` ([`MessagingAdapter::wake_channel`], not a key): the
//!   publish script `PUBLISH`es `t{topic}` on it after its `XADD`, the negative
//!   acknowledgement script `s{subscription}` after its `ZADD`.
//!
//! # Deliveries and counts
//! Every delivery is owned by the group's consumer `live`; a negatively acknowledged
//! one moves to the consumer `delayed` (`XCLAIM ... JUSTID`, which keeps its delivery
//! counter) and into the delayed set. A consume takes, in this order: the delayed
//! entry due soonest, if due (`XCLAIM` back to `live`); an entry of `live` idle for
//! longer than the ack timeout, whose consumer died or forgot it (`XPENDING ... IDLE`,
//! then `XCLAIM` with that min-idle, so two processes never both take it); the next
//! new entry (`XREADGROUP ... >`, never `BLOCK`). `XCLAIM` counts a delivery, so
//! `redelivery_count` is the entry's delivery counter minus one, as the fake counts.
//! An envelope's id is `{entry id}@{subscription}`; acknowledge (`XACK`, and out of
//! the delayed set) and negatively acknowledge with it.
//!
//! # Waiting without a connection, and without polling
//! A blocked `XREADGROUP` holds its connection and cannot be cancelled, so consumers
//! never block at the server: a consumer that finds nothing parks in [`Consumers`],
//! which keeps at most one read in flight per subscription and reads again only when
//! something may have become available:
//! - **woken** by a notification on the wake channel, from any process
//!   ([`Consumers::handle_notification`]): each process keeps one pub/sub
//!   connection subscribed to it (not a pool connection). A notification that comes
//!   while the subscription's read is in flight makes it read once more afterwards
//!   (that read may have run before the publish). When that connection is lost,
//!   notifications are lost with it, so on every (re)subscription every waiting
//!   subscription reads once ([`Consumers::handle_listening`]); meanwhile a publish
//!   or negative acknowledgement through this process wakes its own consumers
//!   directly ([`Consumers::handle_published`]).
//! - **when time itself is the event**: a read that finds nothing answers when time
//!   alone may change that, and the subscription reads again then: when its soonest
//!   delayed entry comes due, and, while entries are delivered and not acknowledged,
//!   when the oldest of them reaches the ack timeout (at most half an ack timeout
//!   ahead, since another delivery may reach it sooner). With nothing in flight and
//!   nothing delayed, a waiting subscription sends nothing until it is woken.
//!
//! A read's message
//! goes to the subscription's first consumer still waiting; if none is left (each
//! gave up while the read was on its way), it is **handed back at once** by the
//! negative-acknowledge script with no delay (to the delayed set, due now), which the
//! next delivery counts as a redelivery, as the fake's
//! [`redeliver`](crate::memory::FakeBroker::redeliver) does. A driver whose answer
//! reaches a consumer that was cancelled meanwhile hands it back the same way
//! ([`MessagingAdapter::hand_back`]).
//!
//! # Differences from the fake
//! - Times are the server's: a delay or an ack timeout runs on Redis's clock. A
//!   waiting consumer hears a publish or a negative acknowledgement from any process
//!   one pub/sub hop after it (while the wake subscription is up; after it was lost,
//!   when it is back), a delay coming due when it is due (by this process's clock,
//!   counted from the server's answer), and a delivery reaching its ack timeout up
//!   to half an ack timeout late when another delivery of the subscription was
//!   handed out more recently.
//! - A Redis restart without persistence loses every stream, group, delayed set and
//!   deduplication key (the next consume recreates the group at `$`; acknowledging a
//!   delivery from before answers `UnknownMessage`). With `appendonly yes` a restart
//!   keeps them, and what was in flight comes again after the ack timeout: the
//!   simulator's broker restart.
//! - Errors: a lost connection or a timeout fails the effect retryably; waiting
//!   consumers of a subscription whose read failed hear that error (the fake never
//!   fails).

use std::collections::{BTreeMap, BTreeSet, HashMap as FxHashMap, VecDeque};
use std::time::Duration;

use super::command::Command;
use super::error::CommandError;
use super::value::Value;
use crate::effect::{
    AckOutcome, ConsumeMessage, ConsumeOutcome, Envelope, MessagingRequest, MessagingResponse,
    PublishMessage, PublishOutcome,
};
use crate::{EffectError, ErrorKind, Time, Timestamp};

/// Publishes. KEYS: stream, [dedup key]. ARGV: wake channel, wake notification,
/// payload, then property field/value pairs. Answers the entry id (the first one's,
/// for a key seen before, which stores and notifies nothing).
const PUBLISH_SCRIPT: &str = "\
if KEYS[2] then
  local first = redis.call('GET', KEYS[2])
  if first then return first end
end
local t = redis.call('TIME')
local fields = {'payload', ARGV[3], 'time', t[1] .. string.format('%06d', tonumber(t[2]))}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
if KEYS[2] then redis.call('SET', KEYS[2], id) end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return id";

/// Takes one delivery. KEYS: stream, delayed set. ARGV: group, ack timeout (ms).
/// Answers `{id, fields, deliveries}`; when nothing is available, the milliseconds
/// (at least 1) until time alone may make something available (the soonest delayed
/// entry coming due; an entry of `live` reaching the ack timeout, judged by the
/// oldest one and at most half an ack timeout ahead), or 0 if nothing is in flight.
const CONSUME_SCRIPT: &str = "\
local s, g = KEYS[1], ARGV[1]
redis.pcall('XGROUP', 'CREATE', s, g, '$', 'MKSTREAM')
local function counted(entry)
  local p = redis.call('XPENDING', s, g, entry[1], entry[1], 1)
  return {entry[1], entry[2], p[1][4]}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1)
if due[1] then
  redis.call('ZREM', KEYS[2], due[1])
  local c = redis.call('XCLAIM', s, g, 'live', 0, due[1])
  if c[1] then return counted(c[1]) end
end
local idle = redis.call('XPENDING', s, g, 'IDLE', ARGV[2], '-', '+', 1, 'live')
if idle[1] then
  local c = redis.call('XCLAIM', s, g, 'live', ARGV[2], idle[1][1])
  if c[1] then return counted(c[1]) end
end
local r = redis.call('XREADGROUP', 'GROUP', g, 'live', 'COUNT', 1, 'STREAMS', s, '>')
if r and r[1] and r[1][2][1] then return {r[1][2][1][1], r[1][2][1][2], 1} end
local wait = 0
local d = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if d[2] then wait = math.max(tonumber(d[2]) - now, 1) end
local p = redis.call('XPENDING', s, g, '-', '+', 1, 'live')
if p[1] then
  local ack = tonumber(ARGV[2])
  local w = math.max(math.min(ack - p[1][3], math.floor(ack / 2)), 1)
  if wait == 0 or w < wait then wait = w end
end
return wait";

/// Acknowledges. KEYS: stream, delayed set. ARGV: group, entry id. Answers 1 if it
/// was delivered and not acknowledged, else 0 (unknown group or id, malformed id).
const ACK_SCRIPT: &str = "\
local n = redis.pcall('XACK', KEYS[1], ARGV[1], ARGV[2])
if type(n) ~= 'number' then return 0 end
redis.call('ZREM', KEYS[2], ARGV[2])
return n";

/// Hands a delivery of `live` back, due again after a delay, and notifies the
/// subscription's waiting consumers. KEYS: stream, delayed set. ARGV: group, entry
/// id, delay (ms), wake channel, wake notification. Answers 1, or 0 if it is not in
/// flight.
const NACK_SCRIPT: &str = "\
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, 'live')
if type(p) ~= 'table' or p.err or not p[1] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], 'delayed', 0, ARGV[2], 'JUSTID')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1";

/// The default largest payload: 5 MiB, the fake broker's (Pulsar's `maxMessageSize`).
const DEFAULT_MAX_PAYLOAD_BYTES: usize = 5 * 1024 * 1024;

/// The most properties a message may carry (each is two script arguments).
pub const MAX_PROPERTIES: usize = 1024;

/// The default ack timeout: a delivery not acknowledged within it goes to the next
/// consumer.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Turns Messaging effects into Redis commands and replies into answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessagingAdapter {
    prefix: String,
    ack_timeout: Duration,
    max_payload_bytes: usize,
}

/// What a reply is read as: kept by the driver beside the command until its reply
/// comes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessagingPending {
    effect: &'static str,
    op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Publish,
    Consume { subscription: String },
    Ack,
    Nack,
}

impl MessagingPending {
    /// The effect this reply answers (`Messaging.PublishMessage`, ...).
    pub fn effect(&self) -> &'static str {
        self.effect
    }
}

/// What a request needs: one command, or nothing (answered without a round trip).
#[derive(Clone, Debug, PartialEq)]
pub enum MessagingPlan {
    /// Send this command; read its reply with [`MessagingAdapter::response`].
    Send(Command, MessagingPending),
    /// The answer, known before sending anything (a publish the broker refuses).
    Answered(MessagingResponse),
}

impl MessagingAdapter {
    /// Keys under `prefix` (may be empty), with the default ack timeout (30 s) and
    /// payload limit (5 MiB, the fake's).
    pub fn new(prefix: impl Into<String>) -> MessagingAdapter {
        MessagingAdapter {
            prefix: prefix.into(),
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }

    /// The same adapter handing a delivery to the next consumer when it is not
    /// acknowledged within `ack_timeout` (at least 1 ms).
    pub fn with_ack_timeout(mut self, ack_timeout: Duration) -> MessagingAdapter {
        self.ack_timeout = ack_timeout.max(Duration::from_millis(1));
        self
    }

    /// The same adapter refusing payloads larger than `max_payload_bytes`.
    pub fn with_max_payload_bytes(mut self, max_payload_bytes: usize) -> MessagingAdapter {
        self.max_payload_bytes = max_payload_bytes;
        self
    }

    /// How long a delivery may go unacknowledged before the next consumer gets it.
    pub fn ack_timeout(&self) -> Duration {
        self.ack_timeout
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key of `topic`'s stream.
    pub fn stream_key(&self, topic: &str) -> String {
        format!("{}stream:{topic}", self.prefix)
    }

    /// The pub/sub channel on which publishes and negative acknowledgements notify
    /// waiting consumers (every process's [`Consumers`] listens to it; hand each
    /// message to [`Consumers::handle_notification`]). Not a key: channels have a
    /// namespace of their own.
    pub fn wake_channel(&self) -> String {
        format!("{}wake", self.prefix)
    }

    fn delayed_key(&self, subscription: &str) -> String {
        format!("{}delayed:{subscription}", self.prefix)
    }

    fn dedup_key(&self, topic: &str, key: &str) -> String {
        format!("{}dedup:{}:{topic}:{key}", self.prefix, topic.len())
    }

    /// The command that performs `request`, or its answer if none is needed.
    /// `ConsumeMessage` here is one read that does not wait (answering `Timeout` when
    /// nothing is available): drivers that let consumers wait use [`Consumers`].
    pub fn plan(&self, request: &MessagingRequest) -> Result<MessagingPlan, EffectError> {
        let effect = request.name();
        let pending = |op| MessagingPending { effect, op };
        Ok(match request {
            MessagingRequest::PublishMessage(r) => match self.publish(r) {
                Ok(command) => MessagingPlan::Send(command, pending(Op::Publish)),
                Err(reason) => MessagingPlan::Answered(MessagingResponse::PublishMessage(
                    PublishOutcome::Rejected { reason },
                )),
            },
            MessagingRequest::ConsumeMessage(r) => MessagingPlan::Send(
                self.read(&r.subscription),
                pending(Op::Consume {
                    subscription: r.subscription.clone(),
                }),
            ),
            MessagingRequest::AcknowledgeMessage(r) => {
                match self.on_delivery(ACK_SCRIPT, &r.message_id) {
                    Some(command) => MessagingPlan::Send(command, pending(Op::Ack)),
                    None => unknown(MessagingResponse::AcknowledgeMessage),
                }
            }
            MessagingRequest::NegativeAcknowledge(r) => {
                match self.on_delivery(NACK_SCRIPT, &r.message_id) {
                    Some(command) => MessagingPlan::Send(
                        self.nack_tail(
                            command,
                            i64::try_from(r.delay_ms).unwrap_or(i64::MAX),
                            &r.message_id,
                        ),
                        pending(Op::Nack),
                    ),
                    None => unknown(MessagingResponse::NegativeAcknowledge),
                }
            }
        })
    }

    /// The command that hands the delivery `message_id` back at once (its consumer
    /// stopped waiting before the message reached it); its reply needs no reading.
    pub fn hand_back(&self, message_id: &str) -> Option<Command> {
        let command = self.on_delivery(NACK_SCRIPT, message_id)?;
        Some(self.nack_tail(command, 0, message_id))
    }

    /// The negative-acknowledge script's last arguments: the delay, then the wake
    /// channel and the subscription's notification.
    fn nack_tail(&self, command: Command, delay_ms: i64, message_id: &str) -> Command {
        let subscription = message_id.split_once('@').map_or("", |(_, s)| s);
        command
            .arg_int(delay_ms)
            .arg(self.wake_channel())
            .arg(format!("{WAKE_SUBSCRIPTION}{subscription}"))
    }

    /// The answer to the request `pending` came from, given its command's reply.
    pub fn response(
        &self,
        pending: MessagingPending,
        reply: Result<Value, CommandError>,
    ) -> Result<MessagingResponse, EffectError> {
        let effect = pending.effect;
        let reply = reply.map_err(|e| super::command_error(effect, &e))?;
        let unexpected = || unexpected(effect, &reply);
        Ok(match pending.op {
            Op::Publish => match reply.as_str() {
                Some(id) => MessagingResponse::PublishMessage(PublishOutcome::Published {
                    message_id: id.to_owned(),
                }),
                None => return Err(unexpected()),
            },
            Op::Consume { subscription } => {
                MessagingResponse::ConsumeMessage(
                    match read_delivery(&reply, &subscription).ok_or_else(unexpected)? {
                        Read::Message(envelope) => ConsumeOutcome::Message(Box::new(envelope)),
                        Read::Nothing { .. } => ConsumeOutcome::Timeout,
                    },
                )
            }
            Op::Ack => {
                MessagingResponse::AcknowledgeMessage(ack_outcome(&reply).ok_or_else(unexpected)?)
            }
            Op::Nack => {
                MessagingResponse::NegativeAcknowledge(ack_outcome(&reply).ok_or_else(unexpected)?)
            }
        })
    }

    fn publish(&self, r: &PublishMessage) -> Result<Command, String> {
        // The fake's reasons, word for word.
        if r.topic.is_empty() {
            return Err("the topic name is empty".to_owned());
        }
        if r.payload.len() > self.max_payload_bytes {
            return Err(format!(
                "the payload of {} bytes exceeds the limit of {} bytes",
                r.payload.len(),
                self.max_payload_bytes
            ));
        }
        if r.properties.len() > MAX_PROPERTIES {
            return Err(format!(
                "{} properties exceed the limit of {MAX_PROPERTIES}",
                r.properties.len()
            ));
        }
        let mut command = Command::new("EVAL").arg(PUBLISH_SCRIPT);
        match &r.dedup_key {
            Some(key) => {
                command = command
                    .arg("2")
                    .arg(self.stream_key(&r.topic))
                    .arg(self.dedup_key(&r.topic, key));
            }
            None => command = command.arg("1").arg(self.stream_key(&r.topic)),
        }
        command.push(self.wake_channel());
        command.push(format!("{WAKE_TOPIC}{}", r.topic));
        command.push(&r.payload);
        for (name, value) in &r.properties {
            command.push(format!("p:{name}"));
            command.push(value);
        }
        Ok(command)
    }

    /// One non-waiting read of `subscription`.
    fn read(&self, subscription: &str) -> Command {
        Command::new("EVAL")
            .arg(CONSUME_SCRIPT)
            .arg("2")
            .arg(self.stream_key(topic_of(subscription)))
            .arg(self.delayed_key(subscription))
            .arg(subscription)
            .arg_int(i64::try_from(self.ack_timeout.as_millis()).unwrap_or(i64::MAX))
    }

    /// `script` on the delivery `message_id` names; `None` if it names none.
    fn on_delivery(&self, script: &str, message_id: &str) -> Option<Command> {
        let (entry, subscription) = message_id.split_once('@')?;
        if entry.is_empty() {
            return None;
        }
        Some(
            Command::new("EVAL")
                .arg(script)
                .arg("2")
                .arg(self.stream_key(topic_of(subscription)))
                .arg(self.delayed_key(subscription))
                .arg(subscription)
                .arg(entry),
        )
    }
}

fn unknown(answer: fn(AckOutcome) -> MessagingResponse) -> MessagingPlan {
    MessagingPlan::Answered(answer(AckOutcome::UnknownMessage))
}

fn ack_outcome(reply: &Value) -> Option<AckOutcome> {
    match reply.as_int()? {
        1 => Some(AckOutcome::Acknowledged),
        0 => Some(AckOutcome::UnknownMessage),
        _ => None,
    }
}

fn unexpected(effect: &'static str, reply: &Value) -> EffectError {
    EffectError::new(
        effect,
        ErrorKind::Protocol,
        format!(
            "unexpected reply from Redis: {}",
            super::cache::describe(reply)
        ),
    )
    .with_retryable(false)
}

/// What one read found.
#[derive(Debug)]
enum Read {
    Message(Envelope),
    /// Nothing; `due_in`: when time alone may make something available (a delayed
    /// entry coming due, an ack timeout), if anything is in flight.
    Nothing {
        due_in: Option<Duration>,
    },
}

/// The consume script's reply, or `None` if the reply is not one.
fn read_delivery(reply: &Value, subscription: &str) -> Option<Read> {
    if let Some(ms) = reply.as_int() {
        let due_in = u64::try_from(ms).ok()?;
        return Some(Read::Nothing {
            due_in: (due_in > 0).then(|| Duration::from_millis(due_in)),
        });
    }
    let [id, fields, deliveries] = reply.as_items()? else {
        return None;
    };
    let id = id.as_str()?;
    let deliveries = deliveries.as_int()?;
    let mut envelope = Envelope {
        message_id: format!("{id}@{subscription}"),
        payload: Vec::new(),
        properties: BTreeMap::new(),
        publish_time: Timestamp::UNIX_EPOCH,
        topic: topic_of(subscription).to_owned(),
        redelivery_count: u32::try_from(deliveries.saturating_sub(1).max(0)).unwrap_or(u32::MAX),
    };
    for pair in fields.as_items()?.chunks(2) {
        let [name, value] = pair else { return None };
        let value = value.as_bytes()?;
        match name.as_bytes()? {
            b"payload" => envelope.payload = value.to_vec(),
            b"time" => {
                let micros = std::str::from_utf8(value).ok()?.parse().ok()?;
                envelope.publish_time = Timestamp::from_unix_micros(micros);
            }
            name => {
                if let Some(name) = name.strip_prefix(b"p:") {
                    envelope.properties.insert(
                        String::from_utf8_lossy(name).into_owned(),
                        String::from_utf8_lossy(value).into_owned(),
                    );
                }
            }
        }
    }
    Some(Read::Message(envelope))
}

/// A wake notification's first byte for a publish: the topic follows.
const WAKE_TOPIC: char = 't';
/// A wake notification's first byte for a negative acknowledgement: the
/// subscription follows.
const WAKE_SUBSCRIPTION: char = 's';

/// The topic of a subscription named `"{topic}/{group}"` (the fake's rule).
fn topic_of(subscription: &str) -> &str {
    subscription
        .rsplit_once('/')
        .map_or(subscription, |(topic, _)| topic)
}

/// The effect a waiting consumer's errors name.
pub const CONSUME_EFFECT: &str = "Messaging.ConsumeMessage";

/// A command [`Consumers`] wants sent, by its token (give the reply back with
/// [`Consumers::handle_reply`]).
pub type ReadToken = u64;

/// What [`Consumers`] owes its driver.
#[derive(Debug)]
pub enum ConsumerOutput<W> {
    /// Send `command`; hand its reply to [`Consumers::handle_reply`] with `token`.
    Send {
        /// Names the command's reply.
        token: ReadToken,
        /// The command.
        command: Command,
    },
    /// The wait of `waiter` ends with `result` (a message, `Timeout`, or a read's
    /// error).
    Answer {
        /// The consumer.
        waiter: W,
        /// Its answer.
        result: Result<ConsumeOutcome, EffectError>,
    },
}

#[derive(Debug)]
struct Subscription<W> {
    /// Waiting consumers in the order they came (cancelled ones are removed).
    queue: VecDeque<W>,
    /// The read in flight, if any (at most one per subscription).
    reading: bool,
    /// Woken while its read was in flight: that read may have run before what woke
    /// it, so it reads once more when the read comes back.
    woken: bool,
    /// When time alone may make something available (a delayed entry coming due, an
    /// ack timeout): it reads then if nothing wakes it sooner.
    recheck_at: Option<Time>,
}

/// One waiting consumer.
#[derive(Clone, Debug)]
struct Waiting {
    subscription: String,
    deadline: Time,
    /// Whether a read of its subscription has come back since it came: a consumer
    /// times out only after one did, so a consume with a zero timeout still asks
    /// the server (and creates the group), as the fake's does.
    read: bool,
}

#[derive(Debug)]
enum Sent {
    Read(String),
    HandBack,
}

/// Consumers waiting for messages on Redis, without holding connections: a sans-IO
/// machine over [`MessagingAdapter`] (see the module docs for what it promises).
///
/// Inputs: [`consume`](Self::consume), [`cancel`](Self::cancel),
/// [`handle_notification`](Self::handle_notification) (a message on the
/// [`wake_channel`](MessagingAdapter::wake_channel)),
/// [`handle_listening`](Self::handle_listening) (that subscription is up or lost),
/// [`handle_published`](Self::handle_published) (a publish or negative
/// acknowledgement through this process), [`handle_reply`](Self::handle_reply),
/// [`handle_timeout`](Self::handle_timeout) (harmless early). Outputs:
/// [`poll_output`](Self::poll_output), then [`poll_timeout`](Self::poll_timeout).
/// **Drain rule**: after each input, drain `poll_output` until `None`, then read
/// `poll_timeout`.
#[derive(Debug)]
pub struct Consumers<W> {
    adapter: MessagingAdapter,
    /// Each waiting consumer.
    waiters: BTreeMap<W, Waiting>,
    deadlines: BTreeSet<(Time, W)>,
    /// Past their deadline, waiting for their first read to come back.
    overdue: Vec<W>,
    subscriptions: FxHashMap<String, Subscription<W>>,
    rechecks: BTreeSet<(Time, String)>,
    /// Whether the driver's subscription to the wake channel is up.
    listening: bool,
    sent: FxHashMap<ReadToken, Sent>,
    next_token: ReadToken,
    reads: u64,
    outputs: VecDeque<ConsumerOutput<W>>,
}

impl<W: Copy + Ord + std::fmt::Debug> Consumers<W> {
    /// No consumer waits yet.
    pub fn new(adapter: MessagingAdapter) -> Consumers<W> {
        Consumers {
            adapter,
            waiters: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            overdue: Vec::new(),
            subscriptions: FxHashMap::new(),
            rechecks: BTreeSet::new(),
            listening: false,
            sent: FxHashMap::new(),
            next_token: 0,
            reads: 0,
            outputs: VecDeque::new(),
        }
    }

    /// The adapter.
    pub fn adapter(&self) -> &MessagingAdapter {
        &self.adapter
    }

    /// How many consumers wait.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// How many commands are in flight.
    pub fn in_flight(&self) -> usize {
        self.sent.len()
    }

    /// How many reads it has sent, ever (for metrics, and to see that waiting costs
    /// nothing while nothing happens).
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// The consumer `waiter` waits for a message of `request.subscription` until
    /// `now + timeout_ms`. A waiter already waiting is left as it is.
    pub fn consume(&mut self, now: Time, waiter: W, request: &ConsumeMessage) {
        if self.waiters.contains_key(&waiter) {
            return;
        }
        let deadline = now.saturating_add(Duration::from_millis(request.timeout_ms));
        self.waiters.insert(
            waiter,
            Waiting {
                subscription: request.subscription.clone(),
                deadline,
                read: false,
            },
        );
        self.deadlines.insert((deadline, waiter));
        let subscription = self
            .subscriptions
            .entry(request.subscription.clone())
            .or_insert_with(|| Subscription {
                queue: VecDeque::new(),
                reading: false,
                woken: false,
                recheck_at: None,
            });
        subscription.queue.push_back(waiter);
        self.read(&request.subscription);
    }

    /// The consumer `waiter` stops waiting (its effect was cancelled). Returns whether
    /// it was waiting; a read on its behalf that finds a message now hands it to the
    /// next consumer, or back to the group.
    pub fn cancel(&mut self, waiter: W) -> bool {
        let Some(waiting) = self.waiters.remove(&waiter) else {
            return false;
        };
        self.deadlines.remove(&(waiting.deadline, waiter));
        self.leave(&waiting.subscription, waiter);
        self.forget_if_idle(&waiting.subscription);
        true
    }

    /// A message on the [`wake_channel`](MessagingAdapter::wake_channel), from any
    /// process: a publish wakes its topic's subscriptions, a negative
    /// acknowledgement its subscription (each with consumers waiting reads at once,
    /// or once more after the read in flight). Anything else is ignored.
    pub fn handle_notification(&mut self, message: &[u8]) {
        let Ok(message) = std::str::from_utf8(message) else {
            return;
        };
        if let Some(topic) = message.strip_prefix(WAKE_TOPIC) {
            self.wake_topic(topic);
        } else if let Some(subscription) = message.strip_prefix(WAKE_SUBSCRIPTION) {
            self.wake(subscription);
        }
    }

    /// The driver's subscription to the wake channel is up (`true`: confirmed, after
    /// every reconnection too) or lost (`false`). On coming up, every subscription
    /// with consumers waiting reads once, for what was published while nobody
    /// listened.
    pub fn handle_listening(&mut self, listening: bool) {
        self.listening = listening;
        if listening {
            let names: Vec<String> = self.subscriptions.keys().cloned().collect();
            for name in names {
                self.wake(&name);
            }
        }
    }

    /// A publish to `topic` or a negative acknowledgement of one of its deliveries
    /// went through this process. While listening, its notification comes through
    /// the wake channel and this does nothing; otherwise the topic's subscriptions
    /// wake now, so this process's own consumers never wait for the subscription.
    pub fn handle_published(&mut self, topic: &str) {
        if !self.listening {
            self.wake_topic(topic);
        }
    }

    /// Whether the wake channel is listened to.
    pub fn listening(&self) -> bool {
        self.listening
    }

    fn wake_topic(&mut self, topic: &str) {
        let names: Vec<String> = self
            .subscriptions
            .keys()
            .filter(|name| topic_of(name) == topic)
            .cloned()
            .collect();
        for name in names {
            self.wake(&name);
        }
    }

    /// Something may be available to `name`: it reads now, or once more after the
    /// read in flight.
    fn wake(&mut self, name: &str) {
        let Some(subscription) = self.subscriptions.get_mut(name) else {
            return;
        };
        if subscription.reading {
            subscription.woken = true;
        } else {
            self.read(name);
        }
    }

    /// The reply to the command sent with `token`, or the driver's error for it (a
    /// lost connection, a timeout: see [`CONSUME_EFFECT`] for the effect to name).
    pub fn handle_reply(&mut self, now: Time, token: ReadToken, reply: Result<Value, EffectError>) {
        let Some(Sent::Read(name)) = self.sent.remove(&token) else {
            return;
        };
        if let Some(subscription) = self.subscriptions.get_mut(&name) {
            subscription.reading = false;
            for waiter in &subscription.queue {
                if let Some(waiting) = self.waiters.get_mut(waiter) {
                    waiting.read = true;
                }
            }
        }
        let read = reply.and_then(|value| {
            read_delivery(&value, &name).ok_or_else(|| unexpected(CONSUME_EFFECT, &value))
        });
        let mut due_in = None;
        match read {
            Ok(Read::Message(envelope)) => match self.first_waiter(&name) {
                Some(waiter) => {
                    self.end_wait(waiter, Ok(ConsumeOutcome::Message(Box::new(envelope))));
                    // There may be more: the next consumer reads at once.
                    self.read(&name);
                }
                None => self.send_hand_back(&envelope.message_id),
            },
            Ok(Read::Nothing { due_in: due }) => due_in = due,
            Err(e) => {
                while let Some(waiter) = self.first_waiter(&name) {
                    self.end_wait(waiter, Err(e.clone()));
                }
            }
        }
        self.handle_timeout(now);
        if self.subscriptions.get(&name).is_some_and(|s| s.woken) {
            self.read(&name);
        } else if let Some(due_in) = due_in {
            self.recheck_at(now.saturating_add(due_in), &name);
        }
        self.forget_if_idle(&name);
    }

    /// Time `now` has come: consumers past their deadline hear `Timeout`; waiting
    /// subscriptions whose recheck is due (a delay coming due, an ack timeout) read
    /// again.
    pub fn handle_timeout(&mut self, now: Time) {
        while let Some(&(deadline, waiter)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(waiting) = self.waiters.get(&waiter) else {
                continue;
            };
            if waiting.read {
                let subscription = waiting.subscription.clone();
                self.end_wait(waiter, Ok(ConsumeOutcome::Timeout));
                self.forget_if_idle(&subscription);
            } else {
                // Back once its first read is: then it is past due.
                self.overdue.push(waiter);
            }
        }
        if !self.overdue.is_empty() {
            let overdue = std::mem::take(&mut self.overdue);
            for waiter in overdue {
                match self.waiters.get(&waiter) {
                    Some(waiting) if waiting.read => {
                        let subscription = waiting.subscription.clone();
                        self.end_wait(waiter, Ok(ConsumeOutcome::Timeout));
                        self.forget_if_idle(&subscription);
                    }
                    Some(_) => self.overdue.push(waiter),
                    None => {}
                }
            }
        }
        while let Some((at, _)) = self.rechecks.first() {
            if *at > now {
                break;
            }
            let Some((_, name)) = self.rechecks.pop_first() else {
                break;
            };
            if let Some(subscription) = self.subscriptions.get_mut(&name) {
                subscription.recheck_at = None;
            }
            self.read(&name);
            self.forget_if_idle(&name);
        }
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<ConsumerOutput<W>> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work.
    pub fn poll_timeout(&self) -> Option<Time> {
        let deadline = self.deadlines.first().map(|(at, _)| *at);
        let recheck = self.rechecks.first().map(|(at, _)| *at);
        match (deadline, recheck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends a read for `name` if a consumer waits and none is in flight.
    fn read(&mut self, name: &str) {
        let Some(subscription) = self.subscriptions.get_mut(name) else {
            return;
        };
        if subscription.reading || subscription.queue.is_empty() {
            return;
        }
        subscription.reading = true;
        subscription.woken = false;
        if let Some(at) = subscription.recheck_at.take() {
            self.rechecks.remove(&(at, name.to_owned()));
        }
        let command = self.adapter.read(name);
        self.reads += 1;
        self.send(Sent::Read(name.to_owned()), command);
    }

    fn send_hand_back(&mut self, message_id: &str) {
        if let Some(command) = self.adapter.hand_back(message_id) {
            self.send(Sent::HandBack, command);
        }
    }

    fn send(&mut self, sent: Sent, command: Command) {
        let token = self.next_token;
        self.next_token += 1;
        self.sent.insert(token, sent);
        self.outputs
            .push_back(ConsumerOutput::Send { token, command });
    }

    /// `name` reads at `at` (or sooner) unless a read is in flight or nobody waits.
    fn recheck_at(&mut self, at: Time, name: &str) {
        let Some(subscription) = self.subscriptions.get_mut(name) else {
            return;
        };
        if subscription.queue.is_empty() || subscription.reading {
            return;
        }
        if let Some(before) = subscription.recheck_at {
            if before <= at {
                return;
            }
            self.rechecks.remove(&(before, name.to_owned()));
        }
        subscription.recheck_at = Some(at);
        self.rechecks.insert((at, name.to_owned()));
    }

    fn first_waiter(&self, name: &str) -> Option<W> {
        self.subscriptions.get(name)?.queue.front().copied()
    }

    /// Answers `waiter` and forgets it.
    fn end_wait(&mut self, waiter: W, result: Result<ConsumeOutcome, EffectError>) {
        if let Some(waiting) = self.waiters.remove(&waiter) {
            self.deadlines.remove(&(waiting.deadline, waiter));
            self.leave(&waiting.subscription, waiter);
        }
        self.outputs
            .push_back(ConsumerOutput::Answer { waiter, result });
    }

    fn leave(&mut self, name: &str, waiter: W) {
        if let Some(subscription) = self.subscriptions.get_mut(name) {
            if subscription.queue.front() == Some(&waiter) {
                subscription.queue.pop_front();
            } else {
                subscription.queue.retain(|w| *w != waiter);
            }
        }
    }

    /// Drops the books of a subscription nobody waits on and nothing reads.
    fn forget_if_idle(&mut self, name: &str) {
        let idle = self
            .subscriptions
            .get(name)
            .is_some_and(|s| s.queue.is_empty() && !s.reading);
        if idle {
            if let Some(Subscription {
                recheck_at: Some(at),
                ..
            }) = self.subscriptions.remove(name)
            {
                self.rechecks.remove(&(at, name.to_owned()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(subscription: &str, timeout_ms: u64) -> ConsumeMessage {
        ConsumeMessage {
            subscription: subscription.into(),
            timeout_ms,
        }
    }

    /// A consume reply holding one entry delivered `deliveries` times.
    fn entry(id: &str, payload: &str, deliveries: i64) -> Value {
        let fields = [
            "payload",
            payload,
            "time",
            "1700000000000123",
            "p:kind",
            "k",
        ]
        .iter()
        .map(|f| Value::Bulk(f.as_bytes().to_vec()))
        .collect();
        Value::Array(vec![
            Value::Bulk(id.as_bytes().to_vec()),
            Value::Array(fields),
            Value::Int(deliveries),
        ])
    }

    fn outputs(consumers: &mut Consumers<u32>) -> Vec<ConsumerOutput<u32>> {
        std::iter::from_fn(|| consumers.poll_output()).collect()
    }

    /// The tokens of the commands sent, and whether each is a read (not a hand-back).
    fn sent(outputs: &[ConsumerOutput<u32>]) -> Vec<(ReadToken, bool)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                ConsumerOutput::Send { token, command } => {
                    let text = format!("{command:?}");
                    Some((*token, text.contains("XREADGROUP")))
                }
                ConsumerOutput::Answer { .. } => None,
            })
            .collect()
    }

    fn answers(outputs: Vec<ConsumerOutput<u32>>) -> Vec<(u32, String)> {
        outputs
            .into_iter()
            .filter_map(|o| match o {
                ConsumerOutput::Answer { waiter, result } => Some((
                    waiter,
                    match result {
                        Ok(ConsumeOutcome::Message(m)) => format!(
                            "{} {} {} {:?}",
                            m.message_id,
                            String::from_utf8_lossy(&m.payload),
                            m.redelivery_count,
                            m.properties
                        ),
                        Ok(ConsumeOutcome::Timeout) => "timeout".to_owned(),
                        Err(e) => format!("error {}", e.retryable),
                    },
                )),
                ConsumerOutput::Send { .. } => None,
            })
            .collect()
    }

    #[test]
    fn many_waiters_of_one_subscription_share_one_read_and_are_served_in_order() {
        let mut consumers = Consumers::new(MessagingAdapter::new("p:"));
        for waiter in 0..3 {
            consumers.consume(Time::ZERO, waiter, &request("t/g", 1000));
        }
        let out = outputs(&mut consumers);
        let reads = sent(&out);
        assert_eq!(reads, [(0, true)], "one read for three waiters");
        consumers.handle_reply(Time::from_millis(1), 0, Ok(entry("1-0", "x", 1)));
        let out = outputs(&mut consumers);
        assert_eq!(sent(&out), [(1, true)], "the next waiter reads at once");
        assert_eq!(
            answers(out),
            [(0, "1-0@t/g x 0 {\"kind\": \"k\"}".to_owned())]
        );
        // Nothing more, and nothing in flight: the two left send nothing until woken.
        consumers.handle_reply(Time::from_millis(2), 1, Ok(Value::Int(0)));
        assert!(outputs(&mut consumers).is_empty());
        assert_eq!(consumers.poll_timeout(), Some(Time::from_millis(1000)));
        consumers.handle_notification(b"tother");
        consumers.handle_notification(b"t/g");
        consumers.handle_notification(b"x");
        consumers.handle_notification(&[0xff]);
        assert!(outputs(&mut consumers).is_empty(), "not their topic");
        consumers.handle_notification(b"tt");
        assert_eq!(sent(&outputs(&mut consumers)), [(2, true)]);
        assert_eq!(consumers.waiting(), 2);
    }

    #[test]
    fn a_wake_during_a_read_reads_once_more_and_time_events_are_read_when_due() {
        let mut consumers = Consumers::new(MessagingAdapter::new("p:"));
        consumers.consume(Time::ZERO, 1, &request("t/g", 10_000));
        assert_eq!(sent(&outputs(&mut consumers)), [(0, true)]);
        // Two wakes while the read is on its way: one more read, after it.
        consumers.handle_notification(b"tt");
        consumers.handle_notification(b"st/g");
        assert!(outputs(&mut consumers).is_empty(), "one read in flight");
        consumers.handle_reply(Time::from_millis(1), 0, Ok(Value::Int(0)));
        assert_eq!(sent(&outputs(&mut consumers)), [(1, true)]);
        // Nothing, but a delayed entry is due in 400 ms: read then, not before.
        consumers.handle_reply(Time::from_millis(2), 1, Ok(Value::Int(400)));
        assert!(outputs(&mut consumers).is_empty());
        assert_eq!(consumers.poll_timeout(), Some(Time::from_millis(402)));
        consumers.handle_timeout(Time::from_millis(401));
        assert!(outputs(&mut consumers).is_empty(), "not yet");
        consumers.handle_timeout(Time::from_millis(402));
        assert_eq!(sent(&outputs(&mut consumers)), [(2, true)]);
        // A wake before the recheck reads at once and drops the recheck.
        consumers.handle_reply(Time::from_millis(403), 2, Ok(Value::Int(5000)));
        assert_eq!(consumers.poll_timeout(), Some(Time::from_millis(5403)));
        consumers.handle_notification(b"st/g");
        assert_eq!(sent(&outputs(&mut consumers)), [(3, true)]);
        assert_eq!(consumers.poll_timeout(), Some(Time::from_millis(10_000)));
    }

    #[test]
    fn local_publishes_wake_only_while_not_listening_and_listening_again_wakes_all() {
        let mut consumers = Consumers::new(MessagingAdapter::new("p:"));
        consumers.consume(Time::ZERO, 1, &request("a/g", 10_000));
        consumers.consume(Time::ZERO, 2, &request("b/g", 10_000));
        let out = outputs(&mut consumers);
        for (token, _) in sent(&out) {
            consumers.handle_reply(Time::from_millis(1), token, Ok(Value::Int(0)));
        }
        assert!(!consumers.listening());
        consumers.handle_published("a");
        assert_eq!(sent(&outputs(&mut consumers)), [(2, true)]);
        consumers.handle_reply(Time::from_millis(2), 2, Ok(Value::Int(0)));
        consumers.handle_listening(true);
        assert_eq!(
            sent(&outputs(&mut consumers)).len(),
            2,
            "every waiting subscription reads once"
        );
        consumers.handle_reply(Time::from_millis(3), 3, Ok(Value::Int(0)));
        consumers.handle_reply(Time::from_millis(3), 4, Ok(Value::Int(0)));
        consumers.handle_published("a");
        assert!(
            outputs(&mut consumers).is_empty(),
            "the notification will come"
        );
        consumers.handle_listening(false);
        assert!(outputs(&mut consumers).is_empty());
        consumers.handle_published("b");
        assert_eq!(sent(&outputs(&mut consumers)), [(5, true)]);
    }

    #[test]
    fn a_read_whose_waiter_gave_up_hands_its_message_back() {
        let mut consumers = Consumers::new(MessagingAdapter::new("p:"));
        consumers.consume(Time::ZERO, 7, &request("t/g", 1000));
        assert_eq!(sent(&outputs(&mut consumers)), [(0, true)]);
        assert!(consumers.cancel(7));
        assert!(!consumers.cancel(7), "once");
        consumers.handle_reply(Time::from_millis(1), 0, Ok(entry("5-0", "x", 2)));
        let out = outputs(&mut consumers);
        assert_eq!(sent(&out), [(1, false)], "a hand-back, not a read");
        let ConsumerOutput::Send { command, .. } = &out[0] else {
            panic!("a command");
        };
        let text = format!("{command:?}");
        assert!(text.contains("ZADD") && text.contains("5-0"), "{text}");
        assert!(answers(out).is_empty());
        assert_eq!((consumers.waiting(), consumers.poll_timeout()), (0, None));
    }

    #[test]
    fn a_zero_timeout_still_waits_for_its_first_read_and_errors_end_every_wait() {
        let mut consumers = Consumers::new(MessagingAdapter::new("p:"));
        consumers.consume(Time::ZERO, 1, &request("t/g", 0));
        consumers.consume(Time::ZERO, 2, &request("t/g", 5000));
        outputs(&mut consumers);
        consumers.handle_timeout(Time::ZERO);
        assert!(
            answers(outputs(&mut consumers)).is_empty(),
            "not before the read"
        );
        consumers.handle_reply(Time::from_millis(1), 0, Ok(Value::Int(0)));
        assert_eq!(
            answers(outputs(&mut consumers)),
            [(1, "timeout".to_owned())]
        );
        consumers.handle_notification(b"tt");
        let out = outputs(&mut consumers);
        let token = sent(&out)[0].0;
        let lost = EffectError::connection_lost(CONSUME_EFFECT, "gone");
        consumers.handle_reply(Time::from_millis(52), token, Err(lost));
        assert_eq!(
            answers(outputs(&mut consumers)),
            [(2, "error true".to_owned())]
        );
        assert_eq!(consumers.poll_timeout(), None);
    }

    #[test]
    fn publishes_and_acknowledgements_become_scripts_and_their_replies_answers() {
        let adapter = MessagingAdapter::new("p:").with_max_payload_bytes(3);
        let publish = |topic: &str, payload: &[u8]| {
            MessagingRequest::PublishMessage(Box::new(PublishMessage {
                topic: topic.into(),
                payload: payload.to_vec(),
                properties: BTreeMap::new(),
                dedup_key: Some("k".into()),
            }))
        };
        let Ok(MessagingPlan::Send(command, pending)) = adapter.plan(&publish("t", b"abc")) else {
            panic!("a command");
        };
        let text = format!("{command:?}");
        assert!(
            text.contains("p:stream:t")
                && text.contains("p:dedup:1:t:k")
                && text.contains("\"p:wake\" \"tt\""),
            "{text}"
        );
        assert_eq!(
            adapter.response(pending, Ok(Value::Bulk(b"9-0".to_vec()))),
            Ok(MessagingResponse::PublishMessage(
                PublishOutcome::Published {
                    message_id: "9-0".into()
                }
            ))
        );
        for (topic, payload) in [("t", &b"abcd"[..]), ("", &b""[..])] {
            assert!(matches!(
                adapter.plan(&publish(topic, payload)),
                Ok(MessagingPlan::Answered(MessagingResponse::PublishMessage(
                    PublishOutcome::Rejected { .. }
                )))
            ));
        }
        let ack = |id: &str| {
            MessagingRequest::AcknowledgeMessage(crate::effect::AcknowledgeMessage {
                message_id: id.into(),
            })
        };
        for bogus in ["", "nope", "@t/g"] {
            assert_eq!(
                adapter.plan(&ack(bogus)),
                Ok(MessagingPlan::Answered(
                    MessagingResponse::AcknowledgeMessage(AckOutcome::UnknownMessage)
                )),
                "{bogus}"
            );
        }
        let Ok(MessagingPlan::Send(_, pending)) = adapter.plan(&ack("1-0@a/b/g")) else {
            panic!("a command");
        };
        assert_eq!(
            adapter.response(pending.clone(), Ok(Value::Int(0))),
            Ok(MessagingResponse::AcknowledgeMessage(
                AckOutcome::UnknownMessage
            ))
        );
        let e = adapter
            .response(pending, Ok(Value::Simple("what".into())))
            .expect_err("unexpected");
        assert_eq!((e.kind, e.retryable), (ErrorKind::Protocol, false));
    }
}
