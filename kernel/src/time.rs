//! Time since boot from the time-stamp counter, calibrated against the 8254 PIT.
//!
//! The TSC (Intel SDM vol. 3B §18.17) counts at a constant rate on every CPU this kernel
//! targets; its rate is measured once by letting PIT channel 2 count down 10 ms with its
//! gate driven through port 0x61 (the classic PC speaker-gate method, no interrupts needed).

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

/// PIT input clock, Hz (Intel 8254 data sheet; IBM PC/AT).
const PIT_HZ: u64 = 1_193_182;
/// PIT channel 2 data port.
const PIT_CHANNEL2: u16 = 0x42;
/// PIT mode/command port.
const PIT_COMMAND: u16 = 0x43;
/// NMI status and control: bit 0 gates channel 2, bit 1 speaker, bit 5 channel 2 output.
const PORT_61: u16 = 0x61;
/// Calibration window.
const CALIBRATION_MS: u64 = 5;

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// Reads one of the PIT/port-0x61 registers.
fn inb(port: u16) -> u8 {
    // SAFETY: only called with the PIT and port 0x61, fixed PC platform registers whose
    // reads have no side effects.
    unsafe { Port::<u8>::new(port).read() }
}

/// Writes one of the PIT/port-0x61 registers.
fn outb(port: u16, value: u8) {
    // SAFETY: only called with PIT channel 2 and port 0x61; channel 2 drives nothing but the
    // speaker, which stays off (bit 1 cleared), so nothing else depends on these writes.
    unsafe { Port::<u8>::new(port).write(value) }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; CR4.TSD is clear in ring 0 anyway.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// TSC ticks since [`mark_boot`] (under QEMU's `-icount shift=0`: guest instructions).
pub fn ticks_since_boot() -> u64 {
    rdtsc().wrapping_sub(BOOT_TSC.load(Ordering::Relaxed))
}

/// Marks time zero. Called first thing at boot.
pub fn mark_boot() {
    BOOT_TSC.store(rdtsc(), Ordering::Relaxed);
}

/// Measures the TSC frequency against the PIT. Returns it in Hz.
pub fn calibrate() -> u64 {
    let ticks = PIT_HZ * CALIBRATION_MS / 1000;
    let old = inb(PORT_61);
    outb(PORT_61, (old & !0x02) | 0x01);
    // Channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count), binary.
    outb(PIT_COMMAND, 0b1011_0000);
    outb(PIT_CHANNEL2, (ticks & 0xff) as u8);
    outb(PIT_CHANNEL2, (ticks >> 8) as u8);
    let start = rdtsc();
    // Output (bit 5) goes high at terminal count. Bounded: a missing PIT must not hang.
    let mut spins: u64 = 0;
    while inb(PORT_61) & 0x20 == 0 && spins < 100_000_000 {
        spins += 1;
    }
    let end = rdtsc();
    outb(PORT_61, old);
    let hz = (end - start) * 1000 / CALIBRATION_MS;
    TSC_HZ.store(hz.max(1), Ordering::Relaxed);
    hz
}

/// Measured TSC rate, Hz (0 before [`calibrate`]).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Microseconds since [`mark_boot`] (0 before calibration).
pub fn micros_since_boot() -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed);
    if hz == 0 {
        return 0;
    }
    let delta = rdtsc().wrapping_sub(BOOT_TSC.load(Ordering::Relaxed));
    ((delta as u128) * 1_000_000 / hz as u128) as u64
}

/// Spins for at least `us` microseconds (never returns early; bounded by the TSC).
pub fn busy_wait_us(us: u64) {
    let hz = tsc_hz().max(1_000_000);
    let ticks = us.saturating_mul(hz / 1_000_000);
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}
