//! Test helpers: building tables byte by byte, a memory of placed tables, and a tiny
//! deterministic random source for the no-panic tests.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::hw::PhysRead;

/// A table: `signature`, `revision`, then `body` after the 36-byte header, checksum fixed.
pub(crate) fn table(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    super::build::table(signature, revision, body).expect("test table fits")
}

pub(crate) use super::build::fix_checksum;

/// Physical memory made of byte ranges placed at addresses; anything else is unreadable.
#[derive(Default)]
pub(crate) struct Memory {
    pub(crate) ranges: BTreeMap<u64, Vec<u8>>,
}

impl Memory {
    pub(crate) fn put(&mut self, phys: u64, bytes: Vec<u8>) {
        self.ranges.insert(phys, bytes);
    }
}

impl PhysRead for Memory {
    fn read_phys(&self, phys: u64, buf: &mut [u8]) -> bool {
        let Some((start, bytes)) = self.ranges.range(..=phys).next_back() else {
            return false;
        };
        let Ok(off) = usize::try_from(phys - start) else {
            return false;
        };
        match bytes.get(off..off.saturating_add(buf.len())) {
            Some(src) if src.len() == buf.len() => {
                buf.copy_from_slice(src);
                true
            }
            _ => false,
        }
    }
}

/// xorshift64*: a small deterministic random source.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// A mutation of `seed`: truncated, bytes flipped, random bytes appended, or the
    /// length field set to something odd.
    pub(crate) fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        match self.below(5) {
            0 => v.truncate(self.below(seed.len() + 1)),
            1 => {
                for _ in 0..=self.below(8) {
                    let i = self.below(v.len());
                    if let Some(b) = v.get_mut(i) {
                        *b = self.next() as u8;
                    }
                }
            }
            2 => {
                for _ in 0..self.below(64) {
                    v.push(self.next() as u8);
                }
            }
            3 => {
                let len = match self.below(4) {
                    0 => 0,
                    1 => u32::MAX,
                    2 => self.next() as u32 % 512,
                    _ => v.len() as u32 + 1,
                };
                if let Some(f) = v.get_mut(4..8) {
                    f.copy_from_slice(&len.to_le_bytes());
                }
            }
            _ => {
                // Entry walk stressors: corrupt a length byte somewhere past the header.
                if v.len() > 44 {
                    let i = 44 + self.below(v.len() - 44);
                    if let Some(b) = v.get_mut(i) {
                        *b = [0u8, 1, 2, 0xff][self.below(4)];
                    }
                }
            }
        }
        v
    }

    /// Fully random bytes, sometimes starting with `signature`.
    pub(crate) fn noise(&mut self, signature: &[u8; 4]) -> Vec<u8> {
        let n = self.below(300);
        let mut v: Vec<u8> = (0..n).map(|_| self.next() as u8).collect();
        if self.below(2) == 0 && v.len() >= 4 {
            v[..4].copy_from_slice(signature);
        }
        v
    }
}
