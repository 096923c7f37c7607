//! Hand-written programs: state machines that the engine resumes with events.

use std::task::Poll;
use std::time::Duration;

use crate::effect::{Effect, Family, Std};
use crate::error::EffectError;
use crate::id::{EffectId, ProgramId};
use crate::mailbox::{Limit, Mailbox};
use crate::rng::Rng;
use crate::time::Time;

/// A program written by hand as a state machine.
///
/// The engine calls [`Program::resume`] once with [`Event::Start`], then once per
/// completion of an effect or timer the program asked for through its [`Cx`]. The
/// program returns `Poll::Ready(output)` when it is done; anything it still has
/// outstanding is then cancelled. A program that returns `Poll::Pending` with nothing
/// outstanding could never be resumed, and ends with `ProgramError::Stalled`.
///
/// Most programs are easier to write as `async` blocks (see [`crate::Fx`]); this
/// trait is the zero-overhead form, and the form a protocol-heavy program may prefer.
pub trait Program<F: Family = Std> {
    /// What the program produces.
    type Output;
    /// Advances the program by one event.
    fn resume(&mut self, cx: &mut Cx<'_, F>, event: Event<F>) -> Poll<Self::Output>;
}

/// What woke a hand-written program.
#[derive(Debug)]
pub enum Event<F: Family = Std> {
    /// The program was just spawned.
    Start,
    /// The driver answered an effect, or its time limit ran out (a retryable
    /// `Timeout` error; the driver was told to cancel it).
    Response {
        /// The effect, as returned by [`Cx::request`].
        id: EffectId,
        /// The driver's answer, or an infrastructure error.
        result: Result<F::Response, EffectError>,
    },
    /// A timer armed with [`Cx::sleep_until`] fired.
    Timer {
        /// The timer, as returned by [`Cx::sleep_until`].
        id: EffectId,
    },
}

/// What a hand-written program can do while it is being resumed.
pub struct Cx<'a, F: Family = Std> {
    pub(crate) mailbox: &'a mut Mailbox<F>,
}

impl<F: Family> Cx<'_, F> {
    /// Asks the driver to perform `request`; its answer arrives as [`Event::Response`].
    /// The engine's default per-effect timeout applies
    /// ([`EngineConfig::effect_timeout`](crate::EngineConfig::effect_timeout)).
    pub fn request(&mut self, request: F::Request) -> EffectId {
        let name = F::request_name(&request);
        self.mailbox.request(request, Limit::Default, name)
    }

    /// Like [`request`](Self::request), with a time limit of its own instead of the
    /// default: when `limit` passes first, the answer is a retryable `Timeout` error.
    pub fn request_timeout(&mut self, request: F::Request, limit: Duration) -> EffectId {
        let name = F::request_name(&request);
        self.mailbox.request(request, Limit::After(limit), name)
    }

    /// Like [`request`](Self::request), with no time limit at all.
    pub fn request_untimed(&mut self, request: F::Request) -> EffectId {
        let name = F::request_name(&request);
        self.mailbox.request(request, Limit::Never, name)
    }

    /// Asks for a typed effect; decode its answer with [`crate::decode`].
    pub fn perform<E: Effect<F>>(&mut self, effect: E) -> EffectId {
        self.mailbox
            .request(effect.into_request(), Limit::Default, E::NAME)
    }

    /// Arms a timer that fires as [`Event::Timer`] at `at`. A timer already due fires
    /// at the driver's next `handle_timeout`, not inside this call: a program that
    /// arms more than 100,000 of those at one instant ends with
    /// [`ProgramError::Spinning`](crate::ProgramError::Spinning).
    pub fn sleep_until(&mut self, at: Time) -> EffectId {
        self.mailbox.timer(at)
    }

    /// Arms a timer that fires after `d`.
    pub fn sleep(&mut self, d: Duration) -> EffectId {
        let at = self.mailbox.now + d;
        self.mailbox.timer(at)
    }

    /// Gives up on an effect or timer; the driver is told to cancel an effect.
    ///
    /// Returns whether `id` was one of this program's effects or timers still
    /// waiting. An id of another program, or one already answered or cancelled, is
    /// refused: nothing happens.
    pub fn cancel(&mut self, id: EffectId) -> bool {
        self.mailbox.cancel(id)
    }

    /// The time of the input being handled.
    pub fn now(&self) -> Time {
        self.mailbox.now
    }

    /// This program's seeded random number generator.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.mailbox.rng
    }

    /// This program's id.
    pub fn program(&self) -> ProgramId {
        self.mailbox.program
    }
}
