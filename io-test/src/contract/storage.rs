//! The Storage contract: the same cases on the fake and on PostgreSQL.

use std::collections::BTreeMap;
use std::time::Duration;

use effectful::effect::{
    DeleteObject, GetCurrentTime, GetObject, ListObjects, MAX_KEY_BYTES, MAX_OBJECT_BYTES,
    ObjectLookup, PutObject, PutOutcome, StoredObject,
};
use effectful::{EffectError, ErrorKind, Fx, ProgramError, Timestamp};

use super::ContractProgram;

/// A driver under test for [`check_storage`].
pub trait StorageDriver {
    /// Runs `program` against fresh, empty storage (the Storage family, with System
    /// for the wall clock) and returns its result. `case` names the case (for a
    /// schema name, a log line).
    fn run(&mut self, case: &str, program: ContractProgram) -> Result<Vec<String>, ProgramError>;
}

/// How far `last_modified` may be from the program's own readings of the wall clock
/// around the write (the drivers read the same clock by different roads).
const CLOCK_SLACK: Duration = Duration::from_secs(2);

/// An error as the contract sees it: code, retryable, effect (not the message).
fn refusal(e: &EffectError) -> String {
    let kind = match &e.kind {
        ErrorKind::Service { code } => code.as_deref().unwrap_or("-").to_owned(),
        other => other.to_string(),
    };
    format!("refused {kind} retryable={} by {}", e.retryable, e.effect)
}

fn boxed<F, Fut>(f: F) -> ContractProgram
where
    F: FnOnce(Fx) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<String>, String>> + 'static,
{
    Box::new(move |fx: Fx| {
        Box::pin(async move { f(fx).await.unwrap_or_else(|e| vec![format!("failed: {e}")]) })
    })
}

fn request(bucket: &str, key: &str, content: &[u8]) -> PutObject {
    PutObject {
        bucket: bucket.into(),
        key: key.into(),
        content: content.to_vec(),
        metadata: BTreeMap::new(),
        content_type: None,
    }
}

/// A write as the contract sees it: the version it took, or the refusal.
async fn put(fx: &Fx, request: PutObject) -> String {
    match fx.perform(request).await {
        Ok(PutOutcome::Stored { key, version_id }) => {
            format!("stored {key} v{}", version_id.as_deref().unwrap_or("-"))
        }
        Ok(PutOutcome::Failed { reason }) => format!("put failed: {reason:?}"),
        Err(e) => refusal(&e),
    }
}

async fn get(fx: &Fx, bucket: &str, key: &str) -> Result<Option<StoredObject>, String> {
    let lookup = fx
        .perform(GetObject {
            bucket: bucket.into(),
            key: key.into(),
        })
        .await
        .map_err(|e| refusal(&e))?;
    Ok(match lookup {
        ObjectLookup::Found(object) => Some(*object),
        ObjectLookup::NotFound { .. } => None,
    })
}

/// A read as the contract sees it: what came back, never the time.
async fn seen(fx: &Fx, bucket: &str, key: &str) -> String {
    match get(fx, bucket, key).await {
        Ok(Some(o)) => format!(
            "{}/{}: {:?} size {} type {:?} metadata {:?} v{}",
            o.bucket,
            o.key,
            String::from_utf8_lossy(&o.content),
            o.size,
            o.content_type,
            o.metadata,
            o.version_id.as_deref().unwrap_or("-")
        ),
        Ok(None) => format!("{bucket}/{key}: not found"),
        Err(refused) => refused,
    }
}

async fn delete(fx: &Fx, bucket: &str, key: &str) -> String {
    match fx
        .perform(DeleteObject {
            bucket: bucket.into(),
            key: key.into(),
        })
        .await
    {
        Ok(existed) => format!("delete {bucket}/{key}: existed {existed}"),
        Err(e) => refusal(&e),
    }
}

async fn list(fx: &Fx, bucket: &str, prefix: Option<&str>, max_keys: u32) -> String {
    match fx
        .perform(ListObjects {
            bucket: bucket.into(),
            prefix: prefix.map(Into::into),
            max_keys,
            start_after: None,
        })
        .await
    {
        Ok(keys) => format!("list {prefix:?} max {max_keys}: {keys:?}"),
        Err(e) => refusal(&e),
    }
}

async fn wall_clock(fx: &Fx) -> Result<Timestamp, String> {
    fx.perform(GetCurrentTime {}).await.map_err(|e| refusal(&e))
}

/// Whether `t` is within [`CLOCK_SLACK`] of `[before, after]`.
fn between(before: Timestamp, t: Timestamp, after: Timestamp) -> bool {
    let slack = i64::try_from(CLOCK_SLACK.as_micros()).unwrap_or(i64::MAX);
    before.unix_micros() - slack <= t.unix_micros()
        && t.unix_micros() <= after.unix_micros() + slack
}

/// Put then get: content, metadata, content type, size, version and time come back.
fn round_trip() -> ContractProgram {
    boxed(|fx| async move {
        let mut seen_ = Vec::new();
        let mut full = request("docs", "a.txt", "héllo ✓".as_bytes());
        full.metadata.insert("owner".into(), "ada".into());
        full.metadata.insert("Ünïcode key".into(), "välue ✓".into());
        full.metadata.insert("empty".into(), String::new());
        full.content_type = Some("text/plain; charset=utf-8".into());
        let before = wall_clock(&fx).await?;
        seen_.push(put(&fx, full).await);
        let after = wall_clock(&fx).await?;
        seen_.push(seen(&fx, "docs", "a.txt").await);
        let object = get(&fx, "docs", "a.txt")
            .await?
            .ok_or("the object is gone")?;
        seen_.push(format!(
            "last modified by the wall clock of the write: {}",
            between(before, object.last_modified, after)
        ));
        seen_.push(put(&fx, request("docs", "empty", b"")).await);
        seen_.push(seen(&fx, "docs", "empty").await);
        Ok(seen_)
    })
}

/// A missing key or bucket is a domain outcome, told apart from refusals.
fn missing() -> ContractProgram {
    boxed(|fx| async move {
        let mut seen_ = vec![put(&fx, request("b", "k", b"x")).await];
        seen_.push(seen(&fx, "b", "other").await);
        seen_.push(seen(&fx, "nobucket", "k").await);
        seen_.push(seen(&fx, "b", "").await);
        seen_.push(seen(&fx, "b", &"x".repeat(MAX_KEY_BYTES + 1)).await);
        seen_.push(seen(&fx, "b", "k\0").await);
        seen_.push(list(&fx, "nobucket", None, 10).await);
        seen_.push(delete(&fx, "nobucket", "k").await);
        seen_.push(delete(&fx, "b", "other").await);
        Ok(seen_)
    })
}

/// An overwrite replaces everything, takes the next version and a later time; a
/// delete answers whether the object existed, and versions go on after it.
fn overwrite_and_delete() -> ContractProgram {
    boxed(|fx| async move {
        let mut first = request("b", "k", b"first");
        first.metadata.insert("gone".into(), "soon".into());
        first.content_type = Some("text/plain".into());
        let mut seen_ = vec![put(&fx, first).await];
        let t1 = get(&fx, "b", "k").await?.ok_or("missing")?.last_modified;
        let mut second = request("b", "k", b"second, longer");
        second.metadata.insert("kept".into(), "yes".into());
        seen_.push(put(&fx, second).await);
        seen_.push(seen(&fx, "b", "k").await);
        let t2 = get(&fx, "b", "k").await?.ok_or("missing")?.last_modified;
        seen_.push(put(&fx, request("b", "k", b"third")).await);
        let t3 = get(&fx, "b", "k").await?.ok_or("missing")?.last_modified;
        seen_.push(format!(
            "each overwrite is later than what it replaced: {}",
            t1 < t2 && t2 < t3
        ));
        seen_.push(delete(&fx, "b", "k").await);
        seen_.push(delete(&fx, "b", "k").await);
        seen_.push(seen(&fx, "b", "k").await);
        seen_.push(list(&fx, "b", None, 10).await);
        seen_.push(put(&fx, request("b", "k", b"again")).await);
        seen_.push(seen(&fx, "b", "k").await);
        Ok(seen_)
    })
}

/// Keys in code point order (whatever the database's locale), by prefix, at most
/// `max_keys` and never more than a thousand.
fn listing() -> ContractProgram {
    boxed(|fx| async move {
        let keys = [
            "logs/b",
            "img/x",
            "logs/a",
            "logs/c",
            "logsz",
            "log",
            "é",
            "z",
            "Z",
            "logs/\u{10FFFF}",
            "a%b",
            "ab",
            "a_b",
            "a\\b",
        ];
        for key in keys {
            put(&fx, request("b", key, b"x")).await;
        }
        let mut seen_ = vec![list(&fx, "b", None, 1000).await];
        for (prefix, max_keys) in [
            ("logs/", 1000),
            ("logs/", 2),
            ("logs/", 0),
            ("zzz", 10),
            ("", 1),
            ("a%", 10),
            ("a_", 10),
            ("a\\", 10),
            ("\u{10FFFF}", 10),
            ("logs/\u{10FFFF}", 10),
        ] {
            seen_.push(list(&fx, "b", Some(prefix), max_keys).await);
        }
        let many: Vec<PutObject> = (0..1001)
            .map(|i| request("many", &format!("k{i:04}"), b""))
            .collect();
        let stored = fx.perform_all(many).await;
        seen_.push(format!(
            "1001 stored: {}",
            stored
                .iter()
                .all(|s| matches!(s, Ok(PutOutcome::Stored { .. })))
        ));
        let all = fx
            .perform(ListObjects {
                bucket: "many".into(),
                prefix: None,
                max_keys: u32::MAX,
                start_after: None,
            })
            .await
            .map_err(|e| refusal(&e))?;
        seen_.push(format!(
            "max_keys {} answers {} keys, first {:?}, last {:?}",
            u32::MAX,
            all.len(),
            all.first(),
            all.last()
        ));
        Ok(seen_)
    })
}

/// Lists `prefix` of `bucket` page by page (`start_after` the last key of the page
/// before) until a page is not full: the keys, and each page's size.
async fn list_pages(
    fx: &Fx,
    bucket: &str,
    prefix: Option<&str>,
    max_keys: u32,
) -> Result<(Vec<String>, Vec<usize>), String> {
    let (mut keys, mut pages) = (Vec::new(), Vec::new());
    loop {
        let page = fx
            .perform(ListObjects {
                bucket: bucket.into(),
                prefix: prefix.map(Into::into),
                max_keys,
                start_after: keys.last().cloned(),
            })
            .await
            .map_err(|e| refusal(&e))?;
        pages.push(page.len());
        let full = page.len() == usize::try_from(max_keys.min(1000)).unwrap_or(0);
        keys.extend(page);
        if !full || pages.len() > 10 {
            return Ok((keys, pages));
        }
    }
}

/// More keys than one listing answers, listed in pages after the last key of the
/// page before: none lost or repeated, the prefix respected, `start_after` anywhere.
fn pages() -> ContractProgram {
    boxed(|fx| async move {
        let mut expected: Vec<String> = (0..2500).map(|i| format!("p/{i:05}")).collect();
        let others = ["p", "o/1", "q", "p.", "p0"];
        let writes: Vec<PutObject> = expected
            .iter()
            .map(String::as_str)
            .chain(others)
            .map(|key| request("pages", key, b""))
            .collect();
        let stored = fx.perform_all(writes).await;
        let mut seen_ = vec![format!(
            "2505 stored: {}",
            stored
                .iter()
                .all(|s| matches!(s, Ok(PutOutcome::Stored { .. })))
        )];
        for max_keys in [1000, 700, u32::MAX] {
            let (keys, pages) = list_pages(&fx, "pages", Some("p/"), max_keys).await?;
            seen_.push(format!(
                "max_keys {max_keys}: pages {pages:?}, every key once in order: {}",
                keys == expected
            ));
        }
        let (keys, pages) = list_pages(&fx, "pages", None, 1000).await?;
        expected.extend(others.iter().map(|k| k.to_string()));
        expected.sort();
        seen_.push(format!(
            "no prefix: pages {pages:?}, every key once in order: {}",
            keys == expected
        ));
        for after in ["a", "p/", "p/01234", "p/01234x", "p/02499", "p/~", "z", ""] {
            let page = fx
                .perform(ListObjects {
                    bucket: "pages".into(),
                    prefix: Some("p/".into()),
                    max_keys: 2,
                    start_after: Some(after.into()),
                })
                .await
                .map_err(|e| refusal(&e))?;
            seen_.push(format!("after {after:?}: {page:?}"));
        }
        match fx
            .perform(ListObjects {
                bucket: "pages".into(),
                prefix: None,
                max_keys: 1,
                start_after: Some("nul\0".into()),
            })
            .await
        {
            Ok(keys) => seen_.push(format!("{keys:?}")),
            Err(e) => seen_.push(refusal(&e)),
        }
        Ok(seen_)
    })
}

/// The same key in two buckets is two objects.
fn buckets() -> ContractProgram {
    boxed(|fx| async move {
        let mut seen_ = vec![
            put(&fx, request("one", "k", b"in one")).await,
            put(&fx, request("two", "k", b"in two")).await,
            put(&fx, request("two", "only-two", b"")).await,
        ];
        seen_.push(seen(&fx, "one", "k").await);
        seen_.push(seen(&fx, "two", "k").await);
        seen_.push(list(&fx, "one", None, 10).await);
        seen_.push(delete(&fx, "one", "k").await);
        seen_.push(seen(&fx, "two", "k").await);
        seen_.push(seen(&fx, "one", "only-two").await);
        seen_.push(seen(&fx, "One", "k").await);
        Ok(seen_)
    })
}

/// Content is bytes: every byte value, NULs included, comes back as written.
fn binary() -> ContractProgram {
    boxed(|fx| async move {
        let every_byte: Vec<u8> = (0..=255u8).rev().chain(0..=255).collect();
        let mut seen_ = vec![
            put(&fx, request("b", "bytes", &every_byte)).await,
            put(&fx, request("b", "nuls", b"\0\0\0")).await,
        ];
        for (key, content) in [("bytes", every_byte), ("nuls", b"\0\0\0".to_vec())] {
            let object = get(&fx, "b", key).await?.ok_or("missing")?;
            seen_.push(format!(
                "{key}: {} bytes, size {}, the same bytes: {}",
                object.content.len(),
                object.size,
                object.content == content
            ));
        }
        Ok(seen_)
    })
}

/// An object of exactly the limit is stored; one byte more is refused and nothing
/// is stored.
fn large() -> ContractProgram {
    boxed(|fx| async move {
        let big: Vec<u8> = (0..MAX_OBJECT_BYTES).map(|i| (i % 251) as u8).collect();
        let mut seen_ = vec![put(&fx, request("b", "at-limit", &big)).await];
        let object = get(&fx, "b", "at-limit").await?.ok_or("missing")?;
        seen_.push(format!(
            "at the limit: size {}, the same bytes: {}",
            object.size,
            object.content == big
        ));
        seen_.push(put(&fx, request("b", "over", &vec![7; MAX_OBJECT_BYTES + 1])).await);
        seen_.push(seen(&fx, "b", "over").await);
        seen_.push(list(&fx, "b", None, 10).await);
        Ok(seen_)
    })
}

/// Keys that are stored and read back as they are.
const NAMES: [&str; 8] = [
    "ünï/ç😀dé",
    "a%20b%",
    "a/b//c/",
    "/leading",
    "trailing ",
    "tab\tand\nnewline",
    "%00",
    "..",
];

/// Keys and names: any Unicode, percent signs, slashes, spaces; the length limits
/// and the refusals of empty names and NUL.
fn names() -> ContractProgram {
    boxed(|fx| async move {
        let mut seen_ = Vec::new();
        for key in NAMES {
            seen_.push(put(&fx, request("b", key, key.as_bytes())).await);
        }
        for key in NAMES {
            seen_.push(seen(&fx, "b", key).await);
        }
        seen_.push(list(&fx, "b", Some("a/"), 10).await);
        let longest = "k".repeat(MAX_KEY_BYTES);
        seen_.push(format!(
            "a key of {MAX_KEY_BYTES} bytes: {}",
            put(&fx, request("b", &longest, b"")).await == format!("stored {longest} v1")
        ));
        let mut nul_metadata = request("b", "m", b"");
        nul_metadata.metadata.insert("k".into(), "a\0b".into());
        let mut nul_type = request("b", "t", b"");
        nul_type.content_type = Some("text/\0".into());
        let mut big_metadata = request("b", "big", b"");
        big_metadata.metadata.insert("k".into(), "v".repeat(2048));
        for refused in [
            request("b", &"k".repeat(MAX_KEY_BYTES + 1), b""),
            request("b", "", b""),
            request("", "k", b""),
            request(&"b".repeat(64), "k", b""),
            request("b", "nul\0key", b""),
            request("b\0", "k", b""),
            nul_metadata,
            nul_type,
            big_metadata,
        ] {
            seen_.push(put(&fx, refused).await);
        }
        seen_.push(list(&fx, "b", Some("nul\0"), 10).await);
        seen_.push(delete(&fx, "b\0", "k").await);
        for key in ["m", "t", "big"] {
            seen_.push(seen(&fx, "b", key).await);
        }
        let bucket_of_63 = "b".repeat(63);
        seen_.push(format!(
            "a bucket name of 63 bytes: {}",
            put(&fx, request(&bucket_of_63, "k", b"")).await == "stored k v1"
        ));
        Ok(seen_)
    })
}

/// Every case: its name, its program, what it must observe.
pub fn storage_cases() -> Vec<(&'static str, ContractProgram, Vec<String>)> {
    let put_refused = |code: &str| format!("refused {code} retryable=false by Storage.PutObject");
    let cases: Vec<(&'static str, ContractProgram, Vec<String>)> = vec![
        (
            "round_trip",
            round_trip(),
            vec![
                "stored a.txt v1".into(),
                "docs/a.txt: \"héllo ✓\" size 10 type Some(\"text/plain; charset=utf-8\") \
                 metadata {\"empty\": \"\", \"owner\": \"ada\", \"Ünïcode key\": \"välue ✓\"} v1"
                    .into(),
                "last modified by the wall clock of the write: true".into(),
                "stored empty v1".into(),
                "docs/empty: \"\" size 0 type None metadata {} v1".into(),
            ],
        ),
        (
            "missing",
            missing(),
            vec![
                "stored k v1".into(),
                "b/other: not found".into(),
                "nobucket/k: not found".into(),
                "b/: not found".into(),
                format!("b/{}: not found", "x".repeat(MAX_KEY_BYTES + 1)),
                "refused InvalidArgument retryable=false by Storage.GetObject".into(),
                "list None max 10: []".into(),
                "delete nobucket/k: existed false".into(),
                "delete b/other: existed false".into(),
            ],
        ),
        (
            "overwrite_and_delete",
            overwrite_and_delete(),
            vec![
                "stored k v1".into(),
                "stored k v2".into(),
                "b/k: \"second, longer\" size 14 type None metadata {\"kept\": \"yes\"} v2".into(),
                "stored k v3".into(),
                "each overwrite is later than what it replaced: true".into(),
                "delete b/k: existed true".into(),
                "delete b/k: existed false".into(),
                "b/k: not found".into(),
                "list None max 10: []".into(),
                "stored k v4".into(),
                "b/k: \"again\" size 5 type None metadata {} v4".into(),
            ],
        ),
        (
            "listing",
            listing(),
            vec![
                "list None max 1000: [\"Z\", \"a%b\", \"a\\\\b\", \"a_b\", \"ab\", \"img/x\", \"log\", \
                 \"logs/a\", \"logs/b\", \"logs/c\", \"logs/\\u{10ffff}\", \"logsz\", \"z\", \"é\"]"
                    .into(),
                "list Some(\"logs/\") max 1000: [\"logs/a\", \"logs/b\", \"logs/c\", \"logs/\\u{10ffff}\"]"
                    .into(),
                "list Some(\"logs/\") max 2: [\"logs/a\", \"logs/b\"]".into(),
                "list Some(\"logs/\") max 0: []".into(),
                "list Some(\"zzz\") max 10: []".into(),
                "list Some(\"\") max 1: [\"Z\"]".into(),
                "list Some(\"a%\") max 10: [\"a%b\"]".into(),
                "list Some(\"a_\") max 10: [\"a_b\"]".into(),
                "list Some(\"a\\\\\") max 10: [\"a\\\\b\"]".into(),
                "list Some(\"\\u{10ffff}\") max 10: []".into(),
                "list Some(\"logs/\\u{10ffff}\") max 10: [\"logs/\\u{10ffff}\"]".into(),
                "1001 stored: true".into(),
                "max_keys 4294967295 answers 1000 keys, first Some(\"k0000\"), last Some(\"k0999\")"
                    .into(),
            ],
        ),
        (
            "pages",
            pages(),
            vec![
                "2505 stored: true".into(),
                "max_keys 1000: pages [1000, 1000, 500], every key once in order: true".into(),
                "max_keys 700: pages [700, 700, 700, 400], every key once in order: true".into(),
                "max_keys 4294967295: pages [1000, 1000, 500], every key once in order: true"
                    .into(),
                "no prefix: pages [1000, 1000, 505], every key once in order: true".into(),
                "after \"a\": [\"p/00000\", \"p/00001\"]".into(),
                "after \"p/\": [\"p/00000\", \"p/00001\"]".into(),
                "after \"p/01234\": [\"p/01235\", \"p/01236\"]".into(),
                "after \"p/01234x\": [\"p/01235\", \"p/01236\"]".into(),
                "after \"p/02499\": []".into(),
                "after \"p/~\": []".into(),
                "after \"z\": []".into(),
                "after \"\": [\"p/00000\", \"p/00001\"]".into(),
                "refused InvalidArgument retryable=false by Storage.ListObjects".into(),
            ],
        ),
        (
            "buckets",
            buckets(),
            vec![
                "stored k v1".into(),
                "stored k v1".into(),
                "stored only-two v1".into(),
                "one/k: \"in one\" size 6 type None metadata {} v1".into(),
                "two/k: \"in two\" size 6 type None metadata {} v1".into(),
                "list None max 10: [\"k\"]".into(),
                "delete one/k: existed true".into(),
                "two/k: \"in two\" size 6 type None metadata {} v1".into(),
                "one/only-two: not found".into(),
                "One/k: not found".into(),
            ],
        ),
        (
            "binary",
            binary(),
            vec![
                "stored bytes v1".into(),
                "stored nuls v1".into(),
                "bytes: 512 bytes, size 512, the same bytes: true".into(),
                "nuls: 3 bytes, size 3, the same bytes: true".into(),
            ],
        ),
        (
            "large",
            large(),
            vec![
                "stored at-limit v1".into(),
                format!("at the limit: size {MAX_OBJECT_BYTES}, the same bytes: true"),
                put_refused("EntityTooLarge"),
                "b/over: not found".into(),
                "list None max 10: [\"at-limit\"]".into(),
            ],
        ),
        ("names", names(), names_expected(&put_refused)),
    ];
    cases
}

fn names_expected(put_refused: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut expected: Vec<String> = NAMES.iter().map(|k| format!("stored {k} v1")).collect();
    expected.extend(
        NAMES
            .iter()
            .map(|k| format!("b/{k}: {k:?} size {} type None metadata {{}} v1", k.len())),
    );
    expected.push("list Some(\"a/\") max 10: [\"a/b//c/\"]".into());
    expected.push(format!("a key of {MAX_KEY_BYTES} bytes: true"));
    for code in [
        "KeyTooLongError",
        "InvalidArgument",
        "InvalidArgument",
        "InvalidBucketName",
        "InvalidArgument",
        "InvalidArgument",
        "InvalidArgument",
        "InvalidArgument",
        "MetadataTooLarge",
    ] {
        expected.push(put_refused(code));
    }
    expected.push("refused InvalidArgument retryable=false by Storage.ListObjects".into());
    expected.push("refused InvalidArgument retryable=false by Storage.DeleteObject".into());
    for key in ["m", "t", "big"] {
        expected.push(format!("b/{key}: not found"));
    }
    expected.push("a bucket name of 63 bytes: true".into());
    expected
}

/// Runs every case of the Storage contract on `driver`; panics with the first case
/// whose observations differ, naming it.
pub fn check_storage(driver: &mut impl StorageDriver) {
    for (name, program, expected) in storage_cases() {
        let seen = driver
            .run(name, program)
            .unwrap_or_else(|e| panic!("case {name}: the program failed: {e}"));
        assert_eq!(seen, expected, "case {name}: the observations differ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use effectful::effect::{Request, Response};
    use effectful::memory::{Handled, Services};
    use effectful::{EngineConfig, Time, run_async};

    /// The fake, answering each effect at once in virtual time (which stands still:
    /// every write is at the same instant).
    struct Fake;

    impl StorageDriver for Fake {
        fn run(
            &mut self,
            _case: &str,
            program: ContractProgram,
        ) -> Result<Vec<String>, ProgramError> {
            let mut services = Services::new(11);
            let mut handler = |request: Request| -> Result<Response, EffectError> {
                match services.handle(Time::ZERO, request) {
                    Handled::Done(result) => result,
                    _ => Err(EffectError::unhandled("contract", vec!["Storage".into()])),
                }
            };
            run_async(program, EngineConfig::default(), &mut handler)
        }
    }

    #[test]
    fn the_fake_storage_keeps_the_storage_contract() {
        check_storage(&mut Fake);
    }
}
