//! Effects on their way to the in-memory services and back.
//!
//! An effect sent to a service travels there and back: its latency is drawn once, the
//! service applies it after the first half, and its answer arrives after the rest. A
//! `ConsumeMessage` instead goes to the broker at once and may wait there: the
//! broker's own rules ([`FakeBroker`](crate::fake::FakeBroker)) decide which consumer
//! gets which message and when a waiting one is served; the simulator only keeps its
//! clock, waking the broker when it asked to be woken and answering a consumer whose
//! time is up. A `WaitRoomMessages` travels like any database request, and on
//! arrival either finds messages or parks at the database
//! ([`FakeDatabase::wait_room`](crate::fake::FakeDatabase::wait_room)) until a post
//! hands it some; its answer is never lost (a lost answer to a wait with no timeout
//! would hang its program, where a real listener connection fails loudly), and a
//! database restart fails every parked wait as a dropped connection would.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use effectful::effect::{
    ConsumeMessage, ConsumeOutcome, DatabaseResponse, Envelope, MessagingResponse, Request,
    Response, SharedRoomMessage,
};
use effectful::{EffectError, EffectId, Fx};

use super::queue::Event;
use super::{SimFamily, Simulation};
use crate::fake::{Consumed, Handled, Performer};
use crate::fault::Latency;

impl<O, P, Fut, F> Simulation<O, P, F>
where
    O: fmt::Debug + 'static,
    P: FnMut(u32, Fx<F>) -> Fut,
    Fut: Future<Output = O> + 'static,
    F: SimFamily,
{
    /// Sends `request` on its way to its service: one latency draw, split into the
    /// way there and the way back.
    pub(super) fn send(&mut self, id: EffectId, request: Request, latency: Latency) {
        let latency = self.latency(latency) + self.spike_extra(&request);
        let request_leg = latency / 2;
        let response_leg = latency - request_leg;
        let slot = self.schedule_slot(
            self.now + request_leg,
            Event::Apply {
                id,
                request,
                response_leg,
            },
        );
        self.unapplied.insert(id, slot);
    }

    /// A request reaches its service: the service performs it now, and its answer
    /// (unless lost) arrives `response_leg` later.
    pub(super) fn apply(&mut self, id: EffectId, request: Request, response_leg: Duration) {
        let now = self.now;
        let lost_rate = self.config.faults.lost_answer_rate.for_request(&request);
        let messaging = matches!(request, Request::Messaging(_));
        let database = matches!(request, Request::Database(_));
        match self
            .services
            .handle_from(now, Performer::of(0, id), request)
        {
            Handled::Done(result) => {
                if !self.lose_answer(id, lost_rate) {
                    self.deliver_at(now + response_leg, id, result);
                }
                // A publish or a negative acknowledgement may have served a waiting
                // consumer, or asked for a wake when a redelivery's time comes.
                if messaging {
                    self.broker_outputs();
                }
                // A post may have served parked waits for room messages.
                if database {
                    self.room_outputs();
                }
            }
            Handled::WaitRoom(wait) => {
                if let Some(messages) = self.services.database.wait_room(id, wait) {
                    let result = Ok(room_answer(messages));
                    self.deliver_at(now + response_leg, id, result);
                }
            }
            // `perform` handles these at issue time; kept for completeness.
            Handled::Consume(consume) => self.consume(id, consume),
            Handled::WebSocket(ws) => self.websocket(id, ws),
            // No shutdown in a simulation: never answered; the program cancels it.
            Handled::AwaitShutdown => {}
        }
    }

    /// A consumer asks the broker for a message: it gets one now, or waits at the
    /// broker until one comes or its `timeout_ms` passes. Lost answers do not apply.
    pub(super) fn consume(&mut self, id: EffectId, request: ConsumeMessage) {
        match self.services.broker.consume(self.now, id, request) {
            Consumed::Message(envelope) => self.hand_over(id, envelope),
            Consumed::Parked {
                timeout_at,
                redelivery_at,
            } => {
                self.schedule(timeout_at, Event::ConsumeDeadline(id));
                if let Some(at) = redelivery_at {
                    self.schedule(at, Event::BrokerWake);
                }
            }
        }
    }

    /// A waiting consumer's time is up: it hears `Timeout`, unless the broker served
    /// it first.
    pub(super) fn consume_deadline(&mut self, id: EffectId) {
        if self.services.broker.stop_waiting(id) {
            let answer =
                Response::Messaging(MessagingResponse::ConsumeMessage(ConsumeOutcome::Timeout));
            self.deliver(id, Ok(answer));
        }
    }

    /// The ack timeout of a message whose acknowledgement was lost has passed: the
    /// broker redelivers that message (only that one, as Pulsar's per-message ack
    /// timeout does; if it is no longer in flight nothing happens).
    pub(super) fn ack_timeout(&mut self, message_id: String) {
        self.services.broker.redeliver(self.now, &message_id);
        self.broker_outputs();
    }

    /// The time the broker asked to be woken at has come.
    pub(super) fn wake_broker(&mut self) {
        self.services.broker.wake(self.now);
        self.broker_outputs();
    }

    /// A message handed to a consumer that stopped waiting goes back to the broker.
    pub(super) fn return_to_broker(&mut self, message_id: &str) {
        self.services.broker.redeliver(self.now, message_id);
        self.broker_outputs();
    }

    /// Drains what the broker owes the simulator (its drain rule): each message it
    /// handed to a waiting consumer travels back to that consumer, and each time it
    /// asked to be woken at is scheduled.
    pub(super) fn broker_outputs(&mut self) {
        while let Some((id, envelope)) = self.services.broker.poll_handed_over() {
            self.hand_over(id, envelope);
        }
        while let Some(at) = self.services.broker.poll_wake_at() {
            self.schedule(at, Event::BrokerWake);
        }
    }

    /// Drains what the database owes the simulator: each answer it handed to a
    /// parked wait for room messages travels back to that wait.
    pub(super) fn room_outputs(&mut self) {
        while let Some((id, messages)) = self.services.database.poll_room_handed_over() {
            let at = self.now + self.latency(self.config.faults.latency.database);
            let result = Ok(room_answer(messages));
            self.deliver_at(at, id, result);
        }
    }

    /// The broker handed `envelope` to the consumer `id`: its answer travels back.
    fn hand_over(&mut self, id: EffectId, envelope: Envelope) {
        let answer = Response::Messaging(MessagingResponse::ConsumeMessage(
            ConsumeOutcome::Message(envelope.into()),
        ));
        let at = self.now + self.latency(self.config.faults.latency.messaging);
        self.deliver_at(at, id, Ok(answer));
    }
}

/// The answer to a `WaitRoomMessages`.
fn room_answer(messages: Vec<SharedRoomMessage>) -> Response {
    Response::Database(DatabaseResponse::WaitRoomMessages(messages))
}

/// The delivery id of the message in a `ConsumeMessage` answer, if it carries one.
pub(super) fn handed_over(result: &Result<Response, EffectError>) -> Option<String> {
    match result {
        Ok(Response::Messaging(MessagingResponse::ConsumeMessage(ConsumeOutcome::Message(
            envelope,
        )))) => Some(envelope.message_id.clone()),
        _ => None,
    }
}
