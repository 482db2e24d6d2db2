//! The `storage` suite: without `storage=write`, nothing the kernel does writes to a disk.
//!
//! The runner (`qemu-tests/tests/storage.rs`) attaches one disk image as NVMe and another as
//! virtio-blk and boots `test=storage` without the option. The suite then does what a user's
//! machine sees, and more:
//!
//! - the permission is off, and the write paths refuse: the `nvme` suite's own write test
//!   fails with the refusal, a write through the virtio-blk driver is refused;
//! - every driver binds (as at boot) and runs its self test, which must say it read only;
//! - 1000 unbind/bind cycles of each storage driver through `crate::bus`, a self test after
//!   every rebind, and vectors, frames, heap, MMIO window, handlers and claims at baseline.
//!
//! The suite cannot see whether the device wrote; the runner can. After `TEST DONE` the
//! kernel prints `STORAGE HOLD` and halts; the runner asks QEMU (`query-blockstats`) how many
//! write operations each drive saw, which must be 0, quits QEMU, and compares both image
//! files with what it wrote before the run, byte for byte.
//!
//! Lines for the runner:
//!
//! ```text
//! storage: nvme write test refused: <message>
//! storage: virtio-blk write refused: <message>
//! storage: <address> <driver> self test: <result>
//! storage: <driver>: 1000 unbind/bind cycles in <ms> ms ...
//! ```

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use drivers::storage::{WRITES_DISABLED, writes_allowed};
use drivers::virtio::{self, blk::VirtioBlk};
use pci::irq::IrqKinds;

use super::{Test, baseline::measure};
use crate::ensure;

/// The tests, in order.
pub const TESTS: &[Test] = crate::tests![
    writes_are_off_by_default,
    nvme_write_test_is_refused,
    virtio_blk_write_is_refused,
    every_driver_binds_and_self_tests_read_only,
    nvme_thousand_unbind_bind_cycles,
    virtio_blk_thousand_unbind_bind_cycles,
];

/// Cycles per driver.
const CYCLES: u32 = 1000;

/// The first function `driver` would bind.
fn find(driver: &str) -> Result<pci::Address, String> {
    let scan = crate::pcibus::scan().ok_or("PCI not enumerated")?;
    scan.topology
        .functions
        .iter()
        .find(|f| {
            drivers::find(f.vendor_id, f.device_id, f.class, f.subclass)
                .is_some_and(|d| d.name() == driver)
        })
        .map(|f| f.address)
        .ok_or_else(|| format!("no device for the {driver} driver"))
}

fn writes_are_off_by_default() -> Result<(), String> {
    ensure!(
        !writes_allowed(),
        "writes are allowed: this suite checks the default, boot it without storage=write"
    );
    Ok(())
}

/// The `nvme` suite's write test, run as it is: it must fail with the refusal.
fn nvme_write_test_is_refused() -> Result<(), String> {
    let e = super::nvme_suite::write_pattern_reads_back()
        .err()
        .ok_or("the nvme write test passed: it wrote to the disk")?;
    ensure!(
        e.contains(WRITES_DISABLED),
        "refused for another reason: {e}"
    );
    crate::serial_println!("storage: nvme write test refused: {e}");
    Ok(())
}

fn virtio_blk_write_is_refused() -> Result<(), String> {
    let address = find("virtio-blk")?;
    let function = crate::pciirq::claim(address).ok_or("virtio-blk already claimed")?;
    let mut disk = VirtioBlk::probe_with(function, IrqKinds::ALL)
        .map_err(|(_, e)| format!("probe of {address}: {e}"))?;
    let sector = vec![0u8; virtio::blk::SECTOR];
    let e = disk
        .write(0, &sector)
        .err()
        .ok_or("a write of sector 0 succeeded")?;
    ensure!(e == WRITES_DISABLED, "refused for another reason: {e}");
    // Refused before reaching the device: it still works.
    let mut back = vec![0u8; virtio::blk::SECTOR];
    disk.read(0, &mut back)
        .map_err(|e| format!("read after the refusal: {e}"))?;
    crate::serial_println!("storage: virtio-blk write refused: {e}");
    Ok(())
}

/// Binds every function a driver matches (what boot does) and runs each self test.
fn every_driver_binds_and_self_tests_read_only() -> Result<(), String> {
    crate::bus::bind_all();
    let scan = crate::pcibus::scan().ok_or("PCI not enumerated")?;
    let mut tested = Vec::new();
    for f in &scan.topology.functions {
        let Some(driver) = drivers::find(f.vendor_id, f.device_id, f.class, f.subclass) else {
            continue;
        };
        let result = crate::bus::self_test(f.address)
            .map_err(|e| format!("{} {}: {e}", f.address, driver.name()))?;
        crate::serial_println!(
            "storage: {} {} self test: {result}",
            f.address,
            driver.name()
        );
        if matches!(driver.name(), "nvme" | "virtio-blk") {
            ensure!(
                result.contains("read only, no write test"),
                "{} self test does not say it read only: {result}",
                driver.name()
            );
        }
        tested.push(driver.name());
    }
    for wanted in ["nvme", "virtio-blk"] {
        ensure!(
            tested.contains(&wanted),
            "no {wanted} device bound: {tested:?}"
        );
    }
    Ok(())
}

/// 1000 unbind/bind cycles of the bound `driver`, a self test after each; baseline after.
fn cycles(driver: &str) -> Result<(), String> {
    let address = find(driver)?;
    // Bound by the previous test; one warm-up cycle for lazily built kernel structures.
    crate::bus::unbind(address)?;
    crate::bus::bind(address)?;
    let baseline = measure();
    let heap_before = crate::memory::heap::usage().0;
    let (mut bind_us, mut test_us) = (0u64, 0u64);
    let start = crate::time::micros_since_boot();
    for cycle in 1..=CYCLES {
        let t0 = crate::time::micros_since_boot();
        crate::bus::unbind(address).map_err(|e| format!("cycle {cycle}: {e}"))?;
        crate::bus::bind(address).map_err(|e| format!("cycle {cycle}: {e}"))?;
        let t1 = crate::time::micros_since_boot();
        crate::bus::self_test(address).map_err(|e| format!("cycle {cycle}: device broken: {e}"))?;
        bind_us += t1 - t0;
        test_us += crate::time::micros_since_boot() - t1;
    }
    let total_us = crate::time::micros_since_boot() - start;
    let heap_after = crate::memory::heap::usage().0;
    let after = measure();
    ensure!(
        heap_after == heap_before,
        "heap use {heap_before} -> {heap_after} bytes over {CYCLES} cycles"
    );
    ensure!(
        after == baseline,
        "not at baseline after {CYCLES} cycles:\n{baseline:?}\n{after:?}"
    );
    crate::serial_println!(
        "storage: {driver}: {CYCLES} unbind/bind cycles in {} ms (unbind+bind {} us, self test {} us per cycle); vectors, frames, heap, MMIO window, handlers and claims at baseline",
        total_us / 1000,
        bind_us / u64::from(CYCLES),
        test_us / u64::from(CYCLES)
    );
    Ok(())
}

fn nvme_thousand_unbind_bind_cycles() -> Result<(), String> {
    cycles("nvme")
}

fn virtio_blk_thousand_unbind_bind_cycles() -> Result<(), String> {
    cycles("virtio-blk")
}
