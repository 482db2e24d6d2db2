//! The device table entry (§2.2.2): 256 bits per requester ID, indexed by the 16-bit
//! device ID (bus << 8 | devfn) the request carries.
//!
//! Only the DMA remapping fields are written here. Interrupt remapping (IV, bit 128, and
//! the interrupt table fields of the third qword) stays clear: with IV = 0 the unit passes
//! the device's interrupt messages through unremapped.

use crate::memory::TableMemory;

/// DTE.V (0): the entry is valid. With V = 0 the unit passes the device's DMA through
/// untranslated, so a zeroed table lets every device through.
pub const V: u64 = 1 << 0;
/// DTE.TV (1): the translation fields (Mode, root pointer, IR, IW) are valid.
pub const TV: u64 = 1 << 1;
/// DTE.Mode (11:9): levels of the host page table (0: no translation).
pub const MODE_SHIFT: u64 = 9;
/// DTE.Host Page Table Root Pointer (51:12).
pub const ROOT_MASK: u64 = 0x000f_ffff_ffff_f000;
/// DTE.IR (61), IW (62): the device may read, write (ANDed with every level's bits).
pub const IR: u64 = 1 << 61;
pub const IW: u64 = 1 << 62;
/// DomainID, second qword (15:0): tags the unit's cached translations.
pub const DOMAIN_MASK: u64 = 0xffff;

/// Bytes per entry.
pub const SIZE: u64 = 32;

/// An entry that translates through the table at `root` of `levels` levels, tagged with
/// `domain`, readable and writable as far as the page table allows.
pub fn translated(root: u64, levels: u8, domain: u16) -> [u64; 4] {
    [
        V | TV | u64::from(levels & 7) << MODE_SHIFT | (root & ROOT_MASK) | IR | IW,
        u64::from(domain),
        0,
        0,
    ]
}

/// Writes `entry` into slot `id` of the table at `table`: the upper qwords first and the
/// first qword (which holds V) last, so the unit, which may read the entry at any time,
/// never sees a valid entry with stale fields. To tear an entry down, [`clear`] writes V = 0
/// first.
pub fn write(memory: &dyn TableMemory, table: u64, id: u16, entry: [u64; 4]) {
    let slot = table + SIZE * u64::from(id);
    for i in (1..4).rev() {
        memory.write(slot + 8 * i, entry[i as usize]);
    }
    memory.write(slot, entry[0]);
}

/// Back to pass-through: V = 0 first, then the rest zeroed.
pub fn clear(memory: &dyn TableMemory, table: u64, id: u16) {
    let slot = table + SIZE * u64::from(id);
    for i in 0..4 {
        memory.write(slot + 8 * i, 0);
    }
}
