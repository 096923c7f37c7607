//! OS entropy and the wall clock: the inputs the core never reads itself.
//!
//! Two kinds of randomness, kept apart:
//! - the **engine seed** ([`seed`]) fixes programs' jitter and `Fx::random_u64`; it is
//!   logged at start so a run's choices can be told apart, and so it must never feed
//!   a secret;
//! - **secret entropy** ([`fill_secret`], [`uuid_v4`]) for nonces, salts, tokens and
//!   identifiers comes straight from the OS on every draw and is never logged.

use std::time::{SystemTime, UNIX_EPOCH};

use effectful::Timestamp;

/// The OS could not supply randomness.
#[derive(Debug, thiserror::Error)]
#[error(
    "the operating system could not supply random bytes ({0}); \
     check that /dev/urandom (or the platform's equivalent) is readable"
)]
pub struct EntropyError(String);

/// Fills `bytes` from the OS's cryptographically secure generator. For secrets:
/// never log what it gives.
pub fn fill_secret(bytes: &mut [u8]) -> Result<(), EntropyError> {
    getrandom::fill(bytes).map_err(|e| EntropyError(e.to_string()))
}

/// A fresh engine seed from the OS. Logged by the runtime; never use it for secrets.
pub fn seed() -> Result<u64, EntropyError> {
    getrandom::u64().map_err(|e| EntropyError(e.to_string()))
}

/// A random (version 4) UUID from OS entropy.
pub fn uuid_v4() -> Result<uuid::Uuid, EntropyError> {
    let mut bytes = [0u8; 16];
    fill_secret(&mut bytes)?;
    Ok(uuid::Builder::from_random_bytes(bytes).into_uuid())
}

/// The wall clock now, as the core's [`Timestamp`] (microseconds since the Unix
/// epoch; a clock set before 1970 gives a negative timestamp).
pub fn wall_clock() -> Timestamp {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => {
            Timestamp::from_unix_micros(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
        }
        Err(before) => Timestamp::from_unix_micros(
            i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |m| -m),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_from_the_os_are_version_4_and_distinct() {
        let a = uuid_v4().expect("OS entropy");
        let b = uuid_v4().expect("OS entropy");
        assert_eq!(a.get_version_num(), 4);
        assert_ne!(a, b);
    }

    #[test]
    fn the_wall_clock_is_after_2025() {
        assert!(wall_clock() > Timestamp::from_unix_secs(1_735_689_600));
    }
}
