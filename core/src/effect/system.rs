//! System: the wall clock, fresh identifiers and the driver's shutdown, as effects so
//! programs stay pure.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::family;
use crate::time::Timestamp;

/// The current UTC time. Output: [`Timestamp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GetCurrentTime {}

/// A fresh random UUID. Output: the UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GenerateUuid {}

/// Wait until the driver begins a graceful shutdown. Output: `()`.
///
/// Completes when the driver stops taking new programs and gives running ones a grace
/// period to finish (at once if that has already begun), so that a program can wind
/// down on its own terms: a WebSocket session closes with 1001 (going away). Race it
/// against the program's other work; dropping it cancels the wait. It is long by
/// nature: a driver's default per-effect timeout does not apply to it. A simulation
/// never shuts down, so there it waits until the program gives up on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WaitForShutdown {}

family! {
    /// The System family's requests.
    System: SystemRequest => SystemResponse {
        GetCurrentTime => Timestamp,
        GenerateUuid => Uuid,
        WaitForShutdown => (),
    }
}
