//! A random driver of the engine: it runs a case's programs on one engine, decoding the
//! case's choices into inputs (answers, time, aborts, deadlines, forged ids), and
//! records every input with its outcome and every output as a trace.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use effectful::effect::{Request, Response, SystemRequest, SystemResponse};
use effectful::{
    Delivery, EffectError, EffectId, Engine, EngineConfig, Output, ProgramError, ProgramId, Time,
    Timestamp, duration_nanos,
};
use uuid::Uuid;

use crate::programs::{Case, LeafKind, Log, Out, Record};
use crate::schedules::ms;

fn time_minus(t: Time, d: Duration) -> Time {
    Time::from_nanos(t.as_nanos().saturating_sub(duration_nanos(d)))
}

/// How the driver answers a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    Ok,
    Retryable,
    Fatal,
    /// The response of the other effect (a protocol error in the program, not retryable).
    WrongType,
}

/// One entry of a run's trace: the driver's inputs (with what they returned) and the
/// engine's outputs, in order. The outputs after an input are the ones it caused.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Ev {
    Spawn {
        program: ProgramId,
        at: Time,
    },
    /// `at: None`: answered without a time (`handle_response_unclocked`).
    Respond {
        id: EffectId,
        answer: Answer,
        at: Option<Time>,
        delivery: Delivery,
    },
    /// `handle_timeout(asked)`; `effective` is the `now` the engine used (it never goes
    /// back); `due_*` are `poll_timeout()` before and after; `outputs` how many it caused.
    Timeout {
        asked: Time,
        effective: Time,
        due_before: Option<Time>,
        due_after: Option<Time>,
        outputs: usize,
    },
    Abort {
        program: ProgramId,
        was_finished: bool,
        accepted: bool,
    },
    SetDeadline {
        program: ProgramId,
        deadline: Option<Time>,
        was_finished: bool,
        accepted: bool,
    },
    Request {
        id: EffectId,
        kind: LeafKind,
    },
    Cancel {
        id: EffectId,
    },
    Finished {
        program: ProgramId,
        result: Result<Out, ProgramError>,
        now: Time,
    },
}

impl Ev {
    pub(crate) fn is_output(&self) -> bool {
        matches!(
            self,
            Ev::Request { .. } | Ev::Cancel { .. } | Ev::Finished { .. }
        )
    }
}

/// Everything a run produced.
#[derive(Debug, PartialEq)]
pub(crate) struct Run {
    pub(crate) events: Vec<Ev>,
    /// `Debug` of every output, for the determinism check.
    pub(crate) raw: Vec<String>,
    pub(crate) records: Vec<Record>,
    pub(crate) steps: usize,
    /// Live programs were left with nothing to answer and no timer, or the step bound hit.
    pub(crate) hung: bool,
    pub(crate) programs_left: usize,
    pub(crate) due_at_end: Option<Time>,
    /// Programs still running after a `handle_timeout` at or past their deadline.
    pub(crate) missed_deadlines: Vec<(ProgramId, Time)>,
    /// Per stretch of answers without a time (numbered from 1, as the programs' timer
    /// records name it), how far the input with a time that ended it moved the
    /// timers armed in it: how much later than the engine's `now` its time was.
    pub(crate) shifts: BTreeMap<u64, Duration>,
}

const MAX_STEPS: usize = 5_000;

struct Driver<'c> {
    case: &'c Case,
    engine: Engine<Out>,
    log: Log,
    now: Time,
    events: Vec<Ev>,
    raw: Vec<String>,
    /// Requests the driver has not answered and the engine has not cancelled, in issue order.
    outstanding: Vec<(EffectId, LeafKind)>,
    /// Ids answered or cancelled.
    closed: Vec<EffectId>,
    spawned: Vec<(ProgramId, Time)>,
    /// Each program's deadline as the driver set it.
    deadlines: BTreeMap<ProgramId, Option<Time>>,
    finished: HashSet<ProgramId>,
    next_program: usize,
    uuids: u128,
    missed_deadlines: Vec<(ProgramId, Time)>,
    /// Stretches of answers without a time so far.
    stretches: u64,
    shifts: BTreeMap<u64, Duration>,
}

impl<'c> Driver<'c> {
    fn new(case: &'c Case) -> Self {
        let config = EngineConfig {
            seed: case.seed,
            program_timeout: case.program_timeout,
            effect_timeout: case.effect_timeout,
        };
        Driver {
            case,
            engine: Engine::new(config),
            log: Log::default(),
            now: Time::ZERO,
            events: Vec::new(),
            raw: Vec::new(),
            outstanding: Vec::new(),
            closed: Vec::new(),
            spawned: Vec::new(),
            deadlines: BTreeMap::new(),
            finished: HashSet::new(),
            next_program: 0,
            uuids: 0,
            missed_deadlines: Vec::new(),
            stretches: 0,
            shifts: BTreeMap::new(),
        }
    }

    fn run(mut self) -> Run {
        self.spawn();
        let mut steps = 0;
        let mut hung = false;
        while self.next_program < self.case.programs.len()
            || self.finished.len() < self.spawned.len()
        {
            if steps == MAX_STEPS {
                hung = true;
                break;
            }
            let choice = self.case.choices.get(steps).copied();
            steps += 1;
            if !self.step(choice) {
                hung = true;
                break;
            }
        }
        let programs_left = self.engine.programs();
        let due_at_end = self.engine.poll_timeout();
        let records = self.log.borrow().records.clone();
        Run {
            events: self.events,
            raw: self.raw,
            records,
            steps,
            hung,
            programs_left,
            due_at_end,
            missed_deadlines: self.missed_deadlines,
            shifts: self.shifts,
        }
    }

    /// One driver action chosen by `choice`; `false` when nothing at all can be done.
    fn step(&mut self, choice: Option<u32>) -> bool {
        let Some(choice) = choice else {
            return self.play_safe();
        };
        let (op, arg) = (choice % 16, choice / 16);
        match op {
            0..=6 if !self.outstanding.is_empty() => {
                let index = arg as usize % self.outstanding.len();
                let answer = match (arg / 7) % 10 {
                    0..=5 => Answer::Ok,
                    6 | 7 => Answer::Retryable,
                    8 => Answer::Fatal,
                    _ => Answer::WrongType,
                };
                let at = match (arg / 70) % 5 {
                    // Time passes while the effect runs (timers may come due unhandled).
                    0 => {
                        self.now = self.now + ms(u64::from(arg % 7));
                        Some(self.now)
                    }
                    // A driver whose clock reading is behind the engine's.
                    1 => Some(time_minus(self.now, ms(3))),
                    // A driver answering without reading its clock; time may pass
                    // meanwhile, which the next input with a time tells.
                    2 => {
                        self.now = self.now + ms(u64::from(arg % 5));
                        None
                    }
                    _ => Some(self.now),
                };
                self.respond(index, answer, at);
            }
            7..=9 => {
                let base = self.engine.poll_timeout().unwrap_or(self.now);
                let asked = match arg % 3 {
                    0 => base,
                    1 => time_minus(base, ms(u64::from(1 + arg / 3 % 5))),
                    // Rarely, the end of time: every timer fires, every sleep is due at once.
                    _ if arg / 3 % 16 == 15 => Time::MAX,
                    _ => base + ms(u64::from(arg / 3 % 20)),
                };
                self.timeout(asked);
            }
            10 => {
                let program = self.spawned[(arg / 3) as usize % self.spawned.len()].0;
                match arg % 3 {
                    0 => self.abort(program),
                    _ => {
                        let deadline = match arg / 3 % 8 {
                            0 => None,
                            1 => Some(time_minus(self.now, ms(5))),
                            n => Some(self.now + ms(u64::from(n) * 15)),
                        };
                        self.set_deadline(program, deadline);
                    }
                }
            }
            11 | 12 if !self.closed.is_empty() => {
                let id = self.closed[arg as usize % self.closed.len()];
                self.respond_to(id, LeafKind::Clock, Answer::Ok, Some(self.now));
            }
            13 if !self.closed.is_empty() || !self.outstanding.is_empty() => self.forge(arg),
            14 | 15 if self.next_program < self.case.programs.len() => self.spawn(),
            _ => return self.play_safe(),
        }
        true
    }

    /// Answer the oldest request `Ok`, else start the next program, else jump to the
    /// next deadline.
    fn play_safe(&mut self) -> bool {
        if !self.outstanding.is_empty() {
            self.respond(0, Answer::Ok, Some(self.now));
        } else if self.next_program < self.case.programs.len() {
            self.spawn();
        } else if let Some(due) = self.engine.poll_timeout() {
            self.timeout(due);
        } else {
            return false;
        }
        true
    }

    fn spawn(&mut self) {
        self.clock_in(self.now);
        let program = self.case.programs[self.next_program].clone().spawn(
            &mut self.engine,
            self.now,
            self.log.clone(),
        );
        self.next_program += 1;
        let at = self.engine.now();
        self.spawned.push((program, at));
        let deadline = self.case.program_timeout.map(|t| at + t);
        self.deadlines.insert(program, deadline);
        self.events.push(Ev::Spawn { program, at });
        self.drain();
    }

    fn respond(&mut self, index: usize, answer: Answer, at: Option<Time>) {
        let (id, kind) = self.outstanding[index];
        self.respond_to(id, kind, answer, at);
    }

    fn respond_to(&mut self, id: EffectId, kind: LeafKind, answer: Answer, at: Option<Time>) {
        // The program sees the engine's time for an answer without one.
        let seen = at.unwrap_or(self.engine.now());
        let response = match answer {
            Answer::Ok => Ok(self.response(kind, seen)),
            Answer::WrongType => Ok(self.response(
                match kind {
                    LeafKind::Clock => LeafKind::Uuid,
                    LeafKind::Uuid => LeafKind::Clock,
                },
                seen,
            )),
            Answer::Retryable => Err(EffectError::connection_lost(kind.name(), "reset by peer")),
            Answer::Fatal => Err(EffectError::websocket_closed(kind.name(), 1006, "gone")),
        };
        let delivery = match at {
            Some(at) => {
                self.clock_in(at);
                self.engine.handle_response(at, id, response)
            }
            None => {
                if !self.engine.wants_time() {
                    self.stretches += 1;
                    self.log.borrow_mut().stretch = self.stretches;
                }
                let delivery = self.engine.handle_response_unclocked(id, response);
                assert!(
                    self.engine.wants_time(),
                    "an answer without a time owes one"
                );
                delivery
            }
        };
        self.events.push(Ev::Respond {
            id,
            answer,
            at,
            delivery,
        });
        if let Some(position) = self.outstanding.iter().position(|(o, _)| *o == id) {
            self.outstanding.remove(position);
            self.closed.push(id);
        }
        self.drain();
    }

    fn response(&mut self, kind: LeafKind, at: Time) -> Response {
        match kind {
            LeafKind::Clock => {
                let micros = Timestamp::from_unix_micros((at.as_nanos() / 1_000) as i64);
                Response::System(SystemResponse::GetCurrentTime(micros))
            }
            LeafKind::Uuid => {
                self.uuids += 1;
                Response::System(SystemResponse::GenerateUuid(Uuid::from_u128(self.uuids)))
            }
        }
    }

    /// Answers an id the engine never issued: a known one with another slot,
    /// generation or program.
    fn forge(&mut self, arg: u32) {
        let known: Vec<EffectId> = self
            .closed
            .iter()
            .copied()
            .chain(self.outstanding.iter().map(|(id, _)| *id))
            .collect();
        let id = known[arg as usize % known.len()];
        let mut value = serde_json::to_value(id).expect("ids serialize");
        let bump = u64::from(1 + arg / 4 % 3);
        let field = match (arg / 12) % 4 {
            0 => &mut value["generation"],
            1 => &mut value["slot"],
            2 => &mut value["program"]["index"],
            _ => &mut value["program"]["generation"],
        };
        *field = serde_json::json!(field.as_u64().expect("ids are numbers") + bump);
        let forged: EffectId = serde_json::from_value(value).expect("a forged id deserializes");
        self.respond_to(forged, LeafKind::Uuid, Answer::Ok, Some(self.now));
    }

    /// Before every input with a time: it ends the stretch of answers without one,
    /// if any, moving the timers armed in it on by how much later than the engine's
    /// `now` `asked` is (see `Engine::handle_response_unclocked`).
    fn clock_in(&mut self, asked: Time) {
        let stretch = std::mem::take(&mut self.log.borrow_mut().stretch);
        assert_eq!(
            self.engine.wants_time(),
            stretch != 0,
            "the engine wants a time exactly after an answer without one"
        );
        if stretch != 0 {
            let late = asked
                .as_nanos()
                .saturating_sub(self.engine.now().as_nanos());
            self.shifts.insert(stretch, Duration::from_nanos(late));
        }
    }

    fn timeout(&mut self, asked: Time) {
        self.clock_in(asked);
        let due_before = self.engine.poll_timeout();
        let effective = asked.max(self.engine.now());
        self.engine.handle_timeout(asked);
        self.now = self.now.max(asked);
        let at = self.events.len();
        self.events.push(Ev::Timeout {
            asked,
            effective,
            due_before,
            due_after: None,
            outputs: 0,
        });
        let outputs = self.drain();
        let due_after = self.engine.poll_timeout();
        self.events[at] = Ev::Timeout {
            asked,
            effective,
            due_before,
            due_after,
            outputs,
        };
        for (program, deadline) in &self.deadlines {
            if !self.finished.contains(program) && deadline.is_some_and(|at| at <= effective) {
                self.missed_deadlines.push((*program, effective));
            }
        }
    }

    fn set_deadline(&mut self, program: ProgramId, deadline: Option<Time>) {
        let was_finished = self.finished.contains(&program);
        self.clock_in(self.now);
        let accepted = self.engine.set_deadline(self.now, program, deadline);
        if accepted {
            self.deadlines.insert(program, deadline);
        }
        self.events.push(Ev::SetDeadline {
            program,
            deadline,
            was_finished,
            accepted,
        });
        self.drain();
    }

    fn abort(&mut self, program: ProgramId) {
        let was_finished = self.finished.contains(&program);
        self.clock_in(self.now);
        let accepted = self.engine.abort(self.now, program);
        self.events.push(Ev::Abort {
            program,
            was_finished,
            accepted,
        });
        self.drain();
    }

    /// Takes every output (the drain rule); returns how many there were.
    fn drain(&mut self) -> usize {
        let mut count = 0;
        while let Some(output) = self.engine.poll_output() {
            count += 1;
            self.raw.push(format!("{output:?}"));
            match output {
                Output::Request { id, request } => {
                    let kind = match request {
                        Request::System(SystemRequest::GetCurrentTime(_)) => LeafKind::Clock,
                        Request::System(SystemRequest::GenerateUuid(_)) => LeafKind::Uuid,
                        other => {
                            panic!("the programs ask only for the time and uuids, not {other:?}")
                        }
                    };
                    self.outstanding.push((id, kind));
                    self.events.push(Ev::Request { id, kind });
                }
                Output::Cancel { id } => {
                    if let Some(position) = self.outstanding.iter().position(|(o, _)| *o == id) {
                        self.outstanding.remove(position);
                    }
                    self.closed.push(id);
                    self.events.push(Ev::Cancel { id });
                }
                Output::Finished { program, result } => {
                    self.finished.insert(program);
                    self.events.push(Ev::Finished {
                        program,
                        result,
                        now: self.engine.now(),
                    });
                }
            }
        }
        count
    }
}

pub(crate) fn run_case(case: &Case) -> Run {
    Driver::new(case).run()
}
