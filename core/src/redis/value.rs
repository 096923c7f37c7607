//! `Value`: one RESP2 or RESP3 reply, decoded.

use serde::{Deserialize, Serialize};

use super::error::ServerError;

/// One value from the server, in RESP2 or RESP3.
///
/// RESP2 nulls (`$-1`, `*-1`) and the RESP3 null (`_`) are all [`Value::Nil`]. Simple
/// strings and big numbers are read as UTF-8, replacing bytes that are not (Redis sends
/// ASCII there); bulk strings stay bytes. RESP3 attributes are read and dropped. A map
/// keeps its pairs in the order the server sent them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Value {
    /// A null.
    Nil,
    /// A simple string (`+OK`).
    Simple(String),
    /// A bulk (blob) string.
    Bulk(Vec<u8>),
    /// An integer.
    Int(i64),
    /// A RESP3 double.
    Double(#[serde(with = "crate::effect::float")] f64),
    /// A RESP3 boolean.
    Bool(bool),
    /// A RESP3 big number, as its decimal digits.
    BigNumber(String),
    /// A RESP3 verbatim string.
    Verbatim {
        /// Its three-letter format (`txt` or `mkd`).
        format: String,
        /// The text.
        text: Vec<u8>,
    },
    /// An array.
    Array(Vec<Value>),
    /// A RESP3 map, in the server's order.
    Map(Vec<(Value, Value)>),
    /// A RESP3 set.
    Set(Vec<Value>),
    /// A RESP3 push (out-of-band data). The connection routes these to events; a
    /// reply never is one.
    Push(Vec<Value>),
    /// An error inside an aggregate (an `EXEC` result, for example). An error that is
    /// the whole reply is a [`CommandError::Server`](super::CommandError::Server) instead.
    Error(ServerError),
}

impl Value {
    /// The bytes of a bulk, simple or verbatim string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b) => Some(b),
            Value::Simple(s) => Some(s.as_bytes()),
            Value::Verbatim { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A bulk, simple or verbatim string that is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// An integer.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The elements of an array, set or push.
    pub fn as_items(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) | Value::Set(v) | Value::Push(v) => Some(v),
            _ => None,
        }
    }

    /// Whether this is a null.
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }
}
