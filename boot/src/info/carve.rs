//! Taking ranges out of the RAM a memory map describes: what the CPU cannot address and the
//! PC's fixed device space are never RAM, whatever a loader's map says.
//!
//! The kernel identity-maps RAM (virtual address = physical address), so RAM must lie below
//! the canonical limit 2^47 (Intel SDM vol. 3A §4.5: 4-level paging translates 48-bit
//! linear addresses, and the kernel uses the lower half), and below what the CPU's physical
//! address width reaches (CPUID 8000_0008h EAX bits 7:0, SDM vol. 3A §4.1.4): a page-table
//! entry naming a frame above it has reserved bits set and faults on first use. A map that
//! calls the interrupt and chipset registers below 4 GiB usable (the IOAPIC at FEC0_0000h,
//! the HPET at FED0_0000h, the local APIC and the MSI range at FEE0_0000h) would have them
//! handed out as page tables and heap.

use super::{BootInfo, MemoryKind, MemoryRegion};

/// The PC's fixed device space below 4 GiB: IOAPICs (FEC0_0000h), the HPET and chipset
/// registers (FED0_0000h), the local APIC and the MSI address range (FEE0_0000h, SDM vol.
/// 3A §11.11.1), and the firmware flash up to 4 GiB. Never RAM.
pub const FIXED_DEVICE_SPACE: (u64, u64) = (0xfec0_0000, 0x1_0000_0000);

/// The whole 4 KiB pages inside `[start, end)`, page 0 left out (the kernel keeps it
/// unmapped, so a null pointer faults): the part of a RAM region that is identity-mapped.
/// `None` when no whole page is inside, including for a region in the last page of the
/// address space, whose rounding up would wrap.
pub fn whole_pages(start: u64, end: u64) -> Option<(u64, u64)> {
    const PAGE: u64 = 4096;
    let first = start.max(PAGE).checked_next_multiple_of(PAGE)?;
    let last = end & !(PAGE - 1);
    (first < last).then_some((first, last))
}

impl MemoryKind {
    /// Whether the kernel treats the kind as RAM (identity-maps it): usable memory and the
    /// ACPI tables and storage.
    pub const fn is_ram(self) -> bool {
        matches!(
            self,
            MemoryKind::Usable | MemoryKind::AcpiReclaimable | MemoryKind::AcpiNvs
        )
    }
}

impl BootInfo {
    /// Takes `[start, end)` out of every RAM region ([`MemoryKind::is_ram`]); other kinds
    /// stay. A region cut in two keeps both parts while the map has room; an upper part that
    /// does not fit is dropped and counted in [`BootInfo::dropped_regions`] (a range absent
    /// from the map is never used). Returns the bytes no longer RAM.
    pub fn remove_ram(&mut self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let mut removed = 0u64;
        let mut i = 0;
        while i < self.region_count {
            let r = self.regions[i];
            let (r_start, r_end) = (r.start, r.end());
            if !r.kind.is_ram() || r_end <= start || end <= r_start {
                i += 1;
                continue;
            }
            let below = (r_start < start).then(|| MemoryRegion {
                start: r_start,
                len: start - r_start,
                kind: r.kind,
            });
            let above = (end < r_end).then(|| MemoryRegion {
                start: end,
                len: r_end - end,
                kind: r.kind,
            });
            removed = removed.saturating_add(r_end.min(end) - r_start.max(start));
            match (below, above) {
                (Some(b), Some(a)) => {
                    self.regions[i] = b;
                    if self.region_count < self.regions.len() {
                        self.regions.copy_within(i + 1..self.region_count, i + 2);
                        self.regions[i + 1] = a;
                        self.region_count += 1;
                        i += 2;
                    } else {
                        removed = removed.saturating_add(a.len);
                        self.dropped_regions = self.dropped_regions.saturating_add(1);
                        i += 1;
                    }
                }
                (Some(part), None) | (None, Some(part)) => {
                    self.regions[i] = part;
                    i += 1;
                }
                (None, None) => {
                    self.regions.copy_within(i + 1..self.region_count, i);
                    self.region_count -= 1;
                }
            }
        }
        removed
    }

    /// Takes out of the RAM everything at or above `limit` and the [`FIXED_DEVICE_SPACE`]:
    /// what the kernel may identity-map. Returns the bytes no longer RAM.
    pub fn keep_addressable_ram(&mut self, limit: u64) -> u64 {
        // Region ends saturate at u64::MAX, so `[limit, u64::MAX)` covers every byte above.
        let above = self.remove_ram(limit, u64::MAX);
        let fixed = self.remove_ram(FIXED_DEVICE_SPACE.0, FIXED_DEVICE_SPACE.1);
        above.saturating_add(fixed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::Loader;

    fn r(start: u64, len: u64, kind: MemoryKind) -> MemoryRegion {
        MemoryRegion { start, len, kind }
    }

    fn map(raw: &[MemoryRegion]) -> BootInfo {
        let mut info = BootInfo::empty(Loader::Multiboot2);
        info.set_memory_map(raw.iter().copied()).unwrap();
        info
    }

    #[test]
    fn ram_above_the_limit_and_in_the_device_space_is_taken_out() {
        let mut info = map(&[
            r(0, 0x9fc00, MemoryKind::Usable),
            r(0x10_0000, 0x1_0000_0000 - 0x10_0000, MemoryKind::Usable),
            r(0xfed0_0000, 0x1000, MemoryKind::Reserved),
            r(0x1_0000_0000, 0x4000_0000, MemoryKind::Usable),
            r(0x0000_7fff_ffff_0000, 0x2_0000, MemoryKind::AcpiNvs),
            r(0xfff0_0000_0000_0000, 0x4000_0000, MemoryKind::Usable),
            r(u64::MAX - 100, 50, MemoryKind::AcpiNvs),
        ]);
        let removed = info.keep_addressable_ram(1 << 47);
        let m = info.memory_map();
        for region in m.iter().filter(|r| r.kind.is_ram()) {
            assert!(region.end() <= 1 << 47, "{region:?}");
            let (s, e) = FIXED_DEVICE_SPACE;
            assert!(region.end() <= s || e <= region.start, "{region:?}");
        }
        // The reserved entry stays; RAM below the device space and above 4 GiB stays.
        assert!(m.contains(&r(0xfed0_0000, 0x1000, MemoryKind::Reserved)));
        assert!(m.contains(&r(0x10_0000, 0xfec0_0000 - 0x10_0000, MemoryKind::Usable)));
        assert!(m.contains(&r(0x1_0000_0000, 0x4000_0000, MemoryKind::Usable)));
        assert!(m.contains(&r(0x0000_7fff_ffff_0000, 0x1_0000, MemoryKind::AcpiNvs)));
        let expected = (0x1_0000_0000 - 0xfec0_0000 - 0x1000) + 0x1_0000 + 0x4000_0000 + 50;
        assert_eq!(removed, expected);
    }

    #[test]
    fn a_split_in_a_full_map_drops_the_upper_part_and_counts_it() {
        // Alternating kinds so that nothing merges: a full map.
        let raw: Vec<MemoryRegion> = (0..crate::info::MAX_MEMORY_REGIONS as u64)
            .map(|i| {
                let kind = if i % 2 == 0 {
                    MemoryKind::Usable
                } else {
                    MemoryKind::Reserved
                };
                r(i * 0x1000_0000, 0x1000_0000, kind)
            })
            .collect();
        let mut info = map(&raw);
        assert_eq!(info.memory_map().len(), crate::info::MAX_MEMORY_REGIONS);
        let before = info.dropped_regions;
        // Through the middle of the first usable region.
        let removed = info.remove_ram(0x100_0000, 0x200_0000);
        assert_eq!(info.memory_map()[0], r(0, 0x100_0000, MemoryKind::Usable));
        assert_eq!(info.dropped_regions, before + 1);
        assert_eq!(removed, 0x1000_0000 - 0x100_0000);
        // A region taken out whole leaves no gap in the array.
        let removed = info.remove_ram(0x2000_0000, 0x3000_0000);
        assert_eq!(removed, 0x1000_0000);
        assert!(
            info.memory_map()
                .windows(2)
                .all(|w| w[0].end() <= w[1].start)
        );
        assert!(info.memory_map().iter().all(|r| r.len > 0));
    }

    #[test]
    fn whole_pages_round_inwards_and_never_wrap() {
        assert_eq!(whole_pages(0, 0x9fc00), Some((0x1000, 0x9f000)));
        assert_eq!(whole_pages(0x1000, 0x3000), Some((0x1000, 0x3000)));
        assert_eq!(whole_pages(0x1001, 0x2fff), None);
        assert_eq!(whole_pages(0, 0x1000), None);
        assert_eq!(whole_pages(u64::MAX - 100, u64::MAX - 50), None);
        assert_eq!(
            whole_pages(u64::MAX - 0x2fff, u64::MAX),
            Some((u64::MAX - 0x2fff, u64::MAX - 0xfff))
        );
    }

    #[test]
    fn nothing_to_take_changes_nothing() {
        let mut info = map(&[r(0x10_0000, 0x10_0000, MemoryKind::Usable)]);
        let before = info.memory_map().to_vec();
        assert_eq!(info.remove_ram(5, 5), 0);
        assert_eq!(info.remove_ram(0x40_0000, 0x50_0000), 0);
        assert_eq!(info.keep_addressable_ram(1 << 36), 0);
        assert_eq!(info.memory_map(), &before[..]);
    }
}
