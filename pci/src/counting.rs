//! [`Counting`]: a [`ConfigRegionAccess`] wrapper that counts reads and writes, for the
//! benchmark (configuration accesses are slow: every one is an MMIO round trip or two port
//! accesses, and a VM exit under virtualisation).

use core::sync::atomic::{AtomicUsize, Ordering};

use pci_types::{ConfigRegionAccess, PciAddress};

/// Forwards every access to `A` and counts it.
#[derive(Debug, Default)]
pub struct Counting<A> {
    inner: A,
    reads: AtomicUsize,
    writes: AtomicUsize,
}

impl<A> Counting<A> {
    /// Wraps `inner` with both counters at zero.
    pub const fn new(inner: A) -> Self {
        Counting {
            inner,
            reads: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
        }
    }

    /// The wrapped mechanism.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// Unwraps the mechanism.
    pub fn into_inner(self) -> A {
        self.inner
    }

    /// Dword reads since creation or the last [`reset`](Self::reset).
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }

    /// Dword writes since creation or the last [`reset`](Self::reset).
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::Relaxed)
    }

    /// Reads plus writes.
    pub fn accesses(&self) -> usize {
        self.reads() + self.writes()
    }

    /// Sets both counters to zero.
    pub fn reset(&self) {
        self.reads.store(0, Ordering::Relaxed);
        self.writes.store(0, Ordering::Relaxed);
    }
}

impl<A: ConfigRegionAccess> ConfigRegionAccess for Counting<A> {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        self.reads.fetch_add(1, Ordering::Relaxed);
        // SAFETY: our caller upholds the same contract for the same address and offset.
        unsafe { self.inner.read(address, offset) }
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        // SAFETY: our caller upholds the same contract for the same address and offset.
        unsafe { self.inner.write(address, offset, value) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeConfigSpace, FakeFunction};
    use crate::{Address, ConfigSpace, Root};

    #[test]
    fn counts_and_resets() {
        let fake = FakeConfigSpace::new();
        let a = Address::new(0, 0, 3, 0).unwrap();
        fake.add(
            a,
            FakeFunction::endpoint(0x1234, 0x11e8, 0x00, 0xff, 0, 0x10),
        );
        let counting = Counting::new(fake);
        let roots = [Root {
            segment: 0,
            bus: 0,
            extended: true,
        }];
        // SAFETY: the fake answers any aligned offset below 4096 of any address.
        let cs = unsafe { ConfigSpace::new(&counting, &roots) };
        assert_eq!(cs.read32(a, 0), Ok(0x11e8_1234));
        cs.read8(a, 9).unwrap();
        cs.write32(a, 0x04, 0).unwrap();
        assert_eq!(
            cs.read32(a, 0x1001),
            Err(crate::ConfigError::Misaligned {
                offset: 0x1001,
                width: 4
            })
        );
        assert_eq!(
            (counting.reads(), counting.writes(), counting.accesses()),
            (2, 1, 3)
        );
        counting.reset();
        assert_eq!((counting.reads(), counting.writes()), (0, 0));
    }
}
