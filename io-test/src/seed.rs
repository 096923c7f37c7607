//! Seeds: rerun one with `EFFECTFUL_SEED=<n>`, and tell the user how to reproduce a
//! failure.

use std::ops::Range;
use std::time::Duration;

/// The environment variable that pins a run to one seed.
pub const SEED_VAR: &str = "EFFECTFUL_SEED";

/// `EFFECTFUL_SEED=<n>` gives `n..n+1`; unset gives `default`; anything else is an
/// error that says what was wrong.
pub fn seeds_from_env(default: Range<u64>) -> Result<Range<u64>, String> {
    match std::env::var(SEED_VAR) {
        Ok(value) => {
            let n: u64 = value.trim().parse().map_err(|e| {
                format!(
                    "{SEED_VAR}={value:?} is not a seed (a number from 0 to {}): {e}",
                    u64::MAX
                )
            })?;
            Ok(n..n.saturating_add(1))
        }
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{SEED_VAR} is not valid UTF-8")),
    }
}

/// The line to print when seed `seed` fails: the seed and the command that reproduces it.
pub fn reproduce_message(seed: u64, command: &str) -> String {
    format!("seed {seed} failed; reproduce with: {SEED_VAR}={seed} {command}")
}

/// Parses `A..B` (B exclusive) or a single `N`.
pub fn parse_range(text: &str) -> Result<Range<u64>, String> {
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|e| format!("{s:?} in seed range {text:?}: {e}"))
    };
    match text.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b)?);
            if a >= b {
                return Err(format!(
                    "seed range {text:?} is empty; write A..B with A < B"
                ));
            }
            Ok(a..b)
        }
        None => {
            let n = parse(text)?;
            Ok(n..n.saturating_add(1))
        }
    }
}

/// Parses a duration written as `3600s`, `90m`, `1h`, `250ms` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; write e.g. 3600s, 90m, 1h or 250ms"))?;
    let secs = |k: u64| {
        n.checked_mul(k)
            .map(Duration::from_secs)
            .ok_or(format!("{text:?} is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => secs(60),
        "h" => secs(3600),
        _ => Err(format!(
            "{text:?} has unknown unit {unit:?}; use ms, s, m or h"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_durations_parse_or_say_what_is_wrong() {
        assert_eq!(parse_range("3..7"), Ok(3..7));
        assert_eq!(parse_range("9"), Ok(9..10));
        assert!(parse_range("7..3").unwrap_err().contains("empty"));
        assert!(parse_range("x..3").is_err());
        assert_eq!(parse_duration("3600s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
        assert!(
            parse_duration("5 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn the_reproduce_line_names_the_seed_and_the_variable() {
        let line = reproduce_message(42, "cargo test");
        assert_eq!(
            line,
            "seed 42 failed; reproduce with: EFFECTFUL_SEED=42 cargo test"
        );
    }
}
