//! Enumeration: from the root buses, through PCI-to-PCI bridges, to a [`Topology`].
//!
//! The walk follows the bus numbers firmware assigned (it never reprograms them): on each
//! bus, function 0 of devices 0..32 (vendor 0xFFFF = absent), functions 1..8 when function
//! 0's header type has bit 7 (multifunction), and for each PCI-to-PCI bridge (header type 1)
//! its secondary bus. Buses are visited at most once per segment and only through bridges
//! whose bus numbers make sense (secondary above primary and inside the parent's range), so
//! the walk ends whatever the hardware says; it never probes all 256 buses.
//!
//! Accesses per function: dwords 0x00 (IDs), 0x0C (header type), 0x08 (class, revision),
//! 0x04 (Command/Status), 0x2C (subsystem, type 0) or 0x18 (bus numbers, type 1), 0x3C
//! (interrupt), then BAR sizing (see [`bar`]), then — only if Status bit 4
//! says there is a list — 0x34 and one dword per capability (+2 for MSI-X), and the extended
//! list only behind an ECAM root for functions with a PCI Express capability.
//!
//! A function that vanishes during its walk (a dword reads all ones where that is not a
//! valid value, and dword 0 then reads vendor 0xFFFF or different IDs) is dropped with a
//! [`ScanErrorKind::Vanished`] error. Enumeration writes only Command and BARs (while
//! sizing), and restores both.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::fmt;

use pci_types::ConfigRegionAccess;

use crate::address::Address;
use crate::bar::{self, Bar, BarError};
use crate::capability::{self, Capability, CapabilityError, ExtendedCapability, Msi, Msix};
use crate::config::{ConfigError, ConfigSpace, EXTENDED_SIZE};

/// A root bus: where enumeration starts (a host bridge's bus, from ACPI's MCFG or `_BBN`,
/// or bus 0 of segment 0 on a legacy machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Root {
    /// PCI segment group.
    pub segment: u16,
    /// Bus number of the root bus.
    pub bus: u8,
    /// Configuration space is 4 KiB (ECAM); otherwise 256 bytes (port I/O).
    pub extended: bool,
}

/// Bus numbers of a PCI-to-PCI bridge (header type 1, offsets 0x18-0x1A).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BridgeBuses {
    /// The bus the bridge is on.
    pub primary: u8,
    /// The bus directly behind it.
    pub secondary: u8,
    /// The highest bus behind it.
    pub subordinate: u8,
}

/// One PCI function as found by [`enumerate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// Where it is.
    pub address: Address,
    /// Vendor ID (0x00).
    pub vendor_id: u16,
    /// Device ID (0x02).
    pub device_id: u16,
    /// Subsystem vendor ID (0x2C); `None` for bridges, whose header has no such field.
    pub subsystem_vendor_id: Option<u16>,
    /// Subsystem ID (0x2E); `None` for bridges.
    pub subsystem_id: Option<u16>,
    /// Base class (0x0B).
    pub class: u8,
    /// Subclass (0x0A).
    pub subclass: u8,
    /// Programming interface (0x09).
    pub prog_if: u8,
    /// Revision ID (0x08).
    pub revision: u8,
    /// Header layout (0x0E bits 0-6): 0 endpoint, 1 PCI-to-PCI bridge, 2 CardBus bridge.
    pub header_type: u8,
    /// Header type bit 7: the device has functions other than 0.
    pub multifunction: bool,
    /// Command register as found (and as restored after BAR sizing).
    pub command: u16,
    /// Status register as found.
    pub status: u16,
    /// BARs by slot (6 for endpoints, 2 for bridges); a 64-bit BAR leaves the next slot
    /// `None`, as do unimplemented BARs and ones that could not be decoded.
    pub bars: [Option<Bar>; 6],
    /// Interrupt pin (0x3D): 0 none, 1..=4 INTA#..INTD#.
    pub interrupt_pin: u8,
    /// Interrupt line (0x3C) as firmware left it (0xFF: unknown).
    pub interrupt_line: u8,
    /// Legacy capabilities in list order.
    pub capabilities: Vec<Capability>,
    /// PCI Express extended capabilities in list order.
    pub extended_capabilities: Vec<ExtendedCapability>,
    /// The first MSI capability, decoded.
    pub msi: Option<Msi>,
    /// The first MSI-X capability, decoded.
    pub msix: Option<Msix>,
    /// Bus numbers, for PCI-to-PCI bridges.
    pub bridge: Option<BridgeBuses>,
    /// PCI Express Capabilities register (capability + 2) of the first PCI Express
    /// capability, if it fits in the 256-byte space.
    pub pcie_flags: Option<u16>,
}

impl Function {
    fn new(address: Address, ids: u32) -> Self {
        Function {
            address,
            vendor_id: ids as u16,
            device_id: (ids >> 16) as u16,
            subsystem_vendor_id: None,
            subsystem_id: None,
            class: 0,
            subclass: 0,
            prog_if: 0,
            revision: 0,
            header_type: 0,
            multifunction: false,
            command: 0,
            status: 0,
            bars: [None; 6],
            interrupt_pin: 0,
            interrupt_line: 0,
            capabilities: Vec::new(),
            extended_capabilities: Vec::new(),
            msi: None,
            msix: None,
            bridge: None,
            pcie_flags: None,
        }
    }

    /// Header type 1.
    pub fn is_bridge(&self) -> bool {
        self.header_type == 1
    }

    /// The header type byte at 0x0E: layout plus bit 7 for multifunction.
    pub fn header_type_byte(&self) -> u8 {
        self.header_type | if self.multifunction { 0x80 } else { 0 }
    }

    /// Class, subclass and programming interface as one 24-bit number.
    pub fn class_code(&self) -> u32 {
        u32::from(self.class) << 16 | u32::from(self.subclass) << 8 | u32::from(self.prog_if)
    }

    /// 'A'..='D' for INTA#..INTD#; `None` for no (or an invalid) pin.
    pub fn interrupt_pin_letter(&self) -> Option<char> {
        match self.interrupt_pin {
            p @ 1..=4 => Some(char::from(b'A' + p - 1)),
            _ => None,
        }
    }

    /// Present BARs with their slots.
    pub fn bars(&self) -> impl Iterator<Item = (usize, &Bar)> {
        self.bars
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.as_ref().map(|b| (i, b)))
    }

    /// The first legacy capability with this ID.
    pub fn capability(&self, id: u8) -> Option<Capability> {
        self.capabilities.iter().copied().find(|c| c.id == id)
    }

    /// The first extended capability with this ID.
    pub fn extended_capability(&self, id: u16) -> Option<ExtendedCapability> {
        self.extended_capabilities
            .iter()
            .copied()
            .find(|c| c.id == id)
    }

    /// Has a PCI Express capability.
    pub fn is_pcie(&self) -> bool {
        self.capability(capability::id::PCI_EXPRESS).is_some()
    }
}

/// A bus that was scanned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bus {
    /// Segment.
    pub segment: u16,
    /// Bus number.
    pub number: u8,
    /// The bridge it was reached through; `None` for a root bus.
    pub bridge: Option<Address>,
}

/// A bridge whose bus numbers were not followed (or followed with a correction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BridgeError {
    /// The secondary bus is not above the primary bus or the bridge's own bus: following
    /// it could go backwards. Not followed.
    SecondaryNotAbove {
        /// Primary bus register.
        primary: u8,
        /// Secondary bus register.
        secondary: u8,
        /// The bus the bridge was found on.
        bus: u8,
    },
    /// The secondary bus is beyond the range the parent bridge (or root) forwards. Not
    /// followed.
    OutsideParentRange {
        /// Secondary bus register.
        secondary: u8,
        /// Highest bus the parent forwards.
        last: u8,
    },
    /// Subordinate below secondary: the bridge forwards no bus. Not followed.
    SubordinateBelowSecondary {
        /// Secondary bus register.
        secondary: u8,
        /// Subordinate bus register.
        subordinate: u8,
    },
    /// Subordinate beyond the parent's range: followed, limited to the parent's range.
    SubordinateBeyondParent {
        /// Subordinate bus register.
        subordinate: u8,
        /// Highest bus the parent forwards.
        last: u8,
    },
    /// The secondary bus (or a root bus) was already scanned: a loop, or two bridges
    /// claiming one bus. Not followed.
    BusAlreadyScanned {
        /// The bus.
        bus: u8,
    },
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BridgeError::SecondaryNotAbove {
                primary,
                secondary,
                bus,
            } => write!(
                f,
                "bridge secondary bus {secondary:02x} is not above primary bus {primary:02x} \
                 (bridge on bus {bus:02x}); not followed"
            ),
            BridgeError::OutsideParentRange { secondary, last } => write!(
                f,
                "bridge secondary bus {secondary:02x} is beyond the parent's last bus \
                 {last:02x}; not followed"
            ),
            BridgeError::SubordinateBelowSecondary {
                secondary,
                subordinate,
            } => write!(
                f,
                "bridge subordinate bus {subordinate:02x} is below secondary bus \
                 {secondary:02x}; not followed"
            ),
            BridgeError::SubordinateBeyondParent { subordinate, last } => write!(
                f,
                "bridge subordinate bus {subordinate:02x} is beyond the parent's last bus \
                 {last:02x}; scanned up to {last:02x}"
            ),
            BridgeError::BusAlreadyScanned { bus } => {
                write!(
                    f,
                    "bus {bus:02x} was already scanned (bus loop); not followed"
                )
            }
        }
    }
}

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanErrorKind {
    /// The function disappeared during its walk; it is left out of the topology.
    Vanished,
    /// [`ConfigSpace`] refused an access; the function is left out.
    Config(ConfigError),
    /// Header layout other than 0 and 1 (CardBus: 2): only the IDs, class and Command are
    /// recorded.
    UnsupportedHeaderType(u8),
    /// Interrupt pin above 4: recorded as found, shown as no pin.
    InvalidInterruptPin(u8),
    /// A BAR that could not be decoded.
    Bar(BarError),
    /// A problem in the legacy capability list.
    Capability(CapabilityError),
    /// A problem in the extended capability list.
    ExtendedCapability(CapabilityError),
    /// A bridge not followed.
    Bridge(BridgeError),
}

impl From<BarError> for ScanErrorKind {
    fn from(e: BarError) -> Self {
        ScanErrorKind::Bar(e)
    }
}

impl From<BridgeError> for ScanErrorKind {
    fn from(e: BridgeError) -> Self {
        ScanErrorKind::Bridge(e)
    }
}

impl fmt::Display for ScanErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanErrorKind::Vanished => {
                write!(
                    f,
                    "function vanished during the scan (vendor ID reads ffff); skipped"
                )
            }
            ScanErrorKind::Config(e) => write!(f, "config access refused: {e}; skipped"),
            ScanErrorKind::UnsupportedHeaderType(t) => write!(
                f,
                "header type {t:02x} is not supported; BARs and capabilities not read"
            ),
            ScanErrorKind::InvalidInterruptPin(p) => {
                write!(f, "interrupt pin {p:#04x} is not 0-4; ignored")
            }
            ScanErrorKind::Bar(e) => e.fmt(f),
            ScanErrorKind::Capability(e) => write!(f, "capability list: {e}"),
            ScanErrorKind::ExtendedCapability(e) => write!(f, "extended capability list: {e}"),
            ScanErrorKind::Bridge(e) => e.fmt(f),
        }
    }
}

/// A problem found during enumeration, at one function (for bridge and bus problems, the
/// bridge; for a duplicate root, device 0 function 0 of the root bus).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanError {
    /// Where.
    pub address: Address,
    /// What.
    pub kind: ScanErrorKind,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.address, self.kind)
    }
}

/// Everything [`enumerate`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// Functions, sorted by address.
    pub functions: Vec<Function>,
    /// Problems, sorted by address (in discovery order for one address).
    pub errors: Vec<ScanError>,
    /// Buses scanned, sorted by segment and number, each with the bridge it was reached
    /// through.
    pub buses: Vec<Bus>,
}

impl Topology {
    /// The function at `address`.
    pub fn function(&self, address: Address) -> Option<&Function> {
        self.functions
            .binary_search_by_key(&address, |f| f.address)
            .ok()
            .map(|i| &self.functions[i])
    }

    /// Functions on one bus, in address order.
    pub fn functions_on(&self, segment: u16, bus: u8) -> &[Function] {
        let key = |f: &Function| (f.address.segment(), f.address.bus());
        let start = self.functions.partition_point(|f| key(f) < (segment, bus));
        let end = self.functions.partition_point(|f| key(f) <= (segment, bus));
        &self.functions[start..end]
    }

    /// The bus scanned through `bridge`, if it was followed.
    pub fn bus_behind(&self, bridge: Address) -> Option<&Bus> {
        self.buses.iter().find(|b| b.bridge == Some(bridge))
    }

    /// Whether bus `bus` of `segment` was reached through `bridge`, directly or through
    /// bridges below it. A bridge's bus-number registers are not enough to say what lies
    /// below it: sibling bridges may claim overlapping ranges, and the walk follows only one.
    pub fn reached_through(&self, segment: u16, bus: u8, bridge: Address) -> bool {
        let mut at = (segment, bus);
        // Each step goes one bridge up; a bus is scanned once, so 257 steps reach a root.
        for _ in 0..=256 {
            let Some(b) = self.buses.iter().find(|b| (b.segment, b.number) == at) else {
                return false;
            };
            match b.bridge {
                Some(via) if via == bridge => return true,
                Some(via) => at = (via.segment(), via.bus()),
                None => return false,
            }
        }
        false
    }

    /// Errors recorded for one address.
    pub fn errors_at(&self, address: Address) -> impl Iterator<Item = &ScanError> {
        self.errors.iter().filter(move |e| e.address == address)
    }
}

/// Why a function's walk stopped early.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Abort {
    /// The function no longer answers.
    Vanished,
    /// [`ConfigSpace`] refused an access.
    Config(ConfigError),
}

/// Reads one function's configuration space, checking that it is still there when a value
/// is impossible.
pub(crate) struct Reader<'r, 'a, A> {
    cs: &'r ConfigSpace<'a, A>,
    address: Address,
    /// Dword 0 as first read.
    ids: u32,
}

impl<A: ConfigRegionAccess> Reader<'_, '_, A> {
    /// Reads a dword where all ones is a valid value.
    pub(crate) fn read_raw(&self, offset: u16) -> Result<u32, Abort> {
        self.cs.read32(self.address, offset).map_err(Abort::Config)
    }

    /// Reads a dword where all ones is not valid: all ones means the function may have
    /// gone, so dword 0 is read again to check (one extra read, only then).
    pub(crate) fn read(&self, offset: u16) -> Result<u32, Abort> {
        let value = self.read_raw(offset)?;
        if value == !0 {
            self.check_present()?;
        }
        Ok(value)
    }

    /// `Err(Vanished)` if dword 0 reads vendor 0xFFFF or IDs other than at first.
    pub(crate) fn check_present(&self) -> Result<(), Abort> {
        let ids = self.read_raw(0)?;
        if ids as u16 == 0xffff || ids != self.ids {
            Err(Abort::Vanished)
        } else {
            Ok(())
        }
    }

    pub(crate) fn write(&self, offset: u16, value: u32) -> Result<(), Abort> {
        self.cs
            .write32(self.address, offset, value)
            .map_err(Abort::Config)
    }
}

/// Vendor 0xFFFF is the master-abort value: nothing there. Vendor 0 is not assigned, and
/// some host bridges return zeroes for empty slots (Linux also treats it as absent).
fn absent(ids: u32) -> bool {
    matches!(ids as u16, 0xffff | 0x0000)
}

/// Reads one function whose dword 0 (`ids`) is already known.
fn scan_function<A: ConfigRegionAccess>(
    r: &Reader<'_, '_, A>,
    errors: &mut Vec<ScanErrorKind>,
) -> Result<Function, Abort> {
    let mut f = Function::new(r.address, r.ids);
    // Header type 0xFF is not a layout, so all ones is invalid in each of these three.
    let header = (r.read(0x0c)? >> 16) as u8;
    f.header_type = header & 0x7f;
    f.multifunction = header & 0x80 != 0;
    let class = r.read(0x08)?;
    [f.revision, f.prog_if, f.subclass, f.class] = class.to_le_bytes();
    let command_status = r.read(bar::COMMAND)?;
    f.command = command_status as u16;
    f.status = (command_status >> 16) as u16;

    let bar_count = match f.header_type {
        0 => {
            // Subsystem vendor 0xFFFF is invalid: `read` checks presence on all ones.
            let subsystem = r.read(0x2c)?;
            f.subsystem_vendor_id = Some(subsystem as u16);
            f.subsystem_id = Some((subsystem >> 16) as u16);
            6
        }
        1 => {
            // Primary = secondary = 0xFF is invalid.
            let [primary, secondary, subordinate, _] = r.read(0x18)?.to_le_bytes();
            f.bridge = Some(BridgeBuses {
                primary,
                secondary,
                subordinate,
            });
            2
        }
        other => {
            errors.push(ScanErrorKind::UnsupportedHeaderType(other));
            return Ok(f);
        }
    };
    // Interrupt pin 0xFF is invalid. Same offsets in both layouts.
    let interrupt = r.read(0x3c)?;
    f.interrupt_line = interrupt as u8;
    f.interrupt_pin = (interrupt >> 8) as u8;
    if f.interrupt_pin > 4 {
        errors.push(ScanErrorKind::InvalidInterruptPin(f.interrupt_pin));
    }

    let host_bridge = f.class == 0x06 && f.subclass == 0x00;
    f.bars = bar::size_bars(r, bar_count, f.command, host_bridge, errors)?;

    if f.status & (1 << 4) != 0 {
        // Bytes 0x35-0x37 are reserved (zero): all ones is invalid.
        let pointer = r.read(0x34)? as u8;
        let legacy = capability::walk_legacy(r, pointer, &f.bars, errors)?;
        f.capabilities = legacy.capabilities;
        f.msi = legacy.msi;
        f.msix = legacy.msix;
        f.pcie_flags = legacy.pcie_flags;
        if f.is_pcie() && r.cs.limit(r.address) == Ok(EXTENDED_SIZE) {
            f.extended_capabilities = capability::walk_extended(r, errors)?;
        }
    }
    Ok(f)
}

/// Reads dword 0 and, if something is there, the whole function.
fn probe_into<A: ConfigRegionAccess>(
    cs: &ConfigSpace<'_, A>,
    address: Address,
    errors: &mut Vec<ScanError>,
) -> Option<Function> {
    let ids = match cs.read32(address, 0) {
        Ok(ids) => ids,
        Err(e) => {
            errors.push(ScanError {
                address,
                kind: ScanErrorKind::Config(e),
            });
            return None;
        }
    };
    if absent(ids) {
        return None;
    }
    let r = Reader { cs, address, ids };
    let mut kinds = Vec::new();
    let result = scan_function(&r, &mut kinds);
    errors.extend(kinds.into_iter().map(|kind| ScanError { address, kind }));
    match result {
        Ok(f) => {
            log::trace!(
                "pci: {} [{:04x}:{:04x}] class {:02x}{:02x}{:02x} header {:#04x}{}, {} capabilities, {} extended",
                f.address,
                f.vendor_id,
                f.device_id,
                f.class,
                f.subclass,
                f.prog_if,
                f.header_type,
                if f.multifunction {
                    " (multifunction)"
                } else {
                    ""
                },
                f.capabilities.len(),
                f.extended_capabilities.len()
            );
            for (slot, bar) in f.bars() {
                log::trace!(
                    "pci: {} BAR{slot}: {:?}{} at {:#x}, {:#x} bytes (sized with decode off)",
                    f.address,
                    bar.kind,
                    if bar.prefetchable {
                        " prefetchable"
                    } else {
                        ""
                    },
                    bar.address,
                    bar.size
                );
            }
            Some(f)
        }
        Err(abort) => {
            let kind = match abort {
                Abort::Vanished => ScanErrorKind::Vanished,
                Abort::Config(e) => ScanErrorKind::Config(e),
            };
            errors.push(ScanError { address, kind });
            None
        }
    }
}

/// Reads one function (for example after a hot-plug event): `None` if absent or if it
/// vanished or could not be read, with the problems found.
pub fn probe<A: ConfigRegionAccess>(
    config: &ConfigSpace<'_, A>,
    address: Address,
) -> (Option<Function>, Vec<ScanError>) {
    let mut errors = Vec::new();
    let f = probe_into(config, address, &mut errors);
    (f, errors)
}

/// A bus waiting to be scanned.
struct Pending {
    segment: u16,
    bus: u8,
    /// Highest bus number this bus's bridges may lead to.
    last: u8,
    via: Option<Address>,
}

/// Scans one bus: functions go to `topology`, its bridges are returned in address order.
fn scan_bus<A: ConfigRegionAccess>(
    cs: &ConfigSpace<'_, A>,
    segment: u16,
    bus: u8,
    one_device: bool,
    topology: &mut Topology,
) -> Vec<(Address, BridgeBuses)> {
    let mut bridges = Vec::new();
    for device in 0..if one_device { 1 } else { 32 } {
        let Some(f0) = probe_into(
            cs,
            Address::new_masked(segment, bus, device, 0),
            &mut topology.errors,
        ) else {
            continue;
        };
        let multifunction = f0.multifunction;
        let mut push = |f: Function| {
            if let Some(b) = f.bridge {
                bridges.push((f.address, b));
            }
            topology.functions.push(f);
        };
        push(f0);
        if multifunction {
            for function in 1..8 {
                let address = Address::new_masked(segment, bus, device, function);
                if let Some(f) = probe_into(cs, address, &mut topology.errors) {
                    push(f);
                }
            }
        }
    }
    bridges
}

/// Enumerates everything below `config`'s roots.
///
/// Safe: the soundness promise was made in [`ConfigSpace::new`]. Call it before drivers
/// use the devices (BAR sizing briefly switches decode off).
pub fn enumerate<A: ConfigRegionAccess>(config: &ConfigSpace<'_, A>) -> Topology {
    walk(config, config.roots(), BTreeSet::new())
}

/// Enumerates below `new` roots only (which `config` must cover too, with every root walked
/// before), never entering a bus that `walked` lists: for host bridges learned after a first
/// walk, whose bridges may claim buses that walk scanned (devices there may have drivers by
/// now, and sizing their BARs would switch their decode off).
pub fn enumerate_more<A: ConfigRegionAccess>(
    config: &ConfigSpace<'_, A>,
    new: &[Root],
    walked: &Topology,
) -> Topology {
    let visited = walked.buses.iter().map(|b| (b.segment, b.number)).collect();
    walk(config, new, visited)
}

/// Whether `port` is a Root Port or a Downstream Port (PCI Express Capabilities bits 7:4,
/// PCIe Base 6.0 §7.5.3.2) that does not forward ARI: below it, only device 0 exists.
fn below_a_link_without_ari<A: ConfigRegionAccess>(
    config: &ConfigSpace<'_, A>,
    port: &Function,
) -> bool {
    let Some(flags) = port.pcie_flags else {
        return false;
    };
    if !matches!((flags >> 4) & 0xf, 4 | 6) {
        return false;
    }
    // Device Control 2 exists from capability version 2 (bits 3:0).
    let ari = flags & 0xf >= 2
        && port
            .capabilities
            .iter()
            .find(|c| c.id == capability::id::PCI_EXPRESS)
            .and_then(|c| {
                config
                    .read16(port.address, u16::from(c.offset) + DEVICE_CONTROL_2)
                    .ok()
            })
            .is_some_and(|control| control & ARI_FORWARDING != 0);
    !ari
}

/// Device Control 2 in the PCI Express capability (PCIe Base 6.0 §7.5.3.16).
const DEVICE_CONTROL_2: u16 = 0x28;
/// Device Control 2 bit 5: ARI Forwarding Enable.
const ARI_FORWARDING: u16 = 1 << 5;

fn walk<A: ConfigRegionAccess>(
    config: &ConfigSpace<'_, A>,
    start: &[Root],
    mut visited: BTreeSet<(u16, u8)>,
) -> Topology {
    let mut topology = Topology::default();
    let roots = config.roots();
    let mut stack: Vec<Pending> = Vec::new();
    for root in start {
        if !visited.insert((root.segment, root.bus)) {
            topology.errors.push(ScanError {
                address: Address::new_masked(root.segment, root.bus, 0, 0),
                kind: BridgeError::BusAlreadyScanned { bus: root.bus }.into(),
            });
            continue;
        }
        // A root forwards up to the bus before the next root of its segment.
        let last = roots
            .iter()
            .filter(|r| r.segment == root.segment && r.bus > root.bus)
            .map(|r| r.bus - 1)
            .min()
            .unwrap_or(u8::MAX);
        stack.push(Pending {
            segment: root.segment,
            bus: root.bus,
            last,
            via: None,
        });
        while let Some(p) = stack.pop() {
            topology.buses.push(Bus {
                segment: p.segment,
                number: p.bus,
                bridge: p.via,
            });
            // Below a Root Port or Downstream Port a link leads to device 0 only (PCIe Base
            // 6.0 §7.3.1; Linux's `only_one_child`): a device that does not decode the
            // device number would otherwise answer at all 32. Unless the port forwards ARI
            // (Device Control 2 bit 5, §7.5.3.16), where functions above 7 of device 0
            // appear at the other device numbers.
            let one_device = p.via.is_some_and(|via| {
                topology
                    .functions
                    .iter()
                    .rev()
                    .find(|f| f.address == via)
                    .is_some_and(|port| below_a_link_without_ari(config, port))
            });
            let bridges = scan_bus(config, p.segment, p.bus, one_device, &mut topology);
            let mut children = Vec::new();
            for (address, b) in bridges {
                match follow(&p, b, &mut visited) {
                    Ok((last, warning)) => {
                        if let Some(w) = warning {
                            topology.errors.push(ScanError {
                                address,
                                kind: w.into(),
                            });
                        }
                        children.push(Pending {
                            segment: p.segment,
                            bus: b.secondary,
                            last,
                            via: Some(address),
                        });
                    }
                    Err(e) => topology.errors.push(ScanError {
                        address,
                        kind: e.into(),
                    }),
                }
            }
            // Depth first, in address order.
            stack.extend(children.into_iter().rev());
        }
    }
    topology.functions.sort_by_key(|f| f.address);
    topology.errors.sort_by_key(|e| e.address);
    topology.buses.sort_by_key(|b| (b.segment, b.number));
    topology
}

/// Decides whether to scan behind a bridge found on `parent`: the last bus it may reach,
/// and a warning if its subordinate had to be limited.
fn follow(
    parent: &Pending,
    b: BridgeBuses,
    visited: &mut BTreeSet<(u16, u8)>,
) -> Result<(u8, Option<BridgeError>), BridgeError> {
    let BridgeBuses {
        primary,
        secondary,
        subordinate,
    } = b;
    if secondary <= primary || secondary <= parent.bus {
        return Err(BridgeError::SecondaryNotAbove {
            primary,
            secondary,
            bus: parent.bus,
        });
    }
    if secondary > parent.last {
        return Err(BridgeError::OutsideParentRange {
            secondary,
            last: parent.last,
        });
    }
    if subordinate < secondary {
        return Err(BridgeError::SubordinateBelowSecondary {
            secondary,
            subordinate,
        });
    }
    if !visited.insert((parent.segment, secondary)) {
        return Err(BridgeError::BusAlreadyScanned { bus: secondary });
    }
    if subordinate > parent.last {
        let warning = BridgeError::SubordinateBeyondParent {
            subordinate,
            last: parent.last,
        };
        return Ok((parent.last, Some(warning)));
    }
    Ok((subordinate, None))
}
