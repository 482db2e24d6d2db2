//! A function that disappears while a driver waits on it (surprise removal, PCIe Base 6.0
//! §6.7.5): `PciFunction::wait_until` notices within `PRESENCE_CHECK_US` and gives up early
//! instead of spinning out its timeout; the handle says the function vanished, writes no
//! longer reach it, and dropping it still gives the function back.

use pci::fake::irq::{ADDRESS, FakePlatform, device, handle};
use pci::function::PRESENCE_CHECK_US;

/// A timeout far longer than the fake clock could run in a test: a wait that ends did so
/// because of the presence check, not the deadline.
const LONG: u64 = 1 << 40;

/// How far each look moves the fake clock, µs: 1 natively; under Miri, where every look
/// costs milliseconds, 100 (a presence-check period is then 100 looks instead of 10 000).
const STEP: u64 = if cfg!(miri) { 100 } else { 1 };

/// A fake platform whose clock moves [`STEP`] per look.
fn platform() -> &'static FakePlatform {
    let platform = FakePlatform::leaked(1);
    platform.set_clock_step(STEP);
    platform
}

#[test]
fn a_wait_on_a_vanishing_function_ends_early() {
    let platform = platform();
    let (function, space) = handle(device(4), platform);
    assert!(function.is_present() && !function.vanished());
    // From now on the function answers 40 more reads, then all ones (like a card pulled
    // out in the middle of a driver's poll loop).
    space.lock().add(ADDRESS, device(4).vanish_after_reads(40));
    let start = function.now_us();
    let mut polls = 0u64;
    let held = function.wait_until(LONG, || {
        polls += 1;
        // A status register that never becomes ready (reads all ones once gone).
        function.config_read32(0x40) == 0x1234_5678
    });
    let waited = function.now_us() - start;
    assert!(!held, "the condition cannot hold");
    assert!(function.vanished(), "the wait did not say why it ended");
    assert!(!function.is_present());
    // The fake clock advances STEP µs per look (each platform has its own): the
    // wait ended within a few check periods, nowhere near the timeout.
    assert!(
        waited < 100 * PRESENCE_CHECK_US,
        "waited {waited} µs over {polls} polls"
    );
    drop(function);
    assert_eq!(platform.released(), vec![ADDRESS]);
}

#[test]
fn a_present_function_is_checked_but_the_wait_runs_to_its_condition() {
    let platform = platform();
    let (function, _space) = handle(device(4), platform);
    let mut polls = 0u64;
    // Runs through several presence checks, then the condition holds.
    let held = function.wait_until(LONG, || {
        polls += 1;
        polls > 3 * PRESENCE_CHECK_US / STEP
    });
    assert!(held && !function.vanished());
}

#[test]
fn a_timeout_still_ends_a_wait_on_a_present_function() {
    let platform = platform();
    let (function, _space) = handle(device(4), platform);
    assert!(!function.wait_until(3 * PRESENCE_CHECK_US, || false));
    assert!(!function.vanished(), "a timeout is not a removal");
}

#[test]
fn a_function_replaced_by_another_device_counts_as_gone() {
    let platform = platform();
    let (function, space) = handle(device(4), platform);
    space.lock().add(
        ADDRESS,
        pci::fake::FakeFunction::endpoint(0x8086, 0x1234, 0x02, 0x00, 0, 0),
    );
    assert!(!function.is_present());
    assert!(!function.wait_until(LONG, || false));
}

#[test]
fn nothing_is_written_to_a_function_found_gone() {
    let platform = platform();
    let (function, space) = handle(device(4), platform);
    // The Latency Timer (byte 0x0d) is a register drivers may write.
    space.lock().clear_log();
    function.config_write8(0x0d, 0x40).unwrap();
    assert_eq!(
        space.lock().writes().len(),
        1,
        "a present function is written"
    );
    space.lock().remove(ADDRESS);
    space.lock().clear_log();
    function.config_write8(0x0d, 0x20).unwrap();
    assert!(
        function.vanished(),
        "the write's presence check did not notice"
    );
    assert!(
        space.lock().writes().is_empty(),
        "written to a function that is gone: {:?}",
        space.lock().writes()
    );
    drop(function);
    assert!(space.lock().writes().is_empty(), "the release wrote to it");
    assert_eq!(platform.released(), vec![ADDRESS]);
}
