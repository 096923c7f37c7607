//! A small seeded random number generator: the only randomness the core knows.

use serde::{Deserialize, Serialize};

/// xoshiro256** seeded through SplitMix64: fast, good statistical quality, and its
/// whole state is four integers, so a run can be written down and replayed.
///
/// Not for cryptography: tokens and password hashes come from drivers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole future is fixed by `seed`.
    pub fn from_seed(seed: u64) -> Rng {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The generator of stream `index` in `domain` of a run seeded with `seed`.
    ///
    /// Every consumer of randomness in a run (the engine's programs, each fake, the
    /// simulator's scheduler, a scenario) names its own domain, so no two streams
    /// coincide however the indices are chosen: `(seed, domain, index)` is hashed
    /// through SplitMix64 before seeding.
    pub fn derive(seed: u64, domain: &str, index: u64) -> Rng {
        // FNV-1a of the domain name, then a SplitMix64 chain over the three parts.
        let mut tag: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in domain.bytes() {
            tag = (tag ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mixed = mix(mix(mix(seed) ^ tag) ^ index);
        Rng::from_seed(mixed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform integer in `0..n` (`0` when `n == 0`), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift with rejection.
        loop {
            let x = self.next_u64();
            let m = u128::from(x) * u128::from(n);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `true` with probability `p` (clamped to `[0, 1]`).
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit_f64() < p
    }

    /// 16 random bytes shaped as an RFC 4122 version-4 UUID.
    pub fn uuid_v4(&mut self) -> uuid::Uuid {
        let hi = self.next_u64().to_be_bytes();
        let lo = self.next_u64().to_be_bytes();
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&hi);
        b[8..].copy_from_slice(&lo);
        uuid::Builder::from_random_bytes(b).into_uuid()
    }
}

/// The SplitMix64 finaliser: a bijective 64-bit mix.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_different_seed_different_stream() {
        let a: Vec<u64> = (0..8)
            .scan(Rng::from_seed(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..8)
            .scan(Rng::from_seed(7), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..8)
            .scan(Rng::from_seed(8), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = Rng::from_seed(1);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let x = r.below(5);
            assert!(x < 5);
            seen[x as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn streams_of_different_domains_or_indices_do_not_coincide() {
        let first = |domain, index| Rng::derive(9, domain, index).next_u64();
        assert_ne!(first("engine.program", 3), first("fake.database", 3));
        assert_ne!(first("engine.program", 3), first("engine.program", 4));
        assert_ne!(
            first("engine.program", 3),
            Rng::derive(10, "engine.program", 3).next_u64()
        );
        assert_eq!(first("engine.program", 3), first("engine.program", 3));
    }

    #[test]
    fn uuids_are_version_4() {
        let u = Rng::from_seed(3).uuid_v4();
        assert_eq!(u.get_version_num(), 4);
    }
}
