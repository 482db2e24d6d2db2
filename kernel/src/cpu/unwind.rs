//! Unwinding: a panic inside [`catch`] runs the destructors of every frame between the panic
//! and the `catch` (releasing what they own, through their `Drop`), and `catch` returns
//! `Err` with where and why. This is how a driver's panic is contained (`crate::bus`,
//! `crate::interrupts::dispatch`, docs/faults.md).
//!
//! The machinery is the `unwinding` crate: its unwinder reads the `.eh_frame` tables the
//! compiler emits (`-C force-unwind-tables=yes -C panic=unwind`, kept by linker.ld), its
//! personality routine runs the landing pads, and `catch_unwind` stops the unwind. The panic
//! handler (`crate::panic`) begins the unwind when a `catch` is active; otherwise a panic
//! still halts the machine as before.
//!
//! Unlike `cpu::recover` (which abandons ACPICA's C code without running anything), an
//! unwind leaves no lock taken and no memory lost: a spin lock's guard releases it, a
//! `Box` frees itself. Two things `Drop` cannot restore are restored here:
//! - the interrupt flag: `x86_64::instructions::interrupts::without_interrupts` has no
//!   guard, so a panic inside its closure leaves interrupts off; `catch` puts the flag back
//!   as it was when `catch` began;
//! - the panic handler runs with interrupts off (an interrupt during the unwind could meet
//!   half-dropped state), so the same restoring covers the unwind itself.
//!
//! Nesting: `catch` inside `catch` is fine (the innermost one catches). A panic while no
//! `catch` is active, inside a recovery point (`cpu::recover`), or during an unwind (a panic in
//! a destructor the unwind runs) is not unwound: it halts as before. CPU exceptions are not converted into
//! panics: a page fault in driver code still halts the machine (docs/faults.md).

use alloc::boxed::Box;
use alloc::string::String;
use core::panic::AssertUnwindSafe;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use x86_64::instructions::interrupts;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};

/// Active [`catch`] scopes (one CPU runs kernel code; an interrupt handler's `catch` nests
/// inside whatever it interrupted).
static DEPTH: AtomicUsize = AtomicUsize::new(0);

/// A caught panic: its message and source location (`file:line:column`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caught {
    /// The panic message.
    pub message: String,
    /// `file:line:column`, or `<unknown>`.
    pub location: String,
}

impl core::fmt::Display for Caught {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "panic at {}: {}", self.location, self.message)
    }
}

/// Turns on the SSE state the unwinder needs: it saves and restores MXCSR (`stmxcsr`), which
/// raises #UD unless CR4.OSFXSR is set and CR0.EM clear (Intel SDM vol. 3A §13.1.3). CR0.MP
/// and CR4.OSXMMEXCPT are set as that section prescribes. The kernel itself is compiled
/// without SSE (the target's soft-float ABI); nothing else changes.
pub fn enable_sse_state() {
    let mut cr0 = Cr0::read();
    cr0.remove(Cr0Flags::EMULATE_COPROCESSOR);
    cr0.insert(Cr0Flags::MONITOR_COPROCESSOR);
    // SAFETY: clearing EM and setting MP only changes how x87/SSE instructions behave (they
    // execute instead of raising #NM/#UD); paging, protection and caching bits are kept as
    // they were read.
    unsafe { Cr0::write(cr0) };
    let mut cr4 = Cr4::read();
    cr4.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE);
    // SAFETY: OSFXSR and OSXMMEXCPT only enable SSE instructions and their exception; every
    // other bit is written back as read.
    unsafe { Cr4::write(cr4) };
}

/// Set by [`claim`] until the unwind reaches a [`catch`]: a panic meanwhile is not unwound
/// again.
static UNWINDING: AtomicBool = AtomicBool::new(false);

/// Whether a [`catch`] is active, so that a panic now would unwind to it.
pub fn active() -> bool {
    DEPTH.load(Ordering::SeqCst) > 0
}

/// Claims the unwind for a panic happening now: `true` when a [`catch`] is active and no
/// unwind is under way (or being prepared). From then until a `catch` returns, further panics
/// are not unwound: one while the panic handler builds the payload (an allocation failure),
/// or in a destructor the unwind runs, halts.
pub fn claim() -> bool {
    active() && !UNWINDING.swap(true, Ordering::SeqCst)
}

/// Runs `f`. If it panics, the panic unwinds (destructors run) back to here and the result is
/// `Err` with the panic's message and location; the interrupt flag is then put back as it
/// was when `catch` began.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Caught> {
    let were_enabled = interrupts::are_enabled();
    DEPTH.fetch_add(1, Ordering::SeqCst);
    let result = unwinding::panic::catch_unwind(AssertUnwindSafe(f));
    DEPTH.fetch_sub(1, Ordering::SeqCst);
    result.map_err(|payload| {
        UNWINDING.store(false, Ordering::SeqCst);
        if were_enabled {
            interrupts::enable();
        }
        match payload.downcast::<Caught>() {
            Ok(caught) => *caught,
            Err(_) => Caught {
                message: String::from("(a panic payload of another type)"),
                location: String::from("<unknown>"),
            },
        }
    })
}

/// Begins unwinding with `caught` as the payload (after [`claim`]). Returns only if no frame
/// caught it (no landing pad up to the top of the stack), with the unwinder's reason code.
pub fn begin(caught: Caught) -> i32 {
    unwinding::panic::begin_panic(Box::new(caught)).0
}
