//! Floats that survive JSON: finite values as numbers, NaN and the infinities as
//! the strings `"NaN"`, `"inf"` and `"-inf"` (JSON has no numbers for them, and
//! `serde_json` would write `null`, which then cannot be read back).

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// Serializes an `f64`, non-finite values as strings.
pub(crate) fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.is_finite() {
        serializer.serialize_f64(*value)
    } else if value.is_nan() {
        serializer.serialize_str("NaN")
    } else if *value > 0.0 {
        serializer.serialize_str("inf")
    } else {
        serializer.serialize_str("-inf")
    }
}

/// Deserializes an `f64` written by [`serialize`] (or any JSON number).
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    deserializer.deserialize_any(FloatVisitor)
}

struct FloatVisitor;

impl Visitor<'_> for FloatVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a number, or one of "NaN", "inf", "-inf""#)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        match v {
            "NaN" => Ok(f64::NAN),
            "inf" => Ok(f64::INFINITY),
            "-inf" => Ok(f64::NEG_INFINITY),
            other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::effect::{MetricsRequest, Request, SetGauge};

    fn round_trip(value: f64) -> f64 {
        let request = Request::Metrics(MetricsRequest::SetGauge(SetGauge {
            name: "g".into(),
            labels: Default::default(),
            value,
        }));
        let json = serde_json::to_string(&request).unwrap();
        match serde_json::from_str(&json).unwrap() {
            Request::Metrics(MetricsRequest::SetGauge(g)) => g.value,
            other => panic!("decoded as {other:?}"),
        }
    }

    #[test]
    fn non_finite_metric_values_survive_json() {
        assert!(round_trip(f64::NAN).is_nan());
        assert_eq!(round_trip(f64::INFINITY), f64::INFINITY);
        assert_eq!(round_trip(f64::NEG_INFINITY), f64::NEG_INFINITY);
    }

    #[test]
    fn finite_metric_values_survive_json_to_the_last_bit() {
        for value in [
            -1.5599263899535012e-65,
            6.039758843950747e161,
            0.1,
            -0.0,
            f64::MIN_POSITIVE,
            f64::MAX,
        ] {
            assert_eq!(round_trip(value).to_bits(), value.to_bits(), "{value:e}");
        }
    }

    #[test]
    fn an_unknown_float_string_is_refused_with_what_is_expected() {
        let err = serde_json::from_str::<Request>(
            r#"{"Metrics":{"SetGauge":{"name":"g","value":"lots"}}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains(r#""NaN", "inf", "-inf""#), "{err}");
    }
}
