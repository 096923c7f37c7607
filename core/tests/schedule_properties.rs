//! Property tests of schedules: the combinators keep their bounds whatever they are
//! built from and whatever they draw.

#[path = "support/schedules.rs"]
mod schedules;

use std::time::Duration;

use effectful::{Rng, Schedule, duration_nanos};
use proptest::collection::vec;
use proptest::prelude::*;

use schedules::{Model, ms, schedule_strategy};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn recurs_n_allows_at_most_n_retries(schedule in schedule_strategy(), n in 0u32..=8, start in 0u64..=200, seed: u64) {
        prop_assert!(schedule.recurs(n).delays(ms(start), seed).len() <= n as usize);
        prop_assert_eq!(Schedule::recurs_only(n).delays(ms(start), seed), vec![Duration::ZERO; n as usize]);
    }

    #[test]
    fn jittered_delays_stay_within_their_fraction(
        base in 0u64..=1_000_000_000,
        exponential: bool,
        fraction in prop_oneof![Just(0.0), Just(1.0), 0.0f64..=1.0],
        n in 0u32..=16,
        seed: u64,
    ) {
        let d = Duration::from_nanos(base);
        let plain = if exponential { Schedule::exponential(d) } else { Schedule::spaced(d) };
        let jittered = plain.clone().jittered(fraction).recurs(n);
        let delays = jittered.delays(Duration::ZERO, seed);
        let unjittered = plain.recurs(n).delays(Duration::ZERO, seed);
        prop_assert_eq!(delays.len(), unjittered.len());
        for (delay, d) in delays.iter().zip(&unjittered) {
            let (delay, d) = (duration_nanos(*delay) as f64, duration_nanos(*d) as f64);
            prop_assert!(delay >= (d * (1.0 - fraction)).floor() - 1.0, "{} below {} - {}", delay, d, fraction);
            prop_assert!(delay <= (d * (1.0 + fraction)).ceil() + 1.0, "{} above {} + {}", delay, d, fraction);
        }
        prop_assert_eq!(delays, jittered.delays(Duration::ZERO, seed), "the draws come from the seed");
    }

    #[test]
    fn up_to_stops_once_the_elapsed_time_reaches_the_limit(
        schedule in schedule_strategy(),
        n in 0u32..=30,
        limit in (0u64..=200).prop_map(ms),
        start in (0u64..=50).prop_map(ms),
        step in (1u64..=50).prop_map(ms),
        seed: u64,
    ) {
        let plain = schedule.clone().recurs(n).delays(start, seed);
        let limited = schedule.recurs(n).up_to(limit).delays(start, seed);
        // Up-to draws nothing, so it cuts the same run short and changes nothing else.
        prop_assert!(limited.len() <= plain.len());
        prop_assert_eq!(&limited[..], &plain[..limited.len()]);
        let mut elapsed = start;
        for delay in &limited {
            prop_assert!(elapsed < limit, "a retry at {:?} with a limit of {:?}", elapsed, limit);
            elapsed += *delay;
        }
        if limited.len() < plain.len() {
            prop_assert!(elapsed >= limit, "stopped at {:?}, before the limit of {:?}", elapsed, limit);
        }
        let spaced = Schedule::spaced(step).up_to(limit).delays(Duration::ZERO, seed);
        prop_assert_eq!(spaced.len() as u128, limit.as_nanos().div_ceil(step.as_nanos()));
    }

    #[test]
    fn schedule_steps_fall_within_the_bounds_of_their_draws(
        schedule in schedule_strategy(),
        n in 0u32..=10,
        work in vec((0u64..=30).prop_map(ms), 12),
        seed: u64,
    ) {
        let schedule = schedule.recurs(n);
        let mut state = schedule.start();
        let mut rng = Rng::from_seed(seed);
        let mut model = Model::new(&schedule);
        let mut elapsed = Duration::ZERO;
        for extra in work {
            let real = schedule.next(&mut state, elapsed, &mut rng);
            match (real, model.next(elapsed)) {
                (None, None) => break,
                (Some(delay), Some((lo, hi))) => {
                    let delay_nanos = duration_nanos(delay);
                    prop_assert!(lo <= delay_nanos && delay_nanos <= hi, "{:?} outside {}..={} at {:?}", delay, lo, hi, elapsed);
                    // The next attempt fails after doing some work.
                    elapsed += delay + extra;
                }
                (real, model) => prop_assert!(false, "the schedule said {:?}, its bounds {:?}, at {:?}", real, model, elapsed),
            }
        }
    }
}
