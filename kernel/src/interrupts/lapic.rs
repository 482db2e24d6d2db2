//! The local APIC (Intel SDM vol. 3A chapter 11), in xAPIC (MMIO) or x2APIC (MSR) mode.
//!
//! The mode is chosen at run time: x2APIC if firmware left it enabled (it cannot be turned
//! back without disabling the APIC), else x2APIC if the CPU has it (CPUID.01H:ECX bit 21) and
//! `apic=xapic` is not on the command line, else xAPIC through an uncached [`Mmio`] mapping
//! of the base in IA32_APIC_BASE. Register offsets are the xAPIC ones; x2APIC uses MSR
//! `0x800 + offset / 16` (SDM vol. 3A §11.12.1.2).
//!
//! Vectors the kernel fixes: spurious 0xFF (SVR), error 0xFE (LVT Error), timer 0xFD.

use core::sync::atomic::{AtomicU32, Ordering};

use spin::Once;
use x86_64::registers::model_specific::Msr;

use crate::memory::mmio::Mmio;

/// IA32_APIC_BASE MSR (SDM vol. 3A §11.4.4).
const IA32_APIC_BASE: u32 = 0x1B;
/// IA32_APIC_BASE: APIC global enable.
const APIC_BASE_ENABLE: u64 = 1 << 11;
/// IA32_APIC_BASE: x2APIC mode enable.
const APIC_BASE_X2APIC: u64 = 1 << 10;

/// Register offsets (SDM vol. 3A Table 11-1).
pub mod reg {
    /// Local APIC ID.
    pub const ID: u32 = 0x020;
    /// Version.
    pub const VERSION: u32 = 0x030;
    /// Task priority.
    pub const TPR: u32 = 0x080;
    /// End of interrupt.
    pub const EOI: u32 = 0x0B0;
    /// Spurious-interrupt vector.
    pub const SVR: u32 = 0x0F0;
    /// In-service register, first of eight (32 vectors each, 0x10 apart).
    pub const ISR0: u32 = 0x100;
    /// Error status.
    pub const ESR: u32 = 0x280;
    /// Interrupt command, low half (xAPIC).
    pub const ICR_LOW: u32 = 0x300;
    /// LVT timer.
    pub const LVT_TIMER: u32 = 0x320;
    /// LVT LINT0.
    pub const LVT_LINT0: u32 = 0x350;
    /// LVT LINT1.
    pub const LVT_LINT1: u32 = 0x360;
    /// LVT error.
    pub const LVT_ERROR: u32 = 0x370;
    /// Timer initial count.
    pub const TIMER_INITIAL: u32 = 0x380;
    /// Timer current count.
    pub const TIMER_CURRENT: u32 = 0x390;
    /// Timer divide configuration.
    pub const TIMER_DIVIDE: u32 = 0x3E0;
}

/// LVT mask bit.
pub const LVT_MASKED: u32 = 1 << 16;
/// Spurious-interrupt vector: the APIC delivers it without setting ISR; no EOI.
pub const SPURIOUS_VECTOR: u8 = 0xFF;
/// Vector of the LVT Error interrupt.
pub const ERROR_VECTOR: u8 = 0xFE;
/// Vector of the LVT timer.
pub const TIMER_VECTOR: u8 = 0xFD;

/// How the local APIC is reached.
pub enum Mode {
    /// Memory-mapped registers.
    XApic(Mmio),
    /// MSRs 0x800-0x8FF.
    X2Apic,
}

/// The boot CPU's local APIC.
pub struct LocalApic {
    mode: Mode,
}

static LAPIC: Once<LocalApic> = Once::new();
static TIMER_HZ: AtomicU32 = AtomicU32::new(0);

impl LocalApic {
    /// Reads a register.
    pub fn read(&self, offset: u32) -> u32 {
        match &self.mode {
            Mode::XApic(mmio) => mmio.read32(u64::from(offset)),
            // SAFETY: x2APIC mode is enabled, so MSR 0x800 + offset/16 is the register.
            Mode::X2Apic => unsafe { Msr::new(0x800 + offset / 16).read() as u32 },
        }
    }

    /// Writes a register.
    pub fn write(&self, offset: u32, value: u32) {
        match &self.mode {
            Mode::XApic(mmio) => mmio.write32(u64::from(offset), value),
            // SAFETY: x2APIC mode is enabled; writing an APIC register has no effect on memory.
            Mode::X2Apic => unsafe { Msr::new(0x800 + offset / 16).write(u64::from(value)) },
        }
    }

    /// Whether x2APIC mode is in use.
    pub fn is_x2apic(&self) -> bool {
        matches!(self.mode, Mode::X2Apic)
    }

    /// This CPU's APIC ID (8 bits in xAPIC mode, 32 in x2APIC).
    pub fn id(&self) -> u32 {
        let raw = self.read(reg::ID);
        if self.is_x2apic() { raw } else { raw >> 24 }
    }

    /// Signals end of interrupt.
    pub fn eoi(&self) {
        self.write(reg::EOI, 0);
    }

    /// Whether `vector` is in service (ISR bit set).
    pub fn in_service(&self, vector: u8) -> bool {
        let word = self.read(reg::ISR0 + u32::from(vector / 32) * 0x10);
        word & (1 << (vector % 32)) != 0
    }

    /// Sends `vector` to this CPU itself (fixed delivery; SDM vol. 3A §11.6.1, §11.12.11).
    pub fn self_ipi(&self, vector: u8) {
        match &self.mode {
            // ICR low: destination shorthand "self" (bits 19:18 = 01), fixed, edge.
            Mode::XApic(_) => self.write(reg::ICR_LOW, 0x0004_0000 | u32::from(vector)),
            // SAFETY: x2APIC SELF IPI register (MSR 0x83F) takes just the vector.
            Mode::X2Apic => unsafe { Msr::new(0x83F).write(u64::from(vector)) },
        }
    }

    /// Starts the timer counting down once from `count` (divide by 16) on [`TIMER_VECTOR`].
    pub fn timer_one_shot(&self, count: u32) {
        self.write(reg::TIMER_DIVIDE, 0b0011);
        self.write(reg::LVT_TIMER, u32::from(TIMER_VECTOR));
        self.write(reg::TIMER_INITIAL, count);
    }
}

fn apic_base() -> u64 {
    // SAFETY: reading IA32_APIC_BASE has no side effects; every x86_64 CPU has it.
    unsafe { Msr::new(IA32_APIC_BASE).read() }
}

fn cpu_has_x2apic() -> bool {
    // CPUID leaf 1 exists on every x86_64 CPU.
    let leaf1 = core::arch::x86_64::__cpuid(1);
    leaf1.ecx & (1 << 21) != 0
}

/// Enables the local APIC in the chosen mode: software enable with the spurious vector,
/// task priority 0, LINT0/LINT1 masked, errors on [`ERROR_VECTOR`], timer masked.
pub fn init(prefer_xapic: bool) -> &'static LocalApic {
    LAPIC.call_once(|| {
        let base = apic_base();
        let firmware_x2 = base & APIC_BASE_X2APIC != 0 && base & APIC_BASE_ENABLE != 0;
        let to_x2apic = || {
            if !firmware_x2 {
                // Enable first, then x2APIC (the xAPIC -> x2APIC transition, SDM §11.12.5).
                let mut msr = Msr::new(IA32_APIC_BASE);
                // SAFETY: setting EN then EXTD is the architectural way into x2APIC mode.
                unsafe { msr.write(base | APIC_BASE_ENABLE) };
                // SAFETY: as above.
                unsafe { msr.write(base | APIC_BASE_ENABLE | APIC_BASE_X2APIC) };
            }
            Mode::X2Apic
        };
        let mode = if firmware_x2 || (cpu_has_x2apic() && !prefer_xapic) {
            to_x2apic()
        } else {
            if base & APIC_BASE_ENABLE == 0 {
                // SAFETY: enabling the APIC at its current base.
                unsafe { Msr::new(IA32_APIC_BASE).write(base | APIC_BASE_ENABLE) };
            }
            let phys = base & 0x000f_ffff_ffff_f000;
            crate::memory::mmio::reserve_for_kernel(phys, 0x1000);
            match Mmio::map(phys, 0x1000) {
                Ok(mmio) => Mode::XApic(mmio),
                // A base the memory map calls RAM, or past the CPU's address width: x2APIC
                // reaches the same registers through MSRs.
                Err(e) if cpu_has_x2apic() => {
                    log::warn!("lapic: cannot map the xAPIC page at {phys:#x} ({e}); using x2APIC mode");
                    to_x2apic()
                }
                Err(e) => panic!(
                    "cannot map the local APIC at {phys:#x} ({e}) and the CPU has no x2APIC: no interrupts"
                ),
            }
        };
        let lapic = LocalApic { mode };
        lapic.write(reg::TPR, 0);
        lapic.write(reg::LVT_LINT0, LVT_MASKED);
        lapic.write(reg::LVT_LINT1, LVT_MASKED);
        lapic.write(reg::LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
        lapic.write(reg::LVT_ERROR, u32::from(ERROR_VECTOR));
        // ESR is read after a write (SDM §11.5.3); clear what firmware left.
        lapic.write(reg::ESR, 0);
        let _ = lapic.read(reg::ESR);
        lapic.write(reg::SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
        lapic.eoi();
        lapic
    })
}

/// The local APIC (after [`init`]).
pub fn get() -> Option<&'static LocalApic> {
    LAPIC.get()
}

/// The APIC ID of the CPU with allocator index `cpu` (`pci::vectors`), if it runs: only the
/// boot CPU does, as index 0.
pub fn apic_id(cpu: u32) -> Option<u32> {
    if cpu == super::vectors::current_cpu() {
        get().map(|l| l.id())
    } else {
        None
    }
}

/// Measures the timer's rate (divide by 16) against `reference`, a function that waits a
/// known number of microseconds. Returns Hz of the timer's input after division.
pub fn calibrate_timer(lapic: &LocalApic, wait_us: u64, reference: impl FnOnce(u64)) -> u32 {
    lapic.write(reg::TIMER_DIVIDE, 0b0011);
    lapic.write(reg::LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    lapic.write(reg::TIMER_INITIAL, u32::MAX);
    reference(wait_us);
    let elapsed = u32::MAX - lapic.read(reg::TIMER_CURRENT);
    lapic.write(reg::TIMER_INITIAL, 0);
    let hz = (u64::from(elapsed) * 1_000_000 / wait_us) as u32;
    TIMER_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// TSC when [`start_timer_span`] set the timer counting down from its maximum (0: not
/// started).
static SPAN_TSC: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Starts the timer counting down from its maximum, masked, divide by 16 (SDM vol. 3A
/// §11.5.4), and notes the TSC: [`finish_timer_span`] measures its rate over the boot
/// instead of waiting for it. Nothing else may use the timer in between.
pub fn start_timer_span(lapic: &LocalApic) {
    lapic.write(reg::TIMER_DIVIDE, 0b0011);
    lapic.write(reg::LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    lapic.write(reg::TIMER_INITIAL, u32::MAX);
    SPAN_TSC.store(crate::time::rdtsc(), Ordering::Relaxed);
}

/// Ends what [`start_timer_span`] began: the timer's rate (Hz after division) from its
/// count and the TSC at `tsc_hz`, or `None` when it was not started or ran down to 0 (the
/// boot took longer than its whole count; then [`calibrate_timer`] waits instead). Stops
/// the timer.
pub fn finish_timer_span(lapic: &LocalApic, tsc_hz: u64) -> Option<(u32, u64)> {
    let start = SPAN_TSC.swap(0, Ordering::Relaxed);
    let current = lapic.read(reg::TIMER_CURRENT);
    let ticks = crate::time::rdtsc().wrapping_sub(start);
    lapic.write(reg::TIMER_INITIAL, 0);
    if start == 0 || current == 0 || ticks == 0 {
        return None;
    }
    let elapsed = u64::from(u32::MAX - current);
    let hz = u128::from(elapsed) * u128::from(tsc_hz) / u128::from(ticks);
    let hz = u32::try_from(hz).ok().filter(|hz| *hz > 0)?;
    TIMER_HZ.store(hz, Ordering::Relaxed);
    let us = u128::from(ticks) * 1_000_000 / u128::from(tsc_hz.max(1));
    Some((hz, u64::try_from(us).unwrap_or(u64::MAX)))
}

/// The calibrated timer rate in Hz (after division by 16), 0 before calibration.
pub fn timer_hz() -> u32 {
    TIMER_HZ.load(Ordering::Relaxed)
}
