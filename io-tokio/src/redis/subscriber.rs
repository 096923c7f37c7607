//! One pub/sub connection outside the pool ([`RedisPool::subscribe`]): RESP2
//! `SUBSCRIBE` to one channel, reconnecting with the pool's backoff, and a `PING`
//! now and then so a connection that died without a word is noticed.
//!
//! [`RedisPool::subscribe`]: super::pool::RedisPool::subscribe

use std::sync::Arc;
use std::time::Duration;

use effectful::Rng;
use effectful::redis::{
    Command, ConnectionError, Event, Protocol, Reconnect, ReconnectAction, RedisConnection,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::pool::{Connected, Heard, Slot, open, sleep_until, write_flushed};
use crate::clock::Clock;

/// How long a subscription connection may stay silent before it is asked a `PING`
/// (whose reply must come within the operation timeout, or the connection is
/// dropped and made again).
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Keeps `channel` subscribed for as long as the task lives.
pub(super) async fn run(
    slot: Arc<Slot>,
    channel: String,
    client_name: String,
    rng: Rng,
    mut on: Box<dyn FnMut(Heard) + Send>,
) {
    let clock = Clock::start();
    let mut config = slot.redis.clone();
    config.protocol = Protocol::Resp2;
    config.client_name = Some(client_name);
    let mut reconnect = Reconnect::new(clock.now(), slot.schedule.clone(), rng);
    loop {
        match reconnect.poll_action() {
            Some(ReconnectAction::Connect) => {}
            Some(ReconnectAction::GiveUp) => {
                tracing::warn!(target = %slot.target, %channel, "redis subscription given up");
                return;
            }
            None => {
                sleep_until(&clock, reconnect.poll_timeout()).await;
                reconnect.handle_timeout(clock.now());
                continue;
            }
        }
        let connected = match open(&slot).await {
            Ok(connected) => connected,
            Err(why) => {
                tracing::warn!(target = %slot.target, error = %why, "redis subscription: connect failed");
                reconnect.handle_failed(clock.now(), true);
                continue;
            }
        };
        let mut conn = RedisConnection::new(config.clone(), clock.now());
        // Pipelined behind the handshake; refused only past `max_pending`.
        let _ = conn.send(clock.now(), &Command::new("SUBSCRIBE").arg(&channel));
        let ended = match connected {
            Connected::Plain(s) => listen(&clock, s, conn, &mut reconnect, &mut *on).await,
            Connected::Tls(s) => listen(&clock, s, conn, &mut reconnect, &mut *on).await,
        };
        on(Heard::Listening(false));
        tracing::warn!(target = %slot.target, error = %ended, "redis subscription connection ended");
        reconnect.handle_failed(clock.now(), ended.is_retryable());
    }
}

/// Serves one subscription connection until it closes; why it did.
async fn listen<S: AsyncRead + AsyncWrite + Unpin>(
    clock: &Clock,
    mut stream: S,
    mut conn: RedisConnection,
    reconnect: &mut Reconnect,
    on: &mut (dyn FnMut(Heard) + Send),
) -> ConnectionError {
    let mut out = Vec::with_capacity(1024);
    let mut buf = vec![0u8; 16 * 1024];
    let mut ping_at = clock.now().saturating_add(KEEPALIVE);
    loop {
        out.clear();
        while conn.poll_transmit(&mut out).is_some() {}
        if !out.is_empty() && write_flushed(&mut stream, &out).await.is_err() {
            conn.handle_disconnect(clock.now());
        }
        let mut failed = false;
        while let Some(event) = conn.poll_event() {
            match event {
                Event::Ready { .. } => reconnect.handle_connected(clock.now()),
                Event::Subscription(change) if change.subscribed => on(Heard::Listening(true)),
                Event::Message(message) => on(Heard::Message(message.payload)),
                // The subscription refused, or a keepalive unanswered: start over.
                Event::Reply { result: Err(_), .. } => failed = true,
                Event::Closed(e) => return e,
                _ => {}
            }
        }
        if failed {
            conn.handle_disconnect(clock.now());
            continue;
        }
        let deadline = match conn.poll_timeout() {
            Some(at) => at.min(ping_at),
            None => ping_at,
        };
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => conn.handle_disconnect(clock.now()),
                Ok(n) => {
                    conn.handle_input(clock.now(), &buf[..n]);
                    ping_at = clock.now().saturating_add(KEEPALIVE);
                }
            },
            () = sleep_until(clock, Some(deadline)) => {
                let now = clock.now();
                if now >= ping_at {
                    ping_at = now.saturating_add(KEEPALIVE);
                    let _ = conn.send(now, &Command::new("PING"));
                }
                conn.handle_timeout(now);
            }
        }
    }
}

/// A client name for `CLIENT LIST` that says whose subscription it is: `prefix`'s
/// printable characters (Redis refuses spaces and control characters in names).
pub(super) fn client_name(prefix: &str) -> String {
    let shown: String = prefix
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    format!("effectful-wake:{shown}")
}
