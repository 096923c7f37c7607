//! What the engine tests share: collecting the engine's outputs and picking them apart.
#![allow(dead_code)] // each test file uses its own subset

use effectful::*;

/// Collects everything the engine wants done.
pub fn drain<O: std::fmt::Debug + 'static>(engine: &mut Engine<O>) -> Vec<Output<O>> {
    std::iter::from_fn(|| engine.poll_output()).collect()
}

pub fn requests<O>(outputs: &[Output<O>]) -> Vec<EffectId> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Request { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

pub fn cancels<O>(outputs: &[Output<O>]) -> Vec<EffectId> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Cancel { id } => Some(*id),
            _ => None,
        })
        .collect()
}

pub fn finished<O: Clone>(outputs: &[Output<O>]) -> Vec<Result<O, ProgramError>> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Finished { result, .. } => Some(result.clone()),
            _ => None,
        })
        .collect()
}
