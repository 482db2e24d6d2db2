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

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use pci_types::{ConfigRegionAccess, PciAddress};
use spin::{Mutex, Once};
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

/// How the kernel reaches configuration space.
enum Method {
    /// Memory-mapped windows, one per MCFG entry.
    Ecam(Vec<EcamWindow>),
    /// Ports 0xCF8/0xCFC, serialised by a lock (the two-step access is not atomic).
    PortIo(Mutex<()>),
}

/// The kernel's [`ConfigRegionAccess`]. Counts its accesses for the enumeration benchmark.
pub struct KernelConfig {
    method: Method,
    reads: AtomicU64,
    writes: AtomicU64,
}

impl KernelConfig {
    /// Whether extended configuration space (0x100-0xFFF) is reachable.
    pub fn extended(&self) -> bool {
        matches!(self.method, Method::Ecam(_))
    }

    /// The ECAM windows (empty for port I/O).
    pub fn ecam_regions(&self) -> Vec<EcamRegion> {
        match &self.method {
            Method::Ecam(w) => w.iter().map(|w| w.region).collect(),
            Method::PortIo(_) => Vec::new(),
        }
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
        match &self.method {
            Method::Ecam(windows) => match Self::ecam_offset(windows, address, offset) {
                Some((mmio, at)) => mmio.read32(at),
                None => u32::MAX,
            },
            Method::PortIo(lock) => {
                let Some(a) = Self::port_address(address, offset) else {
                    return u32::MAX;
                };
                let _guard = lock.lock();
                x86_64::instructions::interrupts::without_interrupts(|| {
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
        match &self.method {
            Method::Ecam(windows) => {
                if let Some((mmio, at)) = Self::ecam_offset(windows, address, offset) {
                    mmio.write32(at, value);
                }
            }
            Method::PortIo(lock) => {
                let Some(a) = Self::port_address(address, offset) else {
                    return;
                };
                let _guard = lock.lock();
                x86_64::instructions::interrupts::without_interrupts(|| {
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
            let buses = u64::from(region.end_bus - region.start_bus) + 1;
            match Mmio::map(region.base, buses << 20) {
                Ok(mmio) => windows.push(EcamWindow {
                    region: *region,
                    mmio,
                }),
                Err(e) => log::error!("pci: cannot map ECAM at {:#x}: {e}", region.base),
            }
        }
        let method = if windows.is_empty() {
            log::info!("pci: configuration space through port I/O (0xCF8/0xCFC)");
            Method::PortIo(Mutex::new(()))
        } else {
            log::info!(
                "pci: configuration space through ECAM ({} window(s))",
                windows.len()
            );
            Method::Ecam(windows)
        };
        KernelConfig {
            method,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        }
    })
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
    method: Method::PortIo(Mutex::new(())),
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
