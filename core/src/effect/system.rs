//! System: the wall clock and fresh identifiers, as effects so programs stay pure.

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

family! {
    /// The System family's requests.
    System: SystemRequest => SystemResponse {
        GetCurrentTime => Timestamp,
        GenerateUuid => Uuid,
    }
}
