//! The kernel's view of the PCI bus: enumeration from the host bridges ACPI names, through
//! the configuration access [`crate::pcie`] chose, once at boot.
//!
//! The walk itself (bridges, multifunction devices, BARs, capabilities) is `pci::enumerate`,
//! host-tested against fake configuration spaces; this module only supplies the roots and the
//! access, keeps the result, and prints it like `lspci -tv` and `lspci -nn`.

use alloc::vec::Vec;

use pci::{ConfigSpace, Root, Topology};
use spin::Once;

use crate::pcie::{self, KernelConfig};
use crate::platform::{EcamRegion, roots::RootBus};

/// What enumeration found, with what it cost.
pub struct Scan {
    /// Functions, buses and errors.
    pub topology: Topology,
    /// Configuration reads made by the walk.
    pub reads: u64,
    /// Configuration writes made by the walk (BAR sizing, Command save/restore).
    pub writes: u64,
    /// The roots the walk started from.
    pub roots: Vec<Root>,
}

static SCAN: Once<Scan> = Once::new();

/// The boot-time scan (after [`init`]).
pub fn scan() -> Option<&'static Scan> {
    SCAN.get()
}

/// Whether `bus` of `segment` lies in an ECAM window (so 4 KiB of config space exist).
fn in_ecam(ecam: &[EcamRegion], segment: u16, bus: u8) -> bool {
    ecam.iter()
        .any(|e| e.segment == segment && (e.start_bus..=e.end_bus).contains(&bus))
}

/// Config space for the given roots.
pub fn config_space(
    config: &'static KernelConfig,
    roots: &[Root],
) -> ConfigSpace<'static, KernelConfig> {
    // SAFETY: `KernelConfig` reads and writes only configuration space (ECAM windows mapped
    // uncached for the kernel's life, or ports 0xCF8/0xCFC under a lock), returns all ones
    // for anything it cannot reach, and never touches RAM. No kernel code relies on a
    // device's decode or bus-master state for memory safety during the scan.
    unsafe { ConfigSpace::new(config, roots) }
}

/// Enumerates every root bus, prints the tree and listing, and keeps the result.
pub fn init(config: &'static KernelConfig, roots: &[RootBus]) -> &'static Scan {
    SCAN.call_once(|| {
        let ecam = config.ecam_regions();
        let roots: Vec<Root> = roots
            .iter()
            .map(|r| Root { segment: r.segment, bus: r.bus, extended: in_ecam(&ecam, r.segment, r.bus) })
            .collect();
        let space = config_space(config, &roots);
        let (reads0, writes0) = config.counts();
        let topology = pci::enumerate(&space);
        let (reads1, writes1) = config.counts();
        let scan = Scan { topology, reads: reads1 - reads0, writes: writes1 - writes0, roots };
        log::info!(
            "pci: {} functions on {} buses from {} root(s), {} config reads and {} writes ({} errors)",
            scan.topology.functions.len(),
            scan.topology.buses.len(),
            scan.roots.len(),
            scan.reads,
            scan.writes,
            scan.topology.errors.len()
        );
        for e in &scan.topology.errors {
            log::warn!("pci: {e}");
        }
        let out = &mut crate::serial::SerialWriter;
        let _ = pci::lspci::write_tree(out, &scan.topology);
        let _ = pci::lspci::write_listing(out, &scan.topology);
        scan
    })
}

/// The configuration access the scan used.
pub fn config() -> &'static KernelConfig {
    pcie::config().expect("pcibus used before pcie::init")
}
