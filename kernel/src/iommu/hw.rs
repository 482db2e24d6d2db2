//! The hardware side of DMA remapping: a unit's register page and the table pages, for the
//! `iommu` crate's [`Registers`] and [`TableMemory`].

use alloc::vec::Vec;

use iommu::{Registers, TableMemory};
use spin::Mutex;

use crate::memory::dma::DmaBuffer;
use crate::memory::mmio::Mmio;

/// One unit's register page, mapped uncached.
pub struct UnitRegisters(pub Mmio);

impl Registers for UnitRegisters {
    fn read32(&self, offset: u64) -> u32 {
        self.0.read32(offset)
    }
    fn write32(&self, offset: u64, value: u32) {
        self.0.write32(offset, value);
    }
    fn read64(&self, offset: u64) -> u64 {
        self.0.read64(offset)
    }
    fn write64(&self, offset: u64, value: u64) {
        self.0.write64(offset, value);
    }
}

/// Table pages: zeroed frames, identity-mapped, each page (or run of contiguous pages: an
/// AMD IOMMU's device table, command buffer and event log) owned by a [`DmaBuffer`] kept
/// here, sorted by address.
///
/// The list is made with room for [`PAGES`] pages, so that tables made and freed as
/// functions come and go (hot-plug) do not grow the heap: the kernel's resources return
/// exactly to where they were.
///
/// # Invariants
/// Every address `read`, `write` and `flush` are given lies in a buffer of `pages` (the
/// `iommu` crate only touches pages this memory gave it).
pub struct TablePages {
    pages: Mutex<Vec<DmaBuffer>>,
}

/// Table pages the list holds without growing: 256 context tables, the root, and the
/// domains' tables.
const PAGES: usize = 1024;

impl TablePages {
    pub fn new() -> TablePages {
        TablePages {
            pages: Mutex::new(Vec::with_capacity(PAGES)),
        }
    }

    fn owned(&self, phys: u64) -> bool {
        let pages = self.pages.lock();
        let after = pages.partition_point(|p| p.phys() <= phys);
        after > 0 && {
            let b = &pages[after - 1];
            phys - b.phys() < b.len()
        }
    }

    fn insert(&self, buffer: DmaBuffer) -> u64 {
        let phys = buffer.phys();
        let mut pages = self.pages.lock();
        let at = pages.partition_point(|p| p.phys() < phys);
        pages.insert(at, buffer);
        phys
    }
}

impl TableMemory for TablePages {
    fn alloc_page(&self) -> Option<u64> {
        Some(self.insert(DmaBuffer::new(4096)?))
    }

    fn alloc_pages(&self, count: usize) -> Option<u64> {
        let bytes = u64::try_from(count).ok()?.checked_mul(4096)?;
        Some(self.insert(DmaBuffer::new(bytes)?))
    }

    fn free_pages(&self, phys: u64, _count: usize) {
        // One buffer holds the whole run: dropping it gives every frame back.
        self.free_page(phys);
    }

    fn free_page(&self, phys: u64) {
        let mut pages = self.pages.lock();
        if let Ok(at) = pages.binary_search_by_key(&phys, DmaBuffer::phys) {
            // Dropping the buffer gives the frame back.
            pages.remove(at);
        }
    }

    fn read(&self, phys: u64) -> u64 {
        assert!(
            self.owned(phys) && phys.is_multiple_of(8),
            "iommu: table read at {phys:#x}"
        );
        // SAFETY: the invariant and the check: an aligned qword of a table page this memory
        // owns, identity-mapped RAM; the unit only reads it, so a volatile read sees a whole
        // qword the kernel wrote.
        unsafe { core::ptr::read_volatile(phys as *const u64) }
    }

    fn write(&self, phys: u64, value: u64) {
        assert!(
            self.owned(phys) && phys.is_multiple_of(8),
            "iommu: table write at {phys:#x}"
        );
        // SAFETY: as in `read`; one aligned 8-byte store, so the unit sees the old qword or
        // the new one, never half of each. No Rust reference into table pages exists.
        unsafe { core::ptr::write_volatile(phys as *mut u64, value) }
    }

    fn flush(&self, phys: u64, len: u64) {
        let mut line = phys & !63;
        while line < phys + len {
            // SAFETY: `clflush` (every x86-64 processor has it) of an identity-mapped address
            // of a table page (the crate flushes only what it wrote): it writes the line back
            // to memory and changes nothing the program can see.
            unsafe {
                core::arch::asm!("clflush [{}]", in(reg) line, options(nostack, preserves_flags))
            };
            line += 64;
        }
        // SAFETY: `mfence` orders the flushes before what follows; no other effect.
        unsafe { core::arch::asm!("mfence", options(nostack, preserves_flags)) };
    }
}
