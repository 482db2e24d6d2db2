//! The kernel's view of the PCI bus: enumeration from the host bridges ACPI names, through
//! the configuration access [`crate::pcie`] chose, once at boot.
//!
//! The walk itself (bridges, multifunction devices, BARs, capabilities) is `pci::enumerate`,
//! host-tested against fake configuration spaces; this module only supplies the roots and the
//! access, keeps the result, and prints it like `lspci -tv` and `lspci -nn`.
//!
//! The result changes when a hot-plug slot brings functions up or takes them away
//! ([`crate::hotplug`]): the current [`Scan`] is shared (`Arc`) and replaced as a whole by
//! [`add_functions`] and [`remove_functions`], so a reader (a bind in progress, `lspci`)
//! keeps a consistent view for as long as it holds it, and an old view is freed when its last
//! reader lets go. The vectors of a replacement are allocated to their exact length, so a
//! function added and removed again leaves the heap as it was.

use alloc::sync::Arc;
use alloc::vec::Vec;

use pci::{Address, ConfigSpace, Function, Root, Topology};
use spin::Mutex;

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

/// The current scan: set once by [`init`], replaced by hot-plug.
static SCAN: Mutex<Option<Arc<Scan>>> = Mutex::new(None);

/// The current scan (after [`init`]): the boot-time walk plus what hot-plug added since.
pub fn scan() -> Option<Arc<Scan>> {
    SCAN.lock().clone()
}

/// A copy of `topology` whose vectors have exactly their length as capacity.
fn exact(topology: &Topology) -> Topology {
    Topology {
        functions: topology.functions.to_vec(),
        errors: topology.errors.to_vec(),
        buses: topology.buses.to_vec(),
    }
}

/// Replaces the topology with `change(current)`; `false` before [`init`].
fn replace(change: impl FnOnce(&Topology) -> Topology) -> bool {
    let mut current = SCAN.lock();
    let Some(old) = current.as_ref() else {
        return false;
    };
    let topology = exact(&change(&old.topology));
    let scan = Scan {
        topology,
        reads: old.reads,
        writes: old.writes,
        roots: old.roots.to_vec(),
    };
    *current = Some(Arc::new(scan));
    true
}

/// Adds functions found below a hot-plug slot (replacing any at the same addresses).
pub fn add_functions(new: &[Function]) -> bool {
    replace(|t| {
        let mut functions: Vec<Function> = t
            .functions
            .iter()
            .filter(|f| !new.iter().any(|n| n.address == f.address))
            .cloned()
            .collect();
        functions.extend(new.iter().cloned());
        functions.sort_by_key(|f| f.address);
        Topology {
            functions,
            errors: t.errors.clone(),
            buses: t.buses.clone(),
        }
    })
}

/// Forgets the functions `gone` says went away (and the scan errors recorded for them).
pub fn remove_functions(gone: impl Fn(Address) -> bool) -> bool {
    replace(|t| Topology {
        functions: t
            .functions
            .iter()
            .filter(|f| !gone(f.address))
            .cloned()
            .collect(),
        errors: t
            .errors
            .iter()
            .filter(|e| !gone(e.address))
            .cloned()
            .collect(),
        buses: t.buses.clone(),
    })
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

/// Enumerates every root bus, prints the tree and listing, and keeps the result (once: a
/// second call returns the current scan).
pub fn init(config: &'static KernelConfig, roots: &[RootBus]) -> Arc<Scan> {
    let mut current = SCAN.lock();
    if let Some(scan) = current.as_ref() {
        return scan.clone();
    }
    let scan = {
        let ecam = config.ecam_regions();
        let roots: Vec<Root> = roots
            .iter()
            .map(|r| Root {
                segment: r.segment,
                bus: r.bus,
                extended: in_ecam(&ecam, r.segment, r.bus),
            })
            .collect();
        let space = config_space(config, &roots);
        let (reads0, writes0) = config.counts();
        let topology = pci::enumerate(&space);
        let (reads1, writes1) = config.counts();
        let scan = Scan {
            topology: exact(&topology),
            reads: reads1 - reads0,
            writes: writes1 - writes0,
            roots,
        };
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
        Arc::new(scan)
    };
    *current = Some(scan.clone());
    scan
}

/// The configuration access the scan used.
pub fn config() -> &'static KernelConfig {
    pcie::config().expect("pcibus used before pcie::init")
}
