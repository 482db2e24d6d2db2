//! Virtual address space for device mappings: which parts of the kernel's MMIO window are
//! free, handed out as 4 KiB-page ranges or 2 MiB-aligned ranges for large pages.
//!
//! The kernel's `memory::mmio` keeps one [`MmioSpace`] and writes the page tables; this is the
//! bookkeeping alone, so it is host-tested. It needs no heap (the window is set up before the
//! kernel heap): free ranges live in fixed arrays.
//!
//! The window's lower half takes 4 KiB mappings and its upper half 2 MiB ones. A 2 MiB slot
//! once used by small pages keeps its page table after they are unmapped, and a large page
//! cannot be placed over a page table, so the two kinds never share a slot (x86-64 paging:
//! Intel SDM vol. 3A §4.5, a PDE maps either a 2 MiB page or a page table).
//!
//! Ownership: [`MmioSpace::allocate`] hands a range to the caller (the kernel's `Mmio`, whose
//! `Drop` gives it back with [`MmioSpace::free`]). A range that is never given back stays
//! used: a leak costs address space, never a double mapping. Giving back a range that is not
//! allocated is refused.

use core::fmt;

/// 4 KiB, the small page size (Intel SDM vol. 3A §4.5).
pub const PAGE: u64 = 4 << 10;
/// 2 MiB, the large page size (a PDE with PS = 1, Intel SDM vol. 3A §4.5).
pub const HUGE_PAGE: u64 = 2 << 20;

/// Why space could not be handed out or given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceError {
    /// A window, size or address that is zero, wraps, or is not aligned to its page size.
    BadRange {
        /// Start.
        start: u64,
        /// Size in bytes.
        size: u64,
    },
    /// No free range is large enough.
    Full {
        /// Bytes asked for.
        size: u64,
    },
    /// Too fragmented: the free list has no slot left for the split.
    Fragmented,
    /// Given back, but (part of) it is free already or outside the window.
    NotAllocated {
        /// Start.
        start: u64,
    },
}

impl fmt::Display for SpaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpaceError::BadRange { start, size } => {
                write!(f, "bad virtual range {start:#x}+{size:#x}")
            }
            SpaceError::Full { size } => write!(f, "no virtual space for {size:#x} bytes"),
            SpaceError::Fragmented => f.write_str("virtual space too fragmented"),
            SpaceError::NotAllocated { start } => {
                write!(f, "virtual range at {start:#x} was not allocated")
            }
        }
    }
}

/// Sorted, disjoint, non-touching `[start, end)` ranges, at most `N`.
#[derive(Clone, Debug)]
struct Ranges<const N: usize> {
    ranges: [(u64, u64); N],
    len: usize,
}

impl<const N: usize> Ranges<N> {
    const EMPTY: Self = Ranges {
        ranges: [(0, 0); N],
        len: 0,
    };

    fn as_slice(&self) -> &[(u64, u64)] {
        &self.ranges[..self.len]
    }

    fn total(&self) -> u64 {
        self.as_slice().iter().map(|(s, e)| e - s).sum()
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.as_slice().iter().any(|&(s, e)| s < end && start < e)
    }

    /// Adds `[start, end)`, which overlaps nothing, merging with touching neighbours.
    fn insert(&mut self, start: u64, end: u64) -> Result<(), SpaceError> {
        let i = self.as_slice().partition_point(|&(_, e)| e < start);
        let joins_left = i < self.len && self.ranges[i].1 == start;
        let right = if joins_left { i + 1 } else { i };
        let joins_right = right < self.len && self.ranges[right].0 == end;
        match (joins_left, joins_right) {
            (true, true) => {
                self.ranges[i].1 = self.ranges[i + 1].1;
                self.ranges.copy_within(i + 2..self.len, i + 1);
                self.len -= 1;
            }
            (true, false) => self.ranges[i].1 = end,
            (false, true) => self.ranges[i].0 = start,
            (false, false) => {
                if self.len == N {
                    return Err(SpaceError::Fragmented);
                }
                self.ranges.copy_within(i..self.len, i + 1);
                self.ranges[i] = (start, end);
                self.len += 1;
            }
        }
        Ok(())
    }

    /// Takes the first `size` bytes aligned to `align` that are free.
    fn take(&mut self, size: u64, align: u64) -> Result<u64, SpaceError> {
        for i in 0..self.len {
            let (s, e) = self.ranges[i];
            let Some(start) = s.checked_next_multiple_of(align) else {
                continue;
            };
            if start >= e || e - start < size {
                continue;
            }
            let end = start + size;
            match (start == s, end == e) {
                (true, true) => {
                    self.ranges.copy_within(i + 1..self.len, i);
                    self.len -= 1;
                }
                (true, false) => self.ranges[i].0 = end,
                (false, true) => self.ranges[i].1 = start,
                (false, false) => {
                    if self.len == N {
                        return Err(SpaceError::Fragmented);
                    }
                    self.ranges.copy_within(i + 1..self.len, i + 2);
                    self.ranges[i] = (s, start);
                    self.ranges[i + 1] = (end, e);
                    self.len += 1;
                }
            }
            return Ok(start);
        }
        Err(SpaceError::Full { size })
    }
}

/// The free virtual space of an MMIO window, in 4 KiB and 2 MiB slots; `N` free ranges of
/// each kind at most. Const-constructible (empty), for a `static`.
#[derive(Clone, Debug)]
pub struct MmioSpace<const N: usize> {
    /// The lower half: 4 KiB mappings.
    small: (u64, u64),
    /// The upper half: 2 MiB mappings.
    huge: (u64, u64),
    free: Ranges<N>,
    free_huge: Ranges<N>,
}

impl<const N: usize> MmioSpace<N> {
    /// No space at all (every allocation fails until [`MmioSpace::window`] replaces it).
    pub const EMPTY: Self = MmioSpace {
        small: (0, 0),
        huge: (0, 0),
        free: Ranges::EMPTY,
        free_huge: Ranges::EMPTY,
    };

    /// The window `[base, base + size)`, all free: the lower half for 4 KiB mappings, the
    /// upper half for 2 MiB ones. `base` and `size / 2` must be 2 MiB-aligned and nonzero.
    pub fn window(base: u64, size: u64) -> Result<Self, SpaceError> {
        let bad = SpaceError::BadRange { start: base, size };
        let half = size / 2;
        let end = base.checked_add(size).ok_or(bad)?;
        if half == 0 || !base.is_multiple_of(HUGE_PAGE) || !half.is_multiple_of(HUGE_PAGE) || N == 0
        {
            return Err(bad);
        }
        let middle = base + half;
        let mut space = Self::EMPTY;
        space.small = (base, middle);
        space.huge = (middle, end);
        space.free.insert(base, middle)?;
        space.free_huge.insert(middle, end)?;
        Ok(space)
    }

    /// Hands out `size` bytes: 2 MiB-aligned from the large-page half if `huge` (`size` a
    /// multiple of 2 MiB), else page-aligned from the small-page half (`size` a multiple of
    /// 4 KiB). Returns the start.
    pub fn allocate(&mut self, size: u64, huge: bool) -> Result<u64, SpaceError> {
        let page = if huge { HUGE_PAGE } else { PAGE };
        if size == 0 || !size.is_multiple_of(page) {
            return Err(SpaceError::BadRange { start: 0, size });
        }
        if huge {
            self.free_huge.take(size, page)
        } else {
            self.free.take(size, page)
        }
    }

    /// Gives back what [`MmioSpace::allocate`] handed out (the same `start`, `size` and
    /// `huge`). Refused, changing nothing, if any of it is free already or outside its half.
    pub fn free(&mut self, start: u64, size: u64, huge: bool) -> Result<(), SpaceError> {
        let end = start
            .checked_add(size)
            .filter(|_| size > 0)
            .ok_or(SpaceError::BadRange { start, size })?;
        let ((lo, hi), set) = if huge {
            (self.huge, &mut self.free_huge)
        } else {
            (self.small, &mut self.free)
        };
        if start < lo || end > hi || set.overlaps(start, end) {
            return Err(SpaceError::NotAllocated { start });
        }
        set.insert(start, end)
    }

    /// Free bytes in both halves.
    pub fn free_bytes(&self) -> u64 {
        self.free.total() + self.free_huge.total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0xffff_9000_0000_0000;
    const SIZE: u64 = 1 << 40;
    const MIB: u64 = 1 << 20;

    fn space() -> MmioSpace<8> {
        MmioSpace::window(BASE, SIZE).unwrap()
    }

    #[test]
    fn large_mappings_keep_working_after_a_large_ecam_mapping() {
        let mut s = space();
        // An ECAM window of 256 buses (256 MiB), then more 2 MiB mappings: each gets space
        // of its own in the large-page half.
        let ecam = s.allocate(256 * MIB, true).unwrap();
        let a = s.allocate(2 * MIB, true).unwrap();
        let b = s.allocate(4 * MIB, true).unwrap();
        let mut all = [(ecam, 256 * MIB), (a, 2 * MIB), (b, 4 * MIB)];
        all.sort();
        for w in all.windows(2) {
            assert!(
                w[0].0 + w[0].1 <= w[1].0,
                "overlapping large mappings: {all:x?}"
            );
        }
        for (start, _) in all {
            assert!(start >= BASE + SIZE / 2 && start.is_multiple_of(HUGE_PAGE));
        }
        assert_eq!(s.free_bytes(), SIZE - 262 * MIB);
        // Small mappings come from the other half and do not disturb them.
        let small = s.allocate(3 * PAGE, false).unwrap();
        assert!((BASE..BASE + SIZE / 2).contains(&small));
        for (start, size) in all {
            s.free(start, size, true).unwrap();
        }
        s.free(small, 3 * PAGE, false).unwrap();
        assert_eq!(s.free_bytes(), SIZE);
    }

    #[test]
    fn freed_space_is_reused_and_merged() {
        let mut s = space();
        let a = s.allocate(PAGE, false).unwrap();
        let b = s.allocate(2 * PAGE, false).unwrap();
        let c = s.allocate(PAGE, false).unwrap();
        assert_eq!((a, b, c), (BASE, BASE + PAGE, BASE + 3 * PAGE));
        s.free(b, 2 * PAGE, false).unwrap();
        assert_eq!(s.allocate(PAGE, false), Ok(b), "first fit reuses the hole");
        s.free(b, PAGE, false).unwrap();
        s.free(a, PAGE, false).unwrap();
        s.free(c, PAGE, false).unwrap();
        assert_eq!(s.free_bytes(), SIZE);
        // Merged back into one range: a whole half is available again.
        assert_eq!(s.allocate(SIZE / 2, false), Ok(BASE));
    }

    #[test]
    fn double_and_foreign_frees_are_refused() {
        let mut s = space();
        let a = s.allocate(PAGE, false).unwrap();
        s.free(a, PAGE, false).unwrap();
        assert_eq!(
            s.free(a, PAGE, false),
            Err(SpaceError::NotAllocated { start: a })
        );
        let h = s.allocate(HUGE_PAGE, true).unwrap();
        assert_eq!(
            s.free(h, HUGE_PAGE, false),
            Err(SpaceError::NotAllocated { start: h }),
            "large-page space given back as small"
        );
        assert_eq!(
            s.free(0x1000, PAGE, false),
            Err(SpaceError::NotAllocated { start: 0x1000 })
        );
        s.free(h, HUGE_PAGE, true).unwrap();
        assert_eq!(s.free_bytes(), SIZE);
    }

    #[test]
    fn sizes_and_windows_are_checked() {
        let mut s = space();
        assert!(matches!(
            s.allocate(0, false),
            Err(SpaceError::BadRange { .. })
        ));
        assert!(matches!(
            s.allocate(PAGE + 1, false),
            Err(SpaceError::BadRange { .. })
        ));
        assert!(matches!(
            s.allocate(PAGE, true),
            Err(SpaceError::BadRange { .. })
        ));
        assert_eq!(s.allocate(SIZE, true), Err(SpaceError::Full { size: SIZE }));
        assert!(MmioSpace::<8>::window(BASE + PAGE, SIZE).is_err());
        assert!(MmioSpace::<8>::window(BASE, 0).is_err());
        assert!(MmioSpace::<8>::window(u64::MAX - HUGE_PAGE + 1, 4 * HUGE_PAGE).is_err());
        let mut empty = MmioSpace::<8>::EMPTY;
        assert_eq!(
            empty.allocate(PAGE, false),
            Err(SpaceError::Full { size: PAGE })
        );
    }

    #[test]
    fn a_full_free_list_refuses_instead_of_losing_space() {
        let mut s = MmioSpace::<2>::window(BASE, 64 * MIB).unwrap();
        let pages: [u64; 4] = core::array::from_fn(|_| s.allocate(PAGE, false).unwrap());
        // Holes at pages 0 and 2: two free ranges (with the tail, three would be needed).
        s.free(pages[0], PAGE, false).unwrap();
        assert_eq!(s.free(pages[2], PAGE, false), Err(SpaceError::Fragmented));
        // Nothing was lost: page 2 is still allocated and can be given back later.
        s.free(pages[1], PAGE, false).unwrap();
        s.free(pages[2], PAGE, false).unwrap();
        s.free(pages[3], PAGE, false).unwrap();
        assert_eq!(s.free_bytes(), 64 * MIB);
    }
}
