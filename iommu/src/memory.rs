//! [`TableMemory`]: the pages the remapping tables live in, as the unit reads them.

/// Page size of every table and of every mapping here.
pub const PAGE: u64 = 4096;

/// Physical memory for the remapping tables: 4 KiB pages the unit walks and the kernel
/// writes. The kernel implements it over its frame allocator and identity map; the host
/// tests over a `Vec` of pages.
pub trait TableMemory {
    /// A zeroed 4 KiB page, 4 KiB aligned: its physical address. `None` when memory is
    /// short.
    fn alloc_page(&self) -> Option<u64>;
    /// Gives back a page [`TableMemory::alloc_page`] returned; no unit refers to it any more.
    fn free_page(&self, phys: u64);
    /// The naturally aligned qword at `phys`, inside a page (or a run of pages) this memory
    /// gave out.
    fn read(&self, phys: u64) -> u64;
    /// Writes the naturally aligned qword at `phys`, inside a page this memory gave out, as
    /// one store (the unit may read it at any time and must never see half of it).
    fn write(&self, phys: u64, value: u64);
    /// Makes the qwords written at `[phys, phys + len)` visible to a unit that does not snoop
    /// the processor's caches (ECAP.C = 0): `clflush` of their cache lines, then a fence.
    fn flush(&self, phys: u64, len: u64);
    /// `count` zeroed, physically contiguous 4 KiB pages, 4 KiB aligned: the first one's
    /// physical address (an AMD-Vi device table, command buffer and event log are each one
    /// run of pages). `None` when memory is short. The default can give only one page.
    fn alloc_pages(&self, count: usize) -> Option<u64> {
        if count == 1 { self.alloc_page() } else { None }
    }
    /// Gives back what [`TableMemory::alloc_pages`]`(count)` returned; no unit refers to it
    /// any more.
    fn free_pages(&self, phys: u64, count: usize) {
        if count == 1 {
            self.free_page(phys)
        }
    }
}
