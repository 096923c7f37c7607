//! The simulator keeps the cancellation contract (the tokio runtime runs the same
//! contract in `effectful-tokio`'s tests).

use std::time::Duration;

use effectful::Time;
use effectful_test::contract::{
    CancellationDriver, ContractProgram, ContractRun, check_cancellation,
};
use effectful_test::fault::Latency;
use effectful_test::sim::{Connection, ConnectionEnd, SimConfig, Simulation};
use effectful_test::trace::TraceRecord;

struct Simulator;

impl CancellationDriver for Simulator {
    fn run_in_turn(&mut self, leg: Duration, programs: Vec<ContractProgram>) -> ContractRun {
        let mut config = SimConfig::new(1);
        config.record_trace = true;
        // One draw is the whole round trip, applied halfway.
        config.faults.latency.cache = Latency::fixed(leg * 2);
        // Far enough apart that each program has ended before the next starts.
        let gap = leg * 20;
        let connections = (0..programs.len())
            .map(|i| Connection {
                client: i as u32,
                connect_at: Time::ZERO + gap * i as u32,
                messages: Vec::new(),
                end: ConnectionEnd::Linger,
            })
            .collect();
        let mut programs: Vec<Option<ContractProgram>> = programs.into_iter().map(Some).collect();
        let mut sim = Simulation::new(config, connections, move |connection, fx| {
            let program = programs[connection as usize]
                .take()
                .expect("each connection runs its program once");
            program(fx)
        });
        let report = sim.run();
        assert_eq!(report.unfinished, 0, "{report}");
        let stale_answers = sim
            .trace()
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    TraceRecord::Response {
                        delivered: false,
                        ..
                    }
                )
            })
            .count() as u64;
        let results = sim
            .results()
            .iter()
            .map(|r| r.clone().expect("every program finished"))
            .collect();
        ContractRun {
            results,
            stale_answers,
        }
    }
}

#[test]
fn the_simulator_drops_queued_effects_and_delivers_in_flight_answers_as_stale() {
    check_cancellation(&mut Simulator, Duration::from_millis(100));
}
