//! The HPET (IA-PC HPET specification 1.0a §2.3) as a reference clock: its main counter runs
//! at a rate the capabilities register states exactly (a period in femtoseconds), so it
//! calibrates the local APIC timer. Without an HPET the PIT does the job.

use crate::memory::mmio::Mmio;

/// General capabilities and ID; bits 63:32 are the counter period in femtoseconds.
const CAPABILITIES: u64 = 0x000;
/// General configuration; bit 0 enables the main counter.
const CONFIGURATION: u64 = 0x010;
/// Main counter value.
const MAIN_COUNTER: u64 = 0x0F0;

/// A mapped HPET.
pub struct Hpet {
    mmio: Mmio,
    period_fs: u64,
}

impl Hpet {
    /// Maps the HPET at `base` and starts its main counter.
    pub fn new(base: u64) -> Option<Hpet> {
        let mmio = Mmio::map(base, 0x400).ok()?;
        let period_fs = mmio.read64(CAPABILITIES) >> 32;
        // The specification caps the period at 100 ns (1e8 fs); 0 means no HPET answers.
        if period_fs == 0 || period_fs > 100_000_000 {
            log::warn!("hpet: implausible period {period_fs} fs; not used");
            return None;
        }
        let config = mmio.read64(CONFIGURATION);
        mmio.write64(CONFIGURATION, config | 1);
        Some(Hpet { mmio, period_fs })
    }

    /// Counter frequency in Hz.
    pub fn hz(&self) -> u64 {
        1_000_000_000_000_000 / self.period_fs
    }

    /// Spins for `us` microseconds by the main counter (bounded by the TSC in case the
    /// counter does not run).
    pub fn wait_us(&self, us: u64) {
        let ticks = us * 1_000_000_000 / self.period_fs;
        let start = self.mmio.read64(MAIN_COUNTER);
        let tsc_limit = crate::time::rdtsc() + 4 * us * (crate::time::tsc_hz() / 1_000_000).max(1);
        while self.mmio.read64(MAIN_COUNTER).wrapping_sub(start) < ticks {
            if crate::time::rdtsc() > tsc_limit {
                log::warn!("hpet: main counter is not running");
                break;
            }
            core::hint::spin_loop();
        }
    }
}
