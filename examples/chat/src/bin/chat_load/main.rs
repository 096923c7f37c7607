//! `chat_load`: opens N chat clients against a running chat server and measures it.
//!
//! ```text
//! cargo run --release -p effectful-chat --bin chat_load -- \
//!     --url ws://127.0.0.1:8000/ws/chat --clients 1000 --rate 100 --duration 30s
//! ```
//!
//! Every client joins the room under a name of its own, then sends its share of
//! `--rate` messages per second (in total), each at its own phase so sends spread
//! evenly; every client reads every message. A message carries the instant it was
//! sent, so each delivery gives a latency from send to delivery at that client. The
//! report gives messages and deliveries per second, latency percentiles (p50, p95,
//! p99, max), deliveries missing (a message stored while a client was connected that
//! never reached it), and errors (failed connects and joins, error frames, closes);
//! `--json` prints it as one JSON object. The exit status is 1 when there were errors
//! or missing deliveries.
//!
//! The clients run on `--threads` threads (default: one per core), each a
//! single-threaded runtime with its share of the clients, over the generator's own
//! minimal WebSocket client (`ws.rs`): the generator usually shares the machine with
//! the server it measures, so what it spends per delivery is taken from the server.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

mod ws;
use ws::{Incoming, WsClient, WsError, WsUrl};

const USAGE: &str = "usage: chat_load [--url ws://HOST:PORT/ws/chat] [--clients N] [--rate MSGS_PER_SEC] \
    [--duration 30s] [--warmup 2s] [--threads N] [--json]";

#[derive(Clone, Debug)]
struct Options {
    url: String,
    /// `url`, parsed.
    target: WsUrl,
    clients: usize,
    rate: f64,
    duration: Duration,
    warmup: Duration,
    /// Threads the clients run on (client `i` on thread `i % threads`).
    threads: usize,
    json: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s or m")),
    };
    if !(0.0..1e7).contains(&seconds) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A whole number from 1 to `max`, or why not.
fn number_in(text: &str, flag: &str, max: usize) -> Result<usize, String> {
    text.parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| format!("{flag} must be a number from 1 to {max}"))
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        url: "ws://127.0.0.1:8000/ws/chat".to_owned(),
        target: WsUrl::parse("ws://127.0.0.1:8000/ws/chat")?,
        clients: 100,
        rate: 10.0,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        json: false,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--url" => {
                options.url = value()?.clone();
                options.target = WsUrl::parse(&options.url)?;
            }
            "--clients" => options.clients = number_in(value()?, "--clients", 100_000)?,
            "--rate" => {
                options.rate = value()?
                    .parse()
                    .ok()
                    .filter(|r: &f64| r.is_finite() && *r > 0.0 && *r <= 1e6)
                    .ok_or_else(|| "--rate must be messages per second, above 0".to_owned())?
            }
            "--duration" => options.duration = parse_duration(value()?)?,
            "--warmup" => options.warmup = parse_duration(value()?)?,
            "--threads" => options.threads = number_in(value()?, "--threads", 256)?,
            "--json" => options.json = true,
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(options)
}

/// Messages sent, closed when sending stops: one atomic holds the count and (its top
/// bit) the stop, so the count taken at the stop holds every message a client decided
/// to send before it and none after. (A count read beside a separate stop flag missed
/// a message whose sender checked the flag just before the stop and counted it just
/// after, while every client still received it.)
#[derive(Default)]
struct SentCount(AtomicU64);

impl SentCount {
    const STOPPED: u64 = 1 << 63;

    /// Counts one more message, unless sending has stopped (then false: do not send).
    fn count_one(&self) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n & Self::STOPPED == 0).then_some(n + 1)
            })
            .is_ok()
    }

    /// Stops sending; the messages counted before.
    fn stop(&self) -> u64 {
        self.0.fetch_or(Self::STOPPED, Ordering::AcqRel) & !Self::STOPPED
    }
}

/// What every client adds to.
#[derive(Default)]
struct Totals {
    sent: SentCount,
    delivered: AtomicU64,
    errors: AtomicU64,
    connected: AtomicU64,
    /// Latencies in microseconds, from every client.
    latencies: Mutex<Vec<u32>>,
    /// The first error, to show.
    first_error: Mutex<Option<String>>,
}

impl Totals {
    async fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().await;
        if first.is_none() {
            *first = Some(what);
        }
    }
}

/// The text of a load message: run tag, client, sequence, send instant (µs since the
/// run's start). Parsed back at delivery.
fn message_text(run: &str, client: usize, seq: u64, at_micros: u64) -> String {
    format!("load {run} {client} {seq} {at_micros}")
}

fn parse_message_text(run: &str, text: &str) -> Option<(usize, u64, u64)> {
    let mut parts = text.split(' ');
    (parts.next()? == "load" && parts.next()? == run).then_some(())?;
    let client = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let at = parts.next()?.parse().ok()?;
    Some((client, seq, at))
}

/// The fields of a server frame the load reads, borrowed from the frame's text
/// where it has no escapes.
#[derive(serde::Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    error: Option<std::borrow::Cow<'a, str>>,
}

struct Run {
    options: Options,
    tag: String,
    /// Seeds each client's WebSocket handshake key and masking keys.
    seed: u64,
    start: Instant,
    totals: Totals,
    /// Clients that have joined or failed; sending starts when all have, so every
    /// connected client is there for every message.
    settled: AtomicU64,
    all_settled: tokio::sync::Notify,
    /// Latencies count for messages sent from this instant (µs since `start`): the
    /// end of the warm-up.
    warm_after: AtomicU64,
    /// Turns true when the measured window ends: clients stop sending at once (a
    /// client at a low rate would otherwise sleep up to a whole period first).
    stop_sending: tokio::sync::watch::Sender<bool>,
    /// Set when every client may close.
    finished: AtomicBool,
}

impl Run {
    fn settle(&self) {
        let settled = self.settled.fetch_add(1, Ordering::AcqRel) + 1;
        if settled == self.options.clients as u64 {
            self.all_settled.notify_waiters();
        }
    }

    async fn wait_until_all_settled(&self) {
        loop {
            let notified = self.all_settled.notified();
            if self.settled.load(Ordering::Acquire) >= self.options.clients as u64 {
                return;
            }
            notified.await;
        }
    }

    fn micros(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

async fn client(run: Arc<Run>, index: usize) {
    let ws = match join(&run, index).await {
        Ok(ws) => ws,
        Err(e) => {
            run.totals.error(format!("client {index}: {e}")).await;
            run.settle();
            return;
        }
    };
    run.totals.connected.fetch_add(1, Ordering::Relaxed);
    run.settle();
    run.wait_until_all_settled().await;
    talk(run, index, ws).await;
}

/// Connects and joins; the connection once `joined` came.
async fn join(run: &Run, index: usize) -> Result<WsClient, String> {
    let url = &run.options.target;
    let seed = run.seed ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut ws = WsClient::connect(url, seed)
        .await
        .map_err(|e| format!("connect to {}{}: {e}", url.authority, url.path))?;
    let name = format!("load-{}-{index}", run.tag);
    let hello = json!({"type": "join", "name": name}).to_string();
    ws.send_text(&hello)
        .await
        .map_err(|e| format!("join: {e}"))?;
    // Wait for `joined` before sending.
    loop {
        match ws.next().await.map_err(|e| format!("before joined: {e}"))? {
            Some(Incoming::Text(text)) => {
                let frame: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                match frame["type"].as_str() {
                    Some("joined") => return Ok(ws),
                    Some("error") => return Err(format!("join refused: {}", frame["error"])),
                    _ => {}
                }
            }
            Some(Incoming::Binary) => {}
            Some(Incoming::Close(code)) => {
                return Err(format!("closed before joined (code {code:?})"));
            }
            None => match ws.fill().await {
                Ok(0) => return Err("closed before joined".to_owned()),
                Ok(_) => {}
                Err(e) => return Err(format!("before joined: {e}")),
            },
        }
    }
}

/// What woke a client's task.
enum Wake {
    Read(Result<usize, WsError>),
    Send,
    Stop,
    Check,
}

/// Sends this client's share of the rate, at its own phase, and reads every message
/// until the run finishes: one task per client, on one connection.
async fn talk(run: Arc<Run>, index: usize, mut ws: WsClient) {
    let period = Duration::from_secs_f64(run.options.clients as f64 / run.options.rate);
    let phase = period.mul_f64(index as f64 / run.options.clients as f64);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = run.stop_sending.subscribe();
    let mut sending = true;
    let mut seq = 0u64;
    // One timer per client, re-armed only when it fires, checks whether the run has
    // finished (a timeout around each read would register a timer per delivery:
    // 100,000 a second at full load).
    let mut check = tokio::time::interval(Duration::from_millis(200));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut latencies = Vec::new();
    let mut delivered = 0u64;
    let ended: Result<(), String> = 'run: loop {
        // Every whole message already read.
        loop {
            let text = match ws.next().await {
                Ok(Some(Incoming::Text(text))) => text,
                Ok(Some(Incoming::Binary)) => continue,
                Ok(Some(Incoming::Close(code))) => {
                    break 'run Err(format!("closed by the server (code {code:?})"));
                }
                Ok(None) => break,
                Err(e) => break 'run Err(e.to_string()),
            };
            match serde_json::from_str::<Frame<'_>>(text) {
                Ok(Frame {
                    kind: "message",
                    text: Some(body),
                    ..
                }) => {
                    let Some((_, _, at)) = parse_message_text(&run.tag, &body) else {
                        continue;
                    };
                    delivered += 1;
                    if at >= run.warm_after.load(Ordering::Relaxed) {
                        let latency = run.micros().saturating_sub(at);
                        latencies.push(u32::try_from(latency).unwrap_or(u32::MAX));
                    }
                }
                Ok(Frame {
                    kind: "error",
                    error,
                    ..
                }) => {
                    let error = error.as_deref().unwrap_or("(no text)");
                    run.totals
                        .error(format!("client {index}: error frame: {error:?}"))
                        .await;
                }
                Ok(_) => {}
                Err(_) => {
                    let text = text.chars().take(200).collect::<String>();
                    run.totals
                        .error(format!("client {index}: not a chat frame: {text}"))
                        .await;
                }
            }
        }
        if run.finished.load(Ordering::Relaxed) {
            break Ok(());
        }
        // The send timer first: a socket that always has bytes must not hold up
        // this client's sends.
        let wake = tokio::select! {
            biased;
            _ = ticks.tick(), if sending => Wake::Send,
            read = ws.fill() => Wake::Read(read),
            _ = stop.wait_for(|stop| *stop), if sending => Wake::Stop,
            _ = check.tick() => Wake::Check,
        };
        match wake {
            Wake::Read(Ok(0)) => break Err("connection ended".to_owned()),
            Wake::Read(Ok(_)) | Wake::Check => {}
            Wake::Read(Err(e)) => break Err(e.to_string()),
            Wake::Stop => sending = false,
            Wake::Send => {
                if !run.totals.sent.count_one() {
                    sending = false;
                    continue;
                }
                let text = message_text(&run.tag, index, seq, run.micros());
                let frame = json!({"type": "send", "text": text}).to_string();
                if let Err(e) = ws.send_text(&frame).await {
                    break Err(format!("send: {e}"));
                }
                seq += 1;
            }
        }
    };
    if let Err(e) = ended {
        run.totals.error(format!("client {index}: {e}")).await;
    }
    run.totals.delivered.fetch_add(delivered, Ordering::Relaxed);
    run.totals.latencies.lock().await.extend(latencies);
    let _ = ws.close().await;
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

/// Starts the clients on `options.threads` threads, each a single-threaded runtime
/// with its share (client `i` on thread `i % threads`): a client's task never moves
/// between threads, and a thread wakes only for its own clients' sockets (a
/// work-stealing runtime spent a sixth of the generator's user time on scheduling).
fn start_clients(run: &Arc<Run>) -> Result<Vec<std::thread::JoinHandle<()>>, String> {
    let threads = run.options.threads;
    (0..threads)
        .map(|t| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start tokio: {e}"))?;
            let run = run.clone();
            std::thread::Builder::new()
                .name(format!("chat_load-{t}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let clients: Vec<_> = (t..run.options.clients)
                            .step_by(threads)
                            .map(|i| tokio::spawn(client(run.clone(), i)))
                            .collect();
                        for client in clients {
                            let _ = client.await;
                        }
                    })
                })
                .map_err(|e| format!("cannot start a thread: {e}"))
        })
        .collect()
}

async fn load(options: Options) -> Result<Value, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tag = format!("{:x}", std::process::id() ^ nanos);
    let run = Arc::new(Run {
        options: options.clone(),
        seed: u64::from(nanos) << 32 | u64::from(std::process::id()),
        tag,
        start: Instant::now(),
        totals: Totals::default(),
        settled: AtomicU64::new(0),
        warm_after: AtomicU64::new(u64::MAX),
        all_settled: tokio::sync::Notify::new(),
        stop_sending: tokio::sync::watch::Sender::new(false),
        finished: AtomicBool::new(false),
    });
    let workers = start_clients(&run)?;
    let connecting = Instant::now();
    run.wait_until_all_settled().await;
    let connect_seconds = connecting.elapsed().as_secs_f64();
    let warmup = u64::try_from(options.warmup.as_micros()).unwrap_or(u64::MAX);
    run.warm_after
        .store(run.micros().saturating_add(warmup), Ordering::Relaxed);
    tokio::time::sleep(options.warmup + options.duration).await;
    let sent_at_stop = run.totals.sent.stop();
    run.stop_sending.send_replace(true);
    // Let the last messages arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.finished.store(true, Ordering::Relaxed);
    let joined = tokio::task::spawn_blocking(move || {
        workers.into_iter().all(|worker| worker.join().is_ok())
    })
    .await;
    if joined.ok() != Some(true) {
        return Err("a client thread panicked".to_owned());
    }
    let totals = &run.totals;
    let mut latencies = std::mem::take(&mut *totals.latencies.lock().await);
    latencies.sort_unstable();
    let connected = totals.connected.load(Ordering::Relaxed);
    let delivered = totals.delivered.load(Ordering::Relaxed);
    let expected = sent_at_stop * connected;
    let seconds = (options.warmup + options.duration).as_secs_f64();
    Ok(json!({
        "url": options.url,
        "clients": options.clients,
        "connected": connected,
        "connect_seconds": connect_seconds,
        "rate_asked": options.rate,
        "seconds": seconds,
        "messages_sent": sent_at_stop,
        "messages_per_second": sent_at_stop as f64 / seconds,
        "deliveries": delivered,
        "deliveries_per_second": delivered as f64 / seconds,
        "deliveries_missing": expected.saturating_sub(delivered),
        "latency_ms": {
            "samples": latencies.len(),
            "p50": percentile(&latencies, 50.0),
            "p95": percentile(&latencies, 95.0),
            "p99": percentile(&latencies, 99.0),
            "max": percentile(&latencies, 100.0),
        },
        "errors": totals.errors.load(Ordering::Relaxed),
        "first_error": *totals.first_error.lock().await,
        "threads": options.threads,
    }))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_args(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("chat_load: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chat_load: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match runtime.block_on(load(options.clone())) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("chat_load: {e}");
            return ExitCode::FAILURE;
        }
    };
    if options.json {
        println!("{report}");
    } else {
        let l = &report["latency_ms"];
        println!(
            "{} clients ({} connected), {:.1} s: {:.1} messages/s, {:.0} deliveries/s, {} missing, {} errors",
            report["clients"],
            report["connected"],
            report["seconds"].as_f64().unwrap_or(0.0),
            report["messages_per_second"].as_f64().unwrap_or(0.0),
            report["deliveries_per_second"].as_f64().unwrap_or(0.0),
            report["deliveries_missing"],
            report["errors"],
        );
        println!(
            "latency send -> delivery (ms, {} samples after warm-up): p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
            l["samples"],
            l["p50"].as_f64().unwrap_or(0.0),
            l["p95"].as_f64().unwrap_or(0.0),
            l["p99"].as_f64().unwrap_or(0.0),
            l["max"].as_f64().unwrap_or(0.0),
        );
        if let Some(first) = report["first_error"].as_str() {
            println!("first error: {first}");
        }
    }
    let clean =
        report["errors"].as_u64() == Some(0) && report["deliveries_missing"].as_u64() == Some(0);
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::{SentCount, parse_args};

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn threads_and_urls_are_checked_when_parsed() {
        let options = parse_args(&args("--threads 3 --url ws://h:9/x")).expect("valid");
        assert_eq!(options.threads, 3);
        assert_eq!(options.target.authority, "h:9");
        for (bad, says) in [
            ("--threads 0", "--threads must be"),
            ("--threads 257", "--threads must be"),
            ("--url wss://h/x", "not supported"),
            ("--url h:80", "not a ws:// URL"),
        ] {
            let error = parse_args(&args(bad)).expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn the_count_taken_at_the_stop_holds_every_message_before_and_none_after() {
        let sent = SentCount::default();
        assert!(sent.count_one());
        assert!(sent.count_one());
        assert_eq!(sent.stop(), 2);
        assert!(
            !sent.count_one(),
            "no message is counted (or sent) after the stop"
        );
        assert_eq!(sent.stop(), 2);
    }
}
