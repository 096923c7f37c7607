//! In-memory fakes of the services behind the effect families: plain structs with no
//! IO, no clock and no OS randomness (cargo feature `memory`).
//!
//! The deterministic simulator (`effectful-test`, which re-exports this module as
//! `effectful_test::fake`) runs programs against them, and a driver can host them as
//! in-memory backends, so a program runs with no database or broker at all.
//!
//! Each fake answers its family's requests the way the real service would, constraint
//! violations and expiry included:
//! - [`FakeDatabase`]: PostgreSQL tables `users` and `chat_messages`;
//! - [`FakeCache`]: Redis keys with a time to live and LRU eviction;
//! - [`FakeBroker`]: Pulsar-like topics, consumer groups, acknowledgements;
//! - [`FakeStorage`]: S3-like buckets and objects;
//! - [`FakeAuth`]: opaque tokens with expiry and revocation, salted password hashes;
//! - [`FakeMetrics`]: a Prometheus-like registry;
//! - [`FakeSystem`]: the wall clock and fresh UUIDs.
//!
//! # Time and randomness
//! Every method that depends on time takes `now`, the driver's monotonic [`Time`].
//! Where a wall-clock [`Timestamp`] is needed (row timestamps, publish times, token
//! expiry), a fake derives it as `wall_epoch + now` (see [`wall_time`]); the epoch is
//! [`DEFAULT_WALL_EPOCH`] unless set with the fake's `with_wall_epoch`. Random values
//! (UUIDs, tokens, salts) come from an [`Rng`] the fake owns, seeded by
//! whoever builds it, so a run is fixed by its seed.
//!
//! # All of them at once
//! [`Services`] bundles one of each and routes any [`Request`] to the right fake. Four
//! kinds of request are left to the driver, see [`Handled`]: `ConsumeMessage`, which
//! may have to wait for a message, `WaitRoomMessages`, which may have to wait for a
//! chat room message, WebSocket effects, which go to the program's client, and
//! `WaitForShutdown`, which waits for the driver's shutdown.

use crate::effect::Transaction;
use crate::effect::{ConsumeMessage, WaitRoomMessages, WebSocketRequest};
use crate::effect::{DatabaseRequest, MessagingRequest, Request, Response, SystemRequest};
use crate::{EffectError, EffectId, ProgramId, Rng, Time, Timestamp};

mod auth;
mod cache;
mod database;
mod messaging;
mod metrics;
mod parking;
mod storage;
mod system;

pub use auth::{FakeAuth, IssuedToken};
pub use cache::FakeCache;
pub use database::FakeDatabase;
pub use messaging::{DEFAULT_MAX_PAYLOAD_BYTES, FakeBroker, PublishedMessage};
pub use metrics::{DEFAULT_MAX_SERIES, FakeMetrics, MetricKind, RegisterError};
pub use parking::Consumed;
pub use storage::{FakeStorage, MAX_KEYS_LIMIT};
pub use system::FakeSystem;

/// The default wall-clock instant of simulated [`Time::ZERO`]: 2026-01-01T00:00:00Z.
pub const DEFAULT_WALL_EPOCH: Timestamp = Timestamp::from_unix_secs(1_767_225_600);

/// The wall-clock instant of simulated time `now`: `wall_epoch + now`, saturating.
pub fn wall_time(wall_epoch: Timestamp, now: Time) -> Timestamp {
    wall_epoch.saturating_add(now.since_epoch())
}

/// The program that performed a request, as a driver names it: for what must end
/// with that program (an interactive transaction). `engine` tells apart programs of
/// different engines sharing one set of services (a tokio runtime's shards); a
/// driver with one engine passes 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Performer {
    /// The engine the program runs on.
    pub engine: u32,
    /// The program.
    pub program: ProgramId,
}

impl Performer {
    /// The program that asked for effect `id`, on engine `engine`.
    pub fn of(engine: u32, id: EffectId) -> Performer {
        Performer {
            engine,
            program: id.program(),
        }
    }
}

/// What [`Services::handle`] made of a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Handled {
    /// Answered now.
    Done(Result<Response, EffectError>),
    /// A consumer asks for a message: the driver calls [`FakeBroker::consume`] with
    /// the effect's id, which answers at once or parks the consumer at the broker
    /// (see the broker's drain rule).
    Consume(ConsumeMessage),
    /// A wait for chat room messages: the driver calls [`FakeDatabase::wait_room`]
    /// with the effect's id, which answers at once or parks the wait until a post
    /// (see the database's drain rule).
    WaitRoom(WaitRoomMessages),
    /// A WebSocket effect, for the simulated client of the program that asked.
    WebSocket(WebSocketRequest),
    /// `System.WaitForShutdown`: the driver answers it when its shutdown begins. A
    /// simulation never shuts down, so the simulator leaves it unanswered until the
    /// program cancels it.
    AwaitShutdown,
}

/// One fake of every service, answering any built-in request except WebSocket ones
/// and the waiting part of `ConsumeMessage` and `WaitRoomMessages`.
///
/// The fields are public: tests inspect and configure each fake directly (for example
/// `services.metrics = FakeMetrics::new()` to require registration).
///
/// # Seeding the world, and reading it back
/// Before a run (or between steps of one), set up:
/// - rows: [`FakeDatabase::create_user`], or any database request through
///   [`Services::handle`] (a message saved as the program would save it);
/// - cache entries with their time to live: [`FakeCache::seed`];
/// - topics and subscriptions: [`FakeBroker::subscribe`] (`"{topic}/{group}"`), and
///   messages already published through [`Services::handle`] with a `PublishMessage`;
/// - buckets and objects: [`FakeStorage::with_buckets`], then a `PutObject` through
///   [`Services::handle`]; tokens: [`FakeAuth::issue`]; metrics:
///   [`FakeMetrics::register`].
///
/// After it, query every fake:
/// - rows: [`FakeDatabase::users`], [`FakeDatabase::messages_for_user`],
///   [`FakeDatabase::message_count`];
/// - cache keys with their expiry: [`FakeCache::keys`], [`FakeCache::peek`],
///   [`FakeCache::ttl_remaining`];
/// - messages published to a topic: [`FakeBroker::published`], [`FakeBroker::topics`],
///   and per subscription [`FakeBroker::in_flight`] and
///   [`FakeBroker::unacknowledged`];
/// - objects: [`FakeStorage::buckets`], [`FakeStorage::objects`],
///   [`FakeStorage::object`];
/// - tokens: [`FakeAuth::tokens`]; metric series: [`FakeMetrics::names`],
///   [`FakeMetrics::series`], [`FakeMetrics::sample`].
#[derive(Clone, Debug)]
pub struct Services {
    /// Users and chat messages.
    pub database: FakeDatabase,
    /// Profiles and raw values.
    pub cache: FakeCache,
    /// Topics and subscriptions.
    pub broker: FakeBroker,
    /// Buckets and objects.
    pub storage: FakeStorage,
    /// Tokens and passwords; looks users up in `database`.
    pub auth: FakeAuth,
    /// Metrics; permissive (auto-registers on first use) by default.
    pub metrics: FakeMetrics,
    /// Wall clock and UUIDs.
    pub system: FakeSystem,
}

impl Services {
    /// Every fake with its defaults; each fake that needs randomness gets its own
    /// generator derived from `seed` ([`Rng::derive`]), so one family's use of
    /// randomness never shifts another's.
    pub fn new(seed: u64) -> Services {
        Services {
            database: FakeDatabase::new(Rng::derive(seed, "fake.database", 0)),
            cache: FakeCache::new(),
            broker: FakeBroker::new(),
            storage: FakeStorage::new(),
            auth: FakeAuth::new(Rng::derive(seed, "fake.auth", 0)),
            metrics: FakeMetrics::permissive(),
            system: FakeSystem::new(Rng::derive(seed, "fake.system", 0)),
        }
    }

    /// The same services with `wall_epoch` as the wall-clock instant of
    /// [`Time::ZERO`] in every fake.
    pub fn with_wall_epoch(mut self, wall_epoch: Timestamp) -> Services {
        self.database = self.database.with_wall_epoch(wall_epoch);
        self.broker = self.broker.with_wall_epoch(wall_epoch);
        self.storage = self.storage.with_wall_epoch(wall_epoch);
        self.auth = self.auth.with_wall_epoch(wall_epoch);
        self.system = self.system.with_wall_epoch(wall_epoch);
        self
    }

    /// Answers `request` at simulated time `now`, or hands it back to the simulator
    /// (see [`Handled`]). Performed by no program: a transaction it begins stays
    /// open until its `Commit` or `Rollback`; drivers use
    /// [`handle_from`](Self::handle_from).
    pub fn handle(&mut self, now: Time, request: Request) -> Handled {
        self.answer(now, None, request)
    }

    /// Answers `request` of `performer`'s program at simulated time `now`, or hands
    /// it back (see [`Handled`]); what must end with the program (an interactive
    /// transaction) ends when the driver calls
    /// [`program_ended`](Self::program_ended).
    pub fn handle_from(&mut self, now: Time, performer: Performer, request: Request) -> Handled {
        self.answer(now, Some(performer), request)
    }

    /// `performer`'s program ended, however it ended: the interactive transactions
    /// it left open are rolled back (as the PostgreSQL interpreter rolls back a
    /// pinned connection's transaction) and returned.
    pub fn program_ended(&mut self, performer: Performer) -> Vec<Transaction> {
        self.database.program_ended(performer)
    }

    fn answer(&mut self, now: Time, performer: Option<Performer>, request: Request) -> Handled {
        let response = match request {
            Request::WebSocket(request) => return Handled::WebSocket(request),
            Request::Messaging(MessagingRequest::ConsumeMessage(consume)) => {
                return Handled::Consume(consume);
            }
            Request::Messaging(request) => {
                Ok(Response::Messaging(self.broker.handle(now, request)))
            }
            Request::Database(DatabaseRequest::WaitRoomMessages(wait)) => {
                return Handled::WaitRoom(wait);
            }
            Request::Database(request) => match performer {
                Some(performer) => self.database.handle_from(now, performer, request),
                None => self.database.handle(now, request),
            }
            .map(Response::Database),
            Request::Cache(request) => self.cache.handle(now, request).map(Response::Cache),
            Request::Storage(request) => self.storage.handle(now, request).map(Response::Storage),
            Request::Auth(request) => Ok(Response::Auth(self.auth.handle(
                now,
                request,
                &self.database,
            ))),
            Request::System(SystemRequest::WaitForShutdown(_)) => return Handled::AwaitShutdown,
            Request::System(request) => Ok(Response::System(self.system.handle(now, request))),
            Request::Metrics(request) => Ok(Response::Metrics(self.metrics.handle(request))),
        };
        Handled::Done(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::*;

    #[test]
    fn default_wall_epoch_is_new_year_2026() {
        assert_eq!(
            DEFAULT_WALL_EPOCH.to_string(),
            "2026-01-01T00:00:00.000000Z"
        );
        let t = wall_time(DEFAULT_WALL_EPOCH, Time::from_millis(1_500));
        assert_eq!(t.to_string(), "2026-01-01T00:00:01.500000Z");
    }

    #[test]
    fn services_route_each_family_and_leave_consume_and_websocket_to_the_simulator() {
        let mut services = Services::new(7);
        let now = Time::from_secs(3);

        let created = services.handle(
            now,
            CreateUser {
                email: "a@x.io".into(),
                name: "A".into(),
                password_hash: "h".into(),
            }
            .into(),
        );
        let Handled::Done(Ok(Response::Database(DatabaseResponse::CreateUser(
            CreateUserOutcome::Created(user),
        )))) = created
        else {
            panic!("expected a created user, got {created:?}");
        };

        let by_email = services.handle(
            now,
            GetUserByEmail {
                email: "a@x.io".into(),
            }
            .into(),
        );
        assert_eq!(
            by_email,
            Handled::Done(Ok(Response::Auth(AuthResponse::GetUserByEmail(
                EmailLookup::Found(user)
            ))))
        );

        let clock = services.handle(now, GetCurrentTime {}.into());
        assert_eq!(
            clock,
            Handled::Done(Ok(Response::System(SystemResponse::GetCurrentTime(
                wall_time(DEFAULT_WALL_EPOCH, now)
            ))))
        );

        let consume = ConsumeMessage {
            subscription: "chat/workers".into(),
            timeout_ms: 10,
        };
        assert_eq!(
            services.handle(now, consume.clone().into()),
            Handled::Consume(consume)
        );

        let send = WebSocketRequest::SendText(SendText { text: "hi".into() });
        assert_eq!(
            services.handle(now, Request::WebSocket(send.clone())),
            Handled::WebSocket(send)
        );

        let recorded = services.handle(
            now,
            IncrementCounter {
                name: "hits".into(),
                labels: Labels::new(),
                value: 1.0,
            }
            .into(),
        );
        assert_eq!(
            recorded,
            Handled::Done(Ok(Response::Metrics(MetricsResponse::IncrementCounter(
                MetricOutcome::Recorded
            ))))
        );
    }

    #[test]
    fn services_with_the_same_seed_give_the_same_answers() {
        let run = |seed| {
            let mut services = Services::new(seed);
            let mut answers = Vec::new();
            for i in 0..3 {
                answers.push(services.handle(Time::from_secs(i), GenerateUuid {}.into()));
                answers.push(
                    services.handle(
                        Time::from_secs(i),
                        GenerateToken {
                            user_id: uuid::Uuid::nil(),
                            claims: Default::default(),
                            ttl_seconds: 60,
                        }
                        .into(),
                    ),
                );
            }
            answers
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }

    #[test]
    fn wall_epoch_applies_to_every_fake() {
        let epoch = Timestamp::from_unix_secs(1_000);
        let mut services = Services::new(1).with_wall_epoch(epoch);
        let now = Time::from_secs(5);
        let Handled::Done(Ok(Response::System(SystemResponse::GetCurrentTime(t)))) =
            services.handle(now, GetCurrentTime {}.into())
        else {
            panic!("expected the time");
        };
        assert_eq!(t, Timestamp::from_unix_secs(1_005));
        services.handle(
            now,
            PutObject {
                bucket: "b".into(),
                key: "k".into(),
                content: vec![1],
                metadata: Default::default(),
                content_type: None,
            }
            .into(),
        );
        let Handled::Done(Ok(Response::Storage(StorageResponse::GetObject(ObjectLookup::Found(
            object,
        ))))) = services.handle(
            now,
            GetObject {
                bucket: "b".into(),
                key: "k".into(),
            }
            .into(),
        )
        else {
            panic!("expected the object");
        };
        assert_eq!(object.last_modified, Timestamp::from_unix_secs(1_005));
    }
}
