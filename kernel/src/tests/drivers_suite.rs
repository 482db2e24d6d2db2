//! The `drivers` suite: drivers bound at boot work, and unbinding (dropping the driver's
//! state) releases everything: after 1000 unbind/bind cycles the vector allocator, the frame
//! allocator, the heap, the MMIO window and the dispatch table are exactly at baseline, and
//! the device works after every rebind.

use alloc::string::String;

use super::{Test, baseline::measure};
use crate::ensure;

/// The tests, in order.
pub const TESTS: &[Test] = crate::tests![
    edu_is_bound_at_boot_and_works,
    thousand_unbind_bind_cycles_leave_nothing
];

fn edu() -> Result<pci::Address, String> {
    crate::pciirq::find(0x1234, 0x11e8).ok_or_else(|| "no edu device (-device edu)".into())
}

fn edu_is_bound_at_boot_and_works() -> Result<(), String> {
    let address = edu()?;
    let list = crate::bus::list();
    ensure!(
        list.iter().any(|l| l.contains(" edu ")),
        "edu not bound: {list:?}"
    );
    let result = crate::bus::self_test(address)?;
    crate::serial_println!("edu self test: {result}");
    Ok(())
}

fn thousand_unbind_bind_cycles_leave_nothing() -> Result<(), String> {
    let address = edu()?;
    // One warm-up cycle, so that lazily created kernel structures exist in the baseline.
    crate::bus::unbind(address)?;
    crate::bus::bind(address)?;
    let baseline = measure();
    let unbound = {
        crate::bus::unbind(address)?;
        let m = measure();
        crate::bus::bind(address)?;
        m
    };
    ensure!(
        unbound.claimed + 1 == baseline.claimed,
        "unbinding did not release the function"
    );
    ensure!(
        unbound.handlers.len() + 1 == baseline.handlers.len(),
        "unbinding left the handler installed"
    );
    ensure!(
        unbound.vectors != baseline.vectors,
        "unbinding did not free the vector"
    );
    // The heap is compared with the same objects alive (the measurements above), before the
    // final measurement allocates its own.
    let heap_before = crate::memory::heap::usage().0;
    for cycle in 1..=1000 {
        crate::bus::unbind(address).map_err(|e| alloc::format!("cycle {cycle}: {e}"))?;
        crate::bus::bind(address).map_err(|e| alloc::format!("cycle {cycle}: {e}"))?;
        crate::bus::self_test(address)
            .map_err(|e| alloc::format!("cycle {cycle}: device broken: {e}"))?;
    }
    let heap_after = crate::memory::heap::usage().0;
    let after = measure();
    ensure!(
        heap_after == heap_before,
        "heap use {heap_before} -> {heap_after} bytes over 1000 cycles"
    );
    ensure!(
        after == baseline,
        "not at baseline after 1000 cycles:\n{baseline:?}\n{after:?}"
    );
    crate::serial_println!(
        "drivers: 1000 unbind/bind cycles of edu, self test after each; vectors, frames, heap ({heap_after} bytes used), MMIO window, handlers and claims at baseline"
    );
    Ok(())
}
