//! Traces: every input the engine was given and every output it produced, plus the
//! simulator's own events (faults, client traffic), as JSON lines.
//!
//! A trace replays: [`replay`] feeds the recorded inputs (spawns, answers, timeouts,
//! aborts) to a fresh engine running the same program, and checks each output against
//! the record, failing at the first divergence. The services and fault plan are not
//! needed to replay: their work is in the recorded answers.
//!
//! A complete trace says so: its last line is an [`TraceRecord::End`] record that counts
//! the records before it. [`replay`] refuses a trace without one, so a trace cut short
//! (a recorder killed mid-run, a full disk, a partial copy) fails instead of replaying
//! its prefix as if it were the whole run.

use std::fmt;
use std::future::Future;
use std::io::{self, BufRead, Read, Write};

use effectful::effect::{Request, Response, Std};
use effectful::{
    Delivery, EffectError, EffectId, Engine, EngineConfig, Excerpt, Fx, Output, ProgramId, Time,
};

use crate::sim::SimFamily;
use crate::sim::family::to_json;
use serde::{Deserialize, Serialize};

/// The longest trace line [`read_trace`] accepts by default: 16 MiB.
pub const DEFAULT_MAX_LINE: usize = 16 << 20;

/// One line of a trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TraceRecord {
    /// The first line: how the engine was configured, and a free-form label
    /// (the simulator writes its configuration there).
    Start {
        /// The engine's configuration.
        engine: EngineConfig,
        /// What produced the trace.
        label: String,
    },
    /// Input: a program was spawned for `connection`.
    Spawn {
        /// When.
        at: Time,
        /// The id the engine gave it.
        program: ProgramId,
        /// The connection (client session) it serves.
        connection: u32,
    },
    /// Input: a program with no connection (a job the simulation spawned at a chosen
    /// time) was spawned.
    SpawnJob {
        /// When.
        at: Time,
        /// The id the engine gave it.
        program: ProgramId,
        /// The job's index (the order it was added to the simulation).
        job: u32,
    },
    /// Input: the driver aborted a program.
    Abort {
        /// When.
        at: Time,
        /// Which.
        program: ProgramId,
    },
    /// Input: an answer to an effect.
    Response {
        /// When it arrived.
        at: Time,
        /// The effect.
        id: EffectId,
        /// The answer.
        result: Result<Response, EffectError>,
        /// Whether the engine took it (`false`: stale, the program had moved on).
        delivered: bool,
    },
    /// Input: the driver called `handle_timeout`.
    Timeout {
        /// The time it passed.
        at: Time,
    },
    /// Output: the engine asked for an effect.
    Request {
        /// The effect's id.
        id: EffectId,
        /// What it asked for.
        request: Request,
    },
    /// Output: the engine asked for one of a custom family's own effects
    /// ([`SimFamily`]).
    OwnRequest {
        /// The effect's id.
        id: EffectId,
        /// What it asked for, as the family's request serializes.
        request: serde_json::Value,
    },
    /// Input: an answer to one of a custom family's own effects.
    OwnResponse {
        /// When it arrived.
        at: Time,
        /// The effect.
        id: EffectId,
        /// The answer, as the family's response serializes.
        result: Result<serde_json::Value, EffectError>,
        /// Whether the engine took it (`false`: stale, the program had moved on).
        delivered: bool,
    },
    /// Output: the engine cancelled an effect.
    Cancel {
        /// The effect's id.
        id: EffectId,
    },
    /// Output: a program ended; its result as `Debug` text.
    Finished {
        /// The program.
        program: ProgramId,
        /// `{:?}` of its `Result<Output, ProgramError>`.
        result: String,
    },
    /// Annotation: the simulator injected a fault into an effect.
    Fault {
        /// When.
        at: Time,
        /// The effect.
        id: EffectId,
        /// What it did.
        fault: Fault,
    },
    /// Annotation: something a simulated client did or saw.
    Client {
        /// When.
        at: Time,
        /// The connection.
        connection: u32,
        /// What happened.
        event: ClientEvent,
    },
    /// The last line of a complete trace (the simulator adds it when its run ends).
    End {
        /// How many records come before it, the start record included.
        records: u64,
    },
}

/// A fault the simulator injected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Fault {
    /// The effect failed before the service saw it (it is never applied).
    Error,
    /// The service performed the effect, but its answer was lost.
    LostAnswer,
    /// An acknowledgement never reached the broker; its message will come again once
    /// its ack timeout passes.
    LostAck,
    /// The service refused the effect during an outage window (it is never applied).
    Outage,
    /// The service restarted while the effect was on its way (it is never applied).
    Restart,
}

/// What a simulated client did or saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientEvent {
    /// It connected.
    Connect,
    /// It sent a text frame.
    Send(String),
    /// It received a text frame.
    Receive(String),
    /// It closed the connection (close code 1000).
    Close,
    /// It vanished without a close frame (the server sees 1006).
    Vanish,
    /// The server closed the connection with this code.
    ClosedByServer(u16),
}

impl TraceRecord {
    /// Whether this record is an engine input that replay feeds back.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            TraceRecord::Spawn { .. }
                | TraceRecord::SpawnJob { .. }
                | TraceRecord::Abort { .. }
                | TraceRecord::Response { .. }
                | TraceRecord::OwnResponse { .. }
                | TraceRecord::Timeout { .. }
        )
    }

    /// Whether this record is an engine output that replay checks.
    pub fn is_output(&self) -> bool {
        matches!(
            self,
            TraceRecord::Request { .. }
                | TraceRecord::OwnRequest { .. }
                | TraceRecord::Cancel { .. }
                | TraceRecord::Finished { .. }
        )
    }

    /// The record of one engine output.
    pub fn of_output<O: fmt::Debug>(output: &Output<O>) -> TraceRecord {
        match output {
            Output::Request { id, request } => TraceRecord::Request {
                id: *id,
                request: request.clone(),
            },
            Output::Cancel { id } => TraceRecord::Cancel { id: *id },
            Output::Finished { program, result } => TraceRecord::Finished {
                program: *program,
                result: format!("{result:?}"),
            },
        }
    }

    /// The record of one engine output of a program of family `F`: a built-in
    /// request as [`TraceRecord::Request`], one of the family's own as
    /// [`TraceRecord::OwnRequest`].
    pub fn of_family_output<O: fmt::Debug, F: SimFamily>(output: Output<O, F>) -> TraceRecord {
        match output {
            Output::Request { id, request } => match F::split_request(request) {
                Ok(request) => TraceRecord::Request { id, request },
                Err(own) => TraceRecord::own_request(id, &own),
            },
            Output::Cancel { id } => TraceRecord::Cancel { id },
            Output::Finished { program, result } => TraceRecord::Finished {
                program,
                result: format!("{result:?}"),
            },
        }
    }

    /// The record of one of a custom family's own requests.
    pub(crate) fn own_request<T: Serialize>(id: EffectId, request: &T) -> TraceRecord {
        TraceRecord::OwnRequest {
            id,
            request: to_json(request),
        }
    }
}

/// Writes records as JSON lines.
pub fn write_trace<'a>(
    mut out: impl Write,
    records: impl IntoIterator<Item = &'a TraceRecord>,
) -> io::Result<()> {
    for record in records {
        serde_json::to_writer(&mut out, record).map_err(io::Error::other)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Why a trace could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceReadError {
    /// The reader failed.
    #[error("could not read the trace: {0}")]
    Io(#[from] io::Error),
    /// A line is longer than the limit; nothing of it was kept.
    #[error("trace line {line} is longer than the {limit}-byte limit; is this a trace file?")]
    LineTooLong {
        /// The 1-based line number.
        line: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A line is not a trace record.
    #[error("trace line {line} is not a trace record: {message}")]
    Malformed {
        /// The 1-based line number.
        line: usize,
        /// What the JSON decoder said (an excerpt: it may quote the line).
        message: String,
    },
}

/// Reads JSON-lines records, refusing any line longer than `max_line` bytes before
/// holding more than that in memory. Blank lines are skipped.
pub fn read_trace(
    input: impl BufRead,
    max_line: usize,
) -> Result<Vec<TraceRecord>, TraceReadError> {
    let mut input = input;
    let mut records = Vec::new();
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        line += 1;
        buf.clear();
        let limit = u64::try_from(max_line)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let n = input.by_ref().take(limit).read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(records);
        }
        if buf.len() > max_line && buf.last() != Some(&b'\n') {
            return Err(TraceReadError::LineTooLong {
                line,
                limit: max_line,
            });
        }
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // The decoder's message may quote the line (an unknown variant's name): cut it.
        let record = serde_json::from_slice(text).map_err(|e| TraceReadError::Malformed {
            line,
            message: Excerpt::head(&e.to_string(), Excerpt::DEFAULT_LIMIT).to_string(),
        })?;
        records.push(record);
    }
}

/// Where two traces first differ.
#[derive(Clone, Debug, PartialEq)]
pub struct Divergence {
    /// The 0-based index of the first differing record.
    pub index: usize,
    /// The record in the first trace (`None`: it ended there).
    pub expected: Option<TraceRecord>,
    /// The record in the second trace (`None`: it ended there).
    pub got: Option<TraceRecord>,
}

/// Shows the two records as JSON, each cut to an [`Excerpt`] around where they first
/// differ: a record can be megabytes long.
impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |r: &Option<TraceRecord>| match r {
            Some(r) => json(r),
            None => "(end of trace)".to_string(),
        };
        let (expected, got) = (show(&self.expected), show(&self.got));
        let (expected, got) = Excerpt::pair(&expected, &got, Excerpt::DEFAULT_LIMIT);
        write!(
            f,
            "traces diverge at record {}:\n  expected: {expected}\n  got:      {got}",
            self.index,
        )
    }
}

/// A record as one line of JSON (its `Debug` text if it cannot be serialized).
fn json(record: &TraceRecord) -> String {
    serde_json::to_string(record).unwrap_or_else(|_| format!("{record:?}"))
}

/// The first place where `a` and `b` differ, if any.
pub fn first_divergence(a: &[TraceRecord], b: &[TraceRecord]) -> Option<Divergence> {
    let index = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    if index == a.len() && index == b.len() {
        return None;
    }
    Some(Divergence {
        index,
        expected: a.get(index).cloned(),
        got: b.get(index).cloned(),
    })
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The trace has no `start` record first.
    #[error(
        "the trace does not begin with a start record; record the trace with \
         SimConfig::record_trace (its first line is a start record)"
    )]
    NoStart,
    /// The trace stops without its end record: it was cut short.
    #[error(
        "the trace stops after {records} records without its end record, so it was cut \
         short (a recorder that was killed, a full disk, a partial copy?); replay needs \
         the whole trace: record the run again"
    )]
    Truncated {
        /// How many records the trace has.
        records: usize,
    },
    /// The end record's count disagrees with the records before it.
    #[error(
        "the trace's end record counts {counted} records but {found} come before it, so \
         records were lost or added after recording; record the run again"
    )]
    Miscounted {
        /// The count the end record gives.
        counted: u64,
        /// The records before the end record.
        found: usize,
    },
    /// Records follow the end record.
    #[error(
        "record {index} comes after the trace's end record (were two traces joined?); \
         replay one trace at a time"
    )]
    AfterEnd {
        /// The 0-based index of the first record after the end record.
        index: usize,
    },
    /// The trace spawns a job, but the replay was given no program for jobs.
    #[error(
        "the trace spawns job {index}, a program with no connection; replay it with \
         trace::replay_with_jobs, giving the program each job index runs"
    )]
    JobWithoutProgram {
        /// The job's index.
        index: u32,
    },
    /// The engine did something other than what the trace recorded.
    #[error(
        "replay diverged from the trace at record {index}:\n  recorded: {expected}\n  replayed: {got}"
    )]
    Divergence {
        /// The 0-based index of the record.
        index: usize,
        /// The recorded record as JSON, cut to an [`Excerpt`] around where it differs
        /// from `got`.
        expected: String,
        /// What the engine did instead (JSON, or "(nothing)"), cut the same way.
        got: String,
    },
}

/// What a successful replay went through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayStats {
    /// Inputs fed to the engine.
    pub inputs: usize,
    /// Outputs checked against the trace.
    pub outputs: usize,
}

/// Checks that `records` is a whole trace: one [`TraceRecord::End`] record, last,
/// counting the records before it.
pub fn check_complete(records: &[TraceRecord]) -> Result<(), ReplayError> {
    let Some((end, counted)) = records.iter().enumerate().find_map(|(i, r)| match r {
        TraceRecord::End { records } => Some((i, *records)),
        _ => None,
    }) else {
        return Err(ReplayError::Truncated {
            records: records.len(),
        });
    };
    if u64::try_from(end) != Ok(counted) {
        return Err(ReplayError::Miscounted {
            counted,
            found: end,
        });
    }
    if end + 1 < records.len() {
        return Err(ReplayError::AfterEnd { index: end + 1 });
    }
    Ok(())
}

/// Replays `records` against a fresh engine running `program` for each spawned
/// connection; fails at the first output that differs from the record, and before
/// anything runs if the trace is not whole (see [`check_complete`]). A trace with
/// jobs ([`Simulation::spawn_at`](crate::sim::Simulation::spawn_at)) replays with
/// [`replay_with_jobs`].
pub fn replay<O, Fut>(
    records: &[TraceRecord],
    program: impl FnMut(u32, Fx) -> Fut,
) -> Result<ReplayStats, ReplayError>
where
    O: fmt::Debug + 'static,
    Fut: Future<Output = O> + 'static,
{
    replay_hosts::<O, Fut, Std>(records, program, None)
}

/// [`replay`] for a simulation that also spawned jobs: `job(job_index, fx)` makes
/// the program of each recorded job spawn (the same program the simulation's
/// [`spawn_at`](crate::sim::Simulation::spawn_at) was given for that index).
pub fn replay_with_jobs<O, Fut, JobFut>(
    records: &[TraceRecord],
    program: impl FnMut(u32, Fx) -> Fut,
    job: impl FnMut(u32, Fx) -> JobFut,
) -> Result<ReplayStats, ReplayError>
where
    O: fmt::Debug + 'static,
    Fut: Future<Output = O> + 'static,
    JobFut: Future<Output = O> + 'static,
{
    replay_family_with_jobs::<O, Fut, JobFut, Std>(records, program, job)
}

/// [`replay`] for programs of a custom family `F`
/// ([`SimFamily`]): the recorded answers to the family's own
/// effects are parsed back into its responses.
pub fn replay_family<O, Fut, F>(
    records: &[TraceRecord],
    program: impl FnMut(u32, Fx<F>) -> Fut,
) -> Result<ReplayStats, ReplayError>
where
    O: fmt::Debug + 'static,
    Fut: Future<Output = O> + 'static,
    F: SimFamily,
{
    replay_hosts(records, program, None)
}

/// [`replay_with_jobs`] for programs of a custom family `F`.
pub fn replay_family_with_jobs<O, Fut, JobFut, F>(
    records: &[TraceRecord],
    program: impl FnMut(u32, Fx<F>) -> Fut,
    mut job: impl FnMut(u32, Fx<F>) -> JobFut,
) -> Result<ReplayStats, ReplayError>
where
    O: fmt::Debug + 'static,
    Fut: Future<Output = O> + 'static,
    JobFut: Future<Output = O> + 'static,
    F: SimFamily,
{
    let mut boxed = |index: u32, fx: Fx<F>| -> BoxedProgram<O> { Box::pin(job(index, fx)) };
    replay_hosts(records, program, Some(&mut boxed))
}

/// A job's program, boxed so that replay takes any job maker.
type BoxedProgram<O> = std::pin::Pin<Box<dyn Future<Output = O>>>;

fn replay_hosts<O, Fut, F>(
    records: &[TraceRecord],
    mut program: impl FnMut(u32, Fx<F>) -> Fut,
    mut job: Option<&mut dyn FnMut(u32, Fx<F>) -> BoxedProgram<O>>,
) -> Result<ReplayStats, ReplayError>
where
    O: fmt::Debug + 'static,
    Fut: Future<Output = O> + 'static,
    F: SimFamily,
{
    let Some(TraceRecord::Start { engine: config, .. }) = records.first() else {
        return Err(ReplayError::NoStart);
    };
    check_complete(records)?;
    let mut engine: Engine<O, F> = Engine::new(config.clone());
    let mut pending: std::collections::VecDeque<TraceRecord> = std::collections::VecDeque::new();
    let mut stats = ReplayStats {
        inputs: 0,
        outputs: 0,
    };
    for (index, record) in records.iter().enumerate().skip(1) {
        if record.is_output() {
            let got = pending.pop_front();
            if got.as_ref() != Some(record) {
                let got = got.as_ref().map(json);
                return Err(diverged(
                    index,
                    &json(record),
                    got.as_deref().unwrap_or("(nothing)"),
                ));
            }
            stats.outputs += 1;
            continue;
        }
        if !record.is_input() {
            continue;
        }
        if let Some(extra) = pending.pop_front() {
            return Err(diverged(index, &json(record), &json(&extra)));
        }
        stats.inputs += 1;
        let mismatch = |got: String| diverged(index, &json(record), &got);
        match record {
            TraceRecord::Spawn {
                at,
                program: id,
                connection,
            } => {
                let spawned = engine.spawn_async(*at, |fx| program(*connection, fx));
                if spawned != *id {
                    return Err(mismatch(format!("a spawn that got id {spawned}")));
                }
            }
            TraceRecord::SpawnJob {
                at,
                program: id,
                job: index,
            } => {
                let Some(job) = job.as_mut() else {
                    return Err(ReplayError::JobWithoutProgram { index: *index });
                };
                let spawned = engine.spawn_async(*at, |fx| job(*index, fx));
                if spawned != *id {
                    return Err(mismatch(format!("a spawn that got id {spawned}")));
                }
            }
            TraceRecord::Abort { at, program } => {
                engine.abort(*at, *program);
            }
            TraceRecord::Response {
                at,
                id,
                result,
                delivered,
            } => {
                let result = result.clone().map(F::embed_response);
                let delivery = engine.handle_response(*at, *id, result);
                if (delivery == Delivery::Delivered) != *delivered {
                    return Err(mismatch(format!("the answer was {delivery:?}")));
                }
            }
            TraceRecord::OwnResponse {
                at,
                id,
                result,
                delivered,
            } => {
                let result = match result {
                    Ok(answer) => match serde_json::from_value::<F::Response>(answer.clone()) {
                        Ok(answer) => Ok(answer),
                        Err(e) => {
                            return Err(mismatch(format!("an answer that does not parse: {e}")));
                        }
                    },
                    Err(error) => Err(error.clone()),
                };
                let delivery = engine.handle_response(*at, *id, result);
                if (delivery == Delivery::Delivered) != *delivered {
                    return Err(mismatch(format!("the answer was {delivery:?}")));
                }
            }
            TraceRecord::Timeout { at } => engine.handle_timeout(*at),
            _ => {}
        }
        while let Some(output) = engine.poll_output() {
            pending.push_back(TraceRecord::of_family_output(output));
        }
    }
    if let Some(extra) = pending.pop_front() {
        return Err(diverged(records.len(), "(end of trace)", &json(&extra)));
    }
    Ok(stats)
}

/// A divergence at record `index`, quoting excerpts of both sides around where they
/// first differ.
fn diverged(index: usize, expected: &str, got: &str) -> ReplayError {
    let (expected, got) = Excerpt::pair(expected, got, Excerpt::DEFAULT_LIMIT);
    ReplayError::Divergence {
        index,
        expected: expected.to_string(),
        got: got.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_over_the_limit_is_refused_with_its_number() {
        let start = serde_json::to_string(&TraceRecord::Timeout { at: Time::ZERO }).unwrap();
        let input = format!("{start}\n{}\n", "x".repeat(100));
        let err = read_trace(input.as_bytes(), 64).unwrap_err();
        assert!(
            matches!(err, TraceReadError::LineTooLong { line: 2, limit: 64 }),
            "{err}"
        );
    }

    #[test]
    fn a_malformed_line_is_refused_with_its_number_and_the_cause() {
        let err = read_trace(
            "\n{\"kind\":\"timeout\",\"at\":1}\n{\"kind\":\"nope\"}\n".as_bytes(),
            1024,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("line 3") && text.contains("nope"), "{text}");
    }

    #[test]
    fn records_round_trip_through_json_lines() {
        let records = vec![
            TraceRecord::Timeout {
                at: Time::from_millis(3),
            },
            TraceRecord::Client {
                at: Time::ZERO,
                connection: 2,
                event: ClientEvent::Send("hi".into()),
            },
        ];
        let mut out = Vec::new();
        write_trace(&mut out, &records).unwrap();
        assert_eq!(
            read_trace(out.as_slice(), DEFAULT_MAX_LINE).unwrap(),
            records
        );
    }

    #[test]
    fn first_divergence_points_at_the_first_difference_or_the_shorter_end() {
        let a = vec![
            TraceRecord::Timeout { at: Time::ZERO },
            TraceRecord::Timeout {
                at: Time::from_secs(1),
            },
        ];
        let mut b = a.clone();
        assert_eq!(first_divergence(&a, &b), None);
        b[1] = TraceRecord::Timeout {
            at: Time::from_secs(2),
        };
        assert_eq!(first_divergence(&a, &b).unwrap().index, 1);
        assert_eq!(first_divergence(&a, &a[..1]).unwrap().got, None);
    }
}
