//! Recovery points: running code the kernel did not write (ACPICA interpreting firmware's
//! AML) so that a CPU exception or a panic inside it abandons that code instead of the
//! machine.
//!
//! [`contain`] saves the callee-saved registers, the stack pointer, the flags and its own
//! return address (what C calls `setjmp`), then runs the closure. If the closure returns,
//! so does `contain`, with `Ok`. If a fault (#DE, #UD, #GP, #SS, #PF, #AC ...) happens
//! while it runs, the exception handler rewrites the interrupted frame so that `iretq`
//! lands on that return address with the saved registers, and `contain` returns `Err`; a
//! panic does the same from the panic handler. Nothing between the fault and `contain` is
//! unwound: destructors do not run, memory and locks held by that code stay taken. So the
//! contained code must be abandoned for good afterwards (the kernel never calls ACPICA again
//! once its load faulted), and a contained fault is reported loudly.
//!
//! NMI, double fault and machine check are never recovered; neither is a fault while no
//! recovery point is active. One CPU runs the kernel, so one recovery point exists at a time
//! (nesting is refused).

use core::arch::naked_asm;
use core::sync::atomic::{AtomicPtr, Ordering};

use spin::Mutex;

use super::exceptions::TrapFrame;

/// What [`guarded`] saves (offsets used by the assembly below).
#[repr(C)]
#[derive(Default)]
struct Jump {
    rbx: u64,
    rbp: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
    /// Stack pointer after `guarded` returns (its return address popped).
    rsp: u64,
    /// `guarded`'s return address.
    rip: u64,
    /// RFLAGS at entry.
    rflags: u64,
}

/// Why contained code was abandoned.
#[derive(Clone, Debug)]
pub enum Fault {
    /// A CPU exception.
    Exception {
        /// Vector (Intel SDM vol. 3A Table 6-1).
        vector: u8,
        /// Error code (0 for exceptions without one).
        error_code: u64,
        /// The faulting instruction.
        rip: u64,
        /// CR2 (the address of a page fault).
        cr2: u64,
    },
    /// A panic, at this source line (file name cut to 64 bytes: no allocation at panic time).
    Panic(PanicSite),
}

/// Where a contained panic happened, copied without allocating.
#[derive(Clone, Debug)]
pub struct PanicSite {
    file: [u8; 64],
    len: usize,
    /// Line.
    pub line: u32,
}

impl PanicSite {
    fn new(file: &str, line: u32) -> Self {
        let mut site = Self {
            file: [0; 64],
            len: 0,
            line,
        };
        let bytes = file.as_bytes();
        let start = bytes.len().saturating_sub(site.file.len());
        let tail = bytes.get(start..).unwrap_or(&[]);
        site.len = tail.len();
        site.file[..tail.len()].copy_from_slice(tail);
        site
    }

    /// The source file (its last 64 bytes).
    pub fn file(&self) -> &str {
        core::str::from_utf8(&self.file[..self.len]).unwrap_or("?")
    }
}

impl core::fmt::Display for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Fault::Exception {
                vector,
                error_code,
                rip,
                cr2,
            } => write!(
                f,
                "CPU exception {vector} (error {error_code:#x}) at RIP {rip:#x}, CR2 {cr2:#x}"
            ),
            Fault::Panic(site) => write!(f, "panic at {}:{}", site.file(), site.line),
        }
    }
}

/// The active recovery point (null: none).
static ACTIVE: AtomicPtr<Jump> = AtomicPtr::new(core::ptr::null_mut());
/// The fault that ended the last contained run.
static LAST: Mutex<Option<Fault>> = Mutex::new(None);

/// Returned by [`guarded`] when the call completed.
const COMPLETED: u64 = 0;
/// Returned by [`guarded`] (through [`resume`] or the exception path) after a fault.
const FAULTED: u64 = 1;

/// Saves a recovery point in `*jump`, then calls `call(data)`.
///
/// # Safety
/// `jump` points at a `Jump` that outlives the call and is published in [`ACTIVE`] by the
/// caller; `call` is a valid function for `data`.
#[unsafe(naked)]
unsafe extern "C" fn guarded(jump: *mut Jump, call: extern "C" fn(*mut u8), data: *mut u8) -> u64 {
    naked_asm!(
        "mov [rdi + 0], rbx",
        "mov [rdi + 8], rbp",
        "mov [rdi + 16], r12",
        "mov [rdi + 24], r13",
        "mov [rdi + 32], r14",
        "mov [rdi + 40], r15",
        "lea rax, [rsp + 8]",
        "mov [rdi + 48], rax",
        "mov rax, [rsp]",
        "mov [rdi + 56], rax",
        "pushfq",
        "pop rax",
        "mov [rdi + 64], rax",
        // Entry left rsp at 8 mod 16; the callee expects 0 mod 16 before its call.
        "sub rsp, 8",
        "mov rdi, rdx",
        "call rsi",
        "add rsp, 8",
        "xor eax, eax",
        "ret",
    )
}

/// Returns from [`guarded`] with [`FAULTED`], from any depth of the same stack.
///
/// # Safety
/// `jump` was filled by a [`guarded`] call that has not returned yet, on this stack.
#[unsafe(naked)]
unsafe extern "C" fn resume(jump: *const Jump) -> ! {
    naked_asm!(
        "mov rbx, [rdi + 0]",
        "mov rbp, [rdi + 8]",
        "mov r12, [rdi + 16]",
        "mov r13, [rdi + 24]",
        "mov r14, [rdi + 32]",
        "mov r15, [rdi + 40]",
        "push qword ptr [rdi + 64]",
        "popfq",
        "mov rcx, [rdi + 56]",
        "mov rsp, [rdi + 48]",
        "mov eax, {faulted}",
        "jmp rcx",
        faulted = const FAULTED,
    )
}

extern "C" fn trampoline<F: FnOnce()>(data: *mut u8) {
    // SAFETY: `contain` passes a pointer to its `Option<F>`, alive for the whole call.
    let f = unsafe { &mut *data.cast::<Option<F>>() };
    if let Some(f) = f.take() {
        f();
    }
}

/// The trampoline for the closure type behind `_slot`.
fn trampoline_for<F: FnOnce()>(_slot: &Option<F>) -> extern "C" fn(*mut u8) {
    trampoline::<F>
}

/// Runs `f`; a fault or panic inside it returns `Err` instead of stopping the machine. See
/// the module notes for what that costs (nothing is unwound).
pub fn contain<R>(f: impl FnOnce() -> R) -> Result<R, Fault> {
    let mut result: Option<R> = None;
    let mut run = Some(|| result = Some(f()));
    let mut jump = Jump::default();
    if ACTIVE
        .compare_exchange(
            core::ptr::null_mut(),
            &raw mut jump,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // Nested: run unguarded inside the outer recovery point.
        if let Some(run) = run.take() {
            run();
        }
        return result.ok_or_else(|| Fault::Panic(PanicSite::new("nested run", 0)));
    }
    let call = trampoline_for(&run);
    let data = (&raw mut run).cast::<u8>();
    // SAFETY: `jump` lives on this frame until `guarded` returns, and is published in ACTIVE
    // until then; `trampoline` matches the closure type behind `data`.
    let status = unsafe { guarded(&raw mut jump, call, data) };
    // Fault paths clear ACTIVE themselves; a normal return clears it here.
    ACTIVE.store(core::ptr::null_mut(), Ordering::Release);
    drop(run);
    if status == COMPLETED
        && let Some(r) = result
    {
        return Ok(r);
    }
    Err(LAST
        .lock()
        .take()
        .unwrap_or(Fault::Panic(PanicSite::new("unknown", 0))))
}

/// Whether a recovery point is active (a panic now would be contained).
pub fn active() -> bool {
    !ACTIVE.load(Ordering::Acquire).is_null()
}

/// Vectors whose faults are recovered (never NMI 2, #DF 8, #MC 18).
fn recoverable(vector: u64) -> bool {
    matches!(
        vector,
        0 | 4 | 5 | 6 | 7 | 10 | 11 | 12 | 13 | 14 | 16 | 17 | 19
    )
}

/// From the exception handler: if a recovery point is active and the exception can be
/// recovered, rewrites `frame` to resume there and returns true.
pub fn on_exception(frame: &mut TrapFrame, cr2: u64) -> bool {
    if !recoverable(frame.vector) {
        return false;
    }
    let jump = ACTIVE.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if jump.is_null() {
        return false;
    }
    // SAFETY: a non-null ACTIVE points at the live `Jump` of a `contain` call that has not
    // returned (it clears ACTIVE before returning).
    let jump = unsafe { &*jump };
    *LAST.lock() = Some(Fault::Exception {
        vector: frame.vector as u8,
        error_code: frame.error_code,
        rip: frame.rip,
        cr2,
    });
    frame.rbx = jump.rbx;
    frame.rbp = jump.rbp;
    frame.r12 = jump.r12;
    frame.r13 = jump.r13;
    frame.r14 = jump.r14;
    frame.r15 = jump.r15;
    frame.rsp = jump.rsp;
    frame.rip = jump.rip;
    frame.rflags = jump.rflags;
    frame.rax = FAULTED;
    true
}

/// From the panic handler: if a recovery point is active, resumes there (never returns);
/// otherwise returns.
pub fn on_panic((file, line): (&str, u32)) {
    let jump = ACTIVE.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if jump.is_null() {
        return;
    }
    if let Some(mut last) = LAST.try_lock() {
        *last = Some(Fault::Panic(PanicSite::new(file, line)));
    }
    // SAFETY: as in `on_exception`: the live `Jump` of a `contain` call on this stack.
    unsafe { resume(jump) }
}
