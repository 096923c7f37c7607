//! The Messaging contract: one program run on the fake broker (under the simulator)
//! and on Redis Streams (under the tokio runtime), whose observations must match.
//! Both drivers give the broker an ack timeout of [`ACK_TIMEOUT`].

use std::collections::BTreeMap;
use std::time::Duration;

use effectful::effect::{
    AcknowledgeMessage, ConsumeMessage, ConsumeOutcome, NegativeAcknowledge, PublishMessage,
    PublishOutcome,
};
use effectful::{Either, Fx, ProgramError, join, race};

use super::{ContractProgram, error_word};

/// The ack timeout both drivers run the contract with.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// A driver under test for [`check_messaging`].
pub trait MessagingDriver {
    /// Runs `program` alone, to its end, against a fresh Messaging service (no
    /// topics, no subscriptions) whose ack timeout is [`ACK_TIMEOUT`].
    fn run(&mut self, program: ContractProgram) -> Result<Vec<String>, ProgramError>;
}

fn publish(topic: &str, payload: &str, key: Option<&str>) -> PublishMessage {
    PublishMessage {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec(),
        properties: BTreeMap::from([("kind".to_owned(), payload.to_owned())]),
        dedup_key: key.map(str::to_owned),
    }
}

fn consume(subscription: &str, timeout_ms: u64) -> ConsumeMessage {
    ConsumeMessage {
        subscription: subscription.into(),
        timeout_ms,
    }
}

/// `payload (redelivery n)`, or `timeout`.
fn consumed_word(outcome: &ConsumeOutcome) -> String {
    match outcome {
        ConsumeOutcome::Message(m) => format!(
            "{} (redelivery {})",
            String::from_utf8_lossy(&m.payload),
            m.redelivery_count
        ),
        ConsumeOutcome::Timeout => "timeout".to_owned(),
    }
}

/// The Messaging contract: a subscription receives what is published after it
/// exists, with properties and topic; acknowledgement once; a retried publish with
/// the same deduplication key stored once under the first id; a negative
/// acknowledgement with a delay redelivers after it with a higher count; a consumer
/// that disappears without acknowledging gets its message redelivered after the ack
/// timeout; a waiting consumer gets a later publish; one that gives up takes nothing
/// with it; groups each get every message. Takes about 4 s of driver time.
pub fn check_messaging(driver: &mut impl MessagingDriver) {
    let program: ContractProgram = Box::new(|fx: Fx| {
        Box::pin(async move {
            let mut seen = Vec::new();
            macro_rules! go {
                ($effect:expr) => {
                    match fx.perform($effect).await {
                        Ok(v) => v,
                        Err(e) => {
                            seen.push(error_word(&e));
                            return seen;
                        }
                    }
                };
            }
            macro_rules! take {
                ($subscription:expr, $timeout:expr) => {
                    match go!(consume($subscription, $timeout)) {
                        ConsumeOutcome::Message(m) => {
                            seen.push(consumed_word(&ConsumeOutcome::Message(m.clone())));
                            m
                        }
                        ConsumeOutcome::Timeout => {
                            seen.push("timeout".to_owned());
                            return seen;
                        }
                    }
                };
            }
            // Only what is published after the subscription exists.
            go!(publish("basic", "early", None));
            seen.push(consumed_word(&go!(consume("basic/g", 100))));
            go!(publish("basic", "one", None));
            let one = take!("basic/g", 1000);
            seen.push(format!(
                "topic {} properties {:?}",
                one.topic, one.properties
            ));
            seen.push(format!(
                "ack {:?}",
                go!(AcknowledgeMessage {
                    message_id: one.message_id.clone()
                })
            ));
            seen.push(format!(
                "ack {:?}",
                go!(AcknowledgeMessage {
                    message_id: one.message_id.clone()
                })
            ));
            seen.push(format!(
                "ack {:?}",
                go!(AcknowledgeMessage {
                    message_id: "nope".into()
                })
            ));
            seen.push(format!(
                "nack {:?}",
                go!(NegativeAcknowledge {
                    message_id: one.message_id,
                    delay_ms: 0
                })
            ));

            // A retried publish is stored once and answers the first id.
            seen.push(consumed_word(&go!(consume("dedup/g", 0))));
            let first = go!(publish("dedup", "keyed", Some("k1")));
            let again = go!(publish("dedup", "keyed", Some("k1")));
            seen.push(format!("same id {}", first == again));
            let keyed = take!("dedup/g", 1000);
            go!(AcknowledgeMessage {
                message_id: keyed.message_id
            });
            seen.push(consumed_word(&go!(consume("dedup/g", 100))));

            // Negative acknowledgement with a delay; counts go up.
            seen.push(consumed_word(&go!(consume("nack/g", 0))));
            go!(publish("nack", "retry", None));
            let m = take!("nack/g", 1000);
            seen.push(format!(
                "nack {:?}",
                go!(NegativeAcknowledge {
                    message_id: m.message_id.clone(),
                    delay_ms: 400
                })
            ));
            seen.push(format!(
                "nack {:?}",
                go!(NegativeAcknowledge {
                    message_id: m.message_id.clone(),
                    delay_ms: 400
                })
            ));
            seen.push(consumed_word(&go!(consume("nack/g", 100))));
            let m = take!("nack/g", 2000);
            go!(NegativeAcknowledge {
                message_id: m.message_id.clone(),
                delay_ms: 0
            });
            let m = take!("nack/g", 1000);
            seen.push(format!(
                "ack {:?}",
                go!(AcknowledgeMessage {
                    message_id: m.message_id
                })
            ));

            // A consumer that disappears: redelivered after the ack timeout.
            seen.push(consumed_word(&go!(consume("crash/g", 0))));
            go!(publish("crash", "orphan", None));
            let orphan = take!("crash/g", 1000);
            seen.push(consumed_word(&go!(consume("crash/g", 300))));
            let again = take!("crash/g", 3000);
            seen.push(format!("same id {}", again.message_id == orphan.message_id));
            go!(AcknowledgeMessage {
                message_id: again.message_id
            });

            // A waiting consumer gets a later publish; one that gave up takes nothing.
            seen.push(consumed_word(&go!(consume("wait/g", 0))));
            match race(
                fx.perform(consume("wait/g", 5000)),
                fx.sleep(Duration::from_millis(100)),
            )
            .await
            {
                Either::Left(r) => seen.push(format!("gave up too late {r:?}")),
                Either::Right(_) => seen.push("gave up".to_owned()),
            }
            let (got, published) = join(fx.perform(consume("wait/g", 3000)), async {
                let _ = fx.sleep(Duration::from_millis(200)).await;
                fx.perform(publish("wait", "later", None)).await
            })
            .await;
            match (got, published) {
                (Ok(outcome), Ok(PublishOutcome::Published { .. })) => {
                    seen.push(consumed_word(&outcome));
                    if let ConsumeOutcome::Message(m) = outcome {
                        go!(AcknowledgeMessage {
                            message_id: m.message_id
                        });
                    }
                }
                other => seen.push(format!("{other:?}")),
            }

            // Groups each get every message; a group shares them.
            seen.push(consumed_word(&go!(consume("fan/a", 0))));
            seen.push(consumed_word(&go!(consume("fan/b", 0))));
            go!(publish("fan", "x", None));
            go!(publish("fan", "y", None));
            for subscription in ["fan/a", "fan/a", "fan/b", "fan/b", "fan/a"] {
                seen.push(format!(
                    "{subscription} {}",
                    consumed_word(&go!(consume(subscription, 100)))
                ));
            }
            match go!(publish("", "nowhere", None)) {
                PublishOutcome::Rejected { reason } => seen.push(format!("rejected {reason}")),
                other => seen.push(format!("{other:?}")),
            }
            seen
        })
    });
    let expected: Vec<String> = [
        "timeout",
        "one (redelivery 0)",
        "topic basic properties {\"kind\": \"one\"}",
        "ack Acknowledged",
        "ack UnknownMessage",
        "ack UnknownMessage",
        "nack UnknownMessage",
        "timeout",
        "same id true",
        "keyed (redelivery 0)",
        "timeout",
        "timeout",
        "retry (redelivery 0)",
        "nack Acknowledged",
        "nack UnknownMessage",
        "timeout",
        "retry (redelivery 1)",
        "retry (redelivery 2)",
        "ack Acknowledged",
        "timeout",
        "orphan (redelivery 0)",
        "timeout",
        "orphan (redelivery 1)",
        "same id true",
        "timeout",
        "gave up",
        "later (redelivery 0)",
        "timeout",
        "timeout",
        "fan/a x (redelivery 0)",
        "fan/a y (redelivery 0)",
        "fan/b x (redelivery 0)",
        "fan/b y (redelivery 0)",
        "fan/a timeout",
        "rejected the topic name is empty",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(driver.run(program), Ok(expected));
}
