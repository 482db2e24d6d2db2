//! Range arithmetic on physical addresses, without a heap: the raw material of the kernel's
//! frame allocator.
//!
//! [`RangeSet`] holds disjoint, sorted, half-open `[start, end)` ranges in a fixed array;
//! [`usable_frames`] turns a memory map into the 4 KiB frames the kernel may hand out, minus
//! the ranges it must keep (the first 1 MiB, its own image, the boot information, ACPI
//! tables). Ranges are half-open, so the very last byte of the 64-bit space is never part of
//! one; no RAM lives there.

#![forbid(unsafe_code)]
use core::fmt;

use crate::info::{MAX_MEMORY_REGIONS, MemoryKind, MemoryRegion};

/// Size of a physical frame.
pub const FRAME_SIZE: u64 = 4096;
/// Capacity of the set [`usable_frames`] returns: each excluded range can split one range in
/// two, so twice the memory-map capacity leaves room for [`MAX_MEMORY_REGIONS`] splits.
pub const FRAME_RANGES: usize = 2 * MAX_MEMORY_REGIONS;
/// The set of free frames [`usable_frames`] returns.
pub type FrameRanges = RangeSet<FRAME_RANGES>;

/// A [`RangeSet`] operation needed more than its `N` slots; the set was left unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapacityError {
    /// The set's capacity.
    pub capacity: usize,
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "range set full ({} ranges)", self.capacity)
    }
}

/// Up to `N` disjoint half-open ranges `[start, end)` of `u64`, kept sorted, non-empty, and
/// merged where they touch (so `[0, 4)` and `[4, 8)` are one range `[0, 8)`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RangeSet<const N: usize> {
    ranges: [(u64, u64); N],
    len: usize,
}

impl<const N: usize> Default for RangeSet<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for RangeSet<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(s, e)| s..e))
            .finish()
    }
}

impl<const N: usize> RangeSet<N> {
    /// The empty set.
    pub const fn new() -> Self {
        RangeSet {
            ranges: [(0, 0); N],
            len: 0,
        }
    }

    /// The ranges, sorted, as `(start, end)` pairs.
    pub fn as_slice(&self) -> &[(u64, u64)] {
        self.ranges.get(..self.len).unwrap_or(&[])
    }

    /// Iterates over the ranges in address order, as `(start, end)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.as_slice().iter().copied()
    }

    /// Number of (merged) ranges.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the set holds no range.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The capacity `N`.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Total bytes covered.
    pub fn total(&self) -> u64 {
        // Disjoint ranges inside [0, u64::MAX) cannot sum past u64::MAX.
        self.iter().map(|(s, e)| e - s).sum()
    }

    /// Whether `addr` lies in one of the ranges.
    pub fn contains(&self, addr: u64) -> bool {
        self.iter().any(|(s, e)| s <= addr && addr < e)
    }

    /// Removes every range.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Adds `[start, end)`, merging with the ranges it overlaps or touches. An empty range
    /// (`start >= end`) is a no-op. Fails, leaving the set unchanged, only when the new range
    /// touches nothing and all `N` slots are used.
    pub fn insert(&mut self, start: u64, end: u64) -> Result<(), CapacityError> {
        if start >= end {
            return Ok(());
        }
        // First range that ends at or after `start` (could merge), and first that starts
        // after `end` (cannot).
        let first = self.as_slice().partition_point(|&(_, e)| e < start);
        let last = self.as_slice().partition_point(|&(s, _)| s <= end);
        if first == last {
            // Touches nothing: shift the tail right by one.
            if self.len == N {
                return Err(CapacityError { capacity: N });
            }
            self.ranges.copy_within(first..self.len, first + 1);
            self.ranges[first] = (start, end);
            self.len += 1;
        } else {
            // Merge ranges first..last into one, then close the gap.
            let merged = (
                start.min(self.ranges[first].0),
                end.max(self.ranges[last - 1].1),
            );
            self.ranges[first] = merged;
            self.ranges.copy_within(last..self.len, first + 1);
            self.len -= last - first - 1;
        }
        Ok(())
    }

    /// Subtracts `[start, end)`. Ranges inside it disappear, ranges overlapping an end are
    /// trimmed, and a range strictly containing it is split in two, which needs a free slot:
    /// without one this fails and leaves the set unchanged.
    pub fn remove(&mut self, start: u64, end: u64) -> Result<(), CapacityError> {
        if start >= end {
            return Ok(());
        }
        let first = self.as_slice().partition_point(|&(_, e)| e <= start);
        let last = self.as_slice().partition_point(|&(s, _)| s < end);
        if first >= last {
            return Ok(()); // overlaps nothing
        }
        let (first_start, _) = self.ranges[first];
        let (_, last_end) = self.ranges[last - 1];
        let mut keep: [(u64, u64); 2] = [(0, 0); 2];
        let mut kept = 0;
        if first_start < start {
            keep[kept] = (first_start, start);
            kept += 1;
        }
        if last_end > end {
            keep[kept] = (end, last_end);
            kept += 1;
        }
        let removed = last - first;
        if kept > removed {
            // One range split in two.
            if self.len == N {
                return Err(CapacityError { capacity: N });
            }
            self.ranges.copy_within(last..self.len, last + 1);
        } else {
            self.ranges.copy_within(last..self.len, first + kept);
        }
        self.ranges[first..first + kept].copy_from_slice(&keep[..kept]);
        self.len = self.len + kept - removed;
        Ok(())
    }

    /// Removes every range that overlaps `[start, end)` entirely (not only the overlap).
    /// Never needs a slot: the fallback when [`RangeSet::remove`] would have to split in a
    /// full set and losing a little more is better than keeping what must go.
    pub fn remove_overlapping(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let first = self.as_slice().partition_point(|&(_, e)| e <= start);
        let last = self.as_slice().partition_point(|&(s, _)| s < end);
        if first < last {
            self.ranges.copy_within(last..self.len, first);
            self.len -= last - first;
        }
    }

    /// Shrinks every range to multiples of `align` (a power of two): starts rounded up, ends
    /// rounded down; ranges left empty disappear.
    pub fn align_inward(&mut self, align: u64) {
        debug_assert!(align.is_power_of_two());
        let mask = align.wrapping_sub(1);
        let mut kept = 0;
        for i in 0..self.len {
            let (s, e) = self.ranges[i];
            let s = match s.checked_add(mask) {
                Some(v) => v & !mask,
                None => continue,
            };
            let e = e & !mask;
            if s < e {
                self.ranges[kept] = (s, e);
                kept += 1;
            }
        }
        self.len = kept;
    }
}

/// The 4 KiB frames the kernel may allocate: every [`MemoryKind::Usable`] range of `map`,
/// minus every non-usable range of `map` (so an un-normalised map is still safe), shrunk to
/// whole frames (start rounded up, end rounded down), minus every `exclude` range `(start,
/// end)` widened to whole frames (start rounded down, end rounded up).
///
/// Never hands out a byte it should not: where the set's capacity ([`FRAME_RANGES`]) runs out,
/// the affected usable range is dropped instead (some memory lost, nothing unsafe).
pub fn usable_frames(map: &[MemoryRegion], exclude: &[(u64, u64)]) -> FrameRanges {
    let mut set = FrameRanges::new();
    for r in map.iter().filter(|r| r.kind == MemoryKind::Usable) {
        // Full: this range's memory is not offered (conservative).
        let _ = set.insert(r.start, r.end());
    }
    for r in map.iter().filter(|r| r.kind != MemoryKind::Usable) {
        if set.remove(r.start, r.end()).is_err() {
            set.remove_overlapping(r.start, r.end());
        }
    }
    set.align_inward(FRAME_SIZE);
    let mask = FRAME_SIZE - 1;
    for &(start, end) in exclude {
        if start >= end {
            continue;
        }
        let start = start & !mask;
        let end = end.checked_next_multiple_of(FRAME_SIZE).unwrap_or(u64::MAX);
        if set.remove(start, end).is_err() {
            set.remove_overlapping(start, end);
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set<const N: usize>(ranges: &[(u64, u64)]) -> RangeSet<N> {
        let mut s = RangeSet::new();
        for &(a, b) in ranges {
            s.insert(a, b).unwrap();
        }
        s
    }

    #[test]
    fn insert_merges_and_sorts() {
        let mut s: RangeSet<8> = set(&[(10, 20), (30, 40), (0, 5)]);
        assert_eq!(s.as_slice(), &[(0, 5), (10, 20), (30, 40)]);
        s.insert(20, 30).unwrap(); // touches both neighbours
        assert_eq!(s.as_slice(), &[(0, 5), (10, 40)]);
        s.insert(3, 12).unwrap(); // overlaps both
        assert_eq!(s.as_slice(), &[(0, 40)]);
        s.insert(5, 6).unwrap(); // inside
        assert_eq!(s.as_slice(), &[(0, 40)]);
        s.insert(7, 7).unwrap(); // empty
        s.insert(9, 3).unwrap(); // reversed = empty
        assert_eq!(s.as_slice(), &[(0, 40)]);
        s.insert(50, u64::MAX).unwrap();
        assert_eq!(s.total(), 40 + (u64::MAX - 50));
        assert!(s.contains(39) && !s.contains(40) && s.contains(50) && !s.contains(u64::MAX));
    }

    #[test]
    fn insert_reports_full() {
        let mut s: RangeSet<2> = set(&[(0, 1), (10, 11)]);
        assert_eq!(s.insert(5, 6), Err(CapacityError { capacity: 2 }));
        assert_eq!(s.as_slice(), &[(0, 1), (10, 11)]);
        // Merging needs no slot.
        s.insert(1, 10).unwrap();
        assert_eq!(s.as_slice(), &[(0, 11)]);
    }

    #[test]
    fn remove_trims_and_splits() {
        let mut s: RangeSet<8> = set(&[(0, 100), (200, 300)]);
        s.remove(50, 250).unwrap();
        assert_eq!(s.as_slice(), &[(0, 50), (250, 300)]);
        s.remove(10, 20).unwrap(); // split
        assert_eq!(s.as_slice(), &[(0, 10), (20, 50), (250, 300)]);
        s.remove(0, 10).unwrap(); // whole range
        assert_eq!(s.as_slice(), &[(20, 50), (250, 300)]);
        s.remove(60, 70).unwrap(); // nothing
        s.remove(50, 250).unwrap(); // touching only
        assert_eq!(s.as_slice(), &[(20, 50), (250, 300)]);
        s.remove(0, u64::MAX).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.total(), 0);
    }

    #[test]
    fn remove_split_in_full_set_fails_unchanged() {
        let mut s: RangeSet<2> = set(&[(0, 100), (200, 300)]);
        assert_eq!(s.remove(10, 20), Err(CapacityError { capacity: 2 }));
        assert_eq!(s.as_slice(), &[(0, 100), (200, 300)]);
        s.remove(90, 210).unwrap(); // trims two, needs no slot
        assert_eq!(s.as_slice(), &[(0, 90), (210, 300)]);
        s.remove_overlapping(10, 20);
        assert_eq!(s.as_slice(), &[(210, 300)]);
    }

    #[test]
    fn align_inward_drops_slivers() {
        let mut s: RangeSet<8> = set(&[(0x10, 0x2010), (0x3000, 0x3fff), (u64::MAX - 5, u64::MAX)]);
        s.align_inward(0x1000);
        assert_eq!(s.as_slice(), &[(0x1000, 0x2000)]);
    }

    /// A slow model: one bool per unit address in 0..64.
    #[test]
    fn matches_bitmap_model() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // Miri interprets every step: a few rounds there, many natively.
        for _ in 0..if cfg!(miri) { 2 } else { 2000 } {
            let mut s: RangeSet<64> = RangeSet::new();
            let mut model = [false; 64];
            for _ in 0..20 {
                let a = next() % 64;
                let b = next() % 65;
                let (a, b) = (a.min(b), a.max(b));
                if next() % 3 == 0 {
                    s.remove(a, b).unwrap();
                    model[a as usize..b as usize].fill(false);
                } else {
                    s.insert(a, b).unwrap();
                    model[a as usize..b as usize].fill(true);
                }
                let covered: Vec<bool> = (0..64).map(|x| s.contains(x)).collect();
                assert_eq!(covered, model);
                assert_eq!(s.total(), model.iter().filter(|&&b| b).count() as u64);
                // Sorted, non-empty, not touching.
                for w in s.as_slice().windows(2) {
                    assert!(w[0].1 < w[1].0, "{s:?}");
                }
                assert!(s.iter().all(|(a, b)| a < b));
            }
        }
    }

    fn region(start: u64, len: u64, kind: MemoryKind) -> MemoryRegion {
        MemoryRegion { start, len, kind }
    }

    #[test]
    fn usable_frames_rounds_and_excludes() {
        use MemoryKind::*;
        // QEMU q35 with 128 MiB, roughly.
        let map = [
            region(0, 0x9fc00, Usable),
            region(0x9fc00, 0x400, Reserved),
            region(0xf0000, 0x10000, Reserved),
            region(0x10_0000, 0x7ee_0000 - 0x10_0000, Usable),
            region(0x7ee_0000, 0x2_0000, Reserved),
            region(0xfeff_c000, 0x4000, Reserved),
        ];
        let exclude = [
            (0, 0x10_0000),             // first MiB
            (0x10_0000, 0x25_3123),     // kernel image, unaligned end
            (0x40_0800, 0x40_0900),     // something small, unaligned both ends
            (0x7fff_0000, 0x8000_0000), // outside RAM
        ];
        let f = usable_frames(&map, &exclude);
        assert_eq!(
            f.as_slice(),
            &[(0x25_4000, 0x40_0000), (0x40_1000, 0x7ee_0000)]
        );
        assert!(
            f.iter()
                .all(|(s, e)| s % FRAME_SIZE == 0 && e % FRAME_SIZE == 0)
        );
    }

    #[test]
    fn usable_frames_is_safe_on_unnormalised_maps() {
        use MemoryKind::*;
        let map = [
            region(0x1000, 0x10_0000, Usable),
            region(0x8800, 0x100, AcpiNvs),    // inside, unaligned
            region(0x1_0000, 0x1000, Usable),  // duplicate inside
            region(0x20_0000, 0x1800, Usable), // only one whole frame
            region(0x20_1800, 0x1800, Usable), // continues it: merged before rounding
            region(u64::MAX - 0x1000, 0x5000, Usable), // clamped end
        ];
        let f = usable_frames(&map, &[(5, 5), (u64::MAX - 1, u64::MAX)]);
        assert_eq!(
            f.as_slice(),
            &[
                (0x1000, 0x8000),
                (0x9000, 0x10_1000),
                (0x20_0000, 0x20_3000),
            ]
        );
    }

    #[test]
    fn usable_frames_full_set_drops_instead_of_leaking() {
        // FRAME_RANGES usable frames, every other one, then an exclude that splits a range.
        let map: Vec<MemoryRegion> = (0..FRAME_RANGES as u64)
            .map(|i| region(i * 0x4000, 0x3000, MemoryKind::Usable))
            .collect();
        let f = usable_frames(&map, &[(0x1000, 0x2000)]);
        assert_eq!(f.len(), FRAME_RANGES - 1);
        assert!(!f.contains(0x0) && !f.contains(0x1000) && !f.contains(0x2000));
        assert_eq!(f.as_slice()[0], (0x4000, 0x7000));
    }
}
