//! In-memory backends on tokio: the core's in-memory services
//! ([`effectful::memory`], the same ones the simulator runs against) as interpreters,
//! so a program runs on the runtime with no PostgreSQL, Redis or broker at all.
//!
//! # One world per process
//! A [`MemoryWorld`] is one set of services behind a `Mutex`, shared by every shard's
//! interpreters: a user created through one shard is found through another. Each
//! effect is answered inline, under the lock, in the shard's drain loop; the fakes
//! answer in microseconds, so a lock held that long costs less than handing each
//! effect to a task that owns the world (two cross-thread handoffs and a task wake per
//! effect).
//!
//! # Waiting consumers
//! A `ConsumeMessage` with nothing available waits in the world until a publish or a
//! negative acknowledgement makes a message available, its redelivery time comes, or
//! its `timeout_ms` passes; it is then answered from whichever shard made that happen,
//! through the consumer's shard's [`Replier`]. A consumer that stops waiting (its
//! program timed out, ended, or was cancelled) before its message reached it hands the
//! message back, as the simulator's broker does.
//!
//! # Waiting for chat room messages
//! A `WaitRoomMessages` with no message after its `seq` waits in the world until a
//! `PostRoomMessage` (from any shard) stores one; it is then answered through its
//! shard's [`Replier`]. A wait that is cancelled (its program raced it against its
//! client and the client won, timed out, or ended) is simply dropped: the messages
//! stay in the room, and the program asks again by `seq`.
//!
//! # Time, randomness and metrics
//! The services take `now` from the runtime's one [`Clock`]; their
//! wall clock starts at the OS's wall clock when the first shard starts. Their
//! randomness (user ids, tokens, salts) is seeded from OS entropy, never from the
//! logged engine seed, unless a test fixes it with [`MemoryWorld::with_services`].
//! `QueryMetrics` answers from the world's registry and the runtime's own counters
//! (`effectful_effects_total`, `effectful_programs_total`,
//! `effectful_programs_in_progress`).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use effectful::effect::{
    ConsumeMessage, ConsumeOutcome, DatabaseRequest, DatabaseResponse, Envelope, MessagingRequest,
    MessagingResponse, MetricsRequest, MetricsResponse, NegativeAcknowledge, QueryMetrics, Request,
    Response, WaitRoomMessages,
};
use effectful::memory::{Handled, Performer, Services};
use effectful::{EffectId, Family, ProgramId, Std, Time};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::clock::Clock;
use crate::entropy::{self, EntropyError};
use crate::interpreter::{Interpreter, Replier, ShardContext, ShardCx, SplitStd, misrouted};
use crate::runtime::RuntimeBuilder;
use crate::stats::RuntimeStats;

/// The families an in-memory world serves.
pub const MEMORY_FAMILIES: [&str; 6] = [
    "Database",
    "Cache",
    "Messaging",
    "Storage",
    "Auth",
    "Metrics",
];

/// One in-memory world for the whole process, shared by every shard (cheap to clone).
pub struct MemoryWorld<F: Family = Std> {
    inner: Arc<Mutex<World<F>>>,
}

impl<F: Family> Clone for MemoryWorld<F> {
    fn clone(&self) -> Self {
        MemoryWorld {
            inner: self.inner.clone(),
        }
    }
}

impl<F: Family> std::fmt::Debug for MemoryWorld<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryWorld")
    }
}

struct World<F: Family> {
    services: Services,
    /// Whether the services' wall clock was set from the OS yet.
    wall_clock_set: bool,
    /// Consumers waiting for a message, in the order they came.
    parked: Vec<Parked<F>>,
    /// Messages handed to a consumer whose answer may not have reached it yet, by
    /// `(shard, effect)`: if the consumer stops waiting, the message goes back.
    handed: FxHashMap<(usize, EffectId), String>,
    /// Waits for chat room messages, in the order they came.
    room_waiters: Vec<RoomWaiter<F>>,
}

struct RoomWaiter<F: Family> {
    shard: usize,
    id: EffectId,
    request: WaitRoomMessages,
    replier: Replier<F>,
}

struct Parked<F: Family> {
    shard: usize,
    id: EffectId,
    request: ConsumeMessage,
    replier: Replier<F>,
}

impl MemoryWorld<Std> {
    /// A world with every service empty, seeded from OS entropy.
    pub fn new() -> Result<MemoryWorld<Std>, EntropyError> {
        Ok(MemoryWorld::with_services(Services::new(entropy::seed()?)))
    }
}

impl<F: SplitStd> MemoryWorld<F>
where
    F::Response: Send,
{
    /// A world of `services` (seeded as you choose, with data already in them). Its
    /// wall clock is set to the OS's when the first shard starts.
    pub fn with_services(services: Services) -> MemoryWorld<F> {
        MemoryWorld {
            inner: Arc::new(Mutex::new(World {
                services,
                wall_clock_set: false,
                parked: Vec::new(),
                handed: FxHashMap::default(),
                room_waiters: Vec::new(),
            })),
        }
    }

    /// Runs `f` on the services (to seed data, or to look at them in a test).
    pub fn with<T>(&self, f: impl FnOnce(&mut Services) -> T) -> T {
        f(&mut self.lock().services)
    }

    /// Registers this world's interpreter for every family it serves
    /// ([`MEMORY_FAMILIES`]) on `builder`. System comes from
    /// [`SystemInterpreter`](crate::SystemInterpreter) (the OS's clock and entropy);
    /// WebSocket from the server.
    pub fn register(&self, mut builder: RuntimeBuilder<F>) -> RuntimeBuilder<F> {
        for family in MEMORY_FAMILIES {
            let world = self.clone();
            builder = builder.interpreter(family, move |shard| world.interpreter(family, shard));
        }
        builder
    }

    /// One shard's interpreter of `family` (one of [`MEMORY_FAMILIES`]).
    pub fn interpreter(
        &self,
        family: &'static str,
        shard: &ShardContext<F>,
    ) -> MemoryInterpreter<F> {
        let mut world = self.lock();
        if !world.wall_clock_set {
            // The wall-clock instant of the runtime clock's epoch.
            let since = shard.clock().now().since_epoch();
            let since = i64::try_from(since.as_micros()).unwrap_or(i64::MAX);
            let epoch = effectful::Timestamp::from_unix_micros(
                entropy::wall_clock().unix_micros().saturating_sub(since),
            );
            let services = std::mem::replace(&mut world.services, Services::new(0));
            world.services = services.with_wall_epoch(epoch);
            world.wall_clock_set = true;
        }
        MemoryInterpreter {
            world: self.clone(),
            messaging: family == "Messaging",
            database: family == "Database",
            began: FxHashSet::default(),
            shard: shard.shard(),
            clock: shard.clock(),
            stats: shard.stats().clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, World<F>> {
        // A panic while the lock was held left the services as they were at that
        // point; the fakes keep their own invariants per call, so go on.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Serves one family from a [`MemoryWorld`] on one shard.
pub struct MemoryInterpreter<F: Family = Std> {
    world: MemoryWorld<F>,
    /// The Messaging instance also keeps the books of waiting consumers.
    messaging: bool,
    /// The Database instance also keeps the books of waits for room messages.
    database: bool,
    /// Programs of this shard that began an interactive transaction: only their end
    /// takes the world's lock to roll back what they left open.
    began: FxHashSet<ProgramId>,
    shard: usize,
    clock: Clock,
    stats: RuntimeStats,
}

impl<F: SplitStd> World<F>
where
    F::Response: Send,
{
    /// Hands available messages to waiting consumers, in the order they came.
    fn wake_consumers(&mut self, now: Time) {
        let mut i = 0;
        while i < self.parked.len() {
            match self
                .services
                .broker
                .try_consume(now, &self.parked[i].request)
            {
                Some(envelope) => {
                    let parked = self.parked.remove(i);
                    self.hand_over(parked.shard, parked.id, envelope, |id, answer| {
                        parked.replier.answer(id, Ok(answer));
                    });
                }
                None => i += 1,
            }
        }
    }

    /// Answers every wait for room messages that a post made answerable.
    fn wake_room_waiters(&mut self) {
        let database = &self.services.database;
        self.room_waiters.retain(|waiter| {
            let owed = database.room_after(waiter.request.after_seq, waiter.request.limit);
            if owed.is_empty() {
                return true;
            }
            let answer = Response::Database(DatabaseResponse::WaitRoomMessages(owed.to_vec()));
            waiter
                .replier
                .answer(waiter.id, Ok(F::embed_response(answer)));
            false
        });
    }

    fn hand_over(
        &mut self,
        shard: usize,
        id: EffectId,
        envelope: Envelope,
        answer: impl FnOnce(EffectId, F::Response),
    ) {
        self.handed.insert((shard, id), envelope.message_id.clone());
        answer(
            id,
            F::embed_response(Response::Messaging(MessagingResponse::ConsumeMessage(
                ConsumeOutcome::Message(envelope.into()),
            ))),
        );
    }

    /// A message goes back to its subscription, available again at once.
    fn give_back(&mut self, now: Time, message_id: String) {
        let nack = NegativeAcknowledge {
            message_id,
            delay_ms: 0,
        };
        self.services
            .broker
            .handle(now, MessagingRequest::NegativeAcknowledge(nack));
        self.wake_consumers(now);
    }
}

impl<F: SplitStd> MemoryInterpreter<F>
where
    F::Response: Send,
{
    /// This shard, as the services tell programs of different shards apart.
    fn engine(&self) -> u32 {
        u32::try_from(self.shard).unwrap_or(u32::MAX)
    }

    /// Wakes waiting consumers at `at` (a redelivery comes due), from a task of this
    /// shard.
    fn wake_at(&self, at: Time) {
        let world = self.world.clone();
        let clock = self.clock;
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(clock.instant(at).into()).await;
            world.lock().wake_consumers(clock.now());
        });
    }

    /// Ends a consumer's wait with `Timeout` at its deadline, if it still waits.
    fn time_out_at(&self, at: Time, id: EffectId) {
        let (world, clock, shard) = (self.world.clone(), self.clock, self.shard);
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(clock.instant(at).into()).await;
            let mut world = world.lock();
            if let Some(i) = world
                .parked
                .iter()
                .position(|p| p.shard == shard && p.id == id)
            {
                let parked = world.parked.remove(i);
                let answer =
                    Response::Messaging(MessagingResponse::ConsumeMessage(ConsumeOutcome::Timeout));
                parked.replier.answer(id, Ok(F::embed_response(answer)));
            }
        });
    }

    fn query_metrics(&self, world: &World<F>, query: &QueryMetrics) -> Response {
        let mut samples = world.services.metrics.query(query);
        let ours = self.stats.snapshot().samples().into_iter().filter(|s| {
            query.name.as_ref().is_none_or(|n| *n == s.name)
                && query.labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
        });
        samples.extend(ours);
        Response::Metrics(MetricsResponse::QueryMetrics(samples))
    }
}

impl<F: SplitStd> Interpreter<F> for MemoryInterpreter<F>
where
    F::Response: Send,
{
    fn perform(&mut self, cx: &mut ShardCx<'_, F>, id: EffectId, request: F::Request) {
        let request = match F::split_request(request) {
            Ok(request) => request,
            Err(own) => return cx.answer(id, Err(misrouted::<F>("in-memory", &own))),
        };
        let now = cx.now();
        let mut world = self.world.lock();
        // What this request may change for waiting consumers.
        let (wakes, redelivery) = match &request {
            Request::Messaging(MessagingRequest::PublishMessage(_)) => (true, None),
            Request::Messaging(MessagingRequest::NegativeAcknowledge(nack)) => (
                true,
                Some(now.saturating_add(Duration::from_millis(nack.delay_ms))),
            ),
            Request::Messaging(MessagingRequest::AcknowledgeMessage(ack)) => {
                world.handed.retain(|_, m| *m != ack.message_id);
                (false, None)
            }
            _ => (false, None),
        };
        if let Request::Database(DatabaseRequest::Begin(_)) = &request {
            self.began.insert(id.program());
        }
        let posts = matches!(
            request,
            Request::Database(DatabaseRequest::PostRoomMessage(_))
        );
        if let Request::Metrics(MetricsRequest::QueryMetrics(query)) = &request {
            let answer = self.query_metrics(&world, query);
            return cx.answer(id, Ok(F::embed_response(answer)));
        }
        let performer = Performer::of(self.engine(), id);
        match world.services.handle_from(now, performer, request) {
            Handled::Done(result) => {
                cx.answer(id, result.map(F::embed_response));
                if wakes {
                    world.wake_consumers(now);
                }
                if let Some(at) = redelivery.filter(|at| *at > now) {
                    self.wake_at(at);
                }
                if posts && !world.room_waiters.is_empty() {
                    world.wake_room_waiters();
                }
            }
            Handled::WaitRoom(wait) => {
                let owed = world
                    .services
                    .database
                    .room_after(wait.after_seq, wait.limit);
                if owed.is_empty() {
                    world.room_waiters.push(RoomWaiter {
                        shard: self.shard,
                        id,
                        request: wait,
                        replier: cx.replier(),
                    });
                } else {
                    let answer =
                        Response::Database(DatabaseResponse::WaitRoomMessages(owed.to_vec()));
                    cx.answer(id, Ok(F::embed_response(answer)));
                }
            }
            Handled::Consume(consume) => match world.services.broker.try_consume(now, &consume) {
                Some(envelope) => {
                    world.hand_over(self.shard, id, envelope, |id, answer| {
                        cx.answer(id, Ok(answer))
                    });
                }
                None => {
                    let deadline = now.saturating_add(Duration::from_millis(consume.timeout_ms));
                    if let Some(at) = world
                        .services
                        .broker
                        .next_redelivery_for(&consume.subscription)
                    {
                        self.wake_at(at.max(now));
                    }
                    world.parked.push(Parked {
                        shard: self.shard,
                        id,
                        request: consume,
                        replier: cx.replier(),
                    });
                    self.time_out_at(deadline, id);
                }
            },
            Handled::WebSocket(request) => {
                let request = F::embed_request(Request::WebSocket(request));
                cx.answer(id, Err(misrouted::<F>("in-memory", &request)));
            }
            Handled::AwaitShutdown => {
                let request = F::embed_request(Request::System(
                    effectful::effect::SystemRequest::WaitForShutdown(Default::default()),
                ));
                cx.answer(id, Err(misrouted::<F>("in-memory", &request)));
            }
        }
    }

    fn cancel(&mut self, cx: &mut ShardCx<'_, F>, id: EffectId) {
        let shard = self.shard;
        if self.database {
            let mut world = self.world.lock();
            world
                .room_waiters
                .retain(|w| !(w.shard == shard && w.id == id));
            return;
        }
        if !self.messaging {
            return;
        }
        let mut world = self.world.lock();
        world.parked.retain(|p| !(p.shard == shard && p.id == id));
        // Its message is on its way but will never be read: it goes back.
        if let Some(message_id) = world.handed.remove(&(shard, id)) {
            world.give_back(cx.now(), message_id);
        }
    }

    fn program_finished(&mut self, _cx: &mut ShardCx<'_, F>, program: ProgramId) {
        if self.database {
            // An interactive transaction it left open is rolled back, as the
            // PostgreSQL interpreter does.
            if self.began.remove(&program) {
                let performer = Performer {
                    engine: self.engine(),
                    program,
                };
                self.world.lock().services.program_ended(performer);
            }
            return;
        }
        if !self.messaging {
            return;
        }
        let shard = self.shard;
        let mut world = self.world.lock();
        if !world.handed.is_empty() {
            // Delivered and never acknowledged: the broker's books keep it in flight.
            world
                .handed
                .retain(|(s, id), _| !(*s == shard && id.program() == program));
        }
    }
}
