//! WebSocket clients: send order, closes and vanishings, the close code when a program ends.

use super::*;

#[test]
fn echoes_reach_the_client_in_send_order_even_when_latency_jitter_is_large() {
    let sent: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    let mut slowest = Duration::ZERO;
    for seed in 0..20 {
        let mut config = SimConfig::new(seed);
        config.faults.latency.websocket = Latency {
            base: MS,
            jitter: 500 * MS,
            spike_rate: 0.0,
            spike: Duration::ZERO,
        };
        let script = Connection {
            client: 0,
            connect_at: Time::from_secs(1),
            messages: sent.iter().map(|text| (MS, text.clone())).collect(),
            end: ConnectionEnd::Close { after: 2 * SEC },
        };
        let (result, t, report) = run_echo(config, script);
        let (received, error) = result.unwrap();
        assert_eq!(received, sent, "seed {seed}: the program reads in order");
        assert_eq!(close_code(&error), Some(1000), "seed {seed}: {error}");
        assert_eq!(texts(&t.sent), sent, "seed {seed}");
        assert_eq!(
            texts(&t.received),
            sent,
            "seed {seed}: echoes in send order"
        );
        assert!(
            t.received.windows(2).all(|w| w[0].0 < w[1].0),
            "seed {seed}: arrivals strictly increase: {:?}",
            t.received
        );
        for ((sent_at, _), (received_at, _)) in t.sent.iter().zip(&t.received) {
            slowest = slowest.max(*received_at - *sent_at);
        }
        assert_eq!((report.unfinished, report.late), (0, 0), "{report}");
    }
    // The jitter was large enough to reorder frames had the simulator let it.
    assert!(slowest > 100 * MS, "slowest echo took only {slowest:?}");
}

#[test]
fn a_client_that_vanishes_ends_a_waiting_receive_with_close_code_1006() {
    let script = connection(
        Time::from_secs(2),
        &[(SEC, "hello")],
        ConnectionEnd::Vanish { after: 3 * SEC },
    );
    let (result, t, report) = run_echo(SimConfig::new(1), script);
    let (received, error) = result.unwrap();
    assert_eq!(received, ["hello"]);
    assert_eq!(error.effect, "WebSocket.ReceiveText");
    assert!(
        matches!(error.kind, ErrorKind::WebSocketClosed { code: 1006, .. }),
        "{error}"
    );
    assert!(!error.retryable);
    assert_eq!(t.state, ConnectionState::Vanished);
    assert_eq!(texts(&t.received), ["hello"]);
    // The program ends the moment the client vanishes: 2 s + 1 s + 3 s.
    assert_eq!(t.finished, Some(Time::from_secs(6)));
    assert_eq!(report.unfinished, 0);
}

#[test]
fn a_client_close_ends_a_waiting_receive_with_close_code_1000() {
    let script = connection(
        Time::ZERO,
        &[(SEC, "a"), (SEC, "b")],
        ConnectionEnd::Close { after: SEC },
    );
    let (result, t, _) = run_echo(SimConfig::new(2), script);
    let (received, error) = result.unwrap();
    assert_eq!(received, ["a", "b"]);
    assert_eq!(error.effect, "WebSocket.ReceiveText");
    assert!(
        matches!(error.kind, ErrorKind::WebSocketClosed { code: 1000, .. }),
        "{error}"
    );
    assert_eq!(t.state, ConnectionState::ClosedByClient);
    assert_eq!(t.finished, Some(Time::from_secs(3)));
}

/// Reads client messages, spending 100 ms in the database after each; returns what it
/// read and the close code that ended it.
async fn slow_reader(_connection: u32, fx: Fx) -> (Vec<String>, Option<u16>) {
    let mut received = Vec::new();
    loop {
        match fx.perform(ReceiveText {}).await {
            Ok(text) => received.push(text),
            Err(error) => return (received, close_code(&error)),
        }
        fx.perform(ListUsers {
            limit: 1,
            offset: 0,
        })
        .await
        .expect("no faults are planned");
    }
}

#[test]
fn messages_a_client_sent_before_it_closed_or_vanished_reach_a_busy_program_first() {
    // The client sends a second message, then closes (or vanishes), while the program
    // is busy with the first. Frames arrive in order on one stream, so the program
    // reads the second message before it learns that the connection ended.
    // (Regression: the simulator used to drop the buffered message.)
    let ends = [
        (ConnectionEnd::Close { after: 10 * MS }, 1000),
        (ConnectionEnd::Vanish { after: 10 * MS }, 1006),
    ];
    for (end, code) in ends {
        let mut config = SimConfig::new(3);
        config.faults.latency.database = Latency::fixed(100 * MS);
        let script = connection(Time::ZERO, &[(SEC, "first"), (10 * MS, "second")], end);
        let mut sim = Simulation::new(config, vec![script], slow_reader);
        sim.run();
        let (received, closed_with) = only_result(&sim).unwrap();
        assert_eq!(received, ["first", "second"], "{end:?}");
        assert_eq!(closed_with, Some(code), "{end:?}");
        // The close is seen once the buffered message is handled: 1 s + 2 × 100 ms.
        let finished = sim.transcripts()[0].finished;
        assert_eq!(finished, Some(Time::from_millis(1_200)), "{end:?}");
    }
}

#[test]
fn send_text_after_the_client_vanished_fails_with_close_code_1006() {
    let script = connection(
        Time::ZERO,
        &[(SEC, "hi")],
        ConnectionEnd::Vanish { after: SEC },
    );
    let mut sim = Simulation::new(SimConfig::new(4), vec![script], |_, fx: Fx| async move {
        let text = fx.perform(ReceiveText {}).await?;
        fx.sleep(5 * SEC).await;
        fx.perform(SendText { text }).await
    });
    sim.run();
    let error = only_result(&sim).unwrap().unwrap_err();
    assert_eq!(error.effect, "WebSocket.SendText");
    assert_eq!(close_code(&error), Some(1006), "{error}");
    let t = &sim.transcripts()[0];
    assert_eq!(t.state, ConnectionState::Vanished);
    assert!(t.received.is_empty(), "{:?}", t.received);
}

#[test]
fn a_server_close_shows_as_closed_by_server_and_later_client_messages_are_not_delivered() {
    let script = connection(
        Time::ZERO,
        &[(SEC, "one"), (SEC, "two"), (SEC, "three")],
        ConnectionEnd::Close { after: SEC },
    );
    let mut sim = Simulation::new(SimConfig::new(5), vec![script], |_, fx: Fx| async move {
        let first = fx.perform(ReceiveText {}).await?;
        fx.perform(SendText {
            text: format!("bye after {first}"),
        })
        .await?;
        fx.perform(Close {
            reason: CloseReason::PolicyViolation("one message per session".into()),
        })
        .await?;
        // Whatever the client sends now never reaches the program.
        fx.perform(ReceiveText {}).await
    });
    sim.run();
    let error = only_result(&sim).unwrap().unwrap_err();
    assert_eq!(error.effect, "WebSocket.ReceiveText");
    assert_eq!(close_code(&error), Some(1008), "{error}");
    let t = &sim.transcripts()[0];
    assert_eq!(t.state, ConnectionState::ClosedByServer(1008));
    assert_eq!(texts(&t.sent), ["one"], "later messages are not sent");
    // A frame sent before the close still reaches the client.
    assert_eq!(texts(&t.received), ["bye after one"]);
}

#[test]
fn a_lingering_client_leaves_the_program_waiting_until_its_deadline() {
    let mut config = SimConfig::new(6);
    config.program_timeout = Some(Duration::from_secs(60));
    let script = connection(Time::from_secs(5), &[(SEC, "hello")], ConnectionEnd::Linger);
    let (result, t, report) = run_echo(config, script);
    assert_eq!(
        result,
        Err(ProgramError::DeadlineExceeded {
            deadline: Time::from_secs(65)
        })
    );
    // The program ended past its deadline with the connection open: the server closed
    // it with the seed tutorial's timeout code.
    assert_eq!(t.state, ConnectionState::ClosedByServer(1008));
    assert_eq!(texts(&t.received), ["hello"]);
    assert_eq!(t.finished, Some(Time::from_secs(65)));
    assert_eq!((report.late, report.unfinished), (0, 0), "{report}");
    assert_eq!(report.programs, 1);
    assert_eq!(report.simulated, Duration::from_secs(65));
}

#[test]
fn a_server_close_ends_a_receive_waiting_in_another_future_of_the_program() {
    // One future waits for a client message while another closes the connection: the
    // close ends the wait with the close code. (Regression: the receive hung until the
    // program's deadline.)
    let mut sim = Simulation::new(
        SimConfig::new(61),
        vec![quiet(Time::ZERO)],
        |_, fx: Fx| async move {
            let (received, closed) = join(fx.perform(ReceiveText {}), async {
                fx.sleep(SEC).await;
                fx.perform(Close {
                    reason: CloseReason::PolicyViolation("closing".into()),
                })
                .await
            })
            .await;
            (received, closed, fx.now())
        },
    );
    let report = sim.run();
    let (received, closed, ended_at) = only_result(&sim).unwrap();
    assert_eq!(closed, Ok(()));
    let error = received.unwrap_err();
    assert_eq!(error.effect, "WebSocket.ReceiveText");
    assert_eq!(close_code(&error), Some(1008), "{error}");
    assert_eq!(ended_at, Time::from_secs(1));
    assert_eq!(
        sim.transcripts()[0].state,
        ConnectionState::ClosedByServer(1008)
    );
    assert_eq!((report.unfinished, report.late), (0, 0), "{report}");
}

/// The close codes the server sent, by the trace.
fn server_close_in_trace(trace: &[TraceRecord]) -> Vec<u16> {
    trace
        .iter()
        .filter_map(|r| match r {
            TraceRecord::Client {
                event: ClientEvent::ClosedByServer(code),
                ..
            } => Some(*code),
            _ => None,
        })
        .collect()
}

#[test]
fn a_program_that_returns_with_its_connection_open_closes_it_with_1000_and_hears_no_more() {
    let mut config = SimConfig::new(62);
    config.record_trace = true;
    let script = connection(
        Time::ZERO,
        &[(SEC, "one"), (SEC, "two"), (SEC, "three")],
        ConnectionEnd::Close { after: SEC },
    );
    let mut sim = Simulation::new(config, vec![script], |_, fx: Fx| async move {
        // Returns an error value of its own: still a normal return for the server.
        fx.perform(ReceiveText {}).await?;
        Err::<(), _>(EffectError::connection_lost("Program.Done", "done"))
    });
    sim.run();
    assert!(
        only_result(&sim).unwrap().is_err(),
        "the program's own value"
    );
    let t = &sim.transcripts()[0];
    assert_eq!(t.state, ConnectionState::ClosedByServer(1000));
    assert_eq!(t.finished, Some(Time::from_secs(1)));
    assert_eq!(texts(&t.sent), ["one"], "later messages are not sent");
    assert_eq!(server_close_in_trace(sim.trace()), [1000]);
}

#[test]
fn a_program_past_its_deadline_closes_its_connection_with_1008() {
    let mut config = SimConfig::new(63);
    config.record_trace = true;
    config.program_timeout = Some(10 * SEC);
    let script = connection(Time::ZERO, &[(20 * SEC, "late")], ConnectionEnd::Linger);
    let mut sim = Simulation::new(config, vec![script], echo);
    sim.run();
    let result = only_result(&sim);
    assert!(
        matches!(result, Err(ProgramError::DeadlineExceeded { .. })),
        "{result:?}"
    );
    let t = &sim.transcripts()[0];
    assert_eq!(t.state, ConnectionState::ClosedByServer(1008));
    assert!(t.sent.is_empty(), "the message after the close is not sent");
    assert_eq!(server_close_in_trace(sim.trace()), [1008]);
}

#[test]
fn a_program_that_fails_with_its_connection_open_closes_it_with_1011() {
    let mut config = SimConfig::new(64);
    config.record_trace = true;
    let mut sim = Simulation::new(config, vec![quiet(Time::ZERO)], |_, fx: Fx| async move {
        fx.sleep(SEC).await;
        // Not an effect: the engine ends the program with ProgramError::ForeignAwait.
        std::future::pending::<()>().await;
    });
    sim.run();
    assert_eq!(only_result(&sim), Err(ProgramError::ForeignAwait));
    assert_eq!(
        sim.transcripts()[0].state,
        ConnectionState::ClosedByServer(1011)
    );
    assert_eq!(server_close_in_trace(sim.trace()), [1011]);
}

#[test]
fn a_program_that_ends_after_its_connection_closed_does_not_close_it_again() {
    let mut config = SimConfig::new(65);
    config.record_trace = true;
    let script = connection(
        Time::ZERO,
        &[(SEC, "hi")],
        ConnectionEnd::Close { after: SEC },
    );
    let mut sim = Simulation::new(config, vec![script], echo);
    sim.run();
    assert_eq!(sim.transcripts()[0].state, ConnectionState::ClosedByClient);
    assert!(server_close_in_trace(sim.trace()).is_empty());
}

#[test]
fn a_text_over_the_limit_closes_with_1009_and_the_program_never_reads_it() {
    let mut config = SimConfig::new(4);
    config.websocket.max_message_size = 8;
    let script = connection(
        Time::ZERO,
        &[(MS, "short"), (MS, "far too long"), (MS, "never sent")],
        ConnectionEnd::Close { after: SEC },
    );
    let (result, t, _) = run_echo(config, script);
    let (received, error) = result.unwrap();
    assert_eq!(received, ["short"]);
    assert_eq!(close_code(&error), Some(1009), "{error}");
    assert_eq!(texts(&t.sent), ["short", "far too long"]);
    assert_eq!(texts(&t.received), ["short"]);
    assert_eq!(t.state, ConnectionState::ClosedByServer(1009));
}

#[test]
fn a_client_that_stops_reading_gets_what_was_held_for_it_once_the_server_closes() {
    let mut config = SimConfig::new(5);
    config.program_timeout = Some(10 * SEC);
    let script = connection(
        Time::ZERO,
        &[(MS, "a"), (MS, "b"), (MS, "c")],
        ConnectionEnd::StopReading,
    );
    let (result, t, _) = run_echo(config, script);
    assert!(result.is_err(), "the echo program runs into its deadline");
    assert_eq!(texts(&t.received), ["a", "b", "c"]);
    let (held_until, _) = t.received[2];
    assert!(
        held_until >= Time::from_secs(10),
        "the last echo waited for the close: {held_until:?}"
    );
    assert_eq!(t.state, ConnectionState::ClosedByServer(1008));
}

#[test]
fn a_send_past_what_the_server_holds_fails_with_1008_client_too_slow() {
    let mut config = SimConfig::new(6);
    config.websocket.max_queued_bytes = 4;
    let script = connection(
        Time::ZERO,
        &[(MS, "ok"), (MS, "held"), (MS, "too much")],
        ConnectionEnd::StopReading,
    );
    let (result, t, _) = run_echo(config, script);
    let (received, error) = result.unwrap();
    assert_eq!(received, ["ok", "held", "too much"]);
    assert!(
        matches!(&error.kind, ErrorKind::WebSocketClosed { code: 1008, reason } if reason == "Client too slow"),
        "{error}"
    );
    // "ok" went out before the client stopped reading; "held" (2 + 4 bytes framed)
    // was held; "too much" would pass the limit and was never sent.
    assert_eq!(texts(&t.received), ["ok", "held"]);
    assert_eq!(t.state, ConnectionState::ClosedByServer(1008));
}
