//! The Messaging family on Redis Streams: publishes, acknowledgements and negative
//! acknowledgements are one pooled command each; waiting consumers park in one
//! [`Consumers`] machine per process, driven by a thread of its own, so a thousand
//! waiting programs hold no connection (see `effectful::redis::Consumers`). One
//! pub/sub connection per process, outside the pool, listens on the adapter's wake
//! channel and hands what it hears to the machine, which decides who reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use effectful::effect::{ConsumeMessage, ConsumeOutcome, MessagingResponse, PublishOutcome};
use effectful::redis::{
    CONSUME_EFFECT, ConsumerOutput, Consumers, MessagingAdapter, ReadToken, Value,
};
use effectful::{EffectError, EffectId, ProgramId, Time};

use super::pool::{Heard, Job, PoolError, RedisPool, Subscriber};

/// A waiting consumer: the interpreter it came through and its effect.
pub(super) type Waiter = (u64, EffectId);

/// Where a waiting consumer's answer goes.
pub(super) type AnswerFn = Box<dyn FnOnce(Result<ConsumeOutcome, EffectError>) + Send>;

enum Input {
    Consume {
        waiter: Waiter,
        request: ConsumeMessage,
        answer: AnswerFn,
    },
    Cancel(Waiter),
    ProgramEnded(u64, ProgramId),
    Reply(ReadToken, Result<Value, EffectError>),
    /// A publish or negative acknowledgement through this process, on this topic.
    Published(String),
    Heard(Heard),
}

/// The process's waiting consumers (cheap to clone).
#[derive(Clone, Debug)]
pub(super) struct ConsumerHub {
    tx: mpsc::Sender<Input>,
    adapter: Arc<MessagingAdapter>,
    /// Reads sent for waiting consumers, ever.
    reads: Arc<AtomicU64>,
    /// The thread ends (dropping its clone of the pool) once every handle is gone
    /// and no command of its own is in flight.
    _alive: Arc<()>,
}

impl ConsumerHub {
    /// Starts the hub's thread, reading through `pool`.
    pub(super) fn start(
        pool: RedisPool,
        adapter: MessagingAdapter,
    ) -> std::io::Result<ConsumerHub> {
        let (tx, rx) = mpsc::channel();
        let adapter = Arc::new(adapter);
        let alive = Arc::new(());
        let heard = tx.clone();
        let subscriber = pool.subscribe(
            adapter.wake_channel(),
            super::subscriber::client_name(adapter.prefix()),
            Box::new(move |h| {
                let _ = heard.send(Input::Heard(h));
            }),
        );
        let reads = Arc::new(AtomicU64::new(0));
        let hub = Hub {
            _subscriber: subscriber,
            reads: reads.clone(),
            alive: Arc::downgrade(&alive),
            consumers: Consumers::new((*adapter).clone()),
            answers: HashMap::new(),
            handed: HashMap::new(),
            pool,
            tx: tx.clone(),
            epoch: Instant::now(),
        };
        std::thread::Builder::new()
            .name("effectful-redis-consumers".to_owned())
            .spawn(move || hub.run(rx))?;
        Ok(ConsumerHub {
            tx,
            adapter,
            reads,
            _alive: alive,
        })
    }

    pub(super) fn adapter(&self) -> &Arc<MessagingAdapter> {
        &self.adapter
    }

    /// Reads sent for waiting consumers so far.
    pub(super) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// `waiter` waits for a message; `answer` hears the outcome once.
    pub(super) fn consume(&self, waiter: Waiter, request: ConsumeMessage, answer: AnswerFn) {
        self.send(Input::Consume {
            waiter,
            request,
            answer,
        });
    }

    /// `waiter` stops waiting; a message already on its way to it goes back.
    pub(super) fn cancel(&self, waiter: Waiter) {
        self.send(Input::Cancel(waiter));
    }

    /// The program ended: messages it received are its own (acknowledged or not).
    pub(super) fn program_ended(&self, interpreter: u64, program: ProgramId) {
        self.send(Input::ProgramEnded(interpreter, program));
    }

    /// A publish or negative acknowledgement on `topic` went through this process.
    pub(super) fn published(&self, topic: String) {
        self.send(Input::Published(topic));
    }

    fn send(&self, input: Input) {
        // The thread ends only when every sender is gone.
        let _ = self.tx.send(input);
    }

    /// What a Messaging answer means for waiting consumers: a publish or a negative
    /// acknowledgement may have made a message available.
    pub(super) fn after(&self, response: &MessagingResponse, topic: Option<String>) {
        let woke = matches!(
            response,
            MessagingResponse::PublishMessage(PublishOutcome::Published { .. })
                | MessagingResponse::NegativeAcknowledge(
                    effectful::effect::AckOutcome::Acknowledged
                )
        );
        if let (true, Some(topic)) = (woke, topic) {
            self.published(topic);
        }
    }
}

struct Hub {
    /// The wake channel's connection, ended with the hub.
    _subscriber: Subscriber,
    reads: Arc<AtomicU64>,
    consumers: Consumers<Waiter>,
    answers: HashMap<Waiter, AnswerFn>,
    /// Messages answered to a consumer whose program may not have read them yet: if
    /// it is cancelled meanwhile, the message goes back.
    handed: HashMap<Waiter, String>,
    pool: RedisPool,
    tx: mpsc::Sender<Input>,
    epoch: Instant,
    alive: Weak<()>,
}

impl Hub {
    fn now(&self) -> Time {
        Time::from_nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn run(mut self, rx: mpsc::Receiver<Input>) {
        loop {
            // Idle, it looks now and then whether its backend is gone.
            let wait = match self.consumers.poll_timeout() {
                Some(at) => at.saturating_duration_since(self.now()),
                None => Duration::from_secs(1),
            };
            let input = rx.recv_timeout(wait);
            match input {
                Ok(input) => self.handle(input),
                Err(RecvTimeoutError::Timeout) => {
                    if self.alive.strong_count() == 0 && self.consumers.in_flight() == 0 {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = self.now();
            self.consumers.handle_timeout(now);
            self.drain();
        }
    }

    fn handle(&mut self, input: Input) {
        let now = self.now();
        match input {
            Input::Consume {
                waiter,
                request,
                answer,
            } => {
                self.answers.insert(waiter, answer);
                self.consumers.consume(now, waiter, &request);
            }
            Input::Cancel(waiter) => {
                if self.consumers.cancel(waiter) {
                    self.answers.remove(&waiter);
                } else if let Some(message_id) = self.handed.remove(&waiter) {
                    self.hand_back(&message_id);
                }
            }
            Input::ProgramEnded(interpreter, program) => {
                self.handed
                    .retain(|(i, id), _| !(*i == interpreter && id.program() == program));
            }
            Input::Reply(token, reply) => self.consumers.handle_reply(now, token, reply),
            Input::Published(topic) => self.consumers.handle_published(&topic),
            Input::Heard(Heard::Listening(listening)) => {
                self.consumers.handle_listening(listening);
            }
            Input::Heard(Heard::Message(message)) => {
                self.consumers.handle_notification(&message);
            }
        }
    }

    fn drain(&mut self) {
        self.reads.store(self.consumers.reads(), Ordering::Relaxed);
        while let Some(output) = self.consumers.poll_output() {
            match output {
                ConsumerOutput::Send { token, command } => {
                    let tx = self.tx.clone();
                    self.pool.submit(Job {
                        command,
                        cancelled: None,
                        reply: Box::new(move |reply| {
                            let reply = reply.map_err(|e| e.effect_error(CONSUME_EFFECT));
                            let _ = tx.send(Input::Reply(token, reply));
                        }),
                    });
                }
                ConsumerOutput::Answer { waiter, result } => {
                    if let Ok(ConsumeOutcome::Message(envelope)) = &result {
                        self.handed.insert(waiter, envelope.message_id.clone());
                    }
                    if let Some(answer) = self.answers.remove(&waiter) {
                        answer(result);
                    }
                }
            }
        }
    }

    fn hand_back(&self, message_id: &str) {
        if let Some(command) = self.consumers.adapter().hand_back(message_id) {
            let topic = topic_of_delivery(message_id);
            let tx = self.tx.clone();
            self.pool.submit(Job {
                command,
                cancelled: None,
                reply: Box::new(move |reply: Result<Value, PoolError>| {
                    if reply.is_ok() {
                        if let Some(topic) = topic {
                            let _ = tx.send(Input::Published(topic));
                        }
                    }
                }),
            });
        }
    }
}

/// The topic of a subscription named `"{topic}/{group}"`.
pub(super) fn topic_of(subscription: &str) -> &str {
    subscription
        .rsplit_once('/')
        .map_or(subscription, |(topic, _)| topic)
}

/// The topic of a delivery id `{entry}@{subscription}`.
pub(super) fn topic_of_delivery(message_id: &str) -> Option<String> {
    let (_, subscription) = message_id.split_once('@')?;
    Some(topic_of(subscription).to_owned())
}
