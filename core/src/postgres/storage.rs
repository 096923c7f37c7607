//! The Storage family on PostgreSQL, sans IO: each [`StorageRequest`] becomes one
//! statement with binary parameters ([`StoragePlan`]), and that statement's result
//! becomes the [`StorageResponse`] the in-memory `FakeStorage` would give.
//!
//! # Tables (migration 3 of [`MIGRATIONS`](super::database::MIGRATIONS))
//! ```sql
//! effectful_objects (bucket text COLLATE "C", key text COLLATE "C", content bytea,
//!                    metadata jsonb, content_type text, size bigint,
//!                    last_modified timestamptz, version bigint,
//!                    PRIMARY KEY (bucket, key))
//! effectful_object_versions (bucket text COLLATE "C", key text COLLATE "C",
//!                            version bigint, PRIMARY KEY (bucket, key))
//! ```
//! Keys compare in the `"C"` collation, byte by byte, which for UTF-8 is the code
//! point order Rust's `String` sorts by: listings come in the fake's order whatever
//! the database's locale.
//!
//! # Semantics (the same as the fake's)
//! - Requests are checked by [`StorageRequest::check`] before any SQL: a refused
//!   write reaches no server and stores nothing.
//! - Buckets need no creation: a write makes the bucket exist.
//! - Each write of a key takes the next version of that key, `"1"`, `"2"`, ...;
//!   the count lives in `effectful_object_versions`, so it goes on after a delete.
//!   Concurrent writes of one key queue on that row's lock: versions never repeat.
//! - `last_modified` is the driver's wall clock when the write was performed (an
//!   input of [`plan`], as time is everywhere in the core), or a microsecond after
//!   the replaced object's if that is not earlier.
//! - `ListObjects` reads keys in `[prefix, upper)` and after `start_after` (the
//!   next page: after the last key of the page before), `upper` the least string
//!   above every key with the prefix ([`prefix_upper_bound`]), so the primary key's
//!   index bounds the scan on both sides; at most [`MAX_KEYS_LIMIT`] keys.
//!
//! ```
//! use effectful::effect::{GetObject, StorageRequest};
//! use effectful::postgres::storage;
//! use effectful::Timestamp;
//!
//! let get = StorageRequest::GetObject(GetObject { bucket: "docs".into(), key: "a.txt".into() });
//! let plan = storage::plan(&get, Timestamp::from_unix_secs(0)).expect("a valid request");
//! assert_eq!(plan.effect(), "Storage.GetObject");
//! assert!(plan.sql().contains("effectful_objects"));
//! ```

use std::collections::BTreeMap;

use super::database::{one_result, protocol};
use super::error::{PgError, TypeError};
use super::row::{ResultSet, Row};
use super::types::Type;
use super::value::Value;
use crate::effect::{ObjectLookup, PutOutcome, StorageRequest, StorageResponse, StoredObject};
use crate::{EffectError, Timestamp};

/// The most keys one `ListObjects` answers, whatever `max_keys` asks (S3's limit,
/// and the fake's).
pub const MAX_KEYS_LIMIT: u32 = 1000;

/// Migration 3's statements: the Storage family's tables.
pub const MIGRATION_SQL: &str = "CREATE TABLE IF NOT EXISTS effectful_objects (
    bucket text COLLATE \"C\" NOT NULL,
    key text COLLATE \"C\" NOT NULL,
    content bytea NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    content_type text,
    size bigint NOT NULL,
    last_modified timestamptz NOT NULL,
    version bigint NOT NULL,
    PRIMARY KEY (bucket, key)
);
CREATE TABLE IF NOT EXISTS effectful_object_versions (
    bucket text COLLATE \"C\" NOT NULL,
    key text COLLATE \"C\" NOT NULL,
    version bigint NOT NULL,
    PRIMARY KEY (bucket, key)
);";

const GET: &str = "SELECT content, \
    ARRAY(SELECT e.k FROM jsonb_each_text(metadata) AS e(k, v) ORDER BY e.k), \
    ARRAY(SELECT e.v FROM jsonb_each_text(metadata) AS e(k, v) ORDER BY e.k), \
    content_type, size, last_modified, version \
    FROM effectful_objects WHERE bucket = $1 AND key = $2";

/// The next version of the key (its row locked until commit, so concurrent writes
/// of one key queue here), then the object written under it.
const PUT: &str = "WITH v AS (INSERT INTO effectful_object_versions AS v (bucket, key, version) \
    VALUES ($1, $2, 1) ON CONFLICT (bucket, key) DO UPDATE SET version = v.version + 1 \
    RETURNING version) \
    INSERT INTO effectful_objects AS o \
    (bucket, key, content, metadata, content_type, size, last_modified, version) \
    SELECT $1, $2, $3, jsonb_object($4::text[], $5::text[]), $6, octet_length($3), $7, v.version \
    FROM v \
    ON CONFLICT (bucket, key) DO UPDATE SET content = EXCLUDED.content, \
    metadata = EXCLUDED.metadata, content_type = EXCLUDED.content_type, size = EXCLUDED.size, \
    last_modified = GREATEST(EXCLUDED.last_modified, o.last_modified + interval '1 microsecond'), \
    version = EXCLUDED.version \
    RETURNING version";

const DELETE: &str = "DELETE FROM effectful_objects WHERE bucket = $1 AND key = $2";

/// Keys from the prefix `$2` and after `$4` (`start_after`, or the empty string,
/// which no key is: both lower bounds are on the index, which scans from the
/// tighter).
const LIST: &str = "SELECT key FROM effectful_objects \
    WHERE bucket = $1 AND key >= $2 AND key > $4 ORDER BY key LIMIT $3";

/// [`LIST`] below the prefix's upper bound `$5`.
const LIST_BELOW: &str = "SELECT key FROM effectful_objects \
    WHERE bucket = $1 AND key >= $2 AND key > $4 AND key < $5 ORDER BY key LIMIT $3";

/// How to read a statement's result back into a response, with what the request
/// said that the answer needs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Decode {
    /// The object's row, or none.
    Object {
        /// The bucket asked for.
        bucket: String,
        /// The key asked for.
        key: String,
    },
    /// The version the write took.
    Stored {
        /// The key written.
        key: String,
    },
    /// The count of deleted rows.
    Deleted,
    /// Keys, in order.
    Keys,
}

/// One request as a statement: SQL, binary parameters, and how to read the answer.
#[derive(Clone, Debug)]
pub struct StoragePlan {
    effect: &'static str,
    sql: &'static str,
    params: Vec<Value>,
    decode: Decode,
}

/// The statement that performs `request` at wall-clock time `now` (a write's
/// `last_modified`), or the error [`StorageRequest::check`] refuses it with.
pub fn plan(request: &StorageRequest, now: Timestamp) -> Result<StoragePlan, EffectError> {
    request.check()?;
    let effect = request.name();
    let (sql, params, decode) = match request {
        StorageRequest::GetObject(r) => (
            GET,
            vec![Value::Text(r.bucket.clone()), Value::Text(r.key.clone())],
            Decode::Object {
                bucket: r.bucket.clone(),
                key: r.key.clone(),
            },
        ),
        StorageRequest::PutObject(r) => {
            let text_array = |items: Vec<String>| Value::Array {
                element: Type::TEXT,
                items: items.into_iter().map(Value::Text).collect(),
            };
            (
                PUT,
                vec![
                    Value::Text(r.bucket.clone()),
                    Value::Text(r.key.clone()),
                    Value::Bytea(r.content.clone()),
                    text_array(r.metadata.keys().cloned().collect()),
                    text_array(r.metadata.values().cloned().collect()),
                    r.content_type.clone().map_or(Value::Null, Value::Text),
                    Value::Timestamptz(now),
                ],
                Decode::Stored { key: r.key.clone() },
            )
        }
        StorageRequest::DeleteObject(r) => (
            DELETE,
            vec![Value::Text(r.bucket.clone()), Value::Text(r.key.clone())],
            Decode::Deleted,
        ),
        StorageRequest::ListObjects(r) => {
            let prefix = r.prefix.clone().unwrap_or_default();
            let upper = prefix_upper_bound(&prefix);
            let mut params = vec![
                Value::Text(r.bucket.clone()),
                Value::Text(prefix),
                Value::Int8(i64::from(r.max_keys.min(MAX_KEYS_LIMIT))),
                Value::Text(r.start_after.clone().unwrap_or_default()),
            ];
            let sql = match upper {
                Some(upper) => {
                    params.push(Value::Text(upper));
                    LIST_BELOW
                }
                None => LIST,
            };
            (sql, params, Decode::Keys)
        }
    };
    Ok(StoragePlan {
        effect,
        sql,
        params,
        decode,
    })
}

/// The least string above every string that starts with `prefix`, in code point
/// order (`None` when there is none: an empty prefix, or one of `char::MAX` only).
///
/// The last character that is not `char::MAX` goes up by one and what follows it is
/// dropped: a string with the prefix shares everything before that character and
/// has the character itself there, so it is below; a string at or above the prefix
/// and below the bound must have every dropped `char::MAX` too, so it has the prefix.
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match u32::from(last) + 1 {
            // After the surrogates' gap, which no `char` holds.
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

impl StoragePlan {
    /// The effect's name (`Storage.GetObject`), for errors.
    pub fn effect(&self) -> &'static str {
        self.effect
    }

    /// The SQL, run with the extended protocol (prepared once per connection).
    pub fn sql(&self) -> &'static str {
        self.sql
    }

    /// The parameters, bound in binary.
    pub fn params(&self) -> &[Value] {
        &self.params
    }

    /// How the answer is read.
    pub fn decode(&self) -> &Decode {
        &self.decode
    }

    /// The response from the statement's outcome (its result sets, one for an
    /// extended query) or the error that ended it.
    pub fn finish(
        self,
        outcome: Result<Vec<ResultSet>, PgError>,
    ) -> Result<StorageResponse, EffectError> {
        let effect = self.effect;
        let set = match outcome {
            Ok(sets) => one_result(effect, sets)?,
            Err(e) => return Err(e.to_effect_error(effect)),
        };
        let bad = |e: TypeError| protocol(effect, format!("an unexpected row: {e}"));
        Ok(match self.decode {
            Decode::Object { bucket, key } => StorageResponse::GetObject(match set.rows.first() {
                Some(row) => ObjectLookup::Found(Box::new(object(row, bucket, key).map_err(bad)?)),
                None => ObjectLookup::NotFound { bucket, key },
            }),
            Decode::Stored { key } => {
                let row = set
                    .rows
                    .first()
                    .ok_or_else(|| protocol(effect, "the write returned no row".into()))?;
                let version: i64 = row.get(0).map_err(bad)?;
                StorageResponse::PutObject(PutOutcome::Stored {
                    key,
                    version_id: Some(version.to_string()),
                })
            }
            Decode::Deleted => {
                let deleted = set.rows_affected().ok_or_else(|| {
                    protocol(effect, format!("an unexpected command tag {:?}", set.tag))
                })?;
                StorageResponse::DeleteObject(deleted > 0)
            }
            Decode::Keys => StorageResponse::ListObjects(
                set.rows
                    .iter()
                    .map(|row| row.get(0))
                    .collect::<Result<_, _>>()
                    .map_err(bad)?,
            ),
        })
    }
}

fn object(row: &Row, bucket: String, key: String) -> Result<StoredObject, TypeError> {
    let names: Vec<String> = row.get(1)?;
    let values: Vec<String> = row.get(2)?;
    let size: i64 = row.get(4)?;
    let version: i64 = row.get(6)?;
    Ok(StoredObject {
        content: row.get(0)?,
        metadata: names.into_iter().zip(values).collect::<BTreeMap<_, _>>(),
        content_type: row.get(3)?,
        size: u64::try_from(size).unwrap_or_default(),
        last_modified: row.get(5)?,
        version_id: Some(version.to_string()),
        bucket,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::effect::{ListObjects, PutObject};

    fn list(prefix: Option<&str>, max_keys: u32) -> StoragePlan {
        let request = StorageRequest::ListObjects(ListObjects {
            bucket: "b".into(),
            prefix: prefix.map(Into::into),
            max_keys,
            start_after: None,
        });
        plan(&request, Timestamp::from_unix_secs(0)).expect("a valid listing")
    }

    #[test]
    fn the_upper_bound_of_a_prefix_is_its_last_raisable_character_raised() {
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("logs/").as_deref(), Some("logs0"));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{10FFFF}\u{10FFFF}"), None);
        assert_eq!(
            prefix_upper_bound("x\u{D7FF}").as_deref(),
            Some("x\u{E000}")
        );
        assert_eq!(prefix_upper_bound("é").as_deref(), Some("ê"));
    }

    #[test]
    fn a_listing_is_bounded_by_the_prefix_and_clamped_to_a_thousand_keys() {
        let bounded = list(Some("logs/"), u32::MAX);
        assert_eq!(bounded.sql(), LIST_BELOW);
        assert_eq!(bounded.params()[2], Value::Int8(1000));
        assert_eq!(bounded.params()[3], Value::Text(String::new()));
        assert_eq!(bounded.params()[4], Value::Text("logs0".into()));
        let everything = list(None, 7);
        assert_eq!(everything.sql(), LIST);
        assert_eq!(everything.params().len(), 4);
    }

    #[test]
    fn a_refused_write_has_no_plan() {
        let request = StorageRequest::PutObject(Box::new(PutObject {
            bucket: "b".into(),
            key: String::new(),
            content: Vec::new(),
            metadata: BTreeMap::new(),
            content_type: None,
        }));
        let err = plan(&request, Timestamp::from_unix_secs(0)).unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::Service {
                code: Some("InvalidArgument".into())
            }
        );
    }
}
