//! The PCI stack: addresses, checked configuration-space access, enumeration, BARs,
//! capabilities (legacy and PCI Express extended, MSI and MSI-X details), names, and
//! `lspci`-style output.
//!
//! Design: everything here is logic over [`pci_types::ConfigRegionAccess`], so it builds
//! `no_std` (+ `alloc`) for the kernel and is tested on the host against `fake` (feature
//! `fake`). The kernel supplies the real mechanism (ECAM MMIO, port I/O) and makes its one
//! soundness promise in the `unsafe` [`ConfigSpace::new`]; everything after that is safe,
//! checked (dword alignment, 256- or 4096-byte limit per root) and returns errors instead of
//! panicking. [`Counting`] wraps any mechanism to count accesses for the benchmark.
//!
//! [`enumerate()`] walks the bus numbers firmware assigned, from the [`Root`]s through
//! PCI-to-PCI bridges, and returns a [`Topology`]: every function with its IDs, class, BARs
//! (sized with decode off, see [`bar`]), interrupt pin and line, capabilities (see
//! [`capability`]) and bridge bus numbers, plus a [`ScanError`] for everything malformed
//! (capability loops, bad pointers, impossible BARs, bridge loops, functions that vanish
//! mid-walk). Hardware cannot make it loop, panic or touch anything outside the promised
//! range; it keeps configuration accesses few (each is an MMIO or port round trip).
//! [`lspci`] prints a topology three ways, [`ids`] names what it can.
//!
//! [`dispatch`] is the interrupt dispatch table, per (CPU, vector), that the kernel and the
//! fake platform share: handlers owned by the table, uninstall that waits for a running
//! handler, spurious accounting.
//!
//! [`intx_lines`] keeps shared legacy INTx lines (one vector per GSI, every attached
//! function's handler on it) and swizzles a pin through bridges to the root bus.
//!
//! [`platform`] is what the kernel provides, split by what it is: [`platform::Interrupts`],
//! [`platform::DeviceMemory`], and [`platform::Platform`] (both, plus the clock and claims).
//! [`function`] is a claimed function as a set of capabilities (reads free, owned registers
//! refused, bus mastering as a guard); [`dma`] and [`window`] are the DMA buffers and BAR
//! windows made from it.
//!
//! [`hotplug`] decodes PCI Express hot-plug slot registers and keeps a slot's state machine;
//! [`assign`] places the BARs of hot-added functions inside their bridge's windows.
//!
//! [`irq`] hands drivers their interrupt vectors as owned values: MSI-X, MSI or INTx,
//! released only by dropping them, with handlers that borrow them.
//!
//! [`range`] is the one bounds check (offset, size, length; never wraps) behind every
//! access through an offset: configuration space, BAR windows, DMA buffers, and the kernel's
//! MMIO mappings and DMA memory.
//!
//! [`mmio_space`] keeps the free virtual space of the kernel's MMIO window (4 KiB and 2 MiB
//! slots); the kernel writes the page tables.
//!
//! [`x86_msi`] composes the x86 MSI message (address and data) for an APIC ID and vector.
//!
//! [`vectors`] allocates interrupt vectors (per-CPU bitmaps, least-loaded spreading, aligned
//! blocks for multi-message MSI) as owned [`vectors::Block`]s that freeing consumes.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

extern crate alloc;

pub mod address;
pub mod assign;
pub mod bar;
pub mod capability;
pub mod config;
pub mod counting;
pub mod dispatch;
pub mod dma;
pub mod enumerate;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod function;
pub mod hotplug;
pub mod ids;
pub mod intx_lines;
pub mod irq;
pub mod lspci;
pub mod mmio_space;
pub mod parking;
pub mod platform;
pub mod range;
pub mod vectors;
pub mod window;
pub mod x86_msi;

pub use address::{Address, AddressError};
pub use bar::{Bar, BarError, BarKind};
pub use capability::{Capability, CapabilityError, ExtendedCapability, Msi, Msix};
pub use config::{ConfigError, ConfigSpace};
pub use counting::Counting;
pub use enumerate::{
    BridgeBuses, BridgeError, Bus, Function, Root, ScanError, ScanErrorKind, Topology, enumerate,
    enumerate_more, probe,
};
