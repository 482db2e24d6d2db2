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
//!
//! Memory BARs firmware left unassigned (address 0) are placed right after the boot walk,
//! before any driver binds: `pci::assign::boot` picks gaps in the windows of the bridge above
//! each one (never moving what firmware assigned, never changing a window), and
//! [`place_unassigned`] writes them with decode off and records them in the topology, so
//! `map_bar` sees them. Without an unassigned memory BAR nothing is read or written. BARs
//! on a root bus stay unassigned: the host bridge's apertures are ACPI `_CRS` data the
//! kernel does not have yet at that point.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::RangeInclusive;

use pci::assign::Windows;
use pci::assign::boot::{self, Placed};
use pci::{Address, BarKind, ConfigSpace, Function, Root, Topology};
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
        let mut topology = pci::enumerate(&space);
        let (reads1, writes1) = config.counts();
        place_unassigned(&space, &mut topology, &reserved(&ecam));
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

/// Offset of the Command register (low half; Status, high half, has RW1C bits).
const COMMAND: u16 = 0x04;
/// Command bits 0 (I/O space) and 1 (memory space): decode, off while a BAR is written.
const DECODE: u32 = 0b11;

/// Physical ranges no BAR placed at boot may overlap: the ECAM windows (1 MiB per bus,
/// PCIe Base 6.0 §7.2.2), the PC's whole fixed device space below 4 GiB
/// (`boot::info::FIXED_DEVICE_SPACE`: the IOAPICs, the HPET and chipset registers, the
/// interrupt message range where the local APIC also sits, Intel SDM Vol. 3 §11.11.1, and
/// the firmware flash; a window read from a bridge that vanished decodes as its top), and
/// the local APIC, the IOAPICs and the HPET where the MADT and HPET tables put them (a page
/// each).
fn reserved(ecam: &[EcamRegion]) -> Vec<RangeInclusive<u64>> {
    let page = |base: u64| base..=base.saturating_add(0xfff);
    let mut reserved: Vec<RangeInclusive<u64>> = ecam
        .iter()
        .map(|e| {
            let buses = u64::from(e.end_bus.saturating_sub(e.start_bus)) + 1;
            e.base..=e.base.saturating_add((buses << 20) - 1)
        })
        .collect();
    let (start, end) = ::boot::info::FIXED_DEVICE_SPACE;
    reserved.push(start..=end - 1);
    if let Some(p) = crate::platform::get() {
        reserved.extend(p.local_apic.map(page));
        reserved.extend(p.io_apics.iter().map(|io| page(io.address)));
        reserved.extend(p.hpet.map(page));
    }
    reserved
}

/// Places the memory BARs firmware left at 0 (`pci::assign::boot`), writes them and records
/// their addresses in `topology`; logs each BAR placed and each one that could not be,
/// with the reason. Reads and writes nothing when every memory BAR has an address.
fn place_unassigned(
    space: &ConfigSpace<'static, KernelConfig>,
    topology: &mut Topology,
    reserved: &[RangeInclusive<u64>],
) {
    if !boot::any_unassigned(topology) {
        return;
    }
    let windows: Vec<(Address, Windows)> = topology
        .functions
        .iter()
        .filter(|f| f.is_bridge())
        .filter_map(|f| match Windows::read(space, f.address) {
            Ok(w) => Some((f.address, w)),
            Err(e) => {
                log::warn!("pci: {} windows not read: {e}", f.address);
                None
            }
        })
        .collect();
    let plan = boot::plan(topology, &windows, reserved);
    for u in &plan.unplaced {
        log::warn!(
            "pci: {} BAR{} ({:#x} bytes) left unassigned by firmware and not placed: {}; the function's BARs cannot be mapped",
            u.function,
            u.slot,
            u.bar.size,
            u.reason
        );
    }
    // One function at a time: all of its BARs are written, or none is.
    for group in plan.placed.chunk_by(|x, y| x.function == y.function) {
        let function = group[0].function;
        if let Err(e) = write_bars(space, function, group) {
            log::warn!("pci: {function}: BARs left unassigned: {e}");
            continue;
        }
        let Ok(i) = topology
            .functions
            .binary_search_by_key(&function, |f| f.address)
        else {
            continue;
        };
        for p in group {
            topology.functions[i].bars[p.slot] = Some(p.bar);
            log::info!(
                "pci: {function} BAR{} placed at {:#x} (firmware left it unassigned; {:#x} bytes{}{})",
                p.slot,
                p.bar.address,
                p.bar.size,
                if p.bar.kind == BarKind::Memory64 {
                    ", 64-bit"
                } else {
                    ""
                },
                if p.bar.prefetchable {
                    ", prefetchable"
                } else {
                    ""
                },
            );
        }
    }
}

/// Writes the BARs of one function with its decode off (PCI Local Bus 3.0 §6.2.5.1: a BAR
/// being written would decode a half-written address), reads each back, and restores
/// Command. A BAR that does not read back what was written puts every BAR of the group
/// back to 0; if one of them does not read back 0 either, decode stays off (the topology
/// still says 0, so `map_bar` refuses the function and nothing turns decode back on).
fn write_bars(
    space: &ConfigSpace<'static, KernelConfig>,
    function: Address,
    bars: &[Placed],
) -> Result<(), String> {
    let command = space
        .read32(function, COMMAND)
        .map_err(|e| format!("{e}"))?
        & 0xffff;
    // The high half (Status) is written as zero, so no RW1C bit is cleared.
    if command & DECODE != 0 {
        space
            .write32(function, COMMAND, command & !DECODE)
            .map_err(|e| format!("{e}"))?;
    }
    let write = |p: &Placed, address: u64| -> Result<u64, pci::ConfigError> {
        let offset = pci::bar::bar_offset(p.slot);
        space.write32(function, offset, address as u32)?;
        let mut now = u64::from(space.read32(function, offset)? & !0xf);
        if p.bar.kind == BarKind::Memory64 {
            space.write32(function, offset + 4, (address >> 32) as u32)?;
            now |= u64::from(space.read32(function, offset + 4)?) << 32;
        }
        Ok(now)
    };
    let mut result = Ok(());
    for p in bars {
        match write(p, p.bar.address) {
            Ok(now) if now == p.bar.address => {}
            Ok(now) => {
                result = Err(format!(
                    "BAR{} reads back {now:#x} after {:#x} was written",
                    p.slot, p.bar.address
                ));
                break;
            }
            Err(e) => {
                result = Err(format!("BAR{}: {e}", p.slot));
                break;
            }
        }
    }
    let mut restored = true;
    if result.is_err() {
        for p in bars {
            restored &= matches!(write(p, 0), Ok(0));
        }
    }
    if command & DECODE != 0 && restored {
        let _ = space.write32(function, COMMAND, command);
    }
    match result {
        Err(e) if !restored => Err(format!("{e}; a BAR did not go back to 0, decode left off")),
        result => result,
    }
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
