//! The static ACPI tables, parsed from bytes by code of our own.
//!
//! Design: every parser takes a byte slice (a copy of the table, never memory in place) and
//! returns a plain-data result. Nothing here trusts a length, count or offset the firmware
//! wrote: each field is read through `bytes`, which returns `None` outside the slice, and
//! all arithmetic on firmware values is checked. A table whose header lies about its length
//! is refused with a [`TableError`]; a table with a wrong checksum is kept and the fact
//! recorded, because real firmware ships such tables and every OS uses them anyway. Inside a
//! table, a malformed entry costs only that entry (recorded in the parser's `errors`).
//!
//! - [`discover`]: RSDP → XSDT (or RSDT) → every table's header, through [`PhysRead`], plus
//!   the DSDT and FACS the FADT points at.
//! - [`fadt`], [`madt`], [`mcfg`], [`hpet`]: the tables the kernel needs.
//! - [`dmar`]: the IOMMU (Intel VT-d) units, the devices each translates for, and the memory
//!   firmware keeps using for DMA.
//! - [`ivrs`]: the same for AMD IOMMUs: each IOMMU, the requester IDs it translates for, the
//!   I/O APICs and HPETs it remaps, and the memory devices keep using (IVMDs).

pub mod build;
pub(crate) mod bytes;
pub mod dmar;
pub mod fadt;
pub mod hpet;
pub mod ivrs;
pub mod madt;
pub mod mcfg;

pub use dmar::Dmar;
pub use fadt::{Fadt, GenericAddress};
pub use hpet::Hpet;
pub use ivrs::Ivrs;
pub use madt::Madt;
pub use mcfg::{Mcfg, McfgEntry};

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::hw::PhysRead;
use bytes::{array, show, sum, u8_at, u32_at, u64_at};

/// Length of the common table header (ACPI 6.5 §5.2.6, Table 5.4).
pub const HEADER_LEN: usize = 36;
/// Largest table [`read_table`] copies (the largest real SSDT seen is 840 KB).
pub const MAX_TABLE_LEN: u32 = 16 << 20;
/// Most RSDT/XSDT entries [`discover`] walks.
pub const MAX_ENTRIES: usize = 1024;
/// Length of an ACPI 1.0 RSDP, the part its first checksum covers (ACPI 6.5 §5.2.5.3).
pub const RSDP_V1_LEN: usize = 20;
/// Length of an ACPI 2.0+ RSDP (ACPI 6.5 §5.2.5.3, Table 5.3).
pub const RSDP_V2_LEN: usize = 36;

/// Why a table (or the RSDP) could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    /// Fewer bytes than the structure needs.
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes there.
        have: usize,
    },
    /// A header's length field is impossible (shorter than the header, or than the fixed
    /// part of that table).
    BadLength {
        /// The length field.
        length: u32,
    },
    /// The bytes do not sum to zero. Only the RSDP's first checksum makes this an error;
    /// elsewhere it is recorded as a warning and the table kept.
    BadChecksum {
        /// What was being checked ("RSDP", a table signature).
        what: String,
    },
    /// Not the table that was expected.
    BadSignature {
        /// The expected signature.
        expected: &'static str,
        /// What was there (printable form).
        found: String,
    },
    /// Physical memory that could not be read.
    Unreadable {
        /// Start of the range.
        phys: u64,
        /// Its length.
        len: usize,
    },
    /// A table longer than [`MAX_TABLE_LEN`].
    TooLarge {
        /// The length field.
        length: u32,
    },
    /// No memory for a copy of the table.
    NoMemory {
        /// Bytes asked for.
        len: usize,
    },
    /// Neither the XSDT nor the RSDT can be used.
    NoRootTable {
        /// Why, in words.
        reason: String,
    },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { need, have } => {
                write!(f, "truncated: need {need} bytes, have {have}")
            }
            Self::BadLength { length } => write!(f, "impossible length field {length}"),
            Self::BadChecksum { what } => write!(f, "{what}: bad checksum"),
            Self::BadSignature { expected, found } => {
                write!(
                    f,
                    "bad signature: expected \"{expected}\", found \"{found}\""
                )
            }
            Self::Unreadable { phys, len } => {
                write!(f, "cannot read {len} bytes of physical memory at {phys:#x}")
            }
            Self::TooLarge { length } => {
                write!(f, "table of {length} bytes is larger than {MAX_TABLE_LEN}")
            }
            Self::NoMemory { len } => write!(f, "no memory for a {len}-byte copy"),
            Self::NoRootTable { reason } => write!(f, "no usable RSDT/XSDT: {reason}"),
        }
    }
}

/// The header every system description table starts with (ACPI 6.5 §5.2.6, Table 5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdtHeader {
    /// Signature, e.g. `APIC` for the MADT.
    pub signature: [u8; 4],
    /// Length of the whole table, header included.
    pub length: u32,
    /// Table revision.
    pub revision: u8,
    /// The checksum byte.
    pub checksum: u8,
    /// OEM ID.
    pub oem_id: [u8; 6],
    /// OEM table ID.
    pub oem_table_id: [u8; 8],
    /// OEM revision.
    pub oem_revision: u32,
    /// Creator (ASL compiler) ID.
    pub creator_id: [u8; 4],
    /// Creator revision.
    pub creator_revision: u32,
}

impl SdtHeader {
    /// Reads the 36-byte header at the start of `bytes` (its length field is not checked
    /// here; see [`Table::parse`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, TableError> {
        let short = || TableError::Truncated {
            need: HEADER_LEN,
            have: bytes.len(),
        };
        Ok(Self {
            signature: array(bytes, 0).ok_or_else(short)?,
            length: u32_at(bytes, 4).ok_or_else(short)?,
            revision: u8_at(bytes, 8).ok_or_else(short)?,
            checksum: u8_at(bytes, 9).ok_or_else(short)?,
            oem_id: array(bytes, 10).ok_or_else(short)?,
            oem_table_id: array(bytes, 16).ok_or_else(short)?,
            oem_revision: u32_at(bytes, 24).ok_or_else(short)?,
            creator_id: array(bytes, 28).ok_or_else(short)?,
            creator_revision: u32_at(bytes, 32).ok_or_else(short)?,
        })
    }
}

/// Whether `bytes` sum to zero (mod 256), the ACPI checksum rule (ACPI 6.5 §5.2.6).
pub fn checksum_ok(bytes: &[u8]) -> bool {
    sum(bytes) == 0
}

/// A table checked for signature and length, ready for a parser.
#[derive(Clone, Copy, Debug)]
pub struct Table<'a> {
    /// Its header.
    pub header: SdtHeader,
    /// Exactly `header.length` bytes (trailing bytes beyond the length are dropped).
    pub bytes: &'a [u8],
    /// Whether those bytes sum to zero.
    pub checksum_ok: bool,
}

impl<'a> Table<'a> {
    /// Checks that `bytes` hold a table with signature `signature` whose length field is at
    /// least `min_len` and no more than the bytes there are.
    pub fn parse(
        bytes: &'a [u8],
        signature: &'static str,
        min_len: usize,
    ) -> Result<Self, TableError> {
        let header = SdtHeader::parse(bytes)?;
        if header.signature.as_slice() != signature.as_bytes() {
            return Err(TableError::BadSignature {
                expected: signature,
                found: show(&header.signature),
            });
        }
        let length = usize::try_from(header.length).map_err(|_| TableError::BadLength {
            length: header.length,
        })?;
        if length < min_len.max(HEADER_LEN) {
            return Err(TableError::BadLength {
                length: header.length,
            });
        }
        let bytes = bytes.get(..length).ok_or(TableError::Truncated {
            need: length,
            have: bytes.len(),
        })?;
        Ok(Self {
            header,
            bytes,
            checksum_ok: checksum_ok(bytes),
        })
    }
}

/// The Root System Description Pointer (ACPI 6.5 §5.2.5.3, Table 5.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rsdp {
    /// 0 for ACPI 1.0 (RSDT only), 2 and up for ACPI 2.0+.
    pub revision: u8,
    /// OEM ID.
    pub oem_id: [u8; 6],
    /// Physical address of the RSDT (32-bit).
    pub rsdt: u32,
    /// Physical address of the XSDT, when the RSDP is revision 2+ and long enough.
    pub xsdt: Option<u64>,
    /// Problems that did not stop the parse (extended checksum, short revision-2 RSDP).
    pub warnings: Vec<String>,
}

impl Rsdp {
    /// Parses RSDP bytes: 20 for revision 0, 36 (or the length field) for revision 2+.
    /// The signature `"RSD PTR "` and the first (20-byte) checksum must be right; a wrong
    /// extended checksum is a warning.
    pub fn parse(bytes: &[u8]) -> Result<Self, TableError> {
        let v1 = bytes.get(..RSDP_V1_LEN).ok_or(TableError::Truncated {
            need: RSDP_V1_LEN,
            have: bytes.len(),
        })?;
        if v1.get(..8) != Some(b"RSD PTR ".as_slice()) {
            return Err(TableError::BadSignature {
                expected: "RSD PTR ",
                found: show(v1.get(..8).unwrap_or_default()),
            });
        }
        if !checksum_ok(v1) {
            return Err(TableError::BadChecksum {
                what: "RSDP".into(),
            });
        }
        let truncated = TableError::Truncated {
            need: RSDP_V1_LEN,
            have: bytes.len(),
        };
        let revision = u8_at(v1, 15).ok_or_else(|| truncated.clone())?;
        let oem_id = array(v1, 9).ok_or_else(|| truncated.clone())?;
        let rsdt = u32_at(v1, 16).ok_or(truncated)?;
        let mut warnings = Vec::new();
        let mut xsdt = None;
        if revision >= 2 {
            match (u32_at(bytes, 20), u64_at(bytes, 24)) {
                (Some(length), Some(address)) if bytes.len() >= RSDP_V2_LEN => {
                    // The extended checksum covers `length` bytes; trust it only when the
                    // length is possible and we hold that many bytes.
                    let covered = usize::try_from(length)
                        .ok()
                        .filter(|l| *l >= RSDP_V2_LEN)
                        .and_then(|l| bytes.get(..l));
                    let covered = match covered {
                        Some(c) => c,
                        None => {
                            warnings.push(format!(
                                "RSDP length field {length} is impossible or beyond the {} \
                                 bytes given: extended checksum taken over {RSDP_V2_LEN}",
                                bytes.len()
                            ));
                            bytes.get(..RSDP_V2_LEN).unwrap_or_default()
                        }
                    };
                    if !checksum_ok(covered) {
                        warnings.push("RSDP extended checksum is wrong".into());
                    }
                    xsdt = Some(address);
                }
                _ => warnings.push(format!(
                    "RSDP revision {revision} but only {} bytes: no XSDT address",
                    bytes.len()
                )),
            }
        }
        Ok(Self {
            revision,
            oem_id,
            rsdt,
            xsdt,
            warnings,
        })
    }
}

/// Which root table listed the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootKind {
    /// The RSDT (32-bit entries, ACPI 6.5 §5.2.7).
    Rsdt,
    /// The XSDT (64-bit entries, ACPI 6.5 §5.2.8).
    Xsdt,
}

/// Where one table is, from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableRef {
    /// Its signature.
    pub signature: [u8; 4],
    /// Its physical address.
    pub phys: u64,
    /// Its length field.
    pub length: u32,
    /// Whether its bytes sum to zero (always true for the FACS, which has no checksum).
    pub checksum_ok: bool,
}

/// Every table the firmware lists, found by [`discover`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSet {
    /// The RSDP's revision.
    pub revision: u8,
    /// The RSDP's OEM ID.
    pub oem_id: [u8; 6],
    /// Which root table was walked.
    pub root: RootKind,
    /// The root table's physical address.
    pub root_phys: u64,
    /// The tables, in root-table order, then the FADT's DSDT and FACS.
    pub tables: Vec<TableRef>,
    /// What was skipped or is suspect, in words (bad checksums, unreadable entries, the
    /// reason for falling back from the XSDT to the RSDT).
    pub errors: Vec<String>,
}

impl TableSet {
    /// The first table with signature `sig`.
    pub fn find(&self, sig: &[u8; 4]) -> Option<&TableRef> {
        self.tables.iter().find(|t| &t.signature == sig)
    }

    /// Every table with signature `sig` (SSDTs come in numbers).
    pub fn find_all<'a>(&'a self, sig: &'a [u8; 4]) -> impl Iterator<Item = &'a TableRef> + 'a {
        self.tables.iter().filter(move |t| &t.signature == sig)
    }
}

/// Copies a table out of physical memory (at most [`MAX_TABLE_LEN`] bytes).
pub fn read_table(mem: &dyn PhysRead, t: &TableRef) -> Result<Vec<u8>, TableError> {
    read_bytes(mem, t.phys, t.length)
}

fn read_bytes(mem: &dyn PhysRead, phys: u64, length: u32) -> Result<Vec<u8>, TableError> {
    if length > MAX_TABLE_LEN {
        return Err(TableError::TooLarge { length });
    }
    let len = usize::try_from(length).map_err(|_| TableError::TooLarge { length })?;
    // The length is the table's own word: a failed allocation is an error, not an abort.
    let mut buf = Vec::new();
    buf.try_reserve_exact(len)
        .map_err(|_| TableError::NoMemory { len })?;
    buf.resize(len, 0);
    if mem.read_phys(phys, &mut buf) {
        Ok(buf)
    } else {
        Err(TableError::Unreadable { phys, len })
    }
}

fn read_header(mem: &dyn PhysRead, phys: u64) -> Result<SdtHeader, TableError> {
    let mut buf = [0u8; HEADER_LEN];
    if !mem.read_phys(phys, &mut buf) {
        return Err(TableError::Unreadable {
            phys,
            len: HEADER_LEN,
        });
    }
    SdtHeader::parse(&buf)
}

/// Reads a whole table whose header is at `phys`; returns its header, bytes and whether
/// its checksum is right. `length` beyond `cap` bytes is not read (the caller learns from
/// a returned length below the header's).
fn read_whole(mem: &dyn PhysRead, phys: u64, cap: u32) -> Result<(SdtHeader, Vec<u8>), TableError> {
    let header = read_header(mem, phys)?;
    if usize::try_from(header.length).map_or(true, |l| l < HEADER_LEN) {
        return Err(TableError::BadLength {
            length: header.length,
        });
    }
    let bytes = read_bytes(mem, phys, header.length.min(cap))?;
    Ok((header, bytes))
}

/// Reads the root table at `phys`, which must carry `signature`.
fn read_root(
    mem: &dyn PhysRead,
    phys: u64,
    signature: &'static str,
    entry_len: usize,
    errors: &mut Vec<String>,
) -> Result<Vec<u8>, TableError> {
    let header = read_header(mem, phys)?;
    if header.signature.as_slice() != signature.as_bytes() {
        return Err(TableError::BadSignature {
            expected: signature,
            found: show(&header.signature),
        });
    }
    // Read no more than MAX_ENTRIES entries' worth.
    let cap = MAX_ENTRIES
        .checked_mul(entry_len)
        .and_then(|n| n.checked_add(HEADER_LEN))
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(MAX_TABLE_LEN);
    let (header, bytes) = read_whole(mem, phys, cap)?;
    if header.length > cap {
        errors.push(format!(
            "{signature} lists more than {MAX_ENTRIES} tables: the rest ignored"
        ));
    } else if !checksum_ok(&bytes) {
        errors.push(format!(
            "{signature} at {phys:#x}: bad checksum (used anyway)"
        ));
    }
    Ok(bytes)
}

/// Finds every table: parses the RSDP, walks the XSDT (revision 2+, nonzero address, a
/// readable header saying `XSDT`) or else the RSDT, reads each listed table's header, and
/// adds the DSDT and FACS the FADT points at.
///
/// Fails only when the RSDP is unusable or no root table can be read; anything else
/// (unreadable or zero entries, bad checksums, an XSDT that had to be abandoned) is
/// recorded in [`TableSet::errors`].
pub fn discover(mem: &dyn PhysRead, rsdp: &[u8]) -> Result<TableSet, TableError> {
    let rsdp = Rsdp::parse(rsdp)?;
    let mut errors = rsdp.warnings.clone();
    let mut root = None;
    match rsdp.xsdt {
        Some(0) => errors.push("XSDT address is zero: using the RSDT".into()),
        Some(xsdt) => match read_root(mem, xsdt, "XSDT", 8, &mut errors) {
            Ok(bytes) => root = Some((RootKind::Xsdt, xsdt, bytes)),
            Err(e) => errors.push(format!("XSDT at {xsdt:#x}: {e}: using the RSDT")),
        },
        None => {}
    }
    let (kind, root_phys, root_bytes) = match root {
        Some(r) => r,
        None => {
            if rsdp.rsdt == 0 {
                return Err(TableError::NoRootTable {
                    reason: "the RSDT address is zero".into(),
                });
            }
            let phys = u64::from(rsdp.rsdt);
            let bytes = read_root(mem, phys, "RSDT", 4, &mut errors).map_err(|e| {
                TableError::NoRootTable {
                    reason: format!("RSDT at {phys:#x}: {e}"),
                }
            })?;
            (RootKind::Rsdt, phys, bytes)
        }
    };
    let mut set = TableSet {
        revision: rsdp.revision,
        oem_id: rsdp.oem_id,
        root: kind,
        root_phys,
        tables: Vec::new(),
        errors: Vec::new(),
    };
    let entries = root_bytes.get(HEADER_LEN..).unwrap_or_default();
    let entry_len = if kind == RootKind::Xsdt { 8 } else { 4 };
    if entries.len() % entry_len != 0 {
        errors.push(format!(
            "root table ends in a partial entry ({} stray bytes)",
            entries.len() % entry_len
        ));
    }
    for (i, entry) in entries.chunks_exact(entry_len).enumerate() {
        let phys = match kind {
            RootKind::Xsdt => u64_at(entry, 0),
            RootKind::Rsdt => u32_at(entry, 0).map(u64::from),
        }
        .unwrap_or(0);
        if phys == 0 {
            errors.push(format!("root table entry {i} is zero: skipped"));
            continue;
        }
        if set.tables.iter().any(|t| t.phys == phys) {
            errors.push(format!(
                "root table entry {i} at {phys:#x}: listed before: skipped"
            ));
            continue;
        }
        match add_table(mem, phys, &mut set.tables) {
            Ok(()) => {}
            Err(e) => errors.push(format!("root table entry {i} at {phys:#x}: {e}: skipped")),
        }
    }
    add_fadt_tables(mem, &mut set, &mut errors);
    for t in &set.tables {
        if !t.checksum_ok {
            errors.push(format!(
                "{} at {:#x}: bad checksum (kept)",
                show(&t.signature),
                t.phys
            ));
        }
    }
    set.errors = errors;
    Ok(set)
}

/// Reads the header at `phys`, checks the whole table's checksum, and lists it. The bytes
/// are summed through a small buffer, never copied whole: listing costs no memory, however
/// long a table says it is.
fn add_table(mem: &dyn PhysRead, phys: u64, out: &mut Vec<TableRef>) -> Result<(), TableError> {
    let header = read_header(mem, phys)?;
    if usize::try_from(header.length).map_or(true, |l| l < HEADER_LEN) {
        return Err(TableError::BadLength {
            length: header.length,
        });
    }
    if header.length > MAX_TABLE_LEN {
        return Err(TableError::TooLarge {
            length: header.length,
        });
    }
    let mut chunk = [0u8; 512];
    let mut total = 0u8;
    let mut at = 0u64;
    let length = u64::from(header.length);
    while at < length {
        let n = (length - at).min(chunk.len() as u64) as usize;
        let start = phys
            .checked_add(at)
            .ok_or(TableError::Unreadable { phys, len: n })?;
        if !mem.read_phys(start, &mut chunk[..n]) {
            return Err(TableError::Unreadable {
                phys: start,
                len: n,
            });
        }
        total = total.wrapping_add(sum(&chunk[..n]));
        at += n as u64;
    }
    out.push(TableRef {
        signature: header.signature,
        phys,
        length: header.length,
        checksum_ok: total == 0,
    });
    Ok(())
}

/// Adds the FADT's DSDT and FACS (ACPI 6.5 §5.2.9), which no root table lists.
fn add_fadt_tables(mem: &dyn PhysRead, set: &mut TableSet, errors: &mut Vec<String>) {
    let Some(fadt_ref) = set.find(b"FACP").copied() else {
        errors.push("no FADT (FACP) listed".into());
        return;
    };
    let fadt = match read_table(mem, &fadt_ref).and_then(|b| Fadt::parse(&b)) {
        Ok(f) => f,
        Err(e) => {
            errors.push(format!("FADT at {:#x}: {e}", fadt_ref.phys));
            return;
        }
    };
    match fadt.dsdt {
        Some(phys) if !set.tables.iter().any(|t| t.phys == phys) => {
            let before = set.tables.len();
            match add_table(mem, phys, &mut set.tables) {
                Ok(()) => {
                    if let Some(t) = set.tables.get(before)
                        && &t.signature != b"DSDT"
                    {
                        errors.push(format!(
                            "the FADT's DSDT at {phys:#x} says \"{}\"",
                            show(&t.signature)
                        ));
                    }
                }
                Err(e) => errors.push(format!("DSDT at {phys:#x}: {e}")),
            }
        }
        Some(_) => {}
        None => errors.push("the FADT names no DSDT".into()),
    }
    if let Some(phys) = fadt.facs
        && !set.tables.iter().any(|t| t.phys == phys)
    {
        match read_facs(mem, phys) {
            Ok(t) => set.tables.push(t),
            Err(e) => errors.push(format!("FACS at {phys:#x}: {e}")),
        }
    }
}

/// Minimum FACS length (ACPI 6.5 §5.2.10, Table 5.14: 64 bytes).
const FACS_MIN_LEN: u32 = 64;

/// The FACS has no checksum, only a signature and a length (ACPI 6.5 §5.2.10).
fn read_facs(mem: &dyn PhysRead, phys: u64) -> Result<TableRef, TableError> {
    let mut buf = [0u8; 8];
    if !mem.read_phys(phys, &mut buf) {
        return Err(TableError::Unreadable { phys, len: 8 });
    }
    let signature: [u8; 4] = array(&buf, 0).unwrap_or_default();
    if &signature != b"FACS" {
        return Err(TableError::BadSignature {
            expected: "FACS",
            found: show(&signature),
        });
    }
    let length = u32_at(&buf, 4).unwrap_or_default();
    if length < FACS_MIN_LEN {
        return Err(TableError::BadLength { length });
    }
    // As every other table listed: one claiming more than any table has is not listed.
    if length > MAX_TABLE_LEN {
        return Err(TableError::TooLarge { length });
    }
    Ok(TableRef {
        signature,
        phys,
        length,
        checksum_ok: true,
    })
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests;
