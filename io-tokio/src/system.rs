//! The System family on the OS: the wall clock, random UUIDs, and the runtime's
//! shutdown. The core never reads these itself.

use effectful::effect::{Request, Response, SystemRequest, SystemResponse};
use effectful::{EffectError, EffectId, ErrorKind};

use crate::entropy;
use crate::interpreter::{Interpreter, ShardCx, SplitStd, misrouted};

/// Answers System effects inline: `GetCurrentTime` from the OS wall clock,
/// `GenerateUuid` from OS entropy (never from the logged engine seed), and
/// `WaitForShutdown` when the runtime begins a graceful shutdown (at once after).
#[derive(Debug, Default)]
pub struct SystemInterpreter {
    waiting: Vec<EffectId>,
    shutting_down: bool,
}

impl SystemInterpreter {
    /// A System interpreter for one shard.
    pub fn new() -> SystemInterpreter {
        SystemInterpreter::default()
    }

    fn answer<F: SplitStd>(cx: &mut ShardCx<'_, F>, id: EffectId, response: SystemResponse) {
        cx.answer(id, Ok(F::embed_response(Response::System(response))));
    }
}

impl<F: SplitStd> Interpreter<F> for SystemInterpreter {
    fn perform(&mut self, cx: &mut ShardCx<'_, F>, id: EffectId, request: F::Request) {
        let request = match F::split_request(request) {
            Ok(Request::System(request)) => request,
            Ok(other) => {
                let request = F::embed_request(other);
                return cx.answer(id, Err(misrouted::<F>("System", &request)));
            }
            Err(own) => return cx.answer(id, Err(misrouted::<F>("System", &own))),
        };
        match request {
            SystemRequest::GetCurrentTime(_) => {
                Self::answer(
                    cx,
                    id,
                    SystemResponse::GetCurrentTime(entropy::wall_clock()),
                );
            }
            SystemRequest::GenerateUuid(_) => match entropy::uuid_v4() {
                Ok(uuid) => Self::answer(cx, id, SystemResponse::GenerateUuid(uuid)),
                Err(error) => cx.answer(
                    id,
                    Err(EffectError::new(
                        "System.GenerateUuid",
                        ErrorKind::Unavailable,
                        error.to_string(),
                    )),
                ),
            },
            SystemRequest::WaitForShutdown(_) if self.shutting_down => {
                Self::answer(cx, id, SystemResponse::WaitForShutdown(()));
            }
            SystemRequest::WaitForShutdown(_) => self.waiting.push(id),
        }
    }

    fn cancel(&mut self, _cx: &mut ShardCx<'_, F>, id: EffectId) {
        self.waiting.retain(|w| *w != id);
    }

    fn shutdown_began(&mut self, cx: &mut ShardCx<'_, F>) {
        self.shutting_down = true;
        for id in std::mem::take(&mut self.waiting) {
            Self::answer(cx, id, SystemResponse::WaitForShutdown(()));
        }
    }
}
