//! Which configuration writes a driver may make, and why the others are refused.
//!
//! Design note. Configuration space is where a function is told where to decode (BARs),
//! whether it may master the bus, and where its interrupts go (MSI and MSI-X). Each of those
//! has one owner in this stack: [`PciFunction::map_bar`](crate::function::PciFunction) checks
//! windows against the BARs as enumerated, the [`BusMaster`](super::BusMaster) guard owns Bus
//! Master Enable, and [`IrqVectors`](crate::irq::IrqVectors) owns the MSI and MSI-X
//! capabilities and the Interrupt Disable bit. A raw write to any of them would undo that
//! owner's promise behind its back (aim MSI at another driver's vector, enable MSI while
//! MSI-X vectors are held, move a BAR under a mapped window), so a driver's writes go through
//! [`Protected::check_write`], which refuses exactly those registers and names the owner in
//! its error. Everything else (device-specific registers, Device Control, power management, Status
//! write-one-to-clear bits) stays writable; reads are never filtered.
//!
//! The refused registers, by header layout (PCI Local Bus 3.0 §6.1, §6.2.2, §6.2.5;
//! PCI-to-PCI Bridge Architecture 1.2 §3.2):
//!
//! | bytes | what | owner |
//! |---|---|---|
//! | 0x04 bits 0, 1, 2, 10 | I/O and memory decode, Bus Master Enable, Interrupt Disable | the stack |
//! | 0x10..0x28 (type 0), 0x10..0x18 (type 1) | BARs | enumeration, `map_bar` |
//! | 0x30 (type 0), 0x38 (type 1) | expansion ROM BAR | enumeration |
//! | 0x18..0x34, 0x3E (type 1) | bus numbers, forwarding windows, Bridge Control | enumeration |
//! | 0x10..0x48 except 0x3C (type 2) | CardBus windows | not supported |
//! | MSI capability (PCI 3.0 §6.8.1) | message address, data, mask | `IrqVectors` |
//! | MSI-X capability (PCI 3.0 §6.8.2) | Message Control | `IrqVectors` |
//! | vendor-specific capabilities (§6.7, ID 09h) | device-defined | [`VendorWindow`](super::VendorWindow) |
//! | SR-IOV (PCIe Base 6.0 §9.3.3), Resizable BAR and VF Resizable BAR (§7.8.6) | new functions and BAR sizes | not supported |
//! | Enhanced Allocation (PCI EA ECN, ID 14h), Multicast (PCIe Base 6.0 §7.9.11) | ranges the function decodes, as BARs are | enumeration |
//! | HyperTransport MSI mapping (ID 08h, type 10101b) | where MSI messages are recognised | not supported |
//! | Device Control bit 15, Initiate FLR (PCIe Base 6.0 §7.5.3.4), of endpoints | resets the function | not supported |
//! | AF Control bit 0, Initiate FLR (Advanced Features, ID 13h) | resets the function | not supported |
//! | PMCSR PowerState (PCI PM 1.2 §7.1.2), set to anything but D0 | D3hot and back to D0 resets the function | not supported |
//! | Link Control bit 4, Link Disable (PCIe Base 6.0 §7.5.3.7), of downstream ports | resets everything below the port | not supported |
//! | DPC Control bit 6, DPC Software Trigger (PCIe Base 6.0 §7.9.14.3) | takes the link down: resets everything below | not supported |
//! | VSEC and DVSEC (PCIe Base 6.0 §7.9.5, §7.9.6), their whole length | device-defined (a second path into BARs, as virtio's `PCI_CFG` is) | not writable by drivers |
//!
//! A reset is refused because it undoes every owner at once: it clears the BARs, the Command
//! register (Interrupt Disable too, so a function whose vectors are MSI-X starts asserting a
//! shared INTx line nobody handles for it) and the MSI and MSI-X enables under live vectors.
//! A link taken down does the same to every function below the port, whoever owns them.
//! Those bits are refused one by one, like the Command bits: the rest of their registers
//! (Device Control's other fields, PME_Status) stays writable.

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use crate::capability::{ext_id, id};
use crate::range::checked_access;
use crate::{ExtendedCapability, Function};

/// Command register offset (PCI 3.0 §6.2.2).
pub const COMMAND: u16 = 0x04;
/// Command bit 0: I/O Space decode.
pub const IO_SPACE: u16 = 1 << 0;
/// Command bit 1: Memory Space decode.
pub const MEMORY_SPACE: u16 = 1 << 1;
/// Command bit 2: Bus Master Enable.
pub const BUS_MASTER: u16 = 1 << 2;
/// Command bit 10: Interrupt Disable (INTx).
pub const INTERRUPT_DISABLE: u16 = 1 << 10;
/// The Command bits only the stack writes.
pub const PROTECTED_COMMAND_BITS: u16 = IO_SPACE | MEMORY_SPACE | BUS_MASTER | INTERRUPT_DISABLE;

/// A register (or block of registers) drivers may not write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Register {
    /// Base Address Register `n`.
    Bar(u8),
    /// The expansion ROM BAR.
    ExpansionRom,
    /// A bridge's bus numbers, forwarding windows or Bridge Control.
    BridgeRouting,
    /// A CardBus bridge's registers.
    CardBus,
    /// The MSI capability at this offset.
    Msi(u16),
    /// The MSI-X capability at this offset.
    Msix(u16),
    /// A vendor-specific capability at this offset (written through its
    /// [`VendorWindow`](super::VendorWindow)).
    Vendor(u16),
    /// The header (ID, next pointer, length) of a vendor-specific capability.
    CapabilityHeader(u16),
    /// SR-IOV, Resizable BAR or VF Resizable BAR at this offset.
    Extended(u16),
    /// A vendor-specific extended capability (VSEC or DVSEC) at this offset.
    ExtendedVendor(u16),
    /// A capability at this offset whose registers say where the function decodes, as BARs
    /// do (Enhanced Allocation entries, Multicast's base address).
    AddressDecoder(u16),
    /// A HyperTransport MSI mapping capability at this offset (where MSI writes are turned
    /// into interrupts).
    MsiMapping(u16),
    /// A bit of the capability at this offset that resets the function (Initiate FLR, or a
    /// power state other than D0), or, on a port, everything below it (Link Disable, DPC
    /// Software Trigger).
    Reset(u16),
}

/// Why a configuration write was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigWriteError {
    /// The width is not 1, 2 or 4, the offset is not a multiple of it, or the register lies
    /// past the 4 KiB configuration space.
    BadAccess {
        /// Offset asked for.
        offset: u16,
        /// Width in bytes.
        width: u8,
    },
    /// The write would change Command bits the stack owns (`bits` is the mask changed).
    Command {
        /// The protected bits the write would change.
        bits: u16,
    },
    /// The write touches a register with another owner.
    Protected {
        /// Offset asked for.
        offset: u16,
        /// What lies there.
        register: Register,
    },
}

impl fmt::Display for ConfigWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfigWriteError::BadAccess { offset, width } => write!(
                f,
                "a {width}-byte write at {offset:#x} is not a naturally aligned access inside configuration space"
            ),
            ConfigWriteError::Command { bits } => {
                write!(f, "Command bits {bits:#06x} (")?;
                let mut first = true;
                for (bit, name) in [
                    (IO_SPACE, "I/O decode: the stack's"),
                    (MEMORY_SPACE, "memory decode: map_bar's"),
                    (BUS_MASTER, "bus master: the BusMaster guard's"),
                    (INTERRUPT_DISABLE, "INTx disable: IrqVectors'"),
                ] {
                    if bits & bit != 0 {
                        if !first {
                            f.write_str("; ")?;
                        }
                        f.write_str(name)?;
                        first = false;
                    }
                }
                f.write_str(") are not the driver's to write")
            }
            ConfigWriteError::Protected { offset, register } => {
                write!(f, "write at {offset:#x} refused: ")?;
                match register {
                    Register::Bar(n) => write!(
                        f,
                        "BAR{n} says where the device decodes, and windows were checked against it at enumeration"
                    ),
                    Register::ExpansionRom => f.write_str("the expansion ROM BAR is enumeration's"),
                    Register::BridgeRouting => f.write_str(
                        "bus numbers and bridge windows decide what reaches the devices below; they are enumeration's",
                    ),
                    Register::CardBus => f.write_str("CardBus bridges are not supported"),
                    Register::Msi(at) => write!(
                        f,
                        "the MSI capability at {at:#x} belongs to IrqVectors (alloc_irq_vectors)"
                    ),
                    Register::Msix(at) => write!(
                        f,
                        "the MSI-X capability at {at:#x} belongs to IrqVectors (alloc_irq_vectors)"
                    ),
                    Register::Vendor(at) => write!(
                        f,
                        "the vendor-specific capability at {at:#x} is written through vendor_window({at:#x})"
                    ),
                    Register::CapabilityHeader(at) => {
                        write!(f, "the header of the capability at {at:#x} is read-only")
                    }
                    Register::Extended(at) => write!(
                        f,
                        "the extended capability at {at:#x} (SR-IOV or Resizable BAR) would change BARs or functions"
                    ),
                    Register::ExtendedVendor(at) => write!(
                        f,
                        "the vendor-specific extended capability at {at:#x} (VSEC/DVSEC) means what its vendor says, which this stack cannot check"
                    ),
                    Register::AddressDecoder(at) => write!(
                        f,
                        "the capability at {at:#x} says where the device decodes, as a BAR does; that is enumeration's"
                    ),
                    Register::MsiMapping(at) => write!(
                        f,
                        "the MSI mapping capability at {at:#x} decides where interrupt messages go"
                    ),
                    Register::Reset(at) => write!(
                        f,
                        "the capability at {at:#x} would reset the function (FLR or a power state change) or the functions below it (link disable), behind the back of their BARs', vectors' and bus master's owners"
                    ),
                }
            }
        }
    }
}

/// The registers of one function that drivers may not write, worked out once when the
/// function is claimed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Protected {
    regions: Vec<(Range<u16>, Register)>,
    /// Bits that may only be written as zero: (offset of their 16-bit register, the bits,
    /// the capability they belong to).
    zero_only: Vec<(u16, u16, Register)>,
}

impl Protected {
    /// The protected registers of `info`; `read32(offset)` reads the configuration dword at
    /// `offset` (dword-aligned), for the lengths of vendor-specific capabilities (PCI 3.0 §6.7:
    /// byte 2; VSEC/DVSEC: bits 31:20 of their second dword).
    pub fn of(info: &Function, mut read32: impl FnMut(u16) -> u32) -> Protected {
        let mut regions = Vec::new();
        let mut zero_only = Vec::new();
        let bars = |regions: &mut Vec<_>, count: u16| {
            for n in 0..count {
                let at = 0x10 + 4 * n;
                regions.push((at..at + 4, Register::Bar(n as u8)));
            }
        };
        match info.header_type {
            0 => {
                bars(&mut regions, 6);
                regions.push((0x30..0x34, Register::ExpansionRom));
            }
            1 => {
                bars(&mut regions, 2);
                regions.push((0x18..0x34, Register::BridgeRouting));
                regions.push((0x38..0x3c, Register::ExpansionRom));
                regions.push((0x3e..0x40, Register::BridgeRouting));
            }
            _ => {
                regions.push((0x10..0x3c, Register::CardBus));
                regions.push((0x3e..0x48, Register::CardBus));
            }
        }
        for cap in &info.capabilities {
            let at = u16::from(cap.offset);
            match cap.id {
                id::MSI => {
                    // The longest layout (64-bit with per-vector masking) is 24 bytes; a
                    // shorter one protects the next few bytes too, which is harmless.
                    regions.push((at..at + 24, Register::Msi(at)));
                }
                id::MSIX => regions.push((at..at + 12, Register::Msix(at))),
                id::POWER_MANAGEMENT => {
                    // PMCSR at +4, PowerState in bits 1:0.
                    zero_only.push((at + 4, 0b11, Register::Reset(at)));
                }
                id::PCI_EXPRESS => {
                    // Device Control at +8; bit 15 is Initiate FLR for endpoints (PCIe, legacy
                    // and root-complex integrated: types 0, 1 and 9), something else or
                    // reserved for ports and bridges.
                    let kind = (read32(at) >> 20) & 0xf;
                    if matches!(kind, 0 | 1 | 9) {
                        zero_only.push((at + 8, 1 << 15, Register::Reset(at)));
                    }
                    // Link Control at +0x10; bit 4 is Link Disable for the ports whose link
                    // leads down (root, switch downstream, PCI-to-PCIe bridge: types 4, 6
                    // and 8). A link that goes down resets everything below it, as Secondary
                    // Bus Reset does.
                    if matches!(kind, 4 | 6 | 8) {
                        zero_only.push((at + 0x10, 1 << 4, Register::Reset(at)));
                    }
                }
                id::AF => zero_only.push((at + 4, 1, Register::Reset(at))),
                id::EA => {
                    let end = ea_end(at, info.header_type == 1, &mut read32);
                    regions.push((at..end, Register::AddressDecoder(at)));
                }
                id::HYPERTRANSPORT if (read32(at) >> 27) == 0b10101 => {
                    regions.push((at..(at + 12).min(0x100), Register::MsiMapping(at)));
                }
                id::VENDOR => {
                    let len = u16::from((read32(at & !3) >> (8 * ((at + 2) & 3))) as u8).max(3);
                    regions.push((at..at + 3, Register::CapabilityHeader(at)));
                    regions.push((at + 3..(at + len).min(0x100), Register::Vendor(at)));
                }
                _ => {}
            }
        }
        for cap in &info.extended_capabilities {
            if let Some(len) = extended_len(cap) {
                let end = (cap.offset + len).min(0x1000);
                regions.push((cap.offset..end, Register::Extended(cap.offset)));
            } else if cap.id == ext_id::DPC {
                // DPC Control at +6; bit 6 is DPC Software Trigger, which takes the link down.
                zero_only.push((cap.offset + 6, 1 << 6, Register::Reset(cap.offset)));
            } else if cap.id == ext_id::MULTICAST {
                // Header, capability and control, then four 64-bit registers (base address,
                // receive, block all, block untranslated) and the overlay BAR of ports.
                let end = (cap.offset + 0x30).min(0x1000);
                regions.push((cap.offset..end, Register::AddressDecoder(cap.offset)));
            } else if matches!(cap.id, ext_id::VSEC | ext_id::DVSEC) {
                // Header, then the length in bits 31:20 of the next dword (at least both).
                let len = ((read32((cap.offset + 4) & !3) >> 20) as u16).max(8);
                let end = cap.offset.saturating_add(len).min(0x1000);
                regions.push((cap.offset..end, Register::ExtendedVendor(cap.offset)));
            }
        }
        Protected { regions, zero_only }
    }

    /// The vendor-specific capability at `offset`: its length in bytes, if there is one.
    pub fn vendor(&self, offset: u16) -> Option<u16> {
        self.regions.iter().find_map(|(r, reg)| match *reg {
            Register::Vendor(at) if at == offset => Some(r.end - at),
            _ => None,
        })
    }

    /// Checks a `width`-byte write of `value` at `offset`. `command` is the Command register
    /// as it is now (for a write that covers it); `vendor` is the vendor-specific capability
    /// the write is made through, if any, whose body is then writable.
    pub fn check_write(
        &self,
        offset: u16,
        width: u8,
        value: u32,
        command: u16,
        vendor: Option<u16>,
    ) -> Result<(), ConfigWriteError> {
        let bad = ConfigWriteError::BadAccess { offset, width };
        if !matches!(width, 1 | 2 | 4) {
            return Err(bad);
        }
        let bytes = checked_access(u64::from(offset), u64::from(width), 0x1000).map_err(|_| bad)?;
        let bytes = bytes.start as u16..bytes.end as u16;
        // Command (bytes 4 and 5): only a change of a protected bit is refused.
        let command_bytes = COMMAND..COMMAND + 2;
        if overlaps(&bytes, &command_bytes) {
            let mut new = command;
            for byte in bytes.clone() {
                if command_bytes.contains(&byte) {
                    let b = (value >> (8 * (byte - offset))) as u8;
                    let shift = 8 * (byte - COMMAND);
                    new = (new & !(0xff << shift)) | (u16::from(b) << shift);
                }
            }
            let changed = (new ^ command) & PROTECTED_COMMAND_BITS;
            if changed != 0 {
                return Err(ConfigWriteError::Command { bits: changed });
            }
        }
        for &(at, bits, register) in &self.zero_only {
            for byte in bytes.clone() {
                if (at..at + 2).contains(&byte) {
                    let b = (value >> (8 * (byte - offset))) as u8;
                    let mask = (bits >> (8 * (byte - at))) as u8;
                    if b & mask != 0 {
                        return Err(ConfigWriteError::Protected { offset, register });
                    }
                }
            }
        }
        for (range, register) in &self.regions {
            if *register == Register::Vendor(vendor.unwrap_or(u16::MAX)) {
                continue;
            }
            if overlaps(&bytes, range) {
                return Err(ConfigWriteError::Protected {
                    offset,
                    register: *register,
                });
            }
        }
        Ok(())
    }
}

fn overlaps(a: &Range<u16>, b: &Range<u16>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Where the Enhanced Allocation capability at `at` ends (PCI EA ECN §6.9): a header dword
/// (with the number of entries in bits 21:16), one more for bridges (their fixed bus
/// numbers), then entries whose first dword gives the number of dwords after it (bits 2:0).
/// Never past the 256-byte header.
fn ea_end(at: u16, bridge: bool, read32: &mut impl FnMut(u16) -> u32) -> u16 {
    let entries = (read32(at) >> 16) & 0x3f;
    let mut end = at + if bridge { 8 } else { 4 };
    for _ in 0..entries {
        if end >= 0x100 {
            break;
        }
        let words = 1 + (read32(end) & 0b111) as u16;
        end += 4 * words;
    }
    end.min(0x100)
}

/// How many bytes of an extended capability are protected, if any.
fn extended_len(cap: &ExtendedCapability) -> Option<u16> {
    match cap.id {
        // SR-IOV: 0x40 bytes (PCIe Base 6.0 §9.3.3); (VF) Resizable BAR: header + 6 pairs.
        ext_id::SRIOV => Some(0x40),
        ext_id::RESIZABLE_BAR | ext_id::VF_RESIZABLE_BAR => Some(0x34),
        _ => None,
    }
}
