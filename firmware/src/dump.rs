//! Reading `acpidump` text: the tables of a real machine, as the host tests and `acpi-probe`
//! receive them.
//!
//! Design: the format (ACPICA's `acpidump`, also what linux-hardware.org stores) is a
//! sequence of blocks
//!
//! ```text
//! APIC @ 0x00000000BFFE0000
//!     0000: 41 50 49 43 78 00 00 00 01 E4 42 4F 43 48 53 20  APICx.....BOCHS
//!     0010: ...
//!     0070: 00 00 00 00 00 00 00 00                          ........
//!
//! ```
//!
//! A header line `SIG @ 0xADDR` (the RSDP is printed as `RSD PTR` or `RSD`), then lines
//! `OFFSET: up to 16 hex bytes` followed by an ASCII column, and a blank line. The hex
//! bytes end at the 16th byte or at the first run of two blanks (the ASCII column is set off
//! by at least two; a short last row is padded), so an ASCII column that looks like hex
//! (`41 42  AB`) is never read as data. Indentation, CRLF line ends and trailing blanks do
//! not matter; lines that are neither header nor data (tools print warnings such as
//! `Firmware Warning (ACPI): Incorrect checksum in table [OEMB]` in between) are ignored.
//! Offsets must run on without gaps: a gap or repeat means a damaged dump and loses that
//! table ([`parse`] fails; [`parse_lenient`] drops the table and says so).

use alloc::vec::Vec;
use core::fmt;

/// One table from the dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpedTable {
    /// The signature from the header line; `RSDP` for the RSDP (whose bytes start with
    /// `RSD PTR `).
    pub signature: [u8; 4],
    /// The physical address printed (often 0: many dumps come from files, not memory).
    pub address: u64,
    /// The table's bytes.
    pub bytes: Vec<u8>,
}

/// What is wrong with a dump (or one table in it). Lines count from 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DumpError {
    /// No table at all: not an acpidump.
    NoTables,
    /// A data line whose offset does not continue the table.
    NonContiguous {
        /// The line.
        line: usize,
        /// The table's signature.
        signature: [u8; 4],
        /// The offset expected (bytes so far).
        expected: usize,
        /// The offset printed.
        found: usize,
    },
    /// A data line (`OFFSET:`) without a single hex byte.
    BadDataLine {
        /// The line.
        line: usize,
    },
    /// Data before any header line.
    DataBeforeHeader {
        /// The line.
        line: usize,
    },
    /// A header with no data under it.
    EmptyTable {
        /// The header's line.
        line: usize,
        /// The signature.
        signature: [u8; 4],
    },
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sig = |s: &[u8; 4]| crate::tables::bytes::show(s);
        match self {
            Self::NoTables => write!(f, "no ACPI table found: not acpidump output"),
            Self::NonContiguous {
                line,
                signature,
                expected,
                found,
            } => write!(
                f,
                "line {line}: {} offset {found:#x} where {expected:#x} was due",
                sig(signature)
            ),
            Self::BadDataLine { line } => write!(f, "line {line}: no hex bytes after the offset"),
            Self::DataBeforeHeader { line } => {
                write!(f, "line {line}: table data before any `SIG @ 0xADDR` line")
            }
            Self::EmptyTable { line, signature } => {
                write!(f, "line {line}: {} has no data", sig(signature))
            }
        }
    }
}

/// A dump's tables and what was wrong with the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    /// The tables that were read whole, in dump order.
    pub tables: Vec<DumpedTable>,
    /// Tables dropped and lines ignored, and why.
    pub warnings: Vec<DumpError>,
}

impl Dump {
    /// The first table with signature `sig`.
    pub fn find(&self, sig: &[u8; 4]) -> Option<&DumpedTable> {
        self.tables.iter().find(|t| &t.signature == sig)
    }
}

/// Parses acpidump text; any damage (see the module notes) is an error.
pub fn parse(text: &str) -> Result<Vec<DumpedTable>, DumpError> {
    let dump = read(text);
    match dump.warnings.into_iter().next() {
        Some(e) => Err(e),
        None if dump.tables.is_empty() => Err(DumpError::NoTables),
        None => Ok(dump.tables),
    }
}

/// Parses acpidump text, dropping damaged tables (recorded in [`Dump::warnings`]). Fails
/// only when there is no table at all.
pub fn parse_lenient(text: &str) -> Result<Dump, DumpError> {
    let dump = read(text);
    if dump.tables.is_empty() {
        Err(DumpError::NoTables)
    } else {
        Ok(dump)
    }
}

/// Reads every block (see the module notes).
fn read(text: &str) -> Dump {
    let mut dump = Dump::default();
    // The table being read: its header line, and whether it is damaged.
    let mut current: Option<(usize, DumpedTable, bool)> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index.saturating_add(1);
        if let Some((offset, rest)) = data_line(raw) {
            let Some((_, table, broken)) = current.as_mut() else {
                dump.warnings.push(DumpError::DataBeforeHeader { line });
                continue;
            };
            if *broken {
                continue;
            }
            if offset != table.bytes.len() {
                dump.warnings.push(DumpError::NonContiguous {
                    line,
                    signature: table.signature,
                    expected: table.bytes.len(),
                    found: offset,
                });
                *broken = true;
                continue;
            }
            if !hex_bytes(rest, &mut table.bytes) {
                dump.warnings.push(DumpError::BadDataLine { line });
                *broken = true;
            }
        } else if let Some((signature, address)) = header_line(raw) {
            finish(current.take(), &mut dump);
            current = Some((
                line,
                DumpedTable {
                    signature,
                    address,
                    bytes: Vec::new(),
                },
                false,
            ));
        }
    }
    finish(current, &mut dump);
    dump
}

/// Ends the table being read: kept when whole and not empty.
fn finish(current: Option<(usize, DumpedTable, bool)>, dump: &mut Dump) {
    let Some((line, table, broken)) = current else {
        return;
    };
    if table.bytes.is_empty() && !broken {
        dump.warnings.push(DumpError::EmptyTable {
            line,
            signature: table.signature,
        });
    } else if !broken {
        dump.tables.push(table);
    }
}

/// `SIG @ 0xADDR`: the signature (RSDP normalised) and the address.
fn header_line(raw: &str) -> Option<([u8; 4], u64)> {
    let (name, address) = raw.trim().split_once('@')?;
    let name = name.trim();
    let digits = address
        .trim()
        .strip_prefix("0x")
        .or_else(|| address.trim().strip_prefix("0X"))?;
    if name.is_empty() || name.len() > 8 || digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let address = u64::from_str_radix(digits, 16).ok()?;
    let signature = if name.starts_with("RSD") && name != "RSDT" {
        *b"RSDP"
    } else {
        let mut s = [b' '; 4];
        for (d, c) in s.iter_mut().zip(name.bytes()) {
            *d = c;
        }
        s
    };
    Some((signature, address))
}

/// `OFFSET: ...`: the offset and what follows the colon.
fn data_line(raw: &str) -> Option<(usize, &str)> {
    let (offset, rest) = raw.trim_start().split_once(':')?;
    if offset.is_empty() || offset.len() > 8 || !offset.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some((usize::from_str_radix(offset, 16).ok()?, rest))
}

/// Appends the hex bytes at the start of `rest` (see the module notes for where they end);
/// false when there is none.
fn hex_bytes(rest: &str, out: &mut Vec<u8>) -> bool {
    let b = rest.trim_start().as_bytes();
    let mut i = 0usize;
    let mut count = 0usize;
    while count < 16 {
        let (Some(hi), Some(lo)) = (
            b.get(i).and_then(hex),
            b.get(i.wrapping_add(1)).and_then(hex),
        ) else {
            break;
        };
        // A byte is two hex digits followed by a blank or the end of the line.
        let after = b.get(i.wrapping_add(2));
        if after.is_some_and(|c| !c.is_ascii_whitespace()) {
            break;
        }
        out.push(hi << 4 | lo);
        count = count.wrapping_add(1);
        i = i.wrapping_add(3);
        // Two blanks in a row: the ASCII column follows.
        if b.get(i).is_none_or(|c| c.is_ascii_whitespace()) {
            break;
        }
    }
    count > 0
}

/// The value of one hex digit.
fn hex(c: &u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec;

    const SAMPLE: &str = "\
FACS @ 0x0000000000000000
    0000: 46 41 43 53 40 00 00 00 39 49 08 00 00 00 00 00  FACS@...9I......
    0010: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................

RSD PTR @ 0x00000000000F0490
  0000: 52 53 44 20 50 54 52 20 6D 54 4F 53 49 4E 56 02  RSD PTR mTOSINV.
  0010: C4 70 BC 9F                                      .p..

Firmware Warning (ACPI): Incorrect checksum in table [OEMB] - 0xBB, should be 0xAE
OEMB @ 0x00000000BFFE0000
    0000: 4F 45 4D 42 41 42                                OEMBAB
";

    #[test]
    fn reads_blocks() {
        let t = parse(SAMPLE).expect("parses");
        assert_eq!(t.len(), 3);
        assert_eq!(&t[0].signature, b"FACS");
        assert_eq!(t[0].bytes.len(), 32);
        assert_eq!(&t[0].bytes[..4], b"FACS");
        assert_eq!(&t[1].signature, b"RSDP");
        assert_eq!(t[1].address, 0xf0490);
        assert_eq!(&t[1].bytes[..8], b"RSD PTR ");
        assert_eq!(t[1].bytes.len(), 20);
        // The ASCII column "OEMBAB" and a short row whose ASCII looks like hex.
        assert_eq!(t[2].bytes, b"OEMBAB");
        assert_eq!(t[2].address, 0xbffe_0000);
    }

    #[test]
    fn ascii_column_that_looks_like_hex_is_not_data() {
        let text = "SSDT @ 0x0\n    0000: 41 42                                            AB\n";
        assert_eq!(parse(text).expect("parses")[0].bytes, b"AB");
        // iasl's layout ("  // ascii") and no ASCII column at all.
        let text = "SSDT @ 0x0\n0000: 41 42 43  // ABC\n0003: 44\n";
        assert_eq!(parse(text).expect("parses")[0].bytes, b"ABCD");
    }

    #[test]
    fn crlf_odd_spacing_and_junk() {
        let text: String = SAMPLE
            .lines()
            .map(|l| alloc::format!("{}\t \r\n", l.trim_start()))
            .collect();
        let text = alloc::format!("junk at the top\r\n{text}trailing junk\r\n\0\0\0");
        let t = parse(&text).expect("parses");
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].bytes.len(), 32);
        assert_eq!(t[2].bytes, b"OEMBAB");
        // Lower-case hex, 5-digit offsets.
        let mut text = String::from("DSDT @ 0x1\n");
        for off in 0..0x1001 {
            text.push_str(&alloc::format!(
                "  {:04x}: de ad be ef ca fe ba be 01 02 03 04 05 06 07 08  x\n",
                off * 16
            ));
        }
        let t = parse(&text).expect("parses");
        assert_eq!(t[0].bytes.len(), 0x1001 * 16);
        assert_eq!(t[0].bytes[0x10000], 0xde);
    }

    #[test]
    fn gaps_and_repeats_lose_the_table() {
        let text = "APIC @ 0x0\n 0000: 01 02\n 0004: 03\n\nMCFG @ 0x0\n 0000: 05\n";
        assert_eq!(
            parse(text),
            Err(DumpError::NonContiguous {
                line: 3,
                signature: *b"APIC",
                expected: 2,
                found: 4
            })
        );
        let d = parse_lenient(text).expect("MCFG survives");
        assert_eq!(d.tables.len(), 1);
        assert_eq!(&d.tables[0].signature, b"MCFG");
        assert!(d.find(b"MCFG").is_some() && d.find(b"APIC").is_none());
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].to_string().contains("line 3"));
    }

    #[test]
    fn other_damage() {
        assert_eq!(
            parse("0000: 01 02\nAPIC @ 0x0\n0000: 01\n"),
            Err(DumpError::DataBeforeHeader { line: 1 })
        );
        assert_eq!(
            parse("APIC @ 0x0\n\nMCFG @ 0x0\n0000: 01\n"),
            Err(DumpError::EmptyTable {
                line: 1,
                signature: *b"APIC"
            })
        );
        assert_eq!(
            parse("APIC @ 0x0\n0000: zz\n"),
            Err(DumpError::BadDataLine { line: 2 })
        );
    }

    #[test]
    fn not_a_dump() {
        for text in [
            "",
            "hello\nworld\n",
            "\u{1f}\u{8b}\u{8}",
            "APIC @ 0x0\n",
            "X @ 0xZZ\n0000: 01\n",
        ] {
            assert!(parse_lenient(text).is_err(), "{text:?}");
        }
        assert_eq!(
            DumpError::NoTables.to_string(),
            "no ACPI table found: not acpidump output"
        );
    }

    #[test]
    fn never_panics_on_noise() {
        let mut rng = crate::tables::testutil::Rng(0x7777_1234_5678_9999);
        let alphabet = b"0123456789abcdefABCDEF :@x\n\r\tRSD PTR";
        for i in 0..3000 {
            let text: String = if i % 2 == 0 {
                (0..rng.below(400))
                    .map(|_| char::from(alphabet[rng.below(alphabet.len())]))
                    .collect()
            } else {
                let mut s: Vec<u8> = SAMPLE.as_bytes().to_vec();
                for _ in 0..=rng.below(6) {
                    let at = rng.below(s.len());
                    s[at] = alphabet[rng.below(alphabet.len())];
                }
                String::from_utf8_lossy(&s).into_owned()
            };
            let _ = parse_lenient(&text);
            let _ = parse(&text);
        }
        let _ = vec![0u8; 0];
    }

    /// Every dump in the corpus parses without a warning.
    #[cfg(feature = "probe")]
    #[test]
    fn every_corpus_dump_parses() {
        extern crate std;
        use std::io::Read;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/acpi-corpus");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            std::println!(
                "dump: {} not found: corpus parse test SKIPPED",
                dir.display()
            );
            return;
        };
        let mut n = 0;
        for e in entries.flatten() {
            let path = e.path();
            if !path.to_string_lossy().ends_with(".acpidump.gz") {
                continue;
            }
            let file = std::fs::File::open(&path).expect("readable");
            let mut text = String::new();
            flate2::read::GzDecoder::new(file)
                .read_to_string(&mut text)
                .expect("gunzips");
            let tables = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // Every table's own length field (or the RSDP's 20/36 bytes) matches the dump.
            for t in &tables {
                if &t.signature == b"RSDP" {
                    assert!(t.bytes.len() == 20 || t.bytes.len() >= 36);
                    continue;
                }
                let len = u32::from_le_bytes(t.bytes[4..8].try_into().expect("4 bytes"));
                assert_eq!(
                    len as usize,
                    t.bytes.len(),
                    "{}: {:?}",
                    path.display(),
                    t.signature
                );
            }
            n += 1;
        }
        std::println!("dump: {n} corpus dumps parsed");
        assert!(n > 0);
    }
}
