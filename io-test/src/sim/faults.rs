//! Fault injection: where the [`FaultPlan`](crate::fault::FaultPlan) breaks a run.
//!
//! Every decision is a draw from the scheduler's seeded generator, made where the
//! fault would happen: an error when the effect is issued (it never reaches the
//! service), a lost acknowledgement when it is issued, a lost answer when the service
//! has applied the effect, a dropped connection when the client sends.

use std::fmt;
use std::future::Future;

use effectful::effect::{AckOutcome, MessagingRequest, MessagingResponse, Request, Response};
use effectful::{EffectError, EffectId, Fx};

use super::Simulation;
use super::queue::Event;
use crate::fault::Latency;
use crate::trace::{Fault, TraceRecord};

impl<O, P, Fut> Simulation<O, P>
where
    O: fmt::Debug + 'static,
    P: FnMut(u32, Fx) -> Fut,
    Fut: Future<Output = O> + 'static,
{
    /// Whether the plan fails `request` before it is sent (never for WebSocket
    /// effects, whose failures are dropped connections); if so, the effect is never
    /// applied and its error arrives after `latency`.
    pub(super) fn inject_error(
        &mut self,
        id: EffectId,
        request: &Request,
        latency: Latency,
    ) -> bool {
        let error_rate = match request {
            Request::WebSocket(_) => 0.0,
            _ => self.config.faults.error_rate.for_request(request),
        };
        if !(error_rate > 0.0 && self.rng.chance(error_rate)) {
            return false;
        }
        // Decided at issue time: the request never reaches the service.
        self.injected(id, Fault::Error);
        let error = EffectError::connection_lost(
            request.name(),
            "injected fault: connection reset before the request was sent",
        );
        let at = self.now + self.latency(latency);
        self.schedule(
            at,
            Event::Deliver {
                id,
                result: Err(error),
            },
        );
        true
    }

    /// Whether the plan loses `request`, an acknowledgement, on its way to the broker:
    /// the program hears `Acknowledged`, but the broker never does, and the message
    /// comes again once its ack timeout passes.
    pub(super) fn lose_ack(&mut self, id: EffectId, request: &Request, latency: Latency) -> bool {
        let Request::Messaging(MessagingRequest::AcknowledgeMessage(ack)) = request else {
            return false;
        };
        let rate = self.config.faults.duplicate_delivery_rate;
        if !(rate > 0.0 && self.rng.chance(rate)) {
            return false;
        }
        self.injected(id, Fault::LostAck);
        let message_id = ack.message_id.clone();
        let ack_timeout = self.config.faults.ack_timeout;
        self.schedule(self.now + ack_timeout, Event::AckTimeout { message_id });
        let answer = Response::Messaging(MessagingResponse::AcknowledgeMessage(
            AckOutcome::Acknowledged,
        ));
        let at = self.now + self.latency(latency);
        self.schedule(
            at,
            Event::Deliver {
                id,
                result: Ok(answer),
            },
        );
        true
    }

    /// Whether the plan loses the answer to `id`, which the service has applied
    /// (`rate` is the plan's lost-answer rate for the request).
    pub(super) fn lose_answer(&mut self, id: EffectId, rate: f64) -> bool {
        if rate > 0.0 && self.rng.chance(rate) {
            self.injected(id, Fault::LostAnswer);
            return true;
        }
        false
    }

    /// Whether the plan drops a client's connection as it sends (counted, not traced:
    /// the trace shows the client vanish).
    pub(super) fn drops_connection(&mut self) -> bool {
        let rate = self.config.faults.websocket_drop_rate;
        if rate > 0.0 && self.rng.chance(rate) {
            self.report.faults += 1;
            return true;
        }
        false
    }

    /// Counts and records a fault injected into effect `id`.
    fn injected(&mut self, id: EffectId, fault: Fault) {
        self.report.faults += 1;
        let at = self.now;
        self.trace.record(|| TraceRecord::Fault { at, id, fault });
    }
}
