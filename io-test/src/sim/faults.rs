//! Fault injection: where the [`FaultPlan`](crate::fault::FaultPlan) breaks a run.
//!
//! Every decision is a draw from the scheduler's seeded generator, made where the
//! fault would happen: an error when the effect is issued (it never reaches the
//! service), a lost acknowledgement when it is issued, a lost answer when the service
//! has applied the effect, a dropped connection when the client sends.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use effectful::effect::{AckOutcome, MessagingRequest, MessagingResponse, Request, Response};
use effectful::{EffectError, EffectId, Fx};

use super::client::ConnectionState;
use super::queue::Event;
use super::{SimFamily, Simulation};
use crate::fault::{Latency, Service};
use crate::trace::{Fault, TraceRecord};

impl<O, P, Fut, F> Simulation<O, P, F>
where
    O: fmt::Debug + 'static,
    P: FnMut(u32, Fx<F>) -> Fut,
    Fut: Future<Output = O> + 'static,
    F: SimFamily,
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
        self.refuse(
            id,
            request,
            latency,
            "injected fault: connection reset before the request was sent",
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
        self.deliver_at(at, id, Ok(answer));
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
            self.report.fault_kinds.dropped_connections += 1;
            return true;
        }
        false
    }

    /// Queues the plan's restarts and disconnect storms (nothing, and no draw, when it
    /// has none).
    pub(super) fn schedule_timed_faults(&mut self) {
        for n in 0..self.config.faults.restarts.len() {
            let at = self.config.faults.restarts[n].at;
            self.schedule(at, Event::Restart(n as u32));
        }
        for n in 0..self.config.faults.disconnect_storms.len() {
            let at = self.config.faults.disconnect_storms[n].at;
            self.schedule(at, Event::Storm(n as u32));
        }
    }

    /// Whether `request`'s service refuses connections now (an outage window); if so,
    /// the effect is never applied and its error arrives after `latency`.
    pub(super) fn refuse_in_outage(
        &mut self,
        id: EffectId,
        request: &Request,
        latency: Latency,
    ) -> bool {
        if self.config.faults.outages.is_empty() {
            return false;
        }
        let Some(service) = Service::of(request) else {
            return false;
        };
        let now = self.now;
        let refused = self
            .config
            .faults
            .outages
            .iter()
            .any(|o| o.service == service && o.window.contains(now));
        if !refused {
            return false;
        }
        self.injected(id, Fault::Outage);
        self.refuse(
            id,
            request,
            latency,
            "injected outage: the service refused the connection",
        );
        true
    }

    /// Answers `id` with a retryable connection error after the request's latency:
    /// the request never reached its service.
    fn refuse(&mut self, id: EffectId, request: &Request, latency: Latency, why: &'static str) {
        let error = EffectError::connection_lost(request.name(), why);
        let at = self.now + self.latency(latency);
        self.deliver_at(at, id, Err(error));
    }

    /// The extra latency of the plan's latency spikes for `request` issued now.
    pub(super) fn spike_extra(&self, request: &Request) -> Duration {
        if self.config.faults.latency_spikes.is_empty() {
            return Duration::ZERO;
        }
        let Some(service) = Service::of(request) else {
            return Duration::ZERO;
        };
        self.config
            .faults
            .latency_spikes
            .iter()
            .filter(|s| s.service == service && s.window.contains(self.now))
            .map(|s| s.extra)
            .sum()
    }

    /// The plan's restart `n`: requests on their way to the service fail and are
    /// never applied; the service loses what the real one loses (see
    /// [`Restart`](crate::fault::Restart)).
    pub(super) fn restart(&mut self, n: u32) {
        let service = self.config.faults.restarts[n as usize].service;
        let mut lost: Vec<(EffectId, u32, Duration, &'static str)> = self
            .unapplied
            .iter()
            .filter_map(|(&id, &slot)| match self.queue.get(slot) {
                Some(Event::Apply {
                    request,
                    response_leg,
                    ..
                }) if Service::of(request) == Some(service) => {
                    Some((id, slot, *response_leg, request.name()))
                }
                _ => None,
            })
            .collect();
        // In effect order, not the map's.
        lost.sort_unstable_by_key(|(id, ..)| *id);
        for (id, slot, response_leg, name) in lost {
            self.queue.withdraw(slot);
            self.unapplied.remove(&id);
            self.injected(id, Fault::Restart);
            let error = EffectError::connection_lost(
                name,
                "injected restart: the service restarted before it applied the request",
            );
            self.deliver_at(self.now + response_leg, id, Err(error));
        }
        match service {
            Service::Cache => self.services.cache.restart(),
            Service::Messaging => {
                self.services.broker.redeliver_unacked(self.now);
                self.broker_outputs();
            }
            // Listener connections drop: every parked wait for room messages fails,
            // retryable, and its program asks again from its last `seq`.
            Service::Database => {
                for id in self.services.database.drop_room_waiters() {
                    self.injected(id, Fault::Restart);
                    let error = EffectError::connection_lost(
                        "Database.WaitRoomMessages",
                        "injected restart: the database dropped the listener connection",
                    );
                    let at = self.now + self.latency(self.config.faults.latency.database);
                    self.deliver_at(at, id, Err(error));
                }
            }
            _ => {}
        }
    }

    /// The plan's disconnect storm `n`: each open connection vanishes with its
    /// probability (counted, not traced as a fault: the trace shows the clients vanish).
    pub(super) fn storm(&mut self, n: u32) {
        let fraction = self.config.faults.disconnect_storms[n as usize].fraction;
        for connection in 0..self.connections.len() as u32 {
            if self.connections[connection as usize].transcript.state == ConnectionState::Open
                && self.rng.chance(fraction)
            {
                self.report.faults += 1;
                self.report.fault_kinds.dropped_connections += 1;
                self.end_connection(connection, ConnectionState::Vanished);
            }
        }
    }

    /// Counts and records a fault injected into effect `id`.
    pub(super) fn injected(&mut self, id: EffectId, fault: Fault) {
        self.report.faults += 1;
        let kinds = &mut self.report.fault_kinds;
        match fault {
            Fault::Error => kinds.errors += 1,
            Fault::LostAnswer => kinds.lost_answers += 1,
            Fault::LostAck => kinds.lost_acks += 1,
            Fault::Outage => kinds.outages += 1,
            Fault::Restart => kinds.restarts += 1,
        }
        let at = self.now;
        self.trace.record(|| TraceRecord::Fault { at, id, fault });
    }
}
