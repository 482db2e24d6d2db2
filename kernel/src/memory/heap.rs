//! The kernel heap: `linked_list_allocator` over one physically contiguous run of frames.
//!
//! Size: an eighth of usable memory, at least 2 MiB and at most 128 MiB. The frames are
//! taken from the frame allocator once and never given back; the heap lives as long as the
//! kernel. Every `Box`, `Vec` and `String` in the kernel comes from here.

use boot::BootInfo;
use linked_list_allocator::LockedHeap;

use super::{PAGE_SIZE, frames};

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

const MIN_HEAP: u64 = 2 << 20;
const MAX_HEAP: u64 = 128 << 20;

/// Size of the heap for this much usable memory.
pub fn size_for(usable: u64) -> u64 {
    (usable / 8).clamp(MIN_HEAP, MAX_HEAP) & !(PAGE_SIZE - 1)
}

/// Takes the heap's frames and hands them to the allocator.
pub fn init(boot: &BootInfo) {
    let mut size = size_for(boot.usable_bytes());
    let start = loop {
        match frames::with(|f| f.allocate_contiguous(size / PAGE_SIZE, PAGE_SIZE)) {
            Some(start) => break start,
            None if size > MIN_HEAP => size /= 2,
            None => panic!("no {MIN_HEAP:#x} bytes of contiguous memory for the heap"),
        }
    };
    // SAFETY: the frames were just taken from the frame allocator, so nothing else uses
    // them; RAM is identity-mapped writable, and the heap is initialised exactly once.
    unsafe { HEAP.lock().init(start as *mut u8, size as usize) };
    log::debug!("heap: {} KiB at {start:#x}", size / 1024);
}

/// (used, free) bytes of the heap.
pub fn usage() -> (usize, usize) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let heap = HEAP.lock();
        (heap.used(), heap.free())
    })
}

/// Tries an allocation directly on the heap, without the global allocator's OOM path
/// (for tests of exhaustion).
pub fn try_allocate(layout: core::alloc::Layout) -> Option<core::ptr::NonNull<u8>> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        HEAP.lock().allocate_first_fit(layout).ok()
    })
}

/// Gives back a block from [`try_allocate`].
///
/// # Safety
/// `ptr` must come from [`try_allocate`] with the same `layout` and not be freed yet.
pub unsafe fn deallocate(ptr: core::ptr::NonNull<u8>, layout: core::alloc::Layout) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        // SAFETY: the caller guarantees ptr/layout came from this heap and are live.
        unsafe { HEAP.lock().deallocate(ptr, layout) }
    })
}
