//! Values as data: [`Value`] for parameters and dynamic reads, [`FromSql`] for reading
//! a column straight into a Rust type, with a typed error on a mismatch.

use bytes::{BufMut, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::IsNull;
use postgres_protocol::types as codec;
use uuid::Uuid;

use super::date::Date;
use super::numeric;
use super::types::Type;
use crate::time::Timestamp;

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A PostgreSQL value this client encodes and decodes.
///
/// As a parameter each variant names its type (`Int4` is sent as `int4`), except
/// [`Value::Null`], whose type the server infers. `numeric` travels as decimal text
/// so that no precision is lost.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// SQL NULL.
    Null,
    /// `bool`.
    Bool(bool),
    /// `int2`.
    Int2(i16),
    /// `int4`.
    Int4(i32),
    /// `int8`.
    Int8(i64),
    /// `float4`.
    Float4(f32),
    /// `float8`.
    Float8(f64),
    /// `numeric`, as decimal text (`-12.3400`, `NaN`, `Infinity`).
    Numeric(String),
    /// `text` (read also from `varchar`, `char(n)`, `name` and `json`).
    Text(String),
    /// `bytea`.
    Bytea(Vec<u8>),
    /// `uuid`.
    Uuid(Uuid),
    /// `timestamptz`; PostgreSQL's `±infinity` are `Timestamp`'s extremes.
    Timestamptz(Timestamp),
    /// `timestamp` (without time zone), read as if UTC.
    Timestamp(Timestamp),
    /// `date`.
    Date(Date),
    /// `jsonb`, as JSON text.
    Jsonb(String),
    /// A one-dimensional array of `element`; any item may be [`Value::Null`].
    Array {
        /// The element type (for example [`Type::INT4`] for `int4[]`).
        element: Type,
        /// The items, in order.
        items: Vec<Value>,
    },
}

impl Value {
    /// The type this value is sent as ([`Type::UNSPECIFIED`] for NULL: the server
    /// infers it).
    pub fn param_type(&self) -> Type {
        match self {
            Value::Null => Type::UNSPECIFIED,
            Value::Bool(_) => Type::BOOL,
            Value::Int2(_) => Type::INT2,
            Value::Int4(_) => Type::INT4,
            Value::Int8(_) => Type::INT8,
            Value::Float4(_) => Type::FLOAT4,
            Value::Float8(_) => Type::FLOAT8,
            Value::Numeric(_) => Type::NUMERIC,
            Value::Text(_) => Type::TEXT,
            Value::Bytea(_) => Type::BYTEA,
            Value::Uuid(_) => Type::UUID,
            Value::Timestamptz(_) => Type::TIMESTAMPTZ,
            Value::Timestamp(_) => Type::TIMESTAMP,
            Value::Date(_) => Type::DATE,
            Value::Jsonb(_) => Type::JSONB,
            Value::Array { element, .. } => element.array().unwrap_or(Type::UNSPECIFIED),
        }
    }

    /// Writes the binary form (nothing for NULL).
    pub(crate) fn encode(&self, buf: &mut BytesMut) -> Result<IsNull, String> {
        match self {
            Value::Null => return Ok(IsNull::Yes),
            Value::Bool(v) => codec::bool_to_sql(*v, buf),
            Value::Int2(v) => codec::int2_to_sql(*v, buf),
            Value::Int4(v) => codec::int4_to_sql(*v, buf),
            Value::Int8(v) => codec::int8_to_sql(*v, buf),
            Value::Float4(v) => codec::float4_to_sql(*v, buf),
            Value::Float8(v) => codec::float8_to_sql(*v, buf),
            Value::Numeric(text) => {
                let mut out = Vec::new();
                numeric::encode(text, &mut out)?;
                buf.put_slice(&out);
            }
            Value::Text(v) => codec::text_to_sql(v, buf),
            Value::Bytea(v) => codec::bytea_to_sql(v, buf),
            Value::Uuid(v) => codec::uuid_to_sql(*v.as_bytes(), buf),
            Value::Timestamptz(t) | Value::Timestamp(t) => {
                codec::timestamp_to_sql(timestamp_to_pg(*t), buf)
            }
            Value::Date(d) => codec::date_to_sql(d.0, buf),
            Value::Jsonb(json) => {
                buf.put_u8(1); // jsonb binary format version
                buf.put_slice(json.as_bytes());
            }
            Value::Array { element, items } => {
                let Some(_) = element.array() else {
                    return Err(format!("arrays of {element} are not supported"));
                };
                let len = i32::try_from(items.len()).map_err(|_| "too many array items")?;
                let dimensions = (!items.is_empty()).then_some(codec::ArrayDimension {
                    len,
                    lower_bound: 1,
                });
                codec::array_to_sql(
                    dimensions,
                    element.0,
                    items,
                    |item, buf| {
                        let ty = item.param_type();
                        if !matches!(item, Value::Null) && ty != *element {
                            return Err(
                                format!("an array of {element} cannot hold a {ty} item").into()
                            );
                        }
                        item.encode(buf).map_err(Into::into)
                    },
                    buf,
                )
                .map_err(|e| e.to_string())?;
            }
        }
        Ok(IsNull::No)
    }

    /// Decodes the binary form of a value of type `ty`.
    pub fn decode(ty: Type, raw: &[u8]) -> Result<Value, DecodeError> {
        let malformed =
            |e: Box<dyn std::error::Error + Sync + Send>| DecodeError::Malformed(e.to_string());
        Ok(match ty {
            Type::BOOL => Value::Bool(codec::bool_from_sql(raw).map_err(malformed)?),
            Type::INT2 => Value::Int2(codec::int2_from_sql(raw).map_err(malformed)?),
            Type::INT4 => Value::Int4(codec::int4_from_sql(raw).map_err(malformed)?),
            Type::INT8 => Value::Int8(codec::int8_from_sql(raw).map_err(malformed)?),
            Type::FLOAT4 => Value::Float4(codec::float4_from_sql(raw).map_err(malformed)?),
            Type::FLOAT8 => Value::Float8(codec::float8_from_sql(raw).map_err(malformed)?),
            Type::NUMERIC => Value::Numeric(numeric::decode(raw).map_err(DecodeError::Malformed)?),
            t if t.is_textual() => Value::Text(text(raw)?.to_owned()),
            Type::BYTEA => Value::Bytea(raw.to_vec()),
            Type::UUID => Value::Uuid(Uuid::from_bytes(
                codec::uuid_from_sql(raw).map_err(malformed)?,
            )),
            Type::TIMESTAMPTZ => Value::Timestamptz(timestamp_from_pg(
                codec::timestamp_from_sql(raw).map_err(malformed)?,
            )),
            Type::TIMESTAMP => Value::Timestamp(timestamp_from_pg(
                codec::timestamp_from_sql(raw).map_err(malformed)?,
            )),
            Type::DATE => Value::Date(Date(codec::date_from_sql(raw).map_err(malformed)?)),
            Type::JSONB => Value::Jsonb(jsonb(raw)?.to_owned()),
            t => match t.element() {
                Some(element) => Value::Array {
                    element,
                    items: array(raw, element, |ty, raw| match raw {
                        None => Ok(Value::Null),
                        Some(raw) => Value::decode(ty, raw),
                    })?,
                },
                None => return Err(DecodeError::Mismatch),
            },
        })
    }
}

fn timestamp_to_pg(t: Timestamp) -> i64 {
    match t.unix_micros() {
        i64::MAX => i64::MAX,
        i64::MIN => i64::MIN,
        micros => micros.saturating_sub(PG_EPOCH_UNIX_MICROS),
    }
}

fn timestamp_from_pg(micros: i64) -> Timestamp {
    Timestamp::from_unix_micros(match micros {
        i64::MAX => i64::MAX,
        i64::MIN => i64::MIN,
        m => m.saturating_add(PG_EPOCH_UNIX_MICROS),
    })
}

fn text(raw: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(raw).map_err(|_| DecodeError::Malformed("not UTF-8".into()))
}

fn jsonb(raw: &[u8]) -> Result<&str, DecodeError> {
    match raw.split_first() {
        Some((1, json)) => text(json),
        Some((version, _)) => Err(DecodeError::Malformed(format!(
            "jsonb format version {version}, expected 1"
        ))),
        None => Err(DecodeError::Malformed("empty jsonb".into())),
    }
}

/// Decodes a one-dimensional (or empty) array whose elements are `element`, item by
/// item through `item`. The item count is checked against the bytes present before
/// anything is allocated for it.
fn array<T>(
    raw: &[u8],
    element: Type,
    mut item: impl FnMut(Type, Option<&[u8]>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let malformed =
        |e: Box<dyn std::error::Error + Sync + Send>| DecodeError::Malformed(e.to_string());
    let array = codec::array_from_sql(raw).map_err(malformed)?;
    if array.element_type() != element.0 {
        return Err(DecodeError::Malformed(format!(
            "array of {} where {element} was declared",
            Type(array.element_type())
        )));
    }
    let mut dims = array.dimensions();
    let count = match (
        dims.next().map_err(malformed)?,
        dims.next().map_err(malformed)?,
    ) {
        (None, _) => 0,
        (Some(d), None) => usize::try_from(d.len).unwrap_or(0),
        (Some(_), Some(_)) => {
            return Err(DecodeError::Malformed(
                "multi-dimensional arrays are not supported; unnest them in the SQL".into(),
            ));
        }
    };
    // Every item takes at least its 4-byte length.
    if count > raw.len() / 4 {
        return Err(DecodeError::Malformed(format!(
            "{count} items declared in {} bytes",
            raw.len()
        )));
    }
    let mut out = Vec::with_capacity(count);
    let mut values = array.values();
    while let Some(v) = values.next().map_err(malformed)? {
        out.push(item(element, v)?);
    }
    Ok(out)
}

/// Why a value could not become the Rust type asked for; [`Row`](super::Row) adds the
/// column and the types to make a [`TypeError`](super::TypeError).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The PostgreSQL type does not convert to this Rust type.
    Mismatch,
    /// The value is NULL and this Rust type cannot hold it.
    Null,
    /// The bytes are not a value of the declared type.
    Malformed(String),
}

/// A Rust type a column can be read into.
///
/// Implemented for `bool`, `i16`, `i32`, `i64` (each accepting narrower integers),
/// `f32`, `f64`, `String` (text types, `numeric` as decimal text, `json`, `jsonb`),
/// `Vec<u8>` (`bytea`), [`Uuid`], [`Timestamp`] (`timestamptz`, `timestamp`), [`Date`],
/// [`Value`] (anything this client knows), `Option<T>` (NULL) and `Vec<T>` (arrays).
pub trait FromSql: Sized {
    /// A non-NULL value in binary format (the extended query protocol).
    fn from_sql(ty: Type, raw: &[u8]) -> Result<Self, DecodeError>;

    /// A non-NULL value in text format (the simple query protocol). By default only
    /// the binary format is understood.
    fn from_text(ty: Type, text: &str) -> Result<Self, DecodeError> {
        let _ = (ty, text);
        Err(DecodeError::Mismatch)
    }

    /// A NULL. By default an error: read the column as `Option<T>` to accept NULL.
    fn from_null(ty: Type) -> Result<Self, DecodeError> {
        let _ = ty;
        Err(DecodeError::Null)
    }
}

fn parse_text<T: std::str::FromStr>(text: &str) -> Result<T, DecodeError> {
    text.parse().map_err(|_| {
        DecodeError::Malformed(format!("{text:?} is not a {}", std::any::type_name::<T>()))
    })
}

macro_rules! from_sql_via_value {
    ($rust:ty, [$($ty:path),*], |$v:ident| $convert:expr) => {
        impl FromSql for $rust {
            fn from_sql(ty: Type, raw: &[u8]) -> Result<Self, DecodeError> {
                if ![$($ty),*].contains(&ty) {
                    return Err(DecodeError::Mismatch);
                }
                match Value::decode(ty, raw)? {
                    $v => $convert,
                }
            }

            fn from_text(ty: Type, text: &str) -> Result<Self, DecodeError> {
                if ![$($ty),*].contains(&ty) {
                    return Err(DecodeError::Mismatch);
                }
                parse_text(text)
            }
        }
    };
}

from_sql_via_value!(i16, [Type::INT2], |v| match v {
    Value::Int2(v) => Ok(v),
    _ => Err(DecodeError::Mismatch),
});
from_sql_via_value!(i32, [Type::INT2, Type::INT4], |v| match v {
    Value::Int2(v) => Ok(i32::from(v)),
    Value::Int4(v) => Ok(v),
    _ => Err(DecodeError::Mismatch),
});
from_sql_via_value!(i64, [Type::INT2, Type::INT4, Type::INT8], |v| match v {
    Value::Int2(v) => Ok(i64::from(v)),
    Value::Int4(v) => Ok(i64::from(v)),
    Value::Int8(v) => Ok(v),
    _ => Err(DecodeError::Mismatch),
});
from_sql_via_value!(f32, [Type::FLOAT4], |v| match v {
    Value::Float4(v) => Ok(v),
    _ => Err(DecodeError::Mismatch),
});
from_sql_via_value!(f64, [Type::FLOAT4, Type::FLOAT8], |v| match v {
    Value::Float4(v) => Ok(f64::from(v)),
    Value::Float8(v) => Ok(v),
    _ => Err(DecodeError::Mismatch),
});
from_sql_via_value!(Uuid, [Type::UUID], |v| match v {
    Value::Uuid(v) => Ok(v),
    _ => Err(DecodeError::Mismatch),
});

impl FromSql for bool {
    fn from_sql(ty: Type, raw: &[u8]) -> Result<Self, DecodeError> {
        match ty {
            Type::BOOL => {
                codec::bool_from_sql(raw).map_err(|e| DecodeError::Malformed(e.to_string()))
            }
            _ => Err(DecodeError::Mismatch),
        }
    }

    fn from_text(ty: Type, text: &str) -> Result<Self, DecodeError> {
        match (ty, text) {
            (Type::BOOL, "t") => Ok(true),
            (Type::BOOL, "f") => Ok(false),
            (Type::BOOL, other) => Err(DecodeError::Malformed(format!("{other:?} is not a bool"))),
            _ => Err(DecodeError::Mismatch),
        }
    }
}

impl FromSql for String {
    fn from_sql(ty: Type, raw: &[u8]) -> Result<Self, DecodeError> {
        match ty {
            t if t.is_textual() => Ok(text(raw)?.to_owned()),
            Type::NUMERIC => numeric::decode(raw).map_err(DecodeError::Malformed),
            Type::JSONB => Ok(jsonb(raw)?.to_owned()),
            _ => Err(DecodeError::Mismatch),
        }
    }

    /// Any column, as the server printed it.
    fn from_text(_ty: Type, text: &str) -> Result<Self, DecodeError> {
        Ok(text.to_owned())
    }
}

impl FromSql for Vec<u8> {
    fn from_sql(ty: Type, raw: &[u8]) -> Result<Self, DecodeError> {
        match ty {
            Type::BYTEA => Ok(raw.to_vec()),
            _ => Err(DecodeError::Mismatch),
        }
    }

    /// `bytea` in its hex text form (`\x0102`).
    fn from_text(ty: Type, text: &str) -> Result<Self, DecodeError> {
        if ty != Type::BYTEA {
            return Err(DecodeError::Mismatch);
        }
        let hex = text
            .strip_prefix("\\x")
            .ok_or_else(|| DecodeError::Malformed("bytea text is not in hex form".into()))?;
        let digit = |b: u8| match b {
            b'0'..=b'9' => Ok(b - b'0'),
            b'a'..=b'f' => Ok(b - b'a' + 10),
            b'A'..=b'F' => Ok(b - b'A' + 10),
            _ => Err(DecodeError::Malformed(
                "bytea text has a non-hex digit".into(),
            )),
        };
        if hex.len() % 2 != 0 {
            return Err(DecodeError::Malformed(
                "bytea text has an odd number of hex digits".into(),
            ));
        }
        hex.as_bytes()
            .chunks(2)
            .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
            .collect()
    }
}

impl FromSql for Timestamp {
    fn from_sql(ty: Type, raw: &[u8]) -> Result<Self, DecodeError> {
        match Value::decode(ty, raw)? {
            Value::Timestamptz(t) | Value::Timestamp(t) => Ok(t),
            _ => Err(DecodeError::Mismatch),
        }
    }
}

impl FromSql for Date {
    fn from_sql(ty: Type, raw: &[u8]) -> Result<Self, DecodeError> {
        match ty {
            Type::DATE => Ok(Date(
                codec::date_from_sql(raw).map_err(|e| DecodeError::Malformed(e.to_string()))?,
            )),
            _ => Err(DecodeError::Mismatch),
        }
    }
}

impl FromSql for Value {
    fn from_sql(ty: Type, raw: &[u8]) -> Result<Self, DecodeError> {
        Value::decode(ty, raw)
    }

    /// Any column, as the text the server printed.
    fn from_text(_ty: Type, text: &str) -> Result<Self, DecodeError> {
        Ok(Value::Text(text.to_owned()))
    }

    fn from_null(_ty: Type) -> Result<Self, DecodeError> {
        Ok(Value::Null)
    }
}

impl<T: FromSql> FromSql for Option<T> {
    fn from_sql(ty: Type, raw: &[u8]) -> Result<Self, DecodeError> {
        T::from_sql(ty, raw).map(Some)
    }

    fn from_text(ty: Type, text: &str) -> Result<Self, DecodeError> {
        T::from_text(ty, text).map(Some)
    }

    fn from_null(_ty: Type) -> Result<Self, DecodeError> {
        Ok(None)
    }
}

/// A one-dimensional array; NULL items need `Vec<Option<T>>`.
impl<T: FromSql> FromSql for Vec<T> {
    fn from_sql(ty: Type, raw: &[u8]) -> Result<Self, DecodeError> {
        let element = ty.element().ok_or(DecodeError::Mismatch)?;
        array(raw, element, |ty, raw| match raw {
            None => T::from_null(ty),
            Some(raw) => T::from_sql(ty, raw),
        })
    }
}

macro_rules! value_from {
    ($($rust:ty => $variant:ident),*) => {
        $(impl From<$rust> for Value {
            fn from(v: $rust) -> Value {
                Value::$variant(v.into())
            }
        })*
    };
}

value_from!(
    bool => Bool, i16 => Int2, i32 => Int4, i64 => Int8, f32 => Float4, f64 => Float8,
    String => Text, &str => Text, Vec<u8> => Bytea, &[u8] => Bytea, Uuid => Uuid,
    Timestamp => Timestamptz, Date => Date
);

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}
