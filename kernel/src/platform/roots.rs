//! Where PCI enumeration starts: the root bus of every host bridge the AML namespace
//! describes (`PNP0A08`/`PNP0A03` with `_SEG` and `_BBN`; ACPI 6.5 §6.5.5-6.5.6), found by
//! the `firmware` crate; without AML, the first bus of each ECAM window (or bus 0).
//!
//! A machine may have several root buses in one segment (QEMU's `pxb-pcie` adds bus 0x80,
//! multi-socket servers have one per socket); only firmware knows where they start.

/// A root bus: where enumeration starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RootBus {
    /// PCI segment group.
    pub segment: u16,
    /// First bus number below the host bridge.
    pub bus: u8,
}
