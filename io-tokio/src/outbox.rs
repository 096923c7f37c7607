//! [`Outbox`]: what a shard hands one connection's task on its own thread, gathered
//! into one batch (the PostgreSQL writer's bytes, a Redis connection's commands).
//!
//! Producers append while the shard drains; the task takes the whole batch at once
//! when it runs, so a drain of pipelined work costs one wake of the task and one
//! write, and no channel message and no task per query.
//!
//! The task holds its end as a [`Taker`]: however the task ends (it returns, panics
//! or is aborted), what is still queued is dropped then, and whatever is pushed later
//! is dropped at once, never held for a task that will not take it. A batch whose
//! items answer someone when dropped unanswered (a Redis connection's jobs) is thus
//! answered once, promptly, by whoever drops it, without each caller guarding it.

use std::cell::{Cell, RefCell};
use std::ops::Deref;
use std::rc::Rc;

use tokio::sync::Notify;

/// What an [`Outbox`] gathers: empty when there is nothing to take.
pub(crate) trait Batch: Default {
    fn is_empty(&self) -> bool;
}

impl<T> Batch for Vec<T> {
    fn is_empty(&self) -> bool {
        Vec::is_empty(self)
    }
}

#[cfg(feature = "postgres")]
impl Batch for bytes::BytesMut {
    fn is_empty(&self) -> bool {
        bytes::BytesMut::is_empty(self)
    }
}

/// One batch being gathered for one task of this thread, and its wake.
#[derive(Default)]
pub(crate) struct Outbox<B> {
    queued: RefCell<B>,
    /// No more will come: the task ends after what is queued.
    closed: Cell<bool>,
    /// Its task has ended ([`Taker`] dropped): nothing will take what is pushed.
    gone: Cell<bool>,
    ready: Notify,
}

impl<B: Batch> Outbox<B> {
    /// Appends to the batch with `add`, waking the task if the batch was empty (one
    /// wake per batch). Once the task has ended, `add` is dropped uncalled (with
    /// whatever it holds), outside any borrow of the outbox.
    pub(crate) fn push_with(&self, add: impl FnOnce(&mut B)) {
        if self.gone.get() {
            return drop(add);
        }
        let mut queued = self.queued.borrow_mut();
        let was_empty = queued.is_empty();
        add(&mut queued);
        if was_empty && !queued.is_empty() {
            self.ready.notify_one();
        }
    }

    /// Whether nothing is queued now.
    pub(crate) fn is_empty(&self) -> bool {
        self.queued.borrow().is_empty()
    }

    /// Swaps the whole batch with `into` (give back an emptied one to reuse its
    /// capacity); `false` if nothing was queued.
    pub(crate) fn take(&self, into: &mut B) -> bool {
        let mut queued = self.queued.borrow_mut();
        if queued.is_empty() {
            return false;
        }
        std::mem::swap(&mut *queued, into);
        true
    }

    /// Resolves once there is a batch to take, or the outbox is closed.
    pub(crate) async fn ready(&self) {
        while self.is_empty() && !self.closed.get() {
            self.ready.notified().await;
        }
    }

    /// Takes the next batch into `into` (empty), waiting for one; `false` once the
    /// outbox is closed and everything queued is taken.
    pub(crate) async fn next(&self, into: &mut B) -> bool {
        self.ready().await;
        self.take(into)
    }

    /// No more will come; the task ends after what is queued.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        self.ready.notify_one();
    }
}

/// The taking end of an [`Outbox`], held by the one task that takes its batches.
/// Dropping it (the task returned, panicked or was aborted) drops what is still
/// queued and marks the outbox gone, so later pushes are dropped at once. The Redis
/// connections hold one (a dropped Redis job answers `ConnectionLost`); the
/// PostgreSQL writer does not: it queues bytes, and the queries they carry are failed
/// by their connection when the writer reports an error.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct Taker<B: Batch>(Rc<Outbox<B>>);

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
impl<B: Batch> Taker<B> {
    /// The taking end of `outbox`.
    pub(crate) fn new(outbox: Rc<Outbox<B>>) -> Taker<B> {
        Taker(outbox)
    }
}

impl<B: Batch> Deref for Taker<B> {
    type Target = Outbox<B>;

    fn deref(&self) -> &Outbox<B> {
        &self.0
    }
}

impl<B: Batch> Drop for Taker<B> {
    fn drop(&mut self) {
        self.0.gone.set(true);
        // Taken out first: dropping items may push to this outbox again.
        let left = std::mem::take(&mut *self.0.queued.borrow_mut());
        drop(left);
    }
}

#[cfg(feature = "postgres")]
impl Outbox<bytes::BytesMut> {
    /// Appends `bytes` to what waits to be written.
    pub(crate) fn push(&self, bytes: &[u8]) {
        self.push_with(|queued| queued.extend_from_slice(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts how many of its kind were dropped.
    struct Probe(Rc<Cell<usize>>);

    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn a_task_that_panics_drops_what_is_queued_once_and_what_comes_later_at_once() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (held, queued) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let outbox: Rc<Outbox<Vec<Probe>>> = Rc::new(Outbox::default());
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            let taker = Taker::new(outbox.clone());
            let behind = queued.clone();
            let task = tokio::task::spawn_local(async move {
                let mut batch = Vec::new();
                assert!(taker.next(&mut batch).await, "the first batch");
                assert_eq!(batch.len(), 1);
                // Queued behind the batch it holds, then it panics.
                taker.push_with(|q| q.extend([Probe(behind.clone()), Probe(behind)]));
                panic!("the task fails with work queued");
            });
            outbox.push_with(|q| q.push(Probe(held.clone())));
            let ended = task.await;
            assert!(ended.is_err_and(|e| e.is_panic()), "it panicked");
        });
        assert_eq!(held.get(), 1, "the batch it held, dropped with the task");
        assert_eq!(queued.get(), 2, "what it never took, each once");
        assert!(outbox.is_empty(), "nothing is held for a task that is gone");

        let late = Probe(held.clone());
        outbox.push_with(move |q| q.push(late));
        assert_eq!(
            held.get(),
            2,
            "pushed after the task ended: dropped at once"
        );
        assert!(outbox.is_empty());
    }
}
