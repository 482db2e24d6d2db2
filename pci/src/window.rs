//! Safe device access for drivers: BAR windows that never cover the MSI-X table or PBA,
//! owned and released on `Drop`. (DMA buffers are in [`crate::dma`].)
//!
//! A driver gets its registers with [`PciFunction::map_bar`]: the range must lie inside a
//! memory BAR and must not overlap the function's MSI-X table or PBA, which belong to
//! [`IrqVectors`](crate::irq::IrqVectors) alone (a driver writing an MSI-X entry could
//! redirect interrupts behind the ownership model's back). Accesses are bounds-checked by
//! [`checked_access`] (naturally aligned, inside, never wrapping); out of bounds panics.
//!
//! Who owns what: a [`BarWindow`] owns its mapping (unmapped on `Drop`; a leak costs virtual
//! address space) and shares the function's core, so the function stays claimed while a
//! window lives: a window never reaches a function another driver owns.

use alloc::boxed::Box;
use core::fmt;
use core::ops::Range;

use alloc::sync::Arc;

use crate::BarKind;
use crate::dma::BusAddr;
use crate::function::{Core, PciFunction, config_guard};
use crate::platform::{PlatformError, RegisterWindow};
use crate::range::{checked_access, checked_range};

pub use crate::dma::{DmaBuffer, DmaSlice};
pub use crate::platform::DmaRegion;

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
    /// The BAR holds no address: firmware left it unassigned (0), so the device does not
    /// decode it, and a window "inside" it would be a window on whatever sits at address 0
    /// onwards (for a large 64-bit BAR: the APIC, other devices, configuration space).
    Unassigned {
        /// BAR index.
        bar: usize,
    },
    /// Another memory BAR of the function is unassigned (address 0). Memory decode is one bit
    /// for all of a function's BARs, so turning it on for this window would make the device
    /// claim the addresses from 0 up to that BAR's size too: RAM, and for a large BAR the
    /// interrupt message range at `0xFEE0_0000`.
    SiblingUnassigned {
        /// The BAR asked for.
        bar: usize,
        /// The unassigned one.
        unassigned: usize,
    },
    /// The BAR no longer holds the address enumeration found (the function was reset).
    BarMoved {
        /// BAR index.
        bar: usize,
        /// The address found by enumeration.
        enumerated: u64,
        /// What the register holds now.
        now: u64,
    },
    /// The platform could not map or allocate.
    Platform(PlatformError),
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
            WindowError::Unassigned { bar } => {
                write!(f, "BAR{bar} is unassigned (address 0): nothing to map")
            }
            WindowError::SiblingUnassigned { bar, unassigned } => write!(
                f,
                "BAR{unassigned} is unassigned (address 0): memory decode for BAR{bar} would make it claim addresses from 0"
            ),
            WindowError::BarMoved {
                bar,
                enumerated,
                now,
            } => write!(
                f,
                "BAR{bar} holds {now:#x}, not {enumerated:#x} as enumerated (was the function reset?)"
            ),
            WindowError::Platform(e) => write!(f, "{e}"),
        }
    }
}

/// A bounds-checked window of a function's registers.
///
/// # Invariants
/// `window` maps `len` bytes of one of the function's memory BARs, clear of its MSI-X table
/// and PBA.
///
/// Who owns it: the driver. `Drop` unmaps it and lets go of the function's core (the function
/// is released once nothing else holds it); a leak costs virtual address space and keeps the
/// function claimed.
pub struct BarWindow {
    window: Box<dyn RegisterWindow>,
    len: u64,
    _core: Arc<Core>,
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

    /// Hands a DMA buffer's bus address to the device: writes it as a qword at `offset`
    /// (a queue base register, for instance). Panics for a buffer of another function.
    pub fn write_bus_address(&self, offset: u64, address: BusAddr<'_>) {
        self.write64(offset, address.raw_for(Arc::as_ptr(&self._core) as usize));
    }
}

impl PciFunction {
    /// Maps `len` bytes at `offset` of memory BAR `bar`, refusing the MSI-X table and PBA.
    /// Turns the function's memory decode on (Command bit 1), which the window needs.
    pub fn map_bar(&self, bar: usize, offset: u64, len: u64) -> Result<BarWindow, WindowError> {
        let info = self.info();
        let b = info
            .bars
            .get(bar)
            .copied()
            .flatten()
            .filter(|b| b.kind != BarKind::Io)
            .ok_or(WindowError::NoMemoryBar(bar))?;
        if b.address == 0 {
            return Err(WindowError::Unassigned { bar });
        }
        // Memory decode covers every memory BAR at once (as Linux's `pci_enable_resources`
        // refuses, so does this): none may be left at 0.
        let unassigned = info
            .bars
            .iter()
            .position(|b| b.is_some_and(|b| b.kind != BarKind::Io && b.address == 0));
        if let Some(unassigned) = unassigned {
            return Err(WindowError::SiblingUnassigned { bar, unassigned });
        }
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
        // The BAR must still hold what enumeration found: a function reset (FLR, or a D3hot
        // to D0 transition) clears it, and turning memory decode back on would then make the
        // device answer at whatever address the BAR holds now.
        let register = |n: usize| u64::from(self.config_read32(0x10 + 4 * n as u16));
        let mut now = register(bar) & !0xf;
        if b.kind == BarKind::Memory64 {
            now |= register(bar + 1) << 32;
        }
        if now != b.address {
            return Err(WindowError::BarMoved {
                bar,
                enumerated: b.address,
                now,
            });
        }
        let window = self
            .platform()
            .map(phys, len)
            .map_err(WindowError::Platform)?;
        let core = self.core();
        core.command(config_guard::MEMORY_SPACE, 0);
        log::debug!(
            "pci: {} BAR{bar}+{offset:#x}: {len:#x} bytes at {phys:#x} mapped",
            info.address
        );
        // INVARIANT: checked against the BAR and the MSI-X structures above.
        Ok(BarWindow {
            window,
            len,
            _core: core.clone(),
        })
    }
}
