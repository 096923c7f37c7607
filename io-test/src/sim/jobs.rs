//! Programs with no connection: jobs the simulation spawns at chosen simulated times
//! (a background worker, a scheduled task, a consumer), each with its own result.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use effectful::effect::Std;
use effectful::{Family, Fx, ProgramError, ProgramId, Time};

use super::queue::Event;
use super::{SimFamily, Simulation};
use crate::trace::TraceRecord;

/// What makes a job's program: called once, when its spawn time comes.
type MakeJob<O, F> = Box<dyn FnOnce(Fx<F>) -> Pin<Box<dyn Future<Output = O>>>>;

/// The connection program of a simulation without connections
/// ([`Simulation::without_connections`]); it is never called.
pub type NoConnections<O, F = Std> = fn(u32, Fx<F>) -> Pin<Box<dyn Future<Output = O>>>;

/// One job as the simulator runs it.
pub(super) struct JobSim<O, F: Family> {
    make: Option<MakeJob<O, F>>,
    pub(super) program: Option<ProgramId>,
    record: Job,
}

/// What became of a job spawned with [`Simulation::spawn_at`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// Its name (for reports; need not be unique).
    pub name: String,
    /// When it was asked to start.
    pub spawn_at: Time,
    /// Its program, once spawned.
    pub program: Option<ProgramId>,
    /// When it started.
    pub started: Option<Time>,
    /// When it ended (how: [`Simulation::job_results`]).
    pub finished: Option<Time>,
}

impl<O, F> Simulation<O, NoConnections<O, F>, F>
where
    O: fmt::Debug + 'static,
    F: SimFamily,
{
    /// A simulation with no WebSocket connections: add its programs with
    /// [`spawn_at`](Simulation::spawn_at).
    ///
    /// ```
    /// use effectful::{EffectError, Fx, Time, effect::*};
    /// use effectful_test::sim::{SimConfig, Simulation};
    ///
    /// let mut sim = Simulation::without_connections(SimConfig::new(1));
    /// for i in 0..3u64 {
    ///     sim.spawn_at(Time::from_secs(i * 10), "writer", move |fx: Fx| async move {
    ///         let key = format!("job/{i}");
    ///         fx.perform(PutCachedValue { key, value: vec![1], ttl_seconds: None }).await?;
    ///         Ok::<u64, EffectError>(i)
    ///     });
    /// }
    /// let report = sim.run();
    /// assert_eq!(report.programs, 3);
    /// assert!(matches!(sim.job_results()[2], Some(Ok(Ok(2)))));
    /// ```
    pub fn without_connections(config: super::SimConfig) -> Self {
        Simulation::new(config, Vec::new(), no_connection::<O, F>)
    }
}

/// The program of a connection in a simulation without connections: there are none,
/// so it is never called.
fn no_connection<O: 'static, F: Family>(_: u32, _: Fx<F>) -> Pin<Box<dyn Future<Output = O>>> {
    Box::pin(std::future::pending())
}

impl<O, P, Fut, F> Simulation<O, P, F>
where
    O: fmt::Debug + 'static,
    P: FnMut(u32, Fx<F>) -> Fut,
    Fut: Future<Output = O> + 'static,
    F: SimFamily,
{
    /// Adds a program with no connection, spawned at simulated time `at` (or at once if
    /// the run is already past it); returns its job index, which indexes
    /// [`jobs`](Self::jobs) and [`job_results`](Self::job_results) and is what traces
    /// record. The engine's program deadline applies to it as to every program.
    pub fn spawn_at<Mk, JobFut>(&mut self, at: Time, name: impl Into<String>, make: Mk) -> u32
    where
        Mk: FnOnce(Fx<F>) -> JobFut + 'static,
        JobFut: Future<Output = O> + 'static,
    {
        let index = self.jobs.len() as u32;
        let make: MakeJob<O, F> = Box::new(move |fx| Box::pin(make(fx)));
        self.jobs.push(JobSim {
            make: Some(make),
            program: None,
            record: Job {
                name: name.into(),
                spawn_at: at,
                program: None,
                started: None,
                finished: None,
            },
        });
        self.job_results.push(None);
        self.schedule(at.max(self.now), Event::SpawnJob(index));
        index
    }

    /// Every job added with [`spawn_at`](Self::spawn_at), by job index.
    pub fn jobs(&self) -> impl ExactSizeIterator<Item = &Job> {
        self.jobs.iter().map(|job| &job.record)
    }

    /// Each job's result, by job index (`None`: not finished, or not started).
    pub fn job_results(&self) -> &[Option<Result<O, ProgramError>>] {
        &self.job_results
    }

    pub(super) fn spawn_job(&mut self, job: u32) {
        let now = self.now;
        let Some(make) = self.jobs[job as usize].make.take() else {
            return;
        };
        let id = self.engine.spawn_async(now, make);
        self.report.programs += 1;
        self.job_by_program.insert(id, job);
        let sim = &mut self.jobs[job as usize];
        sim.program = Some(id);
        sim.record.program = Some(id);
        sim.record.started = Some(now);
        self.trace.record(|| TraceRecord::SpawnJob {
            at: now,
            program: id,
            job,
        });
        self.drain();
    }

    pub(super) fn job_finished(&mut self, job: u32, result: Result<O, ProgramError>) {
        let now = self.now;
        let sim = &mut self.jobs[job as usize];
        sim.record.finished = Some(now);
        let late = match (sim.record.started, self.config.program_timeout) {
            (Some(started), Some(timeout)) => now > started + timeout,
            _ => false,
        };
        if late {
            self.report.late += 1;
        }
        self.job_results[job as usize] = Some(result);
    }
}
