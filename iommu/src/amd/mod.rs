//! AMD-Vi DMA remapping (AMD I/O Virtualization Technology (IOMMU) Specification, doc. 48882
//! rev. 3.x): the AMD counterpart of the crate's VT-d remapper, for the same kernel paths.
//!
//! Design note: who may reach what. The rules are those of [`crate::remapper`]:
//!
//! - **Unclaimed functions pass through.** An AMD-Vi unit looks up every request's device ID
//!   (bus << 8 | devfn) in its *device table*; an entry with V = 0 lets the request through
//!   untranslated. The tables start zeroed, so turning a unit on changes nothing for any
//!   device: a graphics controller scanning out the boot framebuffer keeps working.
//! - **A claimed function is isolated.** [`AmdRemapper::isolate`] gives it a domain: an I/O
//!   page table ([`pagetable`]) holding nothing but the firmware's reserved ranges, and a
//!   domain ID that tags what the unit caches; its device table entry (and those of the IDs
//!   its requests may carry instead, [`DeviceRange::alias`]) says V = 1, TV = 1, Mode =
//!   levels, the table's root, IR = IW = 1. From then on it reaches exactly the pages
//!   [`AmdRemapper::map`] added, its DMA memory; [`AmdRemapper::unmap`] returns only once
//!   the unit confirmed it forgot them.
//! - **The domain outlives claims.** Mappings stay while the function's DMA memory does; the
//!   domain goes, and the entries return to V = 0, at [`AmdRemapper::release`].
//!
//! Bus addresses stay physical addresses (identity mappings), as with VT-d.
//!
//! What differs from VT-d is how the unit is told things. It caches device table entries and
//! translations, and forgets them only through commands in its command buffer
//! ([`command`]): INVALIDATE_DEVTAB_ENTRY after an entry changed, INVALIDATE_IOMMU_PAGES for
//! a domain after its table changed (after a mapping too: a unit may cache not-present
//! entries), each submission closed by a COMPLETION_WAIT whose store the driver waits for,
//! bounded. What the unit reports (page faults, bad entries, bad commands) comes back
//! through its event log ([`event`], [`AmdRemapper::take_events`]).
//!
//! Interrupts are remapped when the kernel asks ([`AmdRemapper::enable_interrupt_remapping`],
//! legacy 32-bit entries, [`intremap`]): every device table entry the units cover, and the
//! I/O APICs', then has IV = 1 and names an interrupt table, the requester's own once it
//! was given an entry ([`AmdRemapper::set_interrupt`]), else a shared all-zero table that
//! refuses everything. A message's data (bits 10:0) is only an index into its own
//! requester's table, so a device can raise exactly the interrupts its owner was given.
//! The interrupt fields (the third qword of the entry) and the DMA fields (the first two)
//! are written independently: isolating or releasing a function never touches its
//! interrupts, and remapping interrupts never touches its domain. Until then, and after
//! [`AmdRemapper::disable_interrupt_remapping`], every entry has IV = 0 and the unit passes
//! interrupt messages through as they are.
//!
//! The pieces: [`regs`] (the MMIO registers), [`dte`] (the device table entry),
//! [`pagetable`] (a domain's table), [`intremap`] (interrupt remapping entries),
//! [`command`] (commands and the command buffer),
//! [`event`] (event log entries), [`mod@unit`] (one unit's register protocol) and
//! [`remapper`] (all units and their domains).
//!
//! Resources, who owns them, and what a leak costs. The remapper owns, per unit, a device
//! table (up to 512 contiguous pages, sized for the highest device ID any unit's ranges
//! name), one command buffer page, one event log page and one page holding the completion
//! status; they live as long as the remapper, since a unit may read them at any time while
//! it is on. Each domain owns its page table pages, given back when the domain is destroyed
//! and the unit confirmed it forgot them; when a unit never confirms, they are leaked (a few
//! pages, and the domain ID is never reused) rather than handed out while a device may still
//! walk them.
//!
//! With interrupt remapping on, the remapper also owns one zeroed page shared by every
//! requester without entries and one page per requester with entries (its 256 entries use
//! the first KiB). A requester's page goes back when its last entry is cleared, all of them
//! when remapping is turned off, each only after the unit confirmed it forgot the entries
//! naming it. When a unit never confirms, the page is leaked ([`AmdRemapper::leaked_pages`]
//! counts it): 4 KiB per table, never reused, rather than a page that a device's interrupt
//! message could still be looked up in after it held something else.

pub mod command;
pub mod dte;
pub mod event;
pub mod intremap;
pub mod pagetable;
pub mod regs;
pub mod remapper;
pub mod unit;

use alloc::vec::Vec;

pub use event::Event;
pub use remapper::AmdRemapper;

/// Device IDs a unit translates for (an IVHD's device entries), first to last inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRange {
    pub first: u16,
    pub last: u16,
    /// The device ID their requests carry instead (IVRS alias entries: devices behind a
    /// PCIe-to-PCI bridge), if any.
    pub alias: Option<u16>,
}

/// One unit as the kernel found it (an IVHD block).
pub struct UnitSetup<R> {
    /// Its MMIO registers.
    pub regs: R,
    pub segment: u16,
    /// The unit's own device ID: its requests (command and event log accesses) are never
    /// translated, and it is never isolated.
    pub iommu_id: u16,
    pub ranges: Vec<DeviceRange>,
}
