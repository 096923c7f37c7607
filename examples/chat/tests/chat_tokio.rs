//! The chat session, unchanged, on the tokio runtime against the in-memory backends,
//! with a scripted client standing in for the WebSocket server (which comes with the
//! server issue).

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use effectful::effect::{
    CreateUserOutcome, Request, Response, WebSocketRequest, WebSocketResponse,
};
use effectful::memory::Services;
use effectful::{EffectError, EffectId};
use effectful_chat::session::{ChatConfig, SessionEnd, chat_session};
use effectful_tokio::memory::MemoryWorld;
use effectful_tokio::{Interpreter, Runtime, ShardCx, SystemInterpreter};

/// What the client sent, what it received, and how the server closed it.
#[derive(Debug, Default)]
struct Client {
    to_send: VecDeque<String>,
    received: Vec<String>,
    closed_with: Option<u16>,
}

/// The WebSocket family for one session at a time: the client sends its lines in
/// order, then closes (1000).
struct ScriptedClient(Arc<Mutex<Client>>);

impl Interpreter for ScriptedClient {
    fn perform(&mut self, cx: &mut ShardCx<'_>, id: EffectId, request: Request) {
        let mut client = self.0.lock().expect("not poisoned");
        let answer = match request {
            Request::WebSocket(WebSocketRequest::ReceiveText(_)) => {
                match client.to_send.pop_front() {
                    Some(line) => Ok(WebSocketResponse::ReceiveText(line)),
                    None => Err(EffectError::websocket_closed(
                        "WebSocket.ReceiveText",
                        1000,
                        "the client closed the connection",
                    )),
                }
            }
            Request::WebSocket(WebSocketRequest::SendText(send)) => {
                client.received.push(send.text);
                Ok(WebSocketResponse::SendText(()))
            }
            Request::WebSocket(WebSocketRequest::Close(close)) => {
                client.closed_with = Some(close.reason.code());
                Ok(WebSocketResponse::Close(()))
            }
            other => Err(EffectError::unhandled(other.name(), vec![])),
        };
        cx.answer(id, answer.map(Response::WebSocket));
    }
}

#[test]
fn a_chat_session_runs_unchanged_on_tokio_against_the_in_memory_backends() {
    let world = MemoryWorld::with_services(Services::new(21));
    let created = world.with(|s| {
        s.database
            .create_user("ada@example.com".into(), "Ada".into(), "hash".into())
    });
    let CreateUserOutcome::Created(ada) = created else {
        panic!("a fresh database takes the user: {created:?}");
    };
    let client = Arc::new(Mutex::new(Client::default()));
    client.lock().expect("not poisoned").to_send = [
        format!("login {}", ada.id),
        "say n1 hello from tokio".into(),
        "history".into(),
        "profile".into(),
        "inbox".into(),
        "bye".into(),
    ]
    .into();
    let websocket = client.clone();
    let runtime = world
        .register(Runtime::builder().shards(2).seed(5))
        .interpreter("System", |_| SystemInterpreter::new())
        .interpreter("WebSocket", move |_| ScriptedClient(websocket.clone()))
        .build()
        .expect("runtime");
    let end = runtime.block_on(async {
        let config = ChatConfig::default();
        let handle = runtime
            .handle()
            .spawn(move |fx| chat_session(fx, Rc::new(config)))
            .await
            .expect("spawned");
        handle.await
    });
    runtime.shutdown(Duration::ZERO);
    assert_eq!(end, Ok(Ok(SessionEnd::Bye)));
    let client = client.lock().expect("not poisoned");
    let stored = world.with(|s| s.database.messages_for_user(ada.id).to_vec());
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].text, "hello from tokio");
    let id = stored[0].id.hyphenated().to_string();
    assert_eq!(
        client.received,
        [
            "welcome Ada".to_string(),
            format!("ack n1 {id}"),
            format!("history 1 {id}"),
            "profile Ada cached".to_string(),
            // Subscribed on first use, after the message was published.
            "inbox empty".to_string(),
        ]
    );
    assert_eq!(client.closed_with, Some(1000));
}
