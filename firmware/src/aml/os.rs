//! The OS services layer ACPICA calls (`AcpiOs*`, ACPICA's acpiosxf.h), on top of
//! [`Hardware`].
//!
//! The rules this layer keeps, whatever the firmware does:
//! - **Nothing blocks forever.** The kernel runs AML on one CPU and never from interrupt
//!   context, so nothing else can release a lock or signal a semaphore while AML waits: a
//!   semaphore that is not available answers `AE_TIME` at once (ACPICA then fails that AML
//!   `Acquire`/`Wait` and carries on), and a spin lock found taken (re-entry, a bug) is
//!   reported, never spun on.
//! - **Every mutex is its own object.** Handles are distinct heap objects, so ACPICA's own
//!   mutexes, AML `Mutex` objects and the global lock never alias (the old engine returned
//!   handle 0 for all of them, and a nested `Acquire` spun forever).
//! - **Time is bounded.** Each top-level operation runs under a deadline ([`Budget`]): past
//!   it, allocations fail (ACPICA unwinds the method or table load with `AE_NO_MEMORY`) and
//!   `Stall`/`Sleep` return at once; ACPICA's own `While`-loop limit is set to one second.
//! - **Output is kept.** ACPICA's error and warning lines are collected for the report and
//!   logged.
//!
//! All 36 `AcpiOs*` functions ACPICA needs in this configuration are defined here.

use alloc::alloc::{Layout, alloc, dealloc};
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::ffi::{CStr, VaList, c_char, c_void};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use spin::{Mutex, Once};

use super::ffi::{self, ExecCallback, Status};
use crate::hw::{Hardware, PciLocation};

/// The machine ACPICA runs on (set once, by [`install`]).
static HW: Once<&'static dyn Hardware> = Once::new();
/// Physical address of the RSDP handed to ACPICA.
static RSDP: AtomicU64 = AtomicU64::new(0);
/// Deadline of the current operation, in [`Hardware::now_ns`] time; 0 = none.
static DEADLINE_NS: AtomicU64 = AtomicU64::new(0);
/// Deadline of the whole load, in [`Hardware::now_ns`] time; 0 = none.
static OVERALL_NS: AtomicU64 = AtomicU64::new(0);
/// Set when an operation ran past its deadline.
static EXPIRED: AtomicBool = AtomicBool::new(false);
/// Bytes ACPICA holds right now.
static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

/// How much of the machine's time one operation may take.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Wall time, in milliseconds (measured by [`Hardware::now_ns`]).
    pub ms: u64,
}

/// Most error lines kept for the report (the rest are counted).
const MAX_MESSAGES: usize = 256;

struct Messages {
    line: String,
    errors: Vec<String>,
    dropped: usize,
}

static MESSAGES: Mutex<Messages> = Mutex::new(Messages {
    line: String::new(),
    errors: Vec::new(),
    dropped: 0,
});

/// Deferred work (`AcpiOsExecute`), run after the current top-level operation.
static DEFERRED: Mutex<Vec<(ExecCallback, usize)>> = Mutex::new(Vec::new());

fn hw() -> Option<&'static dyn Hardware> {
    HW.get().copied()
}

/// The machine's clock, in nanoseconds (0 before [`install`]).
pub fn now_ns() -> u64 {
    hw().map_or(0, |h| h.now_ns())
}

/// Reads configuration space through the installed machine (all ones without one).
pub(super) fn pci_read(at: PciLocation, offset: u16, width: u32) -> u64 {
    hw().map_or(u64::MAX, |h| h.pci_read(at, offset, width))
}

/// Hands ACPICA the machine and the RSDP's physical address. Only the first call counts
/// (ACPICA is one global instance).
pub fn install(hardware: &'static dyn Hardware, rsdp_phys: u64) -> bool {
    if HW.is_completed() {
        return false;
    }
    HW.call_once(|| hardware);
    RSDP.store(rsdp_phys, Ordering::Relaxed);
    true
}

/// Starts an operation under `budget`.
pub fn begin(budget: Budget) {
    let now = hw().map_or(0, |h| h.now_ns());
    let overall = OVERALL_NS.load(Ordering::Relaxed);
    let deadline = now
        .saturating_add(budget.ms.saturating_mul(1_000_000))
        .min(if overall == 0 { u64::MAX } else { overall })
        .max(1);
    DEADLINE_NS.store(deadline, Ordering::Relaxed);
}

/// Sets a deadline no operation may run past, `total` from now (all of [`super::load`]).
pub fn set_overall(total: Budget) {
    let now = hw().map_or(0, |h| h.now_ns());
    let deadline = now
        .saturating_add(total.ms.saturating_mul(1_000_000))
        .max(1);
    OVERALL_NS.store(deadline, Ordering::Relaxed);
}

/// Ends an operation: runs deferred work and clears the deadline. Returns whether the
/// operation ran out of time.
pub fn end() -> bool {
    run_deferred();
    DEADLINE_NS.store(0, Ordering::Relaxed);
    EXPIRED.swap(false, Ordering::Relaxed)
}

/// Takes the error and warning lines collected so far (and how many were dropped).
pub fn take_messages() -> (Vec<String>, usize) {
    let mut m = MESSAGES.lock();
    let dropped = core::mem::take(&mut m.dropped);
    (core::mem::take(&mut m.errors), dropped)
}

/// Bytes ACPICA holds.
pub fn live_bytes() -> u64 {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn past_deadline() -> bool {
    let deadline = DEADLINE_NS.load(Ordering::Relaxed);
    if deadline == 0 {
        return false;
    }
    let late = hw().is_some_and(|h| h.now_ns() >= deadline);
    if late {
        EXPIRED.store(true, Ordering::Relaxed);
    }
    late
}

/// Microseconds left before the deadline (`u64::MAX` without one).
fn remaining_us() -> u64 {
    let deadline = DEADLINE_NS.load(Ordering::Relaxed);
    if deadline == 0 {
        return u64::MAX;
    }
    let now = hw().map_or(deadline, |h| h.now_ns());
    deadline.saturating_sub(now) / 1000
}

fn run_deferred() {
    // Bounded: work queued by deferred work runs in the next round, at most 16 rounds.
    for _ in 0..16 {
        let batch = core::mem::take(&mut *DEFERRED.lock());
        if batch.is_empty() {
            return;
        }
        for (function, context) in batch {
            // SAFETY: ACPICA queued `function` with `context` through `AcpiOsExecute`
            // and expects it to be called exactly once, outside of the queuing call.
            unsafe { function(context as *mut c_void) };
        }
    }
}

// ---------------------------------------------------------------------------------------
// Output

fn push_text(text: &[u8]) {
    let mut m = MESSAGES.lock();
    for &b in text {
        if b == b'\n' {
            let line = core::mem::take(&mut m.line);
            finish_line(&mut m, line);
        } else if m.line.len() < 512 {
            m.line.push(if b.is_ascii() && (b >= 0x20 || b == b'\t') {
                b as char
            } else {
                '?'
            });
        }
    }
}

fn finish_line(m: &mut Messages, line: String) {
    let line = String::from(line.trim_end());
    if line.is_empty() {
        return;
    }
    let is_error = line.starts_with("ACPI Error")
        || line.starts_with("ACPI Exception")
        || line.starts_with("ACPI BIOS Error")
        || line.starts_with("ACPI Warning")
        || line.starts_with("ACPI BIOS Warning")
        || line.starts_with("Firmware Error");
    if is_error {
        log::warn!("acpica: {line}");
        if m.errors.len() < MAX_MESSAGES {
            m.errors.push(line);
        } else {
            m.dropped += 1;
        }
    } else {
        log::debug!("acpica: {line}");
    }
}

/// `AcpiOsVprintf`: formats with ACPICA's own `vsnprintf`.
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsVprintf(format: *const c_char, args: VaList<'_>) {
    if format.is_null() {
        return;
    }
    let mut buf = [0u8; 512];
    // SAFETY: `buf` has `buf.len()` writable bytes; `format` and `args` come from ACPICA as
    // a matching printf pair, and ACPICA's `vsnprintf` writes at most `len` bytes with a NUL.
    let n = unsafe { ffi::vsnprintf(buf.as_mut_ptr().cast(), buf.len(), format, args) };
    let n = usize::try_from(n).unwrap_or(0).min(buf.len() - 1);
    push_text(buf.get(..n).unwrap_or(&[]));
}

/// `AcpiOsPrintf`.
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsPrintf(format: *const c_char, args: ...) {
    // SAFETY: forwards ACPICA's own format and arguments unchanged.
    unsafe { AcpiOsVprintf(format, args) }
}

// ---------------------------------------------------------------------------------------
// Memory

/// Header before each allocation: its total size (alignment 16, as C's malloc gives); a
/// block on a free list keeps the next block's address in the header's second word.
const HEADER: usize = 16;

/// Small blocks are recycled by size class instead of going back to the kernel heap: ACPICA
/// allocates and frees tens of thousands of small objects while it parses AML, and a
/// first-fit heap spends most of the boot's AML time searching its free list for them.
/// Blocks on these lists are never returned to the heap (their total is bounded by ACPICA's
/// peak use).
const CLASSES: [usize; 6] = [32, 64, 128, 256, 512, 1024];

/// Heads of the free lists, one per class (0: empty).
static FREE: Mutex<[usize; CLASSES.len()]> = Mutex::new([0; CLASSES.len()]);

fn class_of(total: usize) -> Option<usize> {
    CLASSES.iter().position(|c| total <= *c)
}

/// Largest single allocation granted. No well-formed firmware needs more (tables are mapped,
/// not copied); a malformed `Buffer (0xFFFF0004)` must fail, not zero 4 GiB byte by byte.
const MAX_ALLOCATION: usize = 16 << 20;
/// Most memory ACPICA may hold at once, unless [`set_max_live`] says less.
pub const MAX_LIVE: u64 = 256 << 20;
/// The limit in force (the caller's heap may be smaller than [`MAX_LIVE`]).
static MAX_LIVE_NOW: AtomicU64 = AtomicU64::new(MAX_LIVE);

/// Sets the most memory ACPICA may hold at once (at most [`MAX_LIVE`]): a kernel with a
/// small heap gives ACPICA a share of it, so that a table that declares huge buffers fails
/// its load instead of leaving the heap exhausted for everything after.
pub fn set_max_live(bytes: u64) {
    MAX_LIVE_NOW.store(bytes.min(MAX_LIVE), Ordering::Relaxed);
}

fn allocate(size: usize) -> Option<NonNull<u8>> {
    if past_deadline() {
        return None;
    }
    if size > MAX_ALLOCATION
        || LIVE_BYTES
            .load(Ordering::Relaxed)
            .saturating_add(size as u64)
            > MAX_LIVE_NOW.load(Ordering::Relaxed)
    {
        return None;
    }
    let total = size.checked_add(HEADER)?;
    let class = class_of(total);
    let total = class.map_or(total, |c| CLASSES[c]);
    let recycled = class.and_then(|c| {
        let mut heads = FREE.lock();
        let head = NonNull::new(heads[c] as *mut u8)?;
        // Blocks on free list `c` are live, 16-aligned blocks of CLASSES[c] bytes whose second
        // header word holds the next block's address.
        let link = head.cast::<usize>().as_ptr().wrapping_add(1);
        // SAFETY: the second word of a live free block (see above).
        heads[c] = unsafe { link.read() };
        Some(head)
    });
    let base = match recycled {
        Some(b) => b,
        None => {
            let layout = Layout::from_size_align(total, 16).ok()?;
            // SAFETY: `layout` has a non-zero size (at least HEADER).
            NonNull::new(unsafe { alloc(layout) })?
        }
    };
    // SAFETY: the block is at least HEADER bytes and 16-aligned, so a usize fits at its start.
    unsafe { base.cast::<usize>().write(total) };
    LIVE_BYTES.fetch_add(total as u64, Ordering::Relaxed);
    // SAFETY: HEADER < total, so the result stays inside the block.
    Some(unsafe { base.add(HEADER) })
}

/// # Safety
/// `p` came from [`allocate`] and was not freed.
unsafe fn free(p: NonNull<u8>) {
    // SAFETY: `allocate` returned `base + HEADER` and stored the total size at `base`.
    let base = unsafe { p.sub(HEADER) };
    // SAFETY: as above; the header was written by `allocate`.
    let total = unsafe { base.cast::<usize>().read() };
    LIVE_BYTES.fetch_sub(total as u64, Ordering::Relaxed);
    if let Some(c) = CLASSES.iter().position(|c| *c == total) {
        let mut heads = FREE.lock();
        // SAFETY: the block is ours again (ACPICA freed it) and has room for two words.
        let link = base.cast::<usize>().as_ptr().wrapping_add(1);
        // SAFETY: as above.
        unsafe { link.write(heads[c]) };
        heads[c] = base.as_ptr() as usize;
        return;
    }
    let Ok(layout) = Layout::from_size_align(total, 16) else {
        return;
    };
    // SAFETY: same size and alignment as the allocation.
    unsafe { dealloc(base.as_ptr(), layout) };
}

/// `AcpiOsInitialize`.
#[unsafe(no_mangle)]
extern "C" fn AcpiOsInitialize() -> Status {
    ffi::AE_OK
}

/// `AcpiOsTerminate`.
#[unsafe(no_mangle)]
extern "C" fn AcpiOsTerminate() -> Status {
    ffi::AE_OK
}

/// `AcpiOsGetRootPointer`: the RSDP given to [`install`].
#[unsafe(no_mangle)]
extern "C" fn AcpiOsGetRootPointer() -> u64 {
    RSDP.load(Ordering::Relaxed)
}

/// `AcpiOsMapMemory` (NULL when the range cannot be mapped).
#[unsafe(no_mangle)]
extern "C" fn AcpiOsMapMemory(physical: u64, length: usize) -> *mut c_void {
    hw().and_then(|h| h.map(physical, length))
        .map_or(core::ptr::null_mut(), |p| p.as_ptr().cast())
}

/// `AcpiOsUnmapMemory`.
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsUnmapMemory(logical: *mut c_void, length: usize) {
    if let (Some(h), Some(p)) = (hw(), NonNull::new(logical.cast::<u8>())) {
        // SAFETY: ACPICA unmaps exactly what `AcpiOsMapMemory` returned, once, with the
        // length it mapped.
        unsafe { h.unmap(p, length) }
    }
}

/// `AcpiOsAllocate` (NULL when out of memory or past the deadline).
#[unsafe(no_mangle)]
extern "C" fn AcpiOsAllocate(size: usize) -> *mut c_void {
    allocate(size).map_or(core::ptr::null_mut(), |p| p.as_ptr().cast())
}

/// `AcpiOsFree` (NULL is allowed, as for C's `free`).
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsFree(memory: *mut c_void) {
    if let Some(p) = NonNull::new(memory.cast::<u8>()) {
        // SAFETY: ACPICA frees only what `AcpiOsAllocate` returned, once.
        unsafe { free(p) }
    }
}

/// `AcpiOsReadMemory`: one access of `width` bits at a physical address (FADT registers).
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsReadMemory(address: u64, value: *mut u64, width: u32) -> Status {
    let Some(h) = hw() else { return ffi::AE_ERROR };
    let bytes = (width / 8) as usize;
    if !matches!(bytes, 1 | 2 | 4 | 8) || value.is_null() {
        return ffi::AE_BAD_PARAMETER;
    }
    let Some(p) = h.map(address, bytes) else {
        return ffi::AE_NOT_EXIST;
    };
    // One access of the register's own width (a device register must not be read byte by
    // byte). SAFETY (each arm): `p` maps `bytes` bytes at `address` until the unmap below;
    // unaligned accesses are allowed on x86.
    let v = match bytes {
        // SAFETY: see above.
        1 => u64::from(unsafe { p.as_ptr().read_volatile() }),
        // SAFETY: see above.
        2 => u64::from(unsafe { p.cast::<u16>().as_ptr().read_volatile() }),
        // SAFETY: see above.
        4 => u64::from(unsafe { p.cast::<u32>().as_ptr().read_volatile() }),
        // SAFETY: see above.
        _ => unsafe { p.cast::<u64>().as_ptr().read_volatile() },
    };
    // SAFETY: unmapping the mapping made above, which nothing else uses.
    unsafe { h.unmap(p, bytes) };
    // SAFETY: ACPICA passes a valid `UINT64 *`.
    unsafe { value.write(v) };
    ffi::AE_OK
}

/// `AcpiOsWriteMemory`.
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsWriteMemory(address: u64, value: u64, width: u32) -> Status {
    let Some(h) = hw() else { return ffi::AE_ERROR };
    let bytes = (width / 8) as usize;
    if !matches!(bytes, 1 | 2 | 4 | 8) {
        return ffi::AE_BAD_PARAMETER;
    }
    let Some(p) = h.map(address, bytes) else {
        return ffi::AE_NOT_EXIST;
    };
    // SAFETY (each arm): `p` maps `bytes` bytes until the unmap below; firmware asked for
    // this write, of this width.
    match bytes {
        // SAFETY: see above.
        1 => unsafe { p.as_ptr().write_volatile(value as u8) },
        // SAFETY: see above.
        2 => unsafe { p.cast::<u16>().as_ptr().write_volatile(value as u16) },
        // SAFETY: see above.
        4 => unsafe { p.cast::<u32>().as_ptr().write_volatile(value as u32) },
        // SAFETY: see above.
        _ => unsafe { p.cast::<u64>().as_ptr().write_volatile(value) },
    }
    // SAFETY: unmapping the mapping made above.
    unsafe { h.unmap(p, bytes) };
    ffi::AE_OK
}

// ---------------------------------------------------------------------------------------
// Ports and PCI configuration space

/// `AcpiOsReadPort`.
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsReadPort(address: u64, value: *mut u32, width: u32) -> Status {
    let (Some(h), Ok(port)) = (hw(), u16::try_from(address)) else {
        return ffi::AE_BAD_PARAMETER;
    };
    if !matches!(width, 8 | 16 | 32) || value.is_null() {
        return ffi::AE_BAD_PARAMETER;
    }
    let v = h.port_read(port, width);
    // SAFETY: ACPICA passes a valid `UINT32 *`.
    unsafe { value.write(v) };
    ffi::AE_OK
}

/// `AcpiOsWritePort`.
#[unsafe(no_mangle)]
extern "C" fn AcpiOsWritePort(address: u64, value: u32, width: u32) -> Status {
    let (Some(h), Ok(port)) = (hw(), u16::try_from(address)) else {
        return ffi::AE_BAD_PARAMETER;
    };
    if !matches!(width, 8 | 16 | 32) {
        return ffi::AE_BAD_PARAMETER;
    }
    h.port_write(port, value, width);
    ffi::AE_OK
}

/// `ACPI_PCI_ID`.
#[repr(C)]
struct PciId {
    segment: u16,
    bus: u16,
    device: u16,
    function: u16,
}

fn location(id: *const PciId) -> Option<PciLocation> {
    if id.is_null() {
        return None;
    }
    // SAFETY: ACPICA passes a valid `ACPI_PCI_ID *`.
    let id = unsafe { &*id };
    Some(PciLocation {
        segment: id.segment,
        bus: u8::try_from(id.bus).ok()?,
        device: u8::try_from(id.device).ok().filter(|d| *d < 32)?,
        function: u8::try_from(id.function).ok().filter(|f| *f < 8)?,
    })
}

/// `AcpiOsReadPciConfiguration`.
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsReadPciConfiguration(
    id: *const PciId,
    register: u32,
    value: *mut u64,
    width: u32,
) -> Status {
    let (Some(h), Some(at), Ok(offset)) = (hw(), location(id), u16::try_from(register)) else {
        return ffi::AE_BAD_PARAMETER;
    };
    if !matches!(width, 8 | 16 | 32 | 64) || offset >= 4096 || value.is_null() {
        return ffi::AE_BAD_PARAMETER;
    }
    let v = h.pci_read(at, offset, width);
    // SAFETY: ACPICA passes a valid `UINT64 *`.
    unsafe { value.write(v) };
    ffi::AE_OK
}

/// `AcpiOsWritePciConfiguration`.
#[unsafe(no_mangle)]
extern "C" fn AcpiOsWritePciConfiguration(
    id: *const PciId,
    register: u32,
    value: u64,
    width: u32,
) -> Status {
    let (Some(h), Some(at), Ok(offset)) = (hw(), location(id), u16::try_from(register)) else {
        return ffi::AE_BAD_PARAMETER;
    };
    if !matches!(width, 8 | 16 | 32 | 64) || offset >= 4096 {
        return ffi::AE_BAD_PARAMETER;
    }
    h.pci_write(at, offset, value, width);
    ffi::AE_OK
}

// ---------------------------------------------------------------------------------------
// Time

/// `AcpiOsGetTimer`: 100-nanosecond units.
#[unsafe(no_mangle)]
extern "C" fn AcpiOsGetTimer() -> u64 {
    hw().map_or(0, |h| h.now_ns() / 100)
}

/// `AcpiOsStall`: a busy wait, cut short at the deadline.
#[unsafe(no_mangle)]
extern "C" fn AcpiOsStall(microseconds: u32) {
    if let Some(h) = hw() {
        let us = u64::from(microseconds).min(remaining_us());
        if us > 0 {
            h.stall_us(us);
        }
    }
}

/// `AcpiOsSleep`: cut short at the deadline.
#[unsafe(no_mangle)]
extern "C" fn AcpiOsSleep(milliseconds: u64) {
    if let Some(h) = hw() {
        let ms = milliseconds.min(remaining_us() / 1000);
        if ms > 0 {
            h.sleep_ms(ms);
        }
    }
    let _ = past_deadline();
}

// ---------------------------------------------------------------------------------------
// Locks, semaphores (ACPICA's mutexes are semaphores: ACPI_MUTEX_TYPE is
// ACPI_BINARY_SEMAPHORE in this configuration), threads

/// `AcpiOsCreateLock`: a flag, never spun on (see the module notes).
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsCreateLock(out: *mut *mut c_void) -> Status {
    if out.is_null() {
        return ffi::AE_BAD_PARAMETER;
    }
    let lock = Box::into_raw(Box::new(AtomicBool::new(false)));
    // SAFETY: ACPICA passes a valid `ACPI_SPINLOCK *`.
    unsafe { out.write(lock.cast()) };
    ffi::AE_OK
}

/// `AcpiOsDeleteLock`.
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsDeleteLock(handle: *mut c_void) {
    if !handle.is_null() {
        // SAFETY: `handle` came from `AcpiOsCreateLock` and ACPICA deletes it once.
        drop(unsafe { Box::from_raw(handle.cast::<AtomicBool>()) });
    }
}

/// `AcpiOsAcquireLock`.
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsAcquireLock(handle: *mut c_void) -> usize {
    if handle.is_null() {
        return 0;
    }
    // SAFETY: a live lock from `AcpiOsCreateLock`.
    let lock = unsafe { &*handle.cast::<AtomicBool>() };
    if lock.swap(true, Ordering::Acquire) {
        log::error!("acpica: spin lock taken twice on one CPU (re-entry); not waiting");
    }
    0
}

/// `AcpiOsReleaseLock`.
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsReleaseLock(handle: *mut c_void, _flags: usize) {
    if !handle.is_null() {
        // SAFETY: a live lock from `AcpiOsCreateLock`.
        unsafe { &*handle.cast::<AtomicBool>() }.store(false, Ordering::Release);
    }
}

struct Semaphore {
    units: AtomicU32,
    max: u32,
}

/// `AcpiOsCreateSemaphore`.
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsCreateSemaphore(
    max_units: u32,
    initial_units: u32,
    out: *mut *mut c_void,
) -> Status {
    if out.is_null() || initial_units > max_units {
        return ffi::AE_BAD_PARAMETER;
    }
    let s = Box::into_raw(Box::new(Semaphore {
        units: AtomicU32::new(initial_units),
        max: max_units,
    }));
    // SAFETY: ACPICA passes a valid `ACPI_SEMAPHORE *`.
    unsafe { out.write(s.cast()) };
    ffi::AE_OK
}

/// `AcpiOsDeleteSemaphore`.
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsDeleteSemaphore(handle: *mut c_void) -> Status {
    if handle.is_null() {
        return ffi::AE_BAD_PARAMETER;
    }
    // SAFETY: `handle` came from `AcpiOsCreateSemaphore` and ACPICA deletes it once.
    drop(unsafe { Box::from_raw(handle.cast::<Semaphore>()) });
    ffi::AE_OK
}

/// `AcpiOsWaitSemaphore`: takes the units if they are there, else `AE_TIME` at once
/// (nothing else runs that could give them back; see the module notes).
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsWaitSemaphore(handle: *mut c_void, units: u32, timeout: u16) -> Status {
    if handle.is_null() {
        return ffi::AE_BAD_PARAMETER;
    }
    // SAFETY: a live semaphore from `AcpiOsCreateSemaphore`.
    let s = unsafe { &*handle.cast::<Semaphore>() };
    let taken = s
        .units
        .try_update(Ordering::Acquire, Ordering::Relaxed, |u| {
            u.checked_sub(units)
        });
    match taken {
        Ok(_) => ffi::AE_OK,
        Err(_) => {
            if timeout != 0 {
                log::debug!("acpica: semaphore wait ({timeout} ms) on one CPU: AE_TIME");
            }
            ffi::AE_TIME
        }
    }
}

/// `AcpiOsSignalSemaphore`.
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsSignalSemaphore(handle: *mut c_void, units: u32) -> Status {
    if handle.is_null() {
        return ffi::AE_BAD_PARAMETER;
    }
    // SAFETY: a live semaphore from `AcpiOsCreateSemaphore`.
    let s = unsafe { &*handle.cast::<Semaphore>() };
    let max = s.max;
    match s
        .units
        .try_update(Ordering::Release, Ordering::Relaxed, |u| {
            u.checked_add(units).filter(|n| *n <= max)
        }) {
        Ok(_) => ffi::AE_OK,
        Err(_) => ffi::AE_LIMIT,
    }
}

/// `AcpiOsGetThreadId`: one thread (never 0, which ACPICA reserves).
#[unsafe(no_mangle)]
extern "C" fn AcpiOsGetThreadId() -> u64 {
    1
}

/// `AcpiOsExecute`: queued, run when the current top-level operation ends.
#[unsafe(no_mangle)]
extern "C" fn AcpiOsExecute(
    _kind: u32,
    function: Option<ExecCallback>,
    context: *mut c_void,
) -> Status {
    let Some(function) = function else {
        return ffi::AE_BAD_PARAMETER;
    };
    DEFERRED.lock().push((function, context as usize));
    ffi::AE_OK
}

/// `AcpiOsWaitEventsComplete`.
#[unsafe(no_mangle)]
extern "C" fn AcpiOsWaitEventsComplete() {
    run_deferred();
}

/// `AcpiOsInstallInterruptHandler`: the SCI is not used (events are not enabled).
#[unsafe(no_mangle)]
extern "C" fn AcpiOsInstallInterruptHandler(
    _irq: u32,
    _routine: *mut c_void,
    _context: *mut c_void,
) -> Status {
    ffi::AE_SUPPORT
}

/// `AcpiOsRemoveInterruptHandler`.
#[unsafe(no_mangle)]
extern "C" fn AcpiOsRemoveInterruptHandler(_irq: u32, _routine: *mut c_void) -> Status {
    ffi::AE_NOT_EXIST
}

// ---------------------------------------------------------------------------------------
// Overrides and signals

/// `AcpiOsPredefinedOverride`: none.
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsPredefinedOverride(
    _init: *const c_void,
    new: *mut *mut c_char,
) -> Status {
    if new.is_null() {
        return ffi::AE_BAD_PARAMETER;
    }
    // SAFETY: ACPICA passes a valid out pointer.
    unsafe { new.write(core::ptr::null_mut()) };
    ffi::AE_OK
}

/// `AcpiOsTableOverride`: none.
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsTableOverride(_existing: *mut c_void, new: *mut *mut c_void) -> Status {
    if new.is_null() {
        return ffi::AE_BAD_PARAMETER;
    }
    // SAFETY: ACPICA passes a valid out pointer.
    unsafe { new.write(core::ptr::null_mut()) };
    ffi::AE_OK
}

/// `AcpiOsPhysicalTableOverride`: none.
#[unsafe(no_mangle)]
unsafe extern "C" fn AcpiOsPhysicalTableOverride(
    _existing: *mut c_void,
    address: *mut u64,
    length: *mut u32,
) -> Status {
    if address.is_null() || length.is_null() {
        return ffi::AE_BAD_PARAMETER;
    }
    // SAFETY: ACPICA passes valid out pointers.
    unsafe { address.write(0) };
    // SAFETY: as above.
    unsafe { length.write(0) };
    ffi::AE_OK
}

/// `AcpiOsSignal`: AML `Fatal` and `BreakPoint` are logged; the kernel goes on.
#[unsafe(no_mangle)]
extern "C" fn AcpiOsSignal(function: u32, _info: *mut c_void) -> Status {
    let what = if function == 0 { "Fatal" } else { "BreakPoint" };
    push_text(alloc::format!("ACPI Error: AML executed {what}; ignored\n").as_bytes());
    ffi::AE_OK
}

/// `AcpiOsEnterSleep`: nothing to do before ACPICA writes the sleep registers.
#[unsafe(no_mangle)]
extern "C" fn AcpiOsEnterSleep(_state: u8, _a: u32, _b: u32) -> Status {
    ffi::AE_OK
}

/// The text of an ACPICA status code.
pub fn status_name(status: Status) -> String {
    // SAFETY: `AcpiFormatException` returns a pointer to a static NUL-terminated string (or
    // NULL for unknown codes).
    let p = unsafe { ffi::AcpiFormatException(status) };
    if p.is_null() {
        return alloc::format!("AE_{status:#x}");
    }
    // SAFETY: non-null, static, NUL-terminated.
    String::from(unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("AE_?"))
}

/// Frees a block ACPICA allocated (a result buffer handed to this crate).
///
/// # Safety
/// `p` came from `AcpiOsAllocate` and is not used or freed again.
pub(super) unsafe fn free_acpica(p: NonNull<u8>) {
    // SAFETY: forwarded contract.
    unsafe { free(p) }
}
