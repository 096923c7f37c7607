//! [`Outbox`]: what a shard hands one connection's task on its own thread, gathered
//! into one batch (the PostgreSQL writer's bytes, a Redis connection's commands).
//!
//! Producers append while the shard drains; the task takes the whole batch at once
//! when it runs, so a drain of pipelined work costs one wake of the task and one
//! write, and no channel message and no task per query.

use std::cell::{Cell, RefCell};

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
    ready: Notify,
}

impl<B: Batch> Outbox<B> {
    /// Appends to the batch with `add`, waking the task if the batch was empty (one
    /// wake per batch).
    pub(crate) fn push_with(&self, add: impl FnOnce(&mut B)) {
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

#[cfg(feature = "postgres")]
impl Outbox<bytes::BytesMut> {
    /// Appends `bytes` to what waits to be written.
    pub(crate) fn push(&self, bytes: &[u8]) {
        self.push_with(|queued| queued.extend_from_slice(bytes));
    }
}
