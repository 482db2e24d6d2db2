//! Timekeeping arithmetic the kernel needs to trust its clock, kept apart from the hardware
//! so that it can be tested on the host.
//!
//! - [`cpuid`]: the TSC rate that CPUID leaves 0x15 and 0x16 state (Intel SDM vol. 3B
//!   §18.7.3), with the SDM's table of crystal frequencies for parts whose leaf 0x15 gives
//!   no crystal rate.
//! - [`counter`]: reference counters of limited width (HPET, ACPI PM timer, 8254 PIT) and
//!   their wrap-around.
//! - [`calibration`]: measuring the TSC against a reference over several short windows;
//!   windows whose reference read was interrupted are dropped, the rate is the median, and
//!   windows far from it are rejected as outliers.
//! - [`choice`]: which figure to believe when CPUID and several reference timers speak.
//!
//! Nothing here touches hardware: the kernel reads the registers and hands the numbers in.
#![cfg_attr(not(test), no_std)]

pub mod calibration;
pub mod choice;
pub mod counter;
pub mod cpuid;

use core::fmt;

/// A non-negative number in tenths, displayed with one decimal (`24451` → `2445.1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tenths(pub u64);

impl fmt::Display for Tenths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0 / 10, self.0 % 10)
    }
}

/// A frequency in MHz with one decimal, rounded to the nearest 100 kHz.
pub fn mhz(hz: u64) -> Tenths {
    Tenths(hz.saturating_add(50_000) / 100_000)
}

/// Parts per million as a percentage with one decimal, rounded up (a spread of 0.01 % is
/// shown as 0.1 %, never as 0.0 % unless it is zero).
pub fn percent(ppm: u64) -> Tenths {
    Tenths(ppm.div_ceil(1_000))
}

/// How far `a` is from `b`, in parts per million of `b` (`u64::MAX` when `b` is 0).
pub fn disagreement_ppm(a: u64, b: u64) -> u64 {
    if b == 0 {
        return u64::MAX;
    }
    let diff = u128::from(a.abs_diff(b)) * 1_000_000 / u128::from(b);
    u64::try_from(diff).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(mhz(2_445_123_456).to_string(), "2445.1");
        assert_eq!(mhz(2_445_150_000).to_string(), "2445.2");
        assert_eq!(mhz(9_000_000).to_string(), "9.0");
        assert_eq!(percent(30_000).to_string(), "3.0");
        assert_eq!(percent(2_999).to_string(), "0.3");
        assert_eq!(percent(10).to_string(), "0.1");
        assert_eq!(percent(0).to_string(), "0.0");
    }

    #[test]
    fn disagreement() {
        assert_eq!(disagreement_ppm(102, 100), 20_000);
        assert_eq!(disagreement_ppm(98, 100), 20_000);
        assert_eq!(disagreement_ppm(100, 100), 0);
        assert_eq!(disagreement_ppm(1, 0), u64::MAX);
        assert_eq!(disagreement_ppm(u64::MAX, 1), u64::MAX);
    }
}
