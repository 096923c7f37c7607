//! Custom families: programs of the user's own family, whose own effects a fake the
//! user supplies answers, beside the built-in fakes.
//!
//! A family the simulator hosts is a [`SimFamily`]: it embeds the built-in family
//! (whose effects the built-in fakes answer, as for [`Std`] programs) and splits its
//! requests into built-in ones and its own. Its own effects travel like a service's:
//! one latency draw split into the way there and the way back, the fake applies the
//! effect in between ([`FamilyFake::handle`]), and the fake's error and lost-answer
//! rates fail them as the fault plan fails built-in ones. Traces record their requests
//! and answers as JSON ([`TraceRecord::OwnRequest`], [`TraceRecord::OwnResponse`]), so
//! a custom-family run replays from its trace
//! ([`replay_family`](crate::trace::replay_family)).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use effectful::effect::{Request, Std};
use effectful::{Delivery, EffectError, EffectId, EmbedStd, Family, Fx, Time};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Simulation;
use super::queue::Event;
use crate::fault::Latency;
use crate::trace::{Fault, TraceRecord};

/// A family the simulator can host: the built-in effects, plus the family's own,
/// whose requests and answers serialize (traces record them as JSON).
pub trait SimFamily: EmbedStd<Request: Serialize, Response: Serialize + DeserializeOwned> {
    /// The request as a built-in one, or back if it is one of the family's own.
    fn split_request(request: Self::Request) -> Result<Request, Self::Request>;
}

impl SimFamily for Std {
    fn split_request(request: Request) -> Result<Request, Request> {
        Ok(request)
    }
}

/// The fake that answers a custom family's own effects in a simulation
/// ([`Simulation::set_family_fake`]). Like the built-in fakes it keeps its state in
/// memory and answers at once; the simulator adds the latency and the faults. To read
/// its state after a run, share it (an `Rc<RefCell<_>>`: a simulation runs on one
/// thread).
pub trait FamilyFake<F: Family> {
    /// Applies `request` at simulated time `now` and answers it.
    fn handle(&mut self, now: Time, request: F::Request) -> Result<F::Response, EffectError>;

    /// How long an effect takes there and back (the default: the built-in services'
    /// default, a fixed 0.5 ms).
    fn latency(&self) -> Latency {
        Latency::default()
    }

    /// How often an effect fails before the fake sees it, in `[0, 1]` (never applied;
    /// the program hears a retryable connection error).
    fn error_rate(&self) -> f64 {
        0.0
    }

    /// How often the fake applies an effect but its answer is lost, in `[0, 1]`.
    fn lost_answer_rate(&self) -> f64 {
        0.0
    }
}

/// A custom family's own effects on their way to its fake and back.
pub(super) struct OwnEffects<F: Family> {
    pub(super) fake: Option<Box<dyn FamilyFake<F>>>,
    /// Requests on their way to the fake, by effect.
    requests: rustc_hash::FxHashMap<EffectId, F::Request>,
    /// Answers on their way back, by effect.
    answers: rustc_hash::FxHashMap<EffectId, Result<F::Response, EffectError>>,
}

impl<F: Family> Default for OwnEffects<F> {
    fn default() -> Self {
        OwnEffects {
            fake: None,
            requests: Default::default(),
            answers: Default::default(),
        }
    }
}

impl<F: Family> OwnEffects<F> {
    /// Forgets a request the engine cancelled before the fake applied it.
    pub(super) fn cancel(&mut self, id: EffectId) {
        if !self.requests.is_empty() {
            self.requests.remove(&id);
        }
    }
}

/// The JSON a trace records for a custom request or answer (a value that does not
/// serialize is recorded as the error saying why, the same way on replay).
pub(crate) fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value)
        .unwrap_or_else(|e| serde_json::Value::String(format!("does not serialize: {e}")))
}

impl<O, P, Fut, F> Simulation<O, P, F>
where
    O: fmt::Debug + 'static,
    P: FnMut(u32, Fx<F>) -> Fut,
    Fut: Future<Output = O> + 'static,
    F: SimFamily,
{
    /// Supplies the fake that answers the family's own effects. Without one, each of
    /// them fails as unhandled.
    pub fn set_family_fake(&mut self, fake: impl FamilyFake<F> + 'static) {
        self.own.fake = Some(Box::new(fake));
    }

    /// Sends one of the family's own requests on its way to the fake, unless its
    /// error rate fails it first.
    pub(super) fn perform_own(&mut self, id: EffectId, request: F::Request) {
        let name = F::request_name(&request);
        let Some(fake) = &self.own.fake else {
            let error = EffectError::unhandled(name, vec!["the built-in families".into()]);
            self.deliver_at(self.now, id, Err(error));
            return;
        };
        let (latency, error_rate) = (fake.latency(), fake.error_rate());
        if error_rate > 0.0 && self.rng.chance(error_rate) {
            self.injected(id, Fault::Error);
            let error = EffectError::connection_lost(
                name,
                "injected fault: connection reset before the request was sent",
            );
            let at = self.now + self.latency(latency);
            self.deliver_at(at, id, Err(error));
            return;
        }
        let latency = self.latency(latency);
        let request_leg = latency / 2;
        let response_leg = latency - request_leg;
        let slot = self.schedule_slot(self.now + request_leg, Event::ApplyOwn { id, response_leg });
        self.unapplied.insert(id, slot);
        self.own.requests.insert(id, request);
    }

    /// A request reaches the fake: it applies it now, and its answer (unless lost)
    /// arrives `response_leg` later.
    pub(super) fn apply_own(&mut self, id: EffectId, response_leg: Duration) {
        let (Some(request), Some(fake)) = (self.own.requests.remove(&id), &mut self.own.fake)
        else {
            return;
        };
        let result = fake.handle(self.now, request);
        let lost_rate = fake.lost_answer_rate();
        if !self.lose_answer(id, lost_rate) {
            self.own.answers.insert(id, result);
            self.schedule(self.now + response_leg, Event::DeliverOwn(id));
        }
    }

    /// Hands the fake's answer to the engine, and drains what it does next.
    pub(super) fn deliver_own(&mut self, id: EffectId) {
        let Some(result) = self.own.answers.remove(&id) else {
            return;
        };
        let now = self.now;
        if self.trace.on {
            let recorded = result.as_ref().map(to_json).map_err(EffectError::clone);
            let delivery = self.engine.handle_response(now, id, result);
            self.trace.push(TraceRecord::OwnResponse {
                at: now,
                id,
                result: recorded,
                delivered: delivery == Delivery::Delivered,
            });
        } else {
            // A stale answer needs nothing more: the fake has no message to take back.
            let _ = self.engine.handle_response(now, id, result);
        }
        self.drain();
    }
}
