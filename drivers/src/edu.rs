//! A driver for QEMU's `edu` device, the smallest complete driver: read this one first.
//!
//! The device (QEMU `docs/specs/edu.rst`, PCI 1234:11e8) has one memory BAR of registers:
//!
//! | offset | register |
//! | --- | --- |
//! | 0x00 | identification: `0xRRrr00ed` (major, minor version, 0xed) |
//! | 0x04 | liveness check: reads back the bitwise inverse of what was written |
//! | 0x08 | factorial: write n, read n! when the computation is done |
//! | 0x20 | status: bit 0 busy computing, bit 7 raise an interrupt when done |
//! | 0x24 | interrupt status (read) |
//! | 0x60 | interrupt raise (write: the value is ORed into the status) |
//! | 0x64 | interrupt acknowledge (write: the value is cleared from the status) |
//!
//! It signals through MSI when MSI is enabled, otherwise through INTA#.
//!
//! What the driver owns, all in [`Edu`]: a window on the registers (shared with its handler
//! through an `Arc`), the interrupt vectors (MSI preferred, INTx accepted), and the handler
//! installed on them, which lives exactly as long as the vectors. Unbinding drops `Edu`: the
//! vectors' `Drop` uninstalls the handler, masks, disables MSI and frees the vector, and the
//! window unmaps. Nothing needs writing in a remove function, and nothing can be forgotten.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use pci::irq::{IrqKinds, IrqVectors, PciFunction};
use pci::window::BarWindow;

use crate::fault::{self, Point};
use crate::{Bound, Driver, Match, ProbeError};

const IDENTIFICATION: u64 = 0x00;
const LIVENESS: u64 = 0x04;
const FACTORIAL: u64 = 0x08;
const STATUS: u64 = 0x20;
const STATUS_BUSY: u32 = 1;
const STATUS_IRQ_WHEN_DONE: u32 = 0x80;
const IRQ_STATUS: u64 = 0x24;
const IRQ_RAISE: u64 = 0x60;
const IRQ_ACK: u64 = 0x64;
/// How long to wait for the device, in microseconds. QEMU computes edu's factorial on a
/// thread of its own, which a loaded host can keep off a CPU for well over 100 ms (seen
/// once in 4844 hot-plug cycles on a 2-core machine at load 5); a second is still quick
/// for a device that answers and bounds the wait for one that does not.
const TIMEOUT_US: u64 = 1_000_000;

/// The edu driver.
pub struct EduDriver;

/// A bound edu device.
pub struct Edu {
    regs: Arc<BarWindow>,
    irq: IrqVectors,
    interrupts: Arc<AtomicU64>,
    version: (u8, u8),
}

impl Driver for EduDriver {
    fn name(&self) -> &'static str {
        "edu"
    }

    fn matches(&self) -> &'static [Match] {
        &[Match::Id {
            vendor: 0x1234,
            device: 0x11e8,
        }]
    }

    fn probe(&self, function: PciFunction) -> Result<Box<dyn Bound>, (PciFunction, ProbeError)> {
        // 1. Registers: the first 256 bytes of BAR 0 are all there is to drive.
        let regs = match function.map_bar(0, 0, 0x100) {
            Ok(r) => Arc::new(r),
            Err(e) => return Err((function, ProbeError(format!("BAR 0: {e}")))),
        };
        // 2. Is it really an edu, and alive?
        let id = regs.read32(IDENTIFICATION);
        if id & 0xff != 0xed {
            return Err((
                function,
                ProbeError(format!("identification reads {id:#x}")),
            ));
        }
        regs.write32(LIVENESS, 0x1234_5678);
        if regs.read32(LIVENESS) != !0x1234_5678 {
            return Err((function, ProbeError("liveness check failed".into())));
        }
        // 3. Interrupts: one vector, MSI if possible. The function moves into the vectors.
        let mut irq = match function.alloc_irq_vectors(1, 1, IrqKinds::MSI | IrqKinds::INTX) {
            Ok(v) => v,
            Err((function, e)) => return Err((function, ProbeError(format!("interrupts: {e}")))),
        };
        // 4. The handler acknowledges what it finds and counts it. It owns an `Arc` of the
        //    registers; it is installed for as long as `irq` lives.
        let interrupts = Arc::new(AtomicU64::new(0));
        let (r, count, address) = (regs.clone(), interrupts.clone(), irq.function().address());
        let installed = irq.install(0, "edu", move || {
            fault::point(address, Point::Handler);
            let status = r.read32(IRQ_STATUS);
            if status != 0 {
                r.write32(IRQ_ACK, status);
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
        if let Err(e) = installed {
            // Releasing the vectors gives the function back, to return with the error.
            return Err((irq.into_function(), ProbeError(format!("handler: {e}"))));
        }
        fault::point(address, Point::Probe);
        let version = ((id >> 24) as u8, (id >> 16) as u8);
        Ok(Box::new(Edu {
            regs,
            irq,
            interrupts,
            version,
        }))
    }
}

impl Edu {
    /// Computes `n!` on the device, signalled by interrupt; returns it.
    pub fn factorial(&self, n: u32) -> Result<u32, String> {
        let before = self.interrupts.load(Ordering::Relaxed);
        self.regs.write32(STATUS, STATUS_IRQ_WHEN_DONE);
        self.regs.write32(FACTORIAL, n);
        let function = self.irq.function();
        if !function.wait_until(TIMEOUT_US, || {
            self.interrupts.load(Ordering::Relaxed) != before
        }) {
            return Err(format!("no completion interrupt for {n}!"));
        }
        if self.regs.read32(STATUS) & STATUS_BUSY != 0 {
            return Err("interrupt before the computation finished".into());
        }
        Ok(self.regs.read32(FACTORIAL))
    }

    /// Raises the device's interrupt by hand and waits for the handler.
    pub fn ping(&self) -> Result<(), String> {
        let before = self.interrupts.load(Ordering::Relaxed);
        self.regs.write32(IRQ_RAISE, 0x100);
        let function = self.irq.function();
        if !function.wait_until(TIMEOUT_US, || {
            self.interrupts.load(Ordering::Relaxed) != before
        }) {
            return Err("raised interrupt did not arrive".into());
        }
        Ok(())
    }
}

impl Bound for Edu {
    fn driver(&self) -> &'static str {
        "edu"
    }

    fn address(&self) -> pci::Address {
        self.irq.function().address()
    }

    fn status(&self) -> String {
        format!(
            "edu v{}.{}, {} interrupt(s) by {} on vector {:#04x}",
            self.version.0,
            self.version.1,
            self.interrupts.load(Ordering::Relaxed),
            self.irq.kind(),
            self.irq.vector(0).map_or(0, |v| v.number())
        )
    }

    fn self_test(&mut self) -> Result<String, String> {
        fault::point(self.address(), Point::SelfTest);
        self.ping()?;
        let got = self.factorial(10)?;
        if got != 3_628_800 {
            return Err(format!("10! computed as {got}"));
        }
        Ok(format!("10! = {got} by interrupt, raise acknowledged"))
    }
}
