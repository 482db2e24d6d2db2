//! `PciFunction::wait_until` on a platform that sleeps between looks, as the kernel halts the
//! CPU until the next interrupt (`Platform::idle_until`): the device's interrupt ends the
//! wait, no sleep runs past the deadline or the next presence check, a timeout and a removal
//! still end it, and a platform that cannot sleep spins as before.
//!
//! The fake's clock advances 1 µs per look and jumps to the end of each sleep
//! (`FakePlatform::halt_when_idle`), so the times below are exact up to a few looks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pci::fake::irq::{ADDRESS, FakePlatform, device, handle};
use pci::function::PRESENCE_CHECK_US;
use pci::irq::IrqKinds;

/// A timeout the fake clock never reaches in these tests.
const LONG: u64 = 1 << 40;

/// Looks at the clock a wait takes besides its sleeps (a few per round).
const SLACK: u64 = 16;

#[test]
fn the_devices_interrupt_ends_a_halted_wait() {
    let platform = FakePlatform::leaked(1);
    platform.halt_when_idle();
    let (function, _space) = handle(device(4), platform);
    let vectors = function.alloc_irq_vectors(1, 1, IrqKinds::MSIX).unwrap();
    let vector = vectors.vector(0).unwrap();
    let interrupts = Arc::new(AtomicU64::new(0));
    let counter = interrupts.clone();
    let _registration = vectors
        .request(0, "test", move || {
            counter.fetch_add(1, Ordering::Release);
        })
        .unwrap();
    let function = vectors.function();

    let start = function.now_us();
    // The device completes after 2.5 presence-check periods.
    let at = start + 5 * PRESENCE_CHECK_US / 2;
    platform.interrupt_at(at, vector.cpu(), vector.number());
    let held = function.wait_until(LONG, || interrupts.load(Ordering::Acquire) != 0);
    let end = function.now_us();

    assert!(held, "the interrupt did not end the wait");
    assert!(
        (at..at + SLACK).contains(&end),
        "woke at {end}, the interrupt came at {at}"
    );
    // Two sleeps to the presence checks, one to the interrupt, then the look that sees it:
    // a handful of rounds where a spinning wait takes one per microsecond.
    let sleeps = platform.sleeps();
    assert_eq!(sleeps.len(), 3, "sleeps {sleeps:?}");
    assert_eq!(sleeps[2].1, at);
    for (from, to) in &sleeps[..2] {
        assert!(
            to - from <= PRESENCE_CHECK_US,
            "slept {from}..{to}, past a presence check"
        );
    }
    assert!(
        platform.idle_calls() <= 6,
        "{} calls",
        platform.idle_calls()
    );
    assert!(!function.vanished());
}

#[test]
fn a_halted_wait_gives_up_at_its_deadline() {
    let platform = FakePlatform::leaked(1);
    platform.halt_when_idle();
    let (function, _space) = handle(device(4), platform);
    let timeout = 7 * PRESENCE_CHECK_US / 2;
    let start = function.now_us();
    assert!(!function.wait_until(timeout, || false));
    let end = function.now_us();
    let deadline = start + timeout;
    assert!(
        (deadline..deadline + SLACK).contains(&end),
        "gave up at {end}, the deadline was {deadline}"
    );
    let sleeps = platform.sleeps();
    for (from, to) in &sleeps {
        // The wait's own deadline is a look or two after `start`.
        assert!(
            *to <= deadline + SLACK,
            "slept {from}..{to}, past the deadline"
        );
        assert!(
            to - from <= PRESENCE_CHECK_US,
            "slept {from}..{to}, past a presence check"
        );
    }
    // Three presence-check periods and the half one to the deadline.
    assert_eq!(sleeps.len(), 4, "sleeps {sleeps:?}");
    assert!(!function.vanished(), "a timeout is not a removal");
}

#[test]
fn a_removal_ends_a_halted_wait_at_the_next_presence_check() {
    let platform = FakePlatform::leaked(1);
    platform.halt_when_idle();
    let (function, space) = handle(device(4), platform);
    let start = function.now_us();
    space.lock().remove(ADDRESS);
    assert!(!function.wait_until(LONG, || false));
    let waited = function.now_us() - start;
    assert!(function.vanished(), "the wait did not say why it ended");
    assert!(
        (PRESENCE_CHECK_US..PRESENCE_CHECK_US + SLACK).contains(&waited),
        "ended after {waited} µs"
    );
}

#[test]
fn a_condition_that_holds_is_seen_before_any_sleep() {
    let platform = FakePlatform::leaked(1);
    platform.halt_when_idle();
    let (function, _space) = handle(device(4), platform);
    assert!(function.wait_until(LONG, || true));
    assert_eq!(platform.idle_calls(), 1);
    assert!(platform.sleeps().is_empty());
}

#[test]
fn a_removal_in_the_last_period_is_told_from_a_timeout() {
    let platform = FakePlatform::leaked(1);
    platform.halt_when_idle();
    let (function, space) = handle(device(4), platform);
    let mut looks = 0;
    // Gone after the first look; the deadline comes before the first presence check.
    assert!(!function.wait_until(PRESENCE_CHECK_US / 2, || {
        looks += 1;
        if looks == 1 {
            space.lock().remove(ADDRESS);
        }
        false
    }));
    assert!(function.vanished(), "reported as a plain timeout");
}

#[test]
fn a_platform_that_cannot_sleep_spins_between_looks() {
    // The trait's default, which the fake keeps unless told to halt: one look per call.
    let platform = FakePlatform::leaked(1);
    // Under Miri each look is slow: the clock moves 100 µs per look there, so the timeout
    // below is 300 looks instead of 30 000.
    platform.set_clock_step(if cfg!(miri) { 100 } else { 1 });
    let (function, _space) = handle(device(4), platform);
    let mut looks = 0u64;
    assert!(function.wait_until(LONG, || {
        looks += 1;
        looks == 1000
    }));
    assert_eq!(platform.idle_calls(), 1000);
    assert!(platform.sleeps().is_empty());
    // And its timeouts still end it.
    assert!(!function.wait_until(3 * PRESENCE_CHECK_US, || false));
}
