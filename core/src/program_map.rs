//! A table keyed by [`ProgramId`] that knows the engine's id scheme: dense slots and
//! generations, so a driver keeps per-program state (a connection, a subscription, a
//! waiter for the result) without a hash map and without mistaking a finished
//! program's id for the program that reuses its slot.

use crate::ProgramId;

/// Values keyed by [`ProgramId`], stored by the id's dense slot index.
///
/// The engine reuses a finished program's slot with a new generation; lookups and
/// removals with an id whose generation is not the one stored are refused (`None`), as
/// the engine refuses stale ids. Memory grows with the highest slot index, which the
/// engine keeps as low as the number of programs alive at once.
///
/// ```
/// use effectful::{Engine, EngineConfig, ProgramMap, Time};
///
/// let mut engine: Engine<()> = Engine::new(EngineConfig::default());
/// let mut connections = ProgramMap::new();
/// let first = engine.spawn_async(Time::ZERO, |_fx| async {});
/// connections.insert(first, "client 1");
/// // The program has finished: its slot is reused for the next one.
/// while engine.poll_output().is_some() {}
/// connections.remove(first);
/// let second = engine.spawn_async(Time::ZERO, |_fx| async {});
/// connections.insert(second, "client 2");
/// assert_eq!(connections.get(second), Some(&"client 2"));
/// assert_eq!(connections.get(first), None, "the first program's id is stale");
/// ```
#[derive(Clone, Debug)]
pub struct ProgramMap<V> {
    slots: Vec<Option<(ProgramId, V)>>,
    len: usize,
}

impl<V> Default for ProgramMap<V> {
    fn default() -> Self {
        ProgramMap::new()
    }
}

impl<V> ProgramMap<V> {
    /// An empty table.
    pub fn new() -> Self {
        ProgramMap {
            slots: Vec::new(),
            len: 0,
        }
    }

    /// Stores `value` for `program`. Returns the entry it displaced from the program's
    /// slot, if any: this program's previous value, or one a finished program left
    /// behind (the driver should have removed it when that program's `Finished` came).
    pub fn insert(&mut self, program: ProgramId, value: V) -> Option<(ProgramId, V)> {
        let index = program.index as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        let displaced = self.slots[index].replace((program, value));
        if displaced.is_none() {
            self.len += 1;
        }
        displaced
    }

    /// The value stored for `program`; `None` if there is none or `program` is stale.
    pub fn get(&self, program: ProgramId) -> Option<&V> {
        match self.slots.get(program.index as usize) {
            Some(Some((id, value))) if *id == program => Some(value),
            _ => None,
        }
    }

    /// The value stored for `program`, to change; `None` as for [`get`](Self::get).
    pub fn get_mut(&mut self, program: ProgramId) -> Option<&mut V> {
        match self.slots.get_mut(program.index as usize) {
            Some(Some((id, value))) if *id == program => Some(value),
            _ => None,
        }
    }

    /// Whether a value is stored for `program` (not for a stale id of its slot).
    pub fn contains(&self, program: ProgramId) -> bool {
        self.get(program).is_some()
    }

    /// Takes the value stored for `program` out; a stale id removes nothing.
    pub fn remove(&mut self, program: ProgramId) -> Option<V> {
        let slot = self.slots.get_mut(program.index as usize)?;
        if slot.as_ref().is_none_or(|(id, _)| *id != program) {
            return None;
        }
        self.len -= 1;
        slot.take().map(|(_, value)| value)
    }

    /// How many programs have a value.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no program has a value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every program with its value, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (ProgramId, &V)> {
        self.slots
            .iter()
            .filter_map(|slot| slot.as_ref().map(|(id, value)| (*id, value)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn id(index: u32, generation: u32) -> ProgramId {
        ProgramId { index, generation }
    }

    #[test]
    fn a_stale_id_finds_nothing_and_removes_nothing() {
        let mut map = ProgramMap::new();
        assert_eq!(map.insert(id(3, 1), 'b'), None);
        assert_eq!(map.get(id(3, 0)), None);
        assert_eq!(map.remove(id(3, 0)), None);
        assert_eq!(map.get(id(3, 1)), Some(&'b'));
        assert_eq!(map.len(), 1);
        assert_eq!(map.remove(id(3, 1)), Some('b'));
        assert!(map.is_empty());
        assert_eq!(map.remove(id(3, 1)), None, "removed once");
    }

    #[test]
    fn an_insert_into_a_slot_left_occupied_hands_back_what_it_displaced() {
        let mut map = ProgramMap::new();
        map.insert(id(0, 0), "old");
        assert_eq!(map.insert(id(0, 1), "new"), Some((id(0, 0), "old")));
        assert_eq!(map.len(), 1);
        assert_eq!(map.insert(id(0, 1), "newer"), Some((id(0, 1), "new")));
        assert_eq!(map.iter().collect::<Vec<_>>(), [(id(0, 1), &"newer")]);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(ProgramId, u8),
        Remove(ProgramId),
    }

    fn op() -> impl Strategy<Value = Op> {
        let id = (0u32..6, 0u32..3).prop_map(|(index, generation)| id(index, generation));
        prop_oneof![
            (id.clone(), any::<u8>()).prop_map(|(id, v)| Op::Insert(id, v)),
            id.prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// The table answers as a map from slot to the last id stored there would:
        /// only the exact id (slot and generation) finds its value.
        #[test]
        fn the_table_behaves_like_a_map_from_slot_to_the_last_id_stored(
            ops in proptest::collection::vec(op(), 0..64)
        ) {
            let mut map = ProgramMap::new();
            let mut model: HashMap<u32, (ProgramId, u8)> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(program, value) => {
                        let displaced = map.insert(program, value);
                        prop_assert_eq!(displaced, model.insert(program.index, (program, value)));
                    }
                    Op::Remove(program) => {
                        let expected = match model.get(&program.index) {
                            Some((id, _)) if *id == program => model.remove(&program.index).map(|(_, v)| v),
                            _ => None,
                        };
                        prop_assert_eq!(map.remove(program), expected);
                    }
                }
                prop_assert_eq!(map.len(), model.len());
                for index in 0..6 {
                    for generation in 0..3 {
                        let program = id(index, generation);
                        let expected = model.get(&index).filter(|(id, _)| *id == program).map(|(_, v)| v);
                        prop_assert_eq!(map.get(program), expected);
                    }
                }
            }
        }
    }

    #[test]
    fn ids_beyond_the_table_find_nothing() {
        let mut map: ProgramMap<u8> = ProgramMap::new();
        assert_eq!(map.get(id(1_000, 0)), None);
        assert_eq!(map.get_mut(id(1_000, 0)), None);
        assert_eq!(map.remove(id(1_000, 0)), None);
        assert!(!map.contains(id(1_000, 0)));
    }
}
