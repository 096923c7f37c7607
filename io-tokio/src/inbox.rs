//! A shard's inbox: many senders on any thread, one receiver, the shard's loop.
//!
//! The loop looks at its inbox every time round, after every effect's answer, and
//! almost always finds it empty. tokio's `mpsc` makes that look cost a waker
//! registration (a compare-and-swap and a `will_wake`) each time; here it costs one
//! atomic load. The receiver registers its task's waker once (again only if the task
//! changes), and a sender wakes it only when the inbox goes from empty to not empty.
//!
//! Correctness of the wake: a sender pushes, then sets `pending` and, if it was clear,
//! wakes the registered waker (under its lock). The receiver registers its waker
//! (under the same lock) before it reads `pending`; it clears `pending` before it
//! takes items. So an item pushed after the receiver took its batch always sets
//! `pending` again and wakes it, and a receiver that reads `pending` clear has its
//! waker where the next sender will find it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

struct Shared<T> {
    queue: Mutex<Queue<T>>,
    /// Items were pushed since the receiver last took them (it may have taken them).
    pending: AtomicBool,
    /// The receiver's task.
    waker: Mutex<Option<Waker>>,
}

struct Queue<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// Sends into one shard's inbox, from anywhere.
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            shared: self.shared.clone(),
        }
    }
}

/// The shard's end of its inbox.
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// The waker last registered (to register again only when it changes).
    registered: Option<Waker>,
}

pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            closed: false,
        }),
        pending: AtomicBool::new(false),
        waker: Mutex::new(None),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver {
            shared,
            registered: None,
        },
    )
}

impl<T> Sender<T> {
    /// Queues `item`; gives it back if the receiver has closed the inbox.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        {
            // A panic elsewhere while the lock was held leaves the queue whole
            // (pushes and drains do not panic midway): go on with it.
            let mut queue = self
                .shared
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if queue.closed {
                return Err(item);
            }
            queue.items.push_back(item);
        }
        if !self.shared.pending.swap(true, Ordering::AcqRel) {
            let waker = self
                .shared
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(waker) = waker.as_ref() {
                waker.wake_by_ref();
            }
        }
        Ok(())
    }
}

impl<T> Receiver<T> {
    /// Moves up to `limit` queued items into `batch`: `Ready(n)` with `n > 0`, or
    /// `Pending` with the task's waker registered.
    pub(crate) fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        batch: &mut Vec<T>,
        limit: usize,
    ) -> Poll<usize> {
        if !self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            let waker = cx.waker().clone();
            *self
                .shared
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
            self.registered = Some(waker);
        }
        if !self.shared.pending.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        self.shared.pending.store(false, Ordering::Release);
        let mut queue = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = queue.items.len().min(limit);
        batch.extend(queue.items.drain(..n));
        if !queue.items.is_empty() {
            // Left for the next call, which the loop makes before it sleeps.
            self.shared.pending.store(true, Ordering::Release);
        }
        drop(queue);
        if n == 0 {
            // Taken with an earlier batch; `pending` is clear and the waker
            // registered, so the next send wakes the task.
            return Poll::Pending;
        }
        Poll::Ready(n)
    }

    /// Refuses later sends and returns what is still queued.
    pub(crate) fn close(&mut self) -> VecDeque<T> {
        let mut queue = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        queue.closed = true;
        std::mem::take(&mut queue.items)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Senders learn the shard is gone; what was queued is dropped with it.
        drop(self.close());
        self.shared
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn an_empty_inbox_is_pending_and_the_first_send_wakes_it_once() {
        let (tx, mut rx) = channel::<u32>();
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut batch = Vec::new();
        assert!(rx.poll_recv_many(&mut cx, &mut batch, 8).is_pending());
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one wake for both sends");
        assert_eq!(rx.poll_recv_many(&mut cx, &mut batch, 8), Poll::Ready(2));
        assert_eq!(batch, [1, 2]);
        assert!(rx.poll_recv_many(&mut cx, &mut batch, 8).is_pending());
        tx.send(3).unwrap();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            2,
            "empty again: the next send wakes"
        );
    }

    #[test]
    fn a_batch_takes_at_most_its_limit_and_leaves_the_rest_ready() {
        let (tx, mut rx) = channel::<u32>();
        let (_, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        let mut batch = Vec::new();
        assert_eq!(rx.poll_recv_many(&mut cx, &mut batch, 3), Poll::Ready(3));
        assert_eq!(rx.poll_recv_many(&mut cx, &mut batch, 3), Poll::Ready(2));
        assert_eq!(batch, [0, 1, 2, 3, 4]);
        assert!(rx.poll_recv_many(&mut cx, &mut batch, 3).is_pending());
    }

    #[test]
    fn a_closed_inbox_gives_back_what_was_queued_and_refuses_sends() {
        let (tx, mut rx) = channel::<u32>();
        tx.send(7).unwrap();
        assert_eq!(rx.close(), [7]);
        assert_eq!(tx.send(8), Err(8));
        drop(rx);
        assert_eq!(tx.send(9), Err(9));
    }

    #[test]
    fn sends_from_many_threads_all_arrive_and_none_is_lost_to_a_missed_wake() {
        const THREADS: u32 = 4;
        const EACH: u32 = 20_000;
        let (tx, mut rx) = channel::<u32>();
        let senders: Vec<_> = (0..THREADS)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        tx.send(t * EACH + i).unwrap();
                    }
                })
            })
            .collect();
        // Park the receiving thread whenever the inbox is pending, as a task would
        // sleep: a missed wake would hang here (the test harness's timeout).
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut batch = Vec::new();
        let mut seen = vec![false; (THREADS * EACH) as usize];
        let mut received = 0;
        while received < THREADS * EACH {
            match rx.poll_recv_many(&mut cx, &mut batch, 256) {
                Poll::Ready(n) => {
                    received += n as u32;
                    for item in batch.drain(..) {
                        assert!(!std::mem::replace(&mut seen[item as usize], true));
                    }
                }
                Poll::Pending => std::thread::park(),
            }
        }
        for sender in senders {
            sender.join().unwrap();
        }
        assert!(seen.iter().all(|&s| s));
    }
}
