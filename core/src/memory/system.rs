//! The System fake: the wall clock from the simulated clock, UUIDs from a seed.

use crate::effect::{SystemRequest, SystemResponse};
use crate::{Rng, Time, Timestamp};

use super::{DEFAULT_WALL_EPOCH, wall_time};

/// The wall clock and UUID source: `GetCurrentTime` answers `wall_epoch + now`,
/// `GenerateUuid` a version-4 UUID from the fake's [`Rng`]. `WaitForShutdown` is the
/// driver's, not the system's: [`Services`](super::Services) leaves it to the driver;
/// asked directly, the fake answers at once, as a system already shutting down would.
#[derive(Clone, Debug)]
pub struct FakeSystem {
    rng: Rng,
    wall_epoch: Timestamp,
}

impl FakeSystem {
    /// A system whose UUIDs come from `rng` and whose wall clock starts at
    /// [`DEFAULT_WALL_EPOCH`].
    pub fn new(rng: Rng) -> FakeSystem {
        FakeSystem {
            rng,
            wall_epoch: DEFAULT_WALL_EPOCH,
        }
    }

    /// The same system with `wall_epoch` as the wall-clock instant of [`Time::ZERO`].
    pub fn with_wall_epoch(mut self, wall_epoch: Timestamp) -> FakeSystem {
        self.wall_epoch = wall_epoch;
        self
    }

    /// Answers one System request at simulated time `now`.
    pub fn handle(&mut self, now: Time, request: SystemRequest) -> SystemResponse {
        match request {
            SystemRequest::GetCurrentTime(_) => {
                SystemResponse::GetCurrentTime(wall_time(self.wall_epoch, now))
            }
            SystemRequest::GenerateUuid(_) => SystemResponse::GenerateUuid(self.rng.uuid_v4()),
            SystemRequest::WaitForShutdown(_) => SystemResponse::WaitForShutdown(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::{GenerateUuid, GetCurrentTime};

    #[test]
    fn current_time_is_the_wall_epoch_plus_simulated_time() {
        let mut system = FakeSystem::new(Rng::from_seed(1));
        let at = |system: &mut FakeSystem, now| {
            system.handle(now, SystemRequest::GetCurrentTime(GetCurrentTime {}))
        };
        let SystemResponse::GetCurrentTime(t) = at(&mut system, Time::from_millis(86_400_250))
        else {
            panic!("expected a time");
        };
        assert_eq!(t.to_string(), "2026-01-02T00:00:00.250000Z");
        let mut system = system.with_wall_epoch(Timestamp::UNIX_EPOCH);
        assert_eq!(
            at(&mut system, Time::from_secs(2)),
            SystemResponse::GetCurrentTime(Timestamp::from_unix_secs(2))
        );
        // Saturates instead of overflowing.
        assert!(matches!(
            at(&mut system, Time::MAX),
            SystemResponse::GetCurrentTime(_)
        ));
    }

    #[test]
    fn uuids_are_v4_distinct_and_fixed_by_the_seed() {
        let uuids = |seed| {
            let mut system = FakeSystem::new(Rng::from_seed(seed));
            (0..3)
                .map(|_| {
                    match system.handle(Time::ZERO, SystemRequest::GenerateUuid(GenerateUuid {})) {
                        SystemResponse::GenerateUuid(u) => u,
                        other => panic!("unexpected {other:?}"),
                    }
                })
                .collect::<Vec<_>>()
        };
        let a = uuids(9);
        assert!(a.iter().all(|u| u.get_version_num() == 4));
        assert_ne!(a[0], a[1]);
        assert_ne!(a[1], a[2]);
        assert_eq!(a, uuids(9));
        assert_ne!(a, uuids(10));
    }
}
