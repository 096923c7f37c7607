//! The thin tokio driver for `effectful` (to be filled by the driver issues).
//!
//! It will move bytes between real sockets and the core's sans-IO state machines and
//! supply time and entropy; no protocol logic lives here. It will hold:
//! - interpreters per effect family (PostgreSQL, Redis, WebSocket, ...), pools and
//!   reconnection with backoff;
//! - the production surface of the seed tutorial: settings from the environment and
//!   `.env`, `/health`, `/metrics`, logs, error reporting, graceful shutdown.
//!
//! Today it holds only the clock adapter every driver needs: the mapping from an OS
//! instant to the core's [`effectful::Time`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::time::Instant;

use effectful::Time;

/// Maps OS instants to the core's [`Time`]: nanoseconds since the driver started.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn start() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// The current time on this clock.
    pub fn now(&self) -> Time {
        self.at(Instant::now())
    }

    /// `instant` on this clock (the epoch if it is earlier).
    pub fn at(&self, instant: Instant) -> Time {
        Time::from_nanos(effectful::duration_nanos(
            instant.saturating_duration_since(self.epoch),
        ))
    }

    /// The OS instant of `time` on this clock.
    pub fn instant(&self, time: Time) -> Instant {
        self.epoch + time.since_epoch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clock_round_trips_instants_and_never_goes_before_its_epoch() {
        let clock = Clock::start();
        let later = clock.instant(Time::from_millis(1500));
        assert_eq!(clock.at(later), Time::from_millis(1500));
        assert_eq!(
            clock.at(clock.instant(Time::ZERO) - Duration::from_secs(1)),
            Time::ZERO
        );
    }
}
