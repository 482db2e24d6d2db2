//! [`Parking`]: the DMA memory of functions whose claim ended, kept for their next claim.
//!
//! Design note. At the end of a claim bus mastering is off, so the device cannot write
//! anywhere *now*. But it still holds every address its driver gave it (queue bases,
//! descriptors), and the next claim of the same function turns bus mastering on again. A
//! driver that rings a doorbell before it resets the device would then have the device write
//! into memory the kernel handed to someone else in between. Without an IOMMU, or a function
//! reset the PCI layer can rely on (many devices have neither FLR nor a power-state reset),
//! nothing makes the device forget. So DMA memory never goes back to general use while the
//! function it was given to exists:
//!
//! - at the end of a claim, the function's DMA regions (its quarantine, and what is left of
//!   its pool) are **parked** here under its address;
//! - the next claim of that address **takes them back** as its pool, and its
//!   [`BusMaster::dma_buffer`](crate::function::BusMaster::dma_buffer) calls are served from the pool
//!   first (zeroed again), so a driver bound again and again reuses its memory instead of
//!   taking more;
//! - they are **freed** only when the function is gone ([`Parking::release`], called by the
//!   platform once nothing answers at the address any more, a hot-plug slot powered off or
//!   emptied): no device is left to write there. A claim that finds a *different* device at
//!   the address (other vendor and device IDs) frees what the old one left: that device is
//!   gone too.
//!
//! A stale write by the device can then only land in DMA memory of the same function, whose
//! contents every driver treats as the device's anyway (read through bounds-checked, volatile
//! accessors, and checked before use).
//!
//! Who owns what: a [`Parking`] owns the parked regions (one per platform: the kernel's is a
//! static). A region leaves it to a claim's pool, or to its `Drop` when the function is
//! released. Nothing is leaked: a function claimed again with the same driver reuses the
//! same regions, so repeated unbinding and binding ends at the same memory use.

use alloc::boxed::Box;
use alloc::vec::Vec;

use spin::Mutex;

use crate::Address;
use crate::platform::DmaRegion;

/// DMA regions of released functions, by function address (see the module documentation).
///
/// # Invariants
/// Every region here belongs to the function it is parked under, whose claim has ended with
/// bus mastering off; it is freed only by [`Parking::release`].
pub struct Parking {
    lots: Mutex<Vec<Lot>>,
}

/// The parked regions of one function.
struct Lot {
    address: Address,
    /// Vendor ID | Device ID << 16 of the device the regions were given to.
    ids: u32,
    regions: Vec<Box<dyn DmaRegion>>,
}

impl Default for Parking {
    fn default() -> Self {
        Parking::new()
    }
}

impl Parking {
    /// An empty parking.
    pub const fn new() -> Parking {
        Parking {
            lots: Mutex::new(Vec::new()),
        }
    }

    /// Parks `regions` under `address`, given to the device with IDs `ids` (Vendor ID |
    /// Device ID << 16), with whatever is parked there already.
    pub(crate) fn park(&self, address: Address, ids: u32, regions: Vec<Box<dyn DmaRegion>>) {
        if regions.is_empty() {
            return;
        }
        let mut lots = self.lots.lock();
        match lots.iter_mut().find(|l| l.address == address) {
            Some(lot) if lot.ids == ids => lot.regions.extend(regions),
            // Another device's regions at the same address: that device is gone (this one
            // answers there), so they could be freed; keeping both is as safe.
            _ => lots.push(Lot {
                address,
                ids,
                regions,
            }),
        }
    }

    /// Takes back everything parked under `address` for a new claim of the device with IDs
    /// `ids`. What another device left there is freed: that device no longer answers at
    /// the address, this one does.
    pub(crate) fn take(&self, address: Address, ids: u32) -> Vec<Box<dyn DmaRegion>> {
        let (mine, others) = {
            let mut lots = self.lots.lock();
            let mut mine = Vec::new();
            let mut others = Vec::new();
            let mut i = 0;
            while i < lots.len() {
                if lots[i].address != address {
                    i += 1;
                    continue;
                }
                let lot = lots.swap_remove(i);
                if lot.ids == ids {
                    mine.extend(lot.regions);
                } else {
                    others.push(lot);
                }
            }
            // The list's own memory follows what is parked, so that parking and taking
            // back leave the heap as they found it (the kernel's tests compare it byte for
            // byte).
            lots.shrink_to_fit();
            (mine, others)
        };
        drop(others);
        mine
    }

    /// The function at `address` is gone (removed from the bus): its parked regions are
    /// freed. Returns how many regions and bytes that was.
    ///
    /// Only for a function no device answers at any more: a function that still exists may
    /// write to its regions whenever a claim turns bus mastering on.
    pub fn release(&self, address: Address) -> (usize, u64) {
        let lots: Vec<Lot> = {
            let mut lots = self.lots.lock();
            let (gone, kept) = core::mem::take(&mut *lots)
                .into_iter()
                .partition(|l| l.address == address);
            *lots = kept;
            lots.shrink_to_fit();
            gone
        };
        let regions = lots.iter().flat_map(|l| &l.regions);
        let freed = (
            regions.clone().count(),
            regions.map(|r| r.len()).sum::<u64>(),
        );
        drop(lots);
        freed
    }

    /// The addresses something is parked under.
    pub fn addresses(&self) -> Vec<Address> {
        let lots = self.lots.lock();
        let mut out: Vec<Address> = lots.iter().map(|l| l.address).collect();
        out.dedup();
        out
    }

    /// Regions and bytes parked under `address`.
    pub fn parked(&self, address: Address) -> (usize, u64) {
        let lots = self.lots.lock();
        lots.iter()
            .filter(|l| l.address == address)
            .flat_map(|l| &l.regions)
            .fold((0, 0), |(n, b), r| (n + 1, b + r.len()))
    }

    /// Regions and bytes parked in all.
    pub fn total(&self) -> (usize, u64) {
        let lots = self.lots.lock();
        lots.iter()
            .flat_map(|l| &l.regions)
            .fold((0, 0), |(n, b), r| (n + 1, b + r.len()))
    }
}

/// Takes from `pool` the smallest region of at least `bytes` bytes, if one is at most twice
/// the request (8 KiB for small ones): a larger one stays for a request that needs it.
pub(crate) fn take_fitting(
    pool: &mut Vec<Box<dyn DmaRegion>>,
    bytes: u64,
) -> Option<Box<dyn DmaRegion>> {
    let want = bytes.max(1);
    let limit = want.max(4096).saturating_mul(2);
    let (i, _) = pool
        .iter()
        .enumerate()
        .filter(|(_, r)| (want..=limit).contains(&r.len()))
        .min_by_key(|(_, r)| r.len())?;
    Some(pool.swap_remove(i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use core::sync::atomic::{AtomicUsize, Ordering};

    /// A region that counts its drops.
    struct Counted(u64, Arc<AtomicUsize>);

    impl DmaRegion for Counted {
        fn bus_address(&self) -> u64 {
            0x1000
        }
        fn len(&self) -> u64 {
            self.0
        }
        fn read8(&self, _: u64) -> u8 {
            0
        }
        fn write8(&self, _: u64, _: u8) {}
        fn read32(&self, _: u64) -> u32 {
            0
        }
        fn write32(&self, _: u64, _: u32) {}
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn regions(lens: &[u64], drops: &Arc<AtomicUsize>) -> Vec<Box<dyn DmaRegion>> {
        lens.iter()
            .map(|&l| Box::new(Counted(l, drops.clone())) as Box<dyn DmaRegion>)
            .collect()
    }

    const A: Address = Address::new_masked(0, 0, 3, 0);
    const B: Address = Address::new_masked(0, 0, 4, 0);
    const NVME: u32 = 0x1b36 | 0x0010 << 16;
    const EDU: u32 = 0x1234 | 0x11e8 << 16;

    #[test]
    fn another_device_at_the_address_gets_nothing_and_frees_the_old_ones() {
        let drops = Arc::new(AtomicUsize::new(0));
        let parking = Parking::new();
        parking.park(A, NVME, regions(&[4096, 8192], &drops));
        // A different card in the slot: the old one is gone.
        assert!(parking.take(A, EDU).is_empty());
        assert_eq!(drops.load(Ordering::Relaxed), 2);
        assert_eq!(parking.total(), (0, 0));
    }

    #[test]
    fn parked_regions_go_back_to_their_function_and_are_freed_only_on_release() {
        let drops = Arc::new(AtomicUsize::new(0));
        let parking = Parking::new();
        parking.park(A, NVME, regions(&[4096, 8192], &drops));
        parking.park(A, NVME, regions(&[4096], &drops));
        parking.park(B, NVME, regions(&[65536], &drops));
        assert_eq!(parking.parked(A), (3, 16384));
        assert_eq!(parking.total(), (4, 81920));
        assert_eq!(parking.addresses(), [A, B]);
        let back = parking.take(A, NVME);
        assert_eq!(back.len(), 3);
        assert_eq!(parking.parked(A), (0, 0));
        assert!(parking.take(A, NVME).is_empty());
        parking.park(A, NVME, back);
        assert_eq!(
            drops.load(Ordering::Relaxed),
            0,
            "nothing freed while parked"
        );
        assert_eq!(parking.release(A), (3, 16384));
        assert_eq!(drops.load(Ordering::Relaxed), 3);
        assert_eq!(
            parking.parked(B),
            (1, 65536),
            "another function's lot untouched"
        );
        assert_eq!(parking.release(A), (0, 0));
    }

    #[test]
    fn the_smallest_region_that_fits_is_taken_and_never_one_far_too_big() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut pool = regions(&[1 << 20, 4096, 16384, 8192], &drops);
        assert_eq!(take_fitting(&mut pool, 5000).map(|r| r.len()), Some(8192));
        assert_eq!(take_fitting(&mut pool, 100).map(|r| r.len()), Some(4096));
        // 16 KiB is more than twice 4 KiB: kept for a request that needs it.
        assert!(take_fitting(&mut pool, 4096).is_none());
        assert!(take_fitting(&mut pool, 1 << 21).is_none());
        assert_eq!(
            take_fitting(&mut pool, 600 << 10).map(|r| r.len()),
            Some(1 << 20)
        );
        assert_eq!(pool.len(), 1);
        assert_eq!(drops.load(Ordering::Relaxed), 3);
    }
}
