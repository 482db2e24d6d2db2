//! MSI-X registers (PCI Local Bus 3.0 §6.8.2).
//!
//! Capability: Message Control at +2 (bits 10:0 table size - 1, bit 14 Function Mask, bit 15
//! MSI-X Enable), Table Offset/BIR at +4, PBA Offset/BIR at +8. Table entry n at 16 * n:
//! Message Address (+0), Message Upper Address (+4), Message Data (+8), Vector Control (+12,
//! bit 0 = masked). PBA: bit n of the qword array = entry n pending.

use super::{IrqError, MsiMessage, RegisterWindow};
use crate::{Bar, Function, Msix};

/// Message Control: Function Mask.
pub const FUNCTION_MASK: u16 = 1 << 14;
/// Message Control: MSI-X Enable.
pub const ENABLE: u16 = 1 << 15;
/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;
/// Vector Control: masked.
pub const ENTRY_MASKED: u32 = 1;

/// Offset of the Message Control word.
pub fn control_offset(cap: &Msix) -> u16 {
    u16::from(cap.offset) + 2
}

/// The physical address and length of a structure (`offset`, `len`) inside BAR `bir`,
/// checked against the BAR's size.
pub fn locate(function: &Function, bir: u8, offset: u32, len: u64) -> Result<u64, IrqError> {
    let bar: Option<&Bar> = function.bars.get(usize::from(bir)).and_then(|b| b.as_ref());
    let fail = |bar_size| IrqError::TableOutsideBar {
        bir,
        offset: u64::from(offset),
        len,
        bar_size,
    };
    let bar = match bar {
        Some(b) if b.kind != crate::BarKind::Io && b.address != 0 => b,
        Some(b) => {
            return Err(fail(if b.kind == crate::BarKind::Io {
                0
            } else {
                b.size
            }));
        }
        None => return Err(fail(0)),
    };
    let r = crate::range::checked_range(u64::from(offset), len, bar.size)
        .map_err(|_| fail(bar.size))?;
    // A BAR's address is not masked to its size: a malformed one near the top would wrap.
    bar.address.checked_add(r.end).ok_or(fail(bar.size))?;
    Ok(bar.address + r.start)
}

/// Bytes of the PBA for `entries` entries (whole qwords).
pub fn pba_len(entries: u16) -> u64 {
    u64::from(entries).div_ceil(64) * 8
}

/// Writes entry `n`'s message, leaving it masked.
pub fn write_entry(table: &dyn RegisterWindow, n: usize, message: MsiMessage) {
    let base = n as u64 * ENTRY_SIZE;
    table.write32(base + 12, ENTRY_MASKED);
    table.write32(base, message.address as u32);
    table.write32(base + 4, (message.address >> 32) as u32);
    table.write32(base + 8, message.data);
}

/// Masks or unmasks entry `n`.
pub fn set_masked(table: &dyn RegisterWindow, n: usize, masked: bool) {
    let at = n as u64 * ENTRY_SIZE + 12;
    let control = table.read32(at);
    table.write32(
        at,
        if masked {
            control | ENTRY_MASKED
        } else {
            control & !ENTRY_MASKED
        },
    );
}

/// Whether entry `n`'s pending bit is set.
pub fn is_pending(pba: &dyn RegisterWindow, n: usize) -> bool {
    let dword = pba.read32((n / 32) as u64 * 4);
    dword & (1 << (n % 32)) != 0
}
