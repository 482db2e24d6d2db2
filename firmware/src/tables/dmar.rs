//! The DMA Remapping Reporting table, signature `DMAR` (Intel Virtualization Technology for
//! Directed I/O, Architecture Specification, chapter 8 "BIOS Considerations").
//!
//! Design: an IOMMU ("DMA remapping hardware unit") sits between PCI devices and memory and
//! translates every address a device puts on the bus. The DMAR tells the OS where each unit's
//! registers are and which devices it translates for; it also lists memory that firmware
//! itself keeps using for DMA behind the OS's back (USB legacy emulation, the integrated
//! GPU's stolen memory), which must stay mapped, one to one, for the devices named.
//!
//! The table is a fixed part (host address width, flags) followed by remapping structures,
//! each `type (2 bytes), length (2 bytes), ...` (VT-d §8.2). Two of them are kept:
//!
//! - DRHD (§8.3): one remapping unit, its register base, and the devices it covers as
//!   device scopes (§8.3.1), or every device of its PCI segment not claimed by another unit
//!   when its INCLUDE_PCI_ALL flag is set.
//! - RMRR (§8.4): one reserved memory range and the devices that use it.
//!
//! The rest (ATSR, RHSA, ANDD, SATC, SIDP) are skipped silently; a type the spec does not
//! define is skipped and noted. As in the MADT, each length is trusted only as far as the
//! table goes: a structure shorter than its own 4-byte header, or running past the table,
//! stops the walk (nothing after it can be located); one too short for its fixed part is
//! skipped. Inside a structure, device scopes are walked the same way. A device scope is a
//! start bus and a path of (device, function) hops through PCI-to-PCI bridges: the device is
//! found by reading each bridge's secondary bus number on the way down, not from the table.
//!
//! A unit whose register base is 0 or not page aligned cannot be programmed and is dropped.
//! Counts are capped ([`MAX_UNITS`], [`MAX_RMRRS`], [`MAX_SCOPES`], [`MAX_WARNINGS`]) so that
//! a hostile table cannot make the parse allocate without bound. Everything skipped, dropped
//! or capped is said in [`Dmar::warnings`].

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::bytes::{u8_at, u16_at, u64_at};
use super::{HEADER_LEN, Table, TableError};

mod ioapics;
pub use ioapics::IoApicScope;

/// Offset of the Host Address Width byte (VT-d §8.1).
const HOST_ADDRESS_WIDTH: usize = HEADER_LEN;
/// Offset of the Flags byte (VT-d §8.1).
const FLAGS: usize = HEADER_LEN + 1;
/// Offset of the first remapping structure: header, width, flags, 10 reserved bytes
/// (VT-d §8.1).
pub const STRUCTURES_AT: usize = HEADER_LEN + 12;

/// DMAR flags bit 0: the units support interrupt remapping (VT-d §8.1).
pub const FLAG_INTR_REMAP: u8 = 1;
/// DMAR flags bit 1: firmware asks the OS not to turn on x2APIC mode (VT-d §8.1).
pub const FLAG_X2APIC_OPT_OUT: u8 = 1 << 1;
/// DMAR flags bit 2: firmware set up DMA protection and the OS may keep it on through boot
/// (VT-d §8.1).
pub const FLAG_DMA_CTRL_PLATFORM_OPT_IN: u8 = 1 << 2;

// Remapping structure types (VT-d §8.2).
/// DMA Remapping Hardware Unit Definition (§8.3).
pub const TYPE_DRHD: u16 = 0;
/// Reserved Memory Region Reporting (§8.4).
pub const TYPE_RMRR: u16 = 1;
/// Root Port ATS Capability Reporting (§8.5).
pub const TYPE_ATSR: u16 = 2;
/// Remapping Hardware Static Affinity (§8.6).
pub const TYPE_RHSA: u16 = 3;
/// ACPI Name-space Device Declaration (§8.7).
pub const TYPE_ANDD: u16 = 4;
/// SoC Integrated Address Translation Cache Reporting (§8.8).
pub const TYPE_SATC: u16 = 5;
/// SoC Integrated Device Property Reporting (§8.9).
pub const TYPE_SIDP: u16 = 6;

/// Every remapping structure starts with type (2 bytes) and length (2 bytes) (VT-d §8.2).
const STRUCTURE_HEADER_LEN: usize = 4;
/// Fixed part of a DRHD: type, length, flags, size, segment, register base (VT-d §8.3).
const DRHD_LEN: usize = 16;
/// Fixed part of an RMRR: type, length, reserved, segment, base, limit (VT-d §8.4).
const RMRR_LEN: usize = 24;
/// Fixed part of a device scope: type, length, flags/reserved, enumeration ID, start bus
/// (VT-d §8.3.1); two bytes per path hop follow.
const SCOPE_LEN: usize = 6;

/// DRHD flags bit 0: the unit covers every device of its segment that no other unit lists
/// (VT-d §8.3).
pub const INCLUDE_PCI_ALL: u8 = 1;
/// DRHD Size field, bits 3:0: the register set is 2^N 4 KiB pages (VT-d §8.3; bits 7:4 are
/// reserved). Tables of revision 1 predate the field and have a reserved byte there.
const DRHD_SIZE_MASK: u8 = 0x0f;
/// Register sets and reserved regions are described in 4 KiB pages (VT-d §8.3, §8.4).
const PAGE_MASK: u64 = 0xfff;

/// Most DRHDs kept (the largest real servers have a few dozen units).
pub const MAX_UNITS: usize = 64;
/// Most RMRRs kept.
pub const MAX_RMRRS: usize = 256;
/// Most device scopes kept per structure.
pub const MAX_SCOPES: usize = 256;
/// Most warnings recorded (the last one says that more were left out).
pub const MAX_WARNINGS: usize = 64;

/// What a device scope names (VT-d §8.3.1, "Type" field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeKind {
    /// 1: a PCI endpoint device.
    Endpoint,
    /// 2: a PCI-to-PCI bridge and every device below it.
    Bridge,
    /// 3: an I/O APIC (enumeration ID = its I/O APIC ID, as in the MADT); its interrupt
    /// messages pass through this unit's interrupt remapping.
    IoApic,
    /// 4: an MSI-capable HPET (enumeration ID = its HPET number).
    Hpet,
    /// 5: an ACPI namespace device (enumeration ID = the device number an ANDD gives).
    AcpiNamespace,
    /// Any other value (0 and 6-255 are reserved).
    Other(u8),
}

impl ScopeKind {
    fn from_type(ty: u8) -> Self {
        match ty {
            1 => Self::Endpoint,
            2 => Self::Bridge,
            3 => Self::IoApic,
            4 => Self::Hpet,
            5 => Self::AcpiNamespace,
            n => Self::Other(n),
        }
    }
}

/// A device scope (VT-d §8.3.1): which device (or bridge, I/O APIC, HPET) a DRHD or RMRR
/// is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceScope {
    /// What it names.
    pub kind: ScopeKind,
    /// The I/O APIC ID, HPET number or ACPI device number (other kinds: 0).
    pub enumeration_id: u8,
    /// The bus the path starts on.
    pub start_bus: u8,
    /// (device, function) pairs from the start bus down.
    pub path: Vec<(u8, u8)>,
}

/// A DMA remapping hardware unit (DRHD, VT-d §8.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drhd {
    /// Bit 0: INCLUDE_PCI_ALL.
    pub flags: u8,
    /// Size field (revision 2+ tables; 0 otherwise): the register set spans 2^size 4 KiB pages.
    pub size: u8,
    /// The PCI segment group it serves.
    pub segment: u16,
    /// Physical address of its registers (4 KiB aligned, not 0).
    pub register_base: u64,
    /// The devices it covers (with INCLUDE_PCI_ALL: only I/O APICs and HPETs, whose
    /// interrupts it remaps).
    pub scopes: Vec<DeviceScope>,
}

impl Drhd {
    /// Whether the unit covers every device of its segment that no other unit lists.
    pub fn include_pci_all(&self) -> bool {
        self.flags & INCLUDE_PCI_ALL != 0
    }
}

/// A reserved memory region (RMRR, VT-d §8.4): memory that the devices named go on using
/// for DMA, which their translation must map one to one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rmrr {
    /// The PCI segment group of the devices named.
    pub segment: u16,
    /// First byte of the region.
    pub base: u64,
    /// Inclusive end address (the table's "limit").
    pub limit: u64,
    /// The devices that use it.
    pub scopes: Vec<DeviceScope>,
}

/// The DMAR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dmar {
    /// Host Address Width: the DMA physical address width in bits (the table's HAW field + 1).
    pub address_width: u8,
    /// Flags byte: bit 0 INTR_REMAP, bit 1 X2APIC_OPT_OUT, bit 2 DMA_CTRL_PLATFORM_OPT_IN.
    pub flags: u8,
    /// DRHD structures (type 0), in table order.
    pub units: Vec<Drhd>,
    /// RMRR structures (type 1), in table order.
    pub reserved: Vec<Rmrr>,
    /// Problems that did not stop the parse (a truncated or unknown structure skipped, a bad scope, ...).
    pub warnings: Vec<String>,
}

/// A bounded list of warnings: past [`MAX_WARNINGS`] nothing more is formatted or kept.
struct Warnings(Vec<String>);

impl Warnings {
    fn push(&mut self, message: impl FnOnce() -> String) {
        let n = self.0.len();
        if n + 1 < MAX_WARNINGS {
            self.0.push(message());
        } else if n + 1 == MAX_WARNINGS {
            self.0.push("further warnings not recorded".into());
        }
    }
}

impl Dmar {
    /// Parses a DMAR: the whole table, its 36-byte header included.
    pub fn parse(table: &[u8]) -> Result<Dmar, TableError> {
        let t = Table::parse(table, "DMAR", STRUCTURES_AT)?;
        let b = t.bytes;
        let mut w = Warnings(Vec::new());
        if !t.checksum_ok {
            w.push(|| "bad checksum (kept)".into());
        }
        // The field holds the width minus one (VT-d §8.1); at most 64 bits make sense.
        let haw = u8_at(b, HOST_ADDRESS_WIDTH).unwrap_or_default();
        if haw > 63 {
            w.push(|| format!("host address width field {haw} is beyond 64 bits"));
        }
        let mut dmar = Dmar {
            address_width: haw.saturating_add(1),
            flags: u8_at(b, FLAGS).unwrap_or_default(),
            units: Vec::new(),
            reserved: Vec::new(),
            warnings: Vec::new(),
        };
        // The DRHD Size field exists from revision 2 on (VT-d §8.3).
        let has_size = t.header.revision >= 2;
        let mut off = STRUCTURES_AT;
        let mut index = 0usize;
        let (mut units_capped, mut rmrrs_capped) = (false, false);
        while off < b.len() {
            let (Some(ty), Some(len)) = (u16_at(b, off), u16_at(b, off.saturating_add(2))) else {
                w.push(|| {
                    format!(
                        "structure {index} at {off:#x}: {} stray bytes at the end: walk stopped",
                        b.len() - off
                    )
                });
                break;
            };
            let s = match off
                .checked_add(usize::from(len))
                .filter(|_| usize::from(len) >= STRUCTURE_HEADER_LEN)
                .and_then(|end| b.get(off..end))
            {
                Some(s) => s,
                None => {
                    w.push(|| {
                        format!(
                            "structure {index} at {off:#x} (type {ty}): length {len} {}: \
                             walk stopped",
                            if usize::from(len) < STRUCTURE_HEADER_LEN {
                                "is impossible"
                            } else {
                                "runs past the end"
                            }
                        )
                    });
                    break;
                }
            };
            let at = || format!("structure {index} at {off:#x}");
            match ty {
                TYPE_DRHD if dmar.units.len() >= MAX_UNITS => {
                    if !units_capped {
                        units_capped = true;
                        w.push(|| {
                            format!("{}: more than {MAX_UNITS} DRHDs: the rest ignored", at())
                        });
                    }
                }
                TYPE_DRHD => {
                    if let Some(unit) = drhd(s, has_size, &at, &mut w) {
                        dmar.units.push(unit);
                    }
                }
                TYPE_RMRR if dmar.reserved.len() >= MAX_RMRRS => {
                    if !rmrrs_capped {
                        rmrrs_capped = true;
                        w.push(|| {
                            format!("{}: more than {MAX_RMRRS} RMRRs: the rest ignored", at())
                        });
                    }
                }
                TYPE_RMRR => {
                    if let Some(region) = rmrr(s, &at, &mut w) {
                        dmar.reserved.push(region);
                    }
                }
                TYPE_ATSR | TYPE_RHSA | TYPE_ANDD | TYPE_SATC | TYPE_SIDP => {}
                _ => w.push(|| format!("{} (type {ty}): unknown type: skipped", at())),
            }
            off = off.saturating_add(s.len());
            index = index.saturating_add(1);
        }
        if dmar.units.is_empty() {
            w.push(|| "no usable DRHD: the table describes no remapping hardware".into());
        }
        // Each segment's INCLUDE_PCI_ALL unit must come after its other units (VT-d §8.3):
        // the OS matches a device against the listed units first.
        for (i, u) in dmar.units.iter().enumerate() {
            if u.include_pci_all()
                && dmar
                    .units
                    .iter()
                    .skip(i.saturating_add(1))
                    .any(|later| later.segment == u.segment)
            {
                w.push(|| {
                    format!(
                        "DRHD at {:#x} (INCLUDE_PCI_ALL, segment {}) is not the last unit of its \
                         segment",
                        u.register_base, u.segment
                    )
                });
            }
        }
        dmar.warnings = w.0;
        Ok(dmar)
    }
}

/// Decodes a DRHD (`s` is exactly its length); `None` when it cannot be used.
fn drhd(s: &[u8], has_size: bool, at: &dyn Fn() -> String, w: &mut Warnings) -> Option<Drhd> {
    let (Some(flags), Some(size), Some(segment), Some(register_base)) =
        (u8_at(s, 4), u8_at(s, 5), u16_at(s, 6), u64_at(s, 8))
    else {
        w.push(|| {
            format!(
                "{} (DRHD): length {} is below the {DRHD_LEN} bytes it needs: skipped",
                at(),
                s.len()
            )
        });
        return None;
    };
    if register_base == 0 || register_base & PAGE_MASK != 0 {
        w.push(|| {
            format!(
                "{} (DRHD, segment {segment}): register base {register_base:#x} is {}: dropped",
                at(),
                if register_base == 0 {
                    "zero"
                } else {
                    "not 4 KiB aligned"
                }
            )
        });
        return None;
    }
    let what = || format!("{} (DRHD {register_base:#x})", at());
    Some(Drhd {
        flags,
        size: if has_size { size & DRHD_SIZE_MASK } else { 0 },
        segment,
        register_base,
        scopes: scopes(s.get(DRHD_LEN..).unwrap_or_default(), &what, w),
    })
}

/// Decodes an RMRR (`s` is exactly its length); `None` when it describes no memory.
fn rmrr(s: &[u8], at: &dyn Fn() -> String, w: &mut Warnings) -> Option<Rmrr> {
    let (Some(segment), Some(base), Some(limit)) = (u16_at(s, 6), u64_at(s, 8), u64_at(s, 16))
    else {
        w.push(|| {
            format!(
                "{} (RMRR): length {} is below the {RMRR_LEN} bytes it needs: skipped",
                at(),
                s.len()
            )
        });
        return None;
    };
    if limit < base {
        w.push(|| {
            format!(
                "{} (RMRR): limit {limit:#x} is below base {base:#x}: skipped",
                at()
            )
        });
        return None;
    }
    // The region is whole 4 KiB pages (VT-d §8.4); a misaligned one is still reserved
    // memory, and whoever maps it rounds outwards.
    if base & PAGE_MASK != 0 || limit & PAGE_MASK != PAGE_MASK {
        w.push(|| {
            format!(
                "{} (RMRR {base:#x}..={limit:#x}): not whole 4 KiB pages (kept)",
                at()
            )
        });
    }
    let what = || format!("{} (RMRR {base:#x})", at());
    Some(Rmrr {
        segment,
        base,
        limit,
        scopes: scopes(s.get(RMRR_LEN..).unwrap_or_default(), &what, w),
    })
}

/// Walks the device scopes that fill `b`, the rest of a structure after its fixed part.
fn scopes(b: &[u8], what: &dyn Fn() -> String, w: &mut Warnings) -> Vec<DeviceScope> {
    let mut out = Vec::new();
    let mut off = 0usize;
    let mut index = 0usize;
    while off < b.len() {
        let (Some(ty), Some(len)) = (u8_at(b, off), u8_at(b, off.saturating_add(1))) else {
            w.push(|| {
                format!(
                    "{}: scope {index}: a stray byte at the end of the structure: ignored",
                    what()
                )
            });
            break;
        };
        let len = usize::from(len);
        let Some(s) = off
            .checked_add(len)
            .filter(|_| len >= SCOPE_LEN)
            .and_then(|end| b.get(off..end))
        else {
            w.push(|| {
                format!(
                    "{}: scope {index} (type {ty}): length {len} {}: it and the scopes after it \
                     skipped",
                    what(),
                    if len < SCOPE_LEN {
                        "is below 6"
                    } else {
                        "runs past the structure"
                    }
                )
            });
            break;
        };
        let this = index;
        off = off.saturating_add(len);
        index = index.saturating_add(1);
        if out.len() >= MAX_SCOPES {
            w.push(|| {
                format!(
                    "{}: more than {MAX_SCOPES} scopes: the rest ignored",
                    what()
                )
            });
            break;
        }
        let path_bytes = s.get(SCOPE_LEN..).unwrap_or_default();
        let (hops, odd) = path_bytes.as_chunks::<2>();
        if !odd.is_empty() {
            w.push(|| {
                format!(
                    "{}: scope {this} (type {ty}): path of {} bytes is not whole (device, \
                     function) pairs: skipped",
                    what(),
                    path_bytes.len()
                )
            });
            continue;
        }
        out.push(DeviceScope {
            kind: ScopeKind::from_type(ty),
            enumeration_id: u8_at(s, 4).unwrap_or_default(),
            start_bus: u8_at(s, 5).unwrap_or_default(),
            path: hops.iter().map(|&[dev, func]| (dev, func)).collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::testutil::{Rng, table};
    use alloc::vec;

    fn scope(ty: u8, id: u8, bus: u8, path: &[(u8, u8)]) -> Vec<u8> {
        let mut s = vec![ty, (SCOPE_LEN + 2 * path.len()) as u8, 0, 0, id, bus];
        for (d, f) in path {
            s.extend_from_slice(&[*d, *f]);
        }
        s
    }

    fn drhd_bytes(flags: u8, size: u8, segment: u16, base: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = scopes.concat();
        let mut s = TYPE_DRHD.to_le_bytes().to_vec();
        s.extend_from_slice(&((DRHD_LEN + body.len()) as u16).to_le_bytes());
        s.extend_from_slice(&[flags, size]);
        s.extend_from_slice(&segment.to_le_bytes());
        s.extend_from_slice(&base.to_le_bytes());
        s.extend_from_slice(&body);
        s
    }

    fn rmrr_bytes(segment: u16, base: u64, limit: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = scopes.concat();
        let mut s = TYPE_RMRR.to_le_bytes().to_vec();
        s.extend_from_slice(&((RMRR_LEN + body.len()) as u16).to_le_bytes());
        s.extend_from_slice(&[0, 0]);
        s.extend_from_slice(&segment.to_le_bytes());
        s.extend_from_slice(&base.to_le_bytes());
        s.extend_from_slice(&limit.to_le_bytes());
        s.extend_from_slice(&body);
        s
    }

    fn dmar(revision: u8, haw: u8, flags: u8, structures: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![haw, flags];
        body.extend_from_slice(&[0; 10]);
        body.extend_from_slice(&structures.concat());
        table(b"DMAR", revision, &body)
    }

    /// A laptop-like table: the GPU's own unit, the catch-all unit with the I/O APIC and
    /// HPET, an RMRR for a USB controller behind a bridge, and an ANDD (skipped).
    fn valid() -> Vec<u8> {
        let andd = vec![4, 0, 12, 0, 0, 0, 0, 1, b'\\', b'_', b'S', b'B'];
        dmar(
            2,
            38,
            FLAG_INTR_REMAP | FLAG_X2APIC_OPT_OUT,
            &[
                drhd_bytes(0, 0, 0, 0xfed9_0000, &[scope(1, 0, 0, &[(2, 0)])]),
                drhd_bytes(
                    INCLUDE_PCI_ALL,
                    1,
                    0,
                    0xfed9_1000,
                    &[
                        scope(3, 2, 0xf0, &[(0x1f, 0)]),
                        scope(4, 0, 0, &[(0x1f, 0)]),
                    ],
                ),
                rmrr_bytes(
                    0,
                    0x7c00_0000,
                    0x803f_ffff,
                    &[scope(1, 0, 0, &[(0x1c, 4), (0, 0)])],
                ),
                andd,
            ],
        )
    }

    #[test]
    fn two_units_and_a_reserved_region() {
        let d = Dmar::parse(&valid()).expect("parses");
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        assert_eq!(d.address_width, 39);
        assert_eq!(d.flags, FLAG_INTR_REMAP | FLAG_X2APIC_OPT_OUT);
        assert_eq!(
            d.units,
            vec![
                Drhd {
                    flags: 0,
                    size: 0,
                    segment: 0,
                    register_base: 0xfed9_0000,
                    scopes: vec![DeviceScope {
                        kind: ScopeKind::Endpoint,
                        enumeration_id: 0,
                        start_bus: 0,
                        path: vec![(2, 0)],
                    }],
                },
                Drhd {
                    flags: INCLUDE_PCI_ALL,
                    size: 1,
                    segment: 0,
                    register_base: 0xfed9_1000,
                    scopes: vec![
                        DeviceScope {
                            kind: ScopeKind::IoApic,
                            enumeration_id: 2,
                            start_bus: 0xf0,
                            path: vec![(0x1f, 0)],
                        },
                        DeviceScope {
                            kind: ScopeKind::Hpet,
                            enumeration_id: 0,
                            start_bus: 0,
                            path: vec![(0x1f, 0)],
                        },
                    ],
                },
            ]
        );
        assert!(!d.units[0].include_pci_all());
        assert!(d.units[1].include_pci_all());
        assert_eq!(
            d.reserved,
            vec![Rmrr {
                segment: 0,
                base: 0x7c00_0000,
                limit: 0x803f_ffff,
                scopes: vec![DeviceScope {
                    kind: ScopeKind::Endpoint,
                    enumeration_id: 0,
                    start_bus: 0,
                    path: vec![(0x1c, 4), (0, 0)],
                }],
            }]
        );
    }

    #[test]
    fn size_only_from_revision_2() {
        let t = dmar(
            1,
            38,
            0,
            &[drhd_bytes(INCLUDE_PCI_ALL, 0xf3, 0, 0xfed9_1000, &[])],
        );
        assert_eq!(Dmar::parse(&t).expect("parses").units[0].size, 0);
        let t = dmar(
            2,
            38,
            0,
            &[drhd_bytes(INCLUDE_PCI_ALL, 0xf3, 0, 0xfed9_1000, &[])],
        );
        assert_eq!(Dmar::parse(&t).expect("parses").units[0].size, 3);
    }

    #[test]
    fn zero_length_structure_stops_the_walk() {
        let t = dmar(
            1,
            38,
            0,
            &[
                drhd_bytes(INCLUDE_PCI_ALL, 0, 0, 0xfed9_1000, &[]),
                vec![1, 0, 0, 0],
                rmrr_bytes(0, 0x1000, 0x1fff, &[]),
            ],
        );
        let d = Dmar::parse(&t).expect("parses");
        assert_eq!(d.units.len(), 1);
        assert!(d.reserved.is_empty(), "nothing after it can be located");
        assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
        assert!(d.warnings[0].contains("length 0 is impossible"));
    }

    #[test]
    fn structure_past_the_end_and_stray_bytes() {
        let mut long = rmrr_bytes(0, 0x1000, 0x1fff, &[]);
        long[2] = 200;
        let d = Dmar::parse(&dmar(1, 38, 0, &[long])).expect("parses");
        assert!(d.reserved.is_empty());
        assert!(d.warnings.iter().any(|w| w.contains("runs past the end")));
        let d = Dmar::parse(&dmar(
            1,
            38,
            0,
            &[drhd_bytes(1, 0, 0, 0xfed9_1000, &[]), vec![0, 0, 9]],
        ))
        .expect("parses");
        assert_eq!(d.units.len(), 1);
        assert!(d.warnings[0].contains("3 stray bytes"), "{:?}", d.warnings);
    }

    #[test]
    fn truncated_scope_and_odd_path() {
        // A scope claiming 10 bytes where 8 remain in the structure; before it, a scope with
        // a path of 3 bytes (skipped, the walk goes on) and a good one.
        let mut odd = scope(1, 0, 0, &[(3, 0)]);
        odd.push(7);
        odd[1] = 9;
        let good = scope(1, 0, 0, &[(4, 0)]);
        let mut cut = scope(2, 0, 0, &[(0x1c, 0), (0, 0)]);
        cut.truncate(8);
        let t = dmar(
            1,
            38,
            0,
            &[drhd_bytes(0, 0, 0, 0xfed9_0000, &[odd, good, cut])],
        );
        let d = Dmar::parse(&t).expect("parses");
        assert_eq!(d.units.len(), 1);
        assert_eq!(d.units[0].scopes.len(), 1);
        assert_eq!(d.units[0].scopes[0].path, vec![(4, 0)]);
        assert_eq!(d.warnings.len(), 2, "{:?}", d.warnings);
        assert!(d.warnings[0].contains("not whole"));
        assert!(d.warnings[1].contains("runs past the structure"));
        // A zero-length scope does not spin.
        let t = dmar(
            1,
            38,
            0,
            &[drhd_bytes(0, 0, 0, 0xfed9_0000, &[vec![1, 0, 0, 0, 0, 0]])],
        );
        let d = Dmar::parse(&t).expect("parses");
        assert!(d.units[0].scopes.is_empty());
        assert!(d.warnings[0].contains("below 6"), "{:?}", d.warnings);
    }

    #[test]
    fn unusable_units_and_regions() {
        let t = dmar(
            1,
            38,
            0,
            &[
                drhd_bytes(0, 0, 0, 0, &[scope(1, 0, 0, &[(2, 0)])]),
                drhd_bytes(0, 0, 0, 0xfed9_0800, &[]),
                drhd_bytes(INCLUDE_PCI_ALL, 0, 0, 0xfed9_1000, &[]),
                // Too short for a DRHD's fixed part.
                vec![0, 0, 8, 0, 0, 0, 0, 0],
                rmrr_bytes(0, 0x2000, 0x1fff, &[]),
                rmrr_bytes(0, 0x2000, 0x2fff, &[]),
                rmrr_bytes(0, 0x3000, 0x3800, &[]),
                // Types the parser does not keep: RHSA silently, 9 noted.
                vec![
                    3, 0, 20, 0, 0, 0, 0, 0, 0, 0x10, 0xd9, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
                vec![9, 0, 4, 0],
            ],
        );
        let d = Dmar::parse(&t).expect("parses");
        assert_eq!(d.units.len(), 1);
        assert_eq!(d.units[0].register_base, 0xfed9_1000);
        assert_eq!(d.reserved.len(), 2);
        assert_eq!(d.reserved[1].limit, 0x3800);
        let expect = [
            "register base 0x0 is zero: dropped",
            "not 4 KiB aligned: dropped",
            "below the 16 bytes",
            "limit 0x1fff is below base 0x2000",
            "not whole 4 KiB pages (kept)",
            "(type 9): unknown type",
        ];
        assert_eq!(d.warnings.len(), expect.len(), "{:?}", d.warnings);
        for (w, e) in d.warnings.iter().zip(expect) {
            assert!(w.contains(e), "{w:?} should say {e:?}");
        }
    }

    #[test]
    fn include_all_not_last_and_no_units() {
        let t = dmar(
            1,
            38,
            0,
            &[
                drhd_bytes(INCLUDE_PCI_ALL, 0, 0, 0xfed9_1000, &[]),
                drhd_bytes(0, 0, 0, 0xfed9_0000, &[]),
            ],
        );
        let d = Dmar::parse(&t).expect("parses");
        assert_eq!(d.units.len(), 2);
        assert!(
            d.warnings[0].contains("not the last unit"),
            "{:?}",
            d.warnings
        );
        let d = Dmar::parse(&dmar(1, 38, 0, &[])).expect("parses");
        assert!(d.units.is_empty() && d.reserved.is_empty());
        assert!(d.warnings[0].contains("no usable DRHD"));
    }

    #[test]
    fn refusals_and_checksum() {
        let t = valid();
        assert!(matches!(
            Dmar::parse(&t[..t.len() - 1]),
            Err(TableError::Truncated { .. })
        ));
        assert!(matches!(
            Dmar::parse(&table(b"DMAR", 1, &[38, 0])),
            Err(TableError::BadLength { length: 38 })
        ));
        assert!(matches!(
            Dmar::parse(&table(b"APIC", 1, &[0; 12])),
            Err(TableError::BadSignature { .. })
        ));
        let mut bad = t.clone();
        bad[9] = bad[9].wrapping_add(1);
        let d = Dmar::parse(&bad).expect("kept");
        assert_eq!(d.warnings, vec![String::from("bad checksum (kept)")]);
        assert_eq!(d.units.len(), 2);
        let d =
            Dmar::parse(&dmar(1, 0xff, 0, &[drhd_bytes(1, 0, 0, 0x1000, &[])])).expect("parses");
        assert_eq!(d.address_width, 0xff);
        assert!(d.warnings[0].contains("beyond 64 bits"));
    }

    #[test]
    fn counts_are_capped() {
        // 70 units, an RMRR with 300 scopes (24 + 300 * 6 bytes: a length that fits in the
        // 16-bit field), then 300 more RMRRs.
        let mut structures = Vec::new();
        for i in 0..70u64 {
            structures.push(drhd_bytes(0, 0, 0, 0x1_0000_0000 + (i << 12), &[]));
        }
        let many: Vec<Vec<u8>> = (0..300u16).map(|i| scope(1, 0, i as u8, &[])).collect();
        structures.push(rmrr_bytes(0, 0x1000, 0x1fff, &many[..]));
        for _ in 0..300 {
            structures.push(rmrr_bytes(0, 0x1000, 0x1fff, &[]));
        }
        let d = Dmar::parse(&dmar(1, 38, 0, &structures)).expect("parses");
        assert_eq!(d.units.len(), MAX_UNITS);
        assert_eq!(d.reserved.len(), MAX_RMRRS);
        assert_eq!(d.reserved[0].scopes.len(), MAX_SCOPES);
        assert_eq!(d.warnings.len(), 3, "{:?}", d.warnings);
        // Unknown types by the thousand: warnings stop at the cap.
        let unknown = vec![vec![0x30, 0, 4, 0]; 5000];
        let d = Dmar::parse(&dmar(1, 38, 0, &unknown)).expect("parses");
        assert_eq!(d.warnings.len(), MAX_WARNINGS);
        assert!(d.warnings[MAX_WARNINGS - 1].contains("not recorded"));
    }

    #[test]
    fn never_panics_on_mutations() {
        let seed = valid();
        let mut rng = Rng(0x5eed_d4a2_0bad_cafe);
        for i in 0..20_000 {
            let input = if i % 4 == 0 {
                rng.noise(b"DMAR")
            } else {
                rng.mutate(&seed)
            };
            let _ = Dmar::parse(&input);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// Arbitrary bytes after a DMAR header whose length field is right: the walk meets
        /// every kind of structure and scope length, and stays within its caps.
        #[test]
        fn never_panics_on_arbitrary_bodies(
            revision in 0u8..4,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        ) {
            if let Ok(d) = Dmar::parse(&table(b"DMAR", revision, &body)) {
                proptest::prop_assert!(d.units.len() <= MAX_UNITS);
                proptest::prop_assert!(d.reserved.len() <= MAX_RMRRS);
                proptest::prop_assert!(d.warnings.len() <= MAX_WARNINGS);
                for u in &d.units {
                    proptest::prop_assert!(u.register_base != 0 && u.register_base & PAGE_MASK == 0);
                }
                for r in &d.reserved {
                    proptest::prop_assert!(r.base <= r.limit);
                }
            }
        }

        /// Whatever bytes at all.
        #[test]
        fn never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let _ = Dmar::parse(&bytes);
        }

        /// The valid table with bytes overwritten, then cut or extended.
        #[test]
        fn never_panics_on_mutated_tables(
            edits in proptest::collection::vec(
                (0usize..512, proptest::prelude::any::<u8>()), 1..12),
            cut in proptest::option::of(0usize..512),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            fix in proptest::prelude::any::<bool>(),
        ) {
            let mut t = valid();
            t.extend_from_slice(&tail);
            let len = t.len();
            for (at, byte) in edits {
                t[at % len] = byte;
            }
            if let Some(c) = cut {
                t.truncate(c);
            }
            if fix {
                crate::tables::testutil::fix_checksum(&mut t, 9);
            }
            let _ = Dmar::parse(&t);
        }
    }
}
