//! The Cache fake: Redis keys with a time to live on the simulated clock, and LRU
//! eviction when a maximum number of entries is set.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::effect::{
    CacheLookup, CacheRequest, CacheResponse, EXPIRED_MEMORY_SECONDS, GetCachedProfile,
    MAX_TTL_SECONDS, MissReason, ProfileData, PutCachedProfile, PutCachedValue, profile_key,
};
use crate::{Effect, EffectError, ErrorKind, Std, Time, duration_nanos};

#[derive(Clone, Debug)]
struct Entry {
    /// The key, shared with the LRU order and the expiry index (no copy per use).
    key: Arc<str>,
    value: Value,
    expires_at: Option<Time>,
    /// The entry's position in the LRU order (the key of `FakeCache::lru`).
    used: u64,
}

/// What a key holds.
#[derive(Clone, Debug)]
enum Value {
    /// Bytes, as `PutCachedValue` wrote them.
    Bytes(Vec<u8>),
    /// A profile, as `PutCachedProfile` wrote it. Redis would hold its JSON; the
    /// fake makes the JSON only when a value effect reads it.
    Profile(ProfileData),
}

impl Value {
    /// The bytes Redis holds.
    fn to_bytes(&self) -> Vec<u8> {
        match self {
            Value::Bytes(bytes) => bytes.clone(),
            // Cannot fail: a profile is strings and a UUID.
            Value::Profile(profile) => serde_json::to_vec(profile).unwrap_or_default(),
        }
    }

    /// The profile these bytes are, if they are one.
    fn to_profile(&self) -> Result<ProfileData, serde_json::Error> {
        match self {
            Value::Bytes(bytes) => serde_json::from_slice(bytes),
            Value::Profile(profile) => Ok(profile.clone()),
        }
    }
}

impl Entry {
    fn is_expired(&self, now: Time) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// A Redis stand-in: byte values under string keys, each with an optional time to live.
///
/// - A key whose time to live has run out reads once as [`MissReason::Expired`]; Redis
///   forgets it then, so the next read says [`MissReason::NotFound`]. A key expires at
///   `put time + ttl` exactly (`now >= expires_at`). Read more than
///   [`EXPIRED_MEMORY_SECONDS`] after its expiry, it reads as `NotFound` at once (the
///   Redis adapter remembers expiries that long).
/// - `ttl_remaining` is in whole seconds, rounded up (a live key never reports 0).
///   Note that Redis' own `TTL` rounds to the nearest second.
/// - Writing a key replaces its value and its time to live (as `SET` does); a time to
///   live of 0 seconds (or over [`MAX_TTL_SECONDS`]) is refused as Redis refuses
///   `SET ... EX 0`: an [`EffectError`] of kind `Service { code: "ERR" }`, not
///   retryable.
/// - With [`with_max_entries`](FakeCache::with_max_entries), a write that makes the
///   cache hold more keys first drops keys whose time ran out (they still read once as
///   `Expired`), then evicts the least recently used keys (read or written); an
///   evicted key reads once as [`MissReason::Evicted`], then as `NotFound`.
/// - Profiles are JSON (serde_json) under [`profile_key`], so the profile and the
///   value effects see the same keys: `InvalidateCache` on a profile key forgets the
///   profile. A value under a profile key that is not a profile makes
///   `GetCachedProfile` fail with an [`EffectError`] of kind `Protocol`, not retryable.
/// - `DeleteCachedProfile` and `InvalidateCache` answer whether a live key was there.
///
/// # Commands of one's own
/// `RedisCommand` runs in a keyspace of its own (on Redis its keys are not under the
/// Cache effects' prefix either), with Redis' replies and error texts for this
/// subset, names in any case: `GET`, `SET key value [EX s | PX ms] [NX | XX]`,
/// `DEL key...`, `EXISTS key...`, `INCR`, `INCRBY`, `DECR`, `DECRBY`, `EXPIRE key s`,
/// `TTL` (rounded to the nearest second, as Redis does), `HSET key field value...`,
/// `HGET`, `HGETALL` (fields in the order first set), `HDEL key field...`. Any other
/// command fails with a non-retryable `Unavailable` error saying `not supported by
/// the in-memory cache: <COMMAND>`. Keys expire on the simulated clock; no eviction.
#[derive(Clone, Debug, Default)]
pub struct FakeCache {
    entries: BTreeMap<Arc<str>, Entry>,
    /// Keys by last use, least recent first.
    lru: BTreeMap<u64, Arc<str>>,
    /// Keys that have a time to live, soonest expiry first.
    expiries: BTreeSet<(Time, Arc<str>)>,
    /// Keys the cache dropped by itself, and why; each reads once as that miss.
    dropped: BTreeMap<String, MissReason>,
    max_entries: Option<usize>,
    clock: u64,
    evictions: u64,
    /// The keys of `RedisCommand`s, apart from the Cache effects' keys.
    commands: commands::Keyspace,
}

impl FakeCache {
    /// An empty cache without an entry limit.
    pub fn new() -> FakeCache {
        FakeCache::default()
    }

    /// The same cache holding at most `max_entries` keys, evicting the least recently
    /// used beyond that (Redis' `allkeys-lru` with a key count as its memory limit).
    pub fn with_max_entries(mut self, max_entries: usize) -> FakeCache {
        self.max_entries = Some(max_entries);
        self
    }

    /// Answers one Cache request at simulated time `now`.
    pub fn handle(
        &mut self,
        now: Time,
        request: CacheRequest,
    ) -> Result<CacheResponse, EffectError> {
        Ok(match request {
            CacheRequest::GetCachedProfile(r) => {
                CacheResponse::GetCachedProfile(self.get_profile(now, r.user_id)?)
            }
            CacheRequest::PutCachedProfile(r) => {
                let PutCachedProfile {
                    user_id,
                    profile,
                    ttl_seconds,
                } = *r;
                self.put(
                    now,
                    <PutCachedProfile as Effect<Std>>::NAME,
                    profile_key(user_id),
                    Value::Profile(profile),
                    Some(ttl_seconds),
                )?;
                CacheResponse::PutCachedProfile(())
            }
            CacheRequest::DeleteCachedProfile(r) => {
                CacheResponse::DeleteCachedProfile(self.delete(now, &profile_key(r.user_id)))
            }
            CacheRequest::InvalidateCache(r) => {
                CacheResponse::InvalidateCache(self.delete(now, &r.key))
            }
            CacheRequest::GetCachedValue(r) => {
                CacheResponse::GetCachedValue(self.get(now, r.key, Value::to_bytes))
            }
            CacheRequest::RedisCommand(r) => {
                CacheResponse::RedisCommand(self.commands.run(now, &r.args)?)
            }
            CacheRequest::PutCachedValue(r) => {
                self.put(
                    now,
                    <PutCachedValue as Effect<Std>>::NAME,
                    r.key,
                    Value::Bytes(r.value),
                    r.ttl_seconds,
                )?;
                CacheResponse::PutCachedValue(())
            }
        })
    }

    /// The bytes under `key` if it is live at `now` (a profile as its JSON), without
    /// counting as a use and without forgetting an expired key.
    pub fn peek(&self, now: Time, key: &str) -> Option<Vec<u8>> {
        self.entries
            .get(key)
            .filter(|e| !e.is_expired(now))
            .map(|e| e.value.to_bytes())
    }

    /// The time to live left for a live `key`: `None` if it is not live,
    /// `Some(None)` if it never expires.
    pub fn ttl_remaining(&self, now: Time, key: &str) -> Option<Option<u64>> {
        self.entries
            .get(key)
            .filter(|e| !e.is_expired(now))
            .map(|e| e.expires_at.map(|at| ceil_secs(at - now)))
    }

    /// Writes `value` under `key` as `PutCachedValue` at `now` would, with a time to
    /// live in whole seconds (`None`: it never expires), for setting a scenario up.
    /// A time to live of 0 is refused as `SET ... EX 0` is.
    pub fn seed(
        &mut self,
        now: Time,
        key: impl Into<String>,
        value: Vec<u8>,
        ttl_seconds: Option<u64>,
    ) -> Result<(), EffectError> {
        self.put(
            now,
            <PutCachedValue as Effect<Std>>::NAME,
            key.into(),
            Value::Bytes(value),
            ttl_seconds,
        )
    }

    /// Every key live at `now`, in key order, with the time it expires at (`None`:
    /// never).
    pub fn keys(&self, now: Time) -> impl Iterator<Item = (&str, Option<Time>)> {
        self.entries
            .values()
            .filter(move |e| !e.is_expired(now))
            .map(|e| (&*e.key, e.expires_at))
    }

    /// Loses every key, as a Redis restart without persistence does: afterwards every
    /// key reads as `NotFound` (not `Expired` or `Evicted`: nothing remembers it).
    pub fn restart(&mut self) {
        let max_entries = self.max_entries;
        let evictions = self.evictions;
        *self = FakeCache {
            max_entries,
            evictions,
            ..FakeCache::default()
        };
    }

    /// How many keys were evicted to make room so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Reads `key` like `GET`, the value as `read` makes it: a hit counts as a use
    /// for the LRU order.
    fn get<T>(&mut self, now: Time, key: String, read: impl FnOnce(&Value) -> T) -> CacheLookup<T> {
        let Some(entry) = self.entries.get(key.as_str()) else {
            let reason = self.dropped.remove(&key).unwrap_or(MissReason::NotFound);
            return CacheLookup::Miss { key, reason };
        };
        if entry.is_expired(now) {
            let remembered = entry.expires_at.is_some_and(|at| {
                now < at.saturating_add(Duration::from_secs(EXPIRED_MEMORY_SECONDS))
            });
            self.remove(&key);
            let reason = if remembered {
                MissReason::Expired
            } else {
                MissReason::NotFound
            };
            return CacheLookup::Miss { key, reason };
        }
        let ttl_remaining = entry.expires_at.map(|at| ceil_secs(at - now));
        let value = read(&entry.value);
        self.touch(&key);
        CacheLookup::Hit {
            value,
            ttl_remaining,
        }
    }

    fn get_profile(
        &mut self,
        now: Time,
        user_id: uuid::Uuid,
    ) -> Result<CacheLookup<ProfileData>, EffectError> {
        match self.get(now, profile_key(user_id), Value::to_profile) {
            CacheLookup::Miss { key, reason } => Ok(CacheLookup::Miss { key, reason }),
            CacheLookup::Hit {
                value,
                ttl_remaining,
            } => match value {
                Ok(value) => Ok(CacheLookup::Hit {
                    value,
                    ttl_remaining,
                }),
                Err(e) => Err(EffectError::new(
                    <GetCachedProfile as Effect<Std>>::NAME,
                    ErrorKind::Protocol,
                    format!(
                        "the value under {} is not a profile: {e}",
                        profile_key(user_id)
                    ),
                )),
            },
        }
    }

    fn put(
        &mut self,
        now: Time,
        effect: &'static str,
        key: String,
        value: Value,
        ttl_seconds: Option<u64>,
    ) -> Result<(), EffectError> {
        if ttl_seconds.is_some_and(|t| t == 0 || t > MAX_TTL_SECONDS) {
            return Err(EffectError::new(
                effect,
                ErrorKind::Service {
                    code: Some("ERR".to_owned()),
                },
                "invalid expire time in 'set' command",
            ));
        }
        self.remove(&key);
        self.dropped.remove(&key);
        let key: Arc<str> = key.into();
        let expires_at = ttl_seconds.map(|secs| now.saturating_add(Duration::from_secs(secs)));
        if let Some(at) = expires_at {
            self.expiries.insert((at, key.clone()));
        }
        self.clock += 1;
        self.lru.insert(self.clock, key.clone());
        self.entries.insert(
            key.clone(),
            Entry {
                key,
                value,
                expires_at,
                used: self.clock,
            },
        );
        self.make_room(now);
        Ok(())
    }

    /// Forgets `key`; whether it was live.
    fn delete(&mut self, now: Time, key: &str) -> bool {
        self.dropped.remove(key);
        self.remove(key).is_some_and(|e| !e.is_expired(now))
    }

    /// Drops keys until at most `max_entries` remain: expired keys first, then the
    /// least recently used.
    fn make_room(&mut self, now: Time) {
        let Some(max) = self.max_entries else { return };
        while self.entries.len() > max {
            let expired = self
                .expiries
                .first()
                .filter(|(at, _)| now >= *at)
                .map(|(_, key)| key.clone());
            let (key, reason) = match expired {
                Some(key) => (key, MissReason::Expired),
                None => match self.lru.first_key_value() {
                    Some((_, key)) => (key.clone(), MissReason::Evicted),
                    None => return,
                },
            };
            self.remove(&key);
            if reason == MissReason::Evicted {
                self.evictions += 1;
            }
            self.dropped.insert(key.to_string(), reason);
        }
    }

    fn touch(&mut self, key: &str) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        self.lru.remove(&entry.used);
        self.clock += 1;
        entry.used = self.clock;
        self.lru.insert(self.clock, entry.key.clone());
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.lru.remove(&entry.used);
        if let Some(at) = entry.expires_at {
            self.expiries.remove(&(at, entry.key.clone()));
        }
        Some(entry)
    }
}

/// Whole seconds in `d`, rounded up.
mod commands;

fn ceil_secs(d: Duration) -> u64 {
    duration_nanos(d).div_ceil(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::{DeleteCachedProfile, GetCachedValue, InvalidateCache};
    use uuid::Uuid;

    fn put(cache: &mut FakeCache, now: Time, key: &str, value: &[u8], ttl: Option<u64>) {
        let request = PutCachedValue {
            key: key.into(),
            value: value.to_vec(),
            ttl_seconds: ttl,
        };
        cache
            .handle(now, CacheRequest::PutCachedValue(request))
            .expect("stored");
    }

    fn get(cache: &mut FakeCache, now: Time, key: &str) -> CacheLookup<Vec<u8>> {
        match cache.handle(
            now,
            CacheRequest::GetCachedValue(GetCachedValue { key: key.into() }),
        ) {
            Ok(CacheResponse::GetCachedValue(lookup)) => lookup,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn miss(key: &str, reason: MissReason) -> CacheLookup<Vec<u8>> {
        CacheLookup::Miss {
            key: key.into(),
            reason,
        }
    }

    fn profile(user_id: Uuid) -> ProfileData {
        ProfileData {
            user_id,
            name: "Ada".into(),
            email: "ada@x.io".into(),
        }
    }

    fn get_profile(
        cache: &mut FakeCache,
        now: Time,
        user_id: Uuid,
    ) -> Result<CacheResponse, EffectError> {
        cache.handle(
            now,
            CacheRequest::GetCachedProfile(GetCachedProfile { user_id }),
        )
    }

    #[test]
    fn cache_read_before_ttl_hits_with_seconds_left_rounded_up() {
        let mut cache = FakeCache::new();
        put(&mut cache, Time::ZERO, "k", b"v", Some(10));
        assert_eq!(
            get(&mut cache, Time::from_millis(2_500), "k"),
            CacheLookup::Hit {
                value: b"v".to_vec(),
                ttl_remaining: Some(8)
            }
        );
        assert_eq!(
            get(&mut cache, Time::from_nanos(9_999_999_999), "k"),
            CacheLookup::Hit {
                value: b"v".to_vec(),
                ttl_remaining: Some(1)
            }
        );
        assert_eq!(cache.ttl_remaining(Time::from_secs(3), "k"), Some(Some(7)));
    }

    #[test]
    fn cache_read_after_ttl_says_expired_then_not_found() {
        let mut cache = FakeCache::new();
        put(&mut cache, Time::ZERO, "k", b"v", Some(10));
        assert_eq!(cache.peek(Time::from_secs(10), "k"), None);
        assert_eq!(
            get(&mut cache, Time::from_secs(10), "k"),
            miss("k", MissReason::Expired)
        );
        assert_eq!(
            get(&mut cache, Time::from_secs(11), "k"),
            miss("k", MissReason::NotFound)
        );
        assert_eq!(
            get(&mut cache, Time::ZERO, "never"),
            miss("never", MissReason::NotFound)
        );
    }

    #[test]
    fn cache_values_without_ttl_never_expire() {
        let mut cache = FakeCache::new();
        put(&mut cache, Time::ZERO, "k", b"v", None);
        assert_eq!(
            get(&mut cache, Time::MAX, "k"),
            CacheLookup::Hit {
                value: b"v".to_vec(),
                ttl_remaining: None
            }
        );
        assert_eq!(cache.ttl_remaining(Time::MAX, "k"), Some(None));
    }

    #[test]
    fn cache_rewrite_replaces_value_and_ttl() {
        let mut cache = FakeCache::new();
        put(&mut cache, Time::ZERO, "k", b"old", Some(5));
        put(&mut cache, Time::from_secs(4), "k", b"new", None);
        assert_eq!(
            get(&mut cache, Time::from_secs(60), "k"),
            CacheLookup::Hit {
                value: b"new".to_vec(),
                ttl_remaining: None
            }
        );
        put(&mut cache, Time::from_secs(60), "k", b"newer", Some(1));
        assert_eq!(
            get(&mut cache, Time::from_secs(61), "k"),
            miss("k", MissReason::Expired)
        );
    }

    #[test]
    fn cache_zero_ttl_is_refused_like_redis() {
        let mut cache = FakeCache::new();
        let request = PutCachedValue {
            key: "k".into(),
            value: vec![],
            ttl_seconds: Some(0),
        };
        let err = cache
            .handle(Time::ZERO, CacheRequest::PutCachedValue(request))
            .unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::Service {
                code: Some("ERR".into())
            }
        );
        assert!(!err.retryable);
        assert_eq!(err.effect, "Cache.PutCachedValue");
        assert_eq!(
            get(&mut cache, Time::ZERO, "k"),
            miss("k", MissReason::NotFound)
        );
    }

    #[test]
    fn cache_ttl_over_the_maximum_is_refused_and_the_maximum_is_kept() {
        let mut cache = FakeCache::new();
        let err = cache
            .seed(Time::from_secs(1), "k", b"v".to_vec(), Some(u64::MAX))
            .expect_err("refused as Redis refuses an out-of-range expire");
        assert_eq!(err.message, "invalid expire time in 'set' command");
        put(
            &mut cache,
            Time::from_secs(1),
            "k",
            b"v",
            Some(MAX_TTL_SECONDS),
        );
        assert!(matches!(
            get(&mut cache, Time::from_secs(1_000_000), "k"),
            CacheLookup::Hit { .. }
        ));
    }

    #[test]
    fn cache_expiry_is_remembered_for_the_expired_memory_only() {
        let mut cache = FakeCache::new();
        put(&mut cache, Time::ZERO, "a", b"1", Some(1));
        put(&mut cache, Time::ZERO, "b", b"2", Some(1));
        let edge = Time::from_secs(1 + EXPIRED_MEMORY_SECONDS);
        assert_eq!(
            get(
                &mut cache,
                Time::from_millis((1 + EXPIRED_MEMORY_SECONDS) * 1000 - 1),
                "a"
            ),
            miss("a", MissReason::Expired)
        );
        assert_eq!(get(&mut cache, edge, "b"), miss("b", MissReason::NotFound));
    }

    #[test]
    fn cache_over_capacity_evicts_least_recently_used_and_says_evicted_once() {
        let mut cache = FakeCache::new().with_max_entries(2);
        put(&mut cache, Time::ZERO, "a", b"1", None);
        put(&mut cache, Time::ZERO, "b", b"2", None);
        // Reading "a" makes "b" the least recently used.
        assert!(matches!(
            get(&mut cache, Time::ZERO, "a"),
            CacheLookup::Hit { .. }
        ));
        put(&mut cache, Time::ZERO, "c", b"3", None);
        assert_eq!(cache.evictions(), 1);
        assert_eq!(
            get(&mut cache, Time::ZERO, "b"),
            miss("b", MissReason::Evicted)
        );
        assert_eq!(
            get(&mut cache, Time::ZERO, "b"),
            miss("b", MissReason::NotFound)
        );
        assert!(matches!(
            get(&mut cache, Time::ZERO, "a"),
            CacheLookup::Hit { .. }
        ));
        assert!(matches!(
            get(&mut cache, Time::ZERO, "c"),
            CacheLookup::Hit { .. }
        ));
    }

    #[test]
    fn cache_over_capacity_drops_expired_keys_before_evicting_live_ones() {
        let mut cache = FakeCache::new().with_max_entries(2);
        put(&mut cache, Time::ZERO, "short", b"1", Some(1));
        put(&mut cache, Time::ZERO, "long", b"2", None);
        put(&mut cache, Time::from_secs(5), "new", b"3", None);
        assert_eq!(cache.evictions(), 0);
        assert!(matches!(
            get(&mut cache, Time::from_secs(5), "long"),
            CacheLookup::Hit { .. }
        ));
        assert_eq!(
            get(&mut cache, Time::from_secs(5), "short"),
            miss("short", MissReason::Expired)
        );
        assert_eq!(
            get(&mut cache, Time::from_secs(5), "short"),
            miss("short", MissReason::NotFound)
        );
    }

    #[test]
    fn cache_rewriting_an_evicted_key_clears_the_eviction() {
        let mut cache = FakeCache::new().with_max_entries(1);
        put(&mut cache, Time::ZERO, "a", b"1", None);
        put(&mut cache, Time::ZERO, "b", b"2", None);
        put(&mut cache, Time::ZERO, "a", b"3", None);
        assert_eq!(
            get(&mut cache, Time::ZERO, "a"),
            CacheLookup::Hit {
                value: b"3".to_vec(),
                ttl_remaining: None
            }
        );
        assert_eq!(
            get(&mut cache, Time::ZERO, "b"),
            miss("b", MissReason::Evicted)
        );
    }

    #[test]
    fn cache_with_zero_capacity_keeps_nothing() {
        let mut cache = FakeCache::new().with_max_entries(0);
        put(&mut cache, Time::ZERO, "a", b"1", None);
        assert_eq!(
            get(&mut cache, Time::ZERO, "a"),
            miss("a", MissReason::Evicted)
        );
    }

    #[test]
    fn cache_invalidate_says_whether_a_live_key_was_there() {
        let mut cache = FakeCache::new();
        put(&mut cache, Time::ZERO, "k", b"v", Some(5));
        put(&mut cache, Time::ZERO, "gone", b"v", Some(1));
        let invalidate = |cache: &mut FakeCache, now, key: &str| {
            cache
                .handle(
                    now,
                    CacheRequest::InvalidateCache(InvalidateCache { key: key.into() }),
                )
                .expect("ok")
        };
        assert_eq!(
            invalidate(&mut cache, Time::from_secs(2), "k"),
            CacheResponse::InvalidateCache(true)
        );
        assert_eq!(
            invalidate(&mut cache, Time::from_secs(2), "k"),
            CacheResponse::InvalidateCache(false)
        );
        assert_eq!(
            invalidate(&mut cache, Time::from_secs(2), "gone"),
            CacheResponse::InvalidateCache(false)
        );
        assert_eq!(
            get(&mut cache, Time::from_secs(2), "k"),
            miss("k", MissReason::NotFound)
        );
        assert_eq!(
            get(&mut cache, Time::from_secs(2), "gone"),
            miss("gone", MissReason::NotFound)
        );
    }

    #[test]
    fn cache_profiles_are_json_under_the_profile_key_and_share_the_value_api() {
        let mut cache = FakeCache::new();
        let user_id = Uuid::from_u128(9);
        let put = PutCachedProfile {
            user_id,
            profile: profile(user_id),
            ttl_seconds: 300,
        };
        cache
            .handle(Time::ZERO, CacheRequest::PutCachedProfile(put.into()))
            .expect("stored");

        let raw = cache
            .peek(Time::ZERO, &profile_key(user_id))
            .expect("stored under profile:{id}");
        assert_eq!(
            serde_json::from_slice::<ProfileData>(&raw).expect("json"),
            profile(user_id)
        );
        assert_eq!(
            get_profile(&mut cache, Time::from_secs(1), user_id),
            Ok(CacheResponse::GetCachedProfile(CacheLookup::Hit {
                value: profile(user_id),
                ttl_remaining: Some(299)
            }))
        );

        let key = profile_key(user_id);
        let invalidated = cache.handle(
            Time::ZERO,
            CacheRequest::InvalidateCache(InvalidateCache { key: key.clone() }),
        );
        assert_eq!(invalidated, Ok(CacheResponse::InvalidateCache(true)));
        assert_eq!(
            get_profile(&mut cache, Time::ZERO, user_id),
            Ok(CacheResponse::GetCachedProfile(CacheLookup::Miss {
                key,
                reason: MissReason::NotFound
            }))
        );
    }

    #[test]
    fn cache_profile_expires_and_delete_says_whether_it_was_cached() {
        let mut cache = FakeCache::new();
        let user_id = Uuid::from_u128(3);
        let put = PutCachedProfile {
            user_id,
            profile: profile(user_id),
            ttl_seconds: 2,
        };
        cache
            .handle(
                Time::ZERO,
                CacheRequest::PutCachedProfile(put.clone().into()),
            )
            .expect("stored");
        assert_eq!(
            get_profile(&mut cache, Time::from_secs(2), user_id),
            Ok(CacheResponse::GetCachedProfile(CacheLookup::Miss {
                key: profile_key(user_id),
                reason: MissReason::Expired
            }))
        );
        cache
            .handle(Time::ZERO, CacheRequest::PutCachedProfile(put.into()))
            .expect("stored");
        let delete = |cache: &mut FakeCache| {
            cache.handle(
                Time::ZERO,
                CacheRequest::DeleteCachedProfile(DeleteCachedProfile { user_id }),
            )
        };
        assert_eq!(
            delete(&mut cache),
            Ok(CacheResponse::DeleteCachedProfile(true))
        );
        assert_eq!(
            delete(&mut cache),
            Ok(CacheResponse::DeleteCachedProfile(false))
        );
    }

    #[test]
    fn cache_value_that_is_not_a_profile_is_a_protocol_error() {
        let mut cache = FakeCache::new();
        let user_id = Uuid::from_u128(5);
        put(
            &mut cache,
            Time::ZERO,
            &profile_key(user_id),
            b"not json",
            None,
        );
        let err = get_profile(&mut cache, Time::ZERO, user_id).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Protocol);
        assert!(!err.retryable);
        assert_eq!(err.effect, "Cache.GetCachedProfile");
    }

    #[test]
    fn cache_commands_outside_the_subset_are_refused_by_name() {
        let mut cache = FakeCache::new();
        let run = |cache: &mut FakeCache, args: &[&str]| {
            cache.handle(
                Time::ZERO,
                CacheRequest::RedisCommand(crate::effect::RedisCommand::new(args)),
            )
        };
        let e = run(&mut cache, &["eval", "return 1", "0"]).expect_err("refused");
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(!e.retryable);
        assert!(
            e.message
                .contains("not supported by the in-memory cache: EVAL"),
            "{e}"
        );
        assert!(run(&mut cache, &[]).is_err(), "a command needs its name");
        // Commands and the Cache effects keep apart, and a restart loses both.
        run(&mut cache, &["SET", "k", "v"]).expect("SET");
        assert_eq!(
            get(&mut cache, Time::ZERO, "k"),
            miss("k", MissReason::NotFound)
        );
        cache.restart();
        assert_eq!(
            run(&mut cache, &["GET", "k"]).expect("GET"),
            CacheResponse::RedisCommand(crate::effect::CommandReply::Nil)
        );
    }
}
