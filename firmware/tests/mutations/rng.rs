//! Configuration and randomness: the `MUTATIONS_SEED`, `MUTATIONS_ONLY` and
//! `MUTATIONS_SCALE` settings, and [`Rng`], a seeded xorshift64* generator with one
//! independent stream per (test, case), so that the same seed gives the same cases and a
//! failing case reproduces on its own.

use crate::DEFAULT_SEED;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

pub(crate) fn seed() -> u64 {
    env_u64("MUTATIONS_SEED").unwrap_or(DEFAULT_SEED)
}

pub(crate) fn only() -> Option<u64> {
    env_u64("MUTATIONS_ONLY")
}

pub(crate) fn cases(base: u64) -> u64 {
    let scale = std::env::var("MUTATIONS_SCALE")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0);
    ((base as f64) * scale).ceil() as u64
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// xorshift64*, one independent stream per (test, case).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn for_case(test: &str, case: u64) -> Self {
        let stream = test.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Self(splitmix(seed() ^ splitmix(stream ^ splitmix(case))) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    pub(crate) fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub(crate) fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    /// One of `fixed`, or a random value.
    pub(crate) fn choose64(&mut self, fixed: &[u64]) -> u64 {
        let i = self.below(fixed.len() + 1);
        fixed.get(i).copied().unwrap_or_else(|| self.next())
    }

    pub(crate) fn choose32(&mut self, fixed: &[u32]) -> u32 {
        let i = self.below(fixed.len() + 1);
        fixed.get(i).copied().unwrap_or_else(|| self.next() as u32)
    }

    pub(crate) fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}
