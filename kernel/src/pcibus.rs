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

/// Prints the current scan like `lspci -tv` and `lspci -nn` to COM1 (the test runner compares
/// it with QEMU's own view).
pub fn print_listing() {
    if let Some(scan) = scan() {
        let out = &mut crate::serial::SerialWriter;
        let _ = pci::lspci::write_tree(out, &scan.topology);
        let _ = pci::lspci::write_listing(out, &scan.topology);
    }
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

/// Forgets the functions `gone` says went away (and the scan errors recorded for them). The
/// DMA memory parked for them stays until nothing answers at their addresses
/// (`crate::hotplug`, after the slot is powered off).
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

/// `a` then `b`, in one vector.
fn merge<T: Clone>(a: &[T], b: &[T]) -> Vec<T> {
    let mut v = a.to_vec();
    v.extend_from_slice(b);
    v
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

/// Enumerates every root bus and keeps the result (once: a second call returns the current
/// scan). The tree and listing are printed by [`print_listing`]: at boot right after this
/// when the log shows information, otherwise once the drivers are bound.
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
        Arc::new(scan)
    };
    *current = Some(scan.clone());
    scan
}

/// Enumerates root buses learned after [`init`] (host bridges only AML names, when AML is
/// loaded after the boot's drivers are bound) and adds what is below them. A root already
/// walked, or a bus already reached through a bridge, is skipped: nothing is walked twice
/// (the walk sizes BARs with decode off, which a device under a bound driver must never
/// see). Prints the tree again when something was added. Returns the added functions'
/// addresses.
pub fn add_roots(roots: &[RootBus]) -> Vec<Address> {
    let Some(config) = pcie::config() else {
        return Vec::new();
    };
    let ecam = config.ecam_regions();
    let mut current = SCAN.lock();
    let Some(old) = current.as_ref().cloned() else {
        return Vec::new();
    };
    let new: Vec<Root> = roots
        .iter()
        .filter(|r| {
            !old.topology
                .buses
                .iter()
                .any(|b| b.segment == r.segment && b.number == r.bus)
                && !old
                    .roots
                    .iter()
                    .any(|o| o.segment == r.segment && o.bus == r.bus)
        })
        .map(|r| Root {
            segment: r.segment,
            bus: r.bus,
            extended: in_ecam(&ecam, r.segment, r.bus),
        })
        .collect();
    if new.is_empty() {
        return Vec::new();
    }
    // Every root in the space (a late root's walk knows where the others' buses start),
    // and no bus the first walk scanned is entered again (`pci::enumerate_more`).
    let all: Vec<Root> = old.roots.iter().chain(new.iter()).copied().collect();
    let space = config_space(config, &all);
    let (reads0, writes0) = config.counts();
    let found = pci::enumerate_more(&space, &new, &old.topology);
    let (reads1, writes1) = config.counts();
    log::info!(
        "pci: {} functions on {} buses from {} more root(s) AML named, {} config reads and {} writes ({} errors)",
        found.functions.len(),
        found.buses.len(),
        new.len(),
        reads1 - reads0,
        writes1 - writes0,
        found.errors.len()
    );
    for e in &found.errors {
        log::warn!("pci: {e}");
    }
    let added: Vec<Address> = found.functions.iter().map(|f| f.address).collect();
    let mut functions: Vec<Function> = merge(&old.topology.functions, &found.functions);
    functions.sort_by_key(|f| f.address);
    let mut buses: Vec<pci::Bus> = merge(&old.topology.buses, &found.buses);
    buses.sort_by_key(|b| (b.segment, b.number));
    let topology = exact(&Topology {
        functions,
        errors: merge(&old.topology.errors, &found.errors),
        buses,
    });
    let mut all_roots = old.roots.to_vec();
    all_roots.extend_from_slice(&new);
    let scan = Arc::new(Scan {
        topology,
        reads: old.reads + (reads1 - reads0),
        writes: old.writes + (writes1 - writes0),
        roots: all_roots,
    });
    *current = Some(scan.clone());
    drop(current);
    let out = &mut crate::serial::SerialWriter;
    let _ = pci::lspci::write_tree(out, &scan.topology);
    added
}

/// The configuration access the scan used.
pub fn config() -> &'static KernelConfig {
    pcie::config().expect("pcibus used before pcie::init")
}
