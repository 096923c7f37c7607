//! What a query returns: columns, rows and the command tag.

use std::sync::Arc;

use bytes::Bytes;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{DataRowBody, RowDescriptionBody};

use super::error::{PgError, TypeError};
use super::types::Type;
use super::value::{DecodeError, FromSql, Value};

/// The wire format of a column's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Text, as `psql` prints it (the simple query protocol).
    Text,
    /// Binary (the extended query protocol, as this client asks for it).
    Binary,
}

/// One column of a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// The column's name (or `?column?` for an unnamed expression).
    pub name: String,
    /// The column's type.
    pub ty: Type,
    /// How its values travel.
    pub format: Format,
}

/// Reads a `RowDescription`; `binary` overrides the formats it states (a statement's
/// description precedes the Bind that asks for binary results).
pub(crate) fn columns(body: &RowDescriptionBody, binary: bool) -> Result<Arc<[Column]>, PgError> {
    let mut fields = body.fields();
    let mut out = Vec::new();
    while let Some(f) = fields
        .next()
        .map_err(|e| PgError::protocol(format!("malformed RowDescription: {e}")))?
    {
        out.push(Column {
            name: f.name().to_owned(),
            ty: Type(f.type_oid()),
            format: if binary || f.format() == 1 {
                Format::Binary
            } else {
                Format::Text
            },
        });
    }
    Ok(out.into())
}

/// One row: the message's bytes, shared, checked when it arrived. A value is found
/// by walking the length prefixes before it (a few instructions per column), which
/// spares every row an allocation for a table of where its values lie.
#[derive(Clone, Debug)]
pub struct Row {
    columns: Arc<[Column]>,
    /// The `DataRow` body after its value count: each value as a big-endian `i32`
    /// length (-1 for NULL) and that many bytes; exactly `columns.len()` of them.
    body: Bytes,
}

/// A column by position or by name.
pub trait ColumnIndex {
    /// The position of this column in `columns`.
    fn position(&self, columns: &[Column]) -> Option<usize>;
    /// How to name it in an error.
    fn describe(&self) -> String;
}

impl ColumnIndex for usize {
    fn position(&self, columns: &[Column]) -> Option<usize> {
        (*self < columns.len()).then_some(*self)
    }
    fn describe(&self) -> String {
        format!("#{self}")
    }
}

impl ColumnIndex for &str {
    fn position(&self, columns: &[Column]) -> Option<usize> {
        columns.iter().position(|c| c.name == *self)
    }
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

impl Row {
    /// Checks a `DataRow` against its columns: as many values as columns, each
    /// length within the message.
    pub(crate) fn new(columns: Arc<[Column]>, body: DataRowBody) -> Result<Row, PgError> {
        let bad = |e: std::io::Error| PgError::protocol(format!("malformed DataRow: {e}"));
        let mut iter = body.ranges();
        let mut count = 0;
        while iter.next().map_err(bad)?.is_some() {
            if count == columns.len() {
                return Err(PgError::protocol(format!(
                    "a DataRow has more values than the {} columns described",
                    columns.len()
                )));
            }
            count += 1;
        }
        if count != columns.len() {
            return Err(PgError::protocol(format!(
                "a DataRow has {count} values for {} columns",
                columns.len()
            )));
        }
        Ok(Row {
            columns,
            body: body.buffer_bytes().clone(),
        })
    }

    /// Every value's bytes in order (`None` for NULL), read off the checked body.
    fn raw_values(&self) -> RawValues<'_> {
        RawValues {
            body: &self.body,
            left: self.columns.len(),
        }
    }

    /// The columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// How many values.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The raw bytes of column `i` (`None` for NULL or no such column).
    pub fn raw(&self, i: usize) -> Option<&[u8]> {
        self.raw_values().nth(i)?
    }

    /// Column `index` read as `T`, with a typed error when the column's type does not
    /// convert to `T`, or it is NULL and `T` is not an `Option`.
    pub fn get<T: FromSql, I: ColumnIndex>(&self, index: I) -> Result<T, TypeError> {
        let Some(i) = index.position(&self.columns) else {
            return Err(TypeError::NoSuchColumn {
                column: index.describe(),
                count: self.columns.len(),
            });
        };
        self.decode(i, self.raw(i))
    }

    /// Column `i`'s value `raw` read as `T`.
    fn decode<T: FromSql>(&self, i: usize, raw: Option<&[u8]>) -> Result<T, TypeError> {
        let column = &self.columns[i];
        let name = || {
            if column.name.is_empty() {
                format!("#{i}")
            } else {
                format!("{:?}", column.name)
            }
        };
        let decoded = match raw {
            None => T::from_null(column.ty),
            Some(raw) => match column.format {
                Format::Binary => T::from_sql(column.ty, raw),
                Format::Text => match std::str::from_utf8(raw) {
                    Ok(text) => T::from_text(column.ty, text),
                    Err(_) => Err(DecodeError::Malformed("text value is not UTF-8".into())),
                },
            },
        };
        decoded.map_err(|e| match e {
            DecodeError::Mismatch => TypeError::Mismatch {
                column: name(),
                actual: match column.format {
                    Format::Binary => column.ty.to_string(),
                    Format::Text => format!("{} (as text)", column.ty),
                },
                rust: std::any::type_name::<T>(),
            },
            DecodeError::Null => TypeError::UnexpectedNull { column: name() },
            DecodeError::Malformed(reason) => TypeError::Malformed {
                column: name(),
                ty: column.ty.to_string(),
                reason,
            },
        })
    }

    /// Every column as a [`Value`] (text-format columns as [`Value::Text`]).
    pub fn values(&self) -> Result<Vec<Value>, TypeError> {
        self.raw_values()
            .enumerate()
            .map(|(i, raw)| self.decode(i, raw))
            .collect()
    }
}

/// The values of a checked `DataRow` body, in order.
struct RawValues<'a> {
    body: &'a [u8],
    left: usize,
}

impl<'a> Iterator for RawValues<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Option<&'a [u8]>> {
        self.left = self.left.checked_sub(1)?;
        let (len, rest) = self.body.split_first_chunk::<4>()?;
        let len = i32::from_be_bytes(*len);
        let Ok(len) = usize::try_from(len) else {
            self.body = rest;
            return Some(None); // NULL
        };
        let (value, rest) = rest.split_at_checked(len)?;
        self.body = rest;
        Some(Some(value))
    }
}

/// The result of one statement.
#[derive(Clone, Debug, Default)]
pub struct ResultSet {
    /// The columns (empty for a statement that returns no rows).
    pub columns: Arc<[Column]>,
    /// The rows.
    pub rows: Vec<Row>,
    /// The command tag (`SELECT 3`, `INSERT 0 1`, `BEGIN`; empty for an empty query).
    pub tag: CommandTag,
}

/// The longest tag kept inline: `INSERT 0 ` and a row count up to 2^64 fit.
const INLINE_TAG: usize = 30;

/// A command tag (`SELECT 3`, `INSERT 0 1`, `BEGIN`), read as a `&str`. Every tag the
/// server sends for a statement is short, so it is kept inline: one reply costs no
/// allocation for its tag (a `String` cost one per query in a pipeline).
#[derive(Clone, PartialEq, Eq)]
pub struct CommandTag(TagRepr);

#[derive(Clone, PartialEq, Eq)]
enum TagRepr {
    /// The first `len` bytes, UTF-8 (checked when made).
    Inline { len: u8, bytes: [u8; INLINE_TAG] },
    /// A tag longer than `INLINE_TAG` (none of the server's own).
    Heap(Box<str>),
}

impl CommandTag {
    /// The tag as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Made from a `&str` cut at a character boundary: always UTF-8.
            TagRepr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            TagRepr::Heap(tag) => tag,
        }
    }
}

impl From<&str> for CommandTag {
    fn from(tag: &str) -> CommandTag {
        let mut bytes = [0u8; INLINE_TAG];
        match (bytes.get_mut(..tag.len()), u8::try_from(tag.len())) {
            (Some(inline), Ok(len)) => {
                inline.copy_from_slice(tag.as_bytes());
                CommandTag(TagRepr::Inline { len, bytes })
            }
            _ => CommandTag(TagRepr::Heap(tag.into())),
        }
    }
}

impl Default for CommandTag {
    fn default() -> CommandTag {
        CommandTag::from("")
    }
}

impl std::ops::Deref for CommandTag {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for CommandTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for CommandTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<str> for CommandTag {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for CommandTag {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl ResultSet {
    /// The rows the command affected or returned, from its tag (`UPDATE 4` is 4).
    pub fn rows_affected(&self) -> Option<u64> {
        self.tag.rsplit(' ').next()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::CommandTag;

    #[test]
    fn a_command_tag_reads_back_as_made_inline_or_not() {
        let long = format!("SELECT {}", "9".repeat(40));
        for text in [
            "",
            "BEGIN",
            "INSERT 0 18446744073709551615",
            "ÉTAT 1",
            &long,
        ] {
            let tag = CommandTag::from(text);
            assert_eq!(tag.as_str(), text);
            assert_eq!(tag, text);
            assert_eq!(tag.to_string(), text);
            assert_eq!(format!("{tag:?}"), format!("{text:?}"));
        }
        assert_eq!(CommandTag::default(), "");
        assert_eq!(CommandTag::from("UPDATE 4"), CommandTag::from("UPDATE 4"));
        assert_ne!(CommandTag::from("UPDATE 4"), CommandTag::from("UPDATE 5"));
    }
}
