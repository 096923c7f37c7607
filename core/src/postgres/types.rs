//! PostgreSQL type OIDs this client knows by name.

use std::fmt;

/// A PostgreSQL type, by OID. The built-in types this client encodes and decodes have
/// constants; any other OID can still be held (and read as text or raw bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Type(pub u32);

macro_rules! types {
    ($($(#[$doc:meta])* $name:ident = $oid:literal, $sql:literal, array $array:ident = $array_oid:literal;)*) => {
        impl Type {
            /// Unspecified: the server infers the type (a parameter sent as NULL).
            pub const UNSPECIFIED: Type = Type(0);
            $(
                $(#[$doc])*
                pub const $name: Type = Type($oid);
                #[doc = concat!("`", $sql, "[]`.")]
                pub const $array: Type = Type($array_oid);
            )*

            /// The SQL name, for the types this client knows.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($oid => Some($sql), $array_oid => Some(concat!($sql, "[]")),)*
                    _ => None,
                }
            }

            /// The element type, when this is an array type this client knows.
            pub fn element(self) -> Option<Type> {
                match self.0 {
                    $($array_oid => Some(Type($oid)),)*
                    _ => None,
                }
            }

            /// The array type whose elements are `self`, when this client knows it.
            pub fn array(self) -> Option<Type> {
                match self.0 {
                    $($oid => Some(Type($array_oid)),)*
                    _ => None,
                }
            }
        }
    };
}

types! {
    /// `bool`.
    BOOL = 16, "bool", array BOOL_ARRAY = 1000;
    /// `bytea`.
    BYTEA = 17, "bytea", array BYTEA_ARRAY = 1001;
    /// `"char"` (one byte).
    CHAR = 18, "char", array CHAR_ARRAY = 1002;
    /// `name` (identifiers in the catalogs).
    NAME = 19, "name", array NAME_ARRAY = 1003;
    /// `int8` (`bigint`).
    INT8 = 20, "int8", array INT8_ARRAY = 1016;
    /// `int2` (`smallint`).
    INT2 = 21, "int2", array INT2_ARRAY = 1005;
    /// `int4` (`integer`).
    INT4 = 23, "int4", array INT4_ARRAY = 1007;
    /// `text`.
    TEXT = 25, "text", array TEXT_ARRAY = 1009;
    /// `oid`.
    OID = 26, "oid", array OID_ARRAY = 1028;
    /// `json`.
    JSON = 114, "json", array JSON_ARRAY = 199;
    /// `float4` (`real`).
    FLOAT4 = 700, "float4", array FLOAT4_ARRAY = 1021;
    /// `float8` (`double precision`).
    FLOAT8 = 701, "float8", array FLOAT8_ARRAY = 1022;
    /// `bpchar` (`char(n)`).
    BPCHAR = 1042, "bpchar", array BPCHAR_ARRAY = 1014;
    /// `varchar`.
    VARCHAR = 1043, "varchar", array VARCHAR_ARRAY = 1015;
    /// `date`.
    DATE = 1082, "date", array DATE_ARRAY = 1182;
    /// `timestamp` (without time zone).
    TIMESTAMP = 1114, "timestamp", array TIMESTAMP_ARRAY = 1115;
    /// `timestamptz`.
    TIMESTAMPTZ = 1184, "timestamptz", array TIMESTAMPTZ_ARRAY = 1185;
    /// `numeric`.
    NUMERIC = 1700, "numeric", array NUMERIC_ARRAY = 1231;
    /// `uuid`.
    UUID = 2950, "uuid", array UUID_ARRAY = 2951;
    /// `jsonb`.
    JSONB = 3802, "jsonb", array JSONB_ARRAY = 3807;
}

impl Type {
    /// Whether values of this type are text on the wire in binary format too.
    pub(crate) fn is_textual(self) -> bool {
        matches!(
            self,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON
        )
    }
}

impl fmt::Debug for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "oid {}", self.0),
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
