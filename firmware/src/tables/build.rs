//! Building tables: a header (ACPI 6.5 §5.2.6) around a body, with the checksum fixed. Used by
//! the simulated machine (its XSDT, the patched FADT) and by tests that write firmware.

use alloc::vec::Vec;

/// A table: `signature`, `revision`, OEM fields naming this project, then `body` after the
/// 36-byte header, checksum fixed. `None` when the table would exceed 4 GiB.
pub fn table(signature: &[u8; 4], revision: u8, body: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(body.len().checked_add(36)?).ok()?;
    let mut t = Vec::with_capacity(len as usize);
    t.extend_from_slice(signature);
    t.extend_from_slice(&len.to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, fixed below
    t.extend_from_slice(b"RUSTOS");
    t.extend_from_slice(b"PCIKERNL");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(b"RUST");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(body);
    fix_checksum(&mut t, 9);
    Some(t)
}

/// Sets byte `at` so that the whole of `t` sums to zero (nothing when `at` is outside `t`).
pub fn fix_checksum(t: &mut [u8], at: usize) {
    if at >= t.len() {
        return;
    }
    t[at] = 0;
    let s = t.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    t[at] = 0u8.wrapping_sub(s);
}
