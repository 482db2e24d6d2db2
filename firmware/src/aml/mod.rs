//! The AML namespace through ACPICA, the reference implementation of ACPI's machine language.
//!
//! Why ACPICA: measured on real machines' tables (see the crate's docs/firmware.md), the
//! `acpi` crate's interpreter (6.1.1) panicked on 60 % of 655 machines and hung on 29;
//! 7.0.0-pre1 panicked on 43 and routed every host bridge's `_PRT` on 83 %. ACPICA, which
//! Linux, FreeBSD and Windows-class firmware testing use, is built here from the C source
//! the `acpica` crate bundles, with the OS layer ([`os`]) written in this crate.
//!
//! - [`os`]: the `AcpiOs*` services on top of [`crate::hw::Hardware`], with the time budget.
//! - [`engine`]: loading the namespace and evaluating objects.
//! - [`routing`]: host bridges and `_PRT`, link devices included.
//! - [`osc`]: `_OSC`, which PCI Express controls firmware grants (native hot-plug).
//! - [`resources`]: resource descriptors (`_CRS`, `_PRS`, `_SRS`), pure Rust.
//! - [`scan`]: how many devices may be host bridges, from the AML's bytes without running
//!   it (whether a boot needs to load the namespace at all).

pub mod engine;
mod ffi;
pub mod os;
pub mod osc;
pub mod resources;
pub mod routing;
pub mod scan;

pub use engine::{IsaOverride, LoadOptions, Value, evaluate, load};
pub use os::Budget;

use alloc::string::String;
use alloc::vec::Vec;

/// Interrupt polarity (ACPI 6.5 §6.4.3.6 / MADT MPS INTI flags §5.2.12.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polarity {
    /// Active-high.
    High,
    /// Active-low.
    Low,
}

/// Interrupt trigger mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Edge-triggered.
    Edge,
    /// Level-triggered.
    Level,
}

/// Where a route's GSI came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteSource {
    /// The `_PRT` entry names the GSI itself.
    Gsi,
    /// A link device, as firmware had set it (`_CRS`).
    LinkAsFound,
    /// A link device this crate set with `_SRS`.
    LinkProgrammed,
}

/// One INTx route of a root bus's `_PRT`: device `device`'s pin arrives on `gsi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// PCI device number on the root bus.
    pub device: u8,
    /// Pin: 0 = INTA .. 3 = INTD.
    pub pin: u8,
    /// Global system interrupt.
    pub gsi: u32,
    /// Polarity.
    pub polarity: Polarity,
    /// Trigger mode.
    pub trigger: Trigger,
    /// Where the GSI came from.
    pub source: RouteSource,
}

/// A PCI host bridge (`PNP0A08`/`PNP0A03`) found in the namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostBridge {
    /// Its AML path, e.g. `\_SB.PCI0`.
    pub path: String,
    /// `_SEG` (0 when absent).
    pub segment: u16,
    /// `_BBN`, or the first bus of its `_CRS` bus range (0 when neither).
    pub bus: u8,
    /// Last bus below it, from `_CRS` (when it says).
    pub bus_end: Option<u8>,
    /// Its `_PRT`, every entry resolved to a GSI; or why not. Empty when it has none.
    pub prt: Result<Vec<Route>, String>,
    /// Whether it has a `_PRT` at all.
    pub has_prt: bool,
    /// `_CBA`: the base of its ECAM window (PCI Firmware 3.3 §4.1.3), when it has one.
    pub cba: Option<u64>,
    /// Memory (base, length) that `PNP0C02` devices directly below it reserve (where some
    /// firmware, QEMU's `microvm` for one, describes the ECAM window it has no MCFG for).
    pub reserved: Vec<(u64, u64)>,
    /// What its `_OSC` granted (PCI Firmware 3.3 §4.5): whether PCI Express hot-plug below it
    /// is the kernel's or firmware's.
    pub osc: osc::Osc,
}

/// What loading and running the AML gave.
#[derive(Clone, Debug, Default)]
pub struct AmlReport {
    /// Definition blocks (DSDT, SSDTs) loaded.
    pub tables_loaded: u32,
    /// Definition blocks that failed to load.
    pub tables_failed: u32,
    /// Whether the namespace was initialised (`_STA`/`_INI` run, regions set up).
    pub namespace_initialised: bool,
    /// Whether `\_PIC(1)` selected APIC mode (false when it failed; absent `\_PIC` is fine).
    pub apic_mode: bool,
    /// Errors and warnings from the interpreter and from this layer, in order.
    pub errors: Vec<String>,
    /// Host bridges, sorted by path.
    pub host_bridges: Vec<HostBridge>,
    /// `\_S5` (SLP_TYPa, SLP_TYPb), for power-off.
    pub s5: Option<(u8, u8)>,
}
