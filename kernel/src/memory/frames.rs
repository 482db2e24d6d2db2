//! The physical frame allocator.
//!
//! Free memory is a set of disjoint, page-aligned extents ([`boot::ranges::RangeSet`]),
//! built once from the loader's memory map: only `Usable` ranges, minus low memory, the
//! kernel image, the boot information and every ACPI table. A frame is taken from the lowest
//! extent and given back by re-inserting it (adjacent extents merge), so freeing everything
//! restores the starting set exactly. Freeing a frame that is already free is refused.
//!
//! Ownership: a frame handed out belongs to its caller until given back with
//! [`FrameAllocator::free`]; the kernel's long-lived users (page tables, the heap) never give
//! theirs back. A leaked frame costs 4 KiB until reboot, nothing else.

use boot::ranges::RangeSet;
use boot::{BootInfo, MemoryKind};
use spin::Mutex;
use x86_64::PhysAddr;
use x86_64::structures::paging::{PhysFrame, Size4KiB};

use super::{KernelImage, LOW_MEMORY_END, PAGE_SIZE, firmware::AcpiRanges};

/// Most free extents tracked. Boot needs a handful; frees that fragment memory use more.
pub const MAX_EXTENTS: usize = 512;

/// Why a frame could not be freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The address is not page-aligned.
    Misaligned(u64),
    /// Part of the range is already free: a double free.
    AlreadyFree(u64),
    /// The range was never part of allocatable memory.
    NotAllocatable(u64),
    /// The extent table is full; the frame is leaked (and counted).
    TooFragmented(u64),
}

/// The allocator's state.
pub struct FrameAllocator {
    free: RangeSet<MAX_EXTENTS>,
    /// Everything the allocator may ever hand out (for [`FreeError::NotAllocatable`]).
    managed: RangeSet<MAX_EXTENTS>,
    /// Frames lost to [`FreeError::TooFragmented`].
    leaked: u64,
}

impl FrameAllocator {
    /// One frame, the lowest free one.
    pub fn allocate(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let (start, _) = self.free.iter().next()?;
        self.free.remove(start, start + PAGE_SIZE).ok()?;
        PhysFrame::from_start_address(PhysAddr::new(start)).ok()
    }

    /// `count` physically contiguous frames starting at a multiple of `align` (a power of
    /// two, at least 4 KiB). Returns the first address.
    pub fn allocate_contiguous(&mut self, count: u64, align: u64) -> Option<u64> {
        let align = align.max(PAGE_SIZE);
        if !align.is_power_of_two() || count == 0 {
            return None;
        }
        let bytes = count.checked_mul(PAGE_SIZE)?;
        let (start, _) = self.free.iter().find_map(|(start, end)| {
            let aligned = start.checked_add(align - 1)? & !(align - 1);
            (aligned.checked_add(bytes)? <= end).then_some((aligned, end))
        })?;
        self.free.remove(start, start + bytes).ok()?;
        Some(start)
    }

    /// Gives back `count` frames starting at `start`.
    pub fn free(&mut self, start: u64, count: u64) -> Result<(), FreeError> {
        if !start.is_multiple_of(PAGE_SIZE) {
            return Err(FreeError::Misaligned(start));
        }
        let end = start.saturating_add(count.saturating_mul(PAGE_SIZE));
        if !covers(&self.managed, start, end) {
            return Err(FreeError::NotAllocatable(start));
        }
        if overlaps(&self.free, start, end) {
            return Err(FreeError::AlreadyFree(start));
        }
        self.free.insert(start, end).map_err(|_| {
            self.leaked += count;
            FreeError::TooFragmented(start)
        })
    }

    /// Bytes currently free.
    pub fn free_bytes(&self) -> u64 {
        self.free.total()
    }

    /// Bytes the allocator manages in all (free or handed out).
    pub fn managed_bytes(&self) -> u64 {
        self.managed.total()
    }

    /// Frames leaked because the extent table was full.
    pub fn leaked_frames(&self) -> u64 {
        self.leaked
    }
}

/// Whether one range of `set` covers all of `[start, end)`.
fn covers<const N: usize>(set: &RangeSet<N>, start: u64, end: u64) -> bool {
    set.iter().any(|(s, e)| s <= start && end <= e)
}

/// Whether any range of `set` overlaps `[start, end)`.
pub fn overlaps<const N: usize>(set: &RangeSet<N>, start: u64, end: u64) -> bool {
    set.iter().any(|(s, e)| s < end && start < e)
}

static FRAMES: Mutex<Option<FrameAllocator>> = Mutex::new(None);

/// Ranges that are never handed out, whatever the memory map says.
pub fn excluded_ranges(
    boot: &BootInfo,
    image: KernelImage,
    acpi: &AcpiRanges,
) -> ([(u64, u64); 3 + super::firmware::MAX_TABLES], usize) {
    let mut out = [(0, 0); 3 + super::firmware::MAX_TABLES];
    out[0] = (0, LOW_MEMORY_END);
    out[1] = image.all;
    out[2] = (
        boot.raw_address,
        boot.raw_address.saturating_add(boot.raw_size),
    );
    let mut n = 3;
    for r in acpi.as_slice() {
        out[n] = *r;
        n += 1;
    }
    (out, n)
}

/// Builds the allocator from the memory map. Called once, early.
pub fn init(boot: &BootInfo, image: KernelImage, acpi: &AcpiRanges) {
    let (exclude, n) = excluded_ranges(boot, image, acpi);
    let usable = boot::ranges::usable_frames(boot.memory_map(), &exclude[..n]);
    let mut free = RangeSet::<MAX_EXTENTS>::new();
    for (start, end) in usable.iter() {
        // Capacity is above `usable`'s, so this cannot fail.
        let _ = free.insert(start, end);
    }
    if !boot
        .memory_map()
        .iter()
        .any(|r| r.kind == MemoryKind::Usable)
    {
        log::error!("memory map has no usable RAM");
    }
    let managed = free;
    *FRAMES.lock() = Some(FrameAllocator {
        free,
        managed,
        leaked: 0,
    });
}

/// Runs `f` with the allocator locked. Panics if called before [`init`], which is a kernel
/// bug (nothing can allocate before the memory map is read).
pub fn with<R>(f: impl FnOnce(&mut FrameAllocator) -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut guard = FRAMES.lock();
        let allocator = guard
            .as_mut()
            .expect("frame allocator used before memory::init");
        f(allocator)
    })
}

/// The `x86_64` crate's view of the global allocator, for its page-table mapper.
pub struct GlobalFrames;

// SAFETY: frames come from the global allocator, which hands each free frame out once and
// only frames inside usable RAM that nothing else uses.
unsafe impl x86_64::structures::paging::FrameAllocator<Size4KiB> for GlobalFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        with(|a| a.allocate())
    }
}
