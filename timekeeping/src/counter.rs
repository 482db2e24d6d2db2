//! Reference counters and their wrap-around.
//!
//! Design: every reference clock the kernel calibrates against is a free-running counter of
//! limited width at a rate the platform states:
//!
//! - the HPET main counter (IA-PC HPET Specification 1.0a §2.3): counts up, 32 or 64 bits
//!   (`COUNT_SIZE_CAP`, capabilities bit 13), one tick every `COUNTER_CLK_PERIOD`
//!   femtoseconds (capabilities bits 63:32, nonzero and at most 10^8 fs = 100 ns, §2.3.7.2);
//! - the ACPI PM timer (ACPI 6.5 §4.8.3.3): counts up at 3.579545 MHz, 24 bits, or 32 when
//!   the FADT sets `TMR_VAL_EXT`;
//! - 8254 PIT channel 0 in mode 2 with a reload of 0 (65536): counts down at 1.193182 MHz,
//!   16 bits.
//!
//! A delta is taken modulo the counter's width, so one wrap inside a window is harmless;
//! windows are kept far shorter than the shortest wrap period (the PIT's 54.9 ms).

/// ACPI PM timer rate, Hz (ACPI 6.5 §4.8.3.3).
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// 8254 PIT input clock, Hz (Intel 8254 data sheet; IBM PC/AT).
pub const PIT_HZ: u64 = 1_193_182;
/// Largest HPET counter period allowed, femtoseconds (IA-PC HPET 1.0a §2.3.7.2).
pub const HPET_MAX_PERIOD_FS: u64 = 100_000_000;

/// Which way a counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Increments (HPET, PM timer).
    Up,
    /// Decrements (PIT).
    Down,
}

/// A free-running reference counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counter {
    /// Ticks per second.
    pub hz: u64,
    /// Width in bits, 1..=64.
    pub bits: u32,
    /// Counting direction.
    pub direction: Direction,
}

impl Counter {
    /// The ACPI PM timer, 24 or 32 bits wide.
    pub fn pm_timer(extended_32bit: bool) -> Self {
        Self {
            hz: PM_TIMER_HZ,
            bits: if extended_32bit { 32 } else { 24 },
            direction: Direction::Up,
        }
    }

    /// PIT channel 0 in mode 2 with a reload value of 0 (65536).
    pub fn pit() -> Self {
        Self {
            hz: PIT_HZ,
            bits: 16,
            direction: Direction::Down,
        }
    }

    /// The HPET from its capabilities register (IA-PC HPET 1.0a §2.3.4): `None` when the
    /// period is out of the specification's range (an HPET that is not there reads all ones
    /// or all zeros).
    pub fn hpet(capabilities: u64) -> Option<Self> {
        let period_fs = capabilities >> 32;
        if period_fs == 0 || period_fs > HPET_MAX_PERIOD_FS {
            return None;
        }
        Some(Self {
            hz: 1_000_000_000_000_000 / period_fs,
            bits: if capabilities & (1 << 13) != 0 {
                64
            } else {
                32
            },
            direction: Direction::Up,
        })
    }

    /// Mask of the counter's valid bits.
    pub fn mask(&self) -> u64 {
        match self.bits {
            0 => 0,
            64.. => u64::MAX,
            b => (1u64 << b) - 1,
        }
    }

    /// Ticks elapsed from reading `start` to reading `end`, modulo the counter's width
    /// (correct across one wrap; bits above the width are ignored).
    pub fn delta(&self, start: u64, end: u64) -> u64 {
        let d = match self.direction {
            Direction::Up => end.wrapping_sub(start),
            Direction::Down => start.wrapping_sub(end),
        };
        d & self.mask()
    }

    /// Ticks in `us` microseconds (at least 1).
    pub fn ticks_in_us(&self, us: u64) -> u64 {
        let t = u128::from(self.hz) * u128::from(us) / 1_000_000;
        u64::try_from(t).unwrap_or(u64::MAX).max(1)
    }

    /// Time for the counter to wrap, microseconds.
    pub fn wrap_us(&self) -> u64 {
        let t = (u128::from(self.mask()) + 1) * 1_000_000 / u128::from(self.hz.max(1));
        u64::try_from(t).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pm_timer_24bit_wrap() {
        let pm = Counter::pm_timer(false);
        // 0xFF_FFF0 → 0x00_0010 is 0x20 ticks across the 24-bit wrap.
        assert_eq!(pm.delta(0x00FF_FFF0, 0x0000_0010), 0x20);
        // Garbage in the top byte of the 32-bit port read does not matter.
        assert_eq!(pm.delta(0xAAFF_FFF0, 0x5500_0010), 0x20);
        assert_eq!(pm.delta(5, 5), 0);
        assert_eq!(pm.wrap_us(), 4_686_968);
    }

    #[test]
    fn pm_timer_32bit_wrap() {
        let pm = Counter::pm_timer(true);
        assert_eq!(pm.delta(0xFFFF_FFF0, 0x0000_0010), 0x20);
        // Past 2^24 ticks only the 32-bit width gives the right answer.
        assert_eq!(
            Counter::pm_timer(false).delta(0xFFFF_FFF0, 0x0100_0010),
            0x20
        );
        assert_eq!(pm.delta(0xFFFF_FFF0, 0x0100_0010), 0x0100_0020);
    }

    #[test]
    fn pit_counts_down_and_wraps() {
        let pit = Counter::pit();
        assert_eq!(pit.delta(1000, 400), 600);
        // 0x0010 → 0xFFF0 going down is 0x20 ticks through zero.
        assert_eq!(pit.delta(0x0010, 0xFFF0), 0x20);
        assert_eq!(pit.ticks_in_us(2_000), 2_386);
        assert!(pit.wrap_us() > 54_000 && pit.wrap_us() < 55_000);
    }

    #[test]
    fn hpet_capabilities() {
        // QEMU: 10 ns period, 64-bit counter, vendor 8086, 3 timers.
        let qemu = (10_000_000u64 << 32) | (1 << 13) | 0x8086_0000 | (2 << 8) | 1;
        let h = Counter::hpet(qemu).expect("valid");
        assert_eq!(h.hz, 100_000_000);
        assert_eq!(h.bits, 64);
        assert_eq!(h.delta(u64::MAX - 1, 3), 5);
        // 14.318 MHz, 32-bit counter (a common chipset HPET).
        let ich = (69_841_279u64 << 32) | 0x8086_8201;
        let h = Counter::hpet(ich).expect("valid");
        assert_eq!(h.hz, 14_318_179);
        assert_eq!(h.bits, 32);
        assert_eq!(h.delta(0xFFFF_FFFF, 1), 2);
        // Absent (all ones), zero period, too slow.
        assert_eq!(Counter::hpet(u64::MAX), None);
        assert_eq!(Counter::hpet(0x8086_a201), None);
        assert_eq!(Counter::hpet((HPET_MAX_PERIOD_FS + 1) << 32), None);
        assert!(Counter::hpet(HPET_MAX_PERIOD_FS << 32).is_some());
    }
}
