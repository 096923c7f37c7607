//! Messaging: topics and subscriptions with acknowledgement (Pulsar-like).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::family;
use crate::time::Timestamp;

/// A message as a consumer receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The broker's id for this message; acknowledge it by this id.
    pub message_id: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Application properties.
    pub properties: BTreeMap<String, String>,
    /// When the broker accepted it.
    pub publish_time: Timestamp,
    /// The topic it was published to.
    pub topic: String,
    /// How many times it was delivered before this one.
    pub redelivery_count: u32,
}

/// The domain outcome of publishing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PublishOutcome {
    /// Accepted under this id.
    Published {
        /// The broker's id for the message.
        message_id: String,
    },
    /// Refused by the broker (topic missing, payload too large, quota).
    Rejected {
        /// The broker's reason.
        reason: String,
    },
}

/// The domain outcome of consuming.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumeOutcome {
    /// A message (boxed: it is large, and responses stay small to move).
    Message(Box<Envelope>),
    /// Nothing arrived within the timeout.
    Timeout,
}

/// The domain outcome of an acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckOutcome {
    /// Done.
    Acknowledged,
    /// The broker does not know the message (already acknowledged, or never delivered).
    UnknownMessage,
}

fn default_consume_timeout_ms() -> u64 {
    5000
}

/// Publish to a topic. Output: [`PublishOutcome`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishMessage {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Application properties.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Broker-side deduplication (Pulsar's producer deduplication): a publish whose
    /// key the topic has already accepted is not stored again, and answers with the
    /// first publish's id. Set it to retry publishes safely.
    #[serde(default)]
    pub dedup_key: Option<String>,
}

/// Receive the next message of a subscription. Output: [`ConsumeOutcome`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumeMessage {
    /// The subscription (consumer group).
    pub subscription: String,
    /// How long to wait for a message (default 5000).
    #[serde(default = "default_consume_timeout_ms")]
    pub timeout_ms: u64,
}

/// Acknowledge a delivered message. Output: [`AckOutcome`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcknowledgeMessage {
    /// The message's id.
    pub message_id: String,
}

/// Hand a delivered message back for redelivery after a delay. Output: [`AckOutcome`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NegativeAcknowledge {
    /// The message's id.
    pub message_id: String,
    /// Redeliver no sooner than this.
    pub delay_ms: u64,
}

family! {
    /// The Messaging family's requests.
    Messaging: MessagingRequest => MessagingResponse {
        PublishMessage [boxed] => PublishOutcome,
        ConsumeMessage => ConsumeOutcome,
        AcknowledgeMessage => AckOutcome,
        NegativeAcknowledge => AckOutcome,
    }
}
