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
