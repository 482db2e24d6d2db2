//! Safe device access for drivers: BAR windows that never cover the MSI-X table or PBA, and
//! DMA buffers, both owned and released on `Drop`.
//!
//! A driver gets its registers with [`PciFunction::map_bar`]: the range must lie inside a
//! memory BAR and must not overlap the function's MSI-X table or PBA, which belong to
//! [`IrqVectors`](crate::irq::IrqVectors) alone (a driver writing an MSI-X entry could
//! redirect interrupts behind the ownership model's back). Accesses are bounds-checked by
//! [`checked_access`] (naturally aligned, inside, never wrapping); out of bounds panics.
//!
//! Who owns what: a [`BarWindow`] owns its mapping (unmapped on `Drop`; a leak costs virtual
//! address space). A [`DmaBuffer`] owns physically contiguous memory (freed on `Drop`; the
//! device must be stopped first; a leak costs the frames).

use alloc::boxed::Box;
use core::fmt;
use core::ops::Range;

use crate::BarKind;
use crate::irq::{IrqError, PciFunction, RegisterWindow};
use crate::range::{checked_access, checked_range};

/// Why a window could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowError {
    /// No such memory BAR.
    NoMemoryBar(usize),
    /// The range is not inside the BAR.
    OutsideBar {
        /// BAR index.
        bar: usize,
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
        /// BAR size.
        size: u64,
    },
    /// The range overlaps the MSI-X table or PBA.
    CoversMsix {
        /// BAR index.
        bar: usize,
    },
    /// The platform could not map or allocate.
    Platform(IrqError),
}

impl fmt::Display for WindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowError::NoMemoryBar(b) => write!(f, "BAR{b} is not a memory BAR"),
            WindowError::OutsideBar {
                bar,
                offset,
                len,
                size,
            } => {
                write!(
                    f,
                    "{offset:#x}+{len:#x} is outside BAR{bar} ({size:#x} bytes)"
                )
            }
            WindowError::CoversMsix { bar } => {
                write!(f, "the range covers the MSI-X table or PBA in BAR{bar}")
            }
            WindowError::Platform(e) => write!(f, "{e}"),
        }
    }
}

/// A bounds-checked window of a function's registers.
pub struct BarWindow {
    window: Box<dyn RegisterWindow>,
    len: u64,
}

impl fmt::Debug for BarWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarWindow")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl BarWindow {
    /// The bytes of an access, or a panic naming it.
    fn check(&self, offset: u64, size: u64) -> Range<u64> {
        match checked_access(offset, size, self.len) {
            Ok(r) => r,
            Err(e) => panic!(
                "register access of {size} bytes at {offset:#x} outside a {:#x}-byte window: {e}",
                self.len
            ),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the window is empty (never).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads a dword. Panics outside the window (a driver bug).
    pub fn read32(&self, offset: u64) -> u32 {
        self.check(offset, 4);
        self.window.read32(offset)
    }

    /// Writes a dword. Panics outside the window.
    pub fn write32(&self, offset: u64, value: u32) {
        self.check(offset, 4);
        self.window.write32(offset, value)
    }

    /// Writes a qword as two dwords, low first (as NVMe and virtio allow).
    pub fn write64(&self, offset: u64, value: u64) {
        let r = self.check(offset, 8);
        self.window.write32(r.start, value as u32);
        self.window.write32(r.end - 4, (value >> 32) as u32);
    }

    /// Reads a qword as two dwords, low first.
    pub fn read64(&self, offset: u64) -> u64 {
        let r = self.check(offset, 8);
        u64::from(self.window.read32(r.start)) | u64::from(self.window.read32(r.end - 4)) << 32
    }
}

impl PciFunction {
    /// Maps `len` bytes at `offset` of memory BAR `bar`, refusing the MSI-X table and PBA.
    pub fn map_bar(&self, bar: usize, offset: u64, len: u64) -> Result<BarWindow, WindowError> {
        let info = self.info();
        let b = info
            .bars
            .get(bar)
            .copied()
            .flatten()
            .filter(|b| b.kind != BarKind::Io)
            .ok_or(WindowError::NoMemoryBar(bar))?;
        let outside = WindowError::OutsideBar {
            bar,
            offset,
            len,
            size: b.size,
        };
        let end = match checked_range(offset, len, b.size) {
            Ok(r) if len > 0 => r.end,
            _ => return Err(outside),
        };
        // A BAR's address is not masked to its size, so a malformed one can sit so close to
        // the top that the window's end wraps.
        if b.address.checked_add(end).is_none() {
            return Err(outside);
        }
        let phys = b.address + offset;
        if let Some(m) = info.msix {
            let table = (
                u64::from(m.table_offset),
                u64::from(m.table_offset) + 16 * u64::from(m.table_size),
            );
            let pba_len = u64::from(m.table_size).div_ceil(64) * 8;
            let pba = (u64::from(m.pba_offset), u64::from(m.pba_offset) + pba_len);
            let hits =
                |bir: u8, r: (u64, u64)| usize::from(bir) == bar && offset < r.1 && r.0 < end;
            if hits(m.table_bir, table) || hits(m.pba_bir, pba) {
                return Err(WindowError::CoversMsix { bar });
            }
        }
        let window = self
            .platform()
            .map(phys, len)
            .map_err(WindowError::Platform)?;
        Ok(BarWindow { window, len })
    }

    /// A zeroed DMA buffer of at least `bytes` bytes.
    pub fn dma_buffer(&self, bytes: u64) -> Result<DmaBuffer, WindowError> {
        let region = self.platform().dma(bytes).map_err(WindowError::Platform)?;
        Ok(DmaBuffer { region })
    }
}

/// Memory a device can reach by DMA, provided by the platform.
pub trait DmaRegion: Send + Sync {
    /// Bus address of the first byte (what the device is given).
    fn bus_address(&self) -> u64;
    /// Length in bytes.
    fn len(&self) -> u64;
    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads a byte.
    fn read8(&self, offset: u64) -> u8;
    /// Writes a byte.
    fn write8(&self, offset: u64, value: u8);
    /// Reads a dword (4-byte aligned).
    fn read32(&self, offset: u64) -> u32;
    /// Writes a dword (4-byte aligned).
    fn write32(&self, offset: u64, value: u32);
}

/// A DMA buffer. Freed on `Drop`.
pub struct DmaBuffer {
    region: Box<dyn DmaRegion>,
}

impl fmt::Debug for DmaBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaBuffer")
            .field("bus_address", &self.bus_address())
            .finish_non_exhaustive()
    }
}

impl DmaBuffer {
    /// Bus address of the first byte.
    pub fn bus_address(&self) -> u64 {
        self.region.bus_address()
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.region.len()
    }

    /// Whether the buffer is empty (never).
    pub fn is_empty(&self) -> bool {
        self.region.len() == 0
    }

    /// The bytes of an access, or a panic naming it.
    fn check(&self, offset: u64, size: u64) -> Range<u64> {
        match checked_access(offset, size, self.len()) {
            Ok(r) => r,
            Err(e) => panic!(
                "DMA access of {size} bytes at {offset:#x} outside {:#x} bytes: {e}",
                self.len()
            ),
        }
    }

    /// Reads a byte.
    pub fn read8(&self, offset: u64) -> u8 {
        self.check(offset, 1);
        self.region.read8(offset)
    }

    /// Writes a byte.
    pub fn write8(&self, offset: u64, value: u8) {
        self.check(offset, 1);
        self.region.write8(offset, value)
    }

    /// Reads a dword.
    pub fn read32(&self, offset: u64) -> u32 {
        self.check(offset, 4);
        self.region.read32(offset)
    }

    /// Writes a dword.
    pub fn write32(&self, offset: u64, value: u32) {
        self.check(offset, 4);
        self.region.write32(offset, value)
    }

    /// Writes a qword (two dwords, low first).
    pub fn write64(&self, offset: u64, value: u64) {
        let r = self.check(offset, 8);
        self.region.write32(r.start, value as u32);
        self.region.write32(r.end - 4, (value >> 32) as u32);
    }
}
