//! The process's PostgreSQL thread: one current-thread tokio runtime that owns the
//! [`PgService`] (pool, connections, pending work) and its sockets, fed by every
//! shard's interpreter through one channel.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use effectful::effect::Response;
use effectful::postgres::{ConnId, Output, PgService, PoolStatus, Reply, ServiceConfig, Work};
use effectful::{EffectError, EffectId, Time};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::connect::PgConnector;
use crate::interpreter::{Replier, SplitStd};

/// What shards and handles ask of the thread.
pub(crate) enum Command<F: SplitStd> {
    Perform {
        shard: usize,
        id: EffectId,
        work: Work,
        replier: Replier<F>,
    },
    Cancel {
        shard: usize,
        id: EffectId,
    },
    Ping(oneshot::Sender<Result<(), EffectError>>),
    Status(oneshot::Sender<PoolStatus>),
    Shutdown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Effect(usize, EffectId),
    Ping(u64),
}

enum Target<F: SplitStd> {
    Effect(Replier<F>),
    Ping(oneshot::Sender<Result<(), EffectError>>),
}

enum Io {
    Connected(
        ConnId,
        mpsc::UnboundedSender<Bytes>,
        tokio::task::AbortHandle,
    ),
    ConnectFailed(ConnId, String),
    Input(ConnId, Bytes),
    Eof(ConnId),
}

struct Socket {
    writer: mpsc::UnboundedSender<Bytes>,
    reader: tokio::task::AbortHandle,
}

/// Runs the thread's loop until `Shutdown` or every sender is gone.
pub(crate) async fn run<F: SplitStd>(
    config: ServiceConfig,
    connector: PgConnector,
    mut commands: mpsc::UnboundedReceiver<Command<F>>,
) where
    F::Response: Send,
{
    let epoch = Instant::now();
    let now =
        move || Time::from_nanos(u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX));
    let mut service: PgService<Key> = PgService::new(config, now());
    let (io_tx, mut io_rx) = mpsc::unbounded_channel::<Io>();
    let mut sockets: HashMap<ConnId, Socket> = HashMap::new();
    let mut targets: HashMap<Key, Target<F>> = HashMap::new();
    let mut next_ping = 0u64;
    let mut shutting_down = false;
    loop {
        while let Some(output) = service.poll_output() {
            match output {
                Output::Connect { conn } => {
                    let io = io_tx.clone();
                    let connector = connector.clone();
                    tokio::task::spawn_local(async move {
                        match connector.connect().await {
                            Ok(stream) => start_io(conn, stream, io),
                            Err(why) => {
                                let _ = io.send(Io::ConnectFailed(conn, why.to_string()));
                            }
                        }
                    });
                }
                Output::Transmit { conn, bytes } => {
                    if let Some(socket) = sockets.get(&conn) {
                        let _ = socket.writer.send(bytes);
                    }
                }
                Output::Disconnect { conn } => {
                    if let Some(socket) = sockets.remove(&conn) {
                        socket.reader.abort();
                        // Dropping the writer's sender ends it after what is queued.
                    }
                }
                Output::Cancel { cancel } => {
                    let connector = connector.clone();
                    tokio::task::spawn_local(async move {
                        let bytes = cancel.to_bytes();
                        let sent = tokio::time::timeout(Duration::from_secs(10), async {
                            let mut stream =
                                connector.connect_plain().await.map_err(|e| e.to_string())?;
                            send_cancel(&mut stream, &bytes).await
                        })
                        .await;
                        if !matches!(sent, Ok(Ok(()))) {
                            tracing::warn!("a PostgreSQL cancel request could not be delivered");
                        }
                    });
                }
                Output::Answer { key, result } => match targets.remove(&key) {
                    Some(Target::Effect(replier)) => {
                        if let Key::Effect(_, id) = key {
                            let result = result.and_then(|reply| match reply {
                                Reply::Database(r) => Ok(F::embed_response(Response::Database(r))),
                                Reply::Storage(r) => Ok(F::embed_response(Response::Storage(r))),
                                _ => Err(EffectError::mismatched_response(
                                    "Database",
                                    "a reply of another kind",
                                )),
                            });
                            replier.answer(id, result);
                        }
                    }
                    Some(Target::Ping(tx)) => {
                        let _ = tx.send(result.map(|_| ()));
                    }
                    None => {}
                },
                _ => {}
            }
        }
        if shutting_down && sockets.is_empty() && service.pending() == 0 {
            break;
        }
        let deadline = service.poll_timeout();
        let sleep = async {
            match deadline {
                Some(t) => {
                    let at = epoch + t.since_epoch();
                    tokio::time::sleep_until(at.into()).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            biased;
            io = io_rx.recv() => {
                let Some(io) = io else { break };
                match io {
                    Io::Connected(conn, writer, reader) => {
                        if shutting_down {
                            reader.abort();
                            continue;
                        }
                        sockets.insert(conn, Socket { writer, reader });
                        let mut entropy = [0u8; effectful::postgres::NONCE_ENTROPY_LEN];
                        match crate::entropy::fill_secret(&mut entropy) {
                            Ok(()) => service.handle_connected(now(), conn, entropy),
                            Err(e) => service.handle_connect_failed(now(), conn, &e.to_string()),
                        }
                    }
                    Io::ConnectFailed(conn, why) => service.handle_connect_failed(now(), conn, &why),
                    Io::Input(conn, bytes) => service.handle_input(now(), conn, &bytes),
                    Io::Eof(conn) => {
                        service.handle_eof(now(), conn);
                        sockets.remove(&conn);
                    }
                }
            }
            command = commands.recv(), if !shutting_down => {
                match command {
                    Some(Command::Perform { shard, id, work, replier }) => {
                        let key = Key::Effect(shard, id);
                        targets.insert(key, Target::Effect(replier));
                        service.submit(now(), key, work);
                    }
                    Some(Command::Cancel { shard, id }) => {
                        let key = Key::Effect(shard, id);
                        service.cancel(now(), &key);
                        targets.remove(&key);
                    }
                    Some(Command::Ping(tx)) => {
                        next_ping += 1;
                        let key = Key::Ping(next_ping);
                        targets.insert(key, Target::Ping(tx));
                        service.submit(now(), key, Work::Ping);
                    }
                    Some(Command::Status(tx)) => {
                        let _ = tx.send(service.status());
                    }
                    Some(Command::Shutdown) | None => {
                        shutting_down = true;
                        service.close(now());
                    }
                }
            }
            () = sleep => service.handle_timeout(now()),
        }
    }
}

async fn send_cancel<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    bytes: &[u8],
) -> Result<(), String> {
    s.write_all(bytes).await.map_err(|e| e.to_string())?;
    // The server closes the socket once it has read the request.
    let _ = s.read(&mut [0u8; 1]).await;
    Ok(())
}

fn start_io<S: AsyncRead + AsyncWrite + 'static>(
    conn: ConnId,
    stream: S,
    io: mpsc::UnboundedSender<Io>,
) {
    let (mut read, mut write) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let reader_io = io.clone();
    let reader = tokio::task::spawn_local(async move {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            buf.reserve(64 * 1024);
            match read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = reader_io.send(Io::Eof(conn));
                    return;
                }
                Ok(_) => {
                    if reader_io
                        .send(Io::Input(conn, buf.split().freeze()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    let writer_io = io.clone();
    tokio::task::spawn_local(async move {
        while let Some(bytes) = rx.recv().await {
            // `write_all` may leave the tail in the stream's own buffer (TLS records
            // that did not fit the socket yet): flush, or the server waits for the
            // rest of a message that never comes until the next write.
            let written = match write.write_all(&bytes).await {
                Ok(()) if rx.is_empty() => write.flush().await,
                other => other,
            };
            if written.is_err() {
                let _ = writer_io.send(Io::Eof(conn));
                return;
            }
        }
        let _ = write.shutdown().await;
    });
    let _ = io.send(Io::Connected(conn, tx, reader.abort_handle()));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that keeps what is written until it is flushed (as a TLS stream
    /// keeps records the socket could not take yet): the writer must flush, or
    /// the server never sees the end of a large message.
    #[test]
    fn what_is_written_is_flushed_out_of_the_streams_own_buffer() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        let received = local.block_on(&runtime, async {
            let (ours, mut theirs) = tokio::io::duplex(1 << 20);
            let (io_tx, mut io_rx) = mpsc::unbounded_channel();
            start_io(ConnId(0), tokio::io::BufWriter::new(ours), io_tx);
            let Some(Io::Connected(_, writer, _)) = io_rx.recv().await else {
                panic!("the connection was not reported");
            };
            writer.send(Bytes::from_static(b"a message")).expect("sent");
            let mut got = [0u8; 9];
            tokio::time::timeout(Duration::from_secs(5), theirs.read_exact(&mut got))
                .await
                .expect("the bytes reached the other end within 5 s")
                .expect("read");
            got
        });
        assert_eq!(&received, b"a message");
    }
}
