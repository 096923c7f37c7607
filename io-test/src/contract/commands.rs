//! The contract of `RedisCommand` on the cache: the subset the in-memory cache
//! answers (see `FakeCache`), with the replies and error texts Redis gives.

use std::time::Duration;

use effectful::Fx;
use effectful::effect::{CommandReply, RedisCommand};

use super::{ContractProgram, ServiceDriver, error_word};

/// A reply as one word: bulk strings as text.
fn reply_word(reply: &CommandReply) -> String {
    match reply {
        CommandReply::Nil => "nil".to_owned(),
        CommandReply::Integer(n) => n.to_string(),
        CommandReply::Bulk(b) => format!("\"{}\"", String::from_utf8_lossy(b)),
        CommandReply::Simple(s) => s.clone(),
        CommandReply::Array(items) => {
            let words: Vec<String> = items.iter().map(reply_word).collect();
            format!("[{}]", words.join(" "))
        }
        CommandReply::Error(e) => format!("error {e}"),
    }
}

/// The commands contract: strings (`GET`, `SET` with `NX`/`XX`/`EX`/`PX`, counters),
/// hashes, `DEL`/`EXISTS`, `EXPIRE`/`TTL`, a key expiring, and Redis' error replies
/// for a wrong type, a non-integer, a zero expiry and a wrong arity. Its keys are
/// unique to the process, deleted first and last. Takes about 0.5 s of driver time.
pub fn check_cache_commands(driver: &mut impl ServiceDriver) {
    let base = format!("effectful-commands-{}:", std::process::id());
    let program: ContractProgram = Box::new(move |fx: Fx| {
        Box::pin(async move {
            let mut seen = Vec::new();
            let key = |name: &str| format!("{base}{name}");
            let (s, n, h, t) = (key("s"), key("n"), key("h"), key("t"));
            let missing = key("missing");
            let run = |args: Vec<&str>| fx.perform(RedisCommand::new(args));
            macro_rules! see {
                ($($arg:expr),+) => {
                    seen.push(match run(vec![$($arg),+]).await {
                        Ok(reply) => reply_word(&reply),
                        Err(e) => error_word(&e),
                    })
                };
            }
            let _ = run(vec!["DEL", &s, &n, &h, &t]).await;
            see!("GET", &s);
            see!("SET", &s, "v");
            see!("get", &s);
            see!("SET", &s, "w", "NX");
            see!("SET", &s, "w", "XX");
            see!("GET", &s);
            see!("SET", &missing, "x", "XX");
            see!("INCR", &n);
            see!("INCRBY", &n, "10");
            see!("DECR", &n);
            see!("DECRBY", &n, "3");
            see!("INCR", &s);
            see!("HSET", &h, "a", "1", "b", "2");
            see!("HSET", &h, "a", "3");
            see!("HGET", &h, "a");
            see!("HGET", &h, "z");
            see!("HGETALL", &h);
            see!("HDEL", &h, "a", "z");
            see!("HGETALL", &missing);
            see!("GET", &h);
            see!("HGET", &s, "a");
            see!("EXISTS", &s, &h, &missing);
            see!("TTL", &n);
            see!("EXPIRE", &n, "100");
            see!("TTL", &n);
            see!("TTL", &missing);
            see!("EXPIRE", &missing, "10");
            see!("SET", &t, "soon", "PX", "200");
            see!("SET", &s, "v", "EX", "0");
            see!("GET");
            let _ = fx.sleep(Duration::from_millis(400)).await;
            see!("GET", &t);
            see!("DEL", &s, &missing);
            let _ = run(vec!["DEL", &s, &n, &h, &t]).await;
            seen
        })
    });
    let expected: Vec<String> = [
        "nil",
        "OK",
        "\"v\"",
        "nil",
        "OK",
        "\"w\"",
        "nil",
        "1",
        "11",
        "10",
        "7",
        "error ERR value is not an integer or out of range",
        "2",
        "0",
        "\"3\"",
        "nil",
        "[\"a\" \"3\" \"b\" \"2\"]",
        "1",
        "[]",
        "error WRONGTYPE Operation against a key holding the wrong kind of value",
        "error WRONGTYPE Operation against a key holding the wrong kind of value",
        "2",
        "-1",
        "1",
        "100",
        "-2",
        "0",
        "OK",
        "error ERR invalid expire time in 'set' command",
        "error ERR wrong number of arguments for 'get' command",
        "nil",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(driver.run(program), Ok(expected));
}
