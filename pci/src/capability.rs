//! Capability lists: the legacy list in the first 256 bytes (PCI Local Bus 3.0 §6.7) and the
//! PCI Express extended list from 0x100 (PCIe Base 6.0 §7.6), plus what MSI (§6.8.1) and
//! MSI-X (§6.8.2) capabilities say.
//!
//! Both walks are bounded and loop-proof whatever the device returns: a visited set of
//! dword slots, an entry limit (48 legacy entries fit between 0x40 and 0xFF, 960 extended
//! ones between 0x100 and 0xFFF), and pointer checks. A bad pointer ends the walk with an
//! error and keeps what was found before it. One read per capability: MSI's Message Control
//! is in the header dword; MSI-X costs two more (table and PBA locations).

use alloc::vec::Vec;
use core::fmt;

use pci_types::ConfigRegionAccess;

use crate::bar::{Bar, BarKind};
use crate::enumerate::{Abort, Reader, ScanErrorKind};

/// Legacy capability IDs (PCI Code and ID Assignment 1.11 §2).
pub mod id {
    /// Power Management.
    pub const POWER_MANAGEMENT: u8 = 0x01;
    /// AGP.
    pub const AGP: u8 = 0x02;
    /// Vital Product Data.
    pub const VPD: u8 = 0x03;
    /// Slot identification.
    pub const SLOT_ID: u8 = 0x04;
    /// Message Signalled Interrupts.
    pub const MSI: u8 = 0x05;
    /// PCI-X.
    pub const PCI_X: u8 = 0x07;
    /// HyperTransport.
    pub const HYPERTRANSPORT: u8 = 0x08;
    /// Vendor specific (virtio uses these for its structures).
    pub const VENDOR: u8 = 0x09;
    /// PCI hot-plug.
    pub const HOTPLUG: u8 = 0x0c;
    /// Bridge subsystem vendor ID.
    pub const BRIDGE_SUBSYSTEM: u8 = 0x0d;
    /// PCI Express.
    pub const PCI_EXPRESS: u8 = 0x10;
    /// MSI-X.
    pub const MSIX: u8 = 0x11;
    /// SATA data/index configuration.
    pub const SATA: u8 = 0x12;
    /// Advanced features.
    pub const AF: u8 = 0x13;
    /// Enhanced Allocation.
    pub const EA: u8 = 0x14;
}

/// Extended capability IDs (PCI Code and ID Assignment 1.11 §3).
pub mod ext_id {
    /// Advanced Error Reporting.
    pub const AER: u16 = 0x0001;
    /// Virtual Channel.
    pub const VC: u16 = 0x0002;
    /// Device serial number.
    pub const SERIAL_NUMBER: u16 = 0x0003;
    /// Access Control Services.
    pub const ACS: u16 = 0x000d;
    /// Alternative Routing-ID Interpretation.
    pub const ARI: u16 = 0x000e;
    /// Address Translation Services.
    pub const ATS: u16 = 0x000f;
    /// Single Root I/O Virtualization.
    pub const SRIOV: u16 = 0x0010;
    /// Resizable BAR.
    pub const RESIZABLE_BAR: u16 = 0x0015;
    /// Downstream Port Containment (PCIe Base 6.0 §7.9.14).
    pub const DPC: u16 = 0x001d;
    /// Multicast (PCIe Base 6.0 §7.9.11).
    pub const MULTICAST: u16 = 0x0012;
    /// Secondary PCI Express.
    pub const SECONDARY_PCIE: u16 = 0x0019;
    /// VF Resizable BAR (PCIe Base 6.0 §7.8.7).
    pub const VF_RESIZABLE_BAR: u16 = 0x0024;
    /// Vendor-Specific Extended Capability (PCIe Base 6.0 §7.9.5).
    pub const VSEC: u16 = 0x000b;
    /// Designated Vendor-Specific Extended Capability (PCIe Base 6.0 §7.9.6).
    pub const DVSEC: u16 = 0x0023;
}

/// A legacy capability: ID and offset of its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Capability {
    /// Capability ID (see [`id`]).
    pub id: u8,
    /// Offset of the capability header, 0x40..=0xFC.
    pub offset: u8,
}

/// A PCI Express extended capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExtendedCapability {
    /// Capability ID (see [`ext_id`]).
    pub id: u16,
    /// Capability version (header bits 16-19).
    pub version: u8,
    /// Offset of the header, 0x100..=0xFFC.
    pub offset: u16,
}

/// What an MSI capability offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Msi {
    /// Offset of the capability.
    pub offset: u8,
    /// Multiple Message Capable: how many vectors the function can use, 1..=32.
    pub vectors: u8,
    /// 64-bit message address.
    pub is_64bit: bool,
    /// Per-vector masking (Mask and Pending registers).
    pub per_vector_masking: bool,
}

/// What an MSI-X capability offers: the table and PBA locations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Msix {
    /// Offset of the capability.
    pub offset: u8,
    /// Number of table entries: Message Control bits 0-10, plus one (1..=2048).
    pub table_size: u16,
    /// BAR holding the table (BIR, 0..=5).
    pub table_bir: u8,
    /// Byte offset of the table in that BAR (8-byte aligned).
    pub table_offset: u32,
    /// BAR holding the Pending Bit Array.
    pub pba_bir: u8,
    /// Byte offset of the PBA in that BAR.
    pub pba_offset: u32,
}

/// A problem in a capability list (the walk stops, except for a misaligned legacy pointer,
/// which is masked and followed as PCI 3.0 §6.7 says).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapabilityError {
    /// The pointer's low two bits are set.
    Misaligned {
        /// Where the pointer was read (0x34, a capability's offset + 1, or for the extended
        /// list the header holding it).
        at: u16,
        /// The pointer.
        pointer: u16,
    },
    /// The pointer is below the capability area (0x40 legacy, 0x100 extended).
    IntoHeader {
        /// Where the pointer was read.
        at: u16,
        /// The pointer.
        pointer: u16,
        /// Lowest valid pointer.
        min: u16,
    },
    /// The pointer is past the last dword of the space (0xFFC for the extended list).
    PastEnd {
        /// Where the pointer was read.
        at: u16,
        /// The pointer.
        pointer: u16,
        /// Highest valid pointer.
        max: u16,
    },
    /// The pointer leads back to a capability already seen.
    Loop {
        /// Where the pointer was read.
        at: u16,
        /// The pointer.
        pointer: u16,
    },
    /// More entries than fit in the space.
    TooMany {
        /// Entries read.
        limit: u16,
    },
    /// The capability's registers run past the end of the 256-byte space.
    Truncated {
        /// Capability ID.
        id: u8,
        /// Its offset.
        offset: u8,
        /// Bytes it needs.
        length: u8,
    },
    /// MSI Multiple Message Capable holds a reserved encoding (6 or 7).
    MsiReservedVectorCount {
        /// Capability offset.
        offset: u8,
        /// The 3-bit field.
        encoding: u8,
    },
    /// The MSI-X table's BIR is not an implemented memory BAR (or is reserved: 6, 7).
    MsixTableBir {
        /// Capability offset.
        offset: u8,
        /// The BIR.
        bir: u8,
    },
    /// The MSI-X PBA's BIR is not an implemented memory BAR (or is reserved: 6, 7).
    MsixPbaBir {
        /// Capability offset.
        offset: u8,
        /// The BIR.
        bir: u8,
    },
}

impl fmt::Display for CapabilityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CapabilityError::Misaligned { at, pointer } => {
                write!(
                    f,
                    "pointer {pointer:#x} at {at:#x} has its low two bits set"
                )
            }
            CapabilityError::IntoHeader { at, pointer, min } => {
                write!(
                    f,
                    "pointer {pointer:#x} at {at:#x} is below {min:#x} (into the header)"
                )
            }
            CapabilityError::PastEnd { at, pointer, max } => {
                write!(f, "pointer {pointer:#x} at {at:#x} is past {max:#x}")
            }
            CapabilityError::Loop { at, pointer } => {
                write!(
                    f,
                    "pointer {pointer:#x} at {at:#x} loops back to a visited capability"
                )
            }
            CapabilityError::TooMany { limit } => write!(f, "more than {limit} entries"),
            CapabilityError::Truncated { id, offset, length } => write!(
                f,
                "capability {id:#04x} at {offset:#x} needs {length} bytes and runs past 0xff"
            ),
            CapabilityError::MsiReservedVectorCount { offset, encoding } => write!(
                f,
                "MSI at {offset:#x} has the reserved Multiple Message Capable encoding {encoding}"
            ),
            CapabilityError::MsixTableBir { offset, bir } => write!(
                f,
                "MSI-X at {offset:#x} puts its table in BIR {bir}, not an implemented memory BAR"
            ),
            CapabilityError::MsixPbaBir { offset, bir } => write!(
                f,
                "MSI-X at {offset:#x} puts its PBA in BIR {bir}, not an implemented memory BAR"
            ),
        }
    }
}

/// What the legacy walk found.
#[derive(Default)]
pub(crate) struct Legacy {
    pub(crate) capabilities: Vec<Capability>,
    pub(crate) msi: Option<Msi>,
    pub(crate) msix: Option<Msix>,
    pub(crate) pcie_flags: Option<u16>,
}

const LEGACY_LIMIT: u16 = 48;

/// The bytes a PCI Express capability with this PCI Express Capabilities register holds
/// (PCIe Base 6.0 §7.5.3): from version 2 the whole 3Ch-byte structure; in version 1 only
/// the registers the function has: through Link Status (14h), through Slot Status (1Ch)
/// with Slot Implemented (bit 8), through Root Status (24h) for a Root Port or a Root
/// Complex Event Collector (port types 4 and Ah).
pub(crate) fn pcie_capability_length(flags: u16) -> u8 {
    if flags & 0xf >= 2 {
        return 0x3c;
    }
    match (flags >> 4) & 0xf {
        0x4 | 0xa => 0x24,
        _ if flags & (1 << 8) != 0 => 0x1c,
        _ => 0x14,
    }
}
const EXTENDED_LIMIT: u16 = (4096 - 256) / 4;

/// Walks the legacy list starting from `pointer` (the byte at 0x34).
pub(crate) fn walk_legacy<A: ConfigRegionAccess>(
    r: &Reader<'_, '_, A>,
    pointer: u8,
    bars: &[Option<Bar>; 6],
    errors: &mut Vec<ScanErrorKind>,
) -> Result<Legacy, Abort> {
    let mut found = Legacy::default();
    let mut visited = 0u64; // one bit per dword of the 256-byte space
    let mut at: u16 = 0x34;
    let mut pointer = pointer;
    let mut entries = 0;
    loop {
        let err = |e: CapabilityError| ScanErrorKind::Capability(e);
        if pointer & 0b11 != 0 {
            errors.push(err(CapabilityError::Misaligned {
                at,
                pointer: pointer.into(),
            }));
            pointer &= 0xfc;
        }
        if pointer == 0 {
            break;
        }
        if pointer < 0x40 {
            errors.push(err(CapabilityError::IntoHeader {
                at,
                pointer: pointer.into(),
                min: 0x40,
            }));
            break;
        }
        let bit = 1u64 << (pointer / 4);
        if visited & bit != 0 {
            errors.push(err(CapabilityError::Loop {
                at,
                pointer: pointer.into(),
            }));
            break;
        }
        if entries == LEGACY_LIMIT {
            errors.push(err(CapabilityError::TooMany {
                limit: LEGACY_LIMIT,
            }));
            break;
        }
        visited |= bit;
        entries += 1;
        let header = r.read(pointer.into())?;
        let cap = Capability {
            id: header as u8,
            offset: pointer,
        };
        found.capabilities.push(cap);
        let control = (header >> 16) as u16;
        match cap.id {
            id::MSI if found.msi.is_none() => found.msi = msi(cap.offset, control, errors),
            id::MSIX if found.msix.is_none() => {
                found.msix = msix(r, cap.offset, control, bars, errors)?;
            }
            id::PCI_EXPRESS if found.pcie_flags.is_none() => {
                let length = pcie_capability_length(control);
                if usize::from(cap.offset) + usize::from(length) > 256 {
                    errors.push(ScanErrorKind::Capability(CapabilityError::Truncated {
                        id: id::PCI_EXPRESS,
                        offset: cap.offset,
                        length,
                    }));
                } else {
                    found.pcie_flags = Some(control);
                }
            }
            _ => {}
        }
        at = u16::from(pointer) + 1;
        pointer = (header >> 8) as u8;
    }
    Ok(found)
}

fn msi(offset: u8, control: u16, errors: &mut Vec<ScanErrorKind>) -> Option<Msi> {
    let encoding = ((control >> 1) & 0b111) as u8;
    if encoding > 5 {
        errors.push(ScanErrorKind::Capability(
            CapabilityError::MsiReservedVectorCount { offset, encoding },
        ));
        return None;
    }
    let is_64bit = control & (1 << 7) != 0;
    let per_vector_masking = control & (1 << 8) != 0;
    let length: u8 = match (is_64bit, per_vector_masking) {
        (false, false) => 0x0a,
        (true, false) => 0x0e,
        (false, true) => 0x14,
        (true, true) => 0x18,
    };
    if usize::from(offset) + usize::from(length) > 256 {
        errors.push(ScanErrorKind::Capability(CapabilityError::Truncated {
            id: id::MSI,
            offset,
            length,
        }));
        return None;
    }
    Some(Msi {
        offset,
        vectors: 1 << encoding,
        is_64bit,
        per_vector_masking,
    })
}

fn msix<A: ConfigRegionAccess>(
    r: &Reader<'_, '_, A>,
    offset: u8,
    control: u16,
    bars: &[Option<Bar>; 6],
    errors: &mut Vec<ScanErrorKind>,
) -> Result<Option<Msix>, Abort> {
    let err = |e: CapabilityError| ScanErrorKind::Capability(e);
    if usize::from(offset) + 12 > 256 {
        errors.push(err(CapabilityError::Truncated {
            id: id::MSIX,
            offset,
            length: 12,
        }));
        return Ok(None);
    }
    // BIR 7 in both makes an all-ones dword invalid: `read` checks presence.
    let table = r.read(u16::from(offset) + 4)?;
    let pba = r.read(u16::from(offset) + 8)?;
    let is_memory_bar =
        |bir: u8| matches!(bars.get(usize::from(bir)), Some(Some(b)) if b.kind != BarKind::Io);
    let (table_bir, pba_bir) = ((table & 0b111) as u8, (pba & 0b111) as u8);
    let mut ok = true;
    if !is_memory_bar(table_bir) {
        errors.push(err(CapabilityError::MsixTableBir {
            offset,
            bir: table_bir,
        }));
        ok = false;
    }
    if !is_memory_bar(pba_bir) {
        errors.push(err(CapabilityError::MsixPbaBir {
            offset,
            bir: pba_bir,
        }));
        ok = false;
    }
    Ok(ok.then_some(Msix {
        offset,
        table_size: (control & 0x7ff) + 1,
        table_bir,
        table_offset: table & !0b111,
        pba_bir,
        pba_offset: pba & !0b111,
    }))
}

/// Walks the extended list from 0x100 (only for PCI Express functions behind ECAM).
pub(crate) fn walk_extended<A: ConfigRegionAccess>(
    r: &Reader<'_, '_, A>,
    errors: &mut Vec<ScanErrorKind>,
) -> Result<Vec<ExtendedCapability>, Abort> {
    let mut found = Vec::new();
    // Zero: an empty list (PCIe Base 6.0 §7.6.3). All ones: no extended space reachable
    // (a host bridge that does not forward it), or the function vanished: `read` checks.
    let mut header = r.read(0x100)?;
    if header == 0 || header == !0 {
        return Ok(found);
    }
    let err = |e: CapabilityError| ScanErrorKind::ExtendedCapability(e);
    let mut visited = [0u64; 16]; // one bit per dword of the 4 KiB space
    let mut offset: u16 = 0x100;
    loop {
        visited[usize::from(offset / 4 / 64)] |= 1 << (offset / 4 % 64);
        found.push(ExtendedCapability {
            id: header as u16,
            version: ((header >> 16) & 0xf) as u8,
            offset,
        });
        let next = (header >> 20) as u16;
        if next == 0 {
            break;
        }
        if next < 0x100 {
            errors.push(err(CapabilityError::IntoHeader {
                at: offset,
                pointer: next,
                min: 0x100,
            }));
            break;
        }
        if next > 0xffc {
            errors.push(err(CapabilityError::PastEnd {
                at: offset,
                pointer: next,
                max: 0xffc,
            }));
            break;
        }
        if next & 0b11 != 0 {
            errors.push(err(CapabilityError::Misaligned {
                at: offset,
                pointer: next,
            }));
            break;
        }
        if visited[usize::from(next / 4 / 64)] & (1 << (next / 4 % 64)) != 0 {
            errors.push(err(CapabilityError::Loop {
                at: offset,
                pointer: next,
            }));
            break;
        }
        if found.len() >= usize::from(EXTENDED_LIMIT) {
            errors.push(err(CapabilityError::TooMany {
                limit: EXTENDED_LIMIT,
            }));
            break;
        }
        offset = next;
        // All ones would point to 0xfff (past the end): `read` checks presence first.
        header = r.read(offset)?;
        if header == 0 {
            break; // a null entry ends the list
        }
    }
    Ok(found)
}
