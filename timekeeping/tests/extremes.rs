//! Readings at the edges of u64: rates near the top and brackets as wide as the TSC,
//! which must be judged and estimated without overflowing.
use timekeeping::calibration::{Reading, Window, estimate, judge, span};
use timekeeping::counter::Counter;

/// A window whose TSC advanced by `tsc` ticks while the reference advanced by `ticks`,
/// with zero-width brackets.
fn window(tsc: u64, ticks: u64) -> Window {
    Window {
        start: Reading {
            tsc_before: 0,
            value: 0,
            tsc_after: 0,
        },
        end: Reading {
            tsc_before: tsc,
            value: ticks,
            tsc_after: tsc,
        },
    }
}

/// `estimate` computes `hz + spread` in u64: with rates near u64::MAX (a reference that
/// barely moved over a long window) it overflows (panics in a debug build) instead of
/// returning an estimate or an error.
#[test]
fn estimate_with_rates_near_u64_max_does_not_overflow() {
    // Slowest legal HPET: period 100 ns, 10 MHz.
    let hpet = Counter::hpet(100_000_000u64 << 32).unwrap();
    assert_eq!(hpet.hz, 10_000_000);
    let top = u64::MAX / hpet.hz;
    // Rates top*1e7 - j*1e7: all within 1 % of each other, each fits in u64.
    let windows: Vec<Window> = (0..7).map(|j| window(top - j, 1)).collect();
    for w in &windows {
        assert!(judge(w, &hpet).is_ok());
    }
    // Must not panic; whatever it returns, it must be a value or an error.
    let r = std::panic::catch_unwind(|| estimate(&windows, &hpet));
    assert!(
        r.is_ok(),
        "estimate panicked (arithmetic overflow in hz + spread)"
    );
}

/// `judge` (and `span`) add the two bracket widths in u64; two brackets that together span
/// more than 2^64 TSC ticks overflow (panic in a debug build) instead of being rejected
/// as a slow read.
#[test]
fn judge_with_huge_brackets_does_not_overflow() {
    let pm = Counter::pm_timer(true);
    let w = Window {
        start: Reading {
            tsc_before: 0,
            value: 0,
            tsc_after: u64::MAX,
        },
        end: Reading {
            tsc_before: 1,
            value: 1,
            tsc_after: u64::MAX,
        },
    };
    let r = std::panic::catch_unwind(|| judge(&w, &pm));
    assert!(r.is_ok(), "judge panicked (w0 + w1 overflow)");
    let r = std::panic::catch_unwind(|| span(&w, &pm, 3_000_000_000));
    assert!(r.is_ok(), "span panicked (w0 + w1 overflow)");
}
