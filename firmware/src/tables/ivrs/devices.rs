//! The device entries of an IVHD (AMD IOMMU spec, doc 48882 rev 3.x, §5.2.2.2): which
//! requester IDs the IOMMU translates for, and which I/O APICs and HPETs it remaps.
//!
//! An entry's type says its size: types 00h-3Fh are 4 bytes (type, device ID, DTE setting),
//! 40h-7Fh are 8 bytes (the same, then 4 bytes more), 80h-FFh are of variable length. Of
//! those only the ACPI HID device (F0h) says how long it is (22 bytes plus its UID's length,
//! the byte at offset 21); after any other the rest of the block cannot be located and is
//! skipped. An entry of a known size but unknown type is skipped alone.
//!
//! A range is two entries: a start (03h, alias start 43h, extended start 47h) and the end
//! (04h) that follows it; other entries may come between. A start with no end before the
//! next start or the end of the block, and an end with no start, are recorded and skipped.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::super::bytes::{u8_at, u16_at};
use super::{DeviceRange, Errors, MAX_RANGES, MAX_SPECIALS, Special, SpecialKind};

// Device entry types (§5.2.2.2).
/// Padding: nothing.
pub const ENTRY_PAD: u8 = 0x00;
/// Every device ID, 0 to FFFFh.
pub const ENTRY_ALL: u8 = 0x01;
/// One device ID.
pub const ENTRY_SELECT: u8 = 0x02;
/// The first device ID of a range.
pub const ENTRY_START: u8 = 0x03;
/// The last device ID of the range started before.
pub const ENTRY_END: u8 = 0x04;
/// One device ID whose requests carry another (the alias, at offset 5).
pub const ENTRY_ALIAS_SELECT: u8 = 0x42;
/// The first device ID of a range whose requests all carry the alias at offset 5.
pub const ENTRY_ALIAS_START: u8 = 0x43;
/// One device ID with extended settings (a u32 at offset 4).
pub const ENTRY_EXT_SELECT: u8 = 0x46;
/// The first device ID of a range with extended settings (a u32 at offset 4).
pub const ENTRY_EXT_START: u8 = 0x47;
/// A special device: handle at offset 4, requester ID at 5, variety at 7.
pub const ENTRY_SPECIAL: u8 = 0x48;
/// An ACPI device named by its _HID, _CID and _UID (IVHD type 40h).
pub const ENTRY_ACPI_HID: u8 = 0xf0;

/// An ACPI HID entry's length without its UID (§5.2.2.2): the UID length byte is at 21.
const ACPI_HID_LEN: usize = 22;
/// Offset of the ACPI HID entry's UID length byte.
const ACPI_HID_UID_LEN: usize = 21;

/// A range start waiting for its end: first ID, settings, alias, where it was.
struct Open {
    first: u16,
    settings: u8,
    alias: Option<u16>,
    ty: u8,
    at: usize,
}

/// The entry size its type says; `None` for a variable-length type that does not say.
fn entry_len(b: &[u8], off: usize, ty: u8) -> Option<usize> {
    match ty {
        0x00..=0x3f => Some(4),
        0x40..=0x7f => Some(8),
        // Cut before its UID length byte, it is at least 22 bytes (and runs past).
        ENTRY_ACPI_HID => match u8_at(b, off.checked_add(ACPI_HID_UID_LEN)?) {
            Some(uid) => ACPI_HID_LEN.checked_add(usize::from(uid)),
            None => Some(ACPI_HID_LEN),
        },
        _ => None,
    }
}

/// Walks the device entries that fill `b`, the rest of an IVHD after its fixed part, which
/// is `fixed` bytes (for offsets in messages, counted from the block's start).
pub(super) fn walk(
    b: &[u8],
    fixed: usize,
    what: &dyn Fn() -> String,
    e: &mut Errors,
) -> (Vec<DeviceRange>, Vec<Special>) {
    let mut ranges: Vec<DeviceRange> = Vec::new();
    let mut specials: Vec<Special> = Vec::new();
    let (mut ranges_capped, mut specials_capped) = (false, false);
    let mut push_range = |r: DeviceRange, e: &mut Errors| {
        if ranges.len() < MAX_RANGES {
            ranges.push(r);
        } else if !ranges_capped {
            ranges_capped = true;
            e.push(|| {
                format!(
                    "{}: more than {MAX_RANGES} device ranges: the rest ignored",
                    what()
                )
            });
        }
    };
    let mut open: Option<Open> = None;
    let mut off = 0usize;
    while off < b.len() {
        let here = fixed.saturating_add(off);
        let Some(ty) = u8_at(b, off) else { break };
        let Some(len) = entry_len(b, off, ty) else {
            e.push(|| {
                format!(
                    "{}: entry at {here:#x} (type {ty:#04x}): variable-length type of unknown \
                     length: it and the rest of the block skipped",
                    what()
                )
            });
            break;
        };
        let Some(entry) = off.checked_add(len).and_then(|end| b.get(off..end)) else {
            e.push(|| {
                format!(
                    "{}: entry at {here:#x} (type {ty:#04x}): its {len} bytes run past the \
                     block: skipped",
                    what()
                )
            });
            break;
        };
        off = off.saturating_add(len);
        // Every fixed-size entry has its device ID at 1 and DTE setting at 3.
        let id = u16_at(entry, 1).unwrap_or_default();
        let settings = u8_at(entry, 3).unwrap_or_default();
        let mut start = |alias: Option<u16>, e: &mut Errors| {
            if let Some(o) = open.replace(Open {
                first: id,
                settings,
                alias,
                ty,
                at: here,
            }) {
                e.push(|| unended(what, &o));
            }
        };
        match ty {
            ENTRY_PAD | ENTRY_ACPI_HID => {}
            ENTRY_ALL => push_range(
                DeviceRange {
                    first: 0,
                    last: u16::MAX,
                    settings,
                    alias: None,
                },
                e,
            ),
            ENTRY_SELECT | ENTRY_EXT_SELECT => push_range(
                DeviceRange {
                    first: id,
                    last: id,
                    settings,
                    alias: None,
                },
                e,
            ),
            ENTRY_ALIAS_SELECT => push_range(
                DeviceRange {
                    first: id,
                    last: id,
                    settings,
                    alias: u16_at(entry, 5),
                },
                e,
            ),
            ENTRY_START | ENTRY_EXT_START => start(None, e),
            ENTRY_ALIAS_START => start(u16_at(entry, 5), e),
            ENTRY_END => match open.take() {
                None => e.push(|| {
                    format!(
                        "{}: entry at {here:#x}: end of range {id:#06x} without a start: skipped",
                        what()
                    )
                }),
                Some(o) if id < o.first => e.push(|| {
                    format!(
                        "{}: range {:#06x}..={id:#06x} (entries at {:#x} and {here:#x}) ends \
                         before it starts: skipped",
                        what(),
                        o.first,
                        o.at
                    )
                }),
                // The start's settings and alias hold for the whole range.
                Some(o) => push_range(
                    DeviceRange {
                        first: o.first,
                        last: id,
                        settings: o.settings,
                        alias: o.alias,
                    },
                    e,
                ),
            },
            ENTRY_SPECIAL => {
                if specials.len() < MAX_SPECIALS {
                    specials.push(Special {
                        kind: SpecialKind::from_variety(u8_at(entry, 7).unwrap_or_default()),
                        handle: u8_at(entry, 4).unwrap_or_default(),
                        source: u16_at(entry, 5).unwrap_or_default(),
                        settings,
                    });
                } else if !specials_capped {
                    specials_capped = true;
                    e.push(|| {
                        format!(
                            "{}: more than {MAX_SPECIALS} special devices: the rest ignored",
                            what()
                        )
                    });
                }
            }
            _ => e.push(|| {
                format!(
                    "{}: entry at {here:#x}: unknown type {ty:#04x} ({len} bytes): skipped",
                    what()
                )
            }),
        }
    }
    if let Some(o) = open {
        e.push(|| unended(what, &o));
    }
    (ranges, specials)
}

fn unended(what: &dyn Fn() -> String, o: &Open) -> String {
    format!(
        "{}: entry at {:#x} (type {:#04x}) starts a range at {:#06x} that no end (04h) \
         follows: skipped",
        what(),
        o.at,
        o.ty,
        o.first
    )
}
