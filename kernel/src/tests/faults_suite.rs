//! The `faults` suite: contained driver faults (docs/faults.md).
//!
//! First the unwinder itself: a panic three frames deep runs every destructor on the way to
//! the `catch`, releases a spin lock held by an unwound frame, and leaves the interrupt flag
//! as it was. Then, for every driver bound at boot (edu, NVMe, virtio-blk, virtio-net), a
//! panic injected in its probe, in its interrupt handler, in its self test and (NVMe) in its
//! console command: each is caught and recorded with the source line of the injection point,
//! the driver's state is dropped, the device is left quiescent (bus mastering and MSI/MSI-X
//! off) and unclaimed, and after a rebind the device passes its self test with vectors,
//! frames, heap, MMIO window, handlers and claims exactly at their baseline.

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU32, Ordering};

use drivers::fault::{self, Point};
use pci::Address;

use super::{Test, baseline::measure};
use crate::cpu::unwind;
use crate::ensure;

/// The tests, in order.
pub const TESTS: &[Test] = crate::tests![
    a_panic_unwinds_and_runs_destructors,
    an_unwind_releases_locks_and_restores_the_interrupt_flag,
    edu_faults_are_contained,
    nvme_faults_are_contained,
    virtio_blk_faults_are_contained,
    virtio_net_faults_are_contained,
];

fn a_panic_unwinds_and_runs_destructors() -> Result<(), String> {
    static DROPS: AtomicU32 = AtomicU32::new(0);
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }
    #[inline(never)]
    fn deep(n: u32) -> u32 {
        let _g = Guard;
        if n == 0 {
            panic!("deliberate, unwinding");
        }
        core::hint::black_box(deep(n - 1)) + 1
    }
    let heap = crate::memory::heap::usage().0;
    let r = unwind::catch(|| deep(3));
    let drops = DROPS.load(Ordering::SeqCst);
    let caught = r.err().ok_or("no panic caught")?;
    ensure!(drops == 4, "destructors ran {drops} times, not 4");
    ensure!(
        caught.message == "deliberate, unwinding",
        "message {:?}",
        caught.message
    );
    ensure!(
        caught
            .location
            .starts_with("kernel/src/tests/faults_suite.rs:"),
        "location {:?}",
        caught.location
    );
    drop(caught);
    let after = crate::memory::heap::usage().0;
    ensure!(after == heap, "heap use {heap} -> {after} bytes");
    // Without a panic the value comes through.
    ensure!(unwind::catch(|| deep_ok(5)) == Ok(5), "result lost");
    ensure!(!unwind::active(), "catch scope left active");
    Ok(())
}

#[inline(never)]
fn deep_ok(n: u32) -> u32 {
    n
}

fn an_unwind_releases_locks_and_restores_the_interrupt_flag() -> Result<(), String> {
    use x86_64::instructions::interrupts;
    static LOCK: spin::Mutex<u32> = spin::Mutex::new(0);
    ensure!(interrupts::are_enabled(), "interrupts off before the test");
    let r = unwind::catch(|| {
        interrupts::without_interrupts(|| {
            let mut held = LOCK.lock();
            *held += 1;
            panic!("deliberate, with a lock held and interrupts off");
        })
    });
    ensure!(r.is_err(), "no panic caught");
    ensure!(
        interrupts::are_enabled(),
        "interrupts still off after the caught panic"
    );
    let value = LOCK.try_lock().map(|g| *g);
    ensure!(value == Some(1), "lock still held after the unwind");
    Ok(())
}

fn find(matches: impl Fn(&pci::Function) -> bool) -> Option<Address> {
    let scan = crate::pcibus::scan()?;
    scan.topology
        .functions
        .iter()
        .find(|f| matches(f))
        .map(|f| f.address)
}

fn edu_faults_are_contained() -> Result<(), String> {
    let a = find(|f| f.vendor_id == 0x1234 && f.device_id == 0x11e8).ok_or("no edu device")?;
    faults_are_contained(a, "edu", &[Point::Probe, Point::Handler, Point::SelfTest])
}

fn nvme_faults_are_contained() -> Result<(), String> {
    let a = find(|f| f.class == 0x01 && f.subclass == 0x08).ok_or("no NVMe controller")?;
    faults_are_contained(a, "nvme", &Point::ALL)
}

fn virtio_blk_faults_are_contained() -> Result<(), String> {
    let a = find(|f| f.vendor_id == 0x1af4 && matches!(f.device_id, 0x1042 | 0x1001))
        .ok_or("no virtio-blk device")?;
    faults_are_contained(
        a,
        "virtio-blk",
        &[Point::Probe, Point::Handler, Point::SelfTest],
    )
}

fn virtio_net_faults_are_contained() -> Result<(), String> {
    let a = find(|f| f.vendor_id == 0x1af4 && matches!(f.device_id, 0x1041 | 0x1000))
        .ok_or("no virtio-net device")?;
    faults_are_contained(
        a,
        "virtio-net",
        &[Point::Probe, Point::Handler, Point::SelfTest],
    )
}

/// Bus mastering, MSI and MSI-X of `address` as the device has them now.
fn quiescent(address: Address) -> Result<(), String> {
    let scan = crate::pcibus::scan().ok_or("no scan")?;
    let f = scan.topology.function(address).ok_or("function vanished")?;
    let config = crate::pcibus::config();
    let a = address.to_pci_types();
    let command = config.read(a, 0x04) & 0xffff;
    ensure!(
        command & 0x4 == 0,
        "bus mastering still on (Command {command:#06x})"
    );
    for cap in &f.capabilities {
        let control = config.read(a, u16::from(cap.offset)) >> 16;
        match cap.id {
            0x05 => ensure!(control & 1 == 0, "MSI still enabled ({control:#06x})"),
            0x11 => ensure!(
                control & 0x8000 == 0,
                "MSI-X still enabled ({control:#06x})"
            ),
            _ => {}
        }
    }
    Ok(())
}

/// Makes the fault at `point` of the driver of `address` happen (armed already); returns
/// what the bus said.
fn trigger(address: Address, point: Point) -> Result<String, String> {
    match point {
        Point::Probe => {
            crate::bus::unbind(address)?;
            crate::bus::bind(address)
        }
        // Whatever the self test concludes, its first interrupt panics.
        Point::Handler | Point::SelfTest => crate::bus::self_test(address),
        Point::Command => crate::bus::command("nvme", &["read", "0"]).ok_or("no nvme command")?,
    }
}

fn during(point: Point) -> &'static str {
    match point {
        Point::Probe => "probe",
        Point::Handler => "interrupt handler",
        Point::SelfTest => "self test",
        Point::Command => "command",
    }
}

fn faults_are_contained(address: Address, driver: &str, points: &[Point]) -> Result<(), String> {
    // The suite binds the drivers itself (the kernel binds at boot only without a suite).
    let bound = |l: &String| l.starts_with(&format!("{address} {driver} "));
    if !crate::bus::list().iter().any(bound) {
        crate::bus::bind(address)?;
    }
    ensure!(
        crate::bus::list().iter().any(bound),
        "{driver} is not bound at {address}"
    );
    // Warm-up: one contained probe fault, so that the failure list has its room in the
    // baseline.
    fault::arm(address, Point::Probe).map_err(|e| format!("arm: {e}"))?;
    ensure!(
        trigger(address, Point::Probe).is_err(),
        "warm-up probe fault not reported"
    );
    crate::bus::bind(address)?;
    crate::bus::self_test(address)?;
    let baseline = measure();
    // The heap is compared with the same objects alive: everything `one_fault` makes is
    // gone when it returns.
    let heap = crate::memory::heap::usage().0;
    for &point in points {
        one_fault(address, driver, point, &baseline).map_err(|e| format!("{point}: {e}"))?;
        let heap_after = crate::memory::heap::usage().0;
        ensure!(
            heap_after == heap,
            "{point}: heap use {heap} -> {heap_after} bytes"
        );
    }
    crate::serial_println!(
        "faults: {driver}: {} fault(s) contained; vectors, frames, heap, MMIO window, handlers and claims at baseline after each",
        points.len()
    );
    Ok(())
}

fn one_fault(
    address: Address,
    driver: &str,
    point: Point,
    baseline: &super::baseline::Baseline,
) -> Result<(), String> {
    fault::arm(address, point).map_err(|e| format!("arm: {e}"))?;
    let said = trigger(address, point);
    ensure!(
        !fault::is_armed(address, point),
        "the injection point was never reached ({said:?})"
    );
    let failed = crate::bus::failed()
        .into_iter()
        .find(|f| f.address == address)
        .ok_or_else(|| format!("no failed binding recorded (bus said {said:?})"))?;
    ensure!(
        failed.during == during(point),
        "recorded as a fault in {}",
        failed.during
    );
    ensure!(
        failed.caught.location.starts_with("drivers/src/")
            && failed.caught.message.contains("injected fault"),
        "caught {}",
        failed.caught
    );
    let listed = crate::bus::list();
    ensure!(
        listed
            .iter()
            .any(|l| l.starts_with(&format!("{address} {driver}")) && l.contains("FAILED")),
        "`drivers` does not list the failure: {listed:?}"
    );
    ensure!(
        crate::bus::self_test(address).is_err(),
        "still bound after the fault"
    );
    quiescent(address)?;
    let unbound = measure();
    ensure!(
        unbound.claimed + 1 == baseline.claimed,
        "the function is still claimed"
    );
    ensure!(
        unbound.handlers.len() < baseline.handlers.len(),
        "handlers left installed"
    );
    crate::bus::bind(address).map_err(|e| format!("rebind: {e}"))?;
    let result = crate::bus::self_test(address).map_err(|e| format!("self test: {e}"))?;
    let after = measure();
    ensure!(
        after == *baseline,
        "not at baseline after the rebind:\n{baseline:?}\n{after:?}"
    );
    crate::serial_println!(
        "faults: {driver} {address}: {point} fault caught at {}; rebound, self test: {result}",
        failed.caught.location
    );
    Ok(())
}
