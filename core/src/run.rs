//! The simplest driver: one program, answered by a synchronous handler.
//!
//! This is the Python library's `run_ws_program`: no runtime, no threads, no IO of its
//! own, so the core embeds anywhere. Effects are answered in the order they were
//! asked; when the program only waits on timers, the handler is asked to wait.

use std::collections::VecDeque;
use std::future::Future;

use crate::effect::{Family, Std};
use crate::engine::{Delivery, Engine, EngineConfig, Output};
use crate::error::{EffectError, ProgramError};
use crate::fx::Fx;
use crate::id::{EffectId, ProgramId};
use crate::program::Program;
use crate::time::Time;

/// Performs effects for [`run_program`] and [`run_async`].
pub trait Handler<F: Family = Std> {
    /// Performs one effect.
    fn handle(&mut self, request: F::Request) -> Result<F::Response, EffectError>;

    /// Called when the program waits only on timers: wait until `deadline` (or not)
    /// and return the time reached. The default jumps there at once (virtual time).
    fn wait_until(&mut self, now: Time, deadline: Time) -> Time {
        let _ = now;
        deadline
    }

    /// The time to hand the engine with the next input. The default is virtual time:
    /// it moves only when [`Handler::wait_until`] moves it.
    fn now(&mut self, virtual_now: Time) -> Time {
        virtual_now
    }
}

impl<F: Family, H> Handler<F> for H
where
    H: FnMut(F::Request) -> Result<F::Response, EffectError>,
{
    fn handle(&mut self, request: F::Request) -> Result<F::Response, EffectError> {
        self(request)
    }
}

/// Runs a hand-written program to completion against `handler`.
pub fn run_program<O: 'static, F: Family, P>(
    program: P,
    config: EngineConfig,
    handler: &mut impl Handler<F>,
) -> Result<O, ProgramError>
where
    P: Program<F, Output = O> + 'static,
{
    drive(config, handler, |engine, now| engine.spawn(now, program))
}

/// Runs an async program to completion against `handler`.
///
/// ```
/// use effectful::{EngineConfig, Fx, run_async, effect::*};
///
/// let mut handler = |request: Request| match request {
///     Request::System(SystemRequest::GetCurrentTime(_)) => {
///         Ok(Response::System(SystemResponse::GetCurrentTime(effectful::Timestamp::UNIX_EPOCH)))
///     }
///     other => Err(effectful::EffectError::unhandled(other.name(), vec!["System".into()])),
/// };
/// let year = run_async(|fx: Fx| async move {
///     let now = fx.perform(GetCurrentTime {}).await?;
///     Ok::<_, effectful::EffectError>(now.to_string()[..4].to_string())
/// }, EngineConfig::default(), &mut handler);
/// assert_eq!(year, Ok(Ok("1970".to_string())));
/// ```
pub fn run_async<O: 'static, F: Family, Fut, Mk>(
    make: Mk,
    config: EngineConfig,
    handler: &mut impl Handler<F>,
) -> Result<O, ProgramError>
where
    Mk: FnOnce(Fx<F>) -> Fut,
    Fut: Future<Output = O> + 'static,
{
    drive(config, handler, |engine, now| engine.spawn_async(now, make))
}

fn drive<O: 'static, F: Family>(
    config: EngineConfig,
    handler: &mut impl Handler<F>,
    spawn: impl FnOnce(&mut Engine<O, F>, Time) -> ProgramId,
) -> Result<O, ProgramError> {
    let mut engine = Engine::new(config);
    let mut now = handler.now(Time::ZERO);
    spawn(&mut engine, now);
    let mut queue: VecDeque<(EffectId, F::Request)> = VecDeque::new();
    loop {
        while let Some(output) = engine.poll_output() {
            match output {
                Output::Request { id, request } => queue.push_back((id, request)),
                Output::Cancel { id } => queue.retain(|(queued, _)| *queued != id),
                Output::Finished { result, .. } => return result,
            }
        }
        if let Some((id, request)) = queue.pop_front() {
            let result = handler.handle(request);
            now = handler.now(now);
            // A stale answer only means the program stopped waiting for it.
            let _: Delivery = engine.handle_response(now, id, result);
            continue;
        }
        match engine.poll_timeout() {
            Some(deadline) => {
                now = handler.wait_until(now, deadline).max(now);
                engine.handle_timeout(now);
            }
            // The engine ends programs that wait on nothing, so this is unreachable;
            // report it as a stall rather than loop forever.
            None => return Err(ProgramError::Stalled),
        }
    }
}
