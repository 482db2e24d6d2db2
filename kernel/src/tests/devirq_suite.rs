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
    nvme_identify_completes_by_msix,
    nvme_identify_completes_by_intx,
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

/// NVMe (NVM Express 1.4 §3.1 registers, §7.6.1 initialisation, §5.15 Identify): just enough
/// to run one admin command and take its completion by interrupt.
mod nvme {
    use alloc::string::String;
    use alloc::sync::Arc;
    use core::sync::atomic::{AtomicU64, Ordering};

    use pci::irq::{IrqKind, IrqKinds};

    use crate::ensure;
    use crate::memory::dma::DmaBuffer;
    use crate::memory::mmio::Mmio;
    use crate::pciirq;

    const CAP: u64 = 0x00;
    const CC: u64 = 0x14;
    const CSTS: u64 = 0x1C;
    const AQA: u64 = 0x24;
    const ASQ: u64 = 0x28;
    const ACQ: u64 = 0x30;
    const DOORBELLS: u64 = 0x1000;
    const ENTRIES: u32 = 16;

    fn wait(regs: &Mmio, ready: bool, timeout_ms: u64) -> bool {
        super::wait_for(timeout_ms, || (regs.read32(CSTS) & 1 == 1) == ready)
    }

    /// Resets the controller, runs Identify Controller, and returns (kind, model, serial).
    pub fn identify(kinds: IrqKinds) -> Result<(IrqKind, String, String), String> {
        let address = pciirq::find(0x1b36, 0x0010).ok_or("no NVMe controller (-device nvme)")?;
        let function = pciirq::claim(address).ok_or("NVMe already claimed")?;
        let bar = function.info().bars[0].ok_or("NVMe has no BAR 0")?;
        // Registers and doorbells only: the MSI-X table further up belongs to IrqVectors.
        let regs = Arc::new(Mmio::map(bar.address, 0x2000).map_err(|e| alloc::format!("{e}"))?);
        let vectors = function
            .alloc_irq_vectors(1, 1, kinds)
            .map_err(|(_, e)| alloc::format!("alloc_irq_vectors: {e}"))?;
        let kind = vectors.kind();
        let cap = regs.read64(CAP);
        let stride = 4u64 << ((cap >> 32) & 0xf);
        let timeout_ms = ((cap >> 24) & 0xff).max(1) * 500;
        regs.write32(CC, 0);
        ensure!(wait(&regs, false, timeout_ms), "controller did not stop");
        let sq = DmaBuffer::new(64 * u64::from(ENTRIES)).ok_or("no memory for the SQ")?;
        let cq = Arc::new(DmaBuffer::new(16 * u64::from(ENTRIES)).ok_or("no memory for the CQ")?);
        let data = DmaBuffer::new(4096).ok_or("no memory for Identify data")?;
        ensure!(
            data.len() == 4096 && !data.is_empty(),
            "Identify buffer of {} bytes",
            data.len()
        );
        regs.write32(AQA, (ENTRIES - 1) << 16 | (ENTRIES - 1));
        regs.write64(ASQ, sq.phys());
        regs.write64(ACQ, cq.phys());
        // Enable: 4 KiB pages, NVM command set, 64-byte SQ entries, 16-byte CQ entries.
        regs.write32(CC, 1 | 6 << 16 | 4 << 20);
        ensure!(
            wait(&regs, true, timeout_ms),
            "controller did not become ready"
        );

        let completions = Arc::new(AtomicU64::new(0));
        let (count, queue, r) = (completions.clone(), cq.clone(), regs.clone());
        let registration = vectors
            .request(0, "nvme admin", move || {
                // Completion 0 is new when its phase tag (dword 3 bit 16) is 1.
                if queue.read32(12) & (1 << 16) != 0 && count.load(Ordering::Relaxed) == 0 {
                    count.fetch_add(1, Ordering::Relaxed);
                    r.write32(DOORBELLS + stride, 1); // CQ 0 head
                }
            })
            .map_err(|e| alloc::format!("request: {e}"))?;
        // Identify (opcode 0x06), command id 1, PRP1 = data, CNS 1 = controller.
        sq.write32(0, 0x06 | 1 << 16);
        sq.write64(24, data.phys());
        sq.write32(40, 1);
        regs.write32(DOORBELLS, 1); // SQ 0 tail
        let arrived = super::wait_for(1000, || completions.load(Ordering::Relaxed) == 1);
        let status = cq.read32(12) >> 17;
        let cid = cq.read32(12) & 0xffff;
        drop(registration);
        regs.write32(CC, 0);
        let stopped = wait(&regs, false, timeout_ms);
        drop(vectors);
        ensure!(
            arrived,
            "no completion interrupt within 1 s (CQE dword3 {:#x})",
            cq.read32(12)
        );
        ensure!(
            status == 0 && cid == 1,
            "completion status {status:#x}, cid {cid}"
        );
        ensure!(stopped, "controller did not stop after the test");
        let text = |from: u64, to: u64| -> String {
            let bytes: alloc::vec::Vec<u8> = (from..to).map(|i| data.read8(i)).collect();
            String::from_utf8_lossy(&bytes).trim_end().into()
        };
        Ok((kind, text(24, 64), text(4, 24)))
    }
}

fn nvme_identify_completes_by_msix() -> Result<(), String> {
    let (kind, model, serial) = nvme::identify(IrqKinds::ALL)?;
    ensure!(kind == IrqKind::Msix, "granted {kind}");
    ensure!(model.starts_with("QEMU NVMe"), "model {model:?}");
    crate::serial_println!("nvme: MSI-X completion; model=\"{model}\" serial=\"{serial}\"");
    Ok(())
}

fn nvme_identify_completes_by_intx() -> Result<(), String> {
    let (kind, model, serial) = nvme::identify(IrqKinds::INTX)?;
    ensure!(kind == IrqKind::Intx, "granted {kind}");
    crate::serial_println!("nvme: INTx completion; model=\"{model}\" serial=\"{serial}\"");
    Ok(())
}
