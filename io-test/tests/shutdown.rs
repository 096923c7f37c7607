//! `System.WaitForShutdown` in a simulation: no shutdown ever begins, so the wait
//! lasts until the program gives up on it, and the rest of the run is unaffected.

use std::time::Duration;

use effectful::effect::{GenerateUuid, WaitForShutdown};
use effectful::{Either, Fx, Time, race};
use effectful_test::sim::{Connection, ConnectionEnd, SimConfig, Simulation};

#[test]
fn a_simulation_never_shuts_down_so_a_wait_for_it_lasts_until_the_program_gives_up() {
    let connections = vec![Connection {
        client: 0,
        connect_at: Time::ZERO,
        messages: Vec::new(),
        end: ConnectionEnd::Linger,
    }];
    let mut sim = Simulation::new(SimConfig::new(5), connections, |_, fx: Fx| async move {
        let waited = match race(
            fx.perform(WaitForShutdown {}),
            fx.sleep(Duration::from_secs(30)),
        )
        .await
        {
            Either::Left(_) => "shutdown",
            Either::Right(()) => "gave up after 30 s",
        };
        let id = fx.perform(GenerateUuid {}).await.map(|_| "then carried on");
        (waited, id, fx.now())
    });
    let report = sim.run();
    assert_eq!(report.unfinished, 0, "{report}");
    let Some(Ok((waited, next, at))) = sim.results()[0].clone() else {
        panic!("the program finished: {:?}", sim.results()[0]);
    };
    assert_eq!(waited, "gave up after 30 s");
    assert_eq!(next, Ok("then carried on"));
    assert!(at >= Time::from_secs(30));
}
