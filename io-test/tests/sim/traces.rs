//! Traces: recording, JSON lines, replay, and what replay refuses.

use super::*;

fn echo_trace() -> Vec<TraceRecord> {
    let mut config = SimConfig::new(31);
    config.record_trace = true;
    config.faults.latency.websocket = Latency {
        base: MS,
        jitter: 50 * MS,
        spike_rate: 0.0,
        spike: Duration::ZERO,
    };
    let connections = vec![
        connection(
            Time::ZERO,
            &[(MS, "a"), (MS, "b"), (MS, "c")],
            ConnectionEnd::Close { after: SEC },
        ),
        connection(
            Time::from_millis(2),
            &[(MS, "x"), (2 * MS, "y")],
            ConnectionEnd::Vanish { after: 10 * MS },
        ),
        connection(Time::from_millis(3), &[(MS, "z")], ConnectionEnd::Linger),
    ];
    let mut sim = Simulation::new(config, connections, echo);
    sim.run();
    sim.trace().to_vec()
}

#[test]
fn a_recorded_echo_trace_replays_through_json_lines() {
    let records = echo_trace();
    let mut file = Vec::new();
    write_trace(&mut file, &records).unwrap();
    let read = read_trace(file.as_slice(), DEFAULT_MAX_LINE).unwrap();
    assert_eq!(read, records);
    let stats = replay(&read, echo).expect("the trace replays");
    let inputs = records.iter().filter(|r| r.is_input()).count();
    let outputs = records.iter().filter(|r| r.is_output()).count();
    assert_eq!((stats.inputs, stats.outputs), (inputs, outputs));
    assert!(inputs > 10 && outputs > 10, "{stats:?}");
    // Every connection's program was spawned and finished.
    let finished = records
        .iter()
        .filter(|r| matches!(r, TraceRecord::Finished { .. }))
        .count();
    assert_eq!(finished, 3);
}

/// The first text the program sent in `records`: its record's index, and the text.
fn first_sent_text(records: &mut [TraceRecord]) -> (usize, &mut String) {
    records
        .iter_mut()
        .enumerate()
        .find_map(|(index, r)| match r {
            TraceRecord::Request {
                request: Request::WebSocket(WebSocketRequest::SendText(send)),
                ..
            } => Some((index, &mut send.text)),
            _ => None,
        })
        .expect("the program sent something")
}

#[test]
fn a_trace_with_one_request_altered_fails_replay_at_that_record() {
    let mut records = echo_trace();
    let (index, text) = first_sent_text(&mut records);
    *text = "something else".into();
    match replay(&records, echo) {
        Err(ReplayError::Divergence {
            index: at,
            expected,
            got,
        }) => {
            assert_eq!(at, index);
            assert!(expected.contains("something else"), "{expected}");
            assert!(!got.contains("something else"), "{got}");
        }
        other => panic!("expected a divergence at record {index}, got {other:?}"),
    }
}

#[test]
fn a_divergence_on_a_huge_record_quotes_bounded_excerpts_around_the_difference() {
    let records = echo_trace();
    // A 16 MiB text that differs from what the program sent only at its very end.
    let mut tampered = records.clone();
    let (index, text) = first_sent_text(&mut tampered);
    text.push_str(&"~".repeat(16 << 20));
    let error = replay(&tampered, echo).unwrap_err();
    let ReplayError::Divergence { index: at, .. } = error else {
        panic!("expected a divergence, got {error}");
    };
    assert_eq!(at, index);
    let message = error.to_string();
    assert!(message.len() < 1_000, "a {} byte message", message.len());
    assert!(
        message.contains("~~~~") && message.contains("bytes cut]"),
        "{message}"
    );

    let divergence = first_divergence(&records, &tampered).expect("they differ");
    let message = divergence.to_string();
    assert!(message.len() < 1_000, "a {} byte message", message.len());
    assert!(
        message.contains("~~~~") && message.contains("bytes cut]"),
        "{message}"
    );
}

#[test]
fn read_trace_refuses_a_line_over_the_limit_with_its_line_number() {
    let records = echo_trace();
    let mut file = Vec::new();
    write_trace(&mut file, &records).unwrap();
    let limit = file.split(|b| *b == b'\n').map(<[u8]>::len).max().unwrap() + 16;
    assert!(read_trace(file.as_slice(), limit).is_ok());
    file.extend(std::iter::repeat_n(b'x', limit + 1));
    file.push(b'\n');
    match read_trace(file.as_slice(), limit) {
        Err(TraceReadError::LineTooLong { line, limit: l }) => {
            assert_eq!(line, records.len() + 1);
            assert_eq!(l, limit);
        }
        other => panic!("expected a line too long, got {other:?}"),
    }
}

#[test]
fn read_trace_refuses_a_malformed_line_with_its_line_number() {
    let records = echo_trace();
    let mut file = Vec::new();
    write_trace(&mut file, &records).unwrap();
    let text = String::from_utf8(file).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = r#"{"kind":"teleport","at":3}"#;
    let broken = lines.join("\n");
    match read_trace(broken.as_bytes(), DEFAULT_MAX_LINE) {
        Err(TraceReadError::Malformed { line, message }) => {
            assert_eq!(line, 3);
            assert!(message.contains("teleport"), "{message}");
        }
        other => panic!("expected a malformed line, got {other:?}"),
    }
}

#[test]
fn a_trace_without_a_start_record_cannot_replay_and_the_error_says_how_to_record_one() {
    let records = echo_trace();
    let error = replay(&records[1..], echo).unwrap_err();
    assert!(matches!(error, ReplayError::NoStart), "{error}");
    assert!(
        error.to_string().contains(
            "record the trace with SimConfig::record_trace (its first line is a start record)"
        ),
        "{error}"
    );
    assert!(matches!(replay(&[], echo), Err(ReplayError::NoStart)));
}

fn end_records(records: &[TraceRecord]) -> usize {
    records
        .iter()
        .filter(|r| matches!(r, TraceRecord::End { .. }))
        .count()
}

#[test]
fn a_recorded_trace_ends_with_a_record_counting_the_ones_before_it() {
    let records = echo_trace();
    assert_eq!(
        records.last(),
        Some(&TraceRecord::End {
            records: records.len() as u64 - 1
        })
    );
    assert_eq!(end_records(&records), 1);
}

#[test]
fn a_trace_cut_at_any_line_boundary_fails_replay_saying_it_was_cut_short() {
    let records = echo_trace();
    let mut file = Vec::new();
    write_trace(&mut file, &records).unwrap();
    let lines: Vec<&[u8]> = file.split_inclusive(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), records.len());
    // Every whole-line prefix that still has its start record: the recorder could
    // have been killed after any line.
    for kept in 1..lines.len() {
        let cut = lines[..kept].concat();
        let read = read_trace(cut.as_slice(), DEFAULT_MAX_LINE).expect("whole lines read");
        match replay(&read, echo) {
            Err(ReplayError::Truncated { records }) => assert_eq!(records, kept),
            other => panic!("a trace cut after {kept} lines replayed as {other:?}"),
        }
    }
    let error = replay(&records[..records.len() - 1], echo).unwrap_err();
    assert!(error.to_string().contains("cut short"), "{error}");
}

#[test]
fn a_trace_with_a_lost_record_or_a_record_after_its_end_fails_replay() {
    let records = echo_trace();
    let mut lost = records.clone();
    lost.remove(5);
    match replay(&lost, echo) {
        Err(ReplayError::Miscounted { counted, found }) => {
            assert_eq!(
                (counted, found),
                (records.len() as u64 - 1, records.len() - 2)
            );
        }
        other => panic!("expected a miscount, got {other:?}"),
    }
    let mut joined = records.clone();
    joined.extend(records.iter().skip(1).cloned());
    match replay(&joined, echo) {
        Err(ReplayError::AfterEnd { index }) => assert_eq!(index, records.len()),
        other => panic!("expected a record after the end, got {other:?}"),
    }
}

#[test]
fn a_second_run_moves_the_end_record_to_the_new_end() {
    let mut config = SimConfig::new(3);
    config.record_trace = true;
    let mut sim = Simulation::new(config, vec![quiet(Time::ZERO)], echo);
    sim.run();
    let first = sim.trace().len();
    sim.add_connection(quiet(Time::from_secs(120)));
    sim.run();
    let records = sim.trace();
    assert!(records.len() > first);
    assert_eq!(end_records(records), 1);
    replay(records, echo).expect("the continued trace replays");
}

/// A trace destination the test can read back once the simulation is done with it.
#[derive(Clone, Default)]
struct SharedFile(std::rc::Rc<RefCell<std::io::Cursor<Vec<u8>>>>);

impl std::io::Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for SharedFile {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.0.borrow_mut().seek(to)
    }
}

impl SharedFile {
    fn bytes(&self) -> Vec<u8> {
        self.0.borrow().get_ref().clone()
    }
}

/// Connections of several kinds under chaos faults: a trace with every kind of record.
fn chaos_connections() -> Vec<Connection> {
    (0..12u32)
        .map(|i| {
            let end = match i % 3 {
                0 => ConnectionEnd::Close { after: SEC },
                1 => ConnectionEnd::Vanish { after: 2 * SEC },
                _ => ConnectionEnd::Linger,
            };
            connection(
                Time::from_secs(u64::from(i) * 3),
                &[(MS, "a"), (SEC, "b"), (2 * SEC, "c")],
                end,
            )
        })
        .collect()
}

fn chaos(seed: u64) -> SimConfig {
    SimConfig {
        faults: FaultPlan::chaos(),
        program_timeout: Some(20 * SEC),
        ..SimConfig::new(seed)
    }
}

fn json_lines(records: &[TraceRecord]) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_trace(&mut bytes, records).expect("written to memory");
    bytes
}

#[test]
fn a_streamed_trace_is_the_kept_trace_byte_for_byte_and_replays() {
    for seed in 0..6 {
        let mut kept_config = chaos(seed);
        kept_config.record_trace = true;
        let mut kept = Simulation::new(kept_config, chaos_connections(), echo);
        let kept_report = kept.run();
        let file = SharedFile::default();
        // Streaming turns tracing on: `record_trace` is off here.
        let mut sim = Simulation::new(chaos(seed), chaos_connections(), echo);
        sim.stream_trace(file.clone());
        let report = sim.run();
        assert_eq!(
            report, kept_report,
            "seed {seed}: streaming changes nothing"
        );
        assert!(
            sim.trace().is_empty(),
            "seed {seed}: nothing is kept in memory"
        );
        assert!(sim.trace_error().is_none());
        let bytes = file.bytes();
        assert_eq!(bytes, json_lines(kept.trace()), "seed {seed}");
        let read = read_trace(bytes.as_slice(), DEFAULT_MAX_LINE).expect("whole lines");
        assert!(read.len() > 100, "seed {seed}: {} records", read.len());
        replay(&read, echo).expect("the streamed trace replays");
    }
}

#[test]
fn a_streamed_trace_continued_by_later_runs_writes_over_its_end_record() {
    let mut kept_config = chaos(8);
    kept_config.record_trace = true;
    let mut kept = Simulation::new(kept_config, chaos_connections(), echo);
    let file = SharedFile::default();
    let mut sim = Simulation::new(chaos(8), chaos_connections(), echo);
    sim.stream_trace(file.clone());
    for sim in [&mut kept, &mut sim] {
        sim.run_until(Time::from_secs(10));
        sim.run_until(Time::from_secs(25));
        sim.run();
        sim.add_connection(quiet(Time::from_secs(200)));
        sim.run();
    }
    let bytes = file.bytes();
    assert_eq!(bytes, json_lines(kept.trace()));
    let read = read_trace(bytes.as_slice(), DEFAULT_MAX_LINE).expect("whole lines");
    assert_eq!(end_records(&read), 1);
    replay(&read, echo).expect("the continued trace replays");
}

#[test]
fn a_streamed_run_stopped_before_its_end_leaves_a_trace_replay_refuses_as_cut_short() {
    let file = SharedFile::default();
    let mut sim = Simulation::new(chaos(4), chaos_connections(), echo);
    sim.stream_trace(file.clone());
    for _ in 0..40 {
        assert!(sim.step());
    }
    // Stopped here (Ctrl-C, a failure): the simulation goes, its buffer is written.
    drop(sim);
    let read = read_trace(file.bytes().as_slice(), DEFAULT_MAX_LINE).expect("whole lines");
    assert!(read.len() > 40, "{} records", read.len());
    match replay(&read, echo) {
        Err(ReplayError::Truncated { records }) => assert_eq!(records, read.len()),
        other => panic!("a trace stopped early replayed as {other:?}"),
    }
}

/// Takes `room` bytes (the last write short), then fails every write.
struct FullDisk {
    inner: SharedFile,
    room: usize,
}

impl std::io::Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 {
            return Err(std::io::Error::other("no space left on device"));
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        self.inner.write(&buf[..n])
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for FullDisk {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(to)
    }
}

#[test]
fn a_failed_trace_write_is_reported_and_the_trace_never_gets_its_end_record() {
    let file = SharedFile::default();
    let mut sim = Simulation::new(chaos(5), chaos_connections(), echo);
    sim.stream_trace(FullDisk {
        inner: file.clone(),
        room: 10_000,
    });
    sim.run();
    let error = sim.trace_error().expect("the write failed");
    assert!(error.to_string().contains("no space left"), "{error}");
    let bytes = file.bytes();
    assert_eq!(bytes.len(), 10_000);
    // The file ends mid-line; its whole lines are a trace replay refuses.
    let cut = &bytes[..bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)];
    let read = read_trace(cut, DEFAULT_MAX_LINE).expect("whole lines");
    assert_eq!(end_records(&read), 0);
    assert!(matches!(
        replay(&read, echo),
        Err(ReplayError::Truncated { .. })
    ));
}
