//! The device table entry (§2.2.2): 256 bits per requester ID, indexed by the 16-bit
//! device ID (bus << 8 | devfn) the request carries.
//!
//! The entry has two independent halves, each written on its own:
//!
//! - the DMA half, qwords 0 and 1 (V, TV, Mode, the page table root, IR, IW, DomainID),
//!   written by [`write_dma`] and [`clear_dma`] when a function is isolated and released;
//! - the interrupt half, qword 2 (IV, IntTabLen, the interrupt table root, IntCtl and the
//!   pass bits), written by [`write_interrupts`] when interrupt remapping is turned on or
//!   off, or a requester gets its own interrupt table. With IV = 0 the unit passes the
//!   device's interrupt messages through as they are, whatever V says.
//!
//! Qword 3 is always zero (guest and ATS fields this crate does not use).

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

/// Third qword (bits 191:128 of the entry, §2.2.2.1; QEMU's `AMDVI_IR_*` and
/// `AMDVI_DEV_*_PASS_MASK`): IV (bit 128): the interrupt fields are valid.
pub const IV: u64 = 1 << 0;
/// IntTabLen (bits 132:129): log2 of the entries of the interrupt table (8: 256 entries).
pub const INT_TAB_LEN_SHIFT: u64 = 1;
/// IG (bit 133): ignore unmapped interrupts without logging them. Left clear, so the unit
/// logs an IO_PAGE_FAULT for a message its table refuses.
pub const IG: u64 = 1 << 5;
/// IntTableRootPtr (bits 179:134, qword bits 51:6): the table, 128-byte aligned.
pub const INT_TABLE_MASK: u64 = 0x000f_ffff_ffff_ffc0;
/// InitPass (184), EIntPass (185), NMIPass (186), Lint0Pass (190), Lint1Pass (191): let
/// INIT, ExtINT, NMI and LINT0/1 messages through unremapped. Left clear: the kernel sends
/// none of them through a device, and a device sending one is refused.
pub const INIT_PASS: u64 = 1 << 56;
pub const EINT_PASS: u64 = 1 << 57;
pub const NMI_PASS: u64 = 1 << 58;
pub const LINT0_PASS: u64 = 1 << 62;
pub const LINT1_PASS: u64 = 1 << 63;
/// IntCtl (bits 189:188): 00b abort fixed and arbitrated interrupts, 01b pass them
/// through, 10b remap them through the table, 11b reserved.
pub const INT_CTL_SHIFT: u64 = 60;
pub const INT_CTL_REMAPPED: u64 = 2;
/// Bits of the third qword that are reserved (QEMU 10's `AMDVI_DTE_QUAD2_RESERVED` is
/// 53:52; older QEMU also had 55:54 and 59): never set here.
pub const QWORD2_RESERVED: u64 = 0x08f0_0000_0000_0000;

/// The third qword of a requester whose fixed and arbitrated interrupts are remapped
/// through the table at `table` (128-byte aligned) of `2^log2_entries` entries.
pub fn remapped(table: u64, log2_entries: u8) -> u64 {
    IV | u64::from(log2_entries & 0xf) << INT_TAB_LEN_SHIFT
        | (table & INT_TABLE_MASK)
        | INT_CTL_REMAPPED << INT_CTL_SHIFT
}

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

/// Writes the DMA half (qwords 0 and 1) of slot `id`, the qword holding V last; the
/// interrupt half is left as it is.
pub fn write_dma(memory: &dyn TableMemory, table: u64, id: u16, entry: [u64; 2]) {
    let slot = table + SIZE * u64::from(id);
    memory.write(slot + 8, entry[1]);
    memory.write(slot, entry[0]);
}

/// The DMA half back to pass-through (V = 0 first, then the domain); the interrupt half
/// is left as it is.
pub fn clear_dma(memory: &dyn TableMemory, table: u64, id: u16) {
    let slot = table + SIZE * u64::from(id);
    memory.write(slot, 0);
    memory.write(slot + 8, 0);
}

/// Writes the interrupt half (qword 2) of slot `id` in one store: the unit sees either the
/// old fields or the new ones, never a mix.
pub fn write_interrupts(memory: &dyn TableMemory, table: u64, id: u16, qword: u64) {
    memory.write(table + SIZE * u64::from(id) + 16, qword);
}

/// The interrupt half (qword 2) of slot `id`.
pub fn interrupts(memory: &dyn TableMemory, table: u64, id: u16) -> u64 {
    memory.read(table + SIZE * u64::from(id) + 16)
}

/// Back to pass-through: V = 0 first, then the rest zeroed.
pub fn clear(memory: &dyn TableMemory, table: u64, id: u16) {
    let slot = table + SIZE * u64::from(id);
    for i in 0..4 {
        memory.write(slot + 8 * i, 0);
    }
}
