//! One thread's PostgreSQL client: a [`PgService`] (pool, connections, pending work)
//! and its sockets as tasks on that thread's current-thread runtime.
//!
//! Each shard has one ([`PgClient::start`] from the interpreter's factory): a
//! program's effect is submitted to it inside [`Interpreter::perform`](crate::Interpreter::perform)
//! and answered through the shard's [`LocalReplier`], so neither crosses a thread. The
//! handle's own work (`ping`, `status`, `shutdown`) reaches it through a control
//! channel, the only thing that crosses threads.
//!
//! Answers are handed over only after the client's state is released ([`PgClient::drain`]
//! gathers them while it holds it): an answer may resume its program at once, and
//! the program's next effect comes straight back into [`PgClient::perform`].

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use effectful::effect::Response;
use effectful::postgres::{ConnId, Output, PgService, PoolStatus, Reply, ServiceConfig, Work};
use effectful::{EffectError, EffectId, Time};
use rustc_hash::FxHashMap as HashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot};

use super::connect::PgConnector;
use crate::clock::Clock;
use crate::deadline::DeadlineSleep;
use crate::interpreter::{Answer, LocalReplier, SplitStd};

/// What a handle asks of a thread's client, from any thread.
pub(crate) enum Control {
    Ping(oneshot::Sender<Result<(), EffectError>>),
    Status(oneshot::Sender<PoolStatus>),
    /// Close every connection; `done` is told once they are closed.
    Shutdown(Option<std::sync::mpsc::Sender<()>>),
    /// Close once the pings in flight are answered (the fallback, once shards run).
    Retire,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Effect(EffectId),
    Ping(u64),
}

struct Socket {
    writer: Rc<Outbox>,
    reader: tokio::task::AbortHandle,
}

impl Drop for Socket {
    /// The writer ends after what is queued (as it did when it read a channel
    /// whose sender was dropped).
    fn drop(&mut self) {
        self.writer.close();
    }
}

/// What waits to be written to one socket: every `Transmit` of a drain appends its
/// bytes, and the writer task takes them all at once.
type Outbox = crate::outbox::Outbox<BytesMut>;

/// A thread's client. Lives in an `Rc` shared by the thread's interpreters and its
/// tasks; every borrow of `state` ends before an `.await`.
pub(crate) struct PgClient<F: SplitStd> {
    clock: Clock,
    connector: PgConnector,
    /// Where effects' answers go (`None` on the fallback thread, which has none).
    replier: Option<LocalReplier<F>>,
    state: RefCell<State>,
    /// The answers one drain gathered, handed over once `state` is released (kept
    /// between drains for its capacity).
    answers: Cell<Vec<Answer<F>>>,
    /// The timer task's sleep (armed by every drain, polled by that task only), and
    /// the task's wake when the sleep was re-armed or the client stopped.
    sleep: RefCell<DeadlineSleep>,
    rearm: Notify,
    /// Notified once the client has stopped.
    done: Notify,
}

struct State {
    service: PgService<Key>,
    sockets: HashMap<ConnId, Socket>,
    pings: HashMap<u64, oneshot::Sender<Result<(), EffectError>>>,
    next_ping: u64,
    shutting_down: bool,
    retiring: bool,
    /// Told when the client has closed every connection.
    closed: Vec<std::sync::mpsc::Sender<()>>,
    /// Every connection is closed and nothing is pending: the tasks end.
    stopped: bool,
}

/// The error for work handed to a client that has stopped.
pub(crate) fn stopped(effect: &'static str) -> EffectError {
    EffectError::connection_lost(effect, "the PostgreSQL client has stopped")
}

impl<F: SplitStd> PgClient<F>
where
    F::Response: Send,
{
    /// Starts a client on this thread (inside a `LocalSet`): it opens the pool's
    /// `min_size` connections at once and serves `control` until it stops.
    pub(crate) fn start(
        config: ServiceConfig,
        connector: PgConnector,
        clock: Clock,
        replier: Option<LocalReplier<F>>,
        control: mpsc::UnboundedReceiver<Control>,
    ) -> Rc<PgClient<F>> {
        let client = Rc::new(PgClient {
            clock,
            connector,
            replier,
            answers: Cell::new(Vec::new()),
            state: RefCell::new(State {
                service: PgService::new(config, clock.now()),
                sockets: HashMap::default(),
                pings: HashMap::default(),
                next_ping: 0,
                shutting_down: false,
                retiring: false,
                closed: Vec::new(),
                stopped: false,
            }),
            sleep: RefCell::new(DeadlineSleep::new(clock)),
            rearm: Notify::new(),
            done: Notify::new(),
        });
        tokio::task::spawn_local(client.clone().timer());
        tokio::task::spawn_local(client.clone().serve(control));
        client.drain();
        client
    }

    /// Submits one effect's work; its answer reaches the shard's local inbox.
    pub(crate) fn perform(self: &Rc<Self>, now: Time, id: EffectId, work: Work) -> bool {
        {
            let mut state = self.state.borrow_mut();
            if state.shutting_down {
                return false;
            }
            state.service.submit(now, Key::Effect(id), work);
        }
        self.drain();
        true
    }

    /// The program no longer wants `id`'s answer.
    pub(crate) fn cancel(self: &Rc<Self>, now: Time, id: EffectId) {
        self.state
            .borrow_mut()
            .service
            .cancel(now, &Key::Effect(id));
        self.drain();
    }

    /// Closes every connection (work still waiting fails with a retryable error).
    pub(crate) fn close(self: &Rc<Self>) {
        {
            let mut state = self.state.borrow_mut();
            if !state.shutting_down {
                state.shutting_down = true;
                let now = self.clock.now();
                state.service.close(now);
            }
        }
        self.drain();
    }

    /// Resolves once every connection is closed after a shutdown.
    pub(crate) async fn stopped(&self) {
        if !self.state.borrow().stopped {
            self.done.notified().await;
        }
    }

    /// Serves the handle's requests until the client stops.
    async fn serve(self: Rc<Self>, mut control: mpsc::UnboundedReceiver<Control>) {
        while let Some(request) = control.recv().await {
            match request {
                Control::Ping(tx) => {
                    {
                        let mut state = self.state.borrow_mut();
                        if state.shutting_down {
                            let _ = tx.send(Err(stopped("Database.Ping")));
                            continue;
                        }
                        state.next_ping += 1;
                        let ping = state.next_ping;
                        state.pings.insert(ping, tx);
                        let now = self.clock.now();
                        state.service.submit(now, Key::Ping(ping), Work::Ping);
                    }
                    self.drain();
                }
                Control::Status(tx) => {
                    let _ = tx.send(self.state.borrow().service.status());
                }
                Control::Shutdown(done) => {
                    if let Some(done) = done {
                        self.state.borrow_mut().closed.push(done);
                    }
                    self.close();
                }
                Control::Retire => {
                    self.state.borrow_mut().retiring = true;
                    self.drain();
                }
            }
            if self.state.borrow().stopped {
                return;
            }
        }
        // Every handle is gone: nothing can reach this client any more but its shard.
        if self.replier.is_none() {
            self.close();
        }
    }

    /// Calls `handle_timeout` when the service's deadline comes. A deadline armed too
    /// early wakes it once for nothing; a later one never resets the sleep (every
    /// query moves the command timeout on: see [`DeadlineSleep`]).
    async fn timer(self: Rc<Self>) {
        loop {
            if self.state.borrow().stopped {
                return;
            }
            // Told, it looks again: a re-armed sleep must be polled to hold its waker.
            tokio::select! {
                biased;
                () = self.rearm.notified() => {}
                () = poll_fn(|cx| self.sleep.borrow_mut().poll_elapsed(cx)) => {
                    let now = self.clock.now();
                    self.state.borrow_mut().service.handle_timeout(now);
                    self.drain();
                }
            }
        }
    }

    /// Performs what the service asks for, until it asks for nothing more, and makes
    /// sure the timer wakes no later than the service's deadline; then, with the
    /// state released, hands over the answers it gathered with
    /// [`LocalReplier::answer_now`]: when the shard is idle (answers read from a
    /// socket) the program resumes inside the call, and its next effect reaches
    /// [`perform`](Self::perform) (which borrows the state) before the call returns.
    /// A reply segment then costs no wake of the shard's task (`pgcount` under
    /// callgrind: 0 shard polls per 64 answers against ~2 with `answer`, for about
    /// the same instructions per query).
    fn drain(self: &Rc<Self>) {
        let mut answers = self.answers.take();
        self.drain_state(&mut answers);
        if let Some(replier) = &self.replier {
            for (id, result) in answers.drain(..) {
                replier.answer_now(id, result);
            }
        }
        answers.clear();
        self.answers.set(answers);
    }

    /// [`drain`](Self::drain)'s work on the state, gathering effects' answers in
    /// `answers`.
    fn drain_state(self: &Rc<Self>, answers: &mut Vec<Answer<F>>) {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        loop {
            self.perform_outputs(state, answers);
            if state.retiring && !state.shutting_down && state.pings.is_empty() {
                state.shutting_down = true;
                let now = self.clock.now();
                state.service.close(now);
                continue;
            }
            break;
        }
        if state.shutting_down && state.sockets.is_empty() && state.service.pending() == 0 {
            if !state.stopped {
                state.stopped = true;
                for done in state.closed.drain(..) {
                    let _ = done.send(());
                }
                // The timer task looks once more and ends.
                self.rearm.notify_one();
                self.done.notify_one();
            }
            return;
        }
        if self.sleep.borrow_mut().want(state.service.poll_timeout()) {
            self.rearm.notify_one();
        }
    }

    fn perform_outputs(self: &Rc<Self>, state: &mut State, answers: &mut Vec<Answer<F>>) {
        while let Some(output) = state.service.poll_output() {
            match output {
                Output::Connect { conn } => {
                    let client = self.clone();
                    tokio::task::spawn_local(async move {
                        match client.connector.connect().await {
                            Ok(stream) => start_io(&client, conn, stream),
                            Err(why) => client.on_connect_failed(conn, &why.to_string()),
                        }
                    });
                }
                Output::Transmit { conn } => {
                    let service = &mut state.service;
                    match state.sockets.get(&conn) {
                        Some(socket) => socket.writer.push_with(|out| service.transmit(conn, out)),
                        // No socket to write to: the bytes are dropped, as the
                        // connection will be.
                        None => service.transmit(conn, &mut BytesMut::new()),
                    }
                }
                Output::TransmitLast { conn, bytes } => {
                    if let Some(socket) = state.sockets.get(&conn) {
                        socket.writer.push(&bytes);
                    }
                }
                Output::Disconnect { conn } => {
                    if let Some(socket) = state.sockets.remove(&conn) {
                        socket.reader.abort();
                        // Dropping it ends the writer after what is queued.
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
                Output::Answer { key, result } => match key {
                    Key::Effect(id) => {
                        let result = result.and_then(|reply| match reply {
                            Reply::Database(r) => Ok(F::embed_response(Response::Database(r))),
                            Reply::Storage(r) => Ok(F::embed_response(Response::Storage(r))),
                            _ => Err(EffectError::mismatched_response(
                                "Database",
                                "a reply of another kind",
                            )),
                        });
                        answers.push((id, result));
                    }
                    Key::Ping(ping) => {
                        if let Some(tx) = state.pings.remove(&ping) {
                            let _ = tx.send(result.map(|_| ()));
                        }
                    }
                },
                _ => {}
            }
        }
    }

    fn on_connected(self: &Rc<Self>, conn: ConnId, socket: Socket) {
        {
            let mut state = self.state.borrow_mut();
            if state.shutting_down {
                socket.reader.abort();
                drop(state);
                // The pool was told to close this one already: report it gone.
                return self.on_connect_failed(conn, "the client is shutting down");
            }
            state.sockets.insert(conn, socket);
            let now = self.clock.now();
            let mut entropy = [0u8; effectful::postgres::NONCE_ENTROPY_LEN];
            match crate::entropy::fill_secret(&mut entropy) {
                Ok(()) => state.service.handle_connected(now, conn, entropy),
                Err(e) => state
                    .service
                    .handle_connect_failed(now, conn, &e.to_string()),
            }
        }
        self.drain();
    }

    fn on_connect_failed(self: &Rc<Self>, conn: ConnId, why: &str) {
        let now = self.clock.now();
        self.state
            .borrow_mut()
            .service
            .handle_connect_failed(now, conn, why);
        self.drain();
    }

    fn on_input(self: &Rc<Self>, conn: ConnId, bytes: &[u8]) {
        let now = self.clock.now();
        self.state
            .borrow_mut()
            .service
            .handle_input(now, conn, bytes);
        self.drain();
    }

    fn on_eof(self: &Rc<Self>, conn: ConnId) {
        {
            let mut state = self.state.borrow_mut();
            let now = self.clock.now();
            state.service.handle_eof(now, conn);
            state.sockets.remove(&conn);
        }
        self.drain();
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

/// A connected socket's two tasks: the reader hands what it reads to the service at
/// once; the writer gathers what is queued into one write.
///
/// The reader is woken for each segment the server sends while it waits, and the
/// server flushes at every ReadyForQuery: with 64 pipelined queries on a quiet
/// machine that is some 30 wakes (each an epoll_wait, a recvfrom, the ACK it sends
/// and two context switches) per 64 answers, most of the client's CPU per query.
/// `SO_RCVLOWAT`, set from the answers still owed, would let the kernel wake it a few
/// times fewer (`scripts/pg-rcvlowat-probe` measures it); no safe crate in the tree
/// sets it, and the workspace forbids `unsafe`.
fn start_io<F: SplitStd, S: AsyncRead + AsyncWrite + 'static>(
    client: &Rc<PgClient<F>>,
    conn: ConnId,
    stream: S,
) where
    F::Response: Send,
{
    let (mut read, write) = tokio::io::split(stream);
    let outbox = Rc::new(Outbox::default());
    let reader_client = client.clone();
    let reader = tokio::task::spawn_local(async move {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            buf.reserve(64 * 1024);
            match read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return reader_client.on_eof(conn),
                Ok(n) => {
                    reader_client.on_input(conn, &buf[..n]);
                    buf.clear();
                }
            }
        }
    });
    let writer_client = client.clone();
    let queued = outbox.clone();
    tokio::task::spawn_local(async move {
        if write_queued(write, &queued).await.is_err() {
            writer_client.on_eof(conn);
        }
    });
    client.on_connected(
        conn,
        Socket {
            writer: outbox,
            reader: reader.abort_handle(),
        },
    );
}

/// Writes what `outbox` gathers, in order, until it is closed and empty; then shuts
/// the stream down.
async fn write_queued<W: AsyncWrite + Unpin>(mut write: W, outbox: &Outbox) -> std::io::Result<()> {
    // Two buffers swapped in turn: the drain appends to one while the other is
    // written, and neither is reallocated once grown.
    let mut out = BytesMut::new();
    while outbox.next(&mut out).await {
        write.write_all(&out).await?;
        out.clear();
        // `write_all` may leave the tail in the stream's own buffer (TLS records
        // that did not fit the socket yet): flush, or the server waits for the
        // rest of a message that never comes until the next write.
        if outbox.is_empty() {
            write.flush().await?;
        }
    }
    let _ = write.shutdown().await;
    Ok(())
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
        let received = runtime.block_on(async {
            let (ours, mut theirs) = tokio::io::duplex(1 << 20);
            let outbox = Rc::new(Outbox::default());
            // Queued before the writer runs: they go out together, in order.
            for part in [&b"a "[..], b"mess", b"age"] {
                outbox.push(part);
            }
            let queued = outbox.clone();
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async move {
                    let writer = tokio::task::spawn_local(async move {
                        write_queued(tokio::io::BufWriter::new(ours), &queued).await
                    });
                    let mut got = [0u8; 9];
                    tokio::time::timeout(Duration::from_secs(5), theirs.read_exact(&mut got))
                        .await
                        .expect("the bytes reached the other end within 5 s")
                        .expect("read");
                    // Queued after the first write, then closed: written before the
                    // stream is shut down.
                    outbox.push(b"!");
                    outbox.close();
                    writer.await.expect("joined").expect("written");
                    let mut rest = Vec::new();
                    tokio::time::timeout(Duration::from_secs(5), theirs.read_to_end(&mut rest))
                        .await
                        .expect("the stream was shut down within 5 s")
                        .expect("read");
                    (got, rest)
                })
                .await
        });
        assert_eq!(&received.0, b"a message");
        assert_eq!(
            received.1, b"!",
            "what was queued before the close, then the end"
        );
    }
}
