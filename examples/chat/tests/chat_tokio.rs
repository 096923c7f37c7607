//! The chat session, unchanged, on the tokio runtime against the in-memory backends,
//! with scripted clients standing in for the WebSocket server: two sessions on two
//! shards speak JSON and see each other's messages through the room.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use effectful::effect::{Request, Response, WebSocketRequest, WebSocketResponse};
use effectful::memory::Services;
use effectful::{EffectError, EffectId, ProgramId};
use effectful_chat::session::{ChatConfig, SessionEnd, chat_session};
use effectful_tokio::memory::MemoryWorld;
use effectful_tokio::{Interpreter, Runtime, ShardCx, SystemInterpreter};
use serde_json::Value;

/// What a client sends, what it received, and how the server closed it.
#[derive(Debug, Default)]
struct Client {
    /// Lines to send; each is sent once the client has received as many frames as
    /// its number says (so a client can wait to see something first).
    to_send: VecDeque<(usize, String)>,
    received: Vec<String>,
    closed_with: Option<u16>,
    /// A receive waiting for the client's next line.
    waiting: Option<(EffectId, effectful_tokio::Replier)>,
}

impl Client {
    /// Answers a waiting receive if the client's next line is due.
    fn send_if_due(&mut self) {
        let due = self
            .to_send
            .front()
            .is_some_and(|(after, _)| self.received.len() >= *after);
        if !due {
            return;
        }
        if let Some((id, replier)) = self.waiting.take() {
            let (_, line) = self.to_send.pop_front().expect("due");
            let answer = Response::WebSocket(WebSocketResponse::ReceiveText(line));
            replier.answer(id, Ok(answer));
        }
    }
}

/// The WebSocket family: each program is one client, in the order programs first
/// ask for a frame. A client sends its lines when they are due; once all are sent and
/// it saw every text of `done_when`, it closes (1000).
struct ScriptedClients {
    clients: Vec<Arc<Mutex<Client>>>,
    /// Which program (on which shard) each client is.
    owners: Arc<Mutex<Vec<(usize, ProgramId)>>>,
    done_when: Vec<&'static str>,
}

impl ScriptedClients {
    fn done(&self, client: &Client) -> bool {
        client.to_send.is_empty()
            && self
                .done_when
                .iter()
                .all(|text| client.received.iter().any(|line| line.contains(text)))
    }
}

impl Interpreter for ScriptedClients {
    fn perform(&mut self, cx: &mut ShardCx<'_>, id: EffectId, request: Request) {
        let owner = (cx.shard(), id.program());
        let index = {
            let mut owners = self.owners.lock().expect("not poisoned");
            match owners.iter().position(|o| *o == owner) {
                Some(i) => i,
                None => {
                    owners.push(owner);
                    owners.len() - 1
                }
            }
        };
        let mut client = self.clients[index].lock().expect("not poisoned");
        let done = self.done(&client);
        let answer = match request {
            Request::WebSocket(WebSocketRequest::ReceiveText(_)) if done => {
                Err(EffectError::websocket_closed(
                    "WebSocket.ReceiveText",
                    1000,
                    "the client closed the connection",
                ))
            }
            Request::WebSocket(WebSocketRequest::ReceiveText(_)) => {
                client.waiting = Some((id, cx.replier()));
                client.send_if_due();
                return;
            }
            Request::WebSocket(WebSocketRequest::SendText(send)) => {
                client.received.push(send.text);
                client.send_if_due();
                // The last frame it waited for: it closes.
                if self.done(&client) {
                    if let Some((waiting, replier)) = client.waiting.take() {
                        replier.answer(
                            waiting,
                            Err(EffectError::websocket_closed(
                                "WebSocket.ReceiveText",
                                1000,
                                "the client closed the connection",
                            )),
                        );
                    }
                }
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

fn frame(line: &str) -> Value {
    serde_json::from_str(line).expect("the server speaks JSON")
}

#[test]
fn two_chat_sessions_on_tokio_see_each_others_messages_through_the_in_memory_room() {
    let world = MemoryWorld::with_services(Services::new(21));
    let ada = Arc::new(Mutex::new(Client::default()));
    let bob = Arc::new(Mutex::new(Client::default()));
    // Each speaks once joined, and stays until it saw both messages (live, or in its
    // history if it joined after the other spoke).
    ada.lock().expect("not poisoned").to_send = [
        (0, r#"{"type":"send","text":"too early"}"#.to_string()),
        (1, r#"{"type":"join","name":"ada"}"#.to_string()),
        (2, r#"{"type":"send","text":"hello from ada"}"#.to_string()),
    ]
    .into();
    bob.lock().expect("not poisoned").to_send = [
        (0, r#"{"type":"join","name":"bob"}"#.to_string()),
        (1, "{not json".to_string()),
        (2, r#"{"type":"send","text":"hello from bob"}"#.to_string()),
    ]
    .into();
    let clients = vec![ada.clone(), bob.clone()];
    let owners = Arc::new(Mutex::new(Vec::new()));
    let runtime = world
        .register(Runtime::builder().shards(2).seed(5))
        .interpreter("System", |_| SystemInterpreter::new())
        .interpreter("WebSocket", move |_| ScriptedClients {
            clients: clients.clone(),
            owners: owners.clone(),
            done_when: vec!["hello from ada", "hello from bob"],
        })
        .build()
        .expect("runtime");
    let ends = runtime.block_on(async {
        let mut handles = Vec::new();
        for _ in 0..2 {
            let handle = runtime
                .handle()
                .spawn(move |fx| chat_session(fx, Rc::new(ChatConfig::default())))
                .await
                .expect("spawned");
            handles.push(handle);
        }
        let mut ends = Vec::new();
        for handle in handles {
            ends.push(handle.await);
        }
        ends
    });
    runtime.shutdown(Duration::ZERO);
    for end in ends {
        assert_eq!(end, Ok(Ok(SessionEnd::Disconnected { code: 1000 })));
    }
    let room = world.with(|s| s.database.room().to_vec());
    let texts: Vec<&str> = room.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts.contains(&"hello from ada") && texts.contains(&"hello from bob"));
    let ada = ada.lock().expect("not poisoned");
    let bob = bob.lock().expect("not poisoned");
    let ada_frames: Vec<Value> = ada.received.iter().map(|l| frame(l)).collect();
    let bob_frames: Vec<Value> = bob.received.iter().map(|l| frame(l)).collect();
    assert_eq!(ada_frames[0]["error"], "join first");
    assert_eq!(ada_frames[1]["type"], "joined");
    assert_eq!(bob_frames[0]["type"], "joined");
    // Bob's malformed frame gets an error; a room message may come before it.
    let bob_error = bob_frames
        .iter()
        .find(|f| f["type"] == "error")
        .expect("an error frame for bob's malformed frame");
    assert!(
        bob_error["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("malformed")),
        "{bob_error}"
    );
    // Both saw both messages (in their history or live), in the room's order, field
    // for field the same.
    let messages = |frames: &[Value]| -> Vec<Value> {
        let mut seen = Vec::new();
        for f in frames {
            match f["type"].as_str() {
                Some("joined") => seen.extend(f["history"].as_array().unwrap().iter().cloned()),
                Some("message") => {
                    let mut m = f.clone();
                    m.as_object_mut().unwrap().remove("type");
                    seen.push(m);
                }
                _ => {}
            }
        }
        seen
    };
    let (seen_by_ada, seen_by_bob) = (messages(&ada_frames), messages(&bob_frames));
    assert_eq!(seen_by_ada.len(), 2, "{:?}", ada.received);
    assert_eq!(seen_by_ada, seen_by_bob);
    for (m, stored) in seen_by_ada.iter().zip(&room) {
        assert_eq!(m["id"], stored.id.to_string());
        assert_eq!(m["name"], stored.name);
        assert_eq!(m["created_at"], stored.created_at.to_string());
    }
    assert_eq!(ada.closed_with, None, "the client closed, not the server");
}
