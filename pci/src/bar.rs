//! Base address registers (PCI Local Bus 3.0 §6.2.5.1): decoding and sizing.
//!
//! Sizing writes all ones to a BAR and reads back which address bits stuck; the lowest one
//! is the size. While a BAR holds all ones the device would decode that address, so decode
//! is switched off first (Command bits 0 and 1), the BAR restored, and then Command
//! restored — unlike `pci_types`' `bar()`, which sizes with decode on (and panics on the
//! reserved memory type). Host bridges are the exception, as in Linux (`mmio_always_on`):
//! switching off their memory decode can cut the CPU off from RAM, so their BARs are sized
//! with decode left alone.
//!
//! Accesses: one read for a BAR's original value, then (decode off once per function) a
//! write of all ones, a read back and a restoring write: 4 accesses per 32-bit BAR, 8 per
//! 64-bit BAR, plus 2 Command writes per function if decode was on.

use alloc::vec::Vec;
use core::fmt;

use pci_types::ConfigRegionAccess;

use crate::enumerate::{Abort, Reader, ScanErrorKind};

/// Offset of Command (low 16 bits) and Status (high 16 bits, RW1C error bits).
pub(crate) const COMMAND: u16 = 0x04;
/// Command bits 0 (I/O space enable) and 1 (memory space enable).
pub(crate) const DECODE_ENABLE: u16 = 0b11;

/// Offset of BAR `slot` (0..=5) in configuration space.
pub const fn bar_offset(slot: usize) -> u16 {
    0x10 + 4 * slot as u16
}

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BarKind {
    /// I/O space (bit 0 set).
    Io,
    /// 32-bit memory space (type 00b, or the legacy "below 1 MiB" type 01b).
    Memory32,
    /// 64-bit memory space (type 10b); takes this slot and the next.
    Memory64,
}

/// One decoded and sized BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bar {
    /// I/O, 32-bit or 64-bit memory.
    pub kind: BarKind,
    /// Memory BAR bit 3: reads have no side effects. Always false for I/O.
    pub prefetchable: bool,
    /// Base address as firmware assigned it (the type bits masked off).
    pub address: u64,
    /// Size in bytes: a power of two.
    pub size: u64,
    /// The memory type was 01b, "below 1 MiB" (PCI 2.x, reserved since 3.0); the BAR is
    /// treated as [`BarKind::Memory32`].
    pub below_1m: bool,
}

impl Bar {
    /// One past the last byte the BAR decodes (saturating).
    pub fn end(&self) -> u64 {
        self.address.saturating_add(self.size)
    }
}

/// A BAR that could not be decoded; the slot is left empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarError {
    /// The BAR read all ones while the function was still present: no valid encoding.
    AllOnes {
        /// BAR slot.
        slot: u8,
    },
    /// All ones read back after sizing, while the function was still present.
    ReadbackAllOnes {
        /// BAR slot.
        slot: u8,
    },
    /// The type bits read back differ from the original ones.
    TypeChanged {
        /// BAR slot.
        slot: u8,
        /// Original value.
        original: u32,
        /// Value read back after writing all ones.
        readback: u32,
    },
    /// A 64-bit BAR in the last slot has no slot for its upper half.
    Memory64InLastSlot {
        /// BAR slot.
        slot: u8,
    },
    /// Memory type 11b is reserved: the layout is unknown, so the BAR is not sized.
    ReservedMemoryType {
        /// BAR slot.
        slot: u8,
        /// The BAR's value.
        value: u32,
    },
}

impl fmt::Display for BarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BarError::AllOnes { slot } => {
                write!(
                    f,
                    "BAR {slot} reads 0xffffffff (no valid encoding); not sized"
                )
            }
            BarError::ReadbackAllOnes { slot } => {
                write!(f, "BAR {slot} reads back 0xffffffff after sizing; ignored")
            }
            BarError::TypeChanged {
                slot,
                original,
                readback,
            } => write!(
                f,
                "BAR {slot} type bits changed while sizing ({original:#010x}, read back \
                 {readback:#010x}); ignored"
            ),
            BarError::Memory64InLastSlot { slot } => {
                write!(f, "BAR {slot} is 64-bit but is the last BAR; ignored")
            }
            BarError::ReservedMemoryType { slot, value } => write!(
                f,
                "BAR {slot} ({value:#010x}) has the reserved memory type 11b; ignored"
            ),
        }
    }
}

/// Lowest set bit of a size mask: the BAR's size (0 if nothing stuck: unimplemented).
fn size_of_mask(mask: u64) -> u64 {
    mask.isolate_lowest_one()
}

/// Sizes the first `count` BARs (6 for header type 0, 2 for type 1).
///
/// `command` is the Command register as read; decode is switched off before the first
/// write unless `keep_decode` (host bridges) or it is already off, and restored after the
/// last BAR. Problems are pushed to `errors`; only a vanished function (or a refused access)
/// aborts, and then Command is still restored.
pub(crate) fn size_bars<A: ConfigRegionAccess>(
    r: &Reader<'_, '_, A>,
    count: usize,
    command: u16,
    keep_decode: bool,
    errors: &mut Vec<ScanErrorKind>,
) -> Result<[Option<Bar>; 6], Abort> {
    let mut sizer = Sizer {
        r,
        command,
        keep_decode,
        disabled: false,
    };
    let mut bars = [None; 6];
    let result = sizer.size_all(count.min(6), &mut bars, errors);
    if sizer.disabled {
        // Restore decode even if the function vanished (the write then goes nowhere). The
        // high half is zero so no RW1C Status bit is cleared.
        let restored = r.write(COMMAND, u32::from(command));
        result?;
        restored?;
    } else {
        result?;
    }
    Ok(bars)
}

struct Sizer<'s, 'r, 'a, A> {
    r: &'s Reader<'r, 'a, A>,
    command: u16,
    keep_decode: bool,
    disabled: bool,
}

impl<A: ConfigRegionAccess> Sizer<'_, '_, '_, A> {
    /// Switches decode off before the first all-ones write, once.
    fn decode_off(&mut self) -> Result<(), Abort> {
        if !self.disabled && !self.keep_decode && self.command & DECODE_ENABLE != 0 {
            self.r
                .write(COMMAND, u32::from(self.command & !DECODE_ENABLE))?;
            self.disabled = true;
        }
        Ok(())
    }

    /// Writes all ones, reads back, restores: returns the read-back value. A register that
    /// reads back what it held (an unimplemented BAR is hardwired to zero) still holds it, so
    /// it is not written again: one configuration write fewer per unused BAR.
    fn probe(&mut self, offset: u16, original: u32) -> Result<u32, Abort> {
        self.decode_off()?;
        self.r.write(offset, !0)?;
        let readback = self.r.read_raw(offset)?;
        if readback != original {
            self.r.write(offset, original)?;
        }
        Ok(readback)
    }

    fn size_all(
        &mut self,
        count: usize,
        bars: &mut [Option<Bar>; 6],
        errors: &mut Vec<ScanErrorKind>,
    ) -> Result<(), Abort> {
        let mut slot = 0;
        while slot < count {
            let off = bar_offset(slot);
            let slot8 = slot as u8;
            // All ones here is never valid (I/O bit 1 and memory type 11b are reserved), so
            // `read` checks whether the function is still there.
            let original = self.r.read(off)?;
            if original == !0 {
                errors.push(BarError::AllOnes { slot: slot8 }.into());
                slot += 1;
                continue;
            }
            if original & 1 == 1 {
                let readback = self.probe(off, original)?;
                slot += 1;
                if let Some(e) = self.check_readback(slot8, original, readback, 0b1)? {
                    errors.push(e.into());
                    continue;
                }
                // 16-bit I/O decoders read back zero in the upper half: harmless here.
                let size = size_of_mask(u64::from(readback & !0b11));
                if size != 0 {
                    bars[slot - 1] = Some(Bar {
                        kind: BarKind::Io,
                        prefetchable: false,
                        address: u64::from(original & !0b11),
                        size,
                        below_1m: false,
                    });
                }
                continue;
            }
            let prefetchable = original & 0b1000 != 0;
            match (original >> 1) & 0b11 {
                0b11 => {
                    errors.push(
                        BarError::ReservedMemoryType {
                            slot: slot8,
                            value: original,
                        }
                        .into(),
                    );
                    slot += 1;
                }
                0b10 => {
                    if slot + 1 >= count {
                        // Never touch the dword after the last BAR: 0x28 is the CardBus CIS
                        // pointer, and for bridges 0x18 holds the bus numbers.
                        errors.push(BarError::Memory64InLastSlot { slot: slot8 }.into());
                        slot += 1;
                        continue;
                    }
                    // Any upper half is valid, all ones included: no presence check.
                    let high = self.r.read_raw(off + 4)?;
                    self.decode_off()?;
                    self.r.write(off, !0)?;
                    self.r.write(off + 4, !0)?;
                    let low_back = self.r.read_raw(off)?;
                    let high_back = self.r.read_raw(off + 4)?;
                    self.r.write(off, original)?;
                    self.r.write(off + 4, high)?;
                    slot += 2;
                    if let Some(e) = self.check_readback(slot8, original, low_back, 0b1111)? {
                        errors.push(e.into());
                        continue;
                    }
                    let mask = u64::from(high_back) << 32 | u64::from(low_back & !0b1111);
                    let size = size_of_mask(mask);
                    if size != 0 {
                        bars[slot - 2] = Some(Bar {
                            kind: BarKind::Memory64,
                            prefetchable,
                            address: u64::from(high) << 32 | u64::from(original & !0b1111),
                            size,
                            below_1m: false,
                        });
                    }
                }
                ty => {
                    let readback = self.probe(off, original)?;
                    slot += 1;
                    if let Some(e) = self.check_readback(slot8, original, readback, 0b1111)? {
                        errors.push(e.into());
                        continue;
                    }
                    let size = size_of_mask(u64::from(readback & !0b1111));
                    if size != 0 {
                        bars[slot - 1] = Some(Bar {
                            kind: BarKind::Memory32,
                            prefetchable,
                            address: u64::from(original & !0b1111),
                            size,
                            below_1m: ty == 0b01,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// A read-back of all ones, or with other type bits, is an error (after making sure the
    /// function has not simply vanished).
    fn check_readback(
        &self,
        slot: u8,
        original: u32,
        readback: u32,
        type_bits: u32,
    ) -> Result<Option<BarError>, Abort> {
        if readback == !0 {
            self.r.check_present()?;
            return Ok(Some(BarError::ReadbackAllOnes { slot }));
        }
        if readback & type_bits != original & type_bits {
            return Ok(Some(BarError::TypeChanged {
                slot,
                original,
                readback,
            }));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_the_lowest_set_bit() {
        assert_eq!(size_of_mask(0xffff_f000), 0x1000);
        assert_eq!(size_of_mask(0xffe0), 0x20);
        assert_eq!(size_of_mask(0xffff_fffc_0000_0000), 0x4_0000_0000);
        assert_eq!(size_of_mask(0), 0);
        assert_eq!(bar_offset(5), 0x24);
    }
}
