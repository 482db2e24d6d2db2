//! Waiting without spinning: the CPU halted until the next interrupt, with the local APIC
//! timer as the alarm clock that bounds the sleep.
//!
//! A driver that waits for its device (a completion interrupt, the controller becoming
//! ready) could spin on its condition, reading memory millions of times a second. `HLT`
//! (Intel SDM vol. 2A) stops the CPU instead until an interrupt arrives, as an operating
//! system's idle loop does (Linux's `default_idle` is `sti; hlt`). The CPU uses less power,
//! and a virtual CPU gives its host thread back: under QEMU's TCG the vCPU thread sleeps,
//! and QEMU's I/O threads, which do the emulated device's work, get the host's cores.
//!
//! [`idle_until`] is what `pci::function::PciFunction::wait_until` calls between its looks
//! (through `pci::platform::Platform::idle_until`, `crate::pciirq`). Three things make it
//! safe:
//!
//! - **Something always wakes the CPU.** The device's own interrupt (MSI, MSI-X or INTx)
//!   usually does. For a device that never interrupts (a status register polled, a device
//!   that died, a pure delay) the local APIC timer is armed one-shot ([`wake_in`]) for the
//!   wait's bound: its deadline or its next presence check, whichever comes first. The
//!   timer's vector has a handler that does nothing ([`init`]); the dispatcher sends its
//!   EOI. A wait may wake early (any interrupt, a timer whose rate is a measurement): it
//!   just looks again.
//! - **No wake-up is lost.** The condition is checked with interrupts off, and `sti; hlt`
//!   follows as a pair: `STI` enables interrupts only after the next instruction (SDM vol. 2B,
//!   STI: "interrupt shadow"), so an interrupt that arrived after the check, or arrives
//!   between the two instructions, is taken *at* the `HLT` and ends it. Enabling interrupts
//!   first and then halting would leave a window: the interrupt could be handled in between
//!   (making the condition true) and the CPU would then halt until some later interrupt.
//! - **It halts only with interrupts enabled on entry** (RFLAGS.IF). `HLT` with IF = 0
//!   stops the CPU until an NMI or a reset: forever. A wait with interrupts off (in an
//!   interrupt handler, under a lock taken with interrupts off) spins, as every wait did
//!   before; so does every wait before the timer's rate is known and its handler installed
//!   ([`init`], at the end of the boot: drivers bound at boot spin, the timer is busy being
//!   measured then). The caller's IF is what it was on return.
//!
//! The timer is one per CPU and has other users: `crate::hotplug` arms it for the end of an
//! attention-button abort window, right before the console sleeps. Each arming replaces the
//! last. No arming here is ever left standing for someone else to rely on: a wait arms the
//! timer before every halt, and the hot-plug idle arms it after its own waits are done. An
//! arming that outlives its wait fires once, into the empty handler: one extra wake-up of
//! whatever sleeps then, which looks again and sleeps on.

use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::instructions::interrupts;

use super::{dispatch, lapic};

/// Whether [`init`] installed the timer's handler.
static READY: AtomicBool = AtomicBool::new(false);

/// Installs the handler of the local APIC timer's vector: it does nothing (waking the CPU
/// is the point; [`mod@dispatch`] counts the arrival and sends the EOI). Called once the timer's
/// rate is known; from then on waits with interrupts enabled halt. Whether it could.
pub fn init() -> bool {
    let installed = dispatch::install(
        lapic::TIMER_VECTOR,
        "lapic timer",
        "LAPIC",
        alloc::boxed::Box::new(|| {}),
    )
    .is_ok();
    if installed {
        READY.store(true, Ordering::Release);
    } else {
        log::warn!("idle: the LAPIC timer's vector is taken; waits spin");
    }
    installed
}

/// Whether the timer can wake a halted CPU: its handler is installed and its rate known.
pub fn timer_ready() -> bool {
    READY.load(Ordering::Acquire) && lapic::timer_hz() != 0 && lapic::get().is_some()
}

/// Arms the local APIC timer to fire once, `us` microseconds from now (rounded up to a
/// whole tick, at most the counter's 2^32 - 1 ticks: 68 s at QEMU's 62.5 MHz). Replaces any
/// arming still pending. Whether the timer could be armed ([`timer_ready`]).
pub fn wake_in(us: u64) -> bool {
    let (Some(lapic), true) = (lapic::get(), timer_ready()) else {
        return false;
    };
    let hz = u128::from(lapic::timer_hz());
    let count = (hz * u128::from(us))
        .div_ceil(1_000_000)
        .clamp(1, u128::from(u32::MAX));
    lapic.timer_one_shot(count as u32);
    true
}

/// Waits a little for `done`, at most until `until_us` (on `crate::time::micros_since_boot`):
/// halted until the next interrupt if interrupts are enabled and the timer is ready, else
/// one look and one spin. Returns whether `done` held; `false` means "look again" (the
/// bound passed, or any interrupt ended the halt). The contract is
/// `pci::platform::Platform::idle_until`'s.
pub fn idle_until(until_us: u64, done: &mut dyn FnMut() -> bool) -> bool {
    if !interrupts::are_enabled() || !timer_ready() {
        // Halting here could never end (IF = 0), or nothing would bound it (no timer yet).
        if done() {
            return true;
        }
        core::hint::spin_loop();
        return false;
    }
    // From the look to the halt with interrupts off: an interrupt in between stays pending
    // and ends the halt at once.
    interrupts::disable();
    if done() {
        interrupts::enable();
        return true;
    }
    let now = crate::time::micros_since_boot();
    if now >= until_us {
        interrupts::enable();
        return false;
    }
    wake_in(until_us - now);
    // `sti; hlt` back to back; returns after the waking interrupt's handler ran, with
    // interrupts enabled, as they were on entry.
    interrupts::enable_and_hlt();
    false
}
