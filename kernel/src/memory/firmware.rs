//! Where firmware keeps the ACPI tables (ACPI 6.5 §5.2: RSDP → RSDT/XSDT → tables; FADT →
//! FACS and DSDT), so the frame allocator never hands them out.
//!
//! Firmware normally puts them in ACPI-reclaimable or reserved ranges, which the allocator
//! skips anyway; this walk also protects against firmware that reports them inside "usable"
//! memory. Every length and count is bounded: a malformed table ends the walk with a warning.

use boot::BootInfo;
use boot::phys::PhysMemory;

/// Most tables remembered (RSDT/XSDT entries plus DSDT, FACS and the root table).
pub const MAX_TABLES: usize = 64;
/// Largest table accepted, bytes (the DSDT of a big server is well below this).
const MAX_TABLE_LEN: u32 = 16 << 20;
/// Size of the common table header (ACPI 6.5 §5.2.6).
const HEADER_LEN: usize = 36;

/// Reads physical memory below 4 GiB through the boot identity map. Only valid before the
/// kernel's own page tables replace the boot tables (`memory::init`): afterwards firmware
/// memory is no longer mapped.
pub struct EarlyPhys;

/// Highest physical address readable through [`EarlyPhys`].
const EARLY_LIMIT: u64 = 4 << 30;

impl PhysMemory for EarlyPhys {
    fn read(&self, paddr: u64, len: usize) -> Option<&[u8]> {
        let end = paddr.checked_add(len as u64)?;
        if paddr == 0 || end > EARLY_LIMIT {
            return None;
        }
        // SAFETY: the boot page tables identity-map all of [0, 4 GiB), and the kernel only
        // reads addresses its loader or firmware named as holding boot information or ACPI
        // tables, which nothing writes while the slice is alive (boot is single-threaded).
        Some(unsafe { core::slice::from_raw_parts(paddr as *const u8, len) })
    }
}

static FOUND: spin::Once<AcpiRanges> = spin::Once::new();

/// The ranges found at boot by [`acpi_table_ranges`] (empty before `memory::init`). Once the
/// kernel's own page tables are active, firmware memory is no longer mapped, so the walk is
/// not repeated; this is what the frame allocator excluded.
pub fn found() -> &'static AcpiRanges {
    static EMPTY: AcpiRanges = AcpiRanges {
        ranges: [(0, 0); MAX_TABLES],
        count: 0,
    };
    FOUND.get().unwrap_or(&EMPTY)
}

/// Physical ranges `[start, end)` of the ACPI tables found.
#[derive(Clone, Debug)]
pub struct AcpiRanges {
    ranges: [(u64, u64); MAX_TABLES],
    count: usize,
}

impl AcpiRanges {
    /// The ranges found.
    pub fn as_slice(&self) -> &[(u64, u64)] {
        &self.ranges[..self.count]
    }

    fn push(&mut self, start: u64, len: u64) {
        if self.count < MAX_TABLES {
            self.ranges[self.count] = (start, start.saturating_add(len));
            self.count += 1;
        } else {
            log::warn!("acpi: more than {MAX_TABLES} tables; not all are protected");
        }
    }
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(offset..offset.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(offset..offset.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Reads one table's header and records it; returns its bytes when readable.
fn table<'m>(mem: &'m impl PhysMemory, out: &mut AcpiRanges, addr: u64) -> Option<&'m [u8]> {
    let header = mem.read(addr, HEADER_LEN)?;
    let len = u32_at(header, 4)?;
    if (len as usize) < HEADER_LEN || len > MAX_TABLE_LEN {
        log::warn!("acpi: table at {addr:#x} has implausible length {len}; skipped");
        return None;
    }
    out.push(addr, len as u64);
    mem.read(addr, len as usize)
}

/// Walks RSDT or XSDT and the FADT's pointers, once, at boot (before the boot identity map
/// is replaced), and remembers the result for [`found`].
pub fn acpi_table_ranges(boot: &BootInfo, mem: &impl PhysMemory) -> &'static AcpiRanges {
    FOUND.call_once(|| walk(boot, mem))
}

fn walk(boot: &BootInfo, mem: &impl PhysMemory) -> AcpiRanges {
    let mut out = AcpiRanges {
        ranges: [(0, 0); MAX_TABLES],
        count: 0,
    };
    let Some(rsdp) = boot.rsdp else {
        return out;
    };
    if rsdp.loader_address != 0 {
        out.push(rsdp.loader_address, rsdp.len as u64);
    }
    let (root, entry_size) = match (rsdp.revision, u64_at(&rsdp.bytes, 24)) {
        (2.., Some(xsdt)) if xsdt != 0 => (xsdt, 8),
        _ => (u32_at(&rsdp.bytes, 16).unwrap_or(0) as u64, 4),
    };
    let Some(root_bytes) = table(mem, &mut out, root) else {
        log::warn!("acpi: root table at {root:#x} unreadable");
        return out;
    };
    let entries = root_bytes.len().saturating_sub(HEADER_LEN) / entry_size;
    for i in 0..entries.min(MAX_TABLES) {
        let at = HEADER_LEN + i * entry_size;
        let addr = if entry_size == 8 {
            u64_at(root_bytes, at)
        } else {
            u32_at(root_bytes, at).map(u64::from)
        };
        let Some(addr) = addr.filter(|a| *a != 0) else {
            continue;
        };
        let Some(bytes) = table(mem, &mut out, addr) else {
            continue;
        };
        if bytes.get(0..4) == Some(b"FACP") {
            // FADT (ACPI 6.5 §5.2.9): FIRMWARE_CTRL at 36, DSDT at 40, X_FIRMWARE_CTRL at
            // 132, X_DSDT at 140. The FACS has no checksum-covered header but a length at 4.
            let facs = u64_at(bytes, 132)
                .filter(|a| *a != 0)
                .or(u32_at(bytes, 36).map(u64::from));
            let dsdt = u64_at(bytes, 140)
                .filter(|a| *a != 0)
                .or(u32_at(bytes, 40).map(u64::from));
            for pointer in [facs, dsdt].into_iter().flatten().filter(|a| *a != 0) {
                let _ = table(mem, &mut out, pointer);
            }
        }
    }
    out
}
