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
const CALIBRATION_MS: u64 = 10;

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; CR4.TSD is clear in ring 0 anyway.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Marks time zero. Called first thing at boot.
pub fn mark_boot() {
    BOOT_TSC.store(rdtsc(), Ordering::Relaxed);
}

/// Measures the TSC frequency against the PIT. Returns it in Hz.
pub fn calibrate() -> u64 {
    let ticks = PIT_HZ * CALIBRATION_MS / 1000;
    let mut gate: Port<u8> = Port::new(PORT_61);
    let mut command: Port<u8> = Port::new(PIT_COMMAND);
    let mut channel2: Port<u8> = Port::new(PIT_CHANNEL2);
    // SAFETY: the PIT and port 0x61 are fixed PC platform devices; channel 2 only drives the
    // speaker, which stays off (bit 1 cleared), so nothing else depends on these writes.
    let (start, end) = unsafe {
        let old = gate.read();
        gate.write((old & !0x02) | 0x01);
        // Channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count), binary.
        command.write(0b1011_0000);
        channel2.write((ticks & 0xff) as u8);
        channel2.write((ticks >> 8) as u8);
        let start = rdtsc();
        let mut spins: u64 = 0;
        // Output (bit 5) goes high at terminal count. Bounded: a missing PIT must not hang.
        while gate.read() & 0x20 == 0 && spins < 100_000_000 {
            spins += 1;
        }
        let end = rdtsc();
        gate.write(old);
        (start, end)
    };
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
