//! Seeds: rerun one with `EFFECTFUL_SEED=<n>`, and tell the user how to reproduce a
//! failure.

use std::env::VarError;
use std::num::{IntErrorKind, ParseIntError};
use std::ops::Range;
use std::time::Duration;

/// The environment variable that pins a run to one seed.
pub const SEED_VAR: &str = "EFFECTFUL_SEED";

/// Why a seed, a seed range or a duration could not be read; each message says what to
/// write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeedError {
    /// `EFFECTFUL_SEED` holds something other than a seed.
    #[error(
        "{SEED_VAR}={value:?} is not a seed: {source}; write a whole number from 0 to {max}, \
         e.g. {SEED_VAR}=42",
        max = u64::MAX - 1
    )]
    BadSeedVar {
        /// What the variable held.
        value: String,
        /// Why it is not a number.
        source: ParseIntError,
    },
    /// `EFFECTFUL_SEED` is not valid UTF-8.
    #[error("{SEED_VAR} is not valid UTF-8; write a whole number, e.g. {SEED_VAR}=42")]
    SeedVarNotUnicode,
    /// One end of a seed range is not a number.
    #[error(
        "{part:?} in seed range {text:?} is not a seed: {source}; write A..B (B exclusive) \
         or a single N, with whole numbers, e.g. 0..1000"
    )]
    BadRangeBound {
        /// The whole range as written.
        text: String,
        /// The end that is not a number.
        part: String,
        /// Why it is not a number.
        source: ParseIntError,
    },
    /// A seed range holds no seed (`A..B` with `A >= B`, or the seed `u64::MAX`, which
    /// no exclusive range can hold).
    #[error(
        "seed range {text:?} is empty; write A..B with A < B (B exclusive), or a single \
         seed below {max}",
        max = u64::MAX
    )]
    EmptyRange {
        /// The range as written.
        text: String,
    },
    /// A duration is not a number followed by a unit.
    #[error(
        "{text:?} is not a duration; write a whole number and a unit, e.g. 3600s, 90m, 1h or 250ms"
    )]
    BadDuration {
        /// The duration as written.
        text: String,
    },
    /// A duration's unit is not one we know.
    #[error("{text:?} has unknown unit {unit:?}; use ms, s, m or h, e.g. 90m")]
    UnknownUnit {
        /// The duration as written.
        text: String,
        /// The unit.
        unit: String,
    },
    /// A duration does not fit in a `Duration`.
    #[error("{text:?} is too long to represent; write a shorter duration, e.g. 24h")]
    DurationTooLong {
        /// The duration as written.
        text: String,
    },
}

/// `EFFECTFUL_SEED=<n>` gives `n..n+1`; unset gives `default`; anything else (not a
/// number, not UTF-8, or `u64::MAX`, which no range can hold) is an error that says
/// what to write.
pub fn seeds_from_env(default: Range<u64>) -> Result<Range<u64>, SeedError> {
    seeds_from_var(std::env::var(SEED_VAR), default)
}

/// [`seeds_from_env`] for a value already read.
fn seeds_from_var(
    value: Result<String, VarError>,
    default: Range<u64>,
) -> Result<Range<u64>, SeedError> {
    match value {
        Ok(value) => {
            let n: u64 = value
                .trim()
                .parse()
                .map_err(|source| SeedError::BadSeedVar {
                    value: value.clone(),
                    source,
                })?;
            one_seed(n, || format!("{SEED_VAR}={value}"))
        }
        Err(VarError::NotPresent) => Ok(default),
        Err(VarError::NotUnicode(_)) => Err(SeedError::SeedVarNotUnicode),
    }
}

/// `n..n+1`, or an error naming `text` for the one seed no exclusive range holds.
fn one_seed(n: u64, text: impl FnOnce() -> String) -> Result<Range<u64>, SeedError> {
    match n.checked_add(1) {
        Some(end) => Ok(n..end),
        None => Err(SeedError::EmptyRange { text: text() }),
    }
}

/// The line to print when seed `seed` fails: the seed and the command that reproduces it.
pub fn reproduce_message(seed: u64, command: &str) -> String {
    format!("seed {seed} failed; reproduce with: {SEED_VAR}={seed} {command}")
}

/// A seed that failed in [`try_seeds`]: which, why, and how to rerun it alone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("seed {seed} failed: {message}\nreproduce with: {command}")]
pub struct SeedFailure {
    /// The seed.
    pub seed: u64,
    /// What the check said.
    pub message: String,
    /// The one command that reruns this seed alone.
    pub command: String,
}

/// Runs `check` on every seed of `default`, or only on the seed `EFFECTFUL_SEED`
/// names; panics at the first failing seed with its message and the one command that
/// reruns it (`EFFECTFUL_SEED=<n> cargo test -p <package> -- <test> --exact`), and on
/// an `EFFECTFUL_SEED` that is not a seed. Returns how many seeds ran. For use in
/// tests:
///
/// ```
/// use effectful_test::seed::run_seeds;
///
/// run_seeds(0..100, |seed| {
///     if seed * 2 / 2 == seed { Ok(()) } else { Err(format!("{seed} does not halve")) }
/// });
/// ```
#[track_caller]
pub fn run_seeds<E: std::fmt::Display>(
    default: Range<u64>,
    check: impl FnMut(u64) -> Result<(), E>,
) -> u64 {
    let seeds = match seeds_from_env(default) {
        Ok(seeds) => seeds,
        Err(error) => panic!("{error}"),
    };
    match try_seeds(seeds, &rerun_command(), check) {
        Ok(ran) => ran,
        Err(failure) => panic!("{failure}"),
    }
}

/// Runs `check` on every seed of `seeds` in order; stops at the first failure, which
/// says how to rerun it: `EFFECTFUL_SEED=<n> <command>`. Returns how many seeds ran.
pub fn try_seeds<E: std::fmt::Display>(
    seeds: Range<u64>,
    command: &str,
    mut check: impl FnMut(u64) -> Result<(), E>,
) -> Result<u64, SeedFailure> {
    let mut ran = 0;
    for seed in seeds {
        ran += 1;
        if let Err(error) = check(seed) {
            return Err(SeedFailure {
                seed,
                message: error.to_string(),
                command: format!("{SEED_VAR}={seed} {command}"),
            });
        }
    }
    Ok(ran)
}

/// The command that reruns the current test: the package cargo runs it for, and the
/// test's name (libtest names each test's thread after it).
fn rerun_command() -> String {
    let package = std::env::var("CARGO_PKG_NAME").ok();
    let test = std::thread::current().name().map(str::to_owned);
    match (package, test) {
        (Some(package), Some(test)) if test != "main" => {
            format!("cargo test -p {package} -- {test} --exact")
        }
        (Some(package), _) => format!("cargo test -p {package}"),
        _ => "cargo test".to_owned(),
    }
}

/// Parses `A..B` (B exclusive) or a single `N`; refuses a range with no seed in it.
pub fn parse_range(text: &str) -> Result<Range<u64>, SeedError> {
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|source| SeedError::BadRangeBound {
                text: text.to_owned(),
                part: s.to_owned(),
                source,
            })
    };
    match text.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b)?);
            if a >= b {
                return Err(SeedError::EmptyRange {
                    text: text.to_owned(),
                });
            }
            Ok(a..b)
        }
        None => one_seed(parse(text)?, || text.to_owned()),
    }
}

/// Parses a duration written as `3600s`, `90m`, `1h`, `250ms` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, SeedError> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = number.parse().map_err(|e: ParseIntError| match e.kind() {
        IntErrorKind::PosOverflow => SeedError::DurationTooLong {
            text: text.to_owned(),
        },
        _ => SeedError::BadDuration {
            text: text.to_owned(),
        },
    })?;
    let secs = |k: u64| {
        n.checked_mul(k)
            .map(Duration::from_secs)
            .ok_or_else(|| SeedError::DurationTooLong {
                text: text.to_owned(),
            })
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => secs(60),
        "h" => secs(3600),
        _ => Err(SeedError::UnknownUnit {
            text: text.to_owned(),
            unit: unit.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_durations_parse_or_say_what_is_wrong() {
        assert_eq!(parse_range("3..7"), Ok(3..7));
        assert_eq!(parse_range("9"), Ok(9..10));
        assert!(matches!(
            parse_range("7..3"),
            Err(SeedError::EmptyRange { .. })
        ));
        assert!(matches!(
            parse_range("x..3"),
            Err(SeedError::BadRangeBound { ref part, .. }) if part == "x"
        ));
        assert_eq!(parse_duration("3600s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
        assert!(matches!(
            parse_duration("5 parsecs"),
            Err(SeedError::UnknownUnit { ref unit, .. }) if unit == " parsecs"
        ));
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(SeedError::DurationTooLong { .. })
        ));
        assert!(matches!(
            parse_duration("9999999999999999999h"),
            Err(SeedError::DurationTooLong { .. })
        ));
        assert!(matches!(
            parse_duration("h"),
            Err(SeedError::BadDuration { .. })
        ));
    }

    #[test]
    fn the_last_seed_cannot_be_asked_for_because_no_range_holds_it() {
        let max = u64::MAX.to_string();
        assert!(matches!(
            parse_range(&max),
            Err(SeedError::EmptyRange { .. })
        ));
        assert_eq!(
            parse_range(&(u64::MAX - 1).to_string()),
            Ok(u64::MAX - 1..u64::MAX)
        );
        assert!(matches!(
            seeds_from_var(Ok(max), 0..1),
            Err(SeedError::EmptyRange { .. })
        ));
    }

    #[test]
    fn the_seed_variable_gives_one_seed_or_the_default_or_says_what_to_write() {
        assert_eq!(seeds_from_var(Ok(" 42 ".into()), 0..9), Ok(42..43));
        assert_eq!(seeds_from_var(Err(VarError::NotPresent), 0..9), Ok(0..9));
        let not_a_seed = seeds_from_var(Ok("forty-two".into()), 0..9).unwrap_err();
        assert!(
            matches!(not_a_seed, SeedError::BadSeedVar { .. }),
            "{not_a_seed}"
        );
        let text = not_a_seed.to_string();
        assert!(
            text.contains("\"forty-two\"") && text.contains("EFFECTFUL_SEED=42"),
            "{text}"
        );
        let not_unicode = seeds_from_var(Err(VarError::NotUnicode("\u{fffd}".into())), 0..9);
        assert_eq!(not_unicode, Err(SeedError::SeedVarNotUnicode));
    }

    #[test]
    fn every_seed_error_says_what_to_write_instead() {
        let errors = [
            parse_range("x..3").unwrap_err(),
            parse_range("7..3").unwrap_err(),
            parse_duration("soon").unwrap_err(),
            parse_duration("5 parsecs").unwrap_err(),
            parse_duration("9999999999999999999h").unwrap_err(),
            SeedError::SeedVarNotUnicode,
        ];
        for error in errors {
            let text = error.to_string();
            assert!(
                text.contains("write") || text.contains("use "),
                "{error:?} does not say what to write: {text}"
            );
        }
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
