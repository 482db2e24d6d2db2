//! The counting global allocator: the system allocator, counting per thread the bytes
//! held, the most held since a reset and the largest single request, and refusing (with a
//! note the harness picks up) any request above [`REFUSE_ABOVE`]. [`crate::measure`] reads
//! these counts around each case; nothing here allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use crate::REFUSE_ABOVE;

thread_local! {
    /// Bytes this thread holds now.
    pub(crate) static LIVE: Cell<usize> = const { Cell::new(0) };
    /// Most bytes this thread held since the last reset.
    pub(crate) static PEAK: Cell<usize> = const { Cell::new(0) };
    /// Largest single request since the last reset.
    pub(crate) static LARGEST: Cell<usize> = const { Cell::new(0) };
    /// Largest request refused (above `REFUSE_ABOVE`) since the last look.
    static REFUSED: Cell<usize> = const { Cell::new(0) };
}

fn note_refused(size: usize) {
    let _ = REFUSED.try_with(|r| r.set(r.get().max(size)));
}

/// The largest request this thread had refused since the last look (0: none).
pub(crate) fn take_refused() -> usize {
    REFUSED.with(|r| r.replace(0))
}

fn note_alloc(size: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(size);
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

fn note_free(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(size)));
}

/// The system allocator, counting per thread and refusing absurd requests.
struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged (or
// returns null, which `GlobalAlloc` allows for any request); the counting touches only
// thread-local `Cell`s that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > REFUSE_ABOVE {
            note_refused(layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract for `alloc` (nonzero size) is passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > REFUSE_ABOVE {
            note_refused(layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        // SAFETY: `ptr` came from this allocator (so from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > REFUSE_ABOVE {
            note_refused(new_size);
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` came from `System` with `layout`; the caller vouches for `new_size`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note_free(layout.size());
            note_alloc(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;
