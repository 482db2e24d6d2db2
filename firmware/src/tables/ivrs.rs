//! The I/O Virtualization Reporting Structure, signature `IVRS` (AMD I/O Virtualization
//! Technology (IOMMU) Specification, doc 48882 rev 3.x, §5.2).
//!
//! Design: on AMD machines the IOMMU is itself a PCI function (it has a device ID, and a
//! capability in its configuration space), and each one translates the DMA of the devices
//! firmware assigns it. The IVRS is AMD's counterpart of Intel's DMAR (see
//! [`super::dmar`]): where each IOMMU's registers are, which requester IDs ("device IDs",
//! bus << 8 | device << 3 | function) it translates for and with which settings, which I/O
//! APICs and HPETs send their interrupts through it, and which memory firmware keeps using
//! for DMA (the IVMDs).
//!
//! The table is the 36-byte header, IVinfo (4 bytes), 8 reserved bytes, then I/O
//! virtualization definition blocks (IVDBs, §5.2.2), each `type (1 byte), flags (1 byte),
//! length (2 bytes), ...`:
//!
//! - IVHD (hardware definition, types 10h, 11h, 40h; §5.2.2.1): one IOMMU, then device
//!   entries up to the block's length (§5.2.2.2). Firmware usually describes every IOMMU
//!   once per type it supports (10h for old OSes, 11h and 40h for newer ones); an OS uses one
//!   of them, and [`Ivrs::iommus`] picks it.
//! - IVMD (memory definition, types 20h, 21h, 22h; §5.2.2.3): a memory range that some or
//!   all devices use, mapped one to one ("unity") or left untranslated ("exclusion").
//!
//! As in the DMAR, a block length is trusted only as far as the table goes: a block shorter
//! than its 4-byte header, or running past the table, stops the walk (nothing after it can
//! be located); a block too short for its fixed part is skipped. Device entries are walked
//! inside their block the same way (the entry's type says its size; see
//! [`devices`] for the rules). Counts are capped ([`MAX_UNITS`], [`MAX_RANGES`],
//! [`MAX_SPECIALS`], [`MAX_MEMORY`], [`MAX_ERRORS`]), so a hostile table cannot make the
//! parse allocate without bound. Everything skipped, dropped or capped is said in
//! [`Ivrs::errors`].
//!
//! [`Ivrs::io_apic_sources`] gives interrupt remapping's view of the MADT's I/O APICs: the
//! requester ID each one's messages carry, or why they are not all covered.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::bytes::{u8_at, u16_at, u32_at, u64_at};
use super::{HEADER_LEN, Table, TableError};

pub mod devices;
mod ioapics;

pub use ioapics::{IoApicSource, parse_overrides};

/// Offset of IVinfo (§5.2.1, IVRS header).
const IVINFO: usize = HEADER_LEN;
/// Offset of the first IVDB: header, IVinfo, 8 reserved bytes (§5.2.1).
pub const BLOCKS_AT: usize = HEADER_LEN + 12;

// IVDB types (§5.2.2).
/// IVHD type 10h: the original hardware definition, 24-byte fixed part (§5.2.2.1).
pub const TYPE_IVHD_10: u8 = 0x10;
/// IVHD type 11h: adds the EFR register image, 40-byte fixed part (§5.2.2.1).
pub const TYPE_IVHD_11: u8 = 0x11;
/// IVHD type 40h: as 11h, and its device entries may include ACPI HID devices (§5.2.2.1).
pub const TYPE_IVHD_40: u8 = 0x40;
/// IVMD type 20h: memory used by every peripheral (§5.2.2.3).
pub const TYPE_IVMD_ALL: u8 = 0x20;
/// IVMD type 21h: memory used by the one peripheral named (§5.2.2.3).
pub const TYPE_IVMD_SELECT: u8 = 0x21;
/// IVMD type 22h: memory used by a range of peripherals (§5.2.2.3).
pub const TYPE_IVMD_RANGE: u8 = 0x22;

/// Every IVDB starts with type, flags and length (§5.2.2).
const BLOCK_HEADER_LEN: usize = 4;
/// Fixed part of an IVHD of type 10h (§5.2.2.1).
const IVHD_10_LEN: usize = 24;
/// Fixed part of an IVHD of types 11h and 40h (§5.2.2.1).
const IVHD_11_LEN: usize = 40;
/// An IVMD is 32 bytes (§5.2.2.3).
const IVMD_LEN: usize = 32;

/// IVMD flags bit 0: map the range one to one for the devices named (§5.2.2.3).
pub const IVMD_UNITY: u8 = 1;
/// IVMD flags bit 1: the devices may read the range (IR) (§5.2.2.3).
pub const IVMD_READ: u8 = 1 << 1;
/// IVMD flags bit 2: the devices may write the range (IW) (§5.2.2.3).
pub const IVMD_WRITE: u8 = 1 << 2;
/// IVMD flags bit 3: the range is an exclusion range, not translated at all (§5.2.2.3).
pub const IVMD_EXCLUSION: u8 = 1 << 3;

/// Most IVHDs kept (a large server has a few per socket, each once per IVHD type).
pub const MAX_UNITS: usize = 64;
/// Most device ranges kept per IVHD.
pub const MAX_RANGES: usize = 4096;
/// Most special devices (I/O APICs, HPETs) kept per IVHD.
pub const MAX_SPECIALS: usize = 256;
/// Most IVMDs kept.
pub const MAX_MEMORY: usize = 256;
/// Most errors recorded (the last one says that more were left out).
pub const MAX_ERRORS: usize = 64;

/// Requester IDs an IOMMU translates for, with the settings firmware gives their device
/// table entries (IVHD device entries 01h-04h, 42h, 43h, 46h, 47h; §5.2.2.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRange {
    /// First requester ID (bus << 8 | device << 3 | function).
    pub first: u16,
    /// Last requester ID, inclusive (equal to `first` for a single device).
    pub last: u16,
    /// The DTE setting byte: bit 0 INITPass, bit 1 EIntPass, bit 2 NMIPass, bits 5:4
    /// SysMgt, bit 6 Lint0Pass, bit 7 Lint1Pass (§5.2.2.2).
    pub settings: u8,
    /// The requester ID their requests carry instead of their own (alias entries 42h and
    /// 43h: devices behind a PCIe-to-PCI bridge, whose requests the bridge takes over). The
    /// IOMMU looks up the alias's device table entry for them.
    pub alias: Option<u16>,
}

/// What a special device entry (48h) names (§5.2.2.2, "Variety").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecialKind {
    /// 1: an I/O APIC (handle = its I/O APIC ID, as in the MADT).
    IoApic,
    /// 2: an HPET (handle = its HPET number, as in the HPET table).
    Hpet,
    /// Any other value (reserved).
    Other(u8),
}

impl SpecialKind {
    fn from_variety(v: u8) -> Self {
        match v {
            1 => Self::IoApic,
            2 => Self::Hpet,
            n => Self::Other(n),
        }
    }
}

/// A device that is not found by enumerating PCI but whose interrupts pass through the
/// IOMMU (special device entry 48h, §5.2.2.2): which requester ID its interrupt messages
/// carry, which interrupt remapping must know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Special {
    /// I/O APIC or HPET.
    pub kind: SpecialKind,
    /// The I/O APIC ID (MADT) or HPET number it is known by.
    pub handle: u8,
    /// The requester ID its messages carry.
    pub source: u16,
    /// The DTE setting byte, as in [`DeviceRange::settings`].
    pub settings: u8,
}

/// An IOMMU (IVHD, §5.2.2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ivhd {
    /// The IVHD type: 10h, 11h or 40h.
    pub kind: u8,
    /// The block's flags byte (HtTunEn, PassPW, ResPassPW, Isoc, IotlbSup, Coherent; 10h
    /// also PreFSup and PPRSup).
    pub flags: u8,
    /// The IOMMU's own requester ID (its PCI function).
    pub device_id: u16,
    /// Offset of the IOMMU's capability block in that function's configuration space.
    pub capability_offset: u16,
    /// Physical address of its registers (never 0 here).
    pub base: u64,
    /// The PCI segment group of the IOMMU and of the devices it translates for.
    pub segment: u16,
    /// IOMMU info: bits 4:0 the MSI number of its event log, bits 12:8 its HyperTransport
    /// unit ID.
    pub info: u16,
    /// Type 10h: IOMMU feature reporting. Types 11h and 40h: IOMMU attributes.
    pub features: u32,
    /// The Extended Feature Register as firmware read it (types 11h and 40h only).
    pub efr: Option<u64>,
    /// The requester IDs it translates for, in table order.
    pub devices: Vec<DeviceRange>,
    /// The I/O APICs and HPETs whose interrupts it remaps, in table order.
    pub specials: Vec<Special>,
}

/// A memory range devices use that their translation must respect (IVMD, §5.2.2.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ivmd {
    /// The IVMD type: 20h (every device), 21h (one device), 22h (a range of devices).
    pub kind: u8,
    /// Flags: bit 0 unity, bit 1 IR, bit 2 IW, bit 3 exclusion range.
    pub flags: u8,
    /// First requester ID it applies to (20h: 0).
    pub first: u16,
    /// Last requester ID it applies to, inclusive (20h: FFFFh; 21h: `first`).
    pub last: u16,
    /// First byte of the range.
    pub start: u64,
    /// Its length in bytes.
    pub length: u64,
}

impl Ivmd {
    /// Whether the range is to be mapped one to one (flags bit 0).
    pub fn unity(&self) -> bool {
        self.flags & IVMD_UNITY != 0
    }

    /// Whether the devices may read it (flags bit 1, IR).
    pub fn readable(&self) -> bool {
        self.flags & IVMD_READ != 0
    }

    /// Whether the devices may write it (flags bit 2, IW).
    pub fn writable(&self) -> bool {
        self.flags & IVMD_WRITE != 0
    }

    /// Whether the range is an exclusion range: accesses to it are not translated (flags
    /// bit 3).
    pub fn exclusion(&self) -> bool {
        self.flags & IVMD_EXCLUSION != 0
    }

    /// Whether it applies to requester ID `id`.
    pub fn applies_to(&self, id: u16) -> bool {
        (self.first..=self.last).contains(&id)
    }

    /// The last byte of the range (`None` for a range of length 0).
    pub fn end(&self) -> Option<u64> {
        self.length
            .checked_sub(1)
            .and_then(|l| self.start.checked_add(l))
    }
}

/// The IVRS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ivrs {
    /// IVinfo (§5.2.1): bit 22 `HtAtsResv`, bits 21:15 the virtual address size, bits
    /// 14:8 the physical address size, bits 7:5 the guest virtual address size (encoded),
    /// bit 1 DMA remapping support (firmware protected DMA before the OS came), bit 0
    /// `EFRSup` (the IVHDs of type 11h/40h carry an EFR image). A typical value, 00203043h:
    /// 64-bit virtual, 48-bit physical addresses.
    pub info: u32,
    /// The IVHDs, in table order (several per IOMMU when firmware describes it once per
    /// type; see [`Ivrs::iommus`]).
    pub units: Vec<Ivhd>,
    /// The IVMDs, in table order.
    pub memory: Vec<Ivmd>,
    /// Whether the table's bytes sum to zero (it is parsed anyway).
    pub checksum_ok: bool,
    /// Problems that did not stop the parse (a truncated or unknown block or entry
    /// skipped, a range without an end, ...).
    pub errors: Vec<String>,
}

/// A bounded list of errors: past [`MAX_ERRORS`] nothing more is formatted or kept.
struct Errors(Vec<String>);

impl Errors {
    fn push(&mut self, message: impl FnOnce() -> String) {
        let n = self.0.len();
        if n + 1 < MAX_ERRORS {
            self.0.push(message());
        } else if n + 1 == MAX_ERRORS {
            self.0.push("further errors not recorded".into());
        }
    }
}

/// Whether `kind` is an IVHD type this parser reads, and its rank when firmware describes
/// one IOMMU with several (the higher, the newer).
fn ivhd_rank(kind: u8) -> Option<u8> {
    match kind {
        TYPE_IVHD_10 => Some(1),
        TYPE_IVHD_11 => Some(2),
        TYPE_IVHD_40 => Some(3),
        _ => None,
    }
}

impl Ivrs {
    /// Parses an IVRS: the whole table, its 36-byte header included.
    pub fn parse(table: &[u8]) -> Result<Ivrs, TableError> {
        let t = Table::parse(table, "IVRS", BLOCKS_AT)?;
        let b = t.bytes;
        let mut e = Errors(Vec::new());
        let mut ivrs = Ivrs {
            info: u32_at(b, IVINFO).unwrap_or_default(),
            units: Vec::new(),
            memory: Vec::new(),
            checksum_ok: t.checksum_ok,
            errors: Vec::new(),
        };
        let mut off = BLOCKS_AT;
        let mut index = 0usize;
        let (mut units_capped, mut memory_capped) = (false, false);
        while off < b.len() {
            let (Some(ty), Some(len)) = (u8_at(b, off), u16_at(b, off.saturating_add(2))) else {
                e.push(|| {
                    format!(
                        "block {index} at {off:#x}: {} stray bytes at the end: walk stopped",
                        b.len() - off
                    )
                });
                break;
            };
            let len = usize::from(len);
            let Some(s) = off
                .checked_add(len)
                .filter(|_| len >= BLOCK_HEADER_LEN)
                .and_then(|end| b.get(off..end))
            else {
                e.push(|| {
                    format!(
                        "block {index} at {off:#x} (type {ty:#04x}): length {len} {}: walk \
                         stopped",
                        if len < BLOCK_HEADER_LEN {
                            "is impossible"
                        } else {
                            "runs past the end"
                        }
                    )
                });
                break;
            };
            let at = || format!("block {index} at {off:#x}");
            match ty {
                _ if ivhd_rank(ty).is_some() && ivrs.units.len() >= MAX_UNITS => {
                    if !units_capped {
                        units_capped = true;
                        e.push(|| {
                            format!("{}: more than {MAX_UNITS} IVHDs: the rest ignored", at())
                        });
                    }
                }
                _ if ivhd_rank(ty).is_some() => {
                    if let Some(unit) = ivhd(s, &at, &mut e) {
                        ivrs.units.push(unit);
                    }
                }
                TYPE_IVMD_ALL | TYPE_IVMD_SELECT | TYPE_IVMD_RANGE
                    if ivrs.memory.len() >= MAX_MEMORY =>
                {
                    if !memory_capped {
                        memory_capped = true;
                        e.push(|| {
                            format!("{}: more than {MAX_MEMORY} IVMDs: the rest ignored", at())
                        });
                    }
                }
                TYPE_IVMD_ALL | TYPE_IVMD_SELECT | TYPE_IVMD_RANGE => {
                    if let Some(m) = ivmd(s, &at, &mut e) {
                        ivrs.memory.push(m);
                    }
                }
                _ => e.push(|| format!("{} (type {ty:#04x}): unknown type: skipped", at())),
            }
            off = off.saturating_add(s.len());
            index = index.saturating_add(1);
        }
        ivrs.errors = e.0;
        Ok(ivrs)
    }

    /// One IVHD per IOMMU: where firmware describes the same IOMMU (same segment, device ID
    /// and base) with several IVHD types, the highest type this parser understands
    /// (40h > 11h > 10h), as Linux picks one. In the order each IOMMU first appears.
    pub fn iommus(&self) -> Vec<&Ivhd> {
        let mut out: Vec<&Ivhd> = Vec::new();
        for u in &self.units {
            let same = |o: &&Ivhd| {
                o.segment == u.segment && o.device_id == u.device_id && o.base == u.base
            };
            match out.iter_mut().find(|o| same(o)) {
                Some(o) => {
                    if ivhd_rank(u.kind) > ivhd_rank(o.kind) {
                        *o = u;
                    }
                }
                None => out.push(u),
            }
        }
        out
    }
}

/// Reads an IVHD block `s` (its whole length); `None` when it cannot be used.
fn ivhd(s: &[u8], at: &dyn Fn() -> String, e: &mut Errors) -> Option<Ivhd> {
    let kind = u8_at(s, 0)?;
    let fixed = if kind == TYPE_IVHD_10 {
        IVHD_10_LEN
    } else {
        IVHD_11_LEN
    };
    let fields = (
        u8_at(s, 1),
        u16_at(s, 4),
        u16_at(s, 6),
        u64_at(s, 8),
        u16_at(s, 16),
        u16_at(s, 18),
        u32_at(s, 20),
    );
    let (
        Some(flags),
        Some(device_id),
        Some(capability_offset),
        Some(base),
        Some(segment),
        Some(info),
        Some(features),
    ) = fields
    else {
        e.push(|| {
            format!(
                "{} (IVHD {kind:#04x}): length {} is below the {fixed} bytes of its fixed part: \
                 skipped",
                at(),
                s.len()
            )
        });
        return None;
    };
    let efr = if kind == TYPE_IVHD_10 {
        None
    } else {
        match u64_at(s, 24).filter(|_| s.len() >= IVHD_11_LEN) {
            Some(efr) => Some(efr),
            None => {
                e.push(|| {
                    format!(
                        "{} (IVHD {kind:#04x}): length {} is below the {fixed} bytes of its \
                         fixed part: skipped",
                        at(),
                        s.len()
                    )
                });
                return None;
            }
        }
    };
    if base == 0 {
        e.push(|| {
            format!(
                "{} (IVHD {kind:#04x}, device {device_id:#06x}): register base is zero: dropped",
                at()
            )
        });
        return None;
    }
    let what = || format!("{} (IVHD {kind:#04x}, device {device_id:#06x})", at());
    let (devices, specials) = devices::walk(s.get(fixed..).unwrap_or_default(), fixed, &what, e);
    Some(Ivhd {
        kind,
        flags,
        device_id,
        capability_offset,
        base,
        segment,
        info,
        features,
        efr,
        devices,
        specials,
    })
}

/// Reads an IVMD block `s`; `None` when it cannot be used.
fn ivmd(s: &[u8], at: &dyn Fn() -> String, e: &mut Errors) -> Option<Ivmd> {
    let kind = u8_at(s, 0)?;
    let fields = (
        u8_at(s, 1),
        u16_at(s, 4),
        u16_at(s, 6),
        u64_at(s, 16),
        u64_at(s, 24),
    );
    let (Some(flags), Some(device), Some(aux), Some(start), Some(length)) = fields else {
        e.push(|| {
            format!(
                "{} (IVMD {kind:#04x}): length {} is below {IVMD_LEN}: skipped",
                at(),
                s.len()
            )
        });
        return None;
    };
    let (first, last) = match kind {
        TYPE_IVMD_ALL => (0, u16::MAX),
        TYPE_IVMD_SELECT => (device, device),
        _ => (device, aux),
    };
    if last < first {
        e.push(|| {
            format!(
                "{} (IVMD {kind:#04x}): device range {first:#06x}..={last:#06x} is empty: skipped",
                at()
            )
        });
        return None;
    }
    if length != 0 && start.checked_add(length - 1).is_none() {
        e.push(|| {
            format!(
                "{} (IVMD {kind:#04x}): range {start:#x} + {length:#x} wraps past 2^64: skipped",
                at()
            )
        });
        return None;
    }
    Some(Ivmd {
        kind,
        flags,
        first,
        last,
        start,
        length,
    })
}

#[cfg(test)]
mod tests;
