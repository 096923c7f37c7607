//! Transcripts handed over as sessions end (`Simulation::on_transcript`), so a long
//! run's memory holds the open sessions, not every frame ever sent.

use std::rc::Rc;

use super::*;

/// Connections of every ending, a few seconds apart, each sending a handful of lines.
fn mixed_connections() -> Vec<Connection> {
    let ends = [
        ConnectionEnd::Close { after: SEC },
        ConnectionEnd::Vanish { after: 2 * SEC },
        ConnectionEnd::Linger,
        ConnectionEnd::StopReading,
    ];
    (0..24u32)
        .map(|i| Connection {
            client: i,
            connect_at: Time::from_secs(u64::from(i) * 7),
            messages: (0..5)
                .map(|k| (SEC * (1 + k % 3), format!("line {i}-{k}")))
                .collect(),
            end: ends[i as usize % ends.len()],
        })
        .collect()
}

type Handed = Rc<RefCell<Vec<(u32, Transcript)>>>;

/// A simulation of `echo` whose whole transcripts go to the returned list.
fn streaming(
    config: SimConfig,
    connections: Vec<Connection>,
) -> (Simulation<(Vec<String>, EffectError), EchoProgram>, Handed) {
    let handed: Handed = Rc::default();
    let sink = handed.clone();
    let mut sim = Simulation::new(config, connections, echo_boxed as EchoProgram);
    sim.on_transcript(move |index, transcript, _services| {
        sink.borrow_mut().push((index, transcript))
    });
    (sim, handed)
}

type EchoFuture = std::pin::Pin<Box<dyn Future<Output = (Vec<String>, EffectError)>>>;
type EchoProgram = fn(u32, Fx) -> EchoFuture;

fn echo_boxed(connection: u32, fx: Fx) -> EchoFuture {
    Box::pin(echo(connection, fx))
}

#[test]
fn streamed_transcripts_are_the_kept_ones_each_handed_over_once() {
    for seed in 0..8 {
        let config = SimConfig {
            faults: FaultPlan::chaos(),
            ..SimConfig::new(seed)
        };
        let mut kept = Simulation::new(config.clone(), mixed_connections(), echo);
        let kept_report = kept.run();
        let (mut sim, handed) = streaming(config, mixed_connections());
        let report = sim.run();
        // Handing transcripts over changes nothing in the run.
        assert_eq!(report, kept_report, "seed {seed}");
        let handed = handed.borrow();
        let mut indices: Vec<u32> = handed.iter().map(|(i, _)| *i).collect();
        indices.sort_unstable();
        assert_eq!(
            indices,
            (0..24).collect::<Vec<_>>(),
            "seed {seed}: each connection handed over exactly once"
        );
        let frames: usize = handed.iter().map(|(_, t)| t.received.len()).sum();
        assert!(frames > 24, "seed {seed}: only {frames} frames arrived");
        for (index, transcript) in handed.iter() {
            let whole = kept.transcripts()[*index as usize];
            assert_eq!(transcript, whole, "seed {seed}, connection {index}");
            // The simulation keeps the times and the state, not the texts.
            let left = sim.transcripts()[*index as usize];
            assert!(left.sent.is_empty() && left.received.is_empty());
            assert_eq!(
                (left.state, left.closed_at, left.finished),
                (whole.state, whole.closed_at, whole.finished)
            );
        }
    }
}

#[test]
fn a_transcript_is_handed_over_mid_run_once_its_program_ended_and_its_frames_arrived() {
    let first = connection(
        Time::ZERO,
        &[(SEC, "a"), (SEC, "b")],
        ConnectionEnd::Close { after: SEC },
    );
    // This client stops reading: the echoes held for it arrive after the close, and
    // its transcript waits for them.
    let held = Connection {
        client: 1,
        ..connection(
            Time::from_secs(10),
            &[(SEC, "x"), (SEC, "y")],
            ConnectionEnd::StopReading,
        )
    };
    let later = connection(
        Time::from_secs(1000),
        &[(SEC, "c")],
        ConnectionEnd::Close { after: SEC },
    );
    let (mut sim, handed) = streaming(SimConfig::new(3), vec![first, held, later]);
    sim.run_until(Time::from_secs(5));
    {
        let handed = handed.borrow();
        assert_eq!(handed.len(), 1, "the first session ended by 5 s");
        assert_eq!(handed[0].0, 0);
        assert_eq!(texts(&handed[0].1.received), ["a", "b"]);
    }
    sim.run_until(Time::from_secs(900));
    {
        let handed = handed.borrow();
        assert_eq!(handed.len(), 2, "the stalled session ended at its deadline");
        let (index, t) = &handed[1];
        assert_eq!(*index, 1);
        assert_eq!(t.state, ConnectionState::ClosedByServer(1008));
        // Everything sent to it arrived before it was handed over.
        assert_eq!(texts(&t.received), ["x", "y"]);
    }
    assert!(
        sim.transcripts()[2].received.is_empty() && sim.transcripts()[2].finished.is_none(),
        "the third has not started"
    );
    sim.run();
    assert_eq!(handed.borrow().len(), 3);
}
