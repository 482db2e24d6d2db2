//! Measuring the TSC against a reference counter over several short windows.
//!
//! Design: one window is two bracketed reference reads, each `TSC, reference, TSC`. The
//! moment of a read is taken as the midpoint of its bracket, so a read's error is at most
//! half its bracket. A wide bracket means the read was slow or the CPU was taken away in
//! the middle of it (a descheduled vCPU, an SMI): such windows are rejected
//! ([`MAX_BRACKET_PPM`] of the window, both reads together). Time lost *between* the reads
//! does no harm, because the TSC and the reference both keep counting.
//!
//! Of the accepted windows the rate is the median; windows more than [`OUTLIER_PPM`] from
//! it are dropped as outliers, and the answer is the median of the rest. At least
//! [`MIN_GOOD_WINDOWS`] must remain, otherwise the measurement is refused rather than
//! guessed. The spread (max − min of the kept windows, relative to the result) is reported
//! so the log says how much the figure can be trusted.

use crate::counter::Counter;

/// Widest both brackets of a window may be together, parts per million of the window.
pub const MAX_BRACKET_PPM: u64 = 10_000;
/// A window further than this from the median is an outlier, parts per million.
pub const OUTLIER_PPM: u64 = 10_000;
/// Fewest windows an estimate may rest on.
pub const MIN_GOOD_WINDOWS: usize = 4;
/// Most windows [`estimate`] looks at.
pub const MAX_WINDOWS: usize = 64;

/// One reference read, bracketed by TSC reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// TSC just before the read.
    pub tsc_before: u64,
    /// The reference counter's value.
    pub value: u64,
    /// TSC just after the read.
    pub tsc_after: u64,
}

impl Reading {
    /// Width of the bracket in TSC ticks (`None` if the TSC went backwards).
    pub fn width(&self) -> Option<u64> {
        self.tsc_after.checked_sub(self.tsc_before)
    }

    /// Midpoint of the bracket.
    fn mid(&self) -> u64 {
        self.tsc_before + (self.tsc_after - self.tsc_before) / 2
    }
}

/// A calibration window: the reference read at its start and at its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First read.
    pub start: Reading,
    /// Last read.
    pub end: Reading,
}

/// Why a window was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The TSC went backwards within a bracket or across the window.
    TscBackwards,
    /// The TSC did not advance across the window.
    TscStill,
    /// The reference did not advance across the window.
    ReferenceStill,
    /// A read took too long (bracket over [`MAX_BRACKET_PPM`] of the window).
    SlowRead,
}

/// Judges one window: the TSC rate it shows, Hz, or why it cannot be used.
pub fn judge(window: &Window, reference: &Counter) -> Result<u64, Rejection> {
    let (Some(w0), Some(w1)) = (window.start.width(), window.end.width()) else {
        return Err(Rejection::TscBackwards);
    };
    let tsc = window
        .end
        .mid()
        .checked_sub(window.start.mid())
        .ok_or(Rejection::TscBackwards)?;
    if tsc == 0 {
        return Err(Rejection::TscStill);
    }
    let ticks = reference.delta(window.start.value, window.end.value);
    if ticks == 0 {
        return Err(Rejection::ReferenceStill);
    }
    if (u128::from(w0) + u128::from(w1)) * 1_000_000 > u128::from(tsc) * u128::from(MAX_BRACKET_PPM)
    {
        return Err(Rejection::SlowRead);
    }
    let hz = u128::from(tsc) * u128::from(reference.hz) / u128::from(ticks);
    Ok(u64::try_from(hz).unwrap_or(u64::MAX))
}

/// A calibration result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// The TSC rate, Hz.
    pub hz: u64,
    /// Windows the result rests on.
    pub used: usize,
    /// Windows looked at.
    pub total: usize,
    /// Windows rejected for a slow reference read.
    pub slow_reads: usize,
    /// Windows rejected as outliers.
    pub outliers: usize,
    /// (max − min) of the used windows' rates, parts per million of `hz`.
    pub spread_ppm: u64,
}

/// Why no estimate could be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The TSC did not advance in any window.
    TscStill,
    /// The reference did not advance in any window.
    ReferenceStill,
    /// Too few windows survived (slow reads, outliers, a TSC going backwards).
    TooNoisy {
        /// Windows left.
        good: usize,
        /// Windows looked at.
        total: usize,
    },
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TscStill => write!(f, "the TSC does not advance"),
            Self::ReferenceStill => write!(f, "the reference counter does not advance"),
            Self::TooNoisy { good, total } => write!(
                f,
                "only {good} of {total} windows usable (need {MIN_GOOD_WINDOWS})"
            ),
        }
    }
}

/// Median of a non-empty, sorted slice (the lower middle for even lengths).
fn median(sorted: &[u64]) -> u64 {
    sorted[(sorted.len() - 1) / 2]
}

/// Estimates the TSC rate from `windows` (at most [`MAX_WINDOWS`] are looked at).
pub fn estimate(windows: &[Window], reference: &Counter) -> Result<Estimate, Failure> {
    let windows = &windows[..windows.len().min(MAX_WINDOWS)];
    let mut rates = [0u64; MAX_WINDOWS];
    let mut n = 0;
    let (mut slow, mut tsc_still, mut ref_still) = (0, 0, 0);
    for w in windows {
        match judge(w, reference) {
            Ok(hz) => {
                rates[n] = hz;
                n += 1;
            }
            Err(Rejection::SlowRead) => slow += 1,
            Err(Rejection::TscStill) => tsc_still += 1,
            Err(Rejection::ReferenceStill) => ref_still += 1,
            Err(Rejection::TscBackwards) => {}
        }
    }
    let total = windows.len();
    if n == 0 && total > 0 && tsc_still == total {
        return Err(Failure::TscStill);
    }
    if n == 0 && total > 0 && ref_still == total {
        return Err(Failure::ReferenceStill);
    }
    if n < MIN_GOOD_WINDOWS {
        return Err(Failure::TooNoisy { good: n, total });
    }
    let accepted = &mut rates[..n];
    accepted.sort_unstable();
    let first = median(accepted);
    let near = |hz: &u64| crate::disagreement_ppm(*hz, first) <= OUTLIER_PPM;
    let lo = accepted.iter().position(near).unwrap_or(0);
    let hi = accepted.iter().rposition(near).map_or(0, |i| i + 1);
    // The median itself is near, so lo < hi; the kept rates are contiguous once sorted.
    let kept = &accepted[lo..hi];
    if kept.len() < MIN_GOOD_WINDOWS {
        return Err(Failure::TooNoisy {
            good: kept.len(),
            total,
        });
    }
    let hz = median(kept);
    let spread = kept[kept.len() - 1] - kept[0];
    Ok(Estimate {
        hz,
        used: kept.len(),
        total,
        slow_reads: slow,
        outliers: n - kept.len(),
        spread_ppm: crate::disagreement_ppm(hz.saturating_add(spread), hz),
    })
}

/// Why one long window ([`span`]) could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanRefusal {
    /// The window was judged unusable.
    Rejected(Rejection),
    /// By the provisional TSC rate the window lasted more than half the reference's wrap
    /// period, so the reference may have wrapped more than once: its delta is ambiguous.
    MayHaveWrapped,
}

impl core::fmt::Display for SpanRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SpanRefusal::Rejected(Rejection::TscBackwards) => f.write_str("the TSC went backwards"),
            SpanRefusal::Rejected(Rejection::TscStill) => f.write_str("the TSC did not advance"),
            SpanRefusal::Rejected(Rejection::ReferenceStill) => {
                f.write_str("the reference did not advance")
            }
            SpanRefusal::Rejected(Rejection::SlowRead) => {
                f.write_str("a reference read took too long for the window")
            }
            SpanRefusal::MayHaveWrapped => {
                f.write_str("the window was longer than half the reference's wrap period")
            }
        }
    }
}

/// The TSC rate over one long window, the boot's: the reference read when it is found and
/// again when the kernel is ready, with the boot's own work in between instead of a wait.
/// Both counters keep counting whatever runs meanwhile (interrupts, SMIs, a descheduled
/// vCPU), so only the two reads' brackets limit the precision, and over tens of
/// milliseconds that is a few parts per million: better than the median of short windows,
/// at no cost.
///
/// `provisional_hz` (the TSC rate measured at entry) tells whether the window could have
/// outlasted half the reference's wrap period (a 24-bit PM timer wraps every 4.7 s); such a
/// window is refused rather than guessed. The estimate has `used == total == 1` and
/// `spread_ppm` is the brackets' share of the window (the most the reads can be off).
pub fn span(
    window: &Window,
    reference: &Counter,
    provisional_hz: u64,
) -> Result<Estimate, SpanRefusal> {
    let hz = judge(window, reference).map_err(SpanRefusal::Rejected)?;
    let tsc = window.end.mid() - window.start.mid();
    let lasted_us = u128::from(tsc) * 1_000_000 / u128::from(provisional_hz.max(1));
    if lasted_us > u128::from(reference.wrap_us() / 2) {
        return Err(SpanRefusal::MayHaveWrapped);
    }
    let brackets =
        u128::from(window.start.width().unwrap_or(0)) + u128::from(window.end.width().unwrap_or(0));
    let spread_ppm = brackets * 1_000_000 / u128::from(tsc.max(1));
    Ok(Estimate {
        hz,
        used: 1,
        total: 1,
        slow_reads: 0,
        outliers: 0,
        spread_ppm: u64::try_from(spread_ppm).unwrap_or(u64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::{Counter, PM_TIMER_HZ};

    #[test]
    fn a_span_over_the_boot_gives_the_rate_and_its_bracket_error() {
        let pm = Counter::pm_timer(false);
        // 30 ms, reads of 2 µs at 2.445 GHz (4890 ticks each).
        let w = window(&pm, TSC_HZ, 5_000_000, 77, 30_000, 4_890);
        let e = span(&w, &pm, TSC_HZ).unwrap();
        assert!(within(e.hz, TSC_HZ, 10), "{}", e.hz);
        assert_eq!((e.used, e.total), (1, 1));
        // 2 × 4890 ticks of a 73.35 M-tick window: 133 ppm.
        assert!((120..=140).contains(&e.spread_ppm), "{}", e.spread_ppm);
    }

    #[test]
    fn a_span_longer_than_half_a_wrap_is_refused() {
        let pm = Counter::pm_timer(false);
        // 4.7 s wrap: a 3 s span is ambiguous even though one wrap would be handled.
        let w = window(&pm, TSC_HZ, 5_000_000, 77, 3_000_000, 4_890);
        assert_eq!(span(&w, &pm, TSC_HZ), Err(SpanRefusal::MayHaveWrapped));
        // A 32-bit PM timer (20 min wrap) takes it.
        let pm32 = Counter::pm_timer(true);
        let w = window(&pm32, TSC_HZ, 5_000_000, 77, 3_000_000, 4_890);
        assert!(within(span(&w, &pm32, TSC_HZ).unwrap().hz, TSC_HZ, 10));
    }

    #[test]
    fn a_span_with_a_still_reference_or_slow_read_is_refused() {
        let pm = Counter::pm_timer(false);
        let mut w = window(&pm, TSC_HZ, 5_000_000, 77, 30_000, 4_890);
        w.end.value = w.start.value;
        assert_eq!(
            span(&w, &pm, TSC_HZ),
            Err(SpanRefusal::Rejected(Rejection::ReferenceStill))
        );
        let mut w = window(&pm, TSC_HZ, 5_000_000, 77, 30_000, 4_890);
        w.end.tsc_after += 10_000_000; // a 4 ms read
        assert_eq!(
            span(&w, &pm, TSC_HZ),
            Err(SpanRefusal::Rejected(Rejection::SlowRead))
        );
    }

    const TSC_HZ: u64 = 2_445_000_000;

    /// A window of `ms` milliseconds on a `reference` starting at `ref0`, TSC starting at
    /// `tsc0`, each read taking `read` TSC ticks; the TSC runs at `tsc_hz`.
    fn window(
        reference: &Counter,
        tsc_hz: u64,
        tsc0: u64,
        ref0: u64,
        us: u64,
        read: u64,
    ) -> Window {
        let ticks = reference.ticks_in_us(us);
        let tsc_ticks =
            u64::try_from(u128::from(ticks) * u128::from(tsc_hz) / u128::from(reference.hz))
                .unwrap();
        let end_ref = match reference.direction {
            crate::counter::Direction::Up => ref0.wrapping_add(ticks) & reference.mask(),
            crate::counter::Direction::Down => ref0.wrapping_sub(ticks) & reference.mask(),
        };
        Window {
            start: Reading {
                tsc_before: tsc0,
                value: ref0,
                tsc_after: tsc0 + read,
            },
            end: Reading {
                tsc_before: tsc0 + tsc_ticks,
                value: end_ref,
                tsc_after: tsc0 + tsc_ticks + read,
            },
        }
    }

    fn seven(reference: &Counter, tsc_hz: u64) -> Vec<Window> {
        (0..7)
            .map(|i| {
                window(
                    reference,
                    tsc_hz,
                    1_000_000 + i * 10_000_000,
                    1000 + i * 9000,
                    2_000,
                    2_000,
                )
            })
            .collect()
    }

    fn within(hz: u64, expect: u64, ppm: u64) -> bool {
        crate::disagreement_ppm(hz, expect) <= ppm
    }

    #[test]
    fn clean_windows() {
        let hpet = Counter::hpet(10_000_000u64 << 32 | 1 << 13).unwrap();
        let e = estimate(&seven(&hpet, TSC_HZ), &hpet).expect("estimate");
        assert!(within(e.hz, TSC_HZ, 10), "{e:?}");
        assert_eq!((e.used, e.total, e.outliers, e.slow_reads), (7, 7, 0, 0));
        assert!(e.spread_ppm < 100, "{e:?}");
    }

    #[test]
    fn one_huge_outlier_is_dropped() {
        let pm = Counter::pm_timer(false);
        let mut w = seven(&pm, TSC_HZ);
        // The reference stood still for most of one window (end read is the start + 5):
        // that window's rate is absurd, yet its brackets are tight.
        w[3].end.value = w[3].start.value + 5;
        let e = estimate(&w, &pm).expect("estimate");
        assert!(within(e.hz, TSC_HZ, 100), "{e:?}");
        assert_eq!((e.used, e.outliers), (6, 1));
        // A window that is 10 times too fast is dropped the same way.
        let mut w = seven(&pm, TSC_HZ);
        w[0] = window(&pm, TSC_HZ * 10, 0, 0, 2_000, 2_000);
        let e = estimate(&w, &pm).expect("estimate");
        assert!(within(e.hz, TSC_HZ, 100), "{e:?}");
        assert_eq!(e.outliers, 1);
    }

    #[test]
    fn slow_reads_are_rejected() {
        let pm = Counter::pm_timer(true);
        let mut w = seven(&pm, TSC_HZ);
        // A descheduled vCPU during the end read: 3 ms gone inside the bracket, reference
        // read at an unknown moment inside it.
        w[1].end.tsc_after += TSC_HZ * 3 / 1000;
        w[5].start.tsc_before -= TSC_HZ / 1000;
        let e = estimate(&w, &pm).expect("estimate");
        assert_eq!((e.used, e.slow_reads), (5, 2));
        assert!(within(e.hz, TSC_HZ, 100), "{e:?}");
        assert_eq!(judge(&w[1], &pm), Err(Rejection::SlowRead));
    }

    #[test]
    fn all_noisy_is_refused() {
        let pm = Counter::pm_timer(false);
        // Every read takes 100 µs of a 2 ms window: 10 % brackets.
        let w: Vec<Window> = (0..7)
            .map(|i| {
                window(
                    &pm,
                    TSC_HZ,
                    i * 100_000_000,
                    i * 20_000,
                    2_000,
                    TSC_HZ / 10_000,
                )
            })
            .collect();
        assert_eq!(
            estimate(&w, &pm),
            Err(Failure::TooNoisy { good: 0, total: 7 })
        );
        // Tight brackets but rates scattered by ±5 %: no majority within 1 % of the median.
        let w: Vec<Window> = (0..7u64)
            .map(|i| {
                window(
                    &pm,
                    TSC_HZ / 100 * (85 + 5 * i),
                    i * 100_000_000,
                    i * 20_000,
                    2_000,
                    1_000,
                )
            })
            .collect();
        assert!(matches!(
            estimate(&w, &pm),
            Err(Failure::TooNoisy { good: 1, total: 7 })
        ));
        // Too few windows at all.
        assert_eq!(
            estimate(&seven(&pm, TSC_HZ)[..3], &pm),
            Err(Failure::TooNoisy { good: 3, total: 3 })
        );
        assert_eq!(
            estimate(&[], &pm),
            Err(Failure::TooNoisy { good: 0, total: 0 })
        );
    }

    #[test]
    fn wrapped_pm_timer() {
        // The 24-bit PM timer wraps inside every window.
        let pm = Counter::pm_timer(false);
        let w: Vec<Window> = (0..7u64)
            .map(|i| {
                window(
                    &pm,
                    TSC_HZ,
                    i * 10_000_000,
                    0xFF_FFFF - 1_000 - i,
                    2_000,
                    1_500,
                )
            })
            .collect();
        assert!(w.iter().all(|w| w.end.value < w.start.value));
        let e = estimate(&w, &pm).expect("estimate");
        assert!(within(e.hz, TSC_HZ, 100), "{e:?}");
        assert_eq!(e.used, 7);
        // Read as a 32-bit timer the same values would be nonsense and get refused or land
        // far from the truth.
        let wrong = Counter::pm_timer(true);
        assert!(estimate(&w, &wrong).map_or(true, |e| !within(e.hz, TSC_HZ, 100_000)));
        assert_eq!(pm.hz, PM_TIMER_HZ);
    }

    #[test]
    fn wrapped_pit() {
        let pit = Counter::pit();
        let w: Vec<Window> = (0..7u64)
            .map(|i| window(&pit, TSC_HZ, i * 10_000_000, 100 + i, 2_000, 3_000))
            .collect();
        assert!(w.iter().all(|w| w.end.value > w.start.value));
        let e = estimate(&w, &pit).expect("estimate");
        // The PIT's 2386 ticks quantise the result to about 4e-4.
        assert!(within(e.hz, TSC_HZ, 1_000), "{e:?}");
    }

    #[test]
    fn dead_counters() {
        let hpet = Counter::hpet(10_000_000u64 << 32).unwrap();
        let mut w = seven(&hpet, TSC_HZ);
        for x in &mut w {
            x.end.value = x.start.value;
        }
        assert_eq!(estimate(&w, &hpet), Err(Failure::ReferenceStill));
        let mut w = seven(&hpet, TSC_HZ);
        for x in &mut w {
            x.end.tsc_before = x.start.tsc_before;
            x.end.tsc_after = x.start.tsc_after;
        }
        assert_eq!(estimate(&w, &hpet), Err(Failure::TscStill));
        let mut w = seven(&hpet, TSC_HZ);
        w[2].start.tsc_after = w[2].start.tsc_before - 1;
        assert_eq!(judge(&w[2], &hpet), Err(Rejection::TscBackwards));
    }
}
