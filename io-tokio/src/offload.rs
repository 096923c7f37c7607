//! The process's pool of threads for CPU-heavy effects (password hashing), so that
//! one slow effect never stalls the other programs of its shard.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of OS threads shared by every shard of a runtime (its size is a
/// per-process limit). Jobs run in the order they were queued.
#[derive(Clone)]
pub struct CpuPool {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for CpuPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CpuPool")
    }
}

/// A job on the pool: cancel it to drop it if it has not started.
#[derive(Clone, Debug)]
pub struct Offloaded {
    cancelled: Arc<AtomicBool>,
}

impl Offloaded {
    /// Drops the job if no thread has picked it up yet; a job already running
    /// finishes, and its answer arrives stale.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
}

impl CpuPool {
    /// Starts `threads` (at least one) worker threads; they stop once every clone of
    /// the pool is dropped and the queue is empty.
    pub(crate) fn start(threads: usize) -> std::io::Result<(CpuPool, Vec<thread::JoinHandle<()>>)> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            handles.push(
                thread::Builder::new()
                    .name(format!("effectful-cpu-{i}"))
                    .spawn(move || {
                        loop {
                            // The lock is held only while taking a job.
                            let job = match rx.lock() {
                                Ok(rx) => rx.recv(),
                                Err(poisoned) => poisoned.into_inner().recv(),
                            };
                            match job {
                                Ok(job) => job(),
                                Err(_) => return,
                            }
                        }
                    })?,
            );
        }
        Ok((CpuPool { tx }, handles))
    }

    /// Runs `work` on a pool thread, then `done` with its result (or with `None` if
    /// `work` panicked), unless the returned handle was cancelled before it started.
    pub fn run<T: 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
        done: impl FnOnce(Option<T>) + Send + 'static,
    ) -> Offloaded {
        let cancelled = Arc::new(AtomicBool::new(false));
        let flag = cancelled.clone();
        let job: Job = Box::new(move || {
            if flag.load(Ordering::Relaxed) {
                return;
            }
            done(panic::catch_unwind(AssertUnwindSafe(work)).ok());
        });
        if let Err(mpsc::SendError(job)) = self.tx.send(job) {
            // The workers are gone (the runtime is stopping): run it here rather
            // than lose its answer.
            job();
        }
        Offloaded { cancelled }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_runs_off_the_calling_thread_and_a_panic_is_reported_as_none() {
        let (pool, threads) = CpuPool::start(2).expect("threads");
        let (tx, rx) = mpsc::channel();
        let caller = thread::current().id();
        let tx2 = tx.clone();
        pool.run(
            move || thread::current().id(),
            move |id| tx.send(id).expect("open"),
        );
        pool.run(
            || -> u8 { panic!("boom") },
            move |r| tx2.send(r.map(|_| caller)).expect("open"),
        );
        let mut got = [rx.recv().expect("one"), rx.recv().expect("two")];
        got.sort_by_key(Option::is_some);
        assert_eq!(got[0], None);
        assert!(got[1].is_some_and(|id| id != caller));
        drop(pool);
        for t in threads {
            t.join().expect("worker exits once the pool is dropped");
        }
    }

    #[test]
    fn a_job_cancelled_before_it_starts_never_runs() {
        let (pool, threads) = CpuPool::start(1).expect("threads");
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let (tx, rx) = mpsc::channel();
        // The only worker waits on the gate, so the second job stays queued.
        pool.run(move || gate_rx.recv().ok(), |_| {});
        let ran = tx.clone();
        pool.run(|| (), move |_| ran.send("second ran").expect("open"))
            .cancel();
        gate_tx.send(()).expect("worker waits");
        pool.run(|| (), move |_| tx.send("third ran").expect("open"));
        assert_eq!(rx.recv().expect("third"), "third ran");
        drop(pool);
        for t in threads {
            t.join().expect("worker exits");
        }
    }
}
