//! The simulator's fakes keep the Cache and Auth contracts (the tokio runtime's Redis
//! backend runs the same contracts in `effectful-tokio`'s tests).

use effectful::ProgramError;
use effectful_test::contract::{ContractProgram, ServiceDriver, check_auth, check_cache};
use effectful_test::sim::{Connection, ConnectionEnd, SimConfig, Simulation};

struct Simulator;

impl ServiceDriver for Simulator {
    fn run(&mut self, program: ContractProgram) -> Result<Vec<String>, ProgramError> {
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
        let report = sim.run();
        assert_eq!(report.unfinished, 0, "{report}");
        sim.results()[0].clone().expect("the program finished")
    }
}

#[test]
fn the_fake_cache_keeps_the_cache_contract() {
    check_cache(&mut Simulator);
}

#[test]
fn the_fake_auth_keeps_the_auth_contract() {
    check_auth(&mut Simulator);
}
