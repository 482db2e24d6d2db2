//! The `acpi` crate's [`Handler`]: how ACPI reaches memory, ports, PCI and time.
//!
//! - Table mappings: tables inside identity-mapped RAM are used in place; tables elsewhere
//!   (firmware-reserved ranges) get an owned [`Mmio`] mapping, given back when the crate drops
//!   its `PhysicalMapping`.
//! - AML memory accesses go through a short-lived mapping per access; port I/O and PCI
//!   config accesses go straight to the hardware (PCI through [`crate::pcie`]).
//! - AML mutexes: the kernel runs AML on one CPU with interrupts enabled only where it is
//!   safe, so a mutex is a counter that is never contended.

use core::ptr::NonNull;

use ::acpi::aml::AmlError;
use ::acpi::{Handle, Handler, PciAddress, PhysicalMapping};
use x86_64::instructions::port::Port;

use crate::memory::mmio::{self, Mmio, RawMmio};

/// The kernel's ACPI handler (a marker; all state is global).
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelAcpi;

/// The 4-byte signature of the table at `phys` (`????` if unreadable).
pub fn signature_at(phys: usize) -> [u8; 4] {
    let phys = phys as u64;
    if mmio::is_identity_mapped_ram(phys, 4) {
        // SAFETY: identity-mapped RAM holding an ACPI table header that nothing writes.
        return unsafe { (phys as *const [u8; 4]).read_unaligned() };
    }
    match Mmio::map(phys, 4) {
        Ok(m) => m.read32(0).to_le_bytes(),
        Err(_) => *b"????",
    }
}

fn with_memory<R>(address: usize, size: u64, f: impl FnOnce(*mut u8) -> R) -> R {
    let phys = address as u64;
    if mmio::is_identity_mapped_ram(phys, size) {
        return f(phys as *mut u8);
    }
    match Mmio::map(phys, size) {
        Ok(m) => f(m.virt() as *mut u8),
        Err(e) => panic!("AML touched physical {phys:#x}, which cannot be mapped: {e}"),
    }
}

macro_rules! memory_access {
    ($read:ident, $write:ident, $t:ty) => {
        fn $read(&self, address: usize) -> $t {
            with_memory(address, size_of::<$t>() as u64, |p| {
                // SAFETY: `p` maps `size_of::<$t>()` bytes at `address`, for this call only.
                unsafe { (p as *const $t).read_volatile() }
            })
        }
        fn $write(&self, address: usize, value: $t) {
            with_memory(address, size_of::<$t>() as u64, |p| {
                // SAFETY: as for the read; AML asked for this write to its operation region.
                unsafe { (p as *mut $t).write_volatile(value) }
            })
        }
    };
}

macro_rules! port_access {
    ($read:ident, $write:ident, $t:ty) => {
        fn $read(&self, port: u16) -> $t {
            // SAFETY: AML operation regions name the ports firmware owns for this purpose.
            unsafe { Port::<$t>::new(port).read() }
        }
        fn $write(&self, port: u16, value: $t) {
            // SAFETY: as for the read.
            unsafe { Port::<$t>::new(port).write(value) }
        }
    };
}

impl Handler for KernelAcpi {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let phys = physical_address as u64;
        let (virt, mapped) = if mmio::is_identity_mapped_ram(phys, size as u64) {
            (phys, size)
        } else {
            match Mmio::map(phys, size as u64) {
                Ok(m) => {
                    let raw = m.into_raw();
                    (raw.virt, raw.len as usize)
                }
                Err(e) => panic!("acpi: cannot map table at {phys:#x} (+{size:#x}): {e}"),
            }
        };
        PhysicalMapping {
            physical_start: physical_address,
            virtual_start: NonNull::new(virt as *mut T).expect("mapping at address 0"),
            region_length: size,
            mapped_length: mapped,
            handler: *self,
        }
    }

    fn unmap_physical_region<T>(region: &PhysicalMapping<Self, T>) {
        let phys = region.physical_start as u64;
        let virt = region.virtual_start.as_ptr() as u64;
        if virt != phys {
            let raw = RawMmio {
                phys,
                len: region.mapped_length as u64,
                virt,
            };
            // SAFETY: a virtual address different from the physical one only comes from the
            // `into_raw` in `map_physical_region`, and the crate unmaps each mapping once.
            drop(unsafe { Mmio::from_raw(raw) });
        }
    }

    memory_access!(read_u8, write_u8, u8);
    memory_access!(read_u16, write_u16, u16);
    memory_access!(read_u32, write_u32, u32);
    memory_access!(read_u64, write_u64, u64);
    port_access!(read_io_u8, write_io_u8, u8);
    port_access!(read_io_u16, write_io_u16, u16);
    port_access!(read_io_u32, write_io_u32, u32);

    fn read_pci_u8(&self, address: PciAddress, offset: u16) -> u8 {
        (crate::pcie::read32(address, offset & !3) >> ((offset & 3) * 8)) as u8
    }
    fn read_pci_u16(&self, address: PciAddress, offset: u16) -> u16 {
        (crate::pcie::read32(address, offset & !3) >> ((offset & 2) * 8)) as u16
    }
    fn read_pci_u32(&self, address: PciAddress, offset: u16) -> u32 {
        crate::pcie::read32(address, offset & !3)
    }
    fn write_pci_u8(&self, address: PciAddress, offset: u16, value: u8) {
        let shift = (offset & 3) * 8;
        let old = crate::pcie::read32(address, offset & !3);
        let new = (old & !(0xff << shift)) | (u32::from(value) << shift);
        crate::pcie::write32(address, offset & !3, new);
    }
    fn write_pci_u16(&self, address: PciAddress, offset: u16, value: u16) {
        let shift = (offset & 2) * 8;
        let old = crate::pcie::read32(address, offset & !3);
        let new = (old & !(0xffff << shift)) | (u32::from(value) << shift);
        crate::pcie::write32(address, offset & !3, new);
    }
    fn write_pci_u32(&self, address: PciAddress, offset: u16, value: u32) {
        crate::pcie::write32(address, offset & !3, value);
    }

    fn nanos_since_boot(&self) -> u64 {
        crate::time::micros_since_boot() * 1000
    }

    fn stall(&self, microseconds: u64) {
        crate::time::busy_wait_us(microseconds);
    }

    fn sleep(&self, milliseconds: u64) {
        crate::time::busy_wait_us(milliseconds * 1000);
    }

    fn create_mutex(&self) -> Handle {
        Handle(0)
    }

    fn acquire(&self, _mutex: Handle, _timeout: u16) -> Result<(), AmlError> {
        Ok(())
    }

    fn release(&self, _mutex: Handle) {}
}
