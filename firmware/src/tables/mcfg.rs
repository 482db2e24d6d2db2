//! The PCI Express memory-mapped configuration table, signature `MCFG` (PCI Firmware
//! Specification 3.2 §4.1.2, Table 4-2 and 4-3).
//!
//! Design: after the header come 8 reserved bytes and then 16-byte entries, one per ECAM
//! region (base address, segment group, first and last bus). An entry whose last bus is
//! below its first describes nothing and is skipped; bytes after the last whole entry are
//! reported. Both land in [`Mcfg::errors`]; the other entries stay usable.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::bytes::{u8_at, u16_at, u64_at};
use super::{HEADER_LEN, SdtHeader, Table, TableError};

/// Offset of the first entry: header plus 8 reserved bytes (PCI Firmware 3.2 Table 4-2).
pub const ENTRIES_AT: usize = HEADER_LEN + 8;
/// Size of one entry (PCI Firmware 3.2 Table 4-3).
pub const ENTRY_LEN: usize = 16;

/// One ECAM region (PCI Firmware 3.2 Table 4-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct McfgEntry {
    /// PCI segment group.
    pub segment: u16,
    /// Base address of the enhanced configuration space (bus 0 of the segment would be
    /// here even when `bus_start` is not 0).
    pub address: u64,
    /// First bus decoded.
    pub bus_start: u8,
    /// Last bus decoded.
    pub bus_end: u8,
}

/// The MCFG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mcfg {
    /// The header.
    pub header: SdtHeader,
    /// Whether the bytes sum to zero.
    pub checksum_ok: bool,
    /// The usable entries, in table order.
    pub entries: Vec<McfgEntry>,
    /// Entries skipped and trailing bytes, in words.
    pub errors: Vec<String>,
}

impl Mcfg {
    /// Parses an MCFG.
    pub fn parse(bytes: &[u8]) -> Result<Self, TableError> {
        let t = Table::parse(bytes, "MCFG", ENTRIES_AT)?;
        let body = t.bytes.get(ENTRIES_AT..).unwrap_or_default();
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for (i, e) in body.as_chunks::<ENTRY_LEN>().0.iter().enumerate() {
            let (Some(address), Some(segment), Some(bus_start), Some(bus_end)) =
                (u64_at(e, 0), u16_at(e, 8), u8_at(e, 10), u8_at(e, 11))
            else {
                continue;
            };
            if bus_end < bus_start {
                errors.push(format!(
                    "entry {i} (segment {segment}, {address:#x}): end bus {bus_end} below \
                     start bus {bus_start}: skipped"
                ));
                continue;
            }
            entries.push(McfgEntry {
                segment,
                address,
                bus_start,
                bus_end,
            });
        }
        let stray = body.len() % ENTRY_LEN;
        if stray != 0 {
            errors.push(format!("{stray} bytes after the last whole entry: ignored"));
        }
        Ok(Self {
            header: t.header,
            checksum_ok: t.checksum_ok,
            entries,
            errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::testutil::{Rng, table};
    use alloc::vec;

    fn entry(address: u64, segment: u16, start: u8, end: u8) -> Vec<u8> {
        let mut e = address.to_le_bytes().to_vec();
        e.extend_from_slice(&segment.to_le_bytes());
        e.extend_from_slice(&[start, end, 0, 0, 0, 0]);
        e
    }

    fn mcfg(entries: &[Vec<u8>], trailing: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8; 8];
        for e in entries {
            body.extend_from_slice(e);
        }
        body.extend_from_slice(trailing);
        table(b"MCFG", 1, &body)
    }

    #[test]
    fn qemu_q35() {
        let m = Mcfg::parse(&mcfg(&[entry(0xb000_0000, 0, 0, 255)], &[])).expect("parses");
        assert!(m.checksum_ok && m.errors.is_empty());
        assert_eq!(
            m.entries,
            vec![McfgEntry {
                segment: 0,
                address: 0xb000_0000,
                bus_start: 0,
                bus_end: 255
            }]
        );
    }

    #[test]
    fn bad_entries_and_trailing_bytes() {
        let t = mcfg(
            &[
                entry(0xe000_0000, 0, 0, 0x3f),
                entry(0xf000_0000, 1, 5, 4),
                entry(0x40_0000_0000, 2, 0x80, 0xff),
            ],
            &[1, 2, 3],
        );
        let m = Mcfg::parse(&t).expect("parses");
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.entries[1].segment, 2);
        assert_eq!(m.entries[1].address, 0x40_0000_0000);
        assert_eq!(m.errors.len(), 2, "{:?}", m.errors);
    }

    #[test]
    fn no_entries_and_refusals() {
        let m = Mcfg::parse(&mcfg(&[], &[])).expect("parses");
        assert!(m.entries.is_empty() && m.errors.is_empty());
        assert!(matches!(
            Mcfg::parse(&table(b"MCFG", 1, &[0; 4])),
            Err(TableError::BadLength { length: 40 })
        ));
        assert!(matches!(
            Mcfg::parse(&table(b"MCFX", 1, &[0; 8])),
            Err(TableError::BadSignature { .. })
        ));
    }

    #[test]
    fn never_panics_on_mutations() {
        let seed = mcfg(
            &[
                entry(0xe000_0000, 0, 0, 0xff),
                entry(0xd000_0000, 1, 0, 0x7f),
            ],
            &[],
        );
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        for i in 0..20_000 {
            let input = if i % 4 == 0 {
                rng.noise(b"MCFG")
            } else {
                rng.mutate(&seed)
            };
            let _ = Mcfg::parse(&input);
        }
    }
}
