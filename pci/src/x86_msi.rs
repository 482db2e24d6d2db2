//! The x86 MSI message: what a function writes to reach a local APIC (Intel SDM vol. 3A
//! §11.11.1, "Message Address Register Format" and "Message Data Register Format").
//!
//! One pure function, [`x86_message`], used by the kernel's `Interrupts::message` and by the
//! fake platform, so the layout host tests check is the one the kernel programs. The kernel
//! owns the mapping from its CPU index to the APIC ID.

use crate::irq::MsiMessage;

/// Address bits 31:20: the fixed 0xFEE prefix of the interrupt address range (§11.11.1).
pub const ADDRESS_BASE: u64 = 0xFEE0_0000;
/// Address bits 19:12: the destination APIC ID (§11.11.1).
pub const DESTINATION_SHIFT: u32 = 12;
/// Address bit 3: redirection hint (0: deliver to the destination only) (§11.11.1).
pub const REDIRECTION_HINT: u64 = 1 << 3;
/// Address bit 2: destination mode (0: physical) (§11.11.1).
pub const LOGICAL_DESTINATION: u64 = 1 << 2;
/// Data bits 10:8: delivery mode (000: fixed) (§11.11.2).
pub const DELIVERY_MODE_SHIFT: u32 = 8;
/// Data bit 14: level for level-triggered messages (ignored for edge) (§11.11.2).
pub const LEVEL_ASSERT: u32 = 1 << 14;
/// Data bit 15: trigger mode (0: edge) (§11.11.2).
pub const TRIGGER_LEVEL: u32 = 1 << 15;

/// The message delivering `vector` to the local APIC with ID `apic_id`: physical destination
/// mode, no redirection hint, fixed delivery, edge-triggered.
pub fn x86_message(apic_id: u8, vector: u8) -> MsiMessage {
    MsiMessage {
        address: ADDRESS_BASE | u64::from(apic_id) << DESTINATION_SHIFT,
        data: u32::from(vector),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the message from the SDM's fields, one by one (not from the constants above).
    fn from_sdm_fields(destination: u8, vector: u8) -> (u64, u32) {
        let mut address = 0u64;
        address |= 0xFEE << 20; // bits 31:20: 0FEEH
        address |= u64::from(destination) << 12; // bits 19:12: destination ID
        address |= 0 << 3; // bit 3: RH = 0
        address |= 0 << 2; // bit 2: DM = 0 (physical)
        let mut data = 0u32;
        data |= u32::from(vector); // bits 7:0: vector
        data |= 0b000 << 8; // bits 10:8: delivery mode fixed
        data |= 0 << 14; // bit 14: level (don't care for edge)
        data |= 0 << 15; // bit 15: trigger mode edge
        (address, data)
    }

    #[test]
    fn the_message_has_the_sdm_layout() {
        for (destination, vector) in [(0, 0x30), (1, 0x31), (0x12, 0xEF), (0xFF, 0x40)] {
            let m = x86_message(destination, vector);
            assert_eq!((m.address, m.data), from_sdm_fields(destination, vector));
            // Fields read back out of the message.
            assert_eq!(m.address >> 20, 0xFEE);
            assert_eq!((m.address >> 12) & 0xFF, u64::from(destination));
            assert_eq!(
                m.address & 0b1100,
                0,
                "redirection hint or logical mode set"
            );
            assert_eq!(m.address >> 32, 0, "upper address must be zero");
            assert_eq!(m.data & 0xFF, u32::from(vector));
            assert_eq!((m.data >> 8) & 0b111, 0, "not fixed delivery");
            assert_eq!(m.data >> 14, 0, "not edge-triggered");
        }
        assert_eq!(x86_message(1, 0x41).address, 0xFEE0_1000);
        assert_eq!(x86_message(0x12, 0x41).data, 0x41);
        assert_eq!(REDIRECTION_HINT | LOGICAL_DESTINATION, 0b1100);
        assert_eq!(LEVEL_ASSERT | TRIGGER_LEVEL, 0xC000);
        assert_eq!(DELIVERY_MODE_SHIFT, 8);
    }
}
