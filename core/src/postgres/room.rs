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
//!   listening starts or stops and at every notification, and an answer teaches it
//!   only if nothing happened between its query's sending and its answer (the
//!   `epoch` says so). Notifications are not trusted to say more than "something
//!   changed": the channel is one per database, so another schema's room, or anyone's
//!   `NOTIFY`, speaks on it too.

use std::collections::VecDeque;

use crate::effect::SharedRoomMessage;

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

    fn raise_horizon(&mut self, seq: u64) {
        self.horizon = Some(self.horizon.map_or(seq, |h| h.max(seq)));
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
    /// from its sending to its answer).
    pub(super) fn learn(
        &mut self,
        after: u64,
        limit: u32,
        read: &[SharedRoomMessage],
        listening_held: bool,
    ) {
        let in_order = read.first().is_none_or(|m| m.seq > after)
            && read.windows(2).all(|w| w[0].seq < w[1].seq);
        if !in_order {
            // Not an answer our query gives: learn nothing from it.
            return;
        }
        if listening_held {
            match read.last() {
                // Nothing after `after`: the next message will notify.
                None => self.raise_horizon(after),
                // All there was, up to its last: the next message will notify.
                Some(m) if read.len() < limit as usize => self.raise_horizon(m.seq),
                Some(_) => {}
            }
        }
        let Some(end) = read.last().map(|m| m.seq) else {
            return;
        };
        let last = self.last();
        if (self.from..=last).contains(&after) {
            self.messages
                .extend(read.iter().filter(|m| m.seq > last).cloned());
        } else if end > last {
            // Disjoint from what the cache holds and newer: start again from it.
            self.from = after;
            self.messages = read.iter().cloned().collect();
        }
        while self.messages.len() > CACHE_CAPACITY {
            if let Some(dropped) = self.messages.pop_front() {
                self.from = dropped.seq;
            }
        }
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
