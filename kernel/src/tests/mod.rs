//! In-kernel test suites, chosen with `test=<suite>` on the command line.
//!
//! Protocol on serial (read by the host-side runner in `qemu-tests`):
//!
//! ```text
//! TEST START <suite>
//! TEST <name> ... ok
//! TEST <name> ... FAILED: <reason>
//! TEST DONE <suite>: <passed> passed, <failed> failed
//! ```
//!
//! QEMU then exits with status 33 when every test passed and 35 otherwise. The suites
//! `pagefault` and `panic` fail on purpose: the runner checks that faults and panics are
//! reported and fail the run. The suites `pci` and `storage` end with `PCI HOLD` and
//! `STORAGE HOLD` instead of an exit: the runner asks QEMU itself (QMP), then quits it.
//! Nobody may be there to do so (`test=pci` typed by hand): after [`HOLD_SECONDS`] the
//! kernel says so and exits with the suite's result.

mod blk_suite;
mod boot_suite;
mod devirq_suite;
mod drivers_suite;
mod faults_suite;
mod intremap_amd_suite;
mod intremap_suite;
mod iommu_suite;
mod irq_suite;
mod irqbench_suite;
mod nvme_suite;
mod pci_suite;
mod storage_suite;
mod virtio_suite;

use alloc::string::String;

use crate::qemu::{self, ExitCode};

/// How long `PCI HOLD` waits for the runner to quit QEMU.
pub const HOLD_SECONDS: u64 = 30;

/// One test: a name and a function returning `Err(reason)` on failure.
pub struct Test {
    /// Name printed in the result line.
    pub name: &'static str,
    /// The test body.
    pub run: fn() -> Result<(), String>,
}

/// Fails the enclosing test with a formatted reason unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(alloc::format!($($arg)*));
        }
    };
}

/// A `&[Test]` from test functions, each named after its function.
#[macro_export]
macro_rules! tests {
    ($($f:ident),* $(,)?) => {
        &[$($crate::tests::Test { name: stringify!($f), run: $f }),*]
    };
}

/// What a bound driver can hold, for "unbinding leaves nothing behind" checks.
pub mod baseline {
    use alloc::vec::Vec;

    /// Everything a bound driver can hold, measured (the heap is compared separately, with
    /// the same measurement objects alive, since measuring allocates).
    #[derive(Debug, PartialEq, Eq)]
    pub struct Baseline {
        /// The vector allocator's state.
        pub vectors: pci::vectors::Snapshot,
        /// Free frames, bytes.
        pub frames_free: u64,
        /// DMA memory parked for released functions' next claims (`pci::parking`), bytes.
        pub dma_parked: u64,
        /// Free virtual space in the MMIO window, bytes.
        pub mmio_free: u64,
        /// Installed handlers: vector and owner.
        pub handlers: Vec<(u8, &'static str)>,
        /// Functions claimed by a `PciFunction` handle.
        pub claimed: usize,
    }

    /// Measures now.
    pub fn measure() -> Baseline {
        Baseline {
            vectors: crate::interrupts::vectors::snapshot(),
            frames_free: crate::memory::frames::with(|f| f.free_bytes()),
            dma_parked: crate::pciirq::parked_dma().1,
            mmio_free: crate::memory::mmio::window_free_bytes(),
            handlers: crate::interrupts::dispatch::installed()
                .into_iter()
                .map(|(v, o, _)| (v, o))
                .collect(),
            claimed: crate::pciirq::claimed().len(),
        }
    }
}

/// Waits up to `ms` milliseconds (interrupts enabled, spinning) until `done` holds.
pub fn wait_for(ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = crate::time::micros_since_boot() + ms * 1000;
    while !done() {
        if crate::time::micros_since_boot() > deadline {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// Address the `pagefault` suite reads; nothing is mapped there.
pub const PAGE_FAULT_ADDRESS: u64 = 0xdead_b000;

/// Runs `suite` and exits QEMU with the result.
pub fn run(suite: &str) -> ! {
    let tests: &[Test] = match suite {
        "boot" => boot_suite::TESTS,
        "pci" => pci_suite::TESTS,
        "irq" => irq_suite::TESTS,
        "devirq" => devirq_suite::TESTS,
        "sharedirq" => devirq_suite::SHARED,
        "irqbench" => irqbench_suite::TESTS,
        "drivers" => drivers_suite::TESTS,
        "faults" => faults_suite::TESTS,
        "virtio" => virtio_suite::TESTS,
        "nvme" => nvme_suite::TESTS,
        "iommu" => iommu_suite::TESTS,
        "iommu_off" => iommu_suite::OFF,
        "iommu_amd" => iommu_suite::AMD,
        "intremap" => intremap_suite::TESTS,
        "intremap_off" => intremap_suite::OFF,
        "intremap_nosid" => intremap_suite::NOSID,
        "intremap_amd" => intremap_amd_suite::TESTS,
        "nvmebench" => nvme_suite::BENCH,
        "storage" => storage_suite::TESTS,
        "blk" => blk_suite::TESTS,
        "blkbench" => blk_suite::BENCH,
        "pagefault" => {
            crate::serial_println!("TEST START pagefault");
            crate::serial_println!("reading unmapped address {PAGE_FAULT_ADDRESS:#x}");
            // SAFETY: nothing is mapped at this address (the kernel maps only RAM, and this
            // lies in no RAM range QEMU gives), so the CPU raises #PF before any value is
            // produced and the exception handler ends the run.
            let value = unsafe { (PAGE_FAULT_ADDRESS as *const u64).read_volatile() };
            crate::serial_println!("read {value:#x}: no page fault happened");
            qemu::exit(ExitCode::Success)
        }
        "panic" => {
            crate::serial_println!("TEST START panic");
            panic!("deliberate panic");
        }
        other => {
            crate::serial_println!("TEST START {other}");
            crate::serial_println!(
                "TEST DONE {other}: 0 passed, 1 failed (no such suite; known: boot, pci, irq, devirq, sharedirq, irqbench, drivers, faults, virtio, nvme, nvmebench, storage, blk, blkbench, pagefault, panic)"
            );
            qemu::exit(ExitCode::Failure)
        }
    };
    crate::serial_println!("TEST START {suite}");
    let (mut passed, mut failed) = (0, 0);
    for test in tests {
        match (test.run)() {
            Ok(()) => {
                passed += 1;
                crate::serial_println!("TEST {} ... ok", test.name);
            }
            Err(reason) => {
                failed += 1;
                crate::serial_println!("TEST {} ... FAILED: {}", test.name, reason);
            }
        }
    }
    crate::serial_println!("TEST DONE {suite}: {passed} passed, {failed} failed");
    if suite == "pci" {
        pci_suite::report();
        // The runner compares the lines above with QEMU's `query-pci`, then quits QEMU.
        crate::serial_println!(
            "test=pci: waiting {HOLD_SECONDS} s for the test runner to compare this with QEMU's query-pci and quit"
        );
        crate::serial_println!("PCI HOLD");
        // Polling the TSC only: no configuration access while the runner looks.
        crate::time::busy_wait_us(HOLD_SECONDS * 1_000_000);
        crate::serial_println!(
            "test=pci: no test runner quit QEMU within {HOLD_SECONDS} s of PCI HOLD; exiting (the PCIDEV lines above are the result)"
        );
    }
    if suite == "storage" {
        // The runner asks QEMU how many writes each drive saw, then quits QEMU.
        crate::serial_println!("STORAGE HOLD");
        qemu::halt_forever();
    }
    qemu::exit(if failed == 0 {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}
