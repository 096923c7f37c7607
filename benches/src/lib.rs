//! Criterion benches for effectful live in `benches/`; run `cargo bench -p effectful-benches -- core/step`.

pub mod cpu;
pub mod floor;
pub mod shard_step;

pub mod step {
    //! The round trip `core/step` measures, shared with `examples/stepcount.rs`.

    use std::task::Poll;

    use effectful::effect::{GetCurrentTime, Request, Response, SystemRequest, SystemResponse};
    use effectful::{Cx, EffectId, Engine, Event, Output, Program, Std, Timestamp, decode};

    /// The driver's side of the work: answer a clock request.
    #[inline(never)]
    pub fn answer(request: &Request) -> Response {
        match request {
            Request::System(SystemRequest::GetCurrentTime(_)) => Response::System(
                SystemResponse::GetCurrentTime(Timestamp::from_unix_micros(42)),
            ),
            _ => Response::System(SystemResponse::GetCurrentTime(Timestamp::UNIX_EPOCH)),
        }
    }

    /// Asks for the time forever, adding up what it gets.
    pub struct ClockLoop {
        /// The sum of the answers so far.
        pub sum: i64,
    }

    impl Program for ClockLoop {
        type Output = i64;
        fn resume(&mut self, cx: &mut Cx<'_>, event: Event) -> Poll<i64> {
            if let Event::Response { result, .. } = event {
                match result.and_then(decode::<Std, GetCurrentTime>) {
                    Ok(t) => self.sum = self.sum.wrapping_add(t.unix_micros()),
                    Err(_) => return Poll::Ready(self.sum),
                }
            }
            cx.perform(GetCurrentTime {});
            Poll::Pending
        }
    }

    /// The request the engine emits next; its programs always ask for one.
    pub fn next_request<O: 'static>(engine: &mut Engine<O>) -> (EffectId, Request) {
        match engine.poll_output() {
            Some(Output::Request { id, request }) => (id, request),
            _ => unreachable!("the program always asks for the next effect"),
        }
    }
}
