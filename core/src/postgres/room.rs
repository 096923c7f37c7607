//! What a [`PgService`](super::PgService) knows about the chat room, so that one
//! query per post serves every waiting session.
//!
//! Two kinds of knowledge, with different lifetimes:
//! - **The cache**: the room's latest messages, every one with `seq` in
//!   `(from, last]`. Stored messages never change, and a query's answer for "after
//!   `s`, oldest first" holds every message in `(s, its last]`, so what the cache
//!   learns stays true for as long as the service runs.
//! - **The horizon**: a `seq` such that every message after it was committed after
//!   the listener's `LISTEN` took effect, so its notification will come. It holds
//!   only until something happens on the room's channel: it is forgotten when
//!   listening starts or stops and at a stranger's notification of something it
//!   does not know, and an answer teaches it only if nothing happened between its
//!   query's sending and its answer (the `epoch` says so).
//!
//! What a notification teaches depends on who sent it. Anyone connected to the
//! database may `NOTIFY` on the room's channel, so a notification from a stranger
//! says only "something changed": the horizon is forgotten and the waits read. One
//! sent by a backend of this process's own pools ([`OwnBackends`](super::OwnBackends))
//! carries the stored message itself, delivered in commit order, which is `seq`
//! order: if it is the next one after what is known ([`Room::follows`]), the cache
//! takes it, and since its commit came after `LISTEN` took effect, every later one
//! will notify too, so the horizon becomes it ([`Room::stored`]). A post's own
//! answer teaches the same (while a horizon holds), so neither the posting shard nor
//! any other reads the room for a post of this process. A notification at or before
//! the horizon of a message the cache holds, from anyone, tells nothing new
//! ([`Room::covers`]).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::effect::SharedRoomMessage;

/// The server processes (backend process ids, from each connection's
/// `BackendKeyData`) behind this process's own open connections, shared by every
/// [`PgService`](super::PgService) made from clones of one
/// [`ServiceConfig`](super::ServiceConfig) (a process's shards). A room
/// notification is trusted to carry a stored message only if one of these sent it:
/// the server stamps each notification with its sender's process id, which no client
/// can forge. The trust boundary is the process: its programs' own SQL runs on these
/// connections too. Give clones of one config only to services on one server
/// (process ids are per server).
#[derive(Clone, Default)]
pub struct OwnBackends(Arc<Mutex<HashSet<i32>>>);

impl OwnBackends {
    fn lock(&self) -> MutexGuard<'_, HashSet<i32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `process_id` is behind one of the open connections.
    pub fn contains(&self, process_id: i32) -> bool {
        self.lock().contains(&process_id)
    }

    pub(super) fn insert(&self, process_id: i32) {
        self.lock().insert(process_id);
    }

    pub(super) fn remove(&self, process_id: i32) {
        self.lock().remove(&process_id);
    }
}

impl std::fmt::Debug for OwnBackends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OwnBackends({} open)", self.lock().len())
    }
}

/// How many of the latest messages the cache keeps: enough for every session that
/// lags behind the room by a few seconds of a busy room.
const CACHE_CAPACITY: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct Room {
    /// `seq` before the cache's first message: the cache holds all of `(from, last]`.
    from: u64,
    /// Shared: every answer from the cache holds these very messages.
    messages: VecDeque<SharedRoomMessage>,
    horizon: Option<u64>,
    epoch: u64,
}

impl Room {
    /// Bumped whenever listening starts or stops, and at every notification.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Listening started or stopped, or the channel notified (a post committed, ours
    /// or another room's): the horizon no longer holds, and answers to queries sent
    /// before now teach it nothing.
    pub(super) fn forget_horizon(&mut self) {
        self.horizon = None;
        self.epoch += 1;
    }

    /// Raises the horizon to `seq`; whether it rose (then waits parked before `seq`
    /// must run again: messages they wait for may be known now).
    fn raise_horizon(&mut self, seq: u64) -> bool {
        let rose = self.horizon.is_none_or(|h| seq > h);
        if rose {
            self.horizon = Some(seq);
        }
        rose
    }

    /// Whether a notification of `seq` tells nothing new: a horizon holds at or after
    /// it, so every wait that parked is at or after it already, and the cache holds
    /// it. (True of a stranger's notification too: ignoring one that names a known
    /// `seq` loses nothing, since a real post's own notification still comes. The
    /// cache's part keeps a horizon learnt from a wait for a `seq` nobody stored
    /// yet, far ahead, from silencing the notifications of real posts.)
    pub(super) fn covers(&self, seq: u64) -> bool {
        self.horizon.is_some_and(|h| seq <= h) && seq <= self.last()
    }

    /// Whether a message with `seq` is the next one after what is known: it follows
    /// the cache's last, or the horizon (nothing after which existed when it was
    /// learnt). A notification that believed a jump further ahead could raise the
    /// horizon past every stored message, and waits below it would never park.
    pub(super) fn follows(&self, seq: u64) -> bool {
        seq == self.last().saturating_add(1)
            || self.horizon.is_some_and(|h| h.checked_add(1) == Some(seq))
    }

    /// `message` is stored: a post's own answer (`notified` false), or a notification
    /// from this process's own backend on the listener that listens now (`notified`
    /// true). The cache takes it if it follows what the cache holds, or starts again
    /// from it if it is newer than that; the horizon rises to it if a horizon holds
    /// (every message after the horizon notifies), and becomes it if it was notified
    /// (it committed after `LISTEN` took effect, and later messages commit later).
    /// Answers whether the horizon changed.
    pub(super) fn stored(&mut self, message: &SharedRoomMessage, notified: bool) -> bool {
        let seq = message.seq;
        // Stored messages never change: the message is what a read after `seq - 1`
        // would have answered first.
        self.take(seq.saturating_sub(1), std::slice::from_ref(message));
        if notified {
            // True of every notified message, and a horizon ahead of it (learnt from a
            // wait far ahead of the room) comes back down to a stored one.
            let changed = self.horizon != Some(seq);
            self.horizon = Some(seq);
            changed
        } else if self.horizon.is_some() {
            self.raise_horizon(seq)
        } else {
            false
        }
    }

    /// Takes `read`, every message in `(after, its last]` in order, into the cache:
    /// joined to it if the two overlap or touch, in its place if it is newer and
    /// apart, ignored if it is older and apart; then the oldest are dropped past
    /// the capacity.
    fn take(&mut self, after: u64, read: &[SharedRoomMessage]) {
        let Some(end) = read.last().map(|m| m.seq) else {
            return;
        };
        let last = self.last();
        if after <= last && end >= self.from {
            if after < self.from {
                let from = self.from;
                for m in read.iter().rev().filter(|m| m.seq <= from) {
                    self.messages.push_front(m.clone());
                }
                self.from = after;
            }
            self.messages
                .extend(read.iter().filter(|m| m.seq > last).cloned());
        } else if end > last {
            self.from = after;
            self.messages = read.iter().cloned().collect();
        }
        while self.messages.len() > CACHE_CAPACITY {
            if let Some(dropped) = self.messages.pop_front() {
                self.from = dropped.seq;
            }
        }
    }

    /// Whether a wait for messages after `after` can only park: nothing is stored after
    /// it yet, and the next post will notify.
    pub(super) fn must_park(&self, after: u64) -> bool {
        self.horizon.is_some_and(|h| after >= h)
    }

    /// The answer to "after `after`, at most `limit`" from the cache, if it holds one:
    /// the messages after `after`, oldest first, all there are up to the last given.
    pub(super) fn answer(&self, after: u64, limit: u32) -> Option<Vec<SharedRoomMessage>> {
        if after < self.from || after >= self.last() || limit == 0 {
            return None;
        }
        let start = self.messages.partition_point(|m| m.seq <= after);
        Some(
            self.messages
                .range(start..)
                .take(limit as usize)
                .cloned()
                .collect(),
        )
    }

    fn last(&self) -> u64 {
        self.messages.back().map_or(self.from, |m| m.seq)
    }

    /// A query for "after `after`, at most `limit`" answered `read`; `listening_held`:
    /// it was sent in the current epoch (the listener listened, and nothing notified,
    /// from its sending to its answer). Answers whether the horizon rose.
    pub(super) fn learn(
        &mut self,
        after: u64,
        limit: u32,
        read: &[SharedRoomMessage],
        listening_held: bool,
    ) -> bool {
        let in_order = read.first().is_none_or(|m| m.seq > after)
            && read.windows(2).all(|w| w[0].seq < w[1].seq);
        if !in_order {
            // Not an answer our query gives: learn nothing from it.
            return false;
        }
        let rose = listening_held
            && match read.last() {
                // Nothing after `after`: the next message will notify.
                None => self.raise_horizon(after),
                // All there was, up to its last: the next message will notify.
                Some(m) if read.len() < limit as usize => self.raise_horizon(m.seq),
                Some(_) => false,
            };
        self.take(after, read);
        rose
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::RoomMessage;
    use crate::time::Timestamp;
    use uuid::Uuid;

    fn message(seq: u64) -> SharedRoomMessage {
        SharedRoomMessage::new(RoomMessage {
            seq,
            id: Uuid::from_u128(u128::from(seq)),
            user_id: Uuid::from_u128(7),
            name: "ada".into(),
            text: format!("m{seq}"),
            created_at: Timestamp::from_unix_secs(0),
        })
    }

    fn messages(seqs: std::ops::RangeInclusive<u64>) -> Vec<SharedRoomMessage> {
        seqs.map(message).collect()
    }

    fn seqs(found: Option<Vec<SharedRoomMessage>>) -> Option<Vec<u64>> {
        found.map(|m| m.iter().map(|m| m.seq).collect())
    }

    #[test]
    fn an_empty_cache_answers_nothing() {
        let room = Room::default();
        assert_eq!(room.answer(0, 50), None);
        assert!(!room.must_park(0), "no horizon before anything is learnt");
    }

    #[test]
    fn answers_come_from_what_queries_read_and_stop_at_the_last_known() {
        let mut room = Room::default();
        room.learn(3, 50, &messages(4..=6), false);
        assert_eq!(seqs(room.answer(3, 50)), Some(vec![4, 5, 6]));
        assert_eq!(seqs(room.answer(4, 1)), Some(vec![5]));
        assert_eq!(room.answer(6, 50), None, "nothing known after the last");
        assert_eq!(room.answer(2, 50), None, "message 3 is not known");
        room.learn(6, 50, &messages(7..=8), false);
        assert_eq!(seqs(room.answer(5, 50)), Some(vec![6, 7, 8]));
    }

    #[test]
    fn every_answer_holds_the_messages_the_query_read_not_copies() {
        let mut room = Room::default();
        let read = messages(4..=6);
        room.learn(3, 50, &read, false);
        for _ in 0..2 {
            let found = room.answer(4, 50).unwrap_or_default();
            assert_eq!(found.len(), 2);
            assert!(SharedRoomMessage::ptr_eq(&found[0], &read[1]));
            assert!(SharedRoomMessage::ptr_eq(&found[1], &read[2]));
        }
    }

    #[test]
    fn a_disjoint_newer_answer_replaces_the_cache_and_an_older_one_is_ignored() {
        let mut room = Room::default();
        room.learn(3, 50, &messages(4..=6), false);
        room.learn(10, 50, &messages(11..=12), false);
        assert_eq!(room.answer(4, 50), None, "7..=10 were never read");
        assert_eq!(seqs(room.answer(10, 50)), Some(vec![11, 12]));
        room.learn(0, 50, &messages(1..=2), false);
        assert_eq!(seqs(room.answer(10, 50)), Some(vec![11, 12]));
    }

    #[test]
    fn the_horizon_is_learnt_only_while_listening_held() {
        let mut room = Room::default();
        room.learn(0, 50, &messages(1..=5), false);
        room.learn(5, 50, &[], false);
        assert!(!room.must_park(5));
        room.learn(5, 50, &[], true);
        assert!(room.must_park(5) && room.must_park(9) && !room.must_park(4));
        let mut full = Room::default();
        full.learn(5, 3, &messages(6..=8), true);
        assert!(
            !full.must_park(8),
            "a full page says nothing of what follows"
        );
        full.learn(5, 50, &messages(6..=8), true);
        assert!(full.must_park(8) && !full.must_park(7));
        room.learn(5, 50, &messages(6..=8), true);
        assert!(room.must_park(8));
        room.forget_horizon();
        assert!(!room.must_park(8) && !room.must_park(100));
    }

    #[test]
    fn a_stored_message_extends_the_cache_or_starts_it_again() {
        let mut room = Room::default();
        assert!(
            room.stored(&message(1), true),
            "notified: the horizon rises"
        );
        assert!(room.must_park(1) && !room.must_park(0));
        assert_eq!(seqs(room.answer(0, 50)), Some(vec![1]));
        room.stored(&message(2), true);
        assert_eq!(seqs(room.answer(0, 50)), Some(vec![1, 2]));
        // Message 3 was never seen: a cache that jumped to 4 holds only (3, 4].
        room.stored(&message(4), true);
        assert_eq!(room.answer(1, 50), None, "message 3 is not known");
        assert_eq!(seqs(room.answer(3, 50)), Some(vec![4]));
        // An older one (a post's answer after its notification) changes nothing.
        assert!(!room.stored(&message(2), false));
        assert_eq!(seqs(room.answer(3, 50)), Some(vec![4]));
        assert!(room.must_park(4));
    }

    #[test]
    fn a_read_that_reaches_further_back_extends_the_cache_backwards() {
        let mut room = Room::default();
        room.stored(&message(3), false);
        room.stored(&message(2), false);
        assert_eq!(
            seqs(room.answer(1, 50)),
            Some(vec![2, 3]),
            "2 went in front"
        );
        room.learn(0, 50, &messages(1..=4), false);
        assert_eq!(seqs(room.answer(0, 50)), Some(vec![1, 2, 3, 4]));
        // Adjacent at either end joins; a gap does not.
        let mut gap = Room::default();
        gap.learn(5, 50, &messages(6..=7), false);
        gap.learn(2, 50, &messages(3..=4), false);
        assert_eq!(gap.answer(2, 50), None, "older and disjoint: ignored");
        gap.learn(2, 50, &messages(3..=5), false);
        assert_eq!(seqs(gap.answer(2, 50)), Some(vec![3, 4, 5, 6, 7]));
    }

    #[test]
    fn only_the_next_message_follows_and_a_notified_one_brings_a_far_horizon_back() {
        let mut room = Room::default();
        assert!(
            room.follows(1) && !room.follows(2),
            "an empty room: 1 comes next"
        );
        room.learn(0, 50, &messages(1..=3), true);
        assert!(room.follows(4) && !room.follows(5) && !room.follows(3));
        // A wait far ahead of the room read nothing: the horizon went far ahead, but
        // a real post's notification is not covered, and a notified message brings
        // the horizon back to it.
        room.learn(1_000_000, 50, &[], true);
        assert!(room.covers(3) && !room.covers(4) && !room.covers(999));
        assert!(room.stored(&message(4), true));
        assert!(room.must_park(4) && !room.must_park(3) && room.covers(4));
        // A horizon learnt past the cache (an answer the cache could not join) is
        // followed too.
        let mut ahead = Room::default();
        ahead.learn(6, 50, &messages(7..=7), true);
        assert!(ahead.follows(8));
        ahead.learn(9, 50, &[], true);
        assert!(ahead.follows(8) && ahead.follows(10) && !ahead.follows(9));
    }

    #[test]
    fn a_posts_own_answer_raises_the_horizon_only_while_one_holds() {
        let mut room = Room::default();
        assert!(
            !room.stored(&message(1), false),
            "no horizon: a post's answer says nothing of notifications to come"
        );
        assert!(!room.must_park(1));
        assert_eq!(seqs(room.answer(0, 50)), Some(vec![1]), "but it is cached");
        room.learn(1, 50, &[], true);
        assert!(room.must_park(1));
        assert!(room.stored(&message(2), false));
        assert!(room.must_park(2) && !room.must_park(1));
        assert_eq!(seqs(room.answer(1, 50)), Some(vec![2]));
    }

    #[test]
    fn notifications_at_or_before_the_horizon_are_covered() {
        let mut room = Room::default();
        assert!(!room.covers(1), "no horizon: nothing is covered");
        room.learn(0, 50, &messages(1..=3), true);
        assert!(room.covers(1) && room.covers(3) && !room.covers(4));
        room.forget_horizon();
        assert!(!room.covers(1));
    }

    #[test]
    fn the_horizon_reports_when_it_rises() {
        let mut room = Room::default();
        assert!(room.learn(0, 50, &messages(1..=3), true));
        assert!(!room.learn(0, 50, &messages(1..=2), true), "2 is below 3");
        assert!(!room.learn(3, 50, &[], false), "not while listening held");
        assert!(room.learn(3, 50, &messages(4..=4), true));
    }

    #[test]
    fn answers_out_of_order_teach_nothing() {
        let mut room = Room::default();
        room.learn(3, 50, &[message(5), message(4)], true);
        room.learn(3, 50, &[message(3)], true);
        assert_eq!(room.answer(3, 50), None);
        assert!(!room.must_park(3));
    }

    #[test]
    fn the_cache_keeps_only_the_latest_messages() {
        let mut room = Room::default();
        let count = CACHE_CAPACITY as u64 + 10;
        room.learn(0, u32::MAX, &messages(1..=count), false);
        assert_eq!(room.answer(5, 50), None, "the oldest were dropped");
        assert_eq!(
            seqs(room.answer(count - 2, 50)),
            Some(vec![count - 1, count])
        );
        assert_eq!(room.messages.len(), CACHE_CAPACITY);
    }
}
