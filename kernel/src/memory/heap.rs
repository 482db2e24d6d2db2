//! The kernel heap: `linked_list_allocator` over one physically contiguous run of frames.
//!
//! Size: an eighth of usable memory, at least 2 MiB and at most 128 MiB. The frames are
//! taken from the frame allocator once and never given back; the heap lives as long as the
//! kernel. Every `Box`, `Vec` and `String` in the kernel comes from here.
//!
//! Interrupt handlers allocate and free too: a driver's handler may (it is safe code), a
//! handler that panics allocates its payload, the dispatch queues a fault, and a handler
//! uninstalled while it runs is dropped when it returns. The heap's lock is a plain spin
//! lock, so a handler that took it while the code it interrupted on the same CPU held it
//! would spin forever with interrupts off. Every allocation therefore holds the lock with
//! interrupts off ([`IrqSafeHeap`]), as `usage`, `try_allocate` and `deallocate` already did.

use core::alloc::{GlobalAlloc, Layout};

use boot::BootInfo;
use linked_list_allocator::LockedHeap;
use x86_64::instructions::interrupts::without_interrupts;

use super::{PAGE_SIZE, frames};

static HEAP: LockedHeap = LockedHeap::empty();

/// The global allocator: [`HEAP`], with interrupts off while its lock is held (see the module
/// documentation).
struct IrqSafeHeap;

// SAFETY: every call is forwarded unchanged to `LockedHeap`, a correct `GlobalAlloc`; turning
// interrupts off around it changes nothing the allocator promises.
unsafe impl GlobalAlloc for IrqSafeHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        without_interrupts(|| unsafe { HEAP.alloc(layout) })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract (`ptr` came from this
        // allocator, which is `HEAP`, with `layout`), passed on as is.
        without_interrupts(|| unsafe { HEAP.dealloc(ptr, layout) })
    }
}

#[global_allocator]
static GLOBAL: IrqSafeHeap = IrqSafeHeap;

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
