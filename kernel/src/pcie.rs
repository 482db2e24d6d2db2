//! The kernel's PCI configuration-space access: ECAM where the MCFG describes it, legacy
//! port I/O otherwise.
//!
//! - **ECAM** (PCIe Base 6.0 §7.2.2): each MCFG entry's window (1 MiB per bus) is mapped
//!   uncached through an owned [`Mmio`] kept for the kernel's life. All 4 KiB of each
//!   function's space, extended capabilities included, are reachable.
//! - **Port I/O** (PCI Local Bus 3.0 §3.2.2.3.2, configuration mechanism #1): `0xCF8` takes
//!   `enable | bus << 16 | device << 11 | function << 8 | offset`, `0xCFC` the data. Only
//!   the first 256 bytes exist this way, and only segment 0; used only when there is no MCFG
//!   (QEMU `-machine pc`).
//!
//! Reads outside what the active method reaches return all ones, exactly what hardware gives
//! for an absent function, so callers need no special case.
//!
//! Firmware without an MCFG entry for a PCI Express host bridge (QEMU's `microvm,pcie=on` is
//! one) may still say where its ECAM window is: the bridge's `_CBA`, or memory a `PNP0C02`
//! device below it reserves. [`discover`] tries those after the AML is loaded, and uses a
//! window only after reading a function through it; otherwise it says plainly that the bridge's
//! configuration space is out of reach.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use pci_types::{ConfigRegionAccess, PciAddress};
use spin::{Mutex, Once, RwLock};
use x86_64::instructions::port::Port;

use crate::memory::mmio::Mmio;
use crate::platform::EcamRegion;

/// Configuration mechanism #1 address port.
const CONFIG_ADDRESS: u16 = 0xCF8;
/// Configuration mechanism #1 data port.
const CONFIG_DATA: u16 = 0xCFC;

/// One mapped ECAM window.
struct EcamWindow {
    region: EcamRegion,
    mmio: Mmio,
}

/// The kernel's [`ConfigRegionAccess`]: ECAM when any window is known, else port I/O.
/// Counts its accesses for the enumeration benchmark.
pub struct KernelConfig {
    /// Memory-mapped windows, one per MCFG entry (or found by [`discover`]). Written only at
    /// boot, before enumeration, with interrupts off.
    windows: RwLock<Vec<EcamWindow>>,
    /// Ports 0xCF8/0xCFC, serialised by a lock (the two-step access is not atomic).
    port: Mutex<()>,
    reads: AtomicU64,
    writes: AtomicU64,
}

impl KernelConfig {
    /// Whether extended configuration space (0x100-0xFFF) is reachable.
    pub fn extended(&self) -> bool {
        !self.windows.read().is_empty()
    }

    /// The ECAM windows (empty for port I/O).
    pub fn ecam_regions(&self) -> Vec<EcamRegion> {
        self.windows.read().iter().map(|w| w.region).collect()
    }

    fn ecam_offset(
        windows: &[EcamWindow],
        address: PciAddress,
        offset: u16,
    ) -> Option<(&Mmio, u64)> {
        let w = windows.iter().find(|w| {
            w.region.segment == address.segment()
                && (w.region.start_bus..=w.region.end_bus).contains(&address.bus())
        })?;
        let at = (u64::from(address.bus() - w.region.start_bus) << 20)
            | (u64::from(address.device()) << 15)
            | (u64::from(address.function()) << 12)
            | u64::from(offset & 0xffc);
        Some((&w.mmio, at))
    }

    fn port_address(address: PciAddress, offset: u16) -> Option<u32> {
        (address.segment() == 0 && offset < 0x100).then(|| {
            0x8000_0000
                | u32::from(address.bus()) << 16
                | u32::from(address.device()) << 11
                | u32::from(address.function()) << 8
                | u32::from(offset & 0xfc)
        })
    }

    /// (reads, writes) made so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }

    /// Reads a dword (all ones where nothing answers).
    pub fn read(&self, address: PciAddress, offset: u16) -> u32 {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let windows = self.windows.read();
        match windows.is_empty() {
            false => match Self::ecam_offset(&windows, address, offset) {
                Some((mmio, at)) => mmio.read32(at),
                None => u32::MAX,
            },
            true => {
                let Some(a) = Self::port_address(address, offset) else {
                    return u32::MAX;
                };
                // Interrupts go off before the lock is taken: a handler that reads
                // configuration space on this CPU must not find it held.
                x86_64::instructions::interrupts::without_interrupts(|| {
                    let _guard = self.port.lock();
                    // SAFETY: configuration mechanism #1 ports, used only under `lock`.
                    unsafe { Port::<u32>::new(CONFIG_ADDRESS).write(a) };
                    // SAFETY: as above; the address was just selected.
                    unsafe { Port::<u32>::new(CONFIG_DATA).read() }
                })
            }
        }
    }

    /// Writes a dword (dropped where nothing answers).
    pub fn write(&self, address: PciAddress, offset: u16, value: u32) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        let windows = self.windows.read();
        match windows.is_empty() {
            false => {
                if let Some((mmio, at)) = Self::ecam_offset(&windows, address, offset) {
                    mmio.write32(at, value);
                }
            }
            true => {
                let Some(a) = Self::port_address(address, offset) else {
                    return;
                };
                // As in `read`: interrupts off, then the lock.
                x86_64::instructions::interrupts::without_interrupts(|| {
                    let _guard = self.port.lock();
                    // SAFETY: configuration mechanism #1 ports, used only under `lock`.
                    unsafe { Port::<u32>::new(CONFIG_ADDRESS).write(a) };
                    // SAFETY: as above; the address was just selected.
                    unsafe { Port::<u32>::new(CONFIG_DATA).write(value) };
                });
            }
        }
    }
}

impl ConfigRegionAccess for KernelConfig {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        KernelConfig::read(self, address, offset)
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        KernelConfig::write(self, address, offset, value)
    }
}

static CONFIG: Once<KernelConfig> = Once::new();

/// Chooses the access method: ECAM for every MCFG window that maps, else port I/O.
pub fn init(ecam: &[EcamRegion]) -> &'static KernelConfig {
    CONFIG.call_once(|| {
        let mut windows = Vec::new();
        for region in ecam {
            if region.end_bus < region.start_bus {
                log::warn!(
                    "pci: MCFG entry for segment {} has end bus below start bus; ignored",
                    region.segment
                );
                continue;
            }
            match map_window(region) {
                Ok(w) => {
                    reserve(region);
                    windows.push(w);
                }
                Err(e) => log::error!("pci: {e}"),
            }
        }
        if windows.is_empty() {
            log::info!("pci: configuration space through port I/O (0xCF8/0xCFC)");
        } else {
            log::info!(
                "pci: configuration space through ECAM ({} window(s))",
                windows.len()
            );
        }
        KernelConfig {
            windows: RwLock::new(windows),
            port: Mutex::new(()),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        }
    })
}

/// Marks a window in use as the kernel's: configuration space is the PCI layer's, and a
/// device window over it would be a raw configuration write path around its checks. (A
/// candidate that turned out not to be ECAM is not marked: it may hold a device's BAR.)
fn reserve(region: &EcamRegion) {
    let buses = u64::from(region.end_bus - region.start_bus) + 1;
    crate::memory::mmio::reserve_for_kernel(region.base, buses << 20);
}

/// Maps `region` (its base is that of bus `start_bus`). A window at 0, not on a 1 MiB
/// boundary (each bus takes 1 MiB, PCIe Base 6.0 §7.2.2), or over registers the kernel owns
/// (the local APIC, an IOAPIC, the HPET, another ECAM window: an MCFG whose bus range is
/// too large reaches them) is refused: configuration writes through it would land there.
fn map_window(region: &EcamRegion) -> Result<EcamWindow, alloc::string::String> {
    let buses = u64::from(region.end_bus - region.start_bus) + 1;
    if region.base == 0 || region.base & 0xf_ffff != 0 {
        return Err(alloc::format!(
            "ECAM at {:#x} is not on a 1 MiB boundary above 0",
            region.base
        ));
    }
    Mmio::map_device(region.base, buses << 20)
        .map(|mmio| EcamWindow {
            region: *region,
            mmio,
        })
        .map_err(|e| alloc::format!("cannot map ECAM at {:#x}: {e}", region.base))
}

/// Finds ECAM windows for host bridges no MCFG entry covers (see the module documentation):
/// `_CBA` first (whose base, like an MCFG entry's, is that of bus 0), then the memory that
/// `PNP0C02` devices below the bridge reserve (a window of whole buses starting at the
/// bridge's first bus). A candidate is used only if bus `bus`, device 0 answers through it.
pub fn discover(bridges: &[::firmware::aml::HostBridge]) {
    let Some(config) = config() else {
        return;
    };
    for bridge in bridges {
        let covered = config.windows.read().iter().any(|w| {
            w.region.segment == bridge.segment
                && (w.region.start_bus..=w.region.end_bus).contains(&bridge.bus)
        });
        if covered {
            continue;
        }
        let end = bridge.bus_end.unwrap_or(0xff).max(bridge.bus);
        let mut candidates = Vec::new();
        if let Some(base) = bridge
            .cba
            .and_then(|cba| cba.checked_add(u64::from(bridge.bus) << 20))
        {
            candidates.push(("_CBA", base, end));
        }
        for &(base, len) in &bridge.reserved {
            let buses = len >> 20;
            if base & 0xf_ffff != 0 || len & 0xf_ffff != 0 || buses == 0 {
                continue;
            }
            let last = (u64::from(bridge.bus) + buses - 1).min(u64::from(end)) as u8;
            candidates.push(("a PNP0C02 reservation", base, last));
        }
        let mut found = false;
        for (source, base, end_bus) in candidates {
            let region = EcamRegion {
                base,
                segment: bridge.segment,
                start_bus: bridge.bus,
                end_bus,
            };
            let window = match map_window(&region) {
                Ok(w) => w,
                Err(e) => {
                    log::warn!("pci: {}: {source}: {e}", bridge.path);
                    continue;
                }
            };
            let id = window.mmio.read32(0);
            if id & 0xffff == 0xffff {
                log::warn!(
                    "pci: {}: {source} at {base:#x}: nothing answers at bus {}, device 0; not used",
                    bridge.path,
                    bridge.bus
                );
                continue;
            }
            log::warn!(
                "pci: {}: no MCFG entry; ECAM at {base:#x} (buses {:#04x}-{end_bus:#04x}) from {source}, checked: {:04x}:{:04x} answers at bus {}, device 0",
                bridge.path,
                bridge.bus,
                id & 0xffff,
                id >> 16,
                bridge.bus
            );
            reserve(&region);
            x86_64::instructions::interrupts::without_interrupts(|| {
                config.windows.write().push(window);
            });
            found = true;
            break;
        }
        if !found && config.windows.read().is_empty() && !port_io_answers(config, bridge) {
            log::warn!(
                "pci: {}: no MCFG entry, no _CBA, no usable reservation, and port I/O finds nothing on bus {}: this host bridge's functions are out of reach",
                bridge.path,
                bridge.bus
            );
        }
    }
}

/// Whether any device answers on the bridge's first bus through port I/O.
fn port_io_answers(config: &KernelConfig, bridge: &::firmware::aml::HostBridge) -> bool {
    bridge.segment == 0
        && (0..32u8)
            .any(|d| config.read(PciAddress::new(0, bridge.bus, d, 0), 0) & 0xffff != 0xffff)
}

/// The configuration access (port I/O until [`init`] chose, for early AML users).
pub fn config() -> Option<&'static KernelConfig> {
    CONFIG.get()
}

/// Port I/O access regardless of the chosen method (for cross-checks against ECAM).
pub fn port_io() -> &'static KernelConfig {
    &EARLY
}

static EARLY: KernelConfig = KernelConfig {
    windows: RwLock::new(Vec::new()),
    port: Mutex::new(()),
    reads: AtomicU64::new(0),
    writes: AtomicU64::new(0),
};

/// Reads a config dword for AML (through the chosen method, or port I/O before).
pub fn read32(address: PciAddress, offset: u16) -> u32 {
    match CONFIG.get() {
        Some(c) => c.read(address, offset),
        None => EARLY.read(address, offset),
    }
}

/// Writes a config dword for AML.
pub fn write32(address: PciAddress, offset: u16, value: u32) {
    match CONFIG.get() {
        Some(c) => c.write(address, offset, value),
        None => EARLY.write(address, offset, value),
    }
}
