//! Trace writing: the simulator's record of every engine input and output, with its
//! own annotations (faults, client traffic), kept in memory when asked for.

use effectful::EngineConfig;

use super::SimConfig;
use crate::trace::TraceRecord;

/// The trace of one simulation, or nothing when tracing is off.
pub(super) struct Recorder {
    /// Whether records are kept (`SimConfig::record_trace`).
    pub(super) on: bool,
    pub(super) records: Vec<TraceRecord>,
}

impl Recorder {
    /// A recorder that keeps records only if `config` asks for a trace, and then
    /// starts with the start record.
    pub(super) fn new(config: &SimConfig, engine: EngineConfig) -> Recorder {
        let mut recorder = Recorder {
            on: config.record_trace,
            records: Vec::new(),
        };
        if recorder.on {
            let label = serde_json::to_string(config).unwrap_or_default();
            recorder.records.push(TraceRecord::Start { engine, label });
        }
        recorder
    }

    /// Keeps the record `make` builds, if tracing is on (it is not built otherwise).
    pub(super) fn record(&mut self, make: impl FnOnce() -> TraceRecord) {
        if self.on {
            self.records.push(make());
        }
    }

    /// A run continues the trace: its end record goes, to come back at the new end.
    pub(super) fn reopen(&mut self) {
        if let Some(TraceRecord::End { .. }) = self.records.last() {
            self.records.pop();
        }
    }

    /// The run is over: the end record counts the records before it.
    pub(super) fn close(&mut self) {
        let records = self.records.len() as u64;
        self.record(|| TraceRecord::End { records });
    }
}
