//! The in-memory cache's answers to `RedisCommand`: a documented subset of Redis'
//! string and hash commands, with Redis' replies and error texts (see
//! [`FakeCache`](super::FakeCache)).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::effect::{CommandReply, RedisCommand};
use crate::{Effect, EffectError, ErrorKind, Std, Time};

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

/// A hash's fields in the order first set (a small Redis hash keeps that order).
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Clone, Debug)]
enum Held {
    Text(Vec<u8>),
    Hash(Fields),
}

#[derive(Clone, Debug)]
struct Key {
    held: Held,
    expires_at: Option<Time>,
}

/// The keys `RedisCommand`s see.
#[derive(Clone, Debug, Default)]
pub(super) struct Keyspace {
    keys: BTreeMap<Vec<u8>, Key>,
}

/// Replies to a command, or the error reply Redis would give.
type Reply = Result<CommandReply, &'static str>;

impl Keyspace {
    /// Runs `args` (the name, then its arguments) at `now`.
    pub(super) fn run(&mut self, now: Time, args: &[Vec<u8>]) -> Result<CommandReply, EffectError> {
        let Some((name, args)) = args.split_first() else {
            return Err(EffectError::new(
                <RedisCommand as Effect<Std>>::NAME,
                ErrorKind::Protocol,
                "a command needs at least its name",
            )
            .with_retryable(false));
        };
        let name = String::from_utf8_lossy(name).to_ascii_uppercase();
        let arity_ok = match name.as_str() {
            "GET" | "INCR" | "DECR" | "TTL" | "HGETALL" => args.len() == 1,
            "INCRBY" | "DECRBY" | "EXPIRE" | "HGET" => args.len() == 2,
            "SET" | "HDEL" => args.len() >= 2,
            "DEL" | "EXISTS" => !args.is_empty(),
            "HSET" => args.len() >= 3 && args.len() % 2 == 1,
            _ => {
                return Err(EffectError::new(
                    <RedisCommand as Effect<Std>>::NAME,
                    ErrorKind::Unavailable,
                    format!("not supported by the in-memory cache: {name}"),
                )
                .with_retryable(false));
            }
        };
        if !arity_ok {
            return Ok(CommandReply::Error(format!(
                "ERR wrong number of arguments for '{}' command",
                name.to_ascii_lowercase()
            )));
        }
        self.forget_expired(now, args);
        let reply = match name.as_str() {
            "GET" => self.get(&args[0]),
            "SET" => self.set(now, args),
            "DEL" => Ok(CommandReply::Integer(
                args.iter()
                    .filter(|k| self.keys.remove(*k).is_some())
                    .count() as i64,
            )),
            "EXISTS" => Ok(CommandReply::Integer(
                args.iter().filter(|k| self.keys.contains_key(*k)).count() as i64,
            )),
            "INCR" => self.add(&args[0], Ok(1)),
            "DECR" => self.add(&args[0], Ok(-1)),
            "INCRBY" => self.add(&args[0], integer(&args[1])),
            "DECRBY" => self.add(
                &args[0],
                integer(&args[1]).and_then(|n| n.checked_neg().ok_or(NOT_AN_INTEGER)),
            ),
            "EXPIRE" => self.expire(now, &args[0], &args[1]),
            "TTL" => Ok(CommandReply::Integer(match self.keys.get(&args[0]) {
                None => -2,
                Some(Key {
                    expires_at: None, ..
                }) => -1,
                Some(Key {
                    expires_at: Some(at),
                    ..
                }) => {
                    let left = at.saturating_duration_since(now).as_millis();
                    i64::try_from((left + 500) / 1000).unwrap_or(i64::MAX)
                }
            })),
            "HSET" => self.hset(&args[0], &args[1..]),
            "HGET" => self.hash(&args[0]).map(|fields| {
                fields
                    .and_then(|f| f.iter().find(|(name, _)| *name == args[1]))
                    .map_or(CommandReply::Nil, |(_, v)| CommandReply::Bulk(v.clone()))
            }),
            "HGETALL" => self.hash(&args[0]).map(|fields| {
                CommandReply::Array(
                    fields
                        .into_iter()
                        .flatten()
                        .flat_map(|(f, v)| {
                            [CommandReply::Bulk(f.clone()), CommandReply::Bulk(v.clone())]
                        })
                        .collect(),
                )
            }),
            _ => self.hdel(&args[0], &args[1..]),
        };
        Ok(reply.unwrap_or_else(|e| CommandReply::Error(e.to_owned())))
    }

    /// Drops the keys among `args` whose time ran out (commands only look at those).
    fn forget_expired(&mut self, now: Time, args: &[Vec<u8>]) {
        for key in args {
            if self
                .keys
                .get(key)
                .is_some_and(|k| k.expires_at.is_some_and(|at| now >= at))
            {
                self.keys.remove(key);
            }
        }
    }

    fn get(&self, key: &[u8]) -> Reply {
        match self.keys.get(key) {
            None => Ok(CommandReply::Nil),
            Some(Key {
                held: Held::Text(v),
                ..
            }) => Ok(CommandReply::Bulk(v.clone())),
            Some(_) => Err(WRONGTYPE),
        }
    }

    fn set(&mut self, now: Time, args: &[Vec<u8>]) -> Reply {
        let (mut ttl, mut nx, mut xx) = (None, false, false);
        let mut options = args[2..].iter();
        while let Some(option) = options.next() {
            match option.to_ascii_uppercase().as_slice() {
                b"NX" if !xx => nx = true,
                b"XX" if !nx => xx = true,
                unit @ (b"EX" | b"PX") if ttl.is_none() => {
                    let n = integer(options.next().ok_or(SYNTAX)?)?;
                    if n <= 0 {
                        return Err("ERR invalid expire time in 'set' command");
                    }
                    let n = n.unsigned_abs();
                    ttl = Some(if unit == b"EX" {
                        Duration::from_secs(n)
                    } else {
                        Duration::from_millis(n)
                    });
                }
                _ => return Err(SYNTAX),
            }
        }
        let exists = self.keys.contains_key(&args[0]);
        if (nx && exists) || (xx && !exists) {
            return Ok(CommandReply::Nil);
        }
        let key = Key {
            held: Held::Text(args[1].clone()),
            expires_at: ttl.map(|t| now.saturating_add(t)),
        };
        self.keys.insert(args[0].clone(), key);
        Ok(CommandReply::Simple("OK".to_owned()))
    }

    fn add(&mut self, key: &[u8], by: Result<i64, &'static str>) -> Reply {
        let by = by?;
        let (current, expires_at) = match self.keys.get(key) {
            None => (0, None),
            Some(Key {
                held: Held::Text(v),
                expires_at,
            }) => (integer(v)?, *expires_at),
            Some(_) => return Err(WRONGTYPE),
        };
        let n = current
            .checked_add(by)
            .ok_or("ERR increment or decrement would overflow")?;
        let held = Held::Text(n.to_string().into_bytes());
        self.keys.insert(key.to_vec(), Key { held, expires_at });
        Ok(CommandReply::Integer(n))
    }

    fn expire(&mut self, now: Time, key: &[u8], seconds: &[u8]) -> Reply {
        let seconds = integer(seconds)?;
        let Some(entry) = self.keys.get_mut(key) else {
            return Ok(CommandReply::Integer(0));
        };
        if seconds <= 0 {
            self.keys.remove(key);
        } else {
            entry.expires_at =
                Some(now.saturating_add(Duration::from_secs(seconds.unsigned_abs())));
        }
        Ok(CommandReply::Integer(1))
    }

    /// The fields under `key`: `None` if it is missing.
    fn hash(&self, key: &[u8]) -> Result<Option<&Fields>, &'static str> {
        match self.keys.get(key) {
            None => Ok(None),
            Some(Key {
                held: Held::Hash(fields),
                ..
            }) => Ok(Some(fields)),
            Some(_) => Err(WRONGTYPE),
        }
    }

    fn hset(&mut self, key: &[u8], pairs: &[Vec<u8>]) -> Reply {
        self.hash(key)?;
        let entry = self.keys.entry(key.to_vec()).or_insert(Key {
            held: Held::Hash(Vec::new()),
            expires_at: None,
        });
        let Held::Hash(fields) = &mut entry.held else {
            return Err(WRONGTYPE);
        };
        let mut added = 0;
        for pair in pairs.chunks(2) {
            let [field, value] = pair else {
                return Err(SYNTAX);
            };
            match fields.iter_mut().find(|(f, _)| f == field) {
                Some((_, v)) => *v = value.clone(),
                None => {
                    fields.push((field.clone(), value.clone()));
                    added += 1;
                }
            }
        }
        Ok(CommandReply::Integer(added))
    }

    fn hdel(&mut self, key: &[u8], names: &[Vec<u8>]) -> Reply {
        self.hash(key)?;
        let Some(Key {
            held: Held::Hash(fields),
            ..
        }) = self.keys.get_mut(key)
        else {
            return Ok(CommandReply::Integer(0));
        };
        let before = fields.len();
        fields.retain(|(f, _)| !names.contains(f));
        let removed = before - fields.len();
        if fields.is_empty() {
            self.keys.remove(key);
        }
        Ok(CommandReply::Integer(removed as i64))
    }
}

/// An argument read as Redis reads integers.
fn integer(text: &[u8]) -> Result<i64, &'static str> {
    std::str::from_utf8(text)
        .ok()
        // Redis refuses a sign of `+` and leading zeros.
        .filter(|t| !(t.starts_with('+') || (t.len() > 1 && t.starts_with('0'))))
        .and_then(|t| t.parse().ok())
        .ok_or(NOT_AN_INTEGER)
}
