//! The Storage fake: S3-like buckets and objects in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::effect::{
    ObjectLookup, PutFailureReason, PutObject, PutOutcome, StorageRequest, StorageResponse,
    StoredObject,
};
use crate::{Effect, EffectError, ErrorKind, Excerpt, Std, Time, Timestamp};

use super::{DEFAULT_WALL_EPOCH, wall_time};

/// The most keys one `ListObjects` answers, whatever `max_keys` asks (S3's limit).
pub const MAX_KEYS_LIMIT: u32 = 1000;

#[derive(Clone, Debug, Default)]
struct Bucket {
    objects: BTreeMap<String, StoredObject>,
    /// The last version number given out per key; survives deletes, as in a
    /// versioned bucket.
    versions: BTreeMap<String, u64>,
    /// Sum of the sizes of the current objects.
    used_bytes: u64,
    quota_bytes: Option<u64>,
    read_only: bool,
    locked: BTreeSet<String>,
}

/// An S3 stand-in: buckets of objects with metadata, content type, size, last-modified
/// time and version ids.
///
/// - Buckets come into being on the first `PutObject` to them, unless the storage
///   was built [`with_buckets`](FakeStorage::with_buckets): then only those exist,
///   and a `PutObject` elsewhere fails with an [`EffectError`] of kind
///   `Service { code: "NoSuchBucket" }`, not retryable. Reading, deleting or listing
///   in a missing bucket finds nothing.
/// - Every bucket keeps versions: each write of a key gets the next version id of that
///   key, `"1"`, `"2"`, ... (the count goes on after a delete). Only the newest version
///   is kept.
/// - `last_modified` is `wall_epoch + now` of the write, or a microsecond after the
///   replaced object's if that is not earlier (as on PostgreSQL: an overwrite is
///   always later than what it replaced).
/// - `ListObjects` answers keys in lexicographic (byte) order, only those starting
///   with `prefix` and after `start_after`, at most `max_keys` of them, and never
///   more than [`MAX_KEYS_LIMIT`]; `max_keys == 0` answers nothing. The next page
///   starts after the last key of this one.
/// - A bucket may have a quota in bytes ([`set_quota`](FakeStorage::set_quota)): a
///   write that would take the current objects' total size over it fails with
///   [`PutFailureReason::QuotaExceeded`].
/// - A read-only bucket ([`set_read_only`](FakeStorage::set_read_only)) refuses
///   writes with [`PutFailureReason::PermissionDenied`], and deletes with an
///   [`EffectError`] of kind `Service { code: "AccessDenied" }`, not retryable.
/// - A locked key ([`set_locked`](FakeStorage::set_locked), an archived or
///   legally held object) refuses writes with
///   [`PutFailureReason::InvalidObjectState`].
/// - Requests are held to the family's limits of [`PutObject::check`] by
///   [`StorageRequest::check`], as the PostgreSQL adapter holds them: an empty bucket
///   name or key, a key over 1024 bytes, a bucket name over 63, an object over 8 MiB,
///   metadata over 2 KiB, and NUL in any name, prefix or metadata are refused with
///   an [`EffectError`] of kind `Service { code }`, not retryable, and nothing is
///   stored.
///
/// The contract suite (`effectful_test::contract::check_storage`) runs the same cases
/// against this fake and against the PostgreSQL adapter. Found there and fixed here:
/// NUL characters (which PostgreSQL's `text` refuses) were stored; objects and
/// bucket names had no size limit (PostgreSQL answers in one message of bounded
/// length, and its index entries are bounded); an overwrite within the same
/// microsecond kept the same `last_modified`.
///
/// Quotas, read-only buckets, locked keys and fixed bucket lists are faults to
/// inject in simulations: the PostgreSQL adapter has none of them.
#[derive(Clone, Debug)]
pub struct FakeStorage {
    wall_epoch: Timestamp,
    create_on_put: bool,
    buckets: BTreeMap<String, Bucket>,
}

impl Default for FakeStorage {
    fn default() -> FakeStorage {
        FakeStorage::new()
    }
}

impl FakeStorage {
    /// Storage with no buckets, which come into being on the first write to them.
    pub fn new() -> FakeStorage {
        FakeStorage {
            wall_epoch: DEFAULT_WALL_EPOCH,
            create_on_put: true,
            buckets: BTreeMap::new(),
        }
    }

    /// Storage with exactly these (empty) buckets; writes to any other bucket fail.
    pub fn with_buckets<I, S>(buckets: I) -> FakeStorage
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        FakeStorage {
            wall_epoch: DEFAULT_WALL_EPOCH,
            create_on_put: false,
            buckets: buckets
                .into_iter()
                .map(|name| (name.into(), Bucket::default()))
                .collect(),
        }
    }

    /// The same storage with `wall_epoch` as the wall-clock instant of [`Time::ZERO`].
    pub fn with_wall_epoch(mut self, wall_epoch: Timestamp) -> FakeStorage {
        self.wall_epoch = wall_epoch;
        self
    }

    /// Limits the total size of the objects in `bucket` (creating it if needed);
    /// `None` lifts the limit.
    pub fn set_quota(&mut self, bucket: &str, quota_bytes: Option<u64>) {
        self.bucket_entry(bucket).quota_bytes = quota_bytes;
    }

    /// Makes `bucket` (created if needed) refuse or accept writes and deletes.
    pub fn set_read_only(&mut self, bucket: &str, read_only: bool) {
        self.bucket_entry(bucket).read_only = read_only;
    }

    /// Makes writes to `key` in `bucket` (created if needed) fail with
    /// [`PutFailureReason::InvalidObjectState`], or succeed again.
    pub fn set_locked(&mut self, bucket: &str, key: &str, locked: bool) {
        let bucket = self.bucket_entry(bucket);
        if locked {
            bucket.locked.insert(key.to_owned());
        } else {
            bucket.locked.remove(key);
        }
    }

    /// Every bucket, in name order.
    pub fn buckets(&self) -> impl Iterator<Item = &str> {
        self.buckets.keys().map(String::as_str)
    }

    /// Every object in `bucket`, in key order, with its key.
    pub fn objects(&self, bucket: &str) -> impl Iterator<Item = (&str, &StoredObject)> {
        self.buckets
            .get(bucket)
            .into_iter()
            .flat_map(|b| b.objects.iter().map(|(k, o)| (k.as_str(), o)))
    }

    /// The object under `key` in `bucket`, if any.
    pub fn object(&self, bucket: &str, key: &str) -> Option<&StoredObject> {
        self.buckets.get(bucket)?.objects.get(key)
    }

    /// The total size of the objects in `bucket`.
    pub fn used_bytes(&self, bucket: &str) -> u64 {
        self.buckets.get(bucket).map_or(0, |b| b.used_bytes)
    }

    /// Answers one Storage request at simulated time `now`.
    pub fn handle(
        &mut self,
        now: Time,
        request: StorageRequest,
    ) -> Result<StorageResponse, EffectError> {
        request.check()?;
        Ok(match request {
            StorageRequest::GetObject(r) => {
                StorageResponse::GetObject(match self.object(&r.bucket, &r.key) {
                    Some(object) => ObjectLookup::Found(object.clone().into()),
                    None => ObjectLookup::NotFound {
                        bucket: r.bucket,
                        key: r.key,
                    },
                })
            }
            StorageRequest::PutObject(r) => {
                // Field by field, so that this reads the same whether the variant
                // boxes its request or not.
                let request = PutObject {
                    bucket: r.bucket,
                    key: r.key,
                    content: r.content,
                    metadata: r.metadata,
                    content_type: r.content_type,
                };
                StorageResponse::PutObject(self.put(now, request)?)
            }
            StorageRequest::DeleteObject(r) => {
                let Some(bucket) = self.buckets.get_mut(&r.bucket) else {
                    return Ok(StorageResponse::DeleteObject(false));
                };
                if bucket.read_only {
                    return Err(service_error(
                        "Storage.DeleteObject",
                        "AccessDenied",
                        format!(
                            "bucket {} is read-only",
                            Excerpt::head(&r.bucket, Excerpt::DEFAULT_LIMIT)
                        ),
                    ));
                }
                let removed = bucket.objects.remove(&r.key);
                if let Some(object) = &removed {
                    bucket.used_bytes = bucket.used_bytes.saturating_sub(object.size);
                }
                StorageResponse::DeleteObject(removed.is_some())
            }
            StorageRequest::ListObjects(r) => {
                let limit = usize::try_from(r.max_keys.min(MAX_KEYS_LIMIT)).unwrap_or(0);
                let prefix = r.prefix.unwrap_or_default();
                // From the prefix, or just after `start_after` if that is further.
                let from = match r.start_after {
                    Some(after) if after >= prefix => Bound::Excluded(after),
                    _ => Bound::Included(prefix.clone()),
                };
                let keys = match self.buckets.get(&r.bucket) {
                    Some(bucket) => bucket
                        .objects
                        .range((from, Bound::Unbounded))
                        .map(|(key, _)| key)
                        .take_while(|key| key.starts_with(&prefix))
                        .take(limit)
                        .cloned()
                        .collect(),
                    None => Vec::new(),
                };
                StorageResponse::ListObjects(keys)
            }
        })
    }

    fn put(&mut self, now: Time, request: PutObject) -> Result<PutOutcome, EffectError> {
        const EFFECT: &str = <PutObject as Effect<Std>>::NAME;
        if !self.create_on_put && !self.buckets.contains_key(&request.bucket) {
            return Err(service_error(
                EFFECT,
                "NoSuchBucket",
                format!(
                    "bucket {} does not exist",
                    Excerpt::head(&request.bucket, Excerpt::DEFAULT_LIMIT)
                ),
            ));
        }
        let clock = wall_time(self.wall_epoch, now);
        let bucket = self.bucket_entry(&request.bucket);
        if bucket.read_only {
            return Ok(PutOutcome::Failed {
                reason: PutFailureReason::PermissionDenied,
            });
        }
        if bucket.locked.contains(&request.key) {
            return Ok(PutOutcome::Failed {
                reason: PutFailureReason::InvalidObjectState,
            });
        }
        let size = u64::try_from(request.content.len()).unwrap_or(u64::MAX);
        let replaced = bucket.objects.get(&request.key).map_or(0, |o| o.size);
        let used_after = bucket
            .used_bytes
            .saturating_sub(replaced)
            .saturating_add(size);
        if bucket.quota_bytes.is_some_and(|quota| used_after > quota) {
            return Ok(PutOutcome::Failed {
                reason: PutFailureReason::QuotaExceeded,
            });
        }
        let last_modified = match bucket.objects.get(&request.key) {
            Some(replaced) => later_than(clock, replaced.last_modified),
            None => clock,
        };
        let version = bucket.versions.entry(request.key.clone()).or_insert(0);
        *version += 1;
        let version_id = version.to_string();
        bucket.used_bytes = used_after;
        let object = StoredObject {
            key: request.key.clone(),
            bucket: request.bucket,
            content: request.content,
            last_modified,
            metadata: request.metadata,
            content_type: request.content_type,
            size,
            version_id: Some(version_id.clone()),
        };
        bucket.objects.insert(request.key.clone(), object);
        Ok(PutOutcome::Stored {
            key: request.key,
            version_id: Some(version_id),
        })
    }

    fn bucket_entry(&mut self, bucket: &str) -> &mut Bucket {
        self.buckets.entry(bucket.to_owned()).or_default()
    }
}

/// `clock`, or a microsecond after `previous` if the clock is not past it: an
/// overwrite is always later than what it replaced.
fn later_than(clock: Timestamp, previous: Timestamp) -> Timestamp {
    clock.max(Timestamp::from_unix_micros(
        previous.unix_micros().saturating_add(1),
    ))
}

fn service_error(effect: &'static str, code: &str, message: impl Into<String>) -> EffectError {
    EffectError::new(
        effect,
        ErrorKind::Service {
            code: Some(code.to_owned()),
        },
        message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::{DeleteObject, GetObject, ListObjects};

    fn put_request(bucket: &str, key: &str, content: &[u8]) -> PutObject {
        PutObject {
            bucket: bucket.into(),
            key: key.into(),
            content: content.to_vec(),
            metadata: BTreeMap::new(),
            content_type: None,
        }
    }

    fn put(storage: &mut FakeStorage, bucket: &str, key: &str, content: &[u8]) -> PutOutcome {
        match storage.handle(
            Time::ZERO,
            StorageRequest::PutObject(put_request(bucket, key, content).into()),
        ) {
            Ok(StorageResponse::PutObject(outcome)) => outcome,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn list(
        storage: &mut FakeStorage,
        bucket: &str,
        prefix: Option<&str>,
        max_keys: u32,
    ) -> Vec<String> {
        let request = ListObjects {
            bucket: bucket.into(),
            prefix: prefix.map(Into::into),
            max_keys,
            start_after: None,
        };
        match storage.handle(Time::ZERO, StorageRequest::ListObjects(request)) {
            Ok(StorageResponse::ListObjects(keys)) => keys,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn get(storage: &mut FakeStorage, bucket: &str, key: &str) -> ObjectLookup {
        match storage.handle(
            Time::ZERO,
            StorageRequest::GetObject(GetObject {
                bucket: bucket.into(),
                key: key.into(),
            }),
        ) {
            Ok(StorageResponse::GetObject(lookup)) => lookup,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn stored(key: &str, version: &str) -> PutOutcome {
        PutOutcome::Stored {
            key: key.into(),
            version_id: Some(version.into()),
        }
    }

    #[test]
    fn storage_put_then_get_returns_content_metadata_size_and_time() {
        let mut storage = FakeStorage::new();
        let mut request = put_request("docs", "a.txt", b"hello");
        request.metadata.insert("owner".into(), "ada".into());
        request.content_type = Some("text/plain".into());
        let outcome = storage
            .handle(
                Time::from_secs(60),
                StorageRequest::PutObject(request.into()),
            )
            .expect("stored");
        assert_eq!(outcome, StorageResponse::PutObject(stored("a.txt", "1")));
        let ObjectLookup::Found(object) = get(&mut storage, "docs", "a.txt") else {
            panic!("expected the object")
        };
        assert_eq!(object.content, b"hello");
        assert_eq!(object.size, 5);
        assert_eq!(object.bucket, "docs");
        assert_eq!(object.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            object.metadata.get("owner").map(String::as_str),
            Some("ada")
        );
        assert_eq!(
            object.last_modified.to_string(),
            "2026-01-01T00:01:00.000000Z"
        );
        assert_eq!(object.version_id.as_deref(), Some("1"));
    }

    #[test]
    fn storage_missing_bucket_or_key_reads_as_not_found() {
        let mut storage = FakeStorage::new();
        assert_eq!(
            get(&mut storage, "nope", "k"),
            ObjectLookup::NotFound {
                bucket: "nope".into(),
                key: "k".into()
            }
        );
        put(&mut storage, "b", "k", b"x");
        assert_eq!(
            get(&mut storage, "b", "other"),
            ObjectLookup::NotFound {
                bucket: "b".into(),
                key: "other".into()
            }
        );
        assert_eq!(list(&mut storage, "nope", None, 10), Vec::<String>::new());
    }

    #[test]
    fn storage_version_ids_increment_per_key_and_survive_deletes() {
        let mut storage = FakeStorage::new();
        assert_eq!(put(&mut storage, "b", "k", b"1"), stored("k", "1"));
        assert_eq!(put(&mut storage, "b", "k", b"2"), stored("k", "2"));
        assert_eq!(put(&mut storage, "b", "other", b"1"), stored("other", "1"));
        let delete = StorageRequest::DeleteObject(DeleteObject {
            bucket: "b".into(),
            key: "k".into(),
        });
        assert_eq!(
            storage.handle(Time::ZERO, delete.clone()),
            Ok(StorageResponse::DeleteObject(true))
        );
        assert_eq!(
            storage.handle(Time::ZERO, delete),
            Ok(StorageResponse::DeleteObject(false))
        );
        assert_eq!(put(&mut storage, "b", "k", b"3"), stored("k", "3"));
    }

    #[test]
    fn storage_lists_keys_sorted_with_prefix_and_max_keys() {
        let mut storage = FakeStorage::new();
        for key in ["logs/b", "img/x", "logs/a", "logs/c", "logsz", "log"] {
            put(&mut storage, "b", key, b"x");
        }
        assert_eq!(
            list(&mut storage, "b", None, 1000),
            ["img/x", "log", "logs/a", "logs/b", "logs/c", "logsz"]
        );
        assert_eq!(
            list(&mut storage, "b", Some("logs/"), 1000),
            ["logs/a", "logs/b", "logs/c"]
        );
        assert_eq!(
            list(&mut storage, "b", Some("logs/"), 2),
            ["logs/a", "logs/b"]
        );
        assert_eq!(
            list(&mut storage, "b", Some("logs/"), 0),
            Vec::<String>::new()
        );
        assert_eq!(
            list(&mut storage, "b", Some("zzz"), 10),
            Vec::<String>::new()
        );
        assert_eq!(list(&mut storage, "b", Some(""), 1), ["img/x"]);
    }

    #[test]
    fn storage_listing_never_answers_more_than_a_thousand_keys() {
        let mut storage = FakeStorage::new();
        for i in 0..1001 {
            put(&mut storage, "b", &format!("k{i:04}"), b"");
        }
        assert_eq!(list(&mut storage, "b", None, u32::MAX).len(), 1000);
    }

    #[test]
    fn storage_quota_refuses_writes_that_would_overflow_it() {
        let mut storage = FakeStorage::new();
        storage.set_quota("b", Some(10));
        assert_eq!(put(&mut storage, "b", "a", b"123456"), stored("a", "1"));
        assert_eq!(
            put(&mut storage, "b", "c", b"12345"),
            PutOutcome::Failed {
                reason: PutFailureReason::QuotaExceeded
            }
        );
        // Replacing an object counts only the difference.
        assert_eq!(put(&mut storage, "b", "a", b"1234567890"), stored("a", "2"));
        assert_eq!(storage.used_bytes("b"), 10);
        assert_eq!(
            get(&mut storage, "b", "c"),
            ObjectLookup::NotFound {
                bucket: "b".into(),
                key: "c".into()
            }
        );
        storage.set_quota("b", None);
        assert_eq!(put(&mut storage, "b", "c", b"12345"), stored("c", "1"));
    }

    #[test]
    fn storage_read_only_bucket_denies_writes_and_deletes() {
        let mut storage = FakeStorage::new();
        put(&mut storage, "b", "k", b"x");
        storage.set_read_only("b", true);
        assert_eq!(
            put(&mut storage, "b", "k", b"y"),
            PutOutcome::Failed {
                reason: PutFailureReason::PermissionDenied
            }
        );
        let delete = StorageRequest::DeleteObject(DeleteObject {
            bucket: "b".into(),
            key: "k".into(),
        });
        let err = storage.handle(Time::ZERO, delete).unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::Service {
                code: Some("AccessDenied".into())
            }
        );
        assert!(!err.retryable);
        assert_eq!(
            storage.object("b", "k").map(|o| o.content.clone()),
            Some(b"x".to_vec())
        );
    }

    #[test]
    fn storage_locked_key_refuses_writes_with_invalid_object_state() {
        let mut storage = FakeStorage::new();
        storage.set_locked("b", "k", true);
        assert_eq!(
            put(&mut storage, "b", "k", b"x"),
            PutOutcome::Failed {
                reason: PutFailureReason::InvalidObjectState
            }
        );
        assert_eq!(put(&mut storage, "b", "other", b"x"), stored("other", "1"));
        storage.set_locked("b", "k", false);
        assert_eq!(put(&mut storage, "b", "k", b"x"), stored("k", "1"));
    }

    #[test]
    fn storage_with_fixed_buckets_refuses_writes_to_unknown_buckets() {
        let mut storage = FakeStorage::with_buckets(["known"]);
        assert_eq!(put(&mut storage, "known", "k", b"x"), stored("k", "1"));
        let err = storage
            .handle(
                Time::ZERO,
                StorageRequest::PutObject(put_request("unknown", "k", b"x").into()),
            )
            .unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::Service {
                code: Some("NoSuchBucket".into())
            }
        );
        assert!(!err.retryable);
        assert_eq!(
            get(&mut storage, "unknown", "k"),
            ObjectLookup::NotFound {
                bucket: "unknown".into(),
                key: "k".into()
            }
        );
    }

    #[test]
    fn storage_refuses_an_overlong_bucket_name_without_quoting_it() {
        let mut storage = FakeStorage::with_buckets(["known"]);
        let name = "b".repeat(1 << 20);
        let err = storage
            .handle(
                Time::ZERO,
                StorageRequest::PutObject(put_request(&name, "k", b"x").into()),
            )
            .unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::Service {
                code: Some("InvalidBucketName".into())
            }
        );
        assert!(err.message.len() < 200, "{}", err.message);
    }

    #[test]
    fn storage_refuses_nul_in_names_and_oversized_objects_and_stores_nothing() {
        let mut storage = FakeStorage::new();
        let mut with_nul_metadata = put_request("b", "k", b"x");
        with_nul_metadata.metadata.insert("a".into(), "x\0y".into());
        for (request, code) in [
            (put_request("b", "k\0", b""), "InvalidArgument"),
            (with_nul_metadata, "InvalidArgument"),
            (
                put_request("b", "k", &vec![0; crate::effect::MAX_OBJECT_BYTES + 1]),
                "EntityTooLarge",
            ),
        ] {
            let err = storage
                .handle(Time::ZERO, StorageRequest::PutObject(request.into()))
                .unwrap_err();
            assert_eq!(
                err.kind,
                ErrorKind::Service {
                    code: Some(code.into())
                }
            );
            assert!(!err.retryable);
        }
        assert_eq!(storage.objects("b").count(), 0);
        let list = StorageRequest::ListObjects(ListObjects {
            bucket: "b".into(),
            prefix: Some("\0".into()),
            max_keys: 1,
            start_after: None,
        });
        assert!(storage.handle(Time::ZERO, list).is_err());
    }

    #[test]
    fn storage_overwrite_in_the_same_instant_is_a_microsecond_later() {
        let mut storage = FakeStorage::new();
        put(&mut storage, "b", "k", b"1");
        let first = storage.object("b", "k").map(|o| o.last_modified);
        put(&mut storage, "b", "k", b"2");
        let second = storage.object("b", "k").map(|o| o.last_modified);
        assert_eq!(
            second.map(Timestamp::unix_micros),
            first.map(|t| t.unix_micros() + 1)
        );
    }

    #[test]
    fn storage_refuses_empty_and_overlong_keys() {
        let mut storage = FakeStorage::new();
        for (bucket, key, code) in [
            ("", "k", "InvalidArgument"),
            ("b", "", "InvalidArgument"),
            ("b", &"x".repeat(1025), "KeyTooLongError"),
        ] {
            let err = storage
                .handle(
                    Time::ZERO,
                    StorageRequest::PutObject(put_request(bucket, key, b"").into()),
                )
                .unwrap_err();
            assert_eq!(
                err.kind,
                ErrorKind::Service {
                    code: Some(code.into())
                }
            );
        }
        assert_eq!(
            put(&mut storage, "b", &"x".repeat(1024), b""),
            stored(&"x".repeat(1024), "1")
        );
    }
}
