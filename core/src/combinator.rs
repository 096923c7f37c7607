//! Running several futures of one program at once: join and race.
//!
//! They work with any futures, but are meant for the ones [`crate::Fx`] makes. The
//! losers of a race are dropped, which cancels their outstanding effects.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;

/// One of two values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Either<A, B> {
    /// The first.
    Left(A),
    /// The second.
    Right(B),
}

/// Runs both futures to completion, concurrently.
pub async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = pin!(a);
    let mut b = pin!(b);
    let mut out_a = None;
    let mut out_b = None;
    poll_fn(|cx| {
        if out_a.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                out_a = Some(v);
            }
        }
        if out_b.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                out_b = Some(v);
            }
        }
        match (out_a.take(), out_b.take()) {
            (Some(a), Some(b)) => Poll::Ready((a, b)),
            (a, b) => {
                out_a = a;
                out_b = b;
                Poll::Pending
            }
        }
    })
    .await
}

/// Runs all futures to completion, concurrently; outputs in the input order.
///
/// Each wake polls every unfinished future; for many effects of one type,
/// [`crate::Fx::perform_all`] costs O(1) per completion instead.
pub async fn join_all<Fut: Future>(futures: impl IntoIterator<Item = Fut>) -> Vec<Fut::Output> {
    let mut futures: Vec<Pin<Box<Fut>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<Fut::Output>> = futures.iter().map(|_| None).collect();
    let mut remaining = futures.len();
    poll_fn(|cx| {
        for (fut, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                    *out = Some(v);
                    remaining -= 1;
                }
            }
        }
        if remaining == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    // Every output is in; `flatten` alone would grow the vector from empty.
    let mut all = Vec::with_capacity(outputs.len());
    all.extend(outputs.into_iter().flatten());
    all
}

/// The first of two futures to finish; the other is dropped (its effects cancelled).
/// When both are ready on the same wake, the first wins.
pub async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        Poll::Pending
    })
    .await
}

/// The first of many futures to finish, with its index; the others are dropped.
/// Ties go to the lowest index. An empty input never finishes.
pub async fn race_all<Fut: Future>(futures: impl IntoIterator<Item = Fut>) -> (usize, Fut::Output) {
    let mut futures: Vec<Pin<Box<Fut>>> = futures.into_iter().map(Box::pin).collect();
    poll_fn(|cx| {
        for (index, fut) in futures.iter_mut().enumerate() {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready((index, v));
            }
        }
        Poll::Pending
    })
    .await
}
