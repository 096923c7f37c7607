//! The Cache family on Redis, sans IO: each [`CacheRequest`] becomes one [`Command`]
//! and its reply becomes the [`CacheResponse`], with the fake's semantics
//! ([`FakeCache`](crate::memory::FakeCache)).
//!
//! # Keys
//! A key `k` of the effects lives at `{prefix}k` (profiles at
//! `{prefix}profile:{id}`, as [`profile_key`] names them). Its *expiry marker* lives at
//! `{prefix}~expired:k`: user keys starting with `~expired:` are reserved.
//!
//! # Not found, expired, evicted
//! Redis forgets a key when its time to live runs out, so it cannot tell "expired"
//! from "never stored" by itself. A write with a time to live also writes the marker,
//! holding the value's expiry instant (server time, in milliseconds), with a time to
//! live [`expired_memory`](CacheAdapter::expired_memory) longer than the value's. A
//! read runs one Lua script, atomically: the value and its `PTTL` if it is there;
//! otherwise it takes the marker away (`GETDEL`) and answers
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
//! connection are retryable ([`command_error`]).
//!
//! ```
//! use effectful::effect::{CacheRequest, CacheResponse, CacheLookup, GetCachedValue};
//! use effectful::redis::{CacheAdapter, Value};
//!
//! let cache = CacheAdapter::new("app:");
//! let request = CacheRequest::GetCachedValue(GetCachedValue { key: "greeting".into() });
//! let (command, pending) = cache.command(&request).unwrap();
//! assert_eq!(command.name(), b"EVAL");
//! let reply = Value::Array(vec![Value::Bulk(b"hi".to_vec()), Value::Int(1500)]);
//! assert_eq!(
//!     cache.response(pending, Ok(reply)).unwrap(),
//!     CacheResponse::GetCachedValue(CacheLookup::Hit { value: b"hi".to_vec(), ttl_remaining: Some(2) }),
//! );
//! ```

use std::time::Duration;

use uuid::Uuid;

use super::command::Command;
use super::error::CommandError;
use super::value::Value;
use crate::effect::{
    CacheLookup, CacheRequest, CacheResponse, CommandReply, EXPIRED_MEMORY_SECONDS,
    GetCachedProfile, MAX_TTL_SECONDS, MissReason, ProfileData, profile_key,
};
use crate::{EffectError, ErrorKind};

/// Reads a value: `{value, pttl}` on a hit, else 0 (not found), 1 (expired),
/// 2 (evicted). KEYS: value, marker.
const GET_SCRIPT: &str = "\
local v = redis.call('GET', KEYS[1])
if v then return {v, redis.call('PTTL', KEYS[1])} end
local m = redis.call('GETDEL', KEYS[2])
if not m then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= tonumber(m) then return 1 end
return 2";

/// Writes a value. KEYS: value, marker. ARGV: value, ttl in ms ('' for none), how
/// long the marker outlives the value in ms.
const PUT_SCRIPT: &str = "\
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
  return 1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], string.format('%d', now + ttl), 'PX', string.format('%d', ttl + tonumber(ARGV[3])))
return 1";

/// Forgets a value and its marker; answers whether the value was there.
/// KEYS: value, marker.
const DELETE_SCRIPT: &str = "\
local n = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
return n";

/// What the marker key of `k` is called, after the prefix.
const MARKER: &str = "~expired:";

/// Turns Cache effects into Redis commands and replies into answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheAdapter {
    prefix: String,
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
    GetProfile(Uuid),
    GetValue(String),
    PutProfile,
    PutValue,
    DeleteProfile,
    Invalidate,
    Command,
}

impl CachePending {
    /// The effect this reply answers (`Cache.GetCachedValue`, ...).
    pub fn effect(&self) -> &'static str {
        self.effect
    }
}

impl CacheAdapter {
    /// Keys under `prefix` (may be empty), expired keys remembered for
    /// [`EXPIRED_MEMORY_SECONDS`].
    pub fn new(prefix: impl Into<String>) -> CacheAdapter {
        CacheAdapter {
            prefix: prefix.into(),
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

    /// The Redis key of the effects' key `key`.
    pub fn redis_key(&self, key: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + key.len());
        out.push_str(&self.prefix);
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
    /// the error Redis would give, without sending anything.
    pub fn command(&self, request: &CacheRequest) -> Result<(Command, CachePending), EffectError> {
        let effect = request.name();
        let pending = |op| CachePending { effect, op };
        Ok(match request {
            CacheRequest::GetCachedProfile(r) => (
                self.script(GET_SCRIPT, &profile_key(r.user_id)),
                pending(Op::GetProfile(r.user_id)),
            ),
            CacheRequest::GetCachedValue(r) => (
                self.script(GET_SCRIPT, &r.key),
                pending(Op::GetValue(r.key.clone())),
            ),
            CacheRequest::PutCachedProfile(r) => {
                let json = serde_json::to_vec(&r.profile).map_err(|e| {
                    EffectError::new(effect, ErrorKind::Protocol, format!("{e}"))
                        .with_retryable(false)
                })?;
                (
                    self.put(effect, &profile_key(r.user_id), &json, Some(r.ttl_seconds))?,
                    pending(Op::PutProfile),
                )
            }
            CacheRequest::PutCachedValue(r) => (
                self.put(effect, &r.key, &r.value, r.ttl_seconds)?,
                pending(Op::PutValue),
            ),
            CacheRequest::DeleteCachedProfile(r) => (
                self.script(DELETE_SCRIPT, &profile_key(r.user_id)),
                pending(Op::DeleteProfile),
            ),
            CacheRequest::InvalidateCache(r) => {
                (self.script(DELETE_SCRIPT, &r.key), pending(Op::Invalidate))
            }
            CacheRequest::RedisCommand(r) => match Command::from_parts(&r.args) {
                Some(command) => (command, pending(Op::Command)),
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

    /// The answer to the request `pending` came from, given its command's reply.
    pub fn response(
        &self,
        pending: CachePending,
        reply: Result<Value, CommandError>,
    ) -> Result<CacheResponse, EffectError> {
        let effect = pending.effect;
        if pending.op == Op::Command {
            return match reply {
                Ok(value) => Ok(CacheResponse::RedisCommand(command_reply(value))),
                Err(CommandError::Server(e)) if !e.is_retryable() => Ok(
                    CacheResponse::RedisCommand(CommandReply::Error(e.message().to_owned())),
                ),
                Err(e) => Err(command_error(effect, &e)),
            };
        }
        let reply = reply.map_err(|e| command_error(effect, &e))?;
        let unexpected = || {
            EffectError::new(
                effect,
                ErrorKind::Protocol,
                format!("unexpected reply from Redis: {}", describe(&reply)),
            )
            .with_retryable(false)
        };
        Ok(match pending.op {
            Op::GetValue(key) => {
                CacheResponse::GetCachedValue(read_lookup(&reply, key, unexpected)?)
            }
            Op::GetProfile(user_id) => {
                let lookup = read_lookup(&reply, profile_key(user_id), unexpected)?;
                CacheResponse::GetCachedProfile(match lookup {
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
                                format!(
                                    "the value under {} is not a profile: {e}",
                                    profile_key(user_id)
                                ),
                            ));
                        }
                    },
                })
            }
            Op::PutProfile | Op::PutValue => {
                if reply.as_int() != Some(1) {
                    return Err(unexpected());
                }
                if matches!(pending.op, Op::PutProfile) {
                    CacheResponse::PutCachedProfile(())
                } else {
                    CacheResponse::PutCachedValue(())
                }
            }
            // Answered above, before errors become effect errors.
            Op::Command => return Err(unexpected()),
            Op::DeleteProfile | Op::Invalidate => {
                let deleted = match reply.as_int() {
                    Some(n @ 0..=1) => n == 1,
                    _ => return Err(unexpected()),
                };
                if matches!(pending.op, Op::DeleteProfile) {
                    CacheResponse::DeleteCachedProfile(deleted)
                } else {
                    CacheResponse::InvalidateCache(deleted)
                }
            }
        })
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

/// A reply of the read script.
fn read_lookup(
    reply: &Value,
    key: String,
    unexpected: impl Fn() -> EffectError,
) -> Result<CacheLookup<Vec<u8>>, EffectError> {
    let reason = match reply {
        Value::Int(0) => MissReason::NotFound,
        Value::Int(1) => MissReason::Expired,
        Value::Int(2) => MissReason::Evicted,
        Value::Array(items) => match items.as_slice() {
            [value, Value::Int(pttl)] => {
                let value = value.as_bytes().ok_or_else(&unexpected)?.to_vec();
                let ttl_remaining = match *pttl {
                    // -1: no expiry. The key is there, so -2 cannot be.
                    ms if ms < 0 => None,
                    // Whole seconds, rounded up: a live key never reports 0.
                    ms => Some((ms.unsigned_abs().div_ceil(1000)).max(1)),
                };
                return Ok(CacheLookup::Hit {
                    value,
                    ttl_remaining,
                });
            }
            _ => return Err(unexpected()),
        },
        _ => return Err(unexpected()),
    };
    Ok(CacheLookup::Miss { key, reason })
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
    use crate::effect::{InvalidateCache, PutCachedValue};
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

    #[test]
    fn a_put_with_a_ttl_sends_milliseconds_and_the_marker_memory() {
        let request = CacheRequest::PutCachedValue(PutCachedValue {
            key: "k".into(),
            value: b"v".to_vec(),
            ttl_seconds: Some(7),
        });
        let (command, _) = adapter().command(&request).expect("a command");
        let p = parts(&command);
        assert_eq!(p[0], "EVAL");
        assert_eq!(
            &p[2..],
            ["2", "t:k", "t:~expired:k", "v", "7000", "3600000"]
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
            let e = adapter().command(&request).expect_err("refused");
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
    fn misses_are_told_apart_and_odd_replies_are_protocol_errors() {
        let a = adapter();
        let get = CacheRequest::GetCachedValue(crate::effect::GetCachedValue { key: "k".into() });
        for (code, reason) in [
            (0, MissReason::NotFound),
            (1, MissReason::Expired),
            (2, MissReason::Evicted),
        ] {
            let (_, pending) = a.command(&get).expect("a command");
            assert_eq!(
                a.response(pending, Ok(Value::Int(code)))
                    .expect("an answer"),
                CacheResponse::GetCachedValue(CacheLookup::Miss {
                    key: "k".into(),
                    reason
                })
            );
        }
        let (_, pending) = a.command(&get).expect("a command");
        let e = a.response(pending, Ok(Value::Int(9))).expect_err("odd");
        assert_eq!(e.kind, ErrorKind::Protocol);
        assert!(e.message.contains("Int(9)"), "{}", e.message);
    }

    #[test]
    fn a_hit_without_expiry_has_no_ttl_and_a_live_key_never_reports_zero() {
        let a = adapter();
        let get = CacheRequest::GetCachedValue(crate::effect::GetCachedValue { key: "k".into() });
        for (pttl, ttl) in [(-1, None), (1, Some(1)), (1000, Some(1)), (1001, Some(2))] {
            let (_, pending) = a.command(&get).expect("a command");
            let reply = Value::Array(vec![Value::Bulk(b"v".to_vec()), Value::Int(pttl)]);
            assert_eq!(
                a.response(pending, Ok(reply)).expect("an answer"),
                CacheResponse::GetCachedValue(CacheLookup::Hit {
                    value: b"v".to_vec(),
                    ttl_remaining: ttl
                })
            );
        }
    }

    #[test]
    fn failures_keep_the_server_code_and_retryability() {
        let a = adapter();
        let inv = CacheRequest::InvalidateCache(InvalidateCache { key: "k".into() });
        let (_, pending) = a.command(&inv).expect("a command");
        let e = a
            .response(
                pending,
                Err(CommandError::Server(ServerError::parse("LOADING loading"))),
            )
            .expect_err("an error");
        assert_eq!(
            e.kind,
            ErrorKind::Service {
                code: Some("LOADING".into())
            }
        );
        assert!(e.retryable);
        let (_, pending) = a.command(&inv).expect("a command");
        let e = a
            .response(pending, Err(CommandError::ConnectionClosed { sent: true }))
            .expect_err("an error");
        assert_eq!((e.kind, e.retryable), (ErrorKind::ConnectionLost, true));
    }
}
