//! The remapping structures' entries (VT-d §9): root and context entries (legacy mode) and
//! second-level paging entries.

/// Root entry, low qword (§9.1): Present (0) and the context table's address (63:12). The
/// high qword is reserved (0). Root entry `b` is bus `b`.
pub fn root_entry(context_table: u64) -> u64 {
    (context_table & ADDRESS_MASK) | PRESENT
}

/// Present bit of root and context entries.
pub const PRESENT: u64 = 1;
/// Address bits 51:12 of every entry here.
pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// How a context entry translates (§9.3, TT field, bits 3:2 of the low qword).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Translation {
    /// 00b: untranslated requests go through the second-level page table at the given
    /// address, with `levels` levels (3 = 39-bit, 4 = 48-bit addresses).
    PageTable { table: u64, levels: u8 },
    /// 10b: requests pass through untranslated (ECAP.PT); the firmware's and unclaimed
    /// devices' default here.
    PassThrough,
}

/// A context entry (§9.3) as (low, high) qwords: present, translation type, table, address
/// width (AW, high 2:0) and domain ID (DID, high 23:8). Pass-through entries still carry an
/// address width the unit supports (`pass_levels`, §9.3: "the largest AGAW value").
pub fn context_entry(translation: Translation, domain: u16, pass_levels: u8) -> (u64, u64) {
    let (low, levels) = match translation {
        Translation::PageTable { table, levels } => ((table & ADDRESS_MASK) | PRESENT, levels),
        Translation::PassThrough => ((2 << 2) | PRESENT, pass_levels),
    };
    let aw = u64::from(levels.saturating_sub(2)) & 0x7;
    (low, aw | u64::from(domain) << 8)
}

/// Second-level entry bits (§9.8): Read (0), Write (1).
pub const READ: u64 = 1 << 0;
pub const WRITE: u64 = 1 << 1;
/// Page Size (7): a large page at a non-leaf level; never set here.
pub const PAGE_SIZE: u64 = 1 << 7;

/// Second-level paging entry pointing at the next table or, in the last level, at a 4 KiB
/// page: readable and writable by the device.
pub fn second_level_entry(address: u64) -> u64 {
    (address & ADDRESS_MASK) | READ | WRITE
}

/// Address width in bits of `levels` levels of second-level tables: 30 + 9 per level above
/// two (39, 48, 57).
pub fn address_bits(levels: u8) -> u32 {
    12 + 9 * u32::from(levels)
}
