//! Interrupt remapping formats (VT-d §5.1, §9.10): the remapping table entry, and the MSI
//! address and I/O APIC redirection entry that name one.
//!
//! Design note. With interrupt remapping on, an interrupt message no longer carries its
//! vector and destination. It carries an *index* (the "handle") into a table the kernel
//! writes, and the unit delivers what that entry says, but only if the entry is present
//! and the message's requester passes the entry's source check. A message in the old
//! "compatibility" format is blocked (the kernel leaves CFI clear). So a device can raise
//! exactly the interrupts its owner was given: writing a made-up message into memory at
//! `0xFEEx_xxxx`, by DMA from a queue a driver pointed there, reaches no processor.
//!
//! The pure functions here build the bits; [`crate::Remapper`] writes the entries into
//! each unit's table and invalidates the unit's interrupt entry cache.

/// Where an entry delivers: fixed delivery, physical destination mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The vector.
    pub vector: u8,
    /// The destination APIC ID.
    pub destination: u32,
    /// Level-triggered (an I/O APIC input wired level); MSIs are edge.
    pub level: bool,
}

/// Which requesters may use an entry (the IRTE's SVT, SQ and SID fields, §9.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceCheck {
    /// Exactly this requester ID (SVT = 01b, SQ = 00b): the function itself, or the ID its
    /// messages carry behind a bridge, or an I/O APIC's ID from the DMAR table.
    Requester(u16),
    /// Any requester on buses `first..=last` (SVT = 10b): a conventional PCI device behind
    /// a PCIe-to-PCI bridge, whose messages may carry the bridge's ID or its own.
    Buses(u8, u8),
    /// No check (SVT = 00b): for firmware that names the wrong requester (the kernel's
    /// `intremap=nosid`, as Linux's). The entry still has to be present.
    Any,
}

/// The 128-bit remapping table entry (§9.10): low and high qwords. `eime`: the unit's table
/// takes 32-bit (x2APIC) destinations; otherwise the 8-bit APIC ID goes in bits 15:8 of
/// the destination field.
pub fn entry(target: Target, check: SourceCheck, eime: bool) -> [u64; 2] {
    let destination = if eime {
        u64::from(target.destination)
    } else {
        u64::from(target.destination & 0xff) << 8
    };
    // P (0); FPD (1) = 0: faults are recorded; DM (2) = 0 physical; RH (3) = 0; TM (4);
    // DLM (7:5) = 000b fixed; IM (15) = 0 remapped; V (23:16); DST (63:32).
    let low = 1 | u64::from(target.level) << 4 | u64::from(target.vector) << 16 | destination << 32;
    let high = match check {
        SourceCheck::Requester(id) => 1 << 18 | u64::from(id),
        SourceCheck::Buses(first, last) => 2 << 18 | u64::from(first) << 8 | u64::from(last),
        SourceCheck::Any => 0,
    };
    [low, high]
}

/// The MSI / MSI-X address that names entry `index` in the remappable format (§5.1.5.2):
/// 0xFEE in 31:20, handle bits 14:0 in 19:5, interrupt format (4) = 1, SHV (3), handle
/// bit 15 in bit 2. With `subhandle`, the entry is `index` plus the message data's low 16 bits
/// (multi-message MSI: the device puts the message number there); the data is then 0.
pub fn msi_address(index: u16, subhandle: bool) -> u64 {
    0xfee0_0000
        | u64::from(index & 0x7fff) << 5
        | 1 << 4
        | u64::from(subhandle) << 3
        | u64::from(index >> 15) << 2
}

/// An I/O APIC redirection entry in the remappable format (§5.1.5.1): handle bits 14:0 in
/// 63:49, format (48) = 1, handle bit 15 in bit 11, and the trigger mode, polarity, mask and
/// vector the I/O APIC itself still uses (the vector must equal the entry's for a
/// level-triggered input's EOI to find it).
pub fn ioapic_entry(index: u16, vector: u8, level: bool, active_low: bool, masked: bool) -> u64 {
    u64::from(index & 0x7fff) << 49
        | 1 << 48
        | u64::from(masked) << 16
        | u64::from(level) << 15
        | u64::from(active_low) << 13
        | u64::from(index >> 15) << 11
        | u64::from(vector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_the_specification() {
        let t = Target {
            vector: 0x41,
            destination: 3,
            level: true,
        };
        let [low, high] = entry(t, SourceCheck::Requester(0x0210), false);
        assert_eq!(low, 1 | 1 << 4 | 0x41 << 16 | (3 << 8) << 32);
        assert_eq!(high, 1 << 18 | 0x0210);
        let [low, high] = entry(t, SourceCheck::Buses(2, 3), true);
        assert_eq!(low >> 32, 3);
        assert_eq!(high, 2 << 18 | 0x0203);
        assert_eq!(msi_address(0x32, false), 0xfee0_0000 | 0x32 << 5 | 0x10);
        assert_eq!(
            msi_address(0x8001, true),
            0xfee0_0000 | 1 << 5 | 0x10 | 0x8 | 0x4
        );
        let rte = ioapic_entry(0x8031, 0x31, true, true, true);
        assert_eq!(rte >> 49, 0x31);
        assert_eq!(
            rte & (1 << 48 | 1 << 16 | 1 << 15 | 1 << 13 | 1 << 11),
            1 << 48 | 1 << 16 | 1 << 15 | 1 << 13 | 1 << 11
        );
        assert_eq!(rte & 0xff, 0x31);
    }
}
