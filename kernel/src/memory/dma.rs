//! DMA buffers: physically contiguous, zeroed RAM that a device reads and writes.
//!
//! The kernel identity-maps RAM, so a buffer's physical address (what the device is given)
//! is also where the CPU reaches it. The device writes behind the compiler's back, so every
//! access is volatile and goes through the bounds-checked methods (`pci::range`, which cannot
//! wrap).
//!
//! Who owns it: whoever allocated it (a driver's queues, a test). `Drop` gives the frames
//! back to the frame allocator, so the device must be stopped (or told the memory is gone)
//! before the buffer drops. A leaked buffer costs its frames until reboot.

use super::{PAGE_SIZE, frames};

/// A physically contiguous, zeroed DMA buffer.
///
/// # Invariants
/// `[phys, phys + pages * 4 KiB)` are frames owned by this value alone, identity-mapped
/// writable, until `Drop` frees them.
pub struct DmaBuffer {
    phys: u64,
    pages: u64,
}

impl DmaBuffer {
    /// At least `bytes` bytes (whole pages), aligned to 4 KiB; `None` when memory is short.
    pub fn new(bytes: u64) -> Option<DmaBuffer> {
        let pages = bytes.div_ceil(PAGE_SIZE).max(1);
        let phys = frames::with(|f| f.allocate_contiguous(pages, PAGE_SIZE))?;
        // INVARIANT: the frames were just allocated to this buffer alone.
        let buffer = DmaBuffer { phys, pages };
        buffer.zero();
        log::trace!(
            "dma: {} KiB of zeroed DMA memory at {phys:#x}",
            pages * PAGE_SIZE / 1024
        );
        Some(buffer)
    }

    /// Zeroes the whole buffer: one `rep stosq` (eight bytes a step) instead of a checked
    /// access per word or a byte-wise `memset` (zeroing a driver's 1 MiB staging buffer word
    /// by word cost about a million instructions). Ordinary stores are enough: they are
    /// ordered before the register write that hands the address out (x86 keeps stores in
    /// order), and a device still holding the address of reused memory (`pci::parking`) may
    /// write at any time anyway, which the buffer's volatile accessors allow for.
    pub fn zero(&self) {
        // SAFETY: the invariant: `pages` frames at `phys`, identity-mapped RAM owned by this
        // buffer alone, with no Rust reference into it; `rep stosq` writes exactly `rcx`
        // quadwords from `rdi` upwards (the direction flag is clear, as the ABI requires) and
        // touches nothing else.
        unsafe {
            core::arch::asm!(
                "rep stosq",
                inout("rcx") self.pages * PAGE_SIZE / 8 => _,
                inout("rdi") self.phys => _,
                in("rax") 0u64,
                options(nostack, preserves_flags)
            );
        }
    }

    /// Physical address of the first byte (what the device is given).
    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.pages * PAGE_SIZE
    }

    /// Whether the buffer is empty (never).
    pub fn is_empty(&self) -> bool {
        self.pages == 0
    }

    /// Address of a naturally aligned access of `size` bytes at `offset`; panics outside.
    fn at(&self, offset: u64, size: u64) -> u64 {
        match pci::range::checked_access(offset, size, self.len()) {
            // Cannot wrap: the buffer's frames end at or below the top of physical memory.
            Ok(r) => self.phys + r.start,
            Err(e) => panic!(
                "DMA access of {size} bytes at {offset:#x} outside {:#x} bytes: {e}",
                self.len()
            ),
        }
    }

    /// Address of `len` bytes at `offset`; panics outside.
    fn at_range(&self, offset: u64, len: u64) -> u64 {
        match pci::range::checked_range(offset, len, self.len()) {
            // Cannot wrap: the buffer's frames end at or below the top of physical memory.
            Ok(r) => self.phys + r.start,
            Err(e) => panic!(
                "DMA copy of {len:#x} bytes at {offset:#x} outside {:#x} bytes: {e}",
                self.len()
            ),
        }
    }

    /// Reads a dword.
    pub fn read32(&self, offset: u64) -> u32 {
        let p = self.at(offset, 4) as *const u32;
        // SAFETY: inside the buffer (checked), which the invariant says is mapped and ours.
        unsafe { p.read_volatile() }
    }

    /// Writes a dword.
    pub fn write32(&self, offset: u64, value: u32) {
        let p = self.at(offset, 4) as *mut u32;
        // SAFETY: as in `read32`.
        unsafe { p.write_volatile(value) }
    }

    /// Writes a qword.
    pub fn write64(&self, offset: u64, value: u64) {
        let p = self.at(offset, 8) as *mut u64;
        // SAFETY: as in `read32`.
        unsafe { p.write_volatile(value) }
    }

    /// Writes a word.
    pub fn write16(&self, offset: u64, value: u16) {
        let p = self.at(offset, 2) as *mut u16;
        // SAFETY: as in `read32`.
        unsafe { p.write_volatile(value) }
    }

    /// Reads a word.
    pub fn read16(&self, offset: u64) -> u16 {
        let p = self.at(offset, 2) as *const u16;
        // SAFETY: as in `read32`.
        unsafe { p.read_volatile() }
    }

    /// Writes a byte.
    pub fn write8(&self, offset: u64, value: u8) {
        let p = self.at(offset, 1) as *mut u8;
        // SAFETY: as in `read32`.
        unsafe { p.write_volatile(value) }
    }

    /// Reads a byte.
    pub fn read8(&self, offset: u64) -> u8 {
        let p = self.at(offset, 1) as *const u8;
        // SAFETY: as in `read32`.
        unsafe { p.read_volatile() }
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        match frames::with(|f| f.free(self.phys, self.pages)) {
            Ok(()) => log::trace!(
                "dma: {} KiB at {:#x} back to the frame allocator",
                self.pages * PAGE_SIZE / 1024,
                self.phys
            ),
            Err(e) => log::error!("dma: freeing {:#x} failed: {e:?}", self.phys),
        }
    }
}

impl pci::platform::DmaRegion for DmaBuffer {
    fn bus_address(&self) -> u64 {
        // The physical address: without remapping that is what the device uses, and with it
        // (`crate::iommu`) a domain maps each page at its own physical address.
        self.phys
    }

    fn len(&self) -> u64 {
        DmaBuffer::len(self)
    }

    fn read8(&self, offset: u64) -> u8 {
        DmaBuffer::read8(self, offset)
    }

    fn write8(&self, offset: u64, value: u8) {
        DmaBuffer::write8(self, offset, value)
    }

    fn read32(&self, offset: u64) -> u32 {
        DmaBuffer::read32(self, offset)
    }

    fn write32(&self, offset: u64, value: u32) {
        DmaBuffer::write32(self, offset, value)
    }

    fn read_bytes(&self, offset: u64, out: &mut [u8]) {
        if out.is_empty() {
            return;
        }
        let src = self.at_range(offset, out.len() as u64) as *const u8;
        // The device's writes must be seen: no load may move above this point (the caller has
        // just observed a completion with a volatile read).
        core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
        // SAFETY: `[src, src + len)` lies inside the buffer (checked), which the invariant says
        // is mapped and ours; `out` is a distinct Rust slice, so they do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) }
    }

    fn write_bytes(&self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let dst = self.at_range(offset, data.len() as u64) as *mut u8;
        // SAFETY: as in `read_bytes`.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) }
        // Every byte is in memory before the device is told to look (a doorbell write).
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
    }

    fn zero(&self) {
        DmaBuffer::zero(self);
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
    }
}
