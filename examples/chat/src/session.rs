//! The chat program: one WebSocket session of the seed tutorial's chat server, written
//! once against the effect API and run unchanged by the simulator and the server.
//!
//! # Protocol (one text frame per line)
//! | client sends | server answers |
//! |---|---|
//! | `login <user-id>` (first) | `welcome <name>`, or `error unknown user` and close 1008 |
//! | `say <nonce> <text>` | `ack <nonce> <message-id>` once stored, or `nack <nonce>` |
//! | `history` | `history <count> <id>,<id>,...`: the user's last 50 messages (at most), oldest first |
//! | `rename <name>` | `renamed <name>`, or `error rename` |
//! | `profile` | `profile <name> cached` or `profile <name> fresh` |
//! | `inbox` | `inbox <message-id> <redelivery-count>` (the next message published to the room, acknowledged), or `inbox empty` |
//! | `bye` | close 1000 |
//! | anything else | `error unknown command` |
//!
//! Messages are stored under an id the program draws first (`GenerateUuid`), so a save
//! retried after a lost answer is idempotent: an acknowledged message is stored exactly
//! once. Each stored message is then published to the room topic; every user reads the
//! room through a subscription of their own, at least once: a delivery that repeats an
//! earlier one carries a redelivery count above zero, so a client can drop it.
//!
//! A rename invalidates the cached profile. A stale profile can still be served while
//! a cache entry written before the rename lives out its TTL: when the invalidation
//! itself failed, or when another session of the same user read the old name and
//! cached it just after the rename (a read-through race no cache delete prevents).

use std::rc::Rc;
use std::time::Duration;

use effectful::effect::*;
use effectful::{Effect, EffectError, ErrorKind, Fx, Schedule};
use uuid::Uuid;

/// How many of a user's latest messages `history` shows by default.
pub const HISTORY_LENGTH: u32 = 50;

/// How the chat program behaves.
#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// How long a cached profile lives (the seed's `CACHE_TTL_PROFILE`: 600 s).
    pub profile_ttl_seconds: u64,
    /// The most one attempt at an effect may take.
    pub effect_timeout: Duration,
    /// How failed effects are retried.
    pub retry: Schedule,
    /// The topic each stored message is published to.
    pub topic: String,
    /// How many of the user's latest messages `history` shows ([`HISTORY_LENGTH`]).
    /// One page of `ListMessagesForUser`, so at most [`MAX_MESSAGE_PAGE`].
    pub history_length: u32,
    /// Store messages under an id drawn before the first attempt, so retries are
    /// idempotent. Turn off to watch the simulator catch duplicated messages.
    pub idempotent_saves: bool,
    /// Publish with the message id as the broker's deduplication key. Turn off to
    /// watch the simulator catch a retried publish delivered twice as new.
    pub dedup_publishes: bool,
    /// Delete the cached profile after a rename. Turn off (with a long TTL) to watch
    /// the simulator catch stale profiles.
    pub invalidate_on_rename: bool,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            profile_ttl_seconds: 600,
            effect_timeout: Duration::from_secs(2),
            retry: Schedule::exponential(Duration::from_millis(50))
                .jittered(0.2)
                .max_delay(Duration::from_secs(2))
                .recurs(4),
            topic: "chat.messages".into(),
            history_length: HISTORY_LENGTH,
            idempotent_saves: true,
            dedup_publishes: true,
            invalidate_on_rename: true,
        }
    }
}

/// How a session ended, when the program ended it on its own terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client said `bye`.
    Bye,
    /// The client went away (close code: 1000 closed, 1006 vanished).
    Disconnected {
        /// The close code.
        code: u16,
    },
    /// The client did not log in as a known user.
    Rejected,
}

/// Runs one chat session.
///
/// An infrastructure failure that retries could not mend ends the session with the
/// error, after closing the WebSocket with 1011 as the seed tutorial does.
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

impl Session<'_> {
    async fn run(&self) -> Result<SessionEnd, EffectError> {
        let first = match self.receive().await? {
            Ok(text) => text,
            Err(end) => return Ok(end),
        };
        let Some(user_id) = first
            .strip_prefix("login ")
            .and_then(|id| Uuid::parse_str(id.trim()).ok())
        else {
            return self.reject("expected: login <user-id>").await;
        };
        let Some(name) = self.profile(user_id).await?.map(|(name, _)| name) else {
            return self.reject("unknown user").await;
        };
        if let Err(e) = self.send(["welcome ", &name].concat()).await {
            return closed(e);
        }
        loop {
            let line = match self.receive().await? {
                Ok(line) => line,
                Err(end) => return Ok(end),
            };
            let (command, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            let reply = match command {
                "say" => self.say(user_id, rest).await?,
                "history" => self.history(user_id).await?,
                "rename" => self.rename(user_id, rest).await?,
                "profile" => match self.profile(user_id).await? {
                    Some((name, cached)) => {
                        let how = if cached { "cached" } else { "fresh" };
                        ["profile ", &name, " ", how].concat()
                    }
                    None => "error unknown user".into(),
                },
                "inbox" => self.inbox(user_id).await?,
                "bye" => {
                    return match self
                        .fx
                        .perform(Close {
                            reason: CloseReason::Normal,
                        })
                        .await
                    {
                        Ok(()) => Ok(SessionEnd::Bye),
                        Err(e) => closed(e),
                    };
                }
                _ => "error unknown command".into(),
            };
            match self.send(reply).await {
                Ok(()) => {}
                Err(e) => return closed(e),
            }
        }
    }

    /// The next client line, or how the session ended.
    async fn receive(&self) -> Result<Result<String, SessionEnd>, EffectError> {
        match self.fx.perform(ReceiveText {}).await {
            Ok(text) => Ok(Ok(text)),
            Err(e) => closed(e).map(Err),
        }
    }

    async fn send(&self, text: String) -> Result<(), EffectError> {
        self.fx.perform(SendText { text }).await
    }

    async fn reject(&self, why: &str) -> Result<SessionEnd, EffectError> {
        let _ = self.send(["error ", why].concat()).await;
        let _ = self
            .fx
            .perform(Close {
                reason: CloseReason::PolicyViolation(why.into()),
            })
            .await;
        Ok(SessionEnd::Rejected)
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

    async fn say(&self, user_id: Uuid, rest: &str) -> Result<String, EffectError> {
        let (nonce, text) = rest.split_once(' ').unwrap_or((rest, ""));
        let message_id = match self.config.idempotent_saves {
            true => Some(self.reliably(|| GenerateUuid {}).await?),
            false => None,
        };
        let save = || SaveChatMessage {
            user_id,
            text: text.to_string(),
            message_id,
        };
        let stored = match self.reliably(save).await {
            Ok(stored) => stored,
            Err(e) if is_transient(&e) => return Ok(["nack ", nonce].concat()),
            Err(e) => return Err(e),
        };
        // Fan-out and metrics are best effort: the message is stored and will be
        // acknowledged. The message id is the deduplication key, so a publish retried
        // after a lost answer reaches the room once.
        let publish = || PublishMessage {
            topic: self.config.topic.clone(),
            payload: stored.id.as_bytes().to_vec(),
            properties: Default::default(),
            dedup_key: self.config.dedup_publishes.then(|| id_text(stored.id)),
        };
        let _ = self.reliably(publish).await;
        let _ = self
            .fx
            .perform(IncrementCounter {
                name: "chat_messages_total".into(),
                labels: Default::default(),
                value: 1.0,
            })
            .await;
        let mut id = Uuid::encode_buffer();
        let id = stored.id.hyphenated().encode_lower(&mut id);
        Ok(["ack ", nonce, " ", id].concat())
    }

    /// The next room message for this user, acknowledged once read.
    async fn inbox(&self, user_id: Uuid) -> Result<String, EffectError> {
        let mut subscription = [&self.config.topic, "/user-"].concat();
        push_id(&mut subscription, user_id);
        let consume = || ConsumeMessage {
            subscription: subscription.clone(),
            timeout_ms: 100,
        };
        let envelope = match self.reliably(consume).await {
            Ok(ConsumeOutcome::Message(envelope)) => envelope,
            Ok(ConsumeOutcome::Timeout) => return Ok("inbox empty".into()),
            Err(e) if is_transient(&e) => return Ok("error inbox unavailable".into()),
            Err(e) => return Err(e),
        };
        // Acknowledge at most once per delivery; a lost acknowledgement only means the
        // broker delivers it again, marked as a redelivery.
        let _ = self
            .fx
            .perform(AcknowledgeMessage {
                message_id: envelope.message_id.clone(),
            })
            .await;
        let id = Uuid::from_slice(&envelope.payload)
            .map(id_text)
            .unwrap_or_else(|_| "malformed".into());
        let mut count = itoa::Buffer::new();
        Ok(["inbox ", &id, " ", count.format(envelope.redelivery_count)].concat())
    }

    async fn history(&self, user_id: Uuid) -> Result<String, EffectError> {
        let latest = || ListMessagesForUser::latest(user_id, self.config.history_length);
        match self.reliably(latest).await {
            Ok(MessagePage { messages, .. }) => {
                let mut count = itoa::Buffer::new();
                let count = count.format(messages.len());
                let mut reply = String::with_capacity(10 + count.len() + messages.len() * 37);
                reply.push_str("history ");
                reply.push_str(count);
                reply.push(' ');
                for (i, m) in messages.iter().enumerate() {
                    if i > 0 {
                        reply.push(',');
                    }
                    push_id(&mut reply, m.id);
                }
                Ok(reply)
            }
            Err(e) if is_transient(&e) => Ok("error history unavailable".into()),
            Err(e) => Err(e),
        }
    }

    async fn rename(&self, user_id: Uuid, name: &str) -> Result<String, EffectError> {
        let update = || UpdateUser {
            user_id,
            email: None,
            name: Some(name.to_string()),
        };
        match self.reliably(update).await {
            Ok(UserLookup::Found(user)) => {
                // Invalidate; if even the retries fail, the stale entry dies with its TTL.
                if self.config.invalidate_on_rename {
                    let _ = self.reliably(|| DeleteCachedProfile { user_id }).await;
                }
                Ok(["renamed ", &user.name].concat())
            }
            Ok(UserLookup::NotFound { .. }) => Ok("error unknown user".into()),
            Err(e) if is_transient(&e) => Ok("error rename".into()),
            Err(e) => Err(e),
        }
    }

    /// The user's name, from the cache if it has it (`true`), else from the database.
    async fn profile(&self, user_id: Uuid) -> Result<Option<(String, bool)>, EffectError> {
        if let Ok(CacheLookup::Hit { value, .. }) =
            self.reliably(|| GetCachedProfile { user_id }).await
        {
            return Ok(Some((value.name, true)));
        }
        let user = match self.reliably(|| GetUserById { user_id }).await {
            Ok(UserLookup::Found(user)) => user,
            Ok(UserLookup::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let put = || PutCachedProfile {
            user_id,
            profile: ProfileData {
                user_id,
                name: user.name.clone(),
                email: user.email.clone(),
            },
            ttl_seconds: self.config.profile_ttl_seconds,
        };
        let _ = self.reliably(put).await;
        Ok(Some((user.name, false)))
    }
}

/// Appends `id` in its hyphenated form (without the formatting machinery: history
/// replies carry many).
fn push_id(out: &mut String, id: Uuid) {
    out.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
}

fn id_text(id: Uuid) -> String {
    let mut text = String::with_capacity(uuid::fmt::Hyphenated::LENGTH);
    push_id(&mut text, id);
    text
}

/// A closed WebSocket ends the session normally; anything else is an error.
fn closed(error: EffectError) -> Result<SessionEnd, EffectError> {
    match error.kind {
        ErrorKind::WebSocketClosed { code, .. } => Ok(SessionEnd::Disconnected { code }),
        _ => Err(error),
    }
}

/// Whether an error is the kind a client should just be told about.
fn is_transient(error: &EffectError) -> bool {
    error.retryable
}
