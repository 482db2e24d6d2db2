//! [`Fault`]: a request a remapping unit refused, whichever kind of unit refused it.
//!
//! An Intel VT-d unit records a fault with a reason code (VT-d appendix A); an AMD IOMMU
//! writes an event into its event log with an event code (AMD IOMMU specification §2.5).
//! The kernel keeps both as one record: who asked, for what address, reading or writing,
//! and the unit's own code, shown as the unit's documentation names it.

use alloc::format;
use alloc::string::String;

/// Why a unit refused a request, in the unit's own words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// An Intel VT-d fault reason (appendix A): 05h a write to a page not mapped (or not
    /// writable), 06h a read of one, 20h and above an interrupt request refused.
    Vtd(u8),
    /// An AMD IOMMU event code (§2.5.2): 2h `IO_PAGE_FAULT`, 1h
    /// `ILLEGAL_DEV_TABLE_ENTRY`, 5h `ILLEGAL_COMMAND_ERROR`, and so on.
    Amd(u8),
}

impl core::fmt::Display for Reason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Reason::Vtd(r) => write!(f, "reason {r:02x}h"),
            Reason::Amd(c) => write!(f, "event {c:x}h"),
        }
    }
}

/// One refused request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Requester ID: bus << 8 | device << 3 | function.
    pub source: u16,
    /// The page the request addressed; for a VT-d interrupt fault, the interrupt
    /// remapping entry's index.
    pub address: u64,
    /// A write request (else a read).
    pub write: bool,
    pub reason: Reason,
}

impl Fault {
    /// Whether it is an interrupt request a VT-d unit refused (rather than a DMA request).
    pub fn interrupt(&self) -> bool {
        matches!(self.reason, Reason::Vtd(r) if r >= 0x20)
    }

    /// Whether it is a DMA request to a page not mapped for the requester (or not with
    /// that access): VT-d reasons 05h and 06h, AMD's `IO_PAGE_FAULT`.
    pub fn page_not_mapped(&self) -> bool {
        matches!(self.reason, Reason::Vtd(0x05 | 0x06) | Reason::Amd(0x2))
    }

    /// The VT-d reason, for the interrupt remapping checks (`None` from an AMD unit).
    pub fn vtd_reason(&self) -> Option<u8> {
        match self.reason {
            Reason::Vtd(r) => Some(r),
            Reason::Amd(_) => None,
        }
    }
}

impl From<iommu::Fault> for Fault {
    fn from(f: iommu::Fault) -> Fault {
        Fault {
            source: f.source,
            address: f.address,
            write: f.write,
            reason: Reason::Vtd(f.reason),
        }
    }
}

impl From<iommu::amd::Event> for Fault {
    fn from(e: iommu::amd::Event) -> Fault {
        Fault {
            source: e.source,
            address: e.address & !0xfff,
            write: e.write,
            reason: Reason::Amd(e.code),
        }
    }
}

/// A fault as one line: who, what, where, why.
pub fn describe(f: &Fault) -> String {
    let why = match f.reason {
        Reason::Vtd(r) => match r {
            0x01 => "no root entry for its bus",
            0x02 => "no context entry",
            0x05 => "write to a page not mapped (or not writable) in its domain",
            0x06 => "read of a page not mapped in its domain",
            0x20 => "interrupt message with a malformed address",
            0x21 => "interrupt naming an entry past the table",
            0x22 => "interrupt naming an entry not present (a vector it does not own)",
            0x25 => "compatibility-format interrupt blocked",
            0x26 => "interrupt from a requester the entry does not allow",
            _ => "see VT-d appendix A",
        },
        Reason::Amd(c) => match c {
            0x1 => "ILLEGAL_DEV_TABLE_ENTRY: the device table entry is malformed",
            0x2 => "IO_PAGE_FAULT: a page not mapped (or not with that access) in its domain",
            0x3 => "DEV_TAB_HARDWARE_ERROR: the unit could not read the device table",
            0x4 => "PAGE_TAB_HARDWARE_ERROR: the unit could not read a page table",
            0x5 => "ILLEGAL_COMMAND_ERROR: the unit refused a command",
            0x6 => "COMMAND_HARDWARE_ERROR: the unit could not read the command buffer",
            _ => "see the AMD IOMMU specification §2.5",
        },
    };
    let who = format!(
        "{:02x}:{:02x}.{}",
        f.source >> 8,
        (f.source >> 3) & 0x1f,
        f.source & 7
    );
    if f.interrupt() {
        return format!(
            "{who} interrupt, entry {:#x}: {}, {why}",
            f.address, f.reason
        );
    }
    format!(
        "{who} {} {:#x}: {}, {why}",
        if f.write { "write to" } else { "read of" },
        f.address,
        f.reason
    )
}
