//! [`VendorWindow`]: one vendor-specific capability (PCI 3.0 §6.7, capability ID 09h),
//! readable and writable inside its own length and nowhere else.
//!
//! The capability's body means what its vendor says. The window bounds the bytes, not their
//! meaning: what a device does with a vendor register is in general outside what this stack
//! can check, as is DMA without an IOMMU. One meaning is known and checked: virtio's
//! `VIRTIO_PCI_CAP_PCI_CFG` (virtio 1.2 §4.1.4.9) is a second path into the device's BARs
//! (aim it with `bar`, `offset`, `length`, then access `pci_cfg_data`), so a write through
//! its data field is refused when the window is aimed at the MSI-X table or PBA, which belong
//! to [`IrqVectors`](crate::irq::IrqVectors) as they do through [`map_bar`](super::PciFunction::map_bar).

use alloc::sync::Arc;
use core::fmt;

use super::{ConfigWriteError, Core};
use crate::range::checked_access;

/// Red Hat's PCI vendor ID, which virtio devices carry (virtio 1.2 §4.1.2).
const VIRTIO_VENDOR: u16 = 0x1af4;
/// `cfg_type` of the PCI configuration access capability (virtio 1.2 §4.1.4).
const VIRTIO_PCI_CAP_PCI_CFG: u8 = 5;
/// Offset of `pci_cfg_data` in that capability (virtio 1.2 §4.1.4.9).
const VIRTIO_CFG_DATA: u16 = 16;

/// A window on one vendor-specific capability.
///
/// # Invariants
/// `offset` is the header of a vendor-specific capability of the function, and `len` its
/// length byte (at least 3).
///
/// Who owns it: the driver. It holds the function's core, so the function stays claimed
/// while it lives; `Drop` releases only that hold.
pub struct VendorWindow {
    core: Arc<Core>,
    offset: u16,
    len: u16,
}

impl fmt::Debug for VendorWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendorWindow")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

impl VendorWindow {
    pub(crate) fn new(core: Arc<Core>, offset: u16) -> Option<VendorWindow> {
        let len = core.protected.vendor(offset)?;
        Some(VendorWindow { core, offset, len })
    }

    /// Offset of the capability in configuration space.
    pub fn offset(&self) -> u16 {
        self.offset
    }

    /// The capability's length in bytes (its byte 2).
    pub fn len(&self) -> u16 {
        self.len
    }

    /// Whether the capability is empty (never: it has at least its header).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn at(&self, offset: u16, width: u8) -> Result<u16, ConfigWriteError> {
        let bad = ConfigWriteError::BadAccess {
            offset: self.offset.saturating_add(offset),
            width,
        };
        checked_access(u64::from(offset), u64::from(width), u64::from(self.len))
            .map(|r| self.offset + r.start as u16)
            .map_err(|_| bad)
    }

    /// Reads the byte at `offset` in the capability.
    pub fn read8(&self, offset: u16) -> Result<u8, ConfigWriteError> {
        let at = self.at(offset, 1)?;
        Ok((self.core.read32(at & !3) >> (8 * (at & 3))) as u8)
    }

    /// Reads the dword at `offset` in the capability (dword-aligned in configuration space).
    pub fn read32(&self, offset: u16) -> Result<u32, ConfigWriteError> {
        let at = self.at(offset, 4)?;
        Ok(self.core.read32(at))
    }

    /// Writes the dword at `offset` in the capability. The header (ID, next pointer, length)
    /// and anything past the capability's end are refused.
    pub fn write32(&self, offset: u16, value: u32) -> Result<(), ConfigWriteError> {
        let at = self.at(offset, 4)?;
        // The aim is checked and the data written under one lock: no other window (or
        // handler) can re-aim the capability in between.
        self.core.locked(|_| {
            self.check_alias(offset, 4)?;
            self.core
                .checked_write_locked(at, 4, value, Some(self.offset))
        })
    }

    /// Writes the byte at `offset` in the capability.
    pub fn write8(&self, offset: u16, value: u8) -> Result<(), ConfigWriteError> {
        let at = self.at(offset, 1)?;
        self.core.locked(|_| {
            self.check_alias(offset, 1)?;
            self.core
                .checked_write_locked(at, 1, u32::from(value), Some(self.offset))
        })
    }

    /// Refuses a write to virtio's `pci_cfg_data` while the window is aimed at the MSI-X
    /// table or PBA (see the module documentation).
    fn check_alias(&self, offset: u16, width: u16) -> Result<(), ConfigWriteError> {
        let info = &self.core.info;
        let data = VIRTIO_CFG_DATA..VIRTIO_CFG_DATA + 4;
        let virtio_cfg = info.vendor_id == VIRTIO_VENDOR
            && self.len >= VIRTIO_CFG_DATA + 4
            && self.read8(3)? == VIRTIO_PCI_CAP_PCI_CFG;
        if !virtio_cfg || offset + width <= data.start || offset >= data.end {
            return Ok(());
        }
        let Some(msix) = info.msix else {
            return Ok(());
        };
        let bar = self.read8(4)?;
        let start = u64::from(self.read32(8)?);
        let end = start + u64::from(self.read32(12)?).max(1);
        let table = u64::from(msix.table_offset);
        let table = table..table + 16 * u64::from(msix.table_size);
        let pba = u64::from(msix.pba_offset);
        let pba = pba..pba + u64::from(msix.table_size).div_ceil(64) * 8;
        let hits =
            |bir: u8, r: &core::ops::Range<u64>| bir == bar && start < r.end && r.start < end;
        if hits(msix.table_bir, &table) || hits(msix.pba_bir, &pba) {
            return Err(ConfigWriteError::Protected {
                offset: self.offset + offset,
                register: super::Register::Msix(u16::from(msix.offset)),
            });
        }
        Ok(())
    }
}
