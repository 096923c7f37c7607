//! The shard's side of the WebSocket route: [`WebSocketInterpreter`] answers a
//! program's WebSocket effects from its connection's [`WsSession`], one local task
//! per connection moves the session's bytes to and from the socket, and one writer
//! task per shard writes out what sends queued.
//!
//! # How a program finds its connection
//! The route starts the program through the runtime's [`Handle`](crate::Handle); the
//! closure that makes the program runs on the shard, where it [`attach`]es the
//! connection (still on its way: the HTTP upgrade finishes after the `101`) under the
//! program's id. The interpreter of that shard finds it there by the id of each
//! effect's program. Both share the shard's table of connections, installed in the
//! shard thread by the interpreter's factory.
//!
//! # Answers and frames
//! - `ReceiveText` takes the oldest text frame the program has not read, or waits for
//!   the next one. A frame handed to a waiting receive through the shard's inbox is
//!   kept until the program asks again: if the receive was cancelled meanwhile (a
//!   `race`, a time limit), the frame goes back to the front, so none is lost.
//! - `SendText` is answered once the frame is queued for the socket; past
//!   `WsConfig::max_queued_bytes` it fails and the session closes with 1008
//!   `Client too slow`. The shard's writer task writes the queued frames out once
//!   the shard's loop yields, every connection with something queued in one run
//!   (see [`Outgoing`]).
//! - `Close` starts the close handshake with the program's reason.
//! - Once the connection ended (the client closed or vanished, the server closed),
//!   the frames that came first are still read, then every WebSocket effect fails
//!   per [`effectful::policy::Disconnect`]. The program is never aborted for it.
//! - Once the server starts closing (the program's `Close`, the runtime's shutdown),
//!   a receive with no frame waiting fails at once with that close code, so a
//!   program learns of a shutdown without waiting for the client's answer.
//! - The program's end closes a still-open connection with
//!   [`effectful::policy::close_reason`] (1000, 1001, 1008 `Timeout`, 1011); the
//!   runtime's shutdown closes every session with 1001.
//! - Binary messages are not part of the WebSocket family: they are read and dropped
//!   (logged at debug).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use effectful::effect::{Request, Response, WebSocketRequest, WebSocketResponse};
use effectful::policy::Disconnect;
use effectful::websocket::{WsConfig, WsEvent, WsMessage, WsSendError, WsSession};
use effectful::{EffectError, EffectId, ProgramError, ProgramId, ProgramMap, Time};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::deadline::DeadlineSleep;
use crate::interpreter::{Interpreter, ShardContext, ShardCx, SplitStd, misrouted};

/// How an answer to `ReceiveText` reaches the shard from the connection's task.
type AnswerFn = Rc<dyn Fn(EffectId, Result<String, EffectError>)>;

/// One shard's connections, by the program serving each (by the id's slot: every
/// WebSocket effect looks its connection up, so no hashing).
#[derive(Clone)]
struct ShardSessions {
    conns: Rc<RefCell<ProgramMap<Rc<RefCell<Conn>>>>>,
    outgoing: Rc<RefCell<Outgoing>>,
    answer: AnswerFn,
    clock: Clock,
}

/// The connections with bytes to write since the shard's writer last ran: sends
/// queue frames, and one task per shard writes them all out once the shard's loop
/// yields. A room message reaches a thousand sessions with one task switch rather
/// than one per session, and a session sent two frames before the writer runs
/// still writes them in one call.
#[derive(Default)]
struct Outgoing {
    conns: Vec<Rc<RefCell<Conn>>>,
    /// The writer task, to wake when the first connection joins the list.
    writer: Option<Waker>,
    /// Whether the writer task was started (on the first connection).
    started: bool,
}

impl Outgoing {
    /// Puts `conn` on the list, unless it is there already.
    fn push(&mut self, conn: &Rc<RefCell<Conn>>, c: &mut Conn) {
        if c.listed {
            return;
        }
        c.listed = true;
        self.conns.push(conn.clone());
        if self.conns.len() == 1 {
            if let Some(writer) = self.writer.take() {
                writer.wake();
            }
        }
    }
}

/// The shard's writer task: writes out what the listed connections have queued.
async fn write_listed(outgoing: Rc<RefCell<Outgoing>>) {
    let mut listed = Vec::new();
    poll_fn(|cx| {
        {
            let mut o = outgoing.borrow_mut();
            o.writer = Some(cx.waker().clone());
            std::mem::swap(&mut o.conns, &mut listed);
        }
        for conn in listed.drain(..) {
            conn.borrow_mut().transmit();
        }
        Poll::<()>::Pending
    })
    .await;
}

thread_local! {
    /// The table of the shard running on this thread (set by the interpreter's factory).
    static SESSIONS: RefCell<Option<ShardSessions>> = const { RefCell::new(None) };
}

/// A connection as the route hands it to the shard, once hyper has upgraded it.
pub(crate) enum Handoff {
    /// The TCP stream itself (served by [`serve`](crate::server::serve)), taken off
    /// the HTTP runtime's reactor to join the shard's, and the bytes hyper had
    /// already read past the request.
    Tcp(std::net::TcpStream, axum::body::Bytes),
    /// hyper's upgraded IO, when the router is served by someone else: it stays on
    /// that runtime's reactor.
    Other(Box<dyn WsIo>),
}

/// Where the connection arrives.
pub(crate) type Incoming = oneshot::Receiver<Handoff>;

/// The upgraded connection's IO (hyper's `Upgraded` behind `TokioIo`, or a plain
/// stream).
pub(crate) trait WsIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> WsIo for T {}

/// Per-connection state, shared by the interpreter and the connection's task.
struct Conn {
    session: WsSession,
    /// Text frames the program has not read yet, in arrival order.
    frames: VecDeque<String>,
    /// A `ReceiveText` waiting for the next frame.
    receiver: Option<EffectId>,
    /// A frame sent to a waiting receive through the inbox, until the program asks
    /// again (then it was read) or cancels that receive (then it goes back).
    handed: Option<(EffectId, String)>,
    /// The code of the close the server started (the program's `Close`, shutdown):
    /// from then on a receive with no frame waiting fails at once.
    closing: Option<u16>,
    /// The connection's task, to wake after the interpreter changed the session.
    waker: Option<Waker>,
    /// The socket, once the connection's task has it.
    io: Option<Io>,
    /// Whether it is on the shard's list of connections to write out.
    listed: bool,
    answer: AnswerFn,
}

impl Conn {
    /// Drains the session's events (the drain rule): frames to the program, the end
    /// of the connection to a waiting receive.
    fn pump(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                WsEvent::Text(text) => match self.receiver.take() {
                    Some(id) => {
                        (self.answer)(id, Ok(text.clone()));
                        self.handed = Some((id, text));
                    }
                    None => self.frames.push_back(text),
                },
                WsEvent::Binary(data) => {
                    tracing::debug!(
                        bytes = data.len(),
                        "binary WebSocket message dropped: programs read text"
                    );
                }
                WsEvent::Closed(disconnect) => {
                    if let Some(id) = self.receiver.take() {
                        (self.answer)(id, Err(disconnect.error("WebSocket.ReceiveText")));
                    }
                }
                WsEvent::Opened { .. } | WsEvent::Rejected(_) => {}
            }
        }
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// For the shard's writer: writes the queued bytes to a TCP socket, as far as it
    /// takes them without waiting, and wakes the connection's task only when it has
    /// something left to do (bytes the socket did not take, a write error, a
    /// finished session to close, a socket that is not TCP or not here yet).
    fn transmit(&mut self) {
        self.listed = false;
        let Some(Io::Tcp(stream)) = &self.io else {
            return self.wake();
        };
        while let Some(bytes) = self.session.poll_transmit() {
            match stream.try_write(bytes) {
                Ok(n) if n > 0 => self.session.handle_transmitted(n),
                _ => return self.wake(),
            }
        }
        if self.session.is_finished() {
            self.wake();
        }
    }

    /// The error an effect gets on a connection that has ended (or is closing).
    fn closed_error(&self, effect: &'static str) -> EffectError {
        match (self.session.disconnect(), self.closing) {
            (Some(disconnect), _) => disconnect.error(effect),
            (None, code) => Disconnect::ServerClosed {
                code: code.unwrap_or(1000),
            }
            .error(effect),
        }
    }

    /// The server starts closing with `code`: a receive waiting for a frame fails now.
    fn start_closing(&mut self, code: u16) {
        self.closing.get_or_insert(code);
        if let Some(id) = self.receiver.take() {
            let error = self.closed_error("WebSocket.ReceiveText");
            (self.answer)(id, Err(error));
        }
    }
}

/// Registers the connection of `program` with this shard and starts its task.
/// Called on the shard, by the closure that makes the program.
pub(crate) fn attach(program: ProgramId, config: WsConfig, incoming: Incoming, gauge: Gauge) {
    let Some(shard) = SESSIONS.with(|s| s.borrow().clone()) else {
        tracing::error!(
            %program,
            "a WebSocket route started a program on a runtime without the WebSocket \
             interpreter; register it: .interpreter(\"WebSocket\", WebSocketInterpreter::new)"
        );
        return;
    };
    let now = shard.clock.now();
    let conn = Rc::new(RefCell::new(Conn {
        session: WsSession::upgraded(config.clone(), now),
        frames: VecDeque::new(),
        receiver: None,
        handed: None,
        closing: None,
        waker: None,
        io: None,
        listed: false,
        answer: shard.answer.clone(),
    }));
    // Nothing is displaced: the engine reuses a slot only after its program ended,
    // and `program_ended` took that program's connection out.
    let _ = shard.conns.borrow_mut().insert(program, conn.clone());
    gauge.inc();
    let task = drive(conn, incoming, shard.clock, config, gauge);
    tokio::task::spawn_local(task);
    let mut outgoing = shard.outgoing.borrow_mut();
    if !outgoing.started {
        outgoing.started = true;
        tokio::task::spawn_local(write_listed(shard.outgoing.clone()));
    }
}

/// The connection's task: waits for the upgraded IO, then moves bytes and time
/// between it and the session until the session is finished and its last bytes
/// written (or given up on after `close_timeout`).
async fn drive(
    conn: Rc<RefCell<Conn>>,
    incoming: Incoming,
    clock: Clock,
    config: WsConfig,
    gauge: Gauge,
) {
    let _open = SessionGuard { gauge };
    let io = match incoming.await {
        Ok(Handoff::Tcp(stream, read)) => match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => {
                let mut c = conn.borrow_mut();
                c.session.handle_input(clock.now(), &read);
                c.pump();
                Io::Tcp(stream)
            }
            Err(error) => {
                tracing::error!(%error, "the shard could not take the WebSocket's socket");
                let mut c = conn.borrow_mut();
                c.session.handle_eof(clock.now());
                c.pump();
                return;
            }
        },
        Ok(Handoff::Other(io)) => Io::Other(io),
        Err(_) => {
            // The upgrade failed: the client went before the connection was handed over.
            let mut c = conn.borrow_mut();
            c.session.handle_eof(clock.now());
            c.pump();
            return;
        }
    };
    conn.borrow_mut().io = Some(io);
    let _flush = FlushOnDrop { conn: conn.clone() };
    let mut buf = vec![0u8; config.read_chunk.max(512)];
    let mut sleep = DeadlineSleep::new(clock);
    // Once the session is finished, its last bytes get `close_timeout` to go out.
    let mut linger: Option<Time> = None;
    poll_fn(|cx| {
        loop {
            let mut c = conn.borrow_mut();
            let c = &mut *c;
            let Some(io) = c.io.as_mut() else {
                return Poll::Ready(());
            };
            let now = clock.now();
            // Write what is queued.
            let mut blocked = false;
            while let Some(bytes) = c.session.poll_transmit() {
                match io.pin().poll_write(cx, bytes) {
                    Poll::Ready(Ok(n)) if n > 0 => c.session.handle_transmitted(n),
                    Poll::Ready(Ok(_)) | Poll::Ready(Err(_)) => {
                        c.session.handle_eof(now);
                        c.pump();
                        return Poll::Ready(());
                    }
                    Poll::Pending => {
                        blocked = true;
                        break;
                    }
                }
            }
            if c.session.is_finished() {
                if !blocked {
                    let _ = io.pin().poll_shutdown(cx);
                    return Poll::Ready(());
                }
                let until = *linger.get_or_insert(now.saturating_add(config.close_timeout));
                if now >= until {
                    return Poll::Ready(());
                }
            } else {
                // Read what arrived.
                let mut read = ReadBuf::new(&mut buf);
                match io.pin().poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                        c.session.handle_input(now, read.filled());
                        c.pump();
                        continue;
                    }
                    Poll::Ready(_) => {
                        c.session.handle_eof(now);
                        c.pump();
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            // Time: keep-alive, idle timeout, the close handshake's wait, the linger.
            // Every frame heard moves the idle timeout on, and only an earlier
            // deadline resets the sleep (see `DeadlineSleep`): one woken early finds
            // nothing due in `handle_timeout` (nor the linger's end) and looks again.
            let want = match (c.session.poll_timeout(), linger) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            sleep.want(want);
            if sleep.poll_elapsed(cx).is_ready() {
                c.session.handle_timeout(clock.now());
                c.pump();
                continue;
            }
            c.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
    })
    .await;
}

/// Counts the session in the gauge while its task lives.
struct SessionGuard {
    gauge: Gauge,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The connection's socket: a TCP stream on the shard's reactor, or IO that stays
/// on the HTTP runtime's.
enum Io {
    Tcp(tokio::net::TcpStream),
    Other(Box<dyn WsIo>),
}

impl Io {
    fn pin(&mut self) -> Pin<&mut dyn WsIo> {
        match self {
            Io::Tcp(stream) => Pin::new(stream),
            Io::Other(io) => Pin::new(&mut **io),
        }
    }
}

/// When the task ends or is dropped, takes the socket out of the connection (it
/// closes), first writing what the socket takes now, without waiting, of any bytes
/// still queued (the shard stopped right after closing every session at shutdown):
/// the close frame usually fits.
struct FlushOnDrop {
    conn: Rc<RefCell<Conn>>,
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        let Ok(mut c) = self.conn.try_borrow_mut() else {
            return;
        };
        let Some(io) = c.io.take() else {
            return;
        };
        match io {
            Io::Tcp(stream) => {
                let Ok(mut stream) = stream.into_std() else {
                    return;
                };
                while let Some(bytes) = c.session.poll_transmit() {
                    match std::io::Write::write(&mut stream, bytes) {
                        Ok(n) if n > 0 => c.session.handle_transmitted(n),
                        _ => break,
                    }
                }
            }
            Io::Other(mut io) => {
                let mut cx = Context::from_waker(Waker::noop());
                while let Some(bytes) = c.session.poll_transmit() {
                    match Pin::new(&mut io).poll_write(&mut cx, bytes) {
                        Poll::Ready(Ok(n)) if n > 0 => c.session.handle_transmitted(n),
                        _ => break,
                    }
                }
            }
        }
    }
}

/// The WebSocket family's interpreter for programs started by the WebSocket route
/// ([`EffectfulRouter::websocket`](super::super::EffectfulRouter::websocket)).
/// Register it on the runtime those programs run on:
///
/// ```
/// use effectful_tokio::Runtime;
/// use effectful_tokio::server::WebSocketInterpreter;
///
/// let runtime = Runtime::builder()
///     .shards(1)
///     .interpreter("WebSocket", WebSocketInterpreter::new)
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// `ReceiveText` takes the oldest unread text frame or waits for the next (a frame
/// handed to a receive that was cancelled meanwhile goes back first, so none is
/// lost); `SendText` is answered once queued, and fails past
/// `WsConfig::max_queued_bytes` (the session closes with 1008 `Client too slow`);
/// `Close` starts the close handshake. After the connection ended, the frames that
/// came first are still read, then every effect fails with `WebSocketClosed` and the
/// close code (1006: the client vanished). Binary messages are dropped.
pub struct WebSocketInterpreter<F: SplitStd = effectful::Std> {
    sessions: ShardSessions,
    family: PhantomData<fn() -> F>,
}

impl<F: SplitStd> WebSocketInterpreter<F>
where
    F::Response: Send,
{
    /// The interpreter of one shard; pass `WebSocketInterpreter::new` to
    /// [`RuntimeBuilder::interpreter`](crate::RuntimeBuilder::interpreter).
    pub fn new(cx: &ShardContext<F>) -> Self {
        let replier = cx.replier();
        let answer: AnswerFn = Rc::new(move |id, result: Result<String, EffectError>| {
            let response = result.map(|text| {
                F::embed_response(Response::WebSocket(WebSocketResponse::ReceiveText(text)))
            });
            replier.answer(id, response);
        });
        let sessions = ShardSessions {
            conns: Rc::default(),
            outgoing: Rc::default(),
            answer,
            clock: cx.clock(),
        };
        SESSIONS.with(|s| *s.borrow_mut() = Some(sessions.clone()));
        WebSocketInterpreter {
            sessions,
            family: PhantomData,
        }
    }

    fn conn(&self, program: ProgramId) -> Option<Rc<RefCell<Conn>>> {
        self.sessions.conns.borrow().get(program).cloned()
    }
}

impl<F: SplitStd> Interpreter<F> for WebSocketInterpreter<F>
where
    F::Response: Send,
{
    fn perform(&mut self, cx: &mut ShardCx<'_, F>, id: EffectId, request: F::Request) {
        let request = match F::split_request(request) {
            Ok(Request::WebSocket(request)) => request,
            Ok(other) => {
                let request = F::embed_request(other);
                cx.answer(id, Err(misrouted::<F>("WebSocket", &request)));
                return;
            }
            Err(request) => {
                cx.answer(id, Err(misrouted::<F>("WebSocket", &request)));
                return;
            }
        };
        let name = request.name();
        let Some(conn) = self.conn(id.program()) else {
            let error = EffectError::new(
                name,
                effectful::ErrorKind::Unavailable,
                "this program serves no WebSocket connection; start it from \
                 EffectfulRouter::websocket",
            )
            .with_retryable(false);
            cx.answer(id, Err(error));
            return;
        };
        let mut c = conn.borrow_mut();
        let now = cx.now();
        let answer = match request {
            WebSocketRequest::ReceiveText(_) => {
                // Asking again means the frame handed last was read.
                c.handed = None;
                if let Some(text) = c.frames.pop_front() {
                    Ok(WebSocketResponse::ReceiveText(text))
                } else if c.session.is_finished() || c.closing.is_some() {
                    Err(c.closed_error(name))
                } else {
                    c.receiver = Some(id);
                    return;
                }
            }
            WebSocketRequest::SendText(send) => {
                let sent = c.session.handle_send(now, WsMessage::Text(send.text));
                c.pump();
                self.sessions.outgoing.borrow_mut().push(&conn, &mut c);
                match sent {
                    Ok(()) => Ok(WebSocketResponse::SendText(())),
                    Err(WsSendError::SlowClient { .. }) => Err(EffectError::websocket_closed(
                        name,
                        effectful::websocket::POLICY_VIOLATION,
                        "Client too slow",
                    )),
                    Err(_) => Err(c.closed_error(name)),
                }
            }
            WebSocketRequest::Close(close) => {
                if c.session.is_finished() {
                    Err(c.closed_error(name))
                } else {
                    c.session.handle_close(now, &close.reason);
                    c.start_closing(close.reason.code());
                    c.pump();
                    c.wake();
                    Ok(WebSocketResponse::Close(()))
                }
            }
        };
        drop(c);
        cx.answer(
            id,
            answer.map(|response| F::embed_response(Response::WebSocket(response))),
        );
    }

    fn cancel(&mut self, _cx: &mut ShardCx<'_, F>, id: EffectId) {
        let Some(conn) = self.conn(id.program()) else {
            return;
        };
        let mut c = conn.borrow_mut();
        if c.receiver == Some(id) {
            c.receiver = None;
        }
        // Its frame is on its way but will never be read: it goes back, first.
        if c.handed.as_ref().is_some_and(|(handed, _)| *handed == id)
            && let Some((_, text)) = c.handed.take()
        {
            c.frames.push_front(text);
        }
    }

    fn program_ended(
        &mut self,
        cx: &mut ShardCx<'_, F>,
        program: ProgramId,
        result: &Result<(), ProgramError>,
    ) {
        let Some(conn) = self.sessions.conns.borrow_mut().remove(program) else {
            return;
        };
        let mut c = conn.borrow_mut();
        c.receiver = None;
        c.handed = None;
        c.session.handle_program_end(cx.now(), result);
        c.pump();
        c.wake();
    }

    fn shutdown_began(&mut self, cx: &mut ShardCx<'_, F>) {
        let conns: Vec<_> = self
            .sessions
            .conns
            .borrow()
            .iter()
            .map(|(_, conn)| conn.clone())
            .collect();
        for conn in conns {
            let mut c = conn.borrow_mut();
            c.session.handle_shutdown(cx.now());
            c.start_closing(effectful::effect::CloseReason::GoingAway.code());
            c.pump();
            c.wake();
        }
    }
}

impl<F: SplitStd> Drop for WebSocketInterpreter<F> {
    fn drop(&mut self) {
        SESSIONS.with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                *s = None;
            }
        });
    }
}
