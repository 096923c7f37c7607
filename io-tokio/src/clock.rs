//! The one clock of a runtime: OS instants as the core's [`Time`].

use std::time::Instant;

use effectful::Time;

/// Maps OS instants to the core's [`Time`]: nanoseconds since the driver started.
///
/// A runtime has one clock, shared by every shard, so that times taken on different
/// shards compare (the in-memory services and pools see one timeline).
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

    /// The OS instant of `time` on this clock (far in the future if `time` is too
    /// late to represent).
    pub fn instant(&self, time: Time) -> Instant {
        self.epoch
            .checked_add(time.since_epoch())
            .unwrap_or_else(|| self.epoch + std::time::Duration::from_secs(86_400 * 365 * 30))
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

    #[test]
    fn a_time_too_late_for_the_os_maps_to_the_far_future_instead_of_panicking() {
        let clock = Clock::start();
        assert!(clock.instant(Time::MAX) > clock.instant(Time::from_secs(86_400)));
    }
}
