//! The kernel's [`Hardware`]: how the firmware layer (ACPICA and the table parsers) reaches
//! the machine.
//!
//! - Memory: RAM is identity-mapped, so a range inside it is used in place; anything else
//!   (tables in firmware-reserved ranges, operation regions on device memory) gets an owned,
//!   uncached [`Mmio`] mapping, kept in [`MAPS`] until ACPICA unmaps it. A range that is
//!   neither (it straddles RAM and device memory) is refused, and ACPICA reports the access
//!   as failed.
//! - Ports: straight to the hardware. PCI configuration space: through [`crate::pcie`]
//!   (ECAM once it is set up, port I/O before).
//! - Time: the TSC (`crate::time`); `Sleep` is a busy wait, since nothing else runs during
//!   boot.

use alloc::collections::BTreeMap;
use core::ptr::NonNull;

use ::firmware::hw::{Hardware, PciLocation, PhysRead};
use pci_types::PciAddress;
use spin::Mutex;
use x86_64::instructions::port::Port;

use crate::memory::mmio::{self, Mmio, RawMmio};

/// The kernel's hardware access for the firmware layer (a marker; state is global).
pub struct KernelHardware;

/// The one instance.
pub static HARDWARE: KernelHardware = KernelHardware;

/// Live mappings made for the firmware layer, by virtual address.
static MAPS: Mutex<BTreeMap<u64, RawMmio>> = Mutex::new(BTreeMap::new());

impl PhysRead for KernelHardware {
    fn read_phys(&self, phys: u64, buf: &mut [u8]) -> bool {
        let len = buf.len();
        let Some(p) = self.map(phys, len) else {
            return false;
        };
        // SAFETY: `p` maps `len` readable bytes at `phys` until the unmap below.
        unsafe { core::ptr::copy_nonoverlapping(p.as_ptr(), buf.as_mut_ptr(), len) };
        // SAFETY: the mapping made above, used no more.
        unsafe { self.unmap(p, len) };
        true
    }
}

fn pci_address(at: PciLocation) -> PciAddress {
    PciAddress::new(at.segment, at.bus, at.device, at.function)
}

impl Hardware for KernelHardware {
    fn map(&self, phys: u64, len: usize) -> Option<NonNull<u8>> {
        let len = u64::try_from(len).ok()?.max(1);
        if mmio::is_identity_mapped_ram(phys, len) {
            return NonNull::new(phys as *mut u8);
        }
        match Mmio::map(phys, len) {
            Ok(m) => {
                let raw = m.into_raw();
                let virt = raw.virt;
                x86_64::instructions::interrupts::without_interrupts(|| {
                    MAPS.lock().insert(virt, raw)
                });
                NonNull::new(virt as *mut u8)
            }
            Err(e) => {
                log::warn!("acpi: cannot map {phys:#x} (+{len:#x}): {e}");
                None
            }
        }
    }

    unsafe fn unmap(&self, virt: NonNull<u8>, _len: usize) {
        let virt = virt.as_ptr() as u64;
        let raw =
            x86_64::instructions::interrupts::without_interrupts(|| MAPS.lock().remove(&virt));
        if let Some(raw) = raw {
            // SAFETY: `raw` is the `into_raw` of a live mapping made by `map`, removed from
            // MAPS, so it is turned back into its owner exactly once.
            drop(unsafe { Mmio::from_raw(raw) });
        }
        // Otherwise it was identity-mapped RAM: nothing to undo.
    }

    fn port_read(&self, port: u16, width: u32) -> u32 {
        match width {
            // SAFETY: AML operation regions name the ports firmware owns for this purpose.
            8 => u32::from(unsafe { Port::<u8>::new(port).read() }),
            // SAFETY: as above.
            16 => u32::from(unsafe { Port::<u16>::new(port).read() }),
            // SAFETY: as above.
            _ => unsafe { Port::<u32>::new(port).read() },
        }
    }

    fn port_write(&self, port: u16, value: u32, width: u32) {
        match width {
            // SAFETY: as for reads: firmware's own ports, written because its AML asked.
            8 => unsafe { Port::<u8>::new(port).write(value as u8) },
            // SAFETY: as above.
            16 => unsafe { Port::<u16>::new(port).write(value as u16) },
            // SAFETY: as above.
            _ => unsafe { Port::<u32>::new(port).write(value) },
        }
    }

    fn pci_read(&self, at: PciLocation, offset: u16, width: u32) -> u64 {
        let address = pci_address(at);
        let dword = |o: u16| u64::from(crate::pcie::read32(address, o & !3));
        let shift = u32::from(offset & 3) * 8;
        match width {
            8 => (dword(offset) >> shift) & 0xFF,
            16 => (dword(offset) >> shift) & 0xFFFF,
            32 => dword(offset),
            _ => dword(offset) | (dword(offset.wrapping_add(4)) << 32),
        }
    }

    fn pci_write(&self, at: PciLocation, offset: u16, value: u64, width: u32) {
        let address = pci_address(at);
        let aligned = offset & !3;
        let shift = u32::from(offset & 3) * 8;
        let merge = |mask: u32| {
            let old = crate::pcie::read32(address, aligned);
            let new = (old & !(mask << shift)) | (((value as u32) & mask) << shift);
            crate::pcie::write32(address, aligned, new);
        };
        match width {
            8 => merge(0xFF),
            16 => merge(0xFFFF),
            32 => crate::pcie::write32(address, aligned, value as u32),
            _ => {
                crate::pcie::write32(address, aligned, value as u32);
                crate::pcie::write32(address, aligned.wrapping_add(4), (value >> 32) as u32);
            }
        }
    }

    fn now_ns(&self) -> u64 {
        crate::time::micros_since_boot().saturating_mul(1000)
    }

    fn stall_us(&self, us: u64) {
        crate::time::busy_wait_us(us);
    }

    fn sleep_ms(&self, ms: u64) {
        crate::time::busy_wait_us(ms.saturating_mul(1000));
    }
}
