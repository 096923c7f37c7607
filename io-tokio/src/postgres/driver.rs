//! The process's PostgreSQL thread: one current-thread tokio runtime that owns the
//! [`PgService`] (pool, connections, pending work) and its sockets, fed by every
//! shard's interpreter through one channel.

use rustc_hash::FxHashMap as HashMap;
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

/// Inputs of one kind handled in a row before outputs are drained: a burst of 64
/// submissions becomes one pass over the service's outputs (and one write).
const BURST: usize = 256;

/// The thread's state between inputs.
struct Driver<F: SplitStd> {
    epoch: Instant,
    service: PgService<Key>,
    connector: PgConnector,
    io_tx: mpsc::UnboundedSender<Io>,
    sockets: HashMap<ConnId, Socket>,
    targets: HashMap<Key, Target<F>>,
    next_ping: u64,
    shutting_down: bool,
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
    let (io_tx, mut io_rx) = mpsc::unbounded_channel::<Io>();
    let mut driver = Driver::<F> {
        epoch,
        service: PgService::new(config, Time::ZERO),
        connector,
        io_tx,
        sockets: HashMap::default(),
        targets: HashMap::default(),
        next_ping: 0,
        shutting_down: false,
    };
    loop {
        driver.drain_outputs();
        if driver.shutting_down && driver.sockets.is_empty() && driver.service.pending() == 0 {
            break;
        }
        let deadline = driver.service.poll_timeout();
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
                driver.on_io(io);
                for _ in 1..BURST {
                    let Ok(io) = io_rx.try_recv() else { break };
                    driver.on_io(io);
                }
            }
            command = commands.recv(), if !driver.shutting_down => {
                driver.on_command(command);
                for _ in 1..BURST {
                    if driver.shutting_down {
                        break;
                    }
                    let Ok(command) = commands.try_recv() else { break };
                    driver.on_command(Some(command));
                }
            }
            () = sleep => {
                let now = driver.now();
                driver.service.handle_timeout(now);
            }
        }
    }
}

impl<F: SplitStd> Driver<F>
where
    F::Response: Send,
{
    fn now(&self) -> Time {
        Time::from_nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// Performs what the service asks for, until it asks for nothing more.
    fn drain_outputs(&mut self) {
        while let Some(output) = self.service.poll_output() {
            match output {
                Output::Connect { conn } => {
                    let io = self.io_tx.clone();
                    let connector = self.connector.clone();
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
                    if let Some(socket) = self.sockets.get(&conn) {
                        let _ = socket.writer.send(bytes);
                    }
                }
                Output::Disconnect { conn } => {
                    if let Some(socket) = self.sockets.remove(&conn) {
                        socket.reader.abort();
                        // Dropping the writer's sender ends it after what is queued.
                    }
                }
                Output::Cancel { cancel } => {
                    let connector = self.connector.clone();
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
                Output::Answer { key, result } => match self.targets.remove(&key) {
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
    }

    fn on_io(&mut self, io: Io) {
        let now = self.now();
        match io {
            Io::Connected(conn, writer, reader) => {
                if self.shutting_down {
                    reader.abort();
                    return;
                }
                self.sockets.insert(conn, Socket { writer, reader });
                let mut entropy = [0u8; effectful::postgres::NONCE_ENTROPY_LEN];
                match crate::entropy::fill_secret(&mut entropy) {
                    Ok(()) => self.service.handle_connected(now, conn, entropy),
                    Err(e) => self
                        .service
                        .handle_connect_failed(now, conn, &e.to_string()),
                }
            }
            Io::ConnectFailed(conn, why) => self.service.handle_connect_failed(now, conn, &why),
            Io::Input(conn, bytes) => self.service.handle_input(now, conn, &bytes),
            Io::Eof(conn) => {
                self.service.handle_eof(now, conn);
                self.sockets.remove(&conn);
            }
        }
    }

    fn on_command(&mut self, command: Option<Command<F>>) {
        let now = self.now();
        match command {
            Some(Command::Perform {
                shard,
                id,
                work,
                replier,
            }) => {
                let key = Key::Effect(shard, id);
                self.targets.insert(key, Target::Effect(replier));
                self.service.submit(now, key, work);
            }
            Some(Command::Cancel { shard, id }) => {
                let key = Key::Effect(shard, id);
                self.service.cancel(now, &key);
                self.targets.remove(&key);
            }
            Some(Command::Ping(tx)) => {
                self.next_ping += 1;
                let key = Key::Ping(self.next_ping);
                self.targets.insert(key, Target::Ping(tx));
                self.service.submit(now, key, Work::Ping);
            }
            Some(Command::Status(tx)) => {
                let _ = tx.send(self.service.status());
            }
            Some(Command::Shutdown) | None => {
                self.shutting_down = true;
                self.service.close(now);
            }
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

/// The most bytes gathered from the queue into one write.
const MAX_WRITE_BATCH: usize = 256 * 1024;

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
        let mut batch = BytesMut::new();
        while let Some(bytes) = rx.recv().await {
            // What is queued behind it goes out in the same write: 64 pipelined
            // queries cost one syscall, not 64.
            let out = if rx.is_empty() {
                &bytes[..]
            } else {
                batch.clear();
                batch.extend_from_slice(&bytes);
                while batch.len() < MAX_WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(more) => batch.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                &batch[..]
            };
            // `write_all` may leave the tail in the stream's own buffer (TLS records
            // that did not fit the socket yet): flush, or the server waits for the
            // rest of a message that never comes until the next write.
            let written = match write.write_all(out).await {
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
    fn what_is_queued_is_written_in_order_and_flushed_out_of_the_streams_own_buffer() {
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
            // Queued before the writer runs: they go out together, in order.
            for part in [&b"a "[..], b"mess", b"age"] {
                writer.send(Bytes::from_static(part)).expect("sent");
            }
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
