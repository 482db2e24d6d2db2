//! Running calibration windows against a reference counter.
//!
//! Design: a [`Reference`] is a free-running counter the kernel can read (HPET, ACPI PM
//! timer, PIT). [`measure`] opens windows of [`WINDOW_US`] one after another, each read
//! bracketed by ordered TSC reads, until [`WINDOWS`] windows pass `timekeeping`'s judgement
//! or [`MAX_ATTEMPTS`] were tried; the statistics (median, outliers, spread) are
//! `timekeeping::calibration`'s. Every loop is bounded: a reference that never reaches the
//! end of a window stops after [`MAX_POLLS`] reads or [`WINDOW_TSC_SLACK`] times the window
//! by the TSC, whichever comes first; a reference or TSC that does not move in the first
//! window ends the measurement at once, and a reference that stops later ends it after
//! [`MAX_STILL_IN_A_ROW`] still windows.

use timekeeping::calibration::{self, Estimate, Failure, Reading, Rejection, Window};
use timekeeping::counter::Counter;

/// Windows wanted.
pub const WINDOWS: usize = 7;
/// Length of a window, by the reference, microseconds.
pub const WINDOW_US: u64 = 2_000;
/// Windows tried at most.
const MAX_ATTEMPTS: usize = 3 * WINDOWS;
/// Reference reads per window at most (a read takes at least ~100 ns on real hardware, so a
/// 2 ms window needs well under this).
const MAX_POLLS: u64 = 2_000_000;
/// A window also ends after this many times its length by the TSC at the highest plausible
/// rate (`timekeeping::cpuid::MAX_PLAUSIBLE_HZ`): a read of a legacy port takes microseconds
/// on real chipsets, where [`MAX_POLLS`] alone would be seconds.
const WINDOW_TSC_SLACK: u64 = 20;
/// Windows in a row in which the reference did not move before the measurement gives up.
const MAX_STILL_IN_A_ROW: usize = 2;

/// A reference counter.
pub trait Reference {
    /// Rate, width and direction.
    fn counter(&self) -> Counter;
    /// The counter's current value.
    fn read(&self) -> u64;
}

/// One read of `r` between two ordered TSC reads.
fn bracketed(r: &dyn Reference) -> Reading {
    let tsc_before = super::rdtsc_ordered();
    let value = r.read();
    let tsc_after = super::rdtsc_ordered();
    Reading {
        tsc_before,
        value,
        tsc_after,
    }
}

/// The narrowest of a few bracketed reads of `r`: the end point of a long window, where
/// the bracket is the whole error.
pub fn tightest(r: &dyn Reference) -> Reading {
    let mut best = bracketed(r);
    for _ in 0..4 {
        let next = bracketed(r);
        if next.width().unwrap_or(u64::MAX) < best.width().unwrap_or(u64::MAX) {
            best = next;
        }
    }
    best
}

/// Measures the TSC rate against `r`: [`WINDOWS`] windows of [`WINDOW_US`].
pub fn measure(r: &dyn Reference) -> Result<Estimate, Failure> {
    measure_with(r, WINDOWS, WINDOW_US)
}

/// Measures the TSC rate against `r` with `windows` windows (at least
/// `calibration::MIN_GOOD_WINDOWS`, at most [`WINDOWS`]) of `window_us` each.
pub fn measure_with(
    r: &dyn Reference,
    windows: usize,
    window_us: u64,
) -> Result<Estimate, Failure> {
    let wanted = windows.clamp(calibration::MIN_GOOD_WINDOWS, WINDOWS);
    let counter = r.counter();
    let target = counter.ticks_in_us(window_us);
    let empty = Reading {
        tsc_before: 0,
        value: 0,
        tsc_after: 0,
    };
    let mut windows = [Window {
        start: empty,
        end: empty,
    }; MAX_ATTEMPTS];
    // TSC ticks after which a window ends whatever the reference says (saturating: a
    // window of hours is still bounded).
    let tsc_limit = window_us
        .saturating_mul(WINDOW_TSC_SLACK)
        .saturating_mul(timekeeping::cpuid::MAX_PLAUSIBLE_HZ / 1_000_000);
    let mut good = 0;
    let mut still = 0;
    for attempt in 0..MAX_ATTEMPTS {
        let start = bracketed(r);
        let mut end = bracketed(r);
        let mut polls = 1;
        while counter.delta(start.value, end.value) < target
            && polls < MAX_POLLS
            && end.tsc_after.wrapping_sub(start.tsc_before) < tsc_limit
        {
            end = bracketed(r);
            polls += 1;
        }
        let window = Window { start, end };
        windows[attempt] = window;
        match calibration::judge(&window, &counter) {
            Ok(_) => {
                good += 1;
                still = 0;
            }
            Err(Rejection::ReferenceStill) if attempt == 0 => return Err(Failure::ReferenceStill),
            Err(Rejection::TscStill) if attempt == 0 => return Err(Failure::TscStill),
            Err(Rejection::ReferenceStill) => {
                // A reference that moved and then stopped: more windows would each wait
                // for the limit above.
                still += 1;
                if still == MAX_STILL_IN_A_ROW {
                    return calibration::estimate(&windows[..=attempt], &counter);
                }
            }
            Err(_) => still = 0,
        }
        if good == wanted {
            return calibration::estimate(&windows[..=attempt], &counter);
        }
        if attempt + 1 == 3 * wanted {
            return calibration::estimate(&windows[..=attempt], &counter);
        }
    }
    calibration::estimate(&windows, &counter)
}
