//! Storage: objects in buckets (S3-like).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::family;
use crate::time::Timestamp;

/// A stored object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    /// Its key.
    pub key: String,
    /// Its bucket.
    pub bucket: String,
    /// Its bytes.
    pub content: Vec<u8>,
    /// When it was last written.
    pub last_modified: Timestamp,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// MIME type, if given.
    pub content_type: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Version id, if the bucket keeps versions.
    pub version_id: Option<String>,
}

/// The domain outcome of reading an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectLookup {
    /// The object (boxed: it is large, and responses stay small to move).
    Found(Box<StoredObject>),
    /// No object under this key.
    NotFound {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
}

/// Why a write was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutFailureReason {
    /// The bucket is full.
    QuotaExceeded,
    /// Not allowed to write here.
    PermissionDenied,
    /// The object is in a state that forbids writing (archived, locked).
    InvalidObjectState,
}

/// The domain outcome of writing an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutOutcome {
    /// Stored.
    Stored {
        /// The key.
        key: String,
        /// The new version id, if the bucket keeps versions.
        version_id: Option<String>,
    },
    /// Refused.
    Failed {
        /// Why.
        reason: PutFailureReason,
    },
}

fn default_max_keys() -> u32 {
    1000
}

/// Read an object. Output: [`ObjectLookup`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetObject {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
}

/// Write an object. Output: [`PutOutcome`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutObject {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// The bytes.
    pub content: Vec<u8>,
    /// User metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// MIME type.
    pub content_type: Option<String>,
}

/// Delete an object. Output: whether it existed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteObject {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
}

/// List keys in a bucket in lexicographic order. Output: the keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListObjects {
    /// The bucket.
    pub bucket: String,
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// At most this many keys (default 1000).
    #[serde(default = "default_max_keys")]
    pub max_keys: u32,
}

family! {
    /// The Storage family's requests.
    Storage: StorageRequest => StorageResponse {
        GetObject => ObjectLookup,
        PutObject [boxed] => PutOutcome,
        DeleteObject => bool,
        ListObjects => Vec<String>,
    }
}
