//! The machine as the firmware layer sees it: one trait, [`Hardware`].
//!
//! The kernel implements it on real hardware (identity-mapped RAM, owned MMIO mappings, port
//! I/O, ECAM); host tests and `acpi-probe` implement it with a simulated machine. Nothing in
//! this crate touches hardware any other way, which is what makes it testable on the host.

/// A PCI configuration-space address as ACPI names it (segment, bus, device, function).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PciLocation {
    /// Segment group.
    pub segment: u16,
    /// Bus.
    pub bus: u8,
    /// Device (0..32).
    pub device: u8,
    /// Function (0..8).
    pub function: u8,
}

/// Physical memory, read by copying (tables are parsed from copies, never in place).
pub trait PhysRead {
    /// Copies `buf.len()` bytes starting at physical address `phys` into `buf`. Returns
    /// `false` (and leaves `buf` unspecified) when that range cannot be read.
    fn read_phys(&self, phys: u64, buf: &mut [u8]) -> bool;
}

/// Everything the AML engine may touch on the machine. Implementations must never panic:
/// AML runs firmware's code, which may name any address, port or PCI function.
pub trait Hardware: PhysRead + Sync {
    /// Maps `len` bytes of physical memory at `phys` for direct access (tables, operation
    /// regions) and returns where they appear, or `None` when that range cannot be mapped.
    /// The mapping stays valid until [`Hardware::unmap`] is called with the same pointer and
    /// length.
    fn map(&self, phys: u64, len: usize) -> Option<core::ptr::NonNull<u8>>;
    /// Ends a mapping made by [`Hardware::map`].
    ///
    /// # Safety
    /// `virt` and `len` are exactly a pointer and length `map` returned and not yet unmapped,
    /// and nothing uses the mapping afterwards.
    unsafe fn unmap(&self, virt: core::ptr::NonNull<u8>, len: usize);
    /// Reads an I/O port (`width` 8, 16 or 32 bits).
    fn port_read(&self, port: u16, width: u32) -> u32;
    /// Writes an I/O port.
    fn port_write(&self, port: u16, value: u32, width: u32);
    /// Reads `width` bits (8, 16, 32 or 64) at byte offset `offset` of a function's
    /// configuration space; all ones when nothing answers.
    fn pci_read(&self, at: PciLocation, offset: u16, width: u32) -> u64;
    /// Writes configuration space.
    fn pci_write(&self, at: PciLocation, offset: u16, value: u64, width: u32);
    /// Nanoseconds since some fixed point, monotonic.
    fn now_ns(&self) -> u64;
    /// Busy-waits `us` microseconds (AML `Stall`).
    fn stall_us(&self, us: u64);
    /// Waits `ms` milliseconds (AML `Sleep`; the kernel has nothing else to run).
    fn sleep_ms(&self, ms: u64);
}
