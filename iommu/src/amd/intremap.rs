//! AMD-Vi interrupt remapping entries (§2.2.5): the legacy 32-bit format.
//!
//! Design note. On an AMD-Vi unit an interrupt message is looked up per *requester*: the
//! requester's device table entry (its third qword, [`super::dte::remapped`]) names an
//! interrupt remapping table, and bits 10:0 of the message's data are the index into it
//! (§2.2.5.1). The entry at that index says what is delivered; an entry with RemapEn = 0,
//! or an index beyond the table's length, is refused (and logged as an IO_PAGE_FAULT with
//! the interrupt flag). So unlike VT-d there is no source check in the entry: the table
//! itself belongs to one requester, and a device can only ever name entries of its own
//! table.
//!
//! The kernel uses the vector as the index (below 256, so data bits 10:8, which an
//! unremapped message uses for the delivery mode, stay 0): a device's message is written
//! exactly as a compatibility-format one (address `0xFEE0_0000`, data = vector), and the
//! table decides whether it reaches a processor.
//!
//! The entry (QEMU's `union irte`): RemapEn (0), SupIOPF (1), IntType (4:2, 000b fixed),
//! RqEoi (5), DM (6, 0 physical), GuestMode (7, must be 0), Destination (15:8, an APIC ID
//! below 256) and Vector (23:16); 31:24 reserved. There is no trigger mode: the message
//! keeps its own (an I/O APIC's redirection entry says level or edge, and handles the EOI
//! itself by vector). RqEoi stays clear: QEMU takes it as the redirection hint.

use crate::intremap::Target;
use crate::memory::TableMemory;
use crate::unit::UnitError;

/// Entries in each requester's table: indexes 0..=255, 4 bytes each (1 KiB).
pub const ENTRIES: u16 = 256;
/// IntTabLen for [`ENTRIES`]: log2 of the number of entries.
pub const ENTRIES_LOG2: u8 = 8;
/// Bytes per entry.
pub const ENTRY_SIZE: u64 = 4;

/// RemapEn (0): the entry is present.
pub const REMAP_EN: u32 = 1 << 0;
/// SupIOPF (1): refusals through this entry are not logged.
pub const SUP_IOPF: u32 = 1 << 1;
/// IntType (4:2): 000b fixed, 001b arbitrated; the others are refused.
pub const INT_TYPE_SHIFT: u32 = 2;
/// RqEoi (5), DM (6, logical destination), GuestMode (7).
pub const RQ_EOI: u32 = 1 << 5;
pub const DM: u32 = 1 << 6;
pub const GUEST_MODE: u32 = 1 << 7;
/// Destination (15:8): the APIC ID.
pub const DESTINATION_SHIFT: u32 = 8;
/// Vector (23:16).
pub const VECTOR_SHIFT: u32 = 16;

/// The entry that delivers `target`: fixed, physical destination, present. A destination
/// APIC ID above 255 does not fit the legacy format (x2APIC IDs need the 128-bit format).
pub fn entry(target: Target) -> Result<u32, UnitError> {
    let destination = u8::try_from(target.destination).map_err(|_| {
        UnitError::Unsupported("a destination APIC ID below 256 (legacy remapping entries)")
    })?;
    Ok(REMAP_EN
        | u32::from(destination) << DESTINATION_SHIFT
        | u32::from(target.vector) << VECTOR_SHIFT)
}

/// Where entry `index` of the table at `table` is: the qword holding it and the shift of
/// the entry in that qword (two entries share one qword).
fn slot(table: u64, index: u16) -> (u64, u32) {
    let at = table + ENTRY_SIZE * u64::from(index);
    (at & !7, 8 * (at & 4) as u32)
}

/// Entry `index` of the table at `table`.
pub fn read(memory: &dyn TableMemory, table: u64, index: u16) -> u32 {
    let (at, shift) = slot(table, index);
    (memory.read(at) >> shift) as u32
}

/// Writes entry `index` of the table at `table`, in one store of the qword that holds it
/// (its neighbour is written back as it was; only this crate writes the table).
pub fn write(memory: &dyn TableMemory, table: u64, index: u16, value: u32) {
    let (at, shift) = slot(table, index);
    let old = memory.read(at);
    let new = (old & !(0xffff_ffff << shift)) | u64::from(value) << shift;
    memory.write(at, new);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_the_specification() {
        let t = Target {
            vector: 0x41,
            destination: 3,
            level: true,
        };
        assert_eq!(entry(t), Ok(0x0041_0301));
        let far = Target {
            destination: 256,
            ..t
        };
        assert!(matches!(entry(far), Err(UnitError::Unsupported(_))));
        assert_eq!(slot(0x1000, 0), (0x1000, 0));
        assert_eq!(slot(0x1000, 1), (0x1000, 32));
        assert_eq!(slot(0x1000, 255), (0x1000 + 0x3f8, 32));
    }
}
