//! MSI registers (PCI Local Bus 3.0 §6.8.1).
//!
//! Message Control at +2: bit 0 MSI Enable, bits 3:1 Multiple Message Capable, bits 6:4
//! Multiple Message Enable (log2 of the vectors granted), bit 7 64-bit address, bit 8
//! per-vector masking. Then Message Address (+4), Message Upper Address (+8, 64-bit only),
//! Message Data (+8 or +12), Mask Bits (+12 or +16) and Pending Bits (+16 or +20) when
//! per-vector masking exists. With N vectors granted the function raises vector
//! `data | k` for k < N, so the block must be aligned to N (which the allocator guarantees).

use crate::Msi;

/// Message Control: MSI Enable.
pub const ENABLE: u16 = 1;
/// Message Control: Multiple Message Enable field shift (3 bits).
pub const MME_SHIFT: u16 = 4;

/// Offset of the Message Control word.
pub fn control(cap: &Msi) -> u16 {
    u16::from(cap.offset) + 2
}

/// Offset of the Message Address (low) dword.
pub fn address_low(cap: &Msi) -> u16 {
    u16::from(cap.offset) + 4
}

/// Offset of the Message Upper Address dword (64-bit capabilities).
pub fn address_high(cap: &Msi) -> Option<u16> {
    cap.is_64bit.then(|| u16::from(cap.offset) + 8)
}

/// Offset of the Message Data word.
pub fn data(cap: &Msi) -> u16 {
    u16::from(cap.offset) + if cap.is_64bit { 12 } else { 8 }
}

/// Offset of the Mask Bits dword, if the function has per-vector masking.
pub fn mask(cap: &Msi) -> Option<u16> {
    cap.per_vector_masking
        .then(|| u16::from(cap.offset) + if cap.is_64bit { 16 } else { 12 })
}

/// Offset of the Pending Bits dword, if the function has per-vector masking.
pub fn pending(cap: &Msi) -> Option<u16> {
    mask(cap).map(|m| m + 4)
}
