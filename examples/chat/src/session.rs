//! The chat program: one WebSocket session of the chat server, written once against
//! the effect API and run unchanged by the simulator and the server.
//!
//! # Protocol (JSON text frames)
//! | client sends | server answers |
//! |---|---|
//! | `{"type":"join","name":"alice"}` | `{"type":"joined","user_id":"..","history":[..]}`: the room's last 50 messages, oldest first, each a message object as below |
//! | `{"type":"send","text":".."}` | nothing directly: once the message is stored, every joined client, the sender included, gets `{"type":"message","id":"..","user_id":"..","name":"..","text":"..","created_at":"RFC 3339"}` |
//! | anything malformed or unknown, a `send` before a `join`, a second `join` | `{"type":"error","error":".."}`; the connection stays open |
//!
//! Names are unique: the first join of a name creates the user, later joins find it
//! (`Database.JoinChat`). A name is 1 to [`MAX_NAME_CHARS`] characters without control
//! characters; a text 1 to [`MAX_TEXT_CHARS`] characters.
//!
//! # Live delivery
//! PostgreSQL is the source of truth, and the room is totally ordered by `seq` (see
//! the Database family's docs: commit order is `seq` order). A joined session waits
//! on its client (`WebSocket.ReceiveText`) and on the room (`Database.WaitRoomMessages`
//! after the last `seq` it delivered) at once. Neither wait is cancelled when the
//! other finishes: each stays outstanding until it is answered, so a client frame is
//! never lost to a room message arriving first, nor the other way round. A room
//! answer is delivered in `seq` order, skipping any `seq` already delivered (a
//! message's id has one `seq`, so this drops repeats by id), and the next wait asks
//! for what comes after. A failed wait (a dropped listener, a restarted database, an
//! outage) is retried with backoff from the same `seq`, so the session catches up on
//! everything stored meanwhile: each message stored while a client is joined reaches
//! it exactly once, in the room's order.
//!
//! Messages are posted under an id the program draws first (`GenerateUuid`), so a post
//! retried after a lost answer is idempotent: a message is stored once.

use std::borrow::Cow;
use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use effectful::effect::*;
use effectful::{Effect, EffectError, Either, ErrorKind, Excerpt, Fx, Schedule};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How many of the room's latest messages a join shows by default.
pub const HISTORY_LENGTH: u32 = 50;

/// The longest name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// The longest message text, in characters.
pub const MAX_TEXT_CHARS: usize = 2_000;

/// How the chat program behaves.
#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// The most one attempt at an effect may take (not the waits: those last until
    /// the client or the room has something).
    pub effect_timeout: Duration,
    /// How failed effects are retried.
    pub retry: Schedule,
    /// How a failed wait for room messages is retried: for as long as the session
    /// lives, since the room is always worth catching up with.
    pub room_retry: Schedule,
    /// How many of the room's latest messages a join shows ([`HISTORY_LENGTH`]); at
    /// most [`MAX_ROOM_PAGE`].
    pub history_length: u32,
    /// Post messages under an id drawn before the first attempt, so retries are
    /// idempotent. Turn off to watch the simulator catch duplicated messages.
    pub idempotent_saves: bool,
    /// After a failed wait, catch up from the last delivered `seq`. Turn off (the
    /// session then resumes from the room's newest message, as a plain pub/sub
    /// listener that resubscribes would) to watch the simulator catch messages lost
    /// to a dropped listener.
    pub catch_up: bool,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            effect_timeout: Duration::from_secs(2),
            retry: Schedule::exponential(Duration::from_millis(50))
                .jittered(0.2)
                .max_delay(Duration::from_secs(2))
                .recurs(4),
            room_retry: Schedule::exponential(Duration::from_millis(100))
                .jittered(0.2)
                .max_delay(Duration::from_secs(5)),
            history_length: HISTORY_LENGTH,
            idempotent_saves: true,
            catch_up: true,
        }
    }
}

/// How a session ended, when the program ended it on its own terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client went away (close code: 1000 closed, 1006 vanished).
    Disconnected {
        /// The close code.
        code: u16,
    },
}

/// A frame from the client. Unknown fields are ignored; a missing or unknown `type`
/// is an error frame back.
#[derive(Deserialize)]
struct ClientFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

/// A frame to the client, as serde writes it whole.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame<'a> {
    Error { error: &'a str },
    Message(MessageFrame<'a>),
}

/// A room message as clients see it.
#[derive(Serialize)]
struct MessageFrame<'a> {
    id: Uuid,
    user_id: Uuid,
    name: &'a str,
    text: &'a str,
    created_at: String,
}

impl<'a> From<&'a RoomMessage> for MessageFrame<'a> {
    fn from(m: &'a RoomMessage) -> Self {
        MessageFrame {
            id: m.id,
            user_id: m.user_id,
            name: &m.name,
            text: &m.text,
            created_at: m.created_at.to_string(),
        }
    }
}

/// The name of the encoding the session keeps with each shared room message: its
/// `message` frame.
const MESSAGE_FRAME: &str = "effectful-chat message frame";

/// How a `message` frame starts; a history entry is the same object without it.
const MESSAGE_PREFIX: &str = "{\"type\":\"message\",";

/// `{"type":"message",...}`: one room message, as every joined client gets it.
/// Encoded once per message and process: the encoding lives with the shared message
/// (every session a post wakes holds the same one), so each delivery only copies it.
fn message_frame(m: &SharedRoomMessage) -> Cow<'_, str> {
    m.encoded(MESSAGE_FRAME, |m| {
        encode(&ServerFrame::Message(MessageFrame::from(m)))
    })
}

/// `{"type":"joined","user_id":"..","history":[..]}`, each history entry the
/// message's `message` frame without its `type`.
fn joined_frame(user_id: Uuid, history: &[SharedRoomMessage]) -> String {
    let mut frame = String::with_capacity(64 + 256 * history.len());
    frame.push_str("{\"type\":\"joined\",\"user_id\":\"");
    frame.push_str(
        user_id
            .hyphenated()
            .encode_lower(&mut Uuid::encode_buffer()),
    );
    frame.push_str("\",\"history\":[");
    for (i, m) in history.iter().enumerate() {
        if i > 0 {
            frame.push(',');
        }
        match message_frame(m).strip_prefix(MESSAGE_PREFIX) {
            Some(fields) => {
                frame.push('{');
                frame.push_str(fields);
            }
            // Not what serde writes; encoded on its own rather than cut wrong.
            None => frame.push_str(&encode(&MessageFrame::from(&**m))),
        }
    }
    frame.push_str("]}");
    frame
}

/// `value` as JSON. Nothing the session encodes can fail (no maps with non-string
/// keys, no failing `Serialize`).
fn encode(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Runs one chat session.
///
/// An infrastructure failure that retries could not mend ends the session with the
/// error, after closing the WebSocket with 1011.
pub async fn chat_session(fx: Fx, config: Rc<ChatConfig>) -> Result<SessionEnd, EffectError> {
    let session = Session {
        fx: &fx,
        config: &config,
    };
    match session.run().await {
        Ok(end) => Ok(end),
        Err(error) => {
            let reason = CloseReason::InternalError("internal error".into());
            let _ = fx.perform(Close { reason }).await;
            Err(error)
        }
    }
}

struct Session<'a> {
    fx: &'a Fx,
    config: &'a ChatConfig,
}

/// Who the session speaks for, once joined, and how far into the room it has
/// delivered. Shared by the two halves of the session (never borrowed across an
/// await).
struct Joined {
    user: ChatUser,
    last_seq: u64,
}

type State = RefCell<Option<Joined>>;

impl Session<'_> {
    /// The session's two halves run at once: one reads the client's frames and
    /// answers them (a post can take a while under retries), the other waits on the
    /// room and delivers. Neither is cancelled when the other finishes a turn.
    async fn run(&self) -> Result<SessionEnd, EffectError> {
        let state: State = RefCell::new(None);
        let mut client = pin!(Some(self.client_turn(&state)));
        // The room half starts once joined; made here (not yet polled, so nothing is
        // issued) only to fix the slot's type.
        let mut room = pin!(Some(self.room_turn(&state)));
        room.set(None);
        loop {
            let turn = poll_fn(|cx| {
                if let Some(next) = client.as_mut().as_pin_mut() {
                    if let Poll::Ready(done) = next.poll(cx) {
                        return Poll::Ready(Either::Left(done));
                    }
                }
                if let Some(next) = room.as_mut().as_pin_mut() {
                    if let Poll::Ready(done) = next.poll(cx) {
                        return Poll::Ready(Either::Right(done));
                    }
                }
                Poll::Pending
            })
            .await;
            match turn {
                Either::Left(done) => {
                    client.set(None);
                    if let Err(e) = done {
                        return closed(e);
                    }
                    if room.is_none() && state.borrow().is_some() {
                        room.set(Some(self.room_turn(&state)));
                    }
                    client.set(Some(self.client_turn(&state)));
                }
                Either::Right(done) => {
                    room.set(None);
                    if let Err(e) = done {
                        return closed(e);
                    }
                    room.set(Some(self.room_turn(&state)));
                }
            }
        }
    }

    /// Reads the client's next frame and answers it.
    async fn client_turn(&self, state: &State) -> Result<(), EffectError> {
        let text = self.fx.perform(ReceiveText {}).await?;
        self.on_frame(&text, state).await
    }

    /// Waits for the room's next messages and delivers them in `seq` order, each
    /// once.
    async fn room_turn(&self, state: &State) -> Result<(), EffectError> {
        let after = state.borrow().as_ref().map_or(0, |j| j.last_seq);
        match self.wait_room(after).await {
            Ok(messages) => {
                for m in &messages {
                    // A `seq` at or below the last delivered is a repeat: dropped.
                    if state.borrow().as_ref().is_none_or(|j| m.seq <= j.last_seq) {
                        continue;
                    }
                    self.send(message_frame(m).into_owned()).await?;
                    if let Some(j) = state.borrow_mut().as_mut() {
                        j.last_seq = m.seq;
                    }
                }
                Ok(())
            }
            // Only without catch-up: resume from the newest message.
            Err(e) if e.retryable => {
                self.fx.sleep(Duration::from_secs(1)).await;
                if let Some(newest) = self.newest_seq().await? {
                    if let Some(j) = state.borrow_mut().as_mut() {
                        j.last_seq = j.last_seq.max(newest);
                    }
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The room's messages after `after_seq`, once there are any. With catch-up, a
    /// failed wait is retried from the same `seq` for as long as it takes; without,
    /// the failure is returned (and the session skips ahead).
    async fn wait_room(&self, after_seq: u64) -> Result<Vec<SharedRoomMessage>, EffectError> {
        let wait = || {
            self.fx.perform(WaitRoomMessages {
                after_seq,
                limit: MAX_ROOM_PAGE,
            })
        };
        match self.config.catch_up {
            true => self.fx.retry_with(&self.config.room_retry, wait).await,
            false => wait().await,
        }
    }

    /// The `seq` of the room's newest message, if it has any and the database answers.
    async fn newest_seq(&self) -> Result<Option<u64>, EffectError> {
        match self.reliably(|| RoomHistory { limit: 1 }).await {
            Ok(newest) => Ok(newest.last().map(|m| m.seq)),
            Err(e) if e.retryable => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Handles one client frame. Errors are WebSocket failures (the client is gone)
    /// or failures no retry mends.
    async fn on_frame(&self, text: &str, state: &State) -> Result<(), EffectError> {
        let frame: ClientFrame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(_) => {
                return self
                    .error("malformed frame: expected a JSON object with a \"type\"")
                    .await;
            }
        };
        let user = state.borrow().as_ref().map(|j| j.user.clone());
        match (frame.kind.as_str(), user) {
            ("join", Some(user)) => {
                let why = ["already joined as ", &user.name].concat();
                self.error(&why).await
            }
            ("join", None) => {
                let Some(name) = frame.name.filter(|n| valid(n, MAX_NAME_CHARS, false)) else {
                    return self
                        .error("join needs a \"name\": 1 to 32 characters, no control characters")
                        .await;
                };
                match self.join(name).await? {
                    Some(j) => {
                        *state.borrow_mut() = Some(j);
                        Ok(())
                    }
                    None => self.error("the room is unavailable; join again").await,
                }
            }
            ("send", None) => self.error("join first").await,
            ("send", Some(user)) => {
                let Some(text) = frame.text.filter(|t| valid(t, MAX_TEXT_CHARS, true)) else {
                    return self
                        .error("send needs a \"text\": 1 to 2000 characters")
                        .await;
                };
                if !self.post(user.id, text).await? {
                    return self
                        .error("the message was not stored; send it again")
                        .await;
                }
                Ok(())
            }
            (other, _) => {
                let why = format!(
                    "unknown type {:?}: expected \"join\" or \"send\"",
                    Excerpt::head(other, 32).to_string()
                );
                self.error(&why).await
            }
        }
    }

    /// Finds or creates the user, reads the history and says `joined`; `None` when
    /// the database stayed unavailable.
    async fn join(&self, name: String) -> Result<Option<Joined>, EffectError> {
        let user = match self.reliably(|| JoinChat { name: name.clone() }).await {
            Ok(user) => user,
            Err(e) if e.retryable => return Ok(None),
            Err(e) => return Err(e),
        };
        let limit = self.config.history_length;
        let history = match self.reliably(|| RoomHistory { limit }).await {
            Ok(history) => history,
            Err(e) if e.retryable => return Ok(None),
            Err(e) => return Err(e),
        };
        self.send(joined_frame(user.id, &history)).await?;
        let last_seq = history.last().map_or(0, |m| m.seq);
        Ok(Some(Joined { user, last_seq }))
    }

    /// Stores a message; whether it surely was (when not, it may still have been:
    /// it then reaches every client, the sender included, through the room).
    async fn post(&self, user_id: Uuid, text: String) -> Result<bool, EffectError> {
        let message_id = match self.config.idempotent_saves {
            true => match self.reliably(|| GenerateUuid {}).await {
                Ok(id) => Some(id),
                Err(e) if e.retryable => return Ok(false),
                Err(e) => return Err(e),
            },
            false => None,
        };
        let post = || PostRoomMessage {
            user_id,
            text: text.clone(),
            message_id,
        };
        match self.reliably(post).await {
            Ok(_) => {}
            Err(e) if e.retryable => return Ok(false),
            Err(e) => return Err(e),
        }
        // Best effort: the message is stored.
        let _ = self
            .fx
            .perform(IncrementCounter {
                name: "chat_messages_total".into(),
                labels: Default::default(),
                value: 1.0,
            })
            .await;
        Ok(true)
    }

    async fn error(&self, why: &str) -> Result<(), EffectError> {
        self.send(encode(&ServerFrame::Error { error: why })).await
    }

    async fn send(&self, text: String) -> Result<(), EffectError> {
        self.fx.perform(SendText { text }).await
    }

    /// Performs the effect `attempt` makes, with a per-attempt timeout and the
    /// configured retries (each attempt makes its own request: nothing is copied for
    /// retries that never happen).
    async fn reliably<E: Effect<effectful::Std>>(
        &self,
        attempt: impl Fn() -> E,
    ) -> Result<E::Output, EffectError> {
        let timeout = self.config.effect_timeout;
        self.fx
            .retry_with(&self.config.retry, || {
                self.fx.perform_timeout(attempt(), timeout)
            })
            .await
    }
}

/// Whether `text` is 1 to `max` characters without control characters (but line
/// breaks and tabs, with `breaks`).
fn valid(text: &str, max: usize, breaks: bool) -> bool {
    // A character is at most 4 bytes: a longer text is refused before it is walked.
    !text.is_empty()
        && text.len() <= max * 4
        && text.chars().count() <= max
        && !text
            .chars()
            .any(|c| c.is_control() && !(breaks && (c == '\n' || c == '\t')))
}

/// A closed WebSocket ends the session normally; anything else is an error.
fn closed(error: EffectError) -> Result<SessionEnd, EffectError> {
    match error.kind {
        ErrorKind::WebSocketClosed { code, .. } => Ok(SessionEnd::Disconnected { code }),
        _ => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use effectful::Timestamp;

    /// The frames as serde encodes them whole, as the session once did.
    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Whole<'a> {
        Joined {
            user_id: Uuid,
            history: Vec<MessageFrame<'a>>,
        },
        Message(MessageFrame<'a>),
    }

    fn message(seq: u64, text: &str) -> SharedRoomMessage {
        SharedRoomMessage::new(RoomMessage {
            seq,
            id: Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0 + u128::from(seq)),
            user_id: Uuid::from_u128(42),
            name: "c7 \"the\" \\ one".into(),
            text: text.into(),
            created_at: Timestamp::from_unix_micros(1_764_000_000_123_456 + seq as i64),
        })
    }

    #[test]
    fn frames_are_the_bytes_serde_makes_of_the_whole_frame() {
        let room: Vec<SharedRoomMessage> = (1..=300)
            .map(|seq| message(seq, &format!("hello #{seq}\n\t\u{1} \u{e9}\u{1f600} \"q\"")))
            .collect();
        // Twice: once encoding, once from what each message keeps.
        for _ in 0..2 {
            for m in &room {
                assert_eq!(message_frame(m), encode(&Whole::Message((&**m).into())));
            }
            for end in [0usize, 1, 50, 300] {
                let history = &room[end.saturating_sub(50)..end];
                let whole = Whole::Joined {
                    user_id: Uuid::from_u128(7),
                    history: history.iter().map(|m| MessageFrame::from(&**m)).collect(),
                };
                assert_eq!(joined_frame(Uuid::from_u128(7), history), encode(&whole));
            }
        }
    }

    #[test]
    fn a_message_frame_is_encoded_once_and_shared_by_every_holder_of_the_message() {
        let m = message(5, "first");
        let held_elsewhere = m.clone();
        let first = message_frame(&m);
        let again = message_frame(&held_elsewhere);
        assert!(matches!(
            (&first, &again),
            (Cow::Borrowed(_), Cow::Borrowed(_))
        ));
        assert_eq!(first.as_ptr(), again.as_ptr(), "one encoding, not two");
        // An equal message that is not the same shared one has its own encoding,
        // with the same bytes; a different one its own bytes.
        let twin = SharedRoomMessage::new(m.message().clone());
        assert_eq!(message_frame(&twin), first);
        assert_ne!(message_frame(&twin).as_ptr(), first.as_ptr());
        let mut changed = m.message().clone();
        changed.text = "second".into();
        let other = SharedRoomMessage::new(changed);
        assert!(message_frame(&other).contains("\"text\":\"second\""));
        assert!(message_frame(&m).contains("\"text\":\"first\""));
    }
}
