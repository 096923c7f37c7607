//! Trace writing: the simulator's record of every engine input and output, with its
//! own annotations (faults, client traffic), kept in memory or written out as it is
//! made ([`Simulation::stream_trace`](super::Simulation::stream_trace)).

use std::io::{self, BufWriter, Seek, SeekFrom, Write};

use effectful::EngineConfig;

use super::SimConfig;
use crate::trace::TraceRecord;

/// The trace of one simulation, or nothing when tracing is off.
pub(super) struct Recorder {
    /// Whether records are made (`SimConfig::record_trace`, or a stream).
    pub(super) on: bool,
    /// The records, when they are kept in memory.
    records: Vec<TraceRecord>,
    /// Where the records go instead, as they are made.
    stream: Option<Stream>,
}

/// A trace written as it is made: one JSON line per record through a buffer.
struct Stream {
    out: BufWriter<Box<dyn WriteSeek>>,
    /// Records written, the end record not included.
    records: u64,
    /// Bytes written.
    bytes: u64,
    /// Where the end record begins, while it is the last line: a run that continues
    /// the trace writes over it.
    end_at: Option<u64>,
    /// The first write that failed; nothing is written after it, so the trace never
    /// gets its end record and replay refuses it as cut short.
    error: Option<io::Error>,
    /// One record's line, reused.
    line: Vec<u8>,
}

/// What a trace is streamed to.
pub(super) trait WriteSeek: Write + Seek {}

impl<T: Write + Seek> WriteSeek for T {}

impl Stream {
    fn write(&mut self, record: &TraceRecord) {
        if self.error.is_some() {
            return;
        }
        self.line.clear();
        let written = serde_json::to_writer(&mut self.line, record)
            .map_err(io::Error::other)
            .and_then(|()| {
                self.line.push(b'\n');
                self.out.write_all(&self.line)
            });
        match written {
            Ok(()) => {
                self.records += 1;
                self.bytes += self.line.len() as u64;
            }
            Err(e) => self.error = Some(e),
        }
    }
}

impl Recorder {
    /// A recorder that keeps records only if `config` asks for a trace, and then
    /// starts with the start record.
    pub(super) fn new(config: &SimConfig, engine: EngineConfig) -> Recorder {
        let mut recorder = Recorder {
            on: config.record_trace,
            records: Vec::new(),
            stream: None,
        };
        if recorder.on {
            recorder.push(start_record(config, engine));
        }
        recorder
    }

    /// From now on, records go to `out` as they are made (those made so far first)
    /// instead of staying in memory. `start` is the start record, for a recorder
    /// that was off until now.
    pub(super) fn stream_to(
        &mut self,
        out: Box<dyn WriteSeek>,
        start: impl FnOnce() -> TraceRecord,
    ) {
        let mut stream = Stream {
            out: BufWriter::with_capacity(64 << 10, out),
            records: 0,
            bytes: 0,
            end_at: None,
            error: None,
            line: Vec::new(),
        };
        if !self.on {
            self.on = true;
            stream.write(&start());
        }
        for record in self.records.drain(..) {
            stream.write(&record);
        }
        self.stream = Some(stream);
    }

    /// The records kept in memory (none when streamed).
    pub(super) fn records(&self) -> &[TraceRecord] {
        &self.records
    }

    /// Keeps `record` (tracing is on: the caller checked `on` before building it).
    pub(super) fn push(&mut self, record: TraceRecord) {
        match &mut self.stream {
            Some(stream) => stream.write(&record),
            None => self.records.push(record),
        }
    }

    /// Keeps the record `make` builds, if tracing is on (it is not built otherwise).
    pub(super) fn record(&mut self, make: impl FnOnce() -> TraceRecord) {
        if self.on {
            self.push(make());
        }
    }

    /// A run continues the trace: its end record goes, to come back at the new end.
    pub(super) fn reopen(&mut self) {
        match &mut self.stream {
            Some(stream) => {
                let Some(end_at) = stream.end_at.take() else {
                    return;
                };
                // What follows is at least as long as the end record it covers (the
                // records after it, then an end record with a count no smaller), so
                // nothing of the old one is left behind.
                match stream.out.seek(SeekFrom::Start(end_at)) {
                    Ok(_) => stream.bytes = end_at,
                    Err(e) => stream.error = Some(e),
                }
            }
            None => {
                if let Some(TraceRecord::End { .. }) = self.records.last() {
                    self.records.pop();
                }
            }
        }
    }

    /// The run is over: the end record counts the records before it, and a streamed
    /// trace is flushed.
    pub(super) fn close(&mut self) {
        if !self.on {
            return;
        }
        match &mut self.stream {
            Some(stream) => {
                let end_at = stream.bytes;
                let records = stream.records;
                stream.write(&TraceRecord::End { records });
                // The end record is not one of the records it counts.
                stream.records = records;
                if stream.error.is_none() {
                    stream.end_at = Some(end_at);
                    if let Err(e) = stream.out.flush() {
                        stream.error = Some(e);
                    }
                }
            }
            None => {
                let records = self.records.len() as u64;
                self.records.push(TraceRecord::End { records });
            }
        }
    }

    /// The first write of a streamed trace that failed.
    pub(super) fn error(&self) -> Option<&io::Error> {
        self.stream.as_ref().and_then(|s| s.error.as_ref())
    }
}

/// The first record: the engine's configuration, and the simulation's as its label.
pub(super) fn start_record(config: &SimConfig, engine: EngineConfig) -> TraceRecord {
    let label = serde_json::to_string(config).unwrap_or_default();
    TraceRecord::Start { engine, label }
}
