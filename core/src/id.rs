//! Identifiers the engine hands out: stable, serializable, and checked for staleness.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

/// One hosted program. The generation makes an id of a finished program stale even
/// after its slot is reused.
#[derive(Clone, Copy, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProgramId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

// Ids are compared on every answer (is it still this slot's?): as whole words, without
// a branch per field. Equal exactly when every field is; hashed field by field, as a
// derived `Hash` would.
impl PartialEq for ProgramId {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.word() == other.word()
    }
}

impl Hash for ProgramId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.index.hash(state);
        self.generation.hash(state);
    }
}

impl ProgramId {
    #[inline]
    fn word(self) -> u64 {
        u64::from(self.index) | (u64::from(self.generation) << 32)
    }

    /// The slot index (dense, reused after the program finishes).
    pub fn index(self) -> u32 {
        self.index
    }
}

impl fmt::Debug for ProgramId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}.{}", self.index, self.generation)
    }
}

impl fmt::Display for ProgramId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One outstanding effect (or timer) of one program. A response carrying the id of an
/// effect that was cancelled or already answered is recognised as stale.
#[derive(Clone, Copy, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EffectId {
    pub(crate) program: ProgramId,
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl PartialEq for EffectId {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        let slot = |id: &EffectId| u64::from(id.slot) | (u64::from(id.generation) << 32);
        (self.program.word() == other.program.word()) & (slot(self) == slot(other))
    }
}

impl Hash for EffectId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.program.hash(state);
        self.slot.hash(state);
        self.generation.hash(state);
    }
}

impl EffectId {
    /// The program that asked for this effect.
    pub fn program(self) -> ProgramId {
        self.program
    }

    /// The effect's place in its program's table of outstanding effects: dense, and
    /// reused once the effect has ended (the id as a whole tells the uses apart), so a
    /// driver can keep per-effect state in a table indexed by program and slot.
    pub fn slot(self) -> u32 {
        self.slot
    }
}

impl fmt::Debug for EffectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}/e{}.{}", self.program, self.slot, self.generation)
    }
}

impl fmt::Display for EffectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::hash::BuildHasher;

    fn effect((index, generation, slot, slot_generation): (u32, u32, u32, u32)) -> EffectId {
        EffectId {
            program: ProgramId { index, generation },
            slot,
            generation: slot_generation,
        }
    }

    fn hash_of(value: impl Hash) -> u64 {
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(value)
    }

    proptest! {
        /// The word-wise comparison agrees with comparing field by field, and ids hash
        /// as their fields in order (what a derived `Hash` does), so maps keyed by ids
        /// keep their order from before.
        #[test]
        fn ids_are_equal_exactly_when_every_field_is_and_hash_as_their_fields(
            a in any::<(u32, u32, u32, u32)>(),
            b in any::<(u32, u32, u32, u32)>(),
            same in any::<bool>(),
        ) {
            let b = if same { a } else { b };
            prop_assert_eq!(effect(a) == effect(b), a == b);
            prop_assert_eq!(effect(a).program == effect(b).program, (a.0, a.1) == (b.0, b.1));
            prop_assert_eq!(hash_of(effect(a)), hash_of(a));
            prop_assert_eq!(hash_of(effect(a).program), hash_of((a.0, a.1)));
        }
    }
}
