//! Storage: objects in buckets (S3-like).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::family;
use crate::error::{EffectError, ErrorKind};
use crate::time::Timestamp;

/// The longest key, in bytes (S3's limit).
pub const MAX_KEY_BYTES: usize = 1024;

/// The longest bucket name, in bytes (S3's limit).
pub const MAX_BUCKET_BYTES: usize = 63;

/// The largest object, in bytes: 8 MiB. An object travels in one PostgreSQL message,
/// whose default limit (`PgConfig::max_message_len`) is 16 MiB.
pub const MAX_OBJECT_BYTES: usize = 8 << 20;

/// The most bytes of user metadata, keys and values together (S3's limit).
pub const MAX_METADATA_BYTES: usize = 2048;

/// The longest content type, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 256;

/// A stored object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    /// Its key.
    pub key: String,
    /// Its bucket.
    pub bucket: String,
    /// Its bytes.
    pub content: Vec<u8>,
    /// When it was last written: the driver's wall clock when the write was
    /// performed, and always later than the `last_modified` of the object it replaced
    /// (by at least a microsecond, even if the clock stood still or went back).
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

impl PutObject {
    /// Refuses a write that breaks one of the limits, which every implementation
    /// keeps: the same error, before anything is stored.
    ///
    /// A write is refused with an [`EffectError`] of kind `Service { code }`, not
    /// retryable, and nothing is stored, when:
    /// - the bucket name or the key is empty (`InvalidArgument`);
    /// - the key is longer than [`MAX_KEY_BYTES`] (`KeyTooLongError`) or the bucket
    ///   name longer than [`MAX_BUCKET_BYTES`] (`InvalidBucketName`);
    /// - the content is larger than [`MAX_OBJECT_BYTES`] (`EntityTooLarge`);
    /// - the metadata's keys and values add up to more than [`MAX_METADATA_BYTES`]
    ///   (`MetadataTooLarge`), or the content type is longer than
    ///   [`MAX_CONTENT_TYPE_BYTES`] (`InvalidArgument`).
    ///
    /// Every Storage effect refuses a bucket name, key, prefix, content type or metadata
    /// holding a NUL character (`InvalidArgument`): PostgreSQL's `text` cannot hold one.
    /// Reading, deleting or listing with names that no write could have stored (empty,
    /// too long) finds nothing.
    pub fn check(&self) -> Result<(), EffectError> {
        const EFFECT: &str = "Storage.PutObject";
        check_text(EFFECT, "bucket name", &self.bucket)?;
        check_text(EFFECT, "key", &self.key)?;
        if self.bucket.is_empty() || self.key.is_empty() {
            return Err(refused(
                EFFECT,
                "InvalidArgument",
                "the bucket name and the key must not be empty".into(),
            ));
        }
        if self.key.len() > MAX_KEY_BYTES {
            return Err(refused(
                EFFECT,
                "KeyTooLongError",
                format!(
                    "the key is {} bytes long; the limit is {MAX_KEY_BYTES}",
                    self.key.len()
                ),
            ));
        }
        if self.bucket.len() > MAX_BUCKET_BYTES {
            return Err(refused(
                EFFECT,
                "InvalidBucketName",
                format!(
                    "the bucket name is {} bytes long; the limit is {MAX_BUCKET_BYTES}",
                    self.bucket.len()
                ),
            ));
        }
        if self.content.len() > MAX_OBJECT_BYTES {
            return Err(refused(
                EFFECT,
                "EntityTooLarge",
                format!(
                    "the object is {} bytes; the limit is {MAX_OBJECT_BYTES}",
                    self.content.len()
                ),
            ));
        }
        if let Some(content_type) = &self.content_type {
            check_text(EFFECT, "content type", content_type)?;
            if content_type.len() > MAX_CONTENT_TYPE_BYTES {
                return Err(refused(
                    EFFECT,
                    "InvalidArgument",
                    format!(
                        "the content type is {} bytes long; the limit is {MAX_CONTENT_TYPE_BYTES}",
                        content_type.len()
                    ),
                ));
            }
        }
        let mut metadata_bytes = 0usize;
        for (key, value) in &self.metadata {
            check_text(EFFECT, "metadata key", key)?;
            check_text(EFFECT, "metadata value", value)?;
            metadata_bytes = metadata_bytes.saturating_add(key.len() + value.len());
        }
        if metadata_bytes > MAX_METADATA_BYTES {
            return Err(refused(
                EFFECT,
                "MetadataTooLarge",
                format!(
                    "the metadata is {metadata_bytes} bytes; the limit is {MAX_METADATA_BYTES}"
                ),
            ));
        }
        Ok(())
    }
}

/// Delete an object. Output: whether it existed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteObject {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
}

/// List keys in a bucket in lexicographic (code point) order. Output: the keys, at
/// most `max_keys` and never more than a thousand (S3's limit).
///
/// # Pages
/// A bucket with more keys is listed in pages, as S3's `ListObjectsV2` does with
/// `StartAfter`: ask again with `start_after` set to the last key of the page before.
/// A page with fewer keys than it could hold (`max_keys`, at most 1000) is the last;
/// a full page may be followed by an empty one. Keys written or deleted between
/// pages are seen or not depending on where they fall, as on S3; the others are
/// listed exactly once.
///
/// ```
/// use effectful::effect::ListObjects;
///
/// let first = ListObjects { bucket: "logs".into(), prefix: Some("2024/".into()), max_keys: 1000, start_after: None };
/// // ... performed, answering `keys`; if `keys.len() == 1000`, the next page is:
/// let keys = vec!["2024/0999".to_owned()];
/// let next = ListObjects { start_after: keys.last().cloned(), ..first };
/// assert_eq!(next.start_after.as_deref(), Some("2024/0999"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListObjects {
    /// The bucket.
    pub bucket: String,
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// At most this many keys (default 1000).
    #[serde(default = "default_max_keys")]
    pub max_keys: u32,
    /// Only keys after this one (S3's `StartAfter`): the last key of the page
    /// before. It need not exist, nor start with `prefix`.
    #[serde(default)]
    pub start_after: Option<String>,
}

impl StorageRequest {
    /// Refuses a request that breaks one of the limits (a write's are
    /// [`PutObject::check`]'s; reads, deletes and listings refuse only NUL).
    pub fn check(&self) -> Result<(), EffectError> {
        let effect = self.name();
        match self {
            StorageRequest::PutObject(r) => r.check(),
            StorageRequest::GetObject(GetObject { bucket, key })
            | StorageRequest::DeleteObject(DeleteObject { bucket, key }) => {
                check_text(effect, "bucket name", bucket)?;
                check_text(effect, "key", key)
            }
            StorageRequest::ListObjects(r) => {
                check_text(effect, "bucket name", &r.bucket)?;
                check_text(effect, "prefix", r.prefix.as_deref().unwrap_or_default())?;
                check_text(
                    effect,
                    "start_after key",
                    r.start_after.as_deref().unwrap_or_default(),
                )
            }
        }
    }
}

/// Refuses a text holding NUL, which PostgreSQL's `text` cannot store.
fn check_text(effect: &'static str, what: &str, text: &str) -> Result<(), EffectError> {
    match text.find('\0') {
        None => Ok(()),
        Some(at) => Err(refused(
            effect,
            "InvalidArgument",
            format!(
                "the {what} holds a NUL character at byte {at}; Storage names, prefixes and metadata cannot"
            ),
        )),
    }
}

/// A refusal of the service's, not retryable.
fn refused(effect: &'static str, code: &str, message: String) -> EffectError {
    EffectError::new(
        effect,
        ErrorKind::Service {
            code: Some(code.to_owned()),
        },
        message,
    )
    .with_retryable(false)
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
