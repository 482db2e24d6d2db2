//! The `devirq` suite: real device interrupts through `pci::irq`, on QEMU's `edu` device
//! (`-device edu`; QEMU docs/specs/edu.rst): BAR 0 holds the identification register (0x00),
//! the interrupt status (0x24), raise (0x60) and acknowledge (0x64) registers; the device
//! signals through MSI (one vector) when MSI is enabled, else through INTA#.

use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use pci::irq::{IrqKind, IrqKinds};

use super::Test;
use crate::ensure;
use crate::interrupts::{dispatch, lapic, vectors};
use crate::memory::mmio::Mmio;
use crate::pciirq;

/// The tests, in order.
pub const TESTS: &[Test] = crate::tests![
    edu_msi_handler_counts_exactly_n,
    edu_intx_through_prt_counts_exactly_n,
    release_leaves_nothing_behind,
    interrupt_on_a_released_vector_is_spurious,
];

const EDU: (u16, u16) = (0x1234, 0x11e8);
const EDU_ID: u64 = 0x00;
const EDU_IRQ_STATUS: u64 = 0x24;
const EDU_IRQ_RAISE: u64 = 0x60;
const EDU_IRQ_ACK: u64 = 0x64;
const RAISES: u64 = 100;

fn wait_for(ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = crate::time::micros_since_boot() + ms * 1000;
    while !done() {
        if crate::time::micros_since_boot() > deadline {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// Raises the edu interrupt `RAISES` times through `kinds`, one at a time, and checks the
/// handler saw each exactly once. Returns the vector used.
fn edu_round_trips(kinds: IrqKinds, expect: IrqKind) -> Result<u8, String> {
    let address = pciirq::find(EDU.0, EDU.1).ok_or("no edu device (-device edu)")?;
    let function = pciirq::claim(address).ok_or("edu already claimed")?;
    let bar = function.info().bars[0].ok_or("edu has no BAR 0")?;
    let regs = Arc::new(Mmio::map(bar.address, bar.size).map_err(|e| alloc::format!("{e}"))?);
    ensure!(
        regs.read32(EDU_ID) & 0xffff == 0x00ed,
        "edu identification reads {:#x}",
        regs.read32(EDU_ID)
    );
    let vectors = function
        .alloc_irq_vectors(1, 1, kinds)
        .map_err(|(_, e)| alloc::format!("alloc_irq_vectors: {e}"))?;
    ensure!(
        vectors.kind() == expect,
        "granted {} instead of {expect}",
        vectors.kind()
    );
    let vector = vectors.vector(0).ok_or("no vector 0")?.number();
    let hits = Arc::new(AtomicU64::new(0));
    let (h, r) = (hits.clone(), regs.clone());
    let registration = vectors
        .request(0, "edu test", move || {
            let status = r.read32(EDU_IRQ_STATUS);
            if status != 0 {
                r.write32(EDU_IRQ_ACK, status);
                h.fetch_add(1, Ordering::Relaxed);
            }
        })
        .map_err(|e| alloc::format!("request: {e}"))?;
    let dispatched = dispatch::count(vector);
    for i in 1..=RAISES {
        regs.write32(EDU_IRQ_RAISE, 1);
        ensure!(
            wait_for(100, || hits.load(Ordering::Relaxed) >= i),
            "raise {i}: no interrupt within 100 ms"
        );
    }
    crate::time::busy_wait_us(2000);
    let total = hits.load(Ordering::Relaxed);
    drop(registration);
    drop(vectors);
    ensure!(total == RAISES, "{RAISES} raises, handler counted {total}");
    ensure!(
        dispatch::count(vector) - dispatched >= RAISES,
        "dispatch counted fewer than the handler"
    );
    Ok(vector)
}

fn edu_msi_handler_counts_exactly_n() -> Result<(), String> {
    let vector = edu_round_trips(IrqKinds::MSIX | IrqKinds::MSI, IrqKind::Msi)?;
    crate::serial_println!("edu: {RAISES} MSI interrupts on vector {vector:#04x}");
    Ok(())
}

fn edu_intx_through_prt_counts_exactly_n() -> Result<(), String> {
    let vector = edu_round_trips(IrqKinds::INTX, IrqKind::Intx)?;
    crate::serial_println!("edu: {RAISES} INTx interrupts on vector {vector:#04x}");
    Ok(())
}

fn release_leaves_nothing_behind() -> Result<(), String> {
    let start = vectors::snapshot();
    for _ in 0..50 {
        let address = pciirq::find(EDU.0, EDU.1).ok_or("no edu device")?;
        let function = pciirq::claim(address).ok_or("edu still claimed")?;
        ensure!(
            pciirq::claim(address).is_none(),
            "a second handle was handed out"
        );
        let vectors = function
            .alloc_irq_vectors(1, 1, IrqKinds::ALL)
            .map_err(|(_, e)| alloc::format!("{e}"))?;
        let registration = vectors
            .request(0, "cycle", || {})
            .map_err(|e| alloc::format!("{e}"))?;
        let vector = vectors.vector(0).ok_or("no vector")?.number();
        ensure!(dispatch::is_installed(vector), "handler not installed");
        drop(registration);
        ensure!(
            !dispatch::is_installed(vector),
            "handler still installed after the registration"
        );
        drop(vectors);
    }
    ensure!(
        vectors::snapshot() == start,
        "vector allocator not back at its starting state"
    );
    ensure!(
        pciirq::claimed().is_empty(),
        "functions still claimed: {:?}",
        pciirq::claimed()
    );
    ensure!(
        pciirq::pending_at_release() == 0,
        "interrupts were pending at release"
    );
    Ok(())
}

fn interrupt_on_a_released_vector_is_spurious() -> Result<(), String> {
    let address = pciirq::find(EDU.0, EDU.1).ok_or("no edu device")?;
    let function = pciirq::claim(address).ok_or("edu claimed")?;
    let vectors = function
        .alloc_irq_vectors(1, 1, IrqKinds::MSI)
        .map_err(|(_, e)| alloc::format!("{e}"))?;
    let vector = vectors.vector(0).ok_or("no vector")?.number();
    drop(vectors);
    let before = dispatch::spurious(vector);
    lapic::get().ok_or("no local APIC")?.self_ipi(vector);
    ensure!(
        wait_for(100, || dispatch::spurious(vector) > before),
        "not counted as spurious"
    );
    Ok(())
}
