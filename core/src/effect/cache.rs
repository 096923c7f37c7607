//! Cache: profiles and raw values with a time to live (Redis).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::family;

/// The profile kept in the cache for a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileData {
    /// The user's id.
    pub user_id: Uuid,
    /// Display name.
    pub name: String,
    /// Email.
    pub email: String,
}

/// Why the cache had nothing to give.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MissReason {
    /// Never stored, or deleted.
    NotFound,
    /// Stored, but its time to live ran out.
    Expired,
    /// Removed by the cache to make room.
    Evicted,
}

/// The domain outcome of a cache read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheLookup<T> {
    /// The value, and how many seconds it has left (none: no expiry).
    Hit {
        /// The cached value.
        value: T,
        /// Seconds of life left, if it expires.
        ttl_remaining: Option<u64>,
    },
    /// Nothing cached.
    Miss {
        /// The key that missed.
        key: String,
        /// Why.
        reason: MissReason,
    },
}

/// The default profile time to live, in seconds.
pub const DEFAULT_PROFILE_TTL_SECONDS: u64 = 300;

/// The longest time to live a cache takes, in seconds (100 years of 365 days): longer ones are
/// refused as Redis refuses an out-of-range `SET ... EX`.
pub const MAX_TTL_SECONDS: u64 = 100 * 365 * 24 * 3600;

/// How long after its expiry a key still reads (once) as [`MissReason::Expired`], in
/// seconds; later it reads as [`MissReason::NotFound`]. Redis forgets expired keys, so
/// its adapter keeps a marker this much longer than the value, and the fake agrees.
pub const EXPIRED_MEMORY_SECONDS: u64 = 3600;

fn default_profile_ttl() -> u64 {
    DEFAULT_PROFILE_TTL_SECONDS
}

/// The cache key of a user's profile: `profile:{user_id}`.
pub fn profile_key(user_id: Uuid) -> String {
    const PREFIX: &str = "profile:";
    let mut key = String::with_capacity(PREFIX.len() + uuid::fmt::Hyphenated::LENGTH);
    key.push_str(PREFIX);
    key.push_str(
        user_id
            .hyphenated()
            .encode_lower(&mut Uuid::encode_buffer()),
    );
    key
}

/// Read a user's cached profile. Output: [`CacheLookup`] of [`ProfileData`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetCachedProfile {
    /// The user's id.
    pub user_id: Uuid,
}

/// Cache a user's profile. Output: `()`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutCachedProfile {
    /// The user's id.
    pub user_id: Uuid,
    /// The profile.
    pub profile: ProfileData,
    /// Time to live in seconds (default 300).
    #[serde(default = "default_profile_ttl")]
    pub ttl_seconds: u64,
}

/// Forget a user's cached profile. Output: whether it was cached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteCachedProfile {
    /// The user's id.
    pub user_id: Uuid,
}

/// Forget any key. Output: whether it was cached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidateCache {
    /// The key.
    pub key: String,
}

/// Read raw bytes. Output: [`CacheLookup`] of bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetCachedValue {
    /// The key.
    pub key: String,
}

/// Store raw bytes. Output: `()`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutCachedValue {
    /// The key.
    pub key: String,
    /// The bytes.
    pub value: Vec<u8>,
    /// Time to live in seconds; `None` keeps it until deleted or evicted.
    pub ttl_seconds: Option<u64>,
}

/// Any Redis command of the program's own (`INCR`, `HSET`, `EVAL`, ...), sent as
/// it is: the name and its arguments, each as bytes. Output: [`CommandReply`].
///
/// The keys it names are Redis keys as written: the Cache effects' key prefix is
/// not applied. On Redis any command is sent (except those that would take the
/// connection over: `SUBSCRIBE`, `MONITOR`, blocking reads with a long timeout
/// are the program's risk); the in-memory cache answers the subset its docs name
/// (`FakeCache`, behind the `memory` feature) and refuses the rest with a
/// non-retryable error saying `not supported by the in-memory cache: <command>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisCommand {
    /// The command's name, then its arguments.
    pub args: Vec<Vec<u8>>,
}

impl RedisCommand {
    /// The command `args` (each given as text or bytes).
    pub fn new<I, A>(args: I) -> RedisCommand
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[u8]>,
    {
        RedisCommand {
            args: args.into_iter().map(|a| a.as_ref().to_vec()).collect(),
        }
    }
}

/// What Redis answered a [`RedisCommand`], in RESP2's shapes (a RESP3 map comes as
/// the array of its keys and values, a set as an array, a double or a big number as
/// its text in a bulk string, a boolean as 0 or 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandReply {
    /// A null: a missing key, a missing field.
    Nil,
    /// An integer.
    Integer(i64),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// A simple string (`OK`, `PONG`).
    Simple(String),
    /// An array.
    Array(Vec<CommandReply>),
    /// An error reply, as the server wrote it (`WRONGTYPE Operation against a key
    /// holding the wrong kind of value`). Errors a retry may mend (`LOADING`,
    /// `BUSY`, ...) and lost connections are effect errors instead.
    Error(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_keys_are_the_prefix_and_the_hyphenated_id() {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(profile_key(id), format!("profile:{id}"));
    }
}

family! {
    /// The Cache family's requests.
    Cache: CacheRequest => CacheResponse {
        GetCachedProfile => CacheLookup<ProfileData>,
        PutCachedProfile [boxed] => (),
        DeleteCachedProfile => bool,
        InvalidateCache => bool,
        GetCachedValue => CacheLookup<Vec<u8>>,
        PutCachedValue => (),
        RedisCommand => CommandReply,
    }
}
