//! The `devirq` suite: real device interrupts through `pci::irq`, on QEMU's `edu` device
//! (`-device edu`; QEMU docs/specs/edu.rst): BAR 0 holds the identification register (0x00),
//! the interrupt status (0x24), raise (0x60) and acknowledge (0x64) registers; the device
//! signals through MSI (one vector) when MSI is enabled, else through INTA#.

use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};
use drivers::fnv1a;

use pci::irq::{IrqKind, IrqKinds};

use super::{Test, wait_for};
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
    raw_config_writes_to_owned_registers_are_refused,
    dma_memory_waits_until_the_claim_ends,
    device_windows_never_reach_the_kernels_registers,
    nvme_identify_completes_by_msix,
    nvme_identify_completes_by_intx,
    virtio_blk_read_completes_by_best_kind,
    virtio_blk_read_completes_by_intx,
    virtio_net_transmit_completes_by_best_kind,
    e1000e_forced_onto_msi,
    e1000e_forced_onto_intx,
];

const EDU: (u16, u16) = (0x1234, 0x11e8);
const EDU_ID: u64 = 0x00;
const EDU_IRQ_STATUS: u64 = 0x24;
const EDU_IRQ_RAISE: u64 = 0x60;
const EDU_IRQ_ACK: u64 = 0x64;
const RAISES: u64 = 100;

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

/// On the real (emulated) device: the writes a safe driver could once use to re-aim or re-arm
/// MSI, move a BAR or flip Command bits are refused with their error, and the registers read
/// back unchanged.
fn raw_config_writes_to_owned_registers_are_refused() -> Result<(), String> {
    use pci::function::{ConfigWriteError, Register};
    let address = pciirq::find(EDU.0, EDU.1).ok_or("no edu device")?;
    let function = pciirq::claim(address).ok_or("edu claimed")?;
    let msi = function.info().msi.ok_or("edu has no MSI capability")?;
    let at = u16::from(msi.offset);
    let vectors = function
        .alloc_irq_vectors(1, 1, IrqKinds::INTX)
        .map_err(|(_, e)| alloc::format!("{e}"))?;
    let f = vectors.function();
    let before: alloc::vec::Vec<u32> = (0..0x40).step_by(4).map(|o| f.config_read32(o)).collect();
    let msi_before: alloc::vec::Vec<u32> = (0..16)
        .step_by(4)
        .map(|o| f.config_read32(at + o))
        .collect();
    let command = f.config_read16(0x04);
    let refusals = [
        // Enable MSI while INTx vectors are held; aim it at a vector not owned.
        (
            f.config_write16(at + 2, f.config_read16(at + 2) | 1),
            Register::Msi(at),
        ),
        (f.config_write32(at + 4, 0xfee0_0000), Register::Msi(at)),
        (f.config_write16(at + 8, 0x31), Register::Msi(at)),
        // Move BAR 0 under the windows checked against it.
        (f.config_write32(0x10, 0xfeb0_0000), Register::Bar(0)),
    ];
    for (i, (result, register)) in refusals.into_iter().enumerate() {
        match result {
            Err(ConfigWriteError::Protected { register: r, .. }) if r == register => {}
            other => {
                return Err(alloc::format!(
                    "write {i}: {other:?}, expected {register:?}"
                ));
            }
        }
    }
    for (bit, name) in [
        (0x4u16, "bus master"),
        (0x2, "memory decode"),
        (0x400, "INTx disable"),
    ] {
        let e = f.config_write16(0x04, command ^ bit);
        ensure!(
            e == Err(ConfigWriteError::Command { bits: bit }),
            "{name}: {e:?}"
        );
    }
    let after: alloc::vec::Vec<u32> = (0..0x40).step_by(4).map(|o| f.config_read32(o)).collect();
    let msi_after: alloc::vec::Vec<u32> = (0..16)
        .step_by(4)
        .map(|o| f.config_read32(at + o))
        .collect();
    // Status (0x06) may change on its own; compare everything else.
    let mask = |v: &[u32]| {
        v.iter()
            .enumerate()
            .map(|(i, d)| if i == 1 { d & 0xffff } else { *d })
            .collect::<alloc::vec::Vec<_>>()
    };
    ensure!(
        mask(&before) == mask(&after),
        "the header changed: {before:x?} -> {after:x?}"
    );
    ensure!(
        msi_before == msi_after,
        "the MSI capability changed: {msi_before:x?} -> {msi_after:x?}"
    );
    crate::serial_println!("edu: 7 raw writes to owned registers refused, registers unchanged");
    Ok(())
}

/// Bus mastering is off at claim and on exactly while a guard lives; a DMA buffer dropped
/// while it is on keeps its frames until it goes off.
fn dma_memory_waits_until_the_claim_ends() -> Result<(), String> {
    let address = pciirq::find(EDU.0, EDU.1).ok_or("no edu device")?;
    let function = pciirq::claim(address).ok_or("edu claimed")?;
    let master_bit = |f: &pci::irq::PciFunction| f.config_read16(0x04) & 0x4 != 0;
    ensure!(!master_bit(&function), "bus mastering on at claim");
    let free = || crate::memory::frames::with(|a| a.free_bytes());
    let start = free();
    let master = function.bus_master();
    ensure!(master_bit(&function), "bus mastering off with a guard");
    let buffer = master
        .dma_buffer(64 * 1024)
        .map_err(|e| alloc::format!("{e}"))?;
    let taken = start - free();
    ensure!(taken >= 64 * 1024, "a 64 KiB buffer took {taken} bytes");
    drop(buffer);
    ensure!(
        start - free() == taken,
        "freed while the device could master the bus"
    );
    drop(master);
    ensure!(!master_bit(&function), "bus mastering on after the guard");
    ensure!(
        start - free() == taken,
        "freed while a new guard could turn bus mastering back on"
    );
    // The device still holds the address; a new guard lets it use it again.
    let again = function.bus_master();
    ensure!(master_bit(&function), "bus mastering off with a new guard");
    ensure!(start - free() == taken, "freed under a new guard");
    drop(again);
    let parked = pciirq::parked_dma();
    drop(function);
    // The claim ended with bus mastering off, but edu still holds the address and the next
    // claim may turn bus mastering on: the frames are parked for that claim, not freed.
    ensure!(
        start - free() == taken,
        "freed at the end of the claim, while edu still exists"
    );
    let now_parked = pciirq::parked_dma();
    ensure!(
        now_parked.1 - parked.1 == 64 * 1024,
        "parked {now_parked:?} after the claim, {parked:?} before"
    );
    // The next claim makes its buffers from them: no new frames, and zeroed again.
    let function = pciirq::claim(address).ok_or("edu not released")?;
    ensure!(!master_bit(&function), "bus mastering on at the next claim");
    let master = function.bus_master();
    let buffer = master
        .dma_buffer(64 * 1024)
        .map_err(|e| alloc::format!("{e}"))?;
    ensure!(
        start - free() == taken,
        "the next claim took new frames instead of its parked ones"
    );
    ensure!(
        (0..64 * 1024)
            .step_by(4096)
            .all(|at| buffer.read32(at) == 0),
        "reused DMA memory not zeroed"
    );
    drop((buffer, master, function));
    crate::serial_println!(
        "edu: {taken} bytes of DMA memory held through the claim, parked after it, reused by the next"
    );
    Ok(())
}

/// What a driver's BAR window is mapped with (`Mmio::map_device`) refuses the registers the
/// kernel owns, however a BAR claims to cover them, and maps a device's own BAR.
fn device_windows_never_reach_the_kernels_registers() -> Result<(), String> {
    let mut owned = alloc::vec![
        ("the local APIC", 0xfee0_0000u64),
        ("the MSI range", 0xfeef_f000)
    ];
    // Without ACPI (`acpi=off`) the kernel finds no IOAPIC, HPET or ECAM to own.
    if let Some(platform) = crate::platform::get() {
        // Every machine here has an IOAPIC; `pc` has no ECAM, q35 no legacy-only one.
        ensure!(!platform.io_apics.is_empty(), "no IOAPIC in the MADT");
        owned.extend(platform.io_apics.iter().map(|i| ("an IOAPIC", i.address)));
        owned.extend(platform.ecam.iter().map(|e| ("ECAM", e.base + 0x1000)));
        owned.extend(platform.hpet.map(|h| ("the HPET", h)));
    }
    for (what, phys) in owned {
        match Mmio::map_device(phys, 0x10) {
            Err(crate::memory::mmio::MapError::KernelOwned { .. }) => {}
            Err(e) => return Err(alloc::format!("{what} at {phys:#x}: wrong error: {e}")),
            Ok(m) => {
                return Err(alloc::format!(
                    "{what} at {phys:#x} mapped for a device at {:#x}",
                    m.virt()
                ));
            }
        }
    }
    // A window straddling into the interrupt range from below is refused too.
    ensure!(
        matches!(
            Mmio::map_device(0xfedf_f000, 0x2000),
            Err(crate::memory::mmio::MapError::KernelOwned { .. })
        ),
        "a window running into the interrupt range was mapped"
    );
    // A device's own BAR maps: edu's identification register (0x00) reads 0x010000ed.
    let edu = pciirq::find(EDU.0, EDU.1).ok_or("no edu device")?;
    let function = pciirq::claim(edu).ok_or("edu claimed")?;
    let bar = function.info().bars[0].ok_or("edu has no BAR 0")?;
    let regs =
        Mmio::map_device(bar.address, 0x1000).map_err(|e| alloc::format!("edu BAR 0: {e}"))?;
    let id = regs.read32(0);
    ensure!(
        id & 0xff == 0xed,
        "edu's identification register reads {id:#x}"
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
    use crate::tests::wait_for;

    const CAP: u64 = 0x00;
    const CC: u64 = 0x14;
    const CSTS: u64 = 0x1C;
    const AQA: u64 = 0x24;
    const ASQ: u64 = 0x28;
    const ACQ: u64 = 0x30;
    const DOORBELLS: u64 = 0x1000;
    const ENTRIES: u32 = 16;

    fn wait(regs: &Mmio, ready: bool, timeout_ms: u64) -> bool {
        wait_for(timeout_ms, || (regs.read32(CSTS) & 1 == 1) == ready)
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
        // The queues are DMA: bus mastering for as long as the controller runs.
        let master = vectors.function().bus_master();
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
        let arrived = wait_for(1000, || completions.load(Ordering::Relaxed) == 1);
        let status = cq.read32(12) >> 17;
        let cid = cq.read32(12) & 0xffff;
        drop(registration);
        regs.write32(CC, 0);
        let stopped = wait(&regs, false, timeout_ms);
        drop(master);
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

/// Modern virtio-pci (virtio 1.1 §4.1.4: vendor capabilities locate the common, notify, ISR
/// and device configuration; §2.6: split virtqueues): just enough for one request on one
/// queue, completed by interrupt.
mod virtio {
    use alloc::string::String;
    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use core::sync::atomic::{AtomicU64, Ordering};

    use pci::irq::{IrqKind, IrqKinds};

    use crate::ensure;
    use crate::memory::dma::DmaBuffer;
    use crate::memory::mmio::Mmio;
    use crate::pciirq;
    use crate::tests::wait_for;

    // Common configuration offsets (§4.1.4.3).
    const DEVICE_FEATURE_SELECT: u64 = 0x00;
    const DEVICE_FEATURE: u64 = 0x04;
    const DRIVER_FEATURE_SELECT: u64 = 0x08;
    const DRIVER_FEATURE: u64 = 0x0C;
    const MSIX_CONFIG: u64 = 0x10;
    const DEVICE_STATUS: u64 = 0x14;
    const QUEUE_SELECT: u64 = 0x16;
    const QUEUE_SIZE: u64 = 0x18;
    const QUEUE_MSIX_VECTOR: u64 = 0x1A;
    const QUEUE_ENABLE: u64 = 0x1C;
    const QUEUE_NOTIFY_OFF: u64 = 0x1E;
    const QUEUE_DESC: u64 = 0x20;
    const QUEUE_DRIVER: u64 = 0x28;
    const QUEUE_DEVICE: u64 = 0x30;
    /// No MSI-X vector (§4.1.5.1.2).
    const NO_VECTOR: u16 = 0xFFFF;
    const QUEUE_ENTRIES: u16 = 8;

    /// One mapped configuration structure.
    struct Region {
        mmio: Mmio,
        multiplier: u32,
    }

    /// The capability of `cfg_type` (1 common, 2 notify, 3 ISR), mapped.
    fn region(function: &pci::irq::PciFunction, cfg_type: u8) -> Result<Region, String> {
        let info = function.info();
        for cap in info.capabilities.iter().filter(|c| c.id == 0x09) {
            let at = u16::from(cap.offset);
            let head = function.config_read32(at);
            if (head >> 24) as u8 != cfg_type {
                continue;
            }
            let bar = (function.config_read32(at + 4) & 0xff) as usize;
            let offset = u64::from(function.config_read32(at + 8));
            let length = u64::from(function.config_read32(at + 12));
            let multiplier = if cfg_type == 2 {
                function.config_read32(at + 16)
            } else {
                0
            };
            let bar = info
                .bars
                .get(bar)
                .copied()
                .flatten()
                .ok_or("virtio capability names no BAR")?;
            ensure!(
                offset + length <= bar.size,
                "virtio structure outside its BAR"
            );
            let mmio =
                Mmio::map(bar.address + offset, length).map_err(|e| alloc::format!("{e}"))?;
            return Ok(Region { mmio, multiplier });
        }
        Err(alloc::format!("no virtio capability of type {cfg_type}"))
    }

    /// A request: descriptors as (offset in the buffer, length, device-writable).
    pub struct Request<'a> {
        /// Queue index.
        pub queue: u16,
        /// Descriptor chain.
        pub chain: &'a [(u64, u32, bool)],
    }

    /// Brings the device up with only VIRTIO_F_VERSION_1, sets up `request.queue`, lets
    /// `fill` write the request into a 4 KiB DMA buffer, posts it and waits for its
    /// interrupt. Returns the kind granted and the buffer afterwards.
    /// The first virtio function of device type `kind` (1 net, 2 block): modern ID
    /// 0x1040 + type, or a transitional ID 0x1000-0x103F whose subsystem ID is the type
    /// (virtio 1.1 §4.1.2).
    fn find(kind: u16) -> Option<pci::Address> {
        let scan = crate::pcibus::scan()?;
        scan.topology
            .functions
            .iter()
            .find(|f| {
                f.vendor_id == 0x1af4
                    && (f.device_id == 0x1040 + kind
                        || ((0x1000..0x1040).contains(&f.device_id)
                            && f.subsystem_id == Some(kind)))
            })
            .map(|f| f.address)
    }

    pub fn run(
        kind_id: u16,
        kinds: IrqKinds,
        request: Request<'_>,
        fill: impl FnOnce(&DmaBuffer),
    ) -> Result<(IrqKind, DmaBuffer), String> {
        let address = find(kind_id).ok_or("virtio device not present")?;
        let function = pciirq::claim(address).ok_or("virtio device already claimed")?;
        let common = region(&function, 1)?;
        let notify = region(&function, 2)?;
        let isr = Arc::new(region(&function, 3)?);
        let c = &common.mmio;
        c.write8(DEVICE_STATUS, 0);
        ensure!(
            wait_for(100, || c.read8(DEVICE_STATUS) == 0),
            "device did not reset"
        );
        c.write8(DEVICE_STATUS, 1 | 2); // ACKNOWLEDGE | DRIVER
        c.write32(DEVICE_FEATURE_SELECT, 1);
        ensure!(
            c.read32(DEVICE_FEATURE) & 1 != 0,
            "device lacks VIRTIO_F_VERSION_1"
        );
        c.write32(DRIVER_FEATURE_SELECT, 0);
        c.write32(DRIVER_FEATURE, 0);
        c.write32(DRIVER_FEATURE_SELECT, 1);
        c.write32(DRIVER_FEATURE, 1);
        c.write8(DEVICE_STATUS, 1 | 2 | 8); // FEATURES_OK
        ensure!(c.read8(DEVICE_STATUS) & 8 != 0, "features not accepted");

        let vectors = function
            .alloc_irq_vectors(1, 2, kinds)
            .map_err(|(_, e)| alloc::format!("alloc_irq_vectors: {e}"))?;
        // The queue is DMA: bus mastering for as long as the device runs.
        let master = vectors.function().bus_master();
        let kind = vectors.kind();
        // MSI-X: entry 0 for configuration changes, the last granted one for the queue.
        let queue_vector = (vectors.len() - 1) as u16;
        if kind == IrqKind::Msix {
            c.write16(MSIX_CONFIG, 0);
        }
        c.write16(QUEUE_SELECT, request.queue);
        let size = c.read16(QUEUE_SIZE).min(QUEUE_ENTRIES);
        ensure!(
            size >= request.chain.len() as u16,
            "queue of {size} entries"
        );
        c.write16(QUEUE_SIZE, size);
        let ring = DmaBuffer::new(4096).ok_or("no memory for the queue")?;
        let (desc, avail, used) = (0u64, 1024u64, 2048u64);
        c.write64(QUEUE_DESC, ring.phys() + desc);
        c.write64(QUEUE_DRIVER, ring.phys() + avail);
        c.write64(QUEUE_DEVICE, ring.phys() + used);
        if kind == IrqKind::Msix {
            c.write16(QUEUE_MSIX_VECTOR, queue_vector);
            ensure!(
                c.read16(QUEUE_MSIX_VECTOR) == queue_vector,
                "device refused MSI-X vector {queue_vector}"
            );
        } else {
            c.write16(QUEUE_MSIX_VECTOR, NO_VECTOR);
        }
        let notify_at = u64::from(c.read16(QUEUE_NOTIFY_OFF)) * u64::from(notify.multiplier);
        c.write16(QUEUE_ENABLE, 1);
        c.write8(DEVICE_STATUS, 1 | 2 | 8 | 4); // DRIVER_OK

        let data = DmaBuffer::new(4096).ok_or("no memory for the request")?;
        fill(&data);
        for (i, &(offset, len, writable)) in request.chain.iter().enumerate() {
            let d = desc + 16 * i as u64;
            ring.write64(d, data.phys() + offset);
            ring.write32(d + 8, len);
            let last = i + 1 == request.chain.len();
            ring.write16(d + 12, u16::from(!last) | if writable { 2 } else { 0 });
            ring.write16(d + 14, if last { 0 } else { i as u16 + 1 });
        }
        ring.write16(avail + 4, 0); // ring[0] = head 0
        ring.write16(avail + 2, 1); // idx

        let done = Arc::new(AtomicU64::new(0));
        let (seen, status) = (done.clone(), isr.clone());
        let registration = vectors
            .request(usize::from(queue_vector), "virtio queue", move || {
                // INTx needs the ISR read to deassert the line (§4.1.4.5); harmless with MSI-X.
                let _ = status.mmio.read8(0);
                seen.fetch_add(1, Ordering::Relaxed);
            })
            .map_err(|e| alloc::format!("request: {e}"))?;
        notify.mmio.write16(notify_at, request.queue);
        let arrived = wait_for(1000, || {
            ring.read16(used + 2) == 1 && done.load(Ordering::Relaxed) > 0
        });
        let used_idx = ring.read16(used + 2);
        drop(registration);
        c.write8(DEVICE_STATUS, 0);
        ensure!(
            wait_for(100, || c.read8(DEVICE_STATUS) == 0),
            "device did not reset at the end"
        );
        drop(master);
        drop(vectors);
        ensure!(
            arrived,
            "no completion interrupt (used idx {used_idx}, interrupts {})",
            done.load(Ordering::Relaxed)
        );
        Ok((kind, data))
    }

    /// Reads sector 0 of a virtio-blk disk (§5.2.6: header, data, status).
    pub fn blk_sector0(kinds: IrqKinds) -> Result<(IrqKind, Vec<u8>), String> {
        let chain = [(0, 16, false), (512, 512, true), (1024, 1, true)];
        let (kind, data) = run(
            2,
            kinds,
            Request {
                queue: 0,
                chain: &chain,
            },
            |d| {
                d.write32(0, 0); // VIRTIO_BLK_T_IN
                d.write64(8, 0); // sector 0
                d.write8(1024, 0xff);
            },
        )?;
        ensure!(data.read8(1024) == 0, "request status {}", data.read8(1024));
        Ok((kind, (512..1024).map(|i| data.read8(i)).collect()))
    }

    /// Sends one ARP request for 10.0.2.2 on virtio-net's transmit queue (§5.1.6).
    pub fn net_send_arp(kinds: IrqKinds) -> Result<IrqKind, String> {
        // virtio_net_hdr (12 bytes with VERSION_1, all zero) + a 42-byte ARP request.
        let chain = [(0, 12 + 42, false)];
        let (kind, _) = run(
            1,
            kinds,
            Request {
                queue: 1,
                chain: &chain,
            },
            |d| {
                let frame: [u8; 42] = [
                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08,
                    0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12,
                    0x34, 0x56, 10, 0, 2, 15, 0, 0, 0, 0, 0, 0, 10, 0, 2, 2,
                ];
                for (i, b) in frame.iter().enumerate() {
                    d.write8(12 + i as u64, *b);
                }
            },
        )?;
        Ok(kind)
    }
}

/// With every kind allowed: MSI-X where the device has it (the runner checks which kind
/// was printed against how it configured QEMU, e.g. `vectors=0` removes MSI-X).
fn virtio_blk_read_completes_by_best_kind() -> Result<(), String> {
    let (kind, sector) = virtio::blk_sector0(IrqKinds::ALL)?;
    crate::serial_println!(
        "virtio-blk: {kind} completion; sector0 fnv1a={:016x}",
        fnv1a(&sector)
    );
    Ok(())
}

fn virtio_blk_read_completes_by_intx() -> Result<(), String> {
    let (kind, sector) = virtio::blk_sector0(IrqKinds::INTX)?;
    ensure!(kind == IrqKind::Intx, "granted {kind}");
    crate::serial_println!(
        "virtio-blk: INTx completion; sector0 fnv1a={:016x}",
        fnv1a(&sector)
    );
    Ok(())
}

fn virtio_net_transmit_completes_by_best_kind() -> Result<(), String> {
    let kind = virtio::net_send_arp(IrqKinds::ALL)?;
    crate::serial_println!("virtio-net: {kind} transmit completion");
    Ok(())
}

/// The `sharedirq` suite: two edu devices whose INTA# pins reach the same GSI share one
/// vector; each handler acknowledges only its own device, and each device's interrupts are
/// counted by its own handler only.
pub const SHARED: &[Test] = crate::tests![two_functions_share_an_intx_line];

fn two_functions_share_an_intx_line() -> Result<(), String> {
    let scan = crate::pcibus::scan().ok_or("PCI not enumerated")?;
    let edus: alloc::vec::Vec<pci::Address> = scan
        .topology
        .functions
        .iter()
        .filter(|f| (f.vendor_id, f.device_id) == EDU)
        .map(|f| f.address)
        .collect();
    ensure!(
        edus.len() >= 2,
        "need two edu devices on one line, found {}",
        edus.len()
    );
    let start = vectors::snapshot();
    let mut devices = alloc::vec::Vec::new();
    for &address in &edus[..2] {
        let function = pciirq::claim(address).ok_or("edu claimed")?;
        let bar = function.info().bars[0].ok_or("no BAR 0")?;
        let regs = Arc::new(Mmio::map(bar.address, bar.size).map_err(|e| alloc::format!("{e}"))?);
        let irq = function
            .alloc_irq_vectors(1, 1, IrqKinds::INTX)
            .map_err(|(_, e)| alloc::format!("{e}"))?;
        devices.push((irq, regs, Arc::new(AtomicU64::new(0))));
    }
    // A `Vector` borrows its `IrqVectors`: copy the number out to use it after release.
    let a = devices[0].0.vector(0).ok_or("no vector")?.number();
    let b = devices[1].0.vector(0).ok_or("no vector")?.number();
    ensure!(a == b, "not shared: vectors {a:#x} and {b:#x}");
    let mut registrations = alloc::vec::Vec::new();
    for (irq, regs, hits) in &devices {
        let (r, h) = (regs.clone(), hits.clone());
        registrations.push(
            irq.request(0, "edu shared", move || {
                let status = r.read32(EDU_IRQ_STATUS);
                if status != 0 {
                    r.write32(EDU_IRQ_ACK, status);
                    h.fetch_add(1, Ordering::Relaxed);
                }
            })
            .map_err(|e| alloc::format!("{e}"))?,
        );
    }
    for (turn, (_, regs, hits)) in devices.iter().enumerate() {
        for i in 1..=20 {
            regs.write32(EDU_IRQ_RAISE, 1);
            ensure!(
                wait_for(100, || hits.load(Ordering::Relaxed) >= i),
                "device {turn}, raise {i} lost"
            );
        }
    }
    crate::time::busy_wait_us(2000);
    let counts: alloc::vec::Vec<u64> = devices
        .iter()
        .map(|d| d.2.load(Ordering::Relaxed))
        .collect();
    drop(registrations);
    drop(devices);
    ensure!(
        counts == [20, 20],
        "handlers counted {counts:?} for 20 raises each"
    );
    ensure!(
        vectors::snapshot() == start,
        "the shared line's vector was not freed"
    );
    crate::serial_println!("shared INTx: vector {a:#04x} served both devices, 20 interrupts each");
    Ok(())
}

/// The Intel 82574 (QEMU `e1000e`) offers MSI-X, MSI and INTx; forcing MSI and INTx shows the
/// negotiation honours the caller. Interrupts are raised by software through the Interrupt
/// Cause Set register (82574 datasheet §10.2.4: ICR 0xC0 read-to-clear, ICS 0xC8, IMS 0xD0,
/// IMC 0xD8), cause bit 2 (link status change).
fn e1000e_interrupts(kinds: IrqKinds, expect: IrqKind) -> Result<(), String> {
    const ICR: u64 = 0xC0;
    const ICS: u64 = 0xC8;
    const IMS: u64 = 0xD0;
    const IMC: u64 = 0xD8;
    const LSC: u32 = 1 << 2;
    let address = pciirq::find(0x8086, 0x10d3).ok_or("no e1000e")?;
    let function = pciirq::claim(address).ok_or("e1000e claimed")?;
    let bar = function.info().bars[0].ok_or("e1000e has no BAR 0")?;
    let regs = Arc::new(Mmio::map(bar.address, 0x1000).map_err(|e| alloc::format!("{e}"))?);
    let vectors = function
        .alloc_irq_vectors(1, 1, kinds)
        .map_err(|(_, e)| alloc::format!("{e}"))?;
    ensure!(
        vectors.kind() == expect,
        "granted {} instead of {expect}",
        vectors.kind()
    );
    regs.write32(IMC, u32::MAX);
    let _ = regs.read32(ICR);
    let hits = Arc::new(AtomicU64::new(0));
    let (h, r) = (hits.clone(), regs.clone());
    let registration = vectors
        .request(0, "e1000e test", move || {
            if r.read32(ICR) & LSC != 0 {
                h.fetch_add(1, Ordering::Relaxed);
            }
        })
        .map_err(|e| alloc::format!("{e}"))?;
    regs.write32(IMS, LSC);
    for i in 1..=20 {
        regs.write32(ICS, LSC);
        ensure!(
            wait_for(100, || hits.load(Ordering::Relaxed) >= i),
            "cause {i}: no interrupt"
        );
    }
    regs.write32(IMC, u32::MAX);
    drop(registration);
    drop(vectors);
    ensure!(
        hits.load(Ordering::Relaxed) == 20,
        "20 causes, {} interrupts",
        hits.load(Ordering::Relaxed)
    );
    crate::serial_println!("e1000e: 20 {expect} interrupts");
    Ok(())
}

fn e1000e_forced_onto_msi() -> Result<(), String> {
    e1000e_interrupts(IrqKinds::MSI, IrqKind::Msi)
}

fn e1000e_forced_onto_intx() -> Result<(), String> {
    e1000e_interrupts(IrqKinds::INTX, IrqKind::Intx)
}
