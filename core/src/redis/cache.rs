//! The Cache family on Redis, sans IO: each [`CacheRequest`] becomes one [`Command`]
//! and its reply becomes the [`CacheResponse`], with the fake's semantics
//! ([`FakeCache`](crate::memory::FakeCache)).
//!
//! # Keys and values
//! The value of a key `k` of the effects lives at `{prefix}~v1:k` (profiles under
//! the key `profile:{id}`, as [`profile_key`] names them), stored behind a short
//! header: `{expiry},{ttl}:` (the expiry instant in Unix milliseconds of the
//! server's clock, the time to live in milliseconds), or `:` for a value without a
//! time to live. Its *expiry marker* lives at `{prefix}~expired:k`. The two
//! namespaces cannot meet, so every user key is allowed.
//!
//! Values written by the layout before this one (raw, at `{prefix}k`) are never
//! read: they read as `NotFound` (a cache miss, so cache-aside reloads them), and
//! those with a time to live expire on their own.
//!
//! # Reads: one `GET`
//! A read is a plain `GET` of the value key, so a hit costs the server no more than
//! any `GET` (no script). The remaining time to live comes from the header, judged
//! at the effect's time (the `now` given to [`response`](CacheAdapter::response)),
//! clamped to the value's time to live and rounded up to whole seconds (a live key
//! never reports 0); it is exact while the driver's clock and the server's agree.
//!
//! # Not found, expired, evicted
//! Redis forgets a key when its time to live runs out, so it cannot tell "expired"
//! from "never stored" by itself. A write with a time to live also writes the marker,
//! holding the value's expiry instant (server time, in milliseconds), with a time to
//! live [`expired_memory`](CacheAdapter::expired_memory) longer than the value's. A
//! `GET` that finds nothing is followed by one Lua script that decides, atomically:
//! the value if it is there now (written meanwhile); otherwise it takes the marker
//! away (`GETDEL`) and answers
//! - [`MissReason::Expired`] if the marker's instant has passed (so an expired key
//!   reads once as `Expired`, then as `NotFound`, as in the fake);
//! - [`MissReason::Evicted`] if it has not (the server dropped the value early:
//!   `maxmemory` eviction);
//! - [`MissReason::NotFound`] if there is no marker.
//!
//! Differences from the fake, by design: an expired key is remembered for
//! [`expired_memory`](CacheAdapter::expired_memory) after its expiry (the fake, which
//! has the same default, [`EXPIRED_MEMORY_SECONDS`]); a key without a time to live has
//! no marker, so if Redis evicts it, it reads as `NotFound`, not `Evicted`.
//!
//! # Errors
//! A time to live of 0 is refused before anything is sent, as `SET ... EX 0` is
//! (`Service { code: "ERR" }`, not retryable), and so is one over
//! [`MAX_TTL_SECONDS`]. Server errors keep their code; a timeout and a lost
//! connection are retryable ([`command_error`]). A value that is not in the format
//! above (written under the key by something else) is a protocol error naming it.
//!
//! ```
//! use effectful::Timestamp;
//! use effectful::effect::{CacheRequest, CacheResponse, CacheLookup, GetCachedValue};
//! use effectful::redis::{CacheAdapter, CacheStep, Value};
//!
//! let cache = CacheAdapter::new("app:");
//! let request = CacheRequest::GetCachedValue(GetCachedValue { key: "greeting".into() });
//! let (command, pending) = cache.command(request).unwrap();
//! assert_eq!(command.name(), b"GET");
//! // Stored at 1 000 000 ms with a 10 s time to live; read 8.5 s later.
//! let reply = Value::Bulk(b"1010000,10000:hi".to_vec());
//! let now = Timestamp::from_unix_micros(1_001_500_000);
//! assert_eq!(
//!     cache.response(pending, Ok(reply), now),
//!     CacheStep::Answer(Ok(CacheResponse::GetCachedValue(CacheLookup::Hit {
//!         value: b"hi".to_vec(),
//!         ttl_remaining: Some(9),
//!     }))),
//! );
//! ```

use std::borrow::Cow;
use std::time::Duration;

use uuid::Uuid;

use super::command::Command;
use super::connection::{RedisConnection, RequestId};
use super::error::{CommandError, SendError};
use super::value::Value;
use crate::effect::{
    CacheLookup, CacheRequest, CacheResponse, CommandReply, EXPIRED_MEMORY_SECONDS,
    GetCachedProfile, MAX_TTL_SECONDS, MissReason, ProfileData, profile_key,
};
use crate::{EffectError, ErrorKind, Time, Timestamp};

/// After a `GET` found nothing: the stored value if it is there now, else 0 (not
/// found), 1 (expired), 2 (evicted). KEYS: value, marker.
const MISS_SCRIPT: &str = "\
local v = redis.call('GET', KEYS[1])
if v then return v end
local m = redis.call('GETDEL', KEYS[2])
if not m then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= tonumber(m) then return 1 end
return 2";

/// Writes a value behind its header. KEYS: value, marker. ARGV: value, ttl in ms
/// ('' for none), how long the marker outlives the value in ms.
const PUT_SCRIPT: &str = "\
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ':' .. ARGV[1])
  redis.call('DEL', KEYS[2])
  return 1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local at = string.format('%d', now + ttl)
redis.call('SET', KEYS[1], at .. ',' .. ARGV[2] .. ':' .. ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], at, 'PX', string.format('%d', ttl + tonumber(ARGV[3])))
return 1";

/// Forgets a value and its marker; answers whether the value was there.
/// KEYS: value, marker.
const DELETE_SCRIPT: &str = "\
local n = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
return n";

/// What the value key of `k` is called, after the prefix (the version of the value
/// format: values of another layout are never read as this one's).
const VALUE: &str = "~v1:";
/// What the marker key of `k` is called, after the prefix.
const MARKER: &str = "~expired:";
/// The longest header: two decimal `i64`s, a comma and a colon.
const MAX_HEADER: usize = 20 + 1 + 20 + 1;

/// Turns Cache effects into Redis commands and replies into answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheAdapter {
    prefix: String,
    /// `{prefix}~v1:`, what every value key starts with (a read writes it whole).
    value_head: String,
    expired_memory: Duration,
}

/// What a reply is read as: kept by the driver beside the command's
/// [`RequestId`](super::RequestId) until its reply comes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachePending {
    effect: &'static str,
    op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    /// `fallback`: the reply is the miss script's, not the `GET`'s.
    GetProfile {
        user_id: Uuid,
        fallback: bool,
    },
    GetValue {
        key: String,
        fallback: bool,
    },
    PutProfile,
    PutValue,
    DeleteProfile,
    Invalidate,
    Command,
}

/// What to do with a reply: answer the effect, or send one more command (a read
/// that found nothing asks the server why) and read its reply the same way.
#[derive(Debug, PartialEq)]
pub enum CacheStep {
    /// The effect's answer.
    Answer(Result<CacheResponse, EffectError>),
    /// Send this command for the same effect; its reply goes to
    /// [`CacheAdapter::response`] with this pending.
    Send(Command, CachePending),
}

impl CachePending {
    /// The effect this reply answers (`Cache.GetCachedValue`, ...).
    pub fn effect(&self) -> &'static str {
        self.effect
    }

    /// A read's key (of the effects, before the prefix); `None` for anything else.
    fn read_key(&self) -> Option<String> {
        match &self.op {
            Op::GetValue { key, .. } => Some(key.clone()),
            Op::GetProfile { user_id, .. } => Some(profile_key(*user_id)),
            _ => None,
        }
    }
}

impl CacheAdapter {
    /// Keys under `prefix` (may be empty), expired keys remembered for
    /// [`EXPIRED_MEMORY_SECONDS`].
    pub fn new(prefix: impl Into<String>) -> CacheAdapter {
        let prefix = prefix.into();
        CacheAdapter {
            value_head: format!("{prefix}{VALUE}"),
            prefix,
            expired_memory: Duration::from_secs(EXPIRED_MEMORY_SECONDS),
        }
    }

    /// The same adapter, remembering that a key expired for `memory` after its
    /// expiry (at least 1 ms).
    pub fn with_expired_memory(mut self, memory: Duration) -> CacheAdapter {
        self.expired_memory = memory.max(Duration::from_millis(1));
        self
    }

    /// How long after its expiry a key still reads as `Expired` (once).
    pub fn expired_memory(&self) -> Duration {
        self.expired_memory
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key of the effects' key `key` (its value, behind the header).
    pub fn redis_key(&self, key: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + VALUE.len() + key.len());
        out.push_str(&self.prefix);
        out.push_str(VALUE);
        out.push_str(key);
        out
    }

    /// The Redis key of `key`'s expiry marker.
    pub fn marker_key(&self, key: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + MARKER.len() + key.len());
        out.push_str(&self.prefix);
        out.push_str(MARKER);
        out.push_str(key);
        out
    }

    /// The command that performs `request`, and what its reply is to be read as; or
    /// the error Redis would give, without sending anything. A read's key moves into
    /// the pending (a miss names it), so it is taken by value.
    pub fn command(&self, request: CacheRequest) -> Result<(Command, CachePending), EffectError> {
        let (command, pending) = self.plan(request)?;
        let command = match command {
            Some(command) => command,
            None => self.get(&pending.read_key().unwrap_or_default()),
        };
        Ok((command, pending))
    }

    /// As [`command`](Self::command), except that a read's `GET` is not built
    /// (`None`): [`send_read`](Self::send_read) writes it straight into the
    /// connection from the key the pending keeps, with no command in between.
    pub fn plan(
        &self,
        request: CacheRequest,
    ) -> Result<(Option<Command>, CachePending), EffectError> {
        let effect = request.name();
        let pending = |op| CachePending { effect, op };
        Ok(match request {
            CacheRequest::GetCachedProfile(r) => (
                None,
                pending(Op::GetProfile {
                    user_id: r.user_id,
                    fallback: false,
                }),
            ),
            CacheRequest::GetCachedValue(r) => (
                None,
                pending(Op::GetValue {
                    key: r.key,
                    fallback: false,
                }),
            ),
            CacheRequest::PutCachedProfile(r) => {
                let json = serde_json::to_vec(&r.profile).map_err(|e| {
                    EffectError::new(effect, ErrorKind::Protocol, format!("{e}"))
                        .with_retryable(false)
                })?;
                (
                    Some(self.put(effect, &profile_key(r.user_id), &json, Some(r.ttl_seconds))?),
                    pending(Op::PutProfile),
                )
            }
            CacheRequest::PutCachedValue(r) => (
                Some(self.put(effect, &r.key, &r.value, r.ttl_seconds)?),
                pending(Op::PutValue),
            ),
            CacheRequest::DeleteCachedProfile(r) => (
                Some(self.script(DELETE_SCRIPT, &profile_key(r.user_id))),
                pending(Op::DeleteProfile),
            ),
            CacheRequest::InvalidateCache(r) => (
                Some(self.script(DELETE_SCRIPT, &r.key)),
                pending(Op::Invalidate),
            ),
            CacheRequest::RedisCommand(r) => match Command::from_parts(&r.args) {
                Some(command) => (Some(command), pending(Op::Command)),
                None => {
                    return Err(EffectError::new(
                        effect,
                        ErrorKind::Protocol,
                        "a command needs at least its name",
                    )
                    .with_retryable(false));
                }
            },
        })
    }

    /// Sends the `GET` of the read `pending` (planned without a command by
    /// [`plan`](Self::plan)) on `conn`, written straight into its bytes. A pending
    /// that is not a read's first `GET` is refused (`Unsupported`), sending nothing.
    pub fn send_read(
        &self,
        pending: &CachePending,
        now: Time,
        conn: &mut RedisConnection,
    ) -> Result<RequestId, SendError> {
        let key = match &pending.op {
            Op::GetValue {
                key,
                fallback: false,
            } => Cow::Borrowed(key.as_str()),
            Op::GetProfile {
                fallback: false, ..
            } => Cow::Owned(pending.read_key().unwrap_or_default()),
            _ => {
                return Err(SendError::Unsupported {
                    command: "a Cache write as a read",
                });
            }
        };
        conn.send_get(now, self.value_head.as_bytes(), key.as_bytes())
    }

    /// What to do with the reply to the command of `pending`: the effect's answer,
    /// or one more command to send (after a read that found nothing). `now` is the
    /// effect's time on the driver's wall clock: a hit's remaining time to live is
    /// judged at it.
    pub fn response(
        &self,
        pending: CachePending,
        reply: Result<Value, CommandError>,
        now: Timestamp,
    ) -> CacheStep {
        match pending.op {
            Op::GetValue { key, fallback } => {
                match self.lookup(pending.effect, &key, fallback, reply, now) {
                    Lookup::Done(lookup) => {
                        CacheStep::Answer(lookup.map(CacheResponse::GetCachedValue))
                    }
                    Lookup::Ask(command) => CacheStep::Send(
                        command,
                        CachePending {
                            effect: pending.effect,
                            op: Op::GetValue {
                                key,
                                fallback: true,
                            },
                        },
                    ),
                }
            }
            Op::GetProfile { user_id, fallback } => {
                let key = profile_key(user_id);
                match self.lookup(pending.effect, &key, fallback, reply, now) {
                    Lookup::Done(lookup) => CacheStep::Answer(
                        lookup
                            .and_then(|l| profile(l, &key))
                            .map(CacheResponse::GetCachedProfile),
                    ),
                    Lookup::Ask(command) => CacheStep::Send(
                        command,
                        CachePending {
                            effect: pending.effect,
                            op: Op::GetProfile {
                                user_id,
                                fallback: true,
                            },
                        },
                    ),
                }
            }
            op => CacheStep::Answer(self.other_response(pending.effect, op, reply)),
        }
    }

    /// A read's reply: the lookup, or the miss script to send after a `GET` that
    /// found nothing.
    fn lookup(
        &self,
        effect: &'static str,
        key: &str,
        fallback: bool,
        reply: Result<Value, CommandError>,
        now: Timestamp,
    ) -> Lookup {
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => return Lookup::Done(Err(command_error(effect, &e))),
        };
        let reason = match (reply, fallback) {
            (Value::Bulk(stored), _) => {
                return Lookup::Done(stored_value(stored, now).ok_or_else(|| {
                    EffectError::new(
                        effect,
                        ErrorKind::Protocol,
                        format!("the value under {key} is not in the cache's format"),
                    )
                    .with_retryable(false)
                }));
            }
            (Value::Nil, false) => return Lookup::Ask(self.script(MISS_SCRIPT, key)),
            (Value::Int(0), true) => MissReason::NotFound,
            (Value::Int(1), true) => MissReason::Expired,
            (Value::Int(2), true) => MissReason::Evicted,
            (other, _) => return Lookup::Done(Err(unexpected(effect, &other))),
        };
        Lookup::Done(Ok(CacheLookup::Miss {
            key: key.to_owned(),
            reason,
        }))
    }

    /// The answer to a request other than a read.
    fn other_response(
        &self,
        effect: &'static str,
        op: Op,
        reply: Result<Value, CommandError>,
    ) -> Result<CacheResponse, EffectError> {
        if op == Op::Command {
            return match reply {
                Ok(value) => Ok(CacheResponse::RedisCommand(command_reply(value))),
                Err(CommandError::Server(e)) if !e.is_retryable() => Ok(
                    CacheResponse::RedisCommand(CommandReply::Error(e.message().to_owned())),
                ),
                Err(e) => Err(command_error(effect, &e)),
            };
        }
        let reply = reply.map_err(|e| command_error(effect, &e))?;
        Ok(match op {
            Op::PutProfile | Op::PutValue => {
                if reply.as_int() != Some(1) {
                    return Err(unexpected(effect, &reply));
                }
                if op == Op::PutProfile {
                    CacheResponse::PutCachedProfile(())
                } else {
                    CacheResponse::PutCachedValue(())
                }
            }
            Op::DeleteProfile | Op::Invalidate => {
                let deleted = match reply.as_int() {
                    Some(n @ 0..=1) => n == 1,
                    _ => return Err(unexpected(effect, &reply)),
                };
                if op == Op::DeleteProfile {
                    CacheResponse::DeleteCachedProfile(deleted)
                } else {
                    CacheResponse::InvalidateCache(deleted)
                }
            }
            // Reads and commands are answered above.
            Op::GetValue { .. } | Op::GetProfile { .. } | Op::Command => {
                return Err(unexpected(effect, &reply));
            }
        })
    }

    /// `GET {value key}`.
    fn get(&self, key: &str) -> Command {
        let mut get = Command::new("GET");
        get.push_concat(&[self.prefix.as_bytes(), VALUE.as_bytes(), key.as_bytes()]);
        get
    }

    /// `EVAL script 2 {value key} {marker key}`.
    fn script(&self, script: &str, key: &str) -> Command {
        Command::new("EVAL")
            .arg(script)
            .arg("2")
            .arg(self.redis_key(key))
            .arg(self.marker_key(key))
    }

    fn put(
        &self,
        effect: &'static str,
        key: &str,
        value: &[u8],
        ttl_seconds: Option<u64>,
    ) -> Result<Command, EffectError> {
        let command = self.script(PUT_SCRIPT, key).arg(value);
        Ok(match ttl_seconds {
            None => command.arg("").arg("0"),
            Some(secs) => {
                if secs == 0 || secs > MAX_TTL_SECONDS {
                    return Err(invalid_expire(effect));
                }
                let memory = i64::try_from(self.expired_memory.as_millis()).unwrap_or(i64::MAX);
                // secs <= MAX_TTL_SECONDS, so this fits (and Lua's doubles hold it).
                command
                    .arg_int(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX))
                    .arg_int(memory)
            }
        })
    }
}

/// A reply in RESP2's shapes (see [`CommandReply`]).
fn command_reply(value: Value) -> CommandReply {
    let all =
        |items: Vec<Value>| CommandReply::Array(items.into_iter().map(command_reply).collect());
    match value {
        Value::Nil => CommandReply::Nil,
        Value::Simple(s) => CommandReply::Simple(s),
        Value::Bulk(b) => CommandReply::Bulk(b),
        Value::Int(n) => CommandReply::Integer(n),
        Value::Double(d) => CommandReply::Bulk(d.to_string().into_bytes()),
        Value::Bool(b) => CommandReply::Integer(i64::from(b)),
        Value::BigNumber(n) => CommandReply::Bulk(n.into_bytes()),
        Value::Verbatim { text, .. } => CommandReply::Bulk(text),
        Value::Array(items) | Value::Set(items) | Value::Push(items) => all(items),
        Value::Map(pairs) => all(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        Value::Error(e) => CommandReply::Error(e.message().to_owned()),
    }
}

/// The error Redis gives for `SET ... EX 0` and out-of-range times to live.
pub(crate) fn invalid_expire(effect: &'static str) -> EffectError {
    EffectError::new(
        effect,
        ErrorKind::Service {
            code: Some("ERR".to_owned()),
        },
        "invalid expire time in 'set' command",
    )
}

/// A command's failure as the effect's error: a server error keeps its code and
/// says whether it is retryable; a timeout and a lost connection are retryable.
pub fn command_error(effect: &'static str, error: &CommandError) -> EffectError {
    match error {
        CommandError::Server(e) => EffectError::new(
            effect,
            ErrorKind::Service {
                code: Some(e.code().to_owned()),
            },
            e.to_string(),
        )
        .with_retryable(e.is_retryable()),
        CommandError::TimedOut { .. } => EffectError::timeout(effect, error.to_string()),
        CommandError::ConnectionClosed { .. } => {
            EffectError::connection_lost(effect, error.to_string())
        }
    }
}

/// What a read's reply leads to.
enum Lookup {
    Done(Result<CacheLookup<Vec<u8>>, EffectError>),
    Ask(Command),
}

fn unexpected(effect: &'static str, reply: &Value) -> EffectError {
    EffectError::new(
        effect,
        ErrorKind::Protocol,
        format!("unexpected reply from Redis: {}", describe(reply)),
    )
    .with_retryable(false)
}

/// A hit on a stored value (`{expiry},{ttl}:value` or `:value`), its time to live
/// judged at `now`; `None` if it is not in that format.
fn stored_value(mut stored: Vec<u8>, now: Timestamp) -> Option<CacheLookup<Vec<u8>>> {
    let head = &stored[..stored.len().min(MAX_HEADER)];
    let colon = memchr::memchr(b':', head)?;
    let ttl_remaining = if colon == 0 {
        None
    } else {
        let comma = memchr::memchr(b',', &head[..colon])?;
        let (at, ttl) = (&head[..comma], &head[comma + 1..colon]);
        let at = match at.strip_prefix(b"-") {
            Some(digits) => i64::try_from(super::decimal(digits)?).ok()?.checked_neg()?,
            None => i64::try_from(super::decimal(at)?).ok()?,
        };
        let ttl = i64::try_from(super::decimal(ttl)?).ok()?;
        if ttl <= 0 {
            return None;
        }
        // The server still holds it, so it is live: at least 1 ms, at most its ttl
        // (whatever the clocks' skew); whole seconds, rounded up.
        let left = at.saturating_sub(now.unix_micros().div_euclid(1000));
        Some(left.clamp(1, ttl).unsigned_abs().div_ceil(1000))
    };
    stored.drain(..=colon);
    Some(CacheLookup::Hit {
        value: stored,
        ttl_remaining,
    })
}

/// A read of a profile: its JSON parsed.
fn profile(
    lookup: CacheLookup<Vec<u8>>,
    key: &str,
) -> Result<CacheLookup<ProfileData>, EffectError> {
    Ok(match lookup {
        CacheLookup::Miss { key, reason } => CacheLookup::Miss { key, reason },
        CacheLookup::Hit {
            value,
            ttl_remaining,
        } => match serde_json::from_slice::<ProfileData>(&value) {
            Ok(value) => CacheLookup::Hit {
                value,
                ttl_remaining,
            },
            Err(e) => {
                return Err(EffectError::new(
                    <GetCachedProfile as crate::Effect<crate::Std>>::NAME,
                    ErrorKind::Protocol,
                    format!("the value under {key} is not a profile: {e}"),
                ));
            }
        },
    })
}

/// A short description of an unexpected reply (never the whole value).
pub(super) fn describe(value: &Value) -> String {
    let mut text = format!("{value:?}");
    if text.len() > 80 {
        let mut end = 80;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::{GetCachedValue, InvalidateCache, PutCachedValue};
    use crate::redis::ServerError;

    fn adapter() -> CacheAdapter {
        CacheAdapter::new("t:")
    }

    fn parts(command: &Command) -> Vec<String> {
        command
            .parts()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    const NOW: Timestamp = Timestamp::from_unix_micros(1_000_000_000);

    fn get(key: &str) -> CacheRequest {
        CacheRequest::GetCachedValue(GetCachedValue { key: key.into() })
    }

    fn answer(step: CacheStep) -> Result<CacheResponse, EffectError> {
        match step {
            CacheStep::Answer(answer) => answer,
            CacheStep::Send(command, _) => panic!("asked to send {command:?}"),
        }
    }

    #[test]
    fn a_read_is_one_get_of_the_key_under_its_prefix() {
        let adapter = CacheAdapter::new("app:");
        let (command, _) = adapter.command(get("k1")).expect("planned");
        let expected = Command::new("GET").arg(adapter.redis_key("k1"));
        assert_eq!(command, expected);
        assert_eq!(command.part(1), Some(&b"app:~v1:k1"[..]));
    }

    /// What `send` puts on the wire of a fresh RESP2 connection.
    fn wire(send: impl FnOnce(&mut RedisConnection) -> Result<RequestId, SendError>) -> Vec<u8> {
        let config = crate::redis::RedisConfig {
            protocol: crate::redis::Protocol::Resp2,
            ..Default::default()
        };
        let mut conn = RedisConnection::new(config, Time::ZERO);
        send(&mut conn).expect("sent");
        let mut out = Vec::new();
        conn.poll_transmit(&mut out);
        out
    }

    #[test]
    fn a_read_planned_without_a_command_is_written_as_its_command_would_be() {
        let a = CacheAdapter::new("app:");
        let profile = CacheRequest::GetCachedProfile(GetCachedProfile {
            user_id: Uuid::from_u128(7),
        });
        for request in [get("k1"), get(""), profile] {
            let (planned, pending) = a.plan(request.clone()).expect("planned");
            assert_eq!(planned, None, "a read builds no command");
            let (command, _) = a.command(request).expect("planned");
            assert_eq!(
                wire(|conn| a.send_read(&pending, Time::ZERO, conn)),
                wire(|conn| conn.send(Time::ZERO, &command)),
            );
        }
        let put = CacheRequest::InvalidateCache(InvalidateCache { key: "k".into() });
        let (planned, pending) = a.plan(put).expect("planned");
        assert!(planned.is_some(), "anything else is a command");
        assert!(matches!(
            wire_refused(|conn| a.send_read(&pending, Time::ZERO, conn)),
            SendError::Unsupported { .. }
        ));
    }

    fn wire_refused(
        send: impl FnOnce(&mut RedisConnection) -> Result<RequestId, SendError>,
    ) -> SendError {
        let mut conn = RedisConnection::new(crate::redis::RedisConfig::default(), Time::ZERO);
        let refused = send(&mut conn).expect_err("refused");
        let mut out = Vec::new();
        conn.poll_transmit(&mut out);
        assert!(!out.windows(3).any(|w| w == b"GET"), "nothing sent");
        refused
    }

    #[test]
    fn a_put_with_a_ttl_sends_milliseconds_and_the_marker_memory() {
        let request = CacheRequest::PutCachedValue(PutCachedValue {
            key: "k".into(),
            value: b"v".to_vec(),
            ttl_seconds: Some(7),
        });
        let (command, _) = adapter().command(request).expect("a command");
        let p = parts(&command);
        assert_eq!(p[0], "EVAL");
        assert_eq!(
            &p[2..],
            ["2", "t:~v1:k", "t:~expired:k", "v", "7000", "3600000"]
        );
    }

    #[test]
    fn a_ttl_of_zero_or_too_long_is_refused_as_redis_refuses_it() {
        for ttl in [0, MAX_TTL_SECONDS + 1] {
            let request = CacheRequest::PutCachedValue(PutCachedValue {
                key: "k".into(),
                value: Vec::new(),
                ttl_seconds: Some(ttl),
            });
            let e = adapter().command(request).expect_err("refused");
            assert_eq!(
                e.kind,
                ErrorKind::Service {
                    code: Some("ERR".into())
                }
            );
            assert!(!e.retryable);
            assert_eq!(e.effect, "Cache.PutCachedValue");
        }
    }

    #[test]
    fn a_read_is_one_get_and_only_a_miss_asks_the_server_why() {
        let a = adapter();
        let (command, pending) = a.command(get("k")).expect("a command");
        assert_eq!(parts(&command), ["GET", "t:~v1:k"]);
        let CacheStep::Send(why, pending) = a.response(pending, Ok(Value::Nil), NOW) else {
            panic!("a miss asks why");
        };
        assert_eq!(parts(&why)[0], "EVAL");
        assert_eq!(&parts(&why)[2..], ["2", "t:~v1:k", "t:~expired:k"]);
        // The script's own answer is final, whatever it is.
        let e = answer(a.response(pending, Ok(Value::Nil), NOW)).expect_err("odd");
        assert_eq!(e.kind, ErrorKind::Protocol);
    }

    #[test]
    fn misses_are_told_apart_and_odd_replies_are_protocol_errors() {
        let a = adapter();
        let after_a_miss = || {
            let (_, pending) = a.command(get("k")).expect("a command");
            match a.response(pending, Ok(Value::Nil), NOW) {
                CacheStep::Send(_, pending) => pending,
                CacheStep::Answer(a) => panic!("answered {a:?}"),
            }
        };
        for (code, reason) in [
            (0, MissReason::NotFound),
            (1, MissReason::Expired),
            (2, MissReason::Evicted),
        ] {
            assert_eq!(
                answer(a.response(after_a_miss(), Ok(Value::Int(code)), NOW)).expect("an answer"),
                CacheResponse::GetCachedValue(CacheLookup::Miss {
                    key: "k".into(),
                    reason
                })
            );
        }
        // Written between the GET and the script: a hit.
        assert_eq!(
            answer(a.response(after_a_miss(), Ok(Value::Bulk(b":v".to_vec())), NOW)),
            Ok(CacheResponse::GetCachedValue(CacheLookup::Hit {
                value: b"v".to_vec(),
                ttl_remaining: None
            }))
        );
        let e = answer(a.response(after_a_miss(), Ok(Value::Int(9)), NOW)).expect_err("odd");
        assert_eq!(e.kind, ErrorKind::Protocol);
        assert!(e.message.contains("Int(9)"), "{}", e.message);
    }

    #[test]
    fn a_hit_without_expiry_has_no_ttl_and_a_live_key_never_reports_zero_or_more_than_its_ttl() {
        let a = adapter();
        let now_ms = NOW.unix_micros() / 1000;
        for (stored, ttl) in [
            (":v".to_owned(), None),
            (format!("{},5000:v", now_ms + 1), Some(1)),
            (format!("{},5000:v", now_ms + 1000), Some(1)),
            (format!("{},5000:v", now_ms + 1001), Some(2)),
            // The server still has it, though our clock says it is over.
            (format!("{},5000:v", now_ms - 10), Some(1)),
            // Our clock behind the server's: never more than the ttl.
            (format!("{},5000:v", now_ms + 60_000), Some(5)),
        ] {
            let (_, pending) = a.command(get("k")).expect("a command");
            let reply = Value::Bulk(stored.clone().into_bytes());
            assert_eq!(
                answer(a.response(pending, Ok(reply), NOW)),
                Ok(CacheResponse::GetCachedValue(CacheLookup::Hit {
                    value: b"v".to_vec(),
                    ttl_remaining: ttl
                })),
                "{stored}"
            );
        }
    }

    #[test]
    fn a_value_not_in_the_cache_format_is_a_protocol_error_naming_its_key() {
        let a = adapter();
        for stored in [&b"raw"[..], b"12:x", b"1,0:x", b"a,b:x", b"1,-5:x", b""] {
            let (_, pending) = a.command(get("k")).expect("a command");
            let e = answer(a.response(pending, Ok(Value::Bulk(stored.to_vec())), NOW))
                .expect_err("not ours");
            assert_eq!((e.kind, e.retryable), (ErrorKind::Protocol, false));
            assert!(e.message.contains("under k "), "{}", e.message);
        }
    }

    #[test]
    fn failures_keep_the_server_code_and_retryability() {
        let a = adapter();
        let inv = CacheRequest::InvalidateCache(InvalidateCache { key: "k".into() });
        let (_, pending) = a.command(inv.clone()).expect("a command");
        let e = answer(a.response(
            pending,
            Err(CommandError::Server(ServerError::parse("LOADING loading"))),
            NOW,
        ))
        .expect_err("an error");
        assert_eq!(
            e.kind,
            ErrorKind::Service {
                code: Some("LOADING".into())
            }
        );
        assert!(e.retryable);
        let (_, pending) = a.command(inv).expect("a command");
        let e = answer(a.response(
            pending,
            Err(CommandError::ConnectionClosed { sent: true }),
            NOW,
        ))
        .expect_err("an error");
        assert_eq!((e.kind, e.retryable), (ErrorKind::ConnectionLost, true));
        let (_, pending) = a.command(get("k")).expect("a command");
        let e = answer(a.response(
            pending,
            Err(CommandError::Server(ServerError::parse(
                "WRONGTYPE Operation against a key holding the wrong kind of value",
            ))),
            NOW,
        ))
        .expect_err("an error");
        assert_eq!(
            e.kind,
            ErrorKind::Service {
                code: Some("WRONGTYPE".into())
            }
        );
    }
}
