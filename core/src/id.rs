//! Identifiers the engine hands out: stable, serializable, and checked for staleness.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One hosted program. The generation makes an id of a finished program stale even
/// after its slot is reused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProgramId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl ProgramId {
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
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EffectId {
    pub(crate) program: ProgramId,
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl EffectId {
    /// The program that asked for this effect.
    pub fn program(self) -> ProgramId {
        self.program
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
