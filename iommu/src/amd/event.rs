//! The event log (§2.5, §3.3.2): what the unit reports, 16-byte entries in a ring that the
//! unit fills at its tail and software empties from its head.

use core::fmt;

/// Event codes, in bits 31:28 of the second dword (§2.5.1).
pub const ILLEGAL_DEV_TABLE_ENTRY: u8 = 0x1;
pub const IO_PAGE_FAULT: u8 = 0x2;
pub const DEV_TAB_HARDWARE_ERROR: u8 = 0x3;
pub const PAGE_TAB_HARDWARE_ERROR: u8 = 0x4;
pub const ILLEGAL_COMMAND_ERROR: u8 = 0x5;
pub const COMMAND_HARDWARE_ERROR: u8 = 0x6;
pub const IOTLB_INV_TIMEOUT: u8 = 0x7;
pub const INVALID_DEVICE_REQUEST: u8 = 0x8;

/// Bytes per entry.
pub const EVENT_SIZE: u64 = 16;
/// Entries one page holds; EventLen = log2 of it (§3.4.3).
pub const SLOTS: u64 = 256;
pub const SLOTS_LOG2: u64 = 8;

/// Flags (bits 27:16 of the second dword, §2.5.3): I (3) an interrupt request, PR (4) the
/// page was present (a permission fault), RW (5) a write.
pub const FLAG_INTERRUPT: u32 = 1 << 3;
pub const FLAG_PRESENT: u32 = 1 << 4;
pub const FLAG_WRITE: u32 = 1 << 5;

/// One event the unit logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Event code (the constants of this module).
    pub code: u8,
    /// Device ID (bus << 8 | devfn) of the request; 0 for command errors.
    pub source: u16,
    /// DomainID, for an I/O page fault.
    pub domain: u16,
    /// The address: the DMA address of a page fault, the physical address of the device
    /// table entry, page table entry or command for the others.
    pub address: u64,
    /// A write request (page faults and illegal device table entries).
    pub write: bool,
    /// The entry as the unit wrote it.
    pub raw: [u32; 4],
}

impl Event {
    /// Decodes a log entry (§2.5.1 to §2.5.9).
    pub fn decode(raw: [u32; 4]) -> Event {
        let code = (raw[1] >> 28) as u8;
        let flags = (raw[1] >> 16) & 0xfff;
        Event {
            code,
            source: raw[0] as u16,
            domain: if code == IO_PAGE_FAULT {
                raw[1] as u16
            } else {
                0
            },
            address: u64::from(raw[3]) << 32 | u64::from(raw[2]),
            write: matches!(code, IO_PAGE_FAULT | ILLEGAL_DEV_TABLE_ENTRY)
                && flags & FLAG_WRITE != 0,
            raw,
        }
    }

    /// The flags field (bits 27:16 of the second dword).
    pub fn flags(&self) -> u32 {
        (self.raw[1] >> 16) & 0xfff
    }

    /// What the code means.
    pub fn describe(&self) -> &'static str {
        match self.code {
            ILLEGAL_DEV_TABLE_ENTRY => "illegal device table entry",
            IO_PAGE_FAULT => "I/O page fault",
            DEV_TAB_HARDWARE_ERROR => "device table read failed",
            PAGE_TAB_HARDWARE_ERROR => "page table read failed",
            ILLEGAL_COMMAND_ERROR => "illegal command",
            COMMAND_HARDWARE_ERROR => "command read failed",
            IOTLB_INV_TIMEOUT => "device IOTLB invalidation timed out",
            INVALID_DEVICE_REQUEST => "invalid device request",
            _ => "unknown event",
        }
    }
}

/// `bus:device.function` of a device ID.
struct Bdf(u16);

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{}",
            self.0 >> 8,
            (self.0 >> 3) & 0x1f,
            self.0 & 7
        )
    }
}

impl fmt::Display for Event {
    /// One line: "I/O page fault: 00:04.0 wrote 0x1234000 (domain 3)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = self.describe();
        let access = if self.write { "wrote" } else { "read" };
        match self.code {
            IO_PAGE_FAULT if self.flags() & FLAG_INTERRUPT != 0 => write!(
                f,
                "{what}: {} sent an interrupt to {:#x} (domain {})",
                Bdf(self.source),
                self.address,
                self.domain
            ),
            IO_PAGE_FAULT => {
                write!(
                    f,
                    "{what}: {} {access} {:#x} (domain {})",
                    Bdf(self.source),
                    self.address,
                    self.domain
                )?;
                if self.flags() & FLAG_PRESENT != 0 {
                    f.write_str(", not permitted")?;
                }
                Ok(())
            }
            ILLEGAL_DEV_TABLE_ENTRY | DEV_TAB_HARDWARE_ERROR | PAGE_TAB_HARDWARE_ERROR => write!(
                f,
                "{what}: {} (entry at {:#x})",
                Bdf(self.source),
                self.address
            ),
            ILLEGAL_COMMAND_ERROR | COMMAND_HARDWARE_ERROR => {
                write!(f, "{what} at {:#x}", self.address)
            }
            _ => write!(
                f,
                "{what} (code {:#x}): {:08x} {:08x} {:08x} {:08x}",
                self.code, self.raw[0], self.raw[1], self.raw[2], self.raw[3]
            ),
        }
    }
}
