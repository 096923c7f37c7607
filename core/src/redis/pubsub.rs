//! Pub/sub: messages and subscription changes, read from RESP2 arrays or RESP3 pushes,
//! and the set of channels the connection is subscribed to.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::value::Value;

/// Which family of pub/sub commands a subscription belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SubscriptionKind {
    /// `SUBSCRIBE` / `UNSUBSCRIBE`: a channel by name.
    Channel,
    /// `PSUBSCRIBE` / `PUNSUBSCRIBE`: channels matching a glob pattern.
    Pattern,
    /// `SSUBSCRIBE` / `SUNSUBSCRIBE`: a shard channel (Redis 7).
    Shard,
}

/// A message published to a channel this connection subscribes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The subscription it came through.
    pub kind: SubscriptionKind,
    /// The pattern that matched, for [`SubscriptionKind::Pattern`].
    pub pattern: Option<Vec<u8>>,
    /// The channel it was published to.
    pub channel: Vec<u8>,
    /// What was published.
    pub payload: Vec<u8>,
}

/// The server confirmed a subscription or an unsubscription (one per channel), or
/// ended one on its own (a shard channel whose slot moved).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionChange {
    /// Which family of subscription.
    pub kind: SubscriptionKind,
    /// `true` for a subscription, `false` for an unsubscription.
    pub subscribed: bool,
    /// The channel or pattern; `None` when an unsubscribe from everything found
    /// nothing to unsubscribe from.
    pub channel: Option<Vec<u8>>,
    /// How many subscriptions the server counts for this connection afterwards
    /// (channels and patterns together; shard channels on their own).
    pub count: i64,
}

/// One pub/sub frame, sorted.
#[derive(Debug)]
pub(crate) enum PubSubFrame {
    Message(Message),
    Change(SubscriptionChange),
}

/// Whether `value` names a pub/sub frame kind in its first element.
pub(crate) fn looks_like_pubsub(items: &[Value]) -> bool {
    items
        .first()
        .and_then(Value::as_bytes)
        .is_some_and(|kind| frame_kind(kind).is_some())
}

#[derive(Clone, Copy)]
enum FrameKind {
    Message(SubscriptionKind),
    Change(SubscriptionKind, bool),
}

fn frame_kind(name: &[u8]) -> Option<FrameKind> {
    use SubscriptionKind::{Channel, Pattern, Shard};
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    Some(if is("message") {
        FrameKind::Message(Channel)
    } else if is("pmessage") {
        FrameKind::Message(Pattern)
    } else if is("smessage") {
        FrameKind::Message(Shard)
    } else if is("subscribe") {
        FrameKind::Change(Channel, true)
    } else if is("psubscribe") {
        FrameKind::Change(Pattern, true)
    } else if is("ssubscribe") {
        FrameKind::Change(Shard, true)
    } else if is("unsubscribe") {
        FrameKind::Change(Channel, false)
    } else if is("punsubscribe") {
        FrameKind::Change(Pattern, false)
    } else if is("sunsubscribe") {
        FrameKind::Change(Shard, false)
    } else {
        return None;
    })
}

fn owned_bytes(value: &Value) -> Option<Vec<u8>> {
    value.as_bytes().map(<[u8]>::to_vec)
}

/// Reads a message or subscription change; `None` if the frame has another shape.
pub(crate) fn parse(items: &[Value]) -> Option<PubSubFrame> {
    let kind = frame_kind(items.first()?.as_bytes()?)?;
    Some(match (kind, items) {
        (FrameKind::Message(SubscriptionKind::Pattern), [_, pattern, channel, payload]) => {
            PubSubFrame::Message(Message {
                kind: SubscriptionKind::Pattern,
                pattern: Some(owned_bytes(pattern)?),
                channel: owned_bytes(channel)?,
                payload: owned_bytes(payload)?,
            })
        }
        (FrameKind::Message(kind), [_, channel, payload]) if kind != SubscriptionKind::Pattern => {
            PubSubFrame::Message(Message {
                kind,
                pattern: None,
                channel: owned_bytes(channel)?,
                payload: owned_bytes(payload)?,
            })
        }
        (FrameKind::Change(kind, subscribed), [_, channel, count]) => {
            let channel = match channel {
                Value::Nil => None,
                other => Some(owned_bytes(other)?),
            };
            PubSubFrame::Change(SubscriptionChange {
                kind,
                subscribed,
                channel,
                count: count.as_int()?,
            })
        }
        _ => return None,
    })
}

/// The channels, patterns and shard channels the server has confirmed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscriptions {
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
    shards: BTreeSet<Vec<u8>>,
}

impl Subscriptions {
    /// The confirmed subscriptions of one kind, in byte order.
    pub fn of(&self, kind: SubscriptionKind) -> impl Iterator<Item = &[u8]> {
        self.set(kind).iter().map(Vec::as_slice)
    }

    /// How many subscriptions of one kind.
    pub fn count(&self, kind: SubscriptionKind) -> usize {
        self.set(kind).len()
    }

    /// Whether there are none at all.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.patterns.is_empty() && self.shards.is_empty()
    }

    fn set(&self, kind: SubscriptionKind) -> &BTreeSet<Vec<u8>> {
        match kind {
            SubscriptionKind::Channel => &self.channels,
            SubscriptionKind::Pattern => &self.patterns,
            SubscriptionKind::Shard => &self.shards,
        }
    }

    pub(crate) fn apply(&mut self, change: &SubscriptionChange) {
        let set = match change.kind {
            SubscriptionKind::Channel => &mut self.channels,
            SubscriptionKind::Pattern => &mut self.patterns,
            SubscriptionKind::Shard => &mut self.shards,
        };
        if let Some(channel) = &change.channel {
            if change.subscribed {
                set.insert(channel.clone());
            } else {
                set.remove(channel);
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = Subscriptions::default();
    }
}
