//! The simulator's fakes keep the Cache, Auth and Messaging contracts (the tokio
//! runtime's Redis backend runs the same contracts in `effectful-tokio`'s tests).

use effectful::ProgramError;
use effectful_test::contract::{
    ACK_TIMEOUT, ContractProgram, MessagingDriver, ServiceDriver, check_auth, check_cache,
    check_cache_commands, check_messaging,
};
use effectful_test::fake::Services;
use effectful_test::sim::{Connection, ConnectionEnd, SimConfig, Simulation};

struct Simulator;

impl ServiceDriver for Simulator {
    fn run(&mut self, program: ContractProgram) -> Result<Vec<String>, ProgramError> {
        simulate(program, |_| {})
    }
}

impl MessagingDriver for Simulator {
    fn run(&mut self, program: ContractProgram) -> Result<Vec<String>, ProgramError> {
        simulate(program, |services| {
            let broker = std::mem::take(&mut services.broker);
            services.broker = broker.with_ack_timeout(ACK_TIMEOUT);
        })
    }
}

/// Runs `program` alone in a simulation that `prepare` may change first.
fn simulate(
    program: ContractProgram,
    prepare: impl FnOnce(&mut Services),
) -> Result<Vec<String>, ProgramError> {
    let config = SimConfig::new(1);
    let connections = vec![Connection {
        client: 0,
        connect_at: effectful::Time::ZERO,
        messages: Vec::new(),
        end: ConnectionEnd::Linger,
    }];
    let mut program = Some(program);
    let mut sim = Simulation::new(config, connections, move |_, fx| {
        program
            .take()
            .expect("one connection runs the program once")(fx)
    });
    prepare(sim.services_mut());
    let report = sim.run();
    assert_eq!(report.unfinished, 0, "{report}");
    sim.results()[0].clone().expect("the program finished")
}

#[test]
fn the_fake_cache_keeps_the_cache_contract() {
    check_cache(&mut Simulator);
}

#[test]
fn the_fake_auth_keeps_the_auth_contract() {
    check_auth(&mut Simulator);
}

#[test]
fn the_fake_broker_keeps_the_messaging_contract() {
    check_messaging(&mut Simulator);
}

#[test]
fn the_fake_cache_keeps_the_commands_contract() {
    check_cache_commands(&mut Simulator);
}
