//! AML resource descriptors (ACPI 6.5 §6.4), decoded from the raw buffers `_CRS` and `_PRS`
//! return, and the one `_SRS` buffer this crate writes (a link device's chosen interrupt).
//!
//! Only what PCI interrupt routing and host bridges need: IRQ descriptors (small item 0x04,
//! §6.4.2.1: a 16-bit *mask*, whose set bits are the IRQ numbers), Extended Interrupt
//! descriptors (large item 0x09, §6.4.3.6: a list of 32-bit interrupt numbers) and the bus
//! number ranges of Word/DWord/QWord/Extended Address Space descriptors (§6.4.3.5, resource
//! type 2). Every length is checked against the buffer; a malformed list yields what was
//! decoded before the fault.

use alloc::vec::Vec;

use super::{Polarity, Trigger};

/// Small item: IRQ (ACPI 6.5 §6.4.2.1), tag bits 6:3.
const SMALL_IRQ: u8 = 0x04;
/// Small item: End Tag (§6.4.2.9).
const SMALL_END: u8 = 0x0F;
/// Large item: Extended Interrupt (§6.4.3.6).
const LARGE_EXT_IRQ: u8 = 0x09;
/// Large items: DWord (§6.4.3.5.2), Word (§6.4.3.5.3), QWord (§6.4.3.5.1), Extended
/// (§6.4.3.5.4) Address Space.
const LARGE_DWORD: u8 = 0x07;
const LARGE_WORD: u8 = 0x08;
const LARGE_QWORD: u8 = 0x0A;
const LARGE_EXTENDED: u8 = 0x0B;
/// Address space resource type "bus number range" (§6.4.3.5, byte 3).
const RANGE_BUS: u8 = 2;

/// How a descriptor encodes interrupts (and so how `_SRS` must answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqForm {
    /// `IRQ()`/`IRQNoFlags()`: ISA IRQ numbers 0-15 as a mask; `flags` tells whether the
    /// optional third byte was present.
    Legacy {
        /// The descriptor had its information byte.
        flags: bool,
    },
    /// `Interrupt()`: GSIs as 32-bit numbers.
    Extended,
}

/// One interrupt descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interrupts {
    /// The interrupt numbers, in order (empty: disabled).
    pub numbers: Vec<u32>,
    /// Polarity.
    pub polarity: Polarity,
    /// Trigger mode.
    pub trigger: Trigger,
    /// Shared.
    pub shared: bool,
    /// Encoding.
    pub form: IrqForm,
}

/// One descriptor: tag (small items: name bits 6:3; large items: 0x80 | name) and body.
fn descriptors(buf: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut at = 0usize;
    core::iter::from_fn(move || {
        let first = *buf.get(at)?;
        if first & 0x80 == 0 {
            let name = (first >> 3) & 0x0F;
            let len = usize::from(first & 0x07);
            let body = buf.get(at + 1..at + 1 + len)?;
            at += 1 + len;
            if name == SMALL_END {
                at = buf.len();
            }
            Some((name, body))
        } else {
            let len = usize::from(u16::from_le_bytes([*buf.get(at + 1)?, *buf.get(at + 2)?]));
            let body = buf.get(at + 3..at.checked_add(3 + len)?)?;
            at += 3 + len;
            Some((first, body))
        }
    })
}

/// Every interrupt descriptor in a resource template, in order.
pub fn interrupts(buf: &[u8]) -> Vec<Interrupts> {
    let mut out = Vec::new();
    for (tag, body) in descriptors(buf) {
        if tag == SMALL_IRQ {
            let Some(mask) = body.get(..2) else { continue };
            let mask = u16::from_le_bytes([mask[0], mask[1]]);
            let info = body.get(2).copied();
            // Without the information byte: edge, active-high, exclusive (§6.4.2.1).
            let flags = info.unwrap_or(0x01);
            out.push(Interrupts {
                numbers: (0..16).filter(|b| mask & (1 << b) != 0).collect(),
                trigger: if flags & 0x01 != 0 {
                    Trigger::Edge
                } else {
                    Trigger::Level
                },
                polarity: if flags & 0x08 != 0 {
                    Polarity::Low
                } else {
                    Polarity::High
                },
                shared: flags & 0x10 != 0,
                form: IrqForm::Legacy {
                    flags: info.is_some(),
                },
            });
        } else if tag == 0x80 | LARGE_EXT_IRQ {
            let (Some(&flags), Some(&count)) = (body.first(), body.get(1)) else {
                continue;
            };
            let numbers = (0..usize::from(count))
                .map_while(|i| {
                    let at = 2 + 4 * i;
                    body.get(at..at + 4)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                })
                .collect();
            out.push(Interrupts {
                numbers,
                trigger: if flags & 0x02 != 0 {
                    Trigger::Edge
                } else {
                    Trigger::Level
                },
                polarity: if flags & 0x04 != 0 {
                    Polarity::Low
                } else {
                    Polarity::High
                },
                shared: flags & 0x08 != 0,
                form: IrqForm::Extended,
            });
        }
    }
    out
}

/// The bus number range of a host bridge's `_CRS` (the first bus-range descriptor).
pub fn bus_range(buf: &[u8]) -> Option<(u8, u8)> {
    for (tag, body) in descriptors(buf) {
        // Each form: type, general flags, type flags, then granularity, min, max, ...
        let (width, fields_at) = match tag & 0x7F {
            LARGE_WORD if tag & 0x80 != 0 => (2, 3),
            LARGE_DWORD if tag & 0x80 != 0 => (4, 3),
            LARGE_QWORD if tag & 0x80 != 0 => (8, 3),
            LARGE_EXTENDED if tag & 0x80 != 0 => (8, 5),
            _ => continue,
        };
        if body.first() != Some(&RANGE_BUS) {
            continue;
        }
        let field = |i: usize| -> Option<u64> {
            let at = fields_at + width * i;
            let bytes = body.get(at..at + width)?;
            Some(
                bytes
                    .iter()
                    .rev()
                    .fold(0u64, |v, b| (v << 8) | u64::from(*b)),
            )
        };
        let (min, max) = (field(1)?, field(2)?);
        let (Ok(min), Ok(max)) = (u8::try_from(min), u8::try_from(max)) else {
            continue;
        };
        if min <= max {
            return Some((min, max));
        }
    }
    None
}

/// Large item: 32-bit Fixed Memory Range (§6.4.3.4).
const LARGE_FIXED_MEMORY32: u8 = 0x06;
/// Address space resource type "memory range" (§6.4.3.5, byte 3).
const RANGE_MEMORY: u8 = 0;

/// The memory ranges (base, length) of a resource template: 32-bit Fixed Memory descriptors
/// and DWord/QWord/Extended Address Space descriptors of the memory type. Empty ranges and
/// ones whose end would pass 2^64 are left out.
pub fn memory_ranges(buf: &[u8]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for (tag, body) in descriptors(buf) {
        if tag & 0x80 == 0 {
            continue;
        }
        let le = |bytes: &[u8]| {
            bytes
                .iter()
                .rev()
                .fold(0u64, |v, b| (v << 8) | u64::from(*b))
        };
        let range = match tag & 0x7F {
            LARGE_FIXED_MEMORY32 => body.get(1..9).map(|b| (le(&b[0..4]), le(&b[4..8]))),
            t @ (LARGE_DWORD | LARGE_QWORD | LARGE_EXTENDED) => {
                if body.first() != Some(&RANGE_MEMORY) {
                    continue;
                }
                let (width, fields_at) = match t {
                    LARGE_DWORD => (4, 3),
                    LARGE_QWORD => (8, 3),
                    _ => (8, 5),
                };
                // granularity, minimum, maximum, translation, length
                let field = |i: usize| {
                    let at = fields_at + width * i;
                    body.get(at..at + width).map(le)
                };
                field(1).zip(field(4))
            }
            _ => continue,
        };
        if let Some((base, len)) = range
            && len > 0
            && base.checked_add(len).is_some()
        {
            out.push((base, len));
        }
    }
    out
}

/// The `_SRS` template that selects `number` from a `_PRS` descriptor `choice`: the same
/// form and flags, one interrupt, then an End Tag.
pub fn srs_template(choice: &Interrupts, number: u32) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(12);
    match choice.form {
        IrqForm::Legacy { flags } => {
            let bit = 1u16.checked_shl(number).filter(|_| number < 16)?;
            out.push((SMALL_IRQ << 3) | if flags { 3 } else { 2 });
            out.extend_from_slice(&bit.to_le_bytes());
            if flags {
                let mut info = 0u8;
                if choice.trigger == Trigger::Edge {
                    info |= 0x01;
                }
                if choice.polarity == Polarity::Low {
                    info |= 0x08;
                }
                if choice.shared {
                    info |= 0x10;
                }
                out.push(info);
            }
        }
        IrqForm::Extended => {
            let mut flags = 0x01u8; // consumer
            if choice.trigger == Trigger::Edge {
                flags |= 0x02;
            }
            if choice.polarity == Polarity::Low {
                flags |= 0x04;
            }
            if choice.shared {
                flags |= 0x08;
            }
            out.extend_from_slice(&[0x80 | LARGE_EXT_IRQ, 6, 0, flags, 1]);
            out.extend_from_slice(&number.to_le_bytes());
        }
    }
    // End Tag with a zero checksum ("treated as if the checksum operation succeeded").
    out.extend_from_slice(&[(SMALL_END << 3) | 1, 0]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irq_mask_gives_numbers_not_the_mask() {
        // IRQ (Level, ActiveLow, Shared) {15}: the mask is 0x8000, the IRQ is 15.
        let buf = [0x23, 0x00, 0x80, 0x18, 0x79, 0x00];
        let irqs = interrupts(&buf);
        assert_eq!(irqs.len(), 1);
        assert_eq!(irqs[0].numbers, [15]);
        assert_eq!(irqs[0].trigger, Trigger::Level);
        assert_eq!(irqs[0].polarity, Polarity::Low);
        assert!(irqs[0].shared);
    }

    #[test]
    fn irq_without_flags_is_edge_high() {
        let buf = [0x22, 0x20, 0x0C, 0x79, 0x00]; // IRQNoFlags {5, 10, 11}
        let irqs = interrupts(&buf);
        assert_eq!(irqs[0].numbers, [5, 10, 11]);
        assert_eq!(irqs[0].trigger, Trigger::Edge);
        assert_eq!(irqs[0].polarity, Polarity::High);
        assert_eq!(irqs[0].form, IrqForm::Legacy { flags: false });
    }

    #[test]
    fn extended_interrupt_list() {
        // Interrupt (ResourceConsumer, Level, ActiveHigh, Shared) {16, 17}
        let buf = [
            0x89, 0x0A, 0x00, 0x09, 0x02, 16, 0, 0, 0, 17, 0, 0, 0, 0x79, 0x00,
        ];
        let irqs = interrupts(&buf);
        assert_eq!(irqs[0].numbers, [16, 17]);
        assert_eq!(irqs[0].trigger, Trigger::Level);
        assert_eq!(irqs[0].polarity, Polarity::High);
        assert!(irqs[0].shared);
        assert_eq!(irqs[0].form, IrqForm::Extended);
    }

    #[test]
    fn count_larger_than_body_is_cut() {
        let buf = [0x89, 0x06, 0x00, 0x09, 0x05, 16, 0, 0, 0];
        assert_eq!(interrupts(&buf)[0].numbers, [16]);
    }

    #[test]
    fn srs_round_trips() {
        for (buf, pick) in [
            (&[0x23u8, 0x20, 0x0C, 0x18, 0x79, 0x00][..], 10),
            (&[0x22, 0x20, 0x0C, 0x79, 0x00][..], 11),
            (
                &[
                    0x89, 0x0A, 0x00, 0x0F, 0x02, 16, 0, 0, 0, 17, 0, 0, 0, 0x79, 0,
                ][..],
                17,
            ),
        ] {
            let choice = &interrupts(buf)[0];
            let srs = srs_template(choice, pick).unwrap();
            let back = &interrupts(&srs)[0];
            assert_eq!(back.numbers, [pick]);
            assert_eq!(back.trigger, choice.trigger);
            assert_eq!(back.polarity, choice.polarity);
            assert_eq!(back.form, choice.form);
        }
        let legacy = &interrupts(&[0x22, 0x20, 0x0C, 0x79, 0x00])[0];
        assert_eq!(srs_template(legacy, 16), None);
    }

    #[test]
    fn bus_ranges() {
        // WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0, 0x7F, 0, 0x80)
        let word = [
            0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00, 0, 0, 0x00, 0x00, 0x7F, 0x00, 0, 0, 0x80, 0x00,
            0x79, 0x00,
        ];
        assert_eq!(bus_range(&word), Some((0, 0x7F)));
        // A memory range first is skipped.
        let mut two = alloc::vec![
            0x88, 0x0D, 0x00, 0x00, 0x0C, 0x00, 0, 0, 0x00, 0x10, 0xFF, 0x1F, 0, 0, 0, 0x10,
        ];
        two.extend_from_slice(&word);
        assert_eq!(bus_range(&two), Some((0, 0x7F)));
        // DWord with bus 0x80-0xFE.
        let mut dword = alloc::vec![0x87, 0x17, 0x00, 0x02, 0x0C, 0x00];
        for v in [0u32, 0x80, 0xFE, 0, 0x7F] {
            dword.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(bus_range(&dword), Some((0x80, 0xFE)));
    }

    #[test]
    fn memory_ranges_from_fixed_and_address_space_descriptors() {
        // QWordMemory(..., 0xE0000000, 0xEFFFFFFF, 0, 0x10000000): QEMU microvm's ECAM.
        let mut qword = vec![0x8A, 0x2B, 0x00, RANGE_MEMORY, 0x0C, 0x00];
        for v in [0u64, 0xE000_0000, 0xEFFF_FFFF, 0, 0x1000_0000] {
            qword.extend_from_slice(&v.to_le_bytes());
        }
        // Memory32Fixed(ReadWrite, 0xFED00000, 0x400).
        let fixed = [
            0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0xD0, 0xFE, 0x00, 0x04, 0x00, 0x00,
        ];
        // DWordIO (type 1) is not memory.
        let mut io = vec![0x87, 0x17, 0x00, 1, 0x0C, 0x03];
        for v in [0u32, 0xCF8, 0xCFF, 0, 8] {
            io.extend_from_slice(&v.to_le_bytes());
        }
        let mut buf = Vec::new();
        buf.extend_from_slice(&qword);
        buf.extend_from_slice(&fixed);
        buf.extend_from_slice(&io);
        buf.extend_from_slice(&[0x79, 0x00]);
        assert_eq!(
            memory_ranges(&buf),
            [(0xE000_0000, 0x1000_0000), (0xFED0_0000, 0x400)]
        );
        // A length that wraps is left out; truncation yields what came before.
        let mut wrap = vec![0x8A, 0x2B, 0x00, RANGE_MEMORY, 0x0C, 0x00];
        for v in [0u64, u64::MAX - 1, u64::MAX, 0, 4] {
            wrap.extend_from_slice(&v.to_le_bytes());
        }
        assert!(memory_ranges(&wrap).is_empty());
        assert_eq!(
            memory_ranges(&buf[..qword.len() + 5]),
            [(0xE000_0000, 0x1000_0000)]
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for len in 0..200 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = interrupts(&buf);
            let _ = bus_range(&buf);
            let _ = memory_ranges(&buf);
        }
        // Large item claiming more than is there.
        assert!(interrupts(&[0x89, 0xFF, 0xFF, 0x01]).is_empty());
        assert_eq!(bus_range(&[0x88, 0xFF, 0xFF]), None);
    }
}
