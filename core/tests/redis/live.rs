//! The connection against a real Redis 7 on 127.0.0.1:6379, driven by a small
//! blocking std::net loop (the driver's job, done plainly), plus throwaway servers
//! with passwords for AUTH. Keys live under `effectful:redis-core:` and are deleted.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use effectful::Time;
use effectful::redis::{
    Command, CommandError, ConnectionError, Event, HandshakeStep, Message, Password, Protocol,
    RedisConfig, RedisConnection, RequestId, ServerErrorKind, ServerHello, SubscriptionKind, Value,
};

const ADDR: &str = "127.0.0.1:6379";
const START: &str = "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
     --save \"\" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log";
const PREFIX: &str = "effectful:redis-core:";

/// A key of this test run's own.
fn key(name: &str) -> String {
    format!("{PREFIX}{}:{name}", std::process::id())
}

fn cmd(parts: &[&str]) -> Command {
    Command::from_parts(parts).expect("a name")
}

/// One connection, driven by a blocking loop.
struct Live {
    stream: TcpStream,
    conn: RedisConnection,
    epoch: Instant,
    out: Vec<u8>,
    events: VecDeque<Event>,
}

impl Live {
    fn connect(config: RedisConfig) -> Live {
        Live::connect_to(ADDR, config)
    }

    fn connect_to(addr: &str, config: RedisConfig) -> Live {
        let target: SocketAddr = addr.parse().expect("an address");
        let stream =
            TcpStream::connect_timeout(&target, Duration::from_secs(2)).unwrap_or_else(|e| {
                panic!("cannot reach Redis at {addr} ({e}); start it with: {START}")
            });
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("read timeout");
        Live {
            stream,
            conn: RedisConnection::new(config, Time::ZERO),
            epoch: Instant::now(),
            out: Vec::new(),
            events: VecDeque::new(),
        }
    }

    fn resp(protocol: Protocol) -> Live {
        let mut config = RedisConfig::default();
        config.protocol = protocol;
        let mut live = Live::connect(config);
        live.ready();
        live
    }

    fn now(&self) -> Time {
        Time::from_nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// Writes what waits, reads once (briefly), fires timers, collects events.
    fn step(&mut self) {
        while self.conn.poll_transmit(&mut self.out).is_some() {}
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).expect("write to Redis");
            self.out.clear();
        }
        let mut buf = [0u8; 64 * 1024];
        let now = self.now();
        match self.stream.read(&mut buf) {
            Ok(0) => self.conn.handle_disconnect(now),
            Ok(n) => self.conn.handle_input(now, &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => self.conn.handle_disconnect(now),
        }
        let now = self.now();
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        while let Some(event) = self.conn.poll_event() {
            self.events.push_back(event);
        }
    }

    /// The first event that `pick` takes, leaving the others queued.
    fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self.events.iter().position(|e| pick(e).is_some()) {
                let event = self.events.remove(i).expect("present");
                return pick(&event).expect("picked");
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within 10 s; events so far: {:?}",
                self.events
            );
            self.step();
        }
    }

    fn ready(&mut self) -> (Protocol, Option<ServerHello>) {
        self.wait_for("Ready", |e| match e {
            Event::Ready { protocol, server } => Some((*protocol, server.clone())),
            Event::Closed(reason) => panic!("closed before ready: {reason}"),
            _ => None,
        })
    }

    fn closed(&mut self) -> ConnectionError {
        self.wait_for("Closed", |e| match e {
            Event::Closed(reason) => Some(reason.clone()),
            _ => None,
        })
    }

    fn send(&mut self, command: &Command) -> RequestId {
        let now = self.now();
        self.conn.send(now, command).expect("room to send")
    }

    fn reply(&mut self, id: RequestId) -> Result<Value, CommandError> {
        self.wait_for("reply", |e| match e {
            Event::Reply { id: got, result } if *got == id => Some(result.clone()),
            _ => None,
        })
    }

    fn call(&mut self, parts: &[&str]) -> Result<Value, CommandError> {
        let id = self.send(&cmd(parts));
        self.reply(id)
    }

    fn message(&mut self) -> Message {
        self.wait_for("message", |e| match e {
            Event::Message(m) => Some(m.clone()),
            _ => None,
        })
    }
}

#[test]
fn hello_3_switches_to_resp3_and_reports_the_server() {
    let mut live = Live::connect(RedisConfig::default());
    let (protocol, server) = live.ready();
    assert_eq!(protocol, Protocol::Resp3);
    let server = server.expect("HELLO's reply");
    assert_eq!((server.server.as_str(), server.proto), ("redis", 3));
    assert!(
        server.version.starts_with('7'),
        "Redis 7 expected, found {}",
        server.version
    );
    assert!(server.id > 0);
    // RESP3 types come through: a map from HGETALL, a double from ZSCORE.
    let (h, z) = (key("hello:h"), key("hello:z"));
    live.call(&["HSET", &h, "f", "v"]).unwrap();
    assert_eq!(
        live.call(&["HGETALL", &h]),
        Ok(Value::Map(vec![(
            Value::Bulk(b"f".to_vec()),
            Value::Bulk(b"v".to_vec())
        )]))
    );
    live.call(&["ZADD", &z, "1.5", "m"]).unwrap();
    assert_eq!(live.call(&["ZSCORE", &z, "m"]), Ok(Value::Double(1.5)));
    live.call(&["DEL", &h, &z]).unwrap();
}

fn pipeline_a_thousand(protocol: Protocol) {
    let mut live = Live::resp(protocol);
    let keys: Vec<String> = (0..500)
        .map(|i| key(&format!("pipe:{protocol:?}:{i}")))
        .collect();
    let mut ids = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        ids.push(live.send(&cmd(&["SET", k, &i.to_string()])));
    }
    for k in &keys {
        ids.push(live.send(&cmd(&["GET", k])));
    }
    assert_eq!(live.conn.in_flight(), 1_000);
    for (n, id) in ids.iter().enumerate() {
        let expected = if n < 500 {
            Value::Simple("OK".into())
        } else {
            Value::Bulk((n - 500).to_string().into_bytes())
        };
        assert_eq!(live.reply(*id), Ok(expected), "reply {n}");
    }
    let mut del = Command::new("DEL");
    for k in &keys {
        del.push(k);
    }
    let id = live.send(&del);
    assert_eq!(live.reply(id), Ok(Value::Int(500)));
}

#[test]
fn a_thousand_pipelined_commands_are_answered_in_order_on_resp3() {
    pipeline_a_thousand(Protocol::Resp3);
}

#[test]
fn a_thousand_pipelined_commands_are_answered_in_order_on_resp2() {
    pipeline_a_thousand(Protocol::Resp2);
}

#[test]
fn wrongtype_is_a_typed_error_and_the_connection_goes_on() {
    let mut live = Live::resp(Protocol::Resp3);
    let k = key("wrongtype");
    live.call(&["SET", &k, "string"]).unwrap();
    match live.call(&["LPUSH", &k, "x"]) {
        Err(CommandError::Server(e)) => assert_eq!(e.kind(), &ServerErrorKind::WrongType),
        other => panic!("expected WRONGTYPE, got {other:?}"),
    }
    assert_eq!(live.call(&["PING"]), Ok(Value::Simple("PONG".into())));
    live.call(&["DEL", &k]).unwrap();
}

#[test]
fn select_moves_the_connection_to_another_database() {
    let k = key("select");
    let mut config = RedisConfig::default();
    config.db = 9;
    let mut in_9 = Live::connect(config);
    in_9.ready();
    assert_eq!(in_9.conn.db(), 9);
    in_9.call(&["SET", &k, "in nine"]).unwrap();

    let mut other = Live::resp(Protocol::Resp2);
    assert_eq!(
        other.call(&["GET", &k]),
        Ok(Value::Nil),
        "database 0 does not see it"
    );
    other.call(&["SELECT", "9"]).unwrap();
    assert_eq!(other.conn.db(), 9);
    assert_eq!(
        other.call(&["GET", &k]),
        Ok(Value::Bulk(b"in nine".to_vec()))
    );
    match other.call(&["SELECT", "100000"]) {
        Err(CommandError::Server(e)) => assert_eq!(e.kind(), &ServerErrorKind::Err),
        got => panic!("expected an error, got {got:?}"),
    }
    assert_eq!(other.conn.db(), 9, "a refused SELECT changes nothing");
    in_9.call(&["DEL", &k]).unwrap();
}

fn pubsub_across_connections(protocol: Protocol) {
    let channel = key(&format!("chan:{protocol:?}"));
    let pattern = format!("{}*", key(&format!("chan:{protocol:?}")));
    let mut sub = Live::resp(protocol);
    let mut publisher = Live::resp(Protocol::Resp3);

    let confirmations = sub.call(&["SUBSCRIBE", &channel]).expect("subscribed");
    assert_eq!(confirmations.as_items().map(<[Value]>::len), Some(1));
    sub.call(&["PSUBSCRIBE", &pattern]).expect("subscribed");
    assert_eq!(sub.conn.subscriptions().count(SubscriptionKind::Channel), 1);
    assert_eq!(sub.conn.subscriptions().count(SubscriptionKind::Pattern), 1);

    assert_eq!(
        publisher.call(&["PUBLISH", &channel, "hi"]),
        Ok(Value::Int(2))
    );
    let mut got = [sub.message(), sub.message()];
    got.sort_by_key(|m| m.kind);
    assert_eq!(got[0].kind, SubscriptionKind::Channel);
    assert_eq!(
        (got[0].channel.as_slice(), got[0].payload.as_slice()),
        (channel.as_bytes(), &b"hi"[..])
    );
    assert_eq!(got[1].pattern.as_deref(), Some(pattern.as_bytes()));

    // PING works while subscribed on both protocols (RESP2 answers it as an array).
    let pong = sub.call(&["PING"]).expect("pong");
    match protocol {
        Protocol::Resp2 => assert_eq!(pong.as_items().and_then(|i| i[0].as_str()), Some("pong")),
        Protocol::Resp3 => assert_eq!(pong, Value::Simple("PONG".into())),
    }
    if protocol == Protocol::Resp3 {
        // Ordinary commands share the connection with the pushes.
        let k = key("pubsub:plain");
        let publish = publisher.send(&cmd(&["PUBLISH", &channel, "between"]));
        assert_eq!(publisher.reply(publish), Ok(Value::Int(2)));
        assert_eq!(sub.call(&["GET", &k]), Ok(Value::Nil));
        assert_eq!(sub.message().payload, b"between");
        assert_eq!(sub.message().payload, b"between");
    }
    sub.call(&["UNSUBSCRIBE"]).expect("unsubscribed");
    sub.call(&["PUNSUBSCRIBE"]).expect("unsubscribed");
    assert!(sub.conn.subscriptions().is_empty());
    assert_eq!(
        publisher.call(&["PUBLISH", &channel, "nobody"]),
        Ok(Value::Int(0))
    );
}

#[test]
fn pubsub_delivers_messages_across_connections_on_resp2() {
    pubsub_across_connections(Protocol::Resp2);
}

#[test]
fn pubsub_delivers_messages_across_connections_on_resp3() {
    pubsub_across_connections(Protocol::Resp3);
}

#[test]
fn a_timed_out_command_leaves_the_connection_usable() {
    let mut config = RedisConfig::default();
    config.operation_timeout = Some(Duration::from_millis(100));
    let mut live = Live::connect(config);
    live.ready();
    let empty = key("timeout:empty-list");
    let slow = live.send(&cmd(&["BLPOP", &empty, "0.4"]));
    let ping = live.send(&cmd(&["PING"]));
    assert!(matches!(
        live.reply(slow),
        Err(CommandError::TimedOut { .. })
    ));
    // PING's own deadline passes too while BLPOP blocks the connection.
    assert!(matches!(
        live.reply(ping),
        Err(CommandError::TimedOut { .. })
    ));
    // Once BLPOP's late nil and PING's late PONG are read and dropped, replies match again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while live.conn.in_flight() > 0 {
        assert!(Instant::now() < deadline, "late replies never came");
        live.step();
    }
    assert_eq!(
        live.call(&["ECHO", "after"]),
        Ok(Value::Bulk(b"after".to_vec()))
    );
}

/// A redis-server of our own on a free port, with a password and an ACL user,
/// removed when dropped.
struct Throwaway {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl Throwaway {
    fn start() -> Throwaway {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!(
            "effectful-redis-auth-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let child = Process::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .args(["--requirepass", "default-pw"])
            .args(["--user", "alice", "on", ">alice-pw", "~*", "&*", "+@all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}); install it: sudo apt-get install redis-server"
                )
            });
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the throwaway redis-server on {addr} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Throwaway { child, dir, addr }
    }

    fn connect(&self, protocol: Protocol, user: Option<&str>, password: Option<&str>) -> Live {
        let mut config = RedisConfig::default();
        config.protocol = protocol;
        config.username = user.map(str::to_owned);
        config.password = password.map(Password::new);
        Live::connect_to(&self.addr, config)
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn auth_with_a_password_or_a_user_and_password_on_a_real_server() {
    let server = Throwaway::start();
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        for (user, password) in [(None, "default-pw"), (Some("alice"), "alice-pw")] {
            let mut live = server.connect(protocol, user, Some(password));
            let (spoken, _) = live.ready();
            assert_eq!(spoken, protocol);
            let whoami = live.call(&["ACL", "WHOAMI"]).unwrap();
            assert_eq!(
                whoami.as_str(),
                Some(user.unwrap_or("default")),
                "{protocol:?}"
            );
        }

        let mut wrong = server.connect(protocol, Some("alice"), Some("nope"));
        match wrong.closed() {
            ConnectionError::Handshake { step, error } => {
                let expected = if protocol == Protocol::Resp3 {
                    HandshakeStep::Hello
                } else {
                    HandshakeStep::Auth
                };
                assert_eq!(step, expected);
                assert_eq!(error.kind(), &ServerErrorKind::WrongPass);
            }
            other => panic!("expected a refused handshake, got {other}"),
        }
    }
    // Without a password RESP2 connects (no handshake), and commands are refused.
    let mut anonymous = server.connect(Protocol::Resp2, None, None);
    anonymous.ready();
    match anonymous.call(&["GET", "k"]) {
        Err(CommandError::Server(e)) => assert_eq!(e.kind(), &ServerErrorKind::NoAuth),
        other => panic!("expected NOAUTH, got {other:?}"),
    }
}

/// One Cache effect through the adapter on a live connection.
fn cache_call(
    live: &mut Live,
    cache: &effectful::redis::CacheAdapter,
    request: effectful::effect::CacheRequest,
) -> Result<effectful::effect::CacheResponse, effectful::EffectError> {
    let (mut command, mut pending) = cache.command(request)?;
    loop {
        let id = live.send(&command);
        let reply = live.reply(id);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970");
        let now = effectful::Timestamp::from_unix_micros(now.as_micros() as i64);
        match cache.response(pending, reply, now) {
            effectful::redis::CacheStep::Answer(answer) => return answer,
            effectful::redis::CacheStep::Send(next, next_pending) => {
                (command, pending) = (next, next_pending);
            }
        }
    }
}

fn cache_adapter_on_a_real_server(protocol: Protocol) {
    use effectful::effect::{
        CacheLookup, CacheRequest as R, CacheResponse as A, DeleteCachedProfile, GetCachedProfile,
        GetCachedValue, InvalidateCache, MissReason, ProfileData, PutCachedProfile, PutCachedValue,
    };
    let mut live = Live::resp(protocol);
    let cache = effectful::redis::CacheAdapter::new(key(&format!("cache-{protocol:?}:")));
    let get = |k: &str| R::GetCachedValue(GetCachedValue { key: k.into() });
    let put = |k: &str, v: &[u8], ttl| {
        R::PutCachedValue(PutCachedValue {
            key: k.into(),
            value: v.to_vec(),
            ttl_seconds: ttl,
        })
    };
    let miss = |k: &str, reason| {
        Ok(A::GetCachedValue(CacheLookup::Miss {
            key: k.into(),
            reason,
        }))
    };

    assert_eq!(
        cache_call(&mut live, &cache, get("a")),
        miss("a", MissReason::NotFound)
    );
    assert_eq!(
        cache_call(&mut live, &cache, put("a", b"1", Some(1))),
        Ok(A::PutCachedValue(()))
    );
    assert_eq!(
        cache_call(&mut live, &cache, put("b", b"2", None)),
        Ok(A::PutCachedValue(()))
    );
    assert_eq!(
        cache_call(&mut live, &cache, get("a")),
        Ok(A::GetCachedValue(CacheLookup::Hit {
            value: b"1".to_vec(),
            ttl_remaining: Some(1)
        }))
    );
    assert_eq!(
        cache_call(&mut live, &cache, get("b")),
        Ok(A::GetCachedValue(CacheLookup::Hit {
            value: b"2".to_vec(),
            ttl_remaining: None
        }))
    );
    std::thread::sleep(Duration::from_millis(1100));
    // Expired once, then forgotten.
    assert_eq!(
        cache_call(&mut live, &cache, get("a")),
        miss("a", MissReason::Expired)
    );
    assert_eq!(
        cache_call(&mut live, &cache, get("a")),
        miss("a", MissReason::NotFound)
    );

    // A value the server dropped before its time reads as evicted.
    assert_eq!(
        cache_call(&mut live, &cache, put("c", b"3", Some(60))),
        Ok(A::PutCachedValue(()))
    );
    live.call(&["DEL", &cache.redis_key("c")]).expect("DEL");
    assert_eq!(
        cache_call(&mut live, &cache, get("c")),
        miss("c", MissReason::Evicted)
    );

    // Rewriting without a time to live drops the marker.
    assert_eq!(
        cache_call(&mut live, &cache, put("d", b"4", Some(60))),
        Ok(A::PutCachedValue(()))
    );
    assert_eq!(
        cache_call(&mut live, &cache, put("d", b"5", None)),
        Ok(A::PutCachedValue(()))
    );
    assert_eq!(
        live.call(&["EXISTS", &cache.marker_key("d")]),
        Ok(Value::Int(0))
    );

    // Profiles are JSON under profile:{id}, seen by the value effects too.
    let user_id = uuid::Uuid::from_u128(7);
    let profile = ProfileData {
        user_id,
        name: "Ada".into(),
        email: "ada@x.io".into(),
    };
    let put_profile = R::PutCachedProfile(Box::new(PutCachedProfile {
        user_id,
        profile: profile.clone(),
        ttl_seconds: 300,
    }));
    assert_eq!(
        cache_call(&mut live, &cache, put_profile),
        Ok(A::PutCachedProfile(()))
    );
    assert_eq!(
        cache_call(
            &mut live,
            &cache,
            R::GetCachedProfile(GetCachedProfile { user_id })
        ),
        Ok(A::GetCachedProfile(CacheLookup::Hit {
            value: profile.clone(),
            ttl_remaining: Some(300)
        }))
    );
    let pkey = effectful::effect::profile_key(user_id);
    assert_eq!(
        cache_call(&mut live, &cache, get(&pkey)),
        Ok(A::GetCachedValue(CacheLookup::Hit {
            value: serde_json::to_vec(&profile).expect("json"),
            ttl_remaining: Some(300)
        }))
    );
    assert_eq!(
        cache_call(
            &mut live,
            &cache,
            R::DeleteCachedProfile(DeleteCachedProfile { user_id })
        ),
        Ok(A::DeleteCachedProfile(true))
    );
    assert_eq!(
        cache_call(
            &mut live,
            &cache,
            R::InvalidateCache(InvalidateCache { key: pkey.clone() })
        ),
        Ok(A::InvalidateCache(false))
    );
    // Not a profile: a protocol error naming the key.
    assert_eq!(
        cache_call(&mut live, &cache, put(&pkey, b"nope", None)),
        Ok(A::PutCachedValue(()))
    );
    let e = cache_call(
        &mut live,
        &cache,
        R::GetCachedProfile(GetCachedProfile { user_id }),
    )
    .expect_err("not a profile");
    assert_eq!(e.kind, effectful::ErrorKind::Protocol);
    assert!(e.message.contains(&pkey), "{}", e.message);

    // A key of another type: the server's WRONGTYPE, kept.
    live.call(&["LPUSH", &cache.redis_key("list"), "x"])
        .expect("LPUSH");
    let e = cache_call(&mut live, &cache, get("list")).expect_err("wrong type");
    assert_eq!(
        e.kind,
        effectful::ErrorKind::Service {
            code: Some("WRONGTYPE".into())
        }
    );
    for k in ["a", "b", "c", "d", "list", &pkey] {
        cache_call(
            &mut live,
            &cache,
            R::InvalidateCache(InvalidateCache { key: k.into() }),
        )
        .expect("cleaned up");
    }
}

#[test]
fn the_cache_adapter_tells_expired_evicted_and_not_found_apart_on_resp3() {
    cache_adapter_on_a_real_server(Protocol::Resp3);
}

#[test]
fn the_cache_adapter_tells_expired_evicted_and_not_found_apart_on_resp2() {
    cache_adapter_on_a_real_server(Protocol::Resp2);
}
