//! What a query returns: columns, rows and the command tag.

use std::ops::Range;
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

/// One row: the message's bytes, shared, and where each value lies in them.
#[derive(Clone, Debug)]
pub struct Row {
    columns: Arc<[Column]>,
    body: Bytes,
    ranges: Vec<Option<Range<usize>>>,
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
    /// Checks a `DataRow` against its columns and records where each value lies.
    pub(crate) fn new(columns: Arc<[Column]>, body: DataRowBody) -> Result<Row, PgError> {
        let bad = |e: std::io::Error| PgError::protocol(format!("malformed DataRow: {e}"));
        let mut iter = body.ranges();
        let mut ranges = Vec::with_capacity(columns.len());
        while let Some(range) = iter.next().map_err(bad)? {
            if ranges.len() == columns.len() {
                return Err(PgError::protocol(format!(
                    "a DataRow has more values than the {} columns described",
                    columns.len()
                )));
            }
            ranges.push(range);
        }
        if ranges.len() != columns.len() {
            return Err(PgError::protocol(format!(
                "a DataRow has {} values for {} columns",
                ranges.len(),
                columns.len()
            )));
        }
        Ok(Row {
            columns,
            body: body.buffer_bytes().clone(),
            ranges,
        })
    }

    /// The columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// How many values.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The raw bytes of column `i` (`None` for NULL or no such column).
    pub fn raw(&self, i: usize) -> Option<&[u8]> {
        let range = self.ranges.get(i)?.clone()?;
        self.body.get(range)
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
        let column = &self.columns[i];
        let name = || {
            if column.name.is_empty() {
                format!("#{i}")
            } else {
                format!("{:?}", column.name)
            }
        };
        let decoded = match self.raw(i) {
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
        (0..self.len()).map(|i| self.get(i)).collect()
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
    pub tag: String,
}

impl ResultSet {
    /// The rows the command affected or returned, from its tag (`UPDATE 4` is 4).
    pub fn rows_affected(&self) -> Option<u64> {
        self.tag.rsplit(' ').next()?.parse().ok()
    }
}
