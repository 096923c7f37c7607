//! `ws/echo`: small text messages echoed over loopback WebSockets, 64 in flight, by
//!
//! - `effectful`: the WebSocket route of `effectful_tokio::server` (served by
//!   `serve`, one shard) running an echo program (`ReceiveText` then `SendText`);
//! - `tokio_tungstenite`: the idiomatic tokio-tungstenite echo server (`next().await`
//!   then `send().await` in a loop) on a current-thread runtime of its own;
//!
//! both driven by the same tokio-tungstenite client, in the same run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use effectful::effect::{ReceiveText, SendText};
use effectful_tokio::Runtime;
use effectful_tokio::server::{EffectfulRouter, WebSocketInterpreter, WsRoute, serve};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const IN_FLIGHT: u64 = 64;
const TEXT: &str = "hello, effectful";

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Starts a server on a thread of its own; returns its address and a way to stop it.
fn on_thread(
    start: impl FnOnce(
        tokio::net::TcpListener,
        tokio::sync::oneshot::Receiver<()>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
    + Send
    + 'static,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || {
        let io = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a server runtime");
        io.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            addr_tx
                .send(listener.local_addr().expect("an address"))
                .expect("the bench waits");
            start(listener, stop_rx).await;
        });
    });
    let addr = addr_rx.recv().expect("the server started");
    (addr, stop_tx, thread)
}

async fn peer_server(
    listener: tokio::net::TcpListener,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if message.is_text() && ws.send(message).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Echoes `n` messages with `IN_FLIGHT` outstanding; returns the time taken.
async fn echo(client: &mut Client, n: u64) -> Duration {
    let started = Instant::now();
    let mut sent = 0;
    while sent < n.min(IN_FLIGHT) {
        client.feed(Message::text(TEXT)).await.expect("send");
        sent += 1;
    }
    client.flush().await.expect("flush");
    let mut received = 0;
    while received < n {
        match client.next().await {
            Some(Ok(Message::Text(t))) => {
                assert_eq!(t.as_str(), TEXT);
                received += 1;
                if sent < n {
                    client.send(Message::text(TEXT)).await.expect("send");
                    sent += 1;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("the echo server stopped: {other:?}"),
        }
    }
    started.elapsed()
}

fn ws_echo(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws/echo");
    group.throughput(Throughput::Elements(1));
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a client runtime");

    let runtime = Runtime::builder()
        .shards(1)
        .seed(1)
        .interpreter("WebSocket", WebSocketInterpreter::new)
        .build()
        .expect("runtime");
    let app = EffectfulRouter::new(runtime.handle().clone())
        .websocket("/echo", WsRoute::new(), |fx, _connect| async move {
            while let Ok(text) = fx.perform(ReceiveText {}).await {
                if fx.perform(SendText { text }).await.is_err() {
                    break;
                }
            }
        })
        .into_router();
    let handle = runtime.handle().clone();
    let (addr, stop, thread) = on_thread(move |listener, stop| {
        Box::pin(async move {
            serve(listener, app, handle, Duration::from_secs(1), async {
                let _ = stop.await;
            })
            .await
            .expect("serve");
        })
    });
    let mut client = client_rt.block_on(async {
        let (client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/echo"))
            .await
            .expect("connect to effectful");
        client
    });
    group.bench_function("effectful", |b| {
        b.iter_custom(|n| client_rt.block_on(echo(&mut client, n)))
    });
    client_rt.block_on(async {
        let _ = client.close(None).await;
    });
    let _ = stop.send(());
    thread.join().expect("the effectful server stopped");
    runtime.shutdown(Duration::from_secs(1));

    let (addr, stop, thread) = on_thread(|listener, stop| Box::pin(peer_server(listener, stop)));
    let mut client = client_rt.block_on(async {
        let (client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
            .await
            .expect("connect to the peer");
        client
    });
    group.bench_function("tokio_tungstenite", |b| {
        b.iter_custom(|n| client_rt.block_on(echo(&mut client, n)))
    });
    client_rt.block_on(async {
        let _ = client.close(None).await;
    });
    let _ = stop.send(());
    thread.join().expect("the peer server stopped");
    group.finish();
}

criterion_group!(benches, ws_echo);
criterion_main!(benches);
