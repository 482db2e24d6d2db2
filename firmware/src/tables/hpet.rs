//! The HPET description table, signature `HPET` (IA-PC HPET Specification 1.0a §3.2.4,
//! Table 3: "ACPI HPET Description Table").
//!
//! Design: one fixed-size record after the header, 56 bytes in all. The table describes
//! where the timer block is; its capabilities are read from the block itself.

use super::bytes::{u8_at, u16_at, u32_at};
use super::fadt::GenericAddress;
use super::{HEADER_LEN, SdtHeader, Table, TableError};

/// Length of the table (IA-PC HPET 1.0a Table 3).
pub const HPET_LEN: usize = 56;
// Field offsets (IA-PC HPET 1.0a Table 3).
const EVENT_TIMER_BLOCK_ID: usize = HEADER_LEN;
const BASE_ADDRESS: usize = 40;
const HPET_NUMBER: usize = 52;
const MIN_TICK: usize = 53;
const PAGE_PROTECTION: usize = 55;

/// The HPET table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hpet {
    /// The header.
    pub header: SdtHeader,
    /// Whether the bytes sum to zero.
    pub checksum_ok: bool,
    /// Event Timer Block ID: the block's capabilities register, low 32 bits (hardware
    /// revision, comparator count, counter size, legacy-replacement capable, vendor ID).
    pub event_timer_block_id: u32,
    /// Where the timer block's registers are (a Generic Address Structure, memory space).
    pub base_address: GenericAddress,
    /// Which HPET this is (0 for the first).
    pub hpet_number: u8,
    /// Minimum clock ticks for periodic mode without lost interrupts.
    pub min_tick: u16,
    /// Page protection and OEM attributes.
    pub page_protection: u8,
}

impl Hpet {
    /// Parses an HPET table.
    pub fn parse(bytes: &[u8]) -> Result<Self, TableError> {
        let t = Table::parse(bytes, "HPET", HPET_LEN)?;
        let b = t.bytes;
        let short = || TableError::Truncated {
            need: HPET_LEN,
            have: b.len(),
        };
        Ok(Self {
            header: t.header,
            checksum_ok: t.checksum_ok,
            event_timer_block_id: u32_at(b, EVENT_TIMER_BLOCK_ID).ok_or_else(short)?,
            base_address: GenericAddress::parse(b, BASE_ADDRESS).ok_or_else(short)?,
            hpet_number: u8_at(b, HPET_NUMBER).ok_or_else(short)?,
            min_tick: u16_at(b, MIN_TICK).ok_or_else(short)?,
            page_protection: u8_at(b, PAGE_PROTECTION).ok_or_else(short)?,
        })
    }

    /// Comparators in the block (Event Timer Block ID bits 12:8, plus one).
    pub fn comparators(&self) -> u8 {
        // Five bits: at most 32, no overflow.
        ((self.event_timer_block_id >> 8) & 0x1f) as u8 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::testutil::{Rng, table};
    use alloc::vec::Vec;

    fn qemu() -> Vec<u8> {
        let mut body = 0x8086_a201u32.to_le_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 0]);
        body.extend_from_slice(&0xfed0_0000u64.to_le_bytes());
        body.push(0);
        body.extend_from_slice(&0x80u16.to_le_bytes());
        body.push(0);
        table(b"HPET", 1, &body)
    }

    #[test]
    fn qemu_hpet() {
        let t = qemu();
        assert_eq!(t.len(), HPET_LEN);
        let h = Hpet::parse(&t).expect("parses");
        assert!(h.checksum_ok);
        assert_eq!(h.base_address.address, 0xfed0_0000);
        assert_eq!(h.base_address.space_id, 0);
        assert_eq!(h.min_tick, 0x80);
        assert_eq!(h.hpet_number, 0);
        assert_eq!(h.comparators(), 3);
    }

    #[test]
    fn short_is_refused() {
        let t = qemu();
        assert!(matches!(
            Hpet::parse(&t[..50]),
            Err(TableError::Truncated { .. })
        ));
        assert!(matches!(
            Hpet::parse(&table(b"HPET", 1, &[0; 10])),
            Err(TableError::BadLength { length: 46 })
        ));
    }

    #[test]
    fn never_panics_on_mutations() {
        let seed = qemu();
        let mut rng = Rng(0xfeed_face_0bad_f00d);
        for i in 0..10_000 {
            let input = if i % 4 == 0 {
                rng.noise(b"HPET")
            } else {
                rng.mutate(&seed)
            };
            let _ = Hpet::parse(&input);
        }
    }
}
